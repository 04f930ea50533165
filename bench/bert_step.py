"""One LoRA training step of MiniLM (batch 16 x seq 32, r=8 on query and value, plus the head),
timed on py_engine's backends and on torch + PEFT, side by side in one process.

    python bench/bert_step.py            # prints a JSON line per contender

Each contender runs the same batch (token ids drawn once, every row full length) through
forward, loss, backward and an AdamW update; the median of `repeats` steps after `warmup` is
reported with tokens/s. The FLOP count of the step (forward, plus the backward of what is
needed for LoRA) gives GFLOP/s.
"""

import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

B, T, R, LABELS = 16, 32, 8, 2


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def batch(seed=0, vocab=30522):
    import random

    rng = random.Random(seed)
    ids = [[101] + [rng.randrange(1000, vocab) for _ in range(T - 2)] + [102] for _ in range(B)]
    return ids, [[0] * T for _ in range(B)], [[1] * T for _ in range(B)], [rng.randrange(LABELS) for _ in range(B)]


def step_flops(config, targets=2):
    """Multiply-adds x 2 of one step: forward of everything, backward through the encoder for
    activations (frozen weights need dX only) and the LoRA weight gradients."""
    h, i, L, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers, B * T
    linear = n * (4 * h * h + 2 * h * i)                 # q, k, v, o, intermediate, output
    attention = 2 * B * T * T * h                         # scores and context
    forward = L * (linear + attention)
    backward = L * (linear + 2 * attention)               # dX through every linear; dQ, dK, dV, dP
    lora = L * targets * n * (2 * R * h) * 3              # forward, dA, dB (and dX) per target
    return 2 * (forward + backward + lora)


def torch_peft(model_dir, repeats, warmup):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=LABELS)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=R, lora_alpha=R,
                                             target_modules=["query", "value"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids, types, mask, labels = (torch.tensor(x) for x in batch())
    times = []
    for k in range(warmup + repeats):
        t0 = time.perf_counter()
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return {"threads": torch.get_num_threads(), "seconds": median(times)}


def engine(model_dir, backend, repeats, warmup, device=None):
    from py_engine.gpu import run_sync
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.batch import Batch
    from py_engine.train.classifier import TextClassifier

    clf = run_sync(TextClassifier.create(model_dir, ["a", "b"], lora=LoraConfig(r=R, lora_alpha=R),
                                         backend=backend, device=device))
    b = Batch(*batch())
    times = []
    for k in range(warmup + repeats):
        t0 = time.perf_counter()
        run_sync(clf.runtime.accumulate(b, seed=k))
        run_sync(clf.runtime.update(lr=1e-4, step=k + 1, max_norm=1.0, weight_decay=0.01))
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    out = {"seconds": median(times)}
    if backend == "gpu":
        out["adapter"] = clf.runtime.device.info.as_dict()
    return out


def matmul_ceiling(device, repeats=5):
    """GFLOP/s of the best linear-forward kernel at the step's biggest shape, on `device`."""
    from array import array

    from py_engine.gpu import run_sync
    from py_engine.kernels.matmul import MatmulKernels

    mm = run_sync(MatmulKernels.load(device))
    m, n, k = B * T, 1536, 384
    x = device.buffer_from(array("f", [0.5] * (m * k)))
    w = device.buffer_from(array("f", [0.25] * (n * k)))
    y = device.create_buffer(4 * m * n)
    program = device.program()
    mm.linear(program, x, w, y, m, k, n)
    program.submit()
    run_sync(device.synchronize())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        program.submit()
        run_sync(device.synchronize())
        times.append(time.perf_counter() - t0)
    return 2 * m * n * k / median(times) / 1e9


def run_all(contenders=("torch", "numpy", "gpu"), repeats=5, warmup=2):
    import peft_oracle
    from py_engine.models.bert_config import BertConfig

    model_dir = str(peft_oracle.MINILM_DIR)
    flops = step_flops(BertConfig.from_file(model_dir))
    tokens = B * T
    results = {"shape": {"batch": B, "seq": T, "r": R}, "step_gflop": flops / 1e9}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in contenders:
            if name == "torch":
                r = torch_peft(model_dir, repeats, warmup)
            elif name == "gpu":
                from py_engine.gpu import open_device, run_sync

                device = run_sync(open_device("native"))
                r = engine(model_dir, "gpu", max(2, repeats // 2), 1, device)
                r["matmul_ceiling_gflops"] = matmul_ceiling(device)
            else:
                r = engine(model_dir, name, repeats, warmup)
            r["tokens_per_s"] = tokens / r["seconds"]
            r["gflops"] = flops / r["seconds"] / 1e9
            results[name] = r
    if "torch" in results:
        for name in ("numpy", "gpu"):
            if name in results:
                results[name]["vs_torch"] = results[name]["tokens_per_s"] / results["torch"]["tokens_per_s"]
    return results


if __name__ == "__main__":
    names = sys.argv[1:] or ["torch", "numpy"]
    print(json.dumps(run_all(names), indent=2))
