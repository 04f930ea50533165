"""Llama decoder LoRA training steps (forward, causal-LM loss, backward, clipping and AdamW:
one optimizer step) on py_engine against transformers + PEFT, each contender in its own
process, rounds alternating (bench/processes.py).

    python bench/decoder_step.py              # cpu and memory sections, one JSON document
    python bench/decoder_step.py cpu          # some of them

Sections:
  cpu     a tiny Llama (hidden 256, 4 layers, 8 query heads sharing 4 key/value heads, head_dim
          32, intermediate 688, vocab 32000, untied head), batch 8 x 128, LoRA r=8 (alpha 16) on
          q_proj and v_proj, float32: the NumPy backend against torch + PEFT on the CPU. Where
          OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set, the NumPy backend runs twice: with them
          and without them.
  memory  base-weight bytes of a 1.1B TinyLlama config from its parameter shapes, per storage
          mode (f32, f16, int8, int4) by the rule the GPU runtime allocates with.

The GPU comparison (the native backend against torch + PEFT on CUDA, TinyLlama-shaped) is
bench/gpu_device.sh's. The engine is driven through its public API: ChatModel.create and fit()
over a round of batches, each optimizer step timed by fit()'s on_step callback. The random
checkpoint is built by transformers (tests/tiny_chat.py's way) in a process of its own.
"""

import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from contenders import EngineRounds, TorchRounds, cpu_rows  # noqa: E402
from processes import OPENBLAS_OVERRIDES, Spec, alternate, call, openblas_variants  # noqa: E402

B, T, R, ALPHA = 8, 128, 8, 16
TARGETS = ("q_proj", "v_proj")
LR = 2e-4

TINY_LLAMA = dict(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                  rms_norm_eps=1e-5)
TINYLLAMA_1B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                    rms_norm_eps=1e-5)


def base_weight_memory(config=TINYLLAMA_1B, modes=("f32", "f16", "int8", "int4")):
    """{parameters, <mode>: {bytes, gib}}: the GPU bytes of every base tensor of the checkpoint
    under each storage mode, by the rule GpuRuntime.create allocates with (projections f16 or
    quantized in groups of 64 with f32 scales; embeddings, norms and the head f32). The tiny
    model's allocations are checked against the same function in tests/test_chat_model.py."""
    from py_engine.models.llama import LlamaModel
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.backends.gpu_backend import planned_base_bytes

    llama = LlamaConfig(model_type="llama", tie_word_embeddings=False, **config)
    shapes = llama.parameter_shapes()
    model = LlamaModel(llama, None)
    out = {"config": dict(config),
           "parameters": sum(math.prod(s) for s in shapes.values())}
    for mode in modes:
        total = planned_base_bytes(model, shapes, mode)
        out[mode] = {"bytes": total, "gib": total / 2**30}
    return out


def token_rows(vocab, rows, seq, seed=0):
    """`rows` lists of `seq` token ids in [0, vocab): every token counted by the loss."""
    import random

    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(seq)] for _ in range(rows)]


class EngineChat(EngineRounds):
    """py_engine's ChatModel on `backend` ("numpy" or "gpu")."""

    def __init__(self, model_dir, backend="numpy", batch=B, seq=T, steps=3, profile=False):
        from py_engine.data.chat import EncodedExample
        from py_engine.models.lora_config import LoraConfig
        from py_engine.train.chat import CausalTrainConfig, ChatModel

        device = self._setup(backend, profile, batch=batch, seq=seq)
        vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
        lora = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), task_type="CAUSAL_LM")
        started = time.perf_counter()
        chat = self.run_sync(ChatModel.create(model_dir, lora=lora, backend=backend, max_length=seq,
                                              device=device))
        self._created(chat, started,
                      [EncodedExample(ids, list(ids)) for ids in token_rows(vocab, batch * (steps + 1), seq)],
                      CausalTrainConfig(epochs=1, batch_size=batch, max_length=seq, lr=LR, max_grad_norm=1.0))


class TorchChat(TorchRounds):
    """transformers' LlamaForCausalLM + PEFT LoRA on `device`, float32."""

    def __init__(self, model_dir, device="cpu", batch=B, seq=T, steps=3):
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import LlamaForCausalLM

        torch, device = self._setup(device)
        vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
        model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=R, lora_alpha=ALPHA,
                                                 lora_dropout=0.0, target_modules=list(TARGETS)))
        rows = torch.tensor(token_rows(vocab, batch * (steps + 1), seq))
        batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
                   for ids in rows.split(batch)]
        self._ready(model, device, batches, LR, 0.0, batch=batch, seq=seq,
                    attention=getattr(model.config, "_attn_implementation", None))


def shape(config, batch, seq):
    return {"batch": batch, "seq": seq, "r": R, "lora_alpha": ALPHA, "targets": list(TARGETS), **config}


def cpu_section(rounds=5, warmup=1, steps=3):
    """The tiny Llama step: torch + PEFT vs the NumPy backend on the CPU, float32."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = call("checkpoints:llama_dir", path=tmp, config=TINY_LLAMA)
        args = {"model_dir": model_dir, "steps": steps}
        specs = {"torch": Spec("decoder_step:TorchChat", args)}
        for suffix, spec in openblas_variants(Spec("decoder_step:EngineChat", args)).items():
            specs["numpy" + suffix] = spec
        out = alternate(specs, baseline="torch", rounds=rounds, warmup=warmup)
    return {"shape": shape(TINY_LLAMA, B, T), "dtype": "float32", "openblas_overrides": OPENBLAS_OVERRIDES, **out}


def table_rows(results):
    """(measure, value, note) rows of bench/run.py's table for what run_all returned."""
    rows = []
    cpu = results.get("cpu")
    if cpu:
        s = cpu["shape"]
        name = (f"tiny Llama {s['batch']}x{s['seq']} LoRA r={s['r']} on "
                f"{','.join(t.removesuffix('_proj') for t in s['targets'])}")
        rows += cpu_rows(name, s["batch"] * s["seq"], cpu)
    mem = results.get("memory")
    if mem:
        sizes = [f"{name} {v['gib']:.2f} GiB" for name, v in mem.items()
                 if isinstance(v, dict) and "gib" in v]
        rows.append(("TinyLlama 1.1B base weights", ", ".join(sizes),
                     f"{mem['parameters']:,} parameters"))
    return rows


SECTIONS = {"cpu": cpu_section, "memory": base_weight_memory}


def run_all(sections=tuple(SECTIONS)):
    return {name: SECTIONS[name]() for name in sections}


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1:] or tuple(SECTIONS)), indent=2))
