"""Decoder LoRA training steps (forward, causal-LM loss, backward, clipping and AdamW: one
optimizer step) on py_engine against transformers + PEFT, each contender in its own process,
rounds alternating (bench/processes.py). The model shape is a parameter (MODELS): a tiny Llama,
GPT-2-small-shaped and Phi-3-shaped.

    python bench/decoder_step.py              # every section, one JSON document
    python bench/decoder_step.py cpu gpt2     # some of them

Sections:
  cpu     a tiny Llama (hidden 256, 4 layers, 8 query heads sharing 4 key/value heads, head_dim
          32, intermediate 688, vocab 32000, untied head), batch 8 x 128, LoRA r=8 (alpha 16) on
          q_proj and v_proj, float32: the NumPy backend against torch + PEFT on the CPU. Where
          OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set, the NumPy backend runs twice: with them
          and without them.
  gpt2    the same comparison, GPT-2-small-shaped: GPT-2 small's width, heads, vocabulary and
          positions (hidden 768, 12 heads, vocab 50257, 1024 positions, tied head) with 2 of its
          12 layers, batch 4 x 128, LoRA r=8 on c_attn (Conv1D, fan_in_fan_out), dropout 0.
  phi3    the same, Phi-3-shaped: Phi-3-mini's head_dim (96), its intermediate/hidden ratio
          (8192/3072) and vocabulary (32064, untied head), at hidden 768 (8 heads) with 2 layers,
          fused qkv_proj and gate_up_proj, batch 4 x 128, LoRA r=8 on qkv_proj. It needs the
          engine's Phi-3 family: without it the section fails, naming the supported families.
  memory  base-weight bytes of a 1.1B TinyLlama config from its parameter shapes, per storage
          mode (f32, f16, int8, int4) by the rule the GPU runtime allocates with.
  checkpointing  gradient checkpointing's cost and gain for the tiny Llama 12 layers deep at
          4 x 256: the GPU buffers one LoRA training step records (activations, their
          gradients, the batch) with and without it, each in its own process on the native
          adapter (bytes, which a software adapter measures as a GPU would; not its speed), the
          two steps' losses, and the time per step with and without it on the NumPy backend
          (alternating rounds, separate processes: the recompute's cost on the CPU).

  tables  a LoRA on the token embedding and the output layer too (models/lora_tables.py): the
          cpu section's tiny Llama step with LoRA on q_proj, v_proj, embed_tokens and lm_head,
          against the same step with q_proj and v_proj alone, with the two tables trained whole
          instead (modules_to_save, what adapters with added tokens do) and torch + PEFT with
          the same targets (NumPy backend, alternating rounds in separate processes), and the
          trainable parameters each trains.

The GPU comparison (the native backend against torch + PEFT on CUDA) is bench/gpu_device.sh's,
with the same contenders. The engine is driven through its public API: ChatModel.create and
fit() over a round of batches, each optimizer step timed by fit()'s on_step callback. The
random checkpoints are built by transformers (bench/checkpoints.py) in a process of their own.
"""

import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
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
# GPT-2 small (124M) as released, but 2 of its 12 layers: the LM head over 50257 tokens is most
# of the step at this width, as it is for the whole model at short sequences.
GPT2_SMALL_SHAPED = dict(vocab_size=50257, n_embd=768, n_layer=2, n_head=12, n_positions=1024,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
# Phi-3-mini (hidden 3072, 32 heads of 96, intermediate 8192, vocab 32064, 32 layers) at a
# quarter of its width and 2 layers: the same head_dim and intermediate/hidden ratio.
PHI3_SHAPED = dict(vocab_size=32064, hidden_size=768, intermediate_size=2048, num_hidden_layers=2,
                   num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                   rms_norm_eps=1e-5, tie_word_embeddings=False, attention_dropout=0.0,
                   resid_pdrop=0.0, embd_pdrop=0.0)
TINYLLAMA_1B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                    rms_norm_eps=1e-5)


@dataclass(frozen=True)
class DecoderShape:
    """One model shape of the decoder step: the checkpoint's family (config.json's model_type,
    bench/checkpoints.py's builder), its config, the batch and the LoRA targets."""

    label: str
    model_type: str
    config: dict
    batch: int = B
    seq: int = T
    targets: tuple = TARGETS


MODELS = {
    "llama": DecoderShape("tiny Llama", "llama", TINY_LLAMA),
    "gpt2": DecoderShape("GPT-2-small-shaped", "gpt2", GPT2_SMALL_SHAPED, batch=4, targets=("c_attn",)),
    "phi3": DecoderShape("Phi-3-shaped", "phi3", PHI3_SHAPED, batch=4, targets=("qkv_proj",)),
}


def require_family(model_type):
    """Fails, naming the supported families, where the engine has no decoder for `model_type`
    (a row asked for is measured or fails: it never drops out of the table)."""
    from py_engine.models.decoders import DECODER_TYPES, supported

    if model_type not in DECODER_TYPES:
        raise RuntimeError(f"py_engine has no decoder family for model_type {model_type!r}; "
                           f"supported: {supported()}")


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


CHECKPOINTED = dict(TINY_LLAMA, num_hidden_layers=12)     # activations grow with the layers


def recorded_step(model_dir, checkpointing, batch, seq):
    """{recorded_bytes, loss} of one LoRA step (accumulate) on the native GPU adapter."""
    import warnings

    from py_engine.data.chat import EncodedExample
    from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.chat import ChatModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftwareAdapterWarning)
        device = run_sync(open_device("native"))
    vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
    lora = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), task_type="CAUSAL_LM")
    chat = run_sync(ChatModel.create(model_dir, lora=lora, backend="gpu", max_length=seq,
                                     device=device))
    chat.runtime.set_gradient_checkpointing(checkpointing)
    examples = [EncodedExample(ids, list(ids)) for ids in token_rows(vocab, batch, seq)]
    data = chat.runtime.task.batch(examples, list(range(batch)), 8, seq)
    metrics = run_sync(chat.runtime.accumulate(data))
    return {"recorded_bytes": chat.runtime.recorded_bytes(), "loss": metrics["loss"]}


def checkpointing_memory(batch=4, seq=256, rounds=3):
    """The checkpointing section (see the module's docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = call("checkpoints:decoder_dir", path=tmp, family="llama", config=CHECKPOINTED)
        steps = {name: call("decoder_step:recorded_step", model_dir=model_dir, checkpointing=on,
                            batch=batch, seq=seq)
                 for name, on in (("plain", False), ("checkpointed", True))}
        args = dict(model_dir=model_dir, batch=batch, seq=seq, steps=2)
        timed = alternate({name: Spec("decoder_step:EngineChat", dict(args, checkpointing=on))
                           for name, on in (("plain", False), ("checkpointed", True))},
                          baseline="plain", rounds=rounds, warmup=1)
    plain, checkpointed = steps["plain"]["recorded_bytes"], steps["checkpointed"]["recorded_bytes"]
    return {"shape": shape(CHECKPOINTED, batch, seq), **steps,
            "ratio": checkpointed / plain,
            "same_loss": steps["plain"]["loss"] == steps["checkpointed"]["loss"],
            "numpy_step": {"plain_s": timed["plain"]["seconds"],
                           "checkpointed_s": timed["checkpointed"]["seconds"],
                           # time with it / time without it
                           "ratio": 1 / timed["checkpointed"]["vs_plain"],
                           "paired_ratio": 1 / timed["checkpointed"]["vs_plain_paired"],
                           "environment": timed["checkpointed"]["environment"]}}


def token_rows(vocab, rows, seq, seed=0):
    """`rows` lists of `seq` token ids in [0, vocab): every token counted by the loss."""
    import random

    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(seq)] for _ in range(rows)]


class EngineChat(EngineRounds):
    """py_engine's ChatModel on `backend` ("numpy" or "gpu")."""

    def __init__(self, model_dir, backend="numpy", batch=B, seq=T, steps=3, profile=False, targets=TARGETS,
                 checkpointing=False, modules_to_save=()):
        from py_engine.data.chat import EncodedExample
        from py_engine.models.lora_config import LoraConfig
        from py_engine.train.chat import CausalTrainConfig, ChatModel

        config = json.loads((Path(model_dir) / "config.json").read_text())
        require_family(config.get("model_type", "llama"))
        device = self._setup(backend, profile, batch=batch, seq=seq)
        vocab = config["vocab_size"]
        lora = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(targets), task_type="CAUSAL_LM",
                          modules_to_save=list(modules_to_save))
        started = time.perf_counter()
        chat = self.run_sync(ChatModel.create(model_dir, lora=lora, backend=backend, max_length=seq,
                                              device=device))
        self._created(chat, started,
                      [EncodedExample(ids, list(ids)) for ids in token_rows(vocab, batch * (steps + 1), seq)],
                      CausalTrainConfig(epochs=1, batch_size=batch, max_length=seq, lr=LR, max_grad_norm=1.0,
                                        gradient_checkpointing=checkpointing))


class TorchChat(TorchRounds):
    """transformers' model of the checkpoint's family (LlamaForCausalLM, GPT2LMHeadModel,
    Phi3ForCausalLM) + PEFT LoRA on `device`, float32."""

    def __init__(self, model_dir, device="cpu", batch=B, seq=T, steps=3, targets=TARGETS):
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoModelForCausalLM

        torch, device = self._setup(device)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        vocab = model.config.vocab_size
        # GPT-2's Conv1D stores [in, out]: PEFT needs fan_in_fan_out there (and says so otherwise)
        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=R, lora_alpha=ALPHA,
                                                 lora_dropout=0.0, target_modules=list(targets),
                                                 fan_in_fan_out=model.config.model_type == "gpt2"))
        rows = torch.tensor(token_rows(vocab, batch * (steps + 1), seq))
        batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
                   for ids in rows.split(batch)]
        self._ready(model, device, batches, LR, 0.0, batch=batch, seq=seq,
                    attention=getattr(model.config, "_attn_implementation", None))


def shape(config, batch, seq, targets=TARGETS, model_type="llama"):
    return {"model_type": model_type, "batch": batch, "seq": seq, "r": R, "lora_alpha": ALPHA,
            "targets": list(targets), **config}


def contender_args(model, model_dir, **args):
    """The EngineChat / TorchChat arguments of `model` (a DecoderShape) for its checkpoint."""
    return {"model_dir": model_dir, "batch": model.batch, "seq": model.seq, "targets": list(model.targets),
            **args}


def cpu_section(model="llama", rounds=5, warmup=1, steps=3):
    """MODELS[model]'s step: torch + PEFT vs the NumPy backend on the CPU, float32."""
    m = MODELS[model]
    require_family(m.model_type)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = call("checkpoints:decoder_dir", path=tmp, family=m.model_type, config=m.config)
        args = contender_args(m, model_dir, steps=steps)
        specs = {"torch": Spec("decoder_step:TorchChat", args)}
        for suffix, spec in openblas_variants(Spec("decoder_step:EngineChat", args)).items():
            specs["numpy" + suffix] = spec
        out = alternate(specs, baseline="torch", rounds=rounds, warmup=warmup)
    return {"label": m.label, "shape": shape(m.config, m.batch, m.seq, m.targets, m.model_type),
            "dtype": "float32", "openblas_overrides": OPENBLAS_OVERRIDES, **out}


TABLES = ("embed_tokens", "lm_head")


def trainable_parameters(config, targets, modules_to_save=()):
    """How many parameters a LoRA (r=R) on `targets` with `modules_to_save` trains in the
    Llama-family `config`."""
    from py_engine.models.decoders import decoder_model
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.models.lora_config import LoraConfig

    lora = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(targets), task_type="CAUSAL_LM",
                      modules_to_save=list(modules_to_save))
    model = decoder_model(LlamaConfig(model_type="llama", **config), lora)
    return sum(math.prod(shape) for shape in model.trainable.values())


def tables_section(rounds=5, warmup=1, steps=3):
    """The tables section (see the module's docstring)."""
    m = MODELS["llama"]
    with_tables = list(m.targets) + list(TABLES)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = call("checkpoints:decoder_dir", path=tmp, family=m.model_type, config=m.config)
        args = contender_args(m, model_dir, steps=steps)
        tables = dict(args, targets=with_tables)
        specs = {"linears": Spec("decoder_step:EngineChat", args),
                 "lora_tables": Spec("decoder_step:EngineChat", tables),
                 "saved_tables": Spec("decoder_step:EngineChat", dict(args, modules_to_save=list(TABLES))),
                 "torch_lora_tables": Spec("decoder_step:TorchChat", tables)}
        out = alternate(specs, baseline="linears", rounds=rounds, warmup=warmup)
    out["trainable"] = {"linears": trainable_parameters(m.config, m.targets),
                        "lora_tables": trainable_parameters(m.config, with_tables),
                        "saved_tables": trainable_parameters(m.config, m.targets, TABLES)}
    return {"label": m.label, "shape": shape(m.config, m.batch, m.seq, with_tables, m.model_type),
            "dtype": "float32", **out}


def step_name(label, s):
    """'GPT-2-small-shaped 4x128 LoRA r=8 on c_attn' from a section's label and shape."""
    return (f"{label} {s['batch']}x{s['seq']} LoRA r={s['r']} on "
            f"{','.join(t.removesuffix('_proj') if t in TARGETS else t for t in s['targets'])}")


def table_rows(results):
    """(measure, value, note) rows of bench/run.py's table for what run_all returned; a section
    that failed is a row saying why."""
    rows = []
    for key in CPU_SECTIONS:
        cpu = results.get(key)
        if not cpu:
            continue
        if "failed" in cpu:
            rows.append((f"{MODELS[CPU_SECTIONS[key]].label}: failed", "-", cpu["failed"]))
            continue
        s = cpu["shape"]
        rows += cpu_rows(step_name(cpu.get("label", "tiny Llama"), s), s["batch"] * s["seq"], cpu)
    mem = results.get("memory")
    if mem:
        sizes = [f"{name} {v['gib']:.2f} GiB" for name, v in mem.items()
                 if isinstance(v, dict) and "gib" in v]
        rows.append(("TinyLlama 1.1B base weights", ", ".join(sizes),
                     f"{mem['parameters']:,} parameters"))
    ck = results.get("checkpointing")
    if ck and "failed" in ck:
        rows.append(("gradient checkpointing: failed", "-", ck["failed"]))
    elif ck:
        s = ck["shape"]
        rows.append((f"GPU step buffers, tiny Llama {s['num_hidden_layers']} layers "
                     f"{s['batch']}x{s['seq']}: gradient checkpointing",
                     f"{ck['checkpointed']['recorded_bytes'] / 2**20:.1f} MiB vs "
                     f"{ck['plain']['recorded_bytes'] / 2**20:.1f} MiB ({ck['ratio']:.2f}x)",
                     "the same loss" if ck["same_loss"] else "the losses differ"))
        t = ck["numpy_step"]
        rows.append((f"NumPy step, tiny Llama {s['num_hidden_layers']} layers "
                     f"{s['batch']}x{s['seq']}: gradient checkpointing",
                     f"{t['checkpointed_s'] * 1e3:.0f} ms vs {t['plain_s'] * 1e3:.0f} ms",
                     f"{t['ratio']:.2f}x the time per step (paired rounds {t['paired_ratio']:.2f}x)"))
    tb = results.get("tables")
    if tb and "failed" in tb:
        rows.append(("LoRA on the embedding and output layer: failed", "-", tb["failed"]))
    elif tb:
        s, n = tb["shape"], tb["trainable"]
        ms = {k: tb[k]["seconds"] * 1e3 for k in ("linears", "lora_tables", "saved_tables",
                                                   "torch_lora_tables")}
        rows.append((f"NumPy step, {tb['label']} {s['batch']}x{s['seq']}: LoRA on embed_tokens and "
                     "lm_head too",
                     f"{ms['lora_tables']:.0f} ms vs {ms['linears']:.0f} ms (q,v alone)",
                     f"{ms['lora_tables'] / ms['linears']:.2f}x; trainable {n['lora_tables']:,} vs "
                     f"{n['linears']:,}"))
        rows.append((f"NumPy step, {tb['label']} {s['batch']}x{s['seq']}: the tables whole "
                     "(modules_to_save) instead",
                     f"{ms['saved_tables']:.0f} ms",
                     f"{ms['saved_tables'] / ms['lora_tables']:.2f}x the LoRA's time; trainable "
                     f"{n['saved_tables']:,}"))
        rows.append((f"torch + PEFT CPU step, the same LoRA on embed_tokens and lm_head",
                     f"{ms['torch_lora_tables']:.0f} ms",
                     f"NumPy backend {ms['torch_lora_tables'] / ms['lora_tables']:.2f}x faster"))
    return rows


# section -> MODELS key ("cpu" is the tiny Llama's, its name from before the shape was a parameter)
CPU_SECTIONS = {"cpu": "llama", "gpt2": "gpt2", "phi3": "phi3"}
SECTIONS = {**{name: partial(cpu_section, model) for name, model in CPU_SECTIONS.items()},
            "memory": base_weight_memory, "checkpointing": checkpointing_memory,
            "tables": tables_section}


def run_all(sections=tuple(SECTIONS), keep_going=False):
    """{section: result}. With `keep_going`, a section that raises is recorded as
    {"failed": "<error>"} and the others still run (bench/run.py then fails at the end)."""
    out = {}
    for name in sections:
        try:
            out[name] = SECTIONS[name]()
        except Exception as e:
            if not keep_going:
                raise
            out[name] = {"failed": f"{type(e).__name__}: {e}"}
    return out


def failures(results):
    """{section: error} of run_all's failed sections."""
    return {k: v["failed"] for k, v in results.items() if isinstance(v, dict) and "failed" in v}


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1:] or tuple(SECTIONS)), indent=2))
