"""One LoRA training step of a Llama decoder (forward, causal-LM loss, backward; no optimizer
update), timed on py_engine against transformers + PEFT, side by side in one process.

    python bench/decoder_step.py              # all sections, one JSON document
    python bench/decoder_step.py cpu memory   # some of them

Sections:
  cpu     a tiny Llama (hidden 256, 4 layers, 8 query heads sharing 4 key/value heads (GQA
          groups of 2, head_dim 32), intermediate 688, vocab 32000), batch 8 x 128, LoRA r=8
          (alpha 16) on q_proj and v_proj, float32: the NumPy backend against torch + PEFT on the
          CPU with the same number of threads. Rounds alternate between the two so background
          load hits both alike; medians of tokens/s and their ratio. Both losses are reported:
          they come from the same weights and batch, so they must agree.
  memory  base-weight bytes of a 1.1B TinyLlama config from its parameter shapes, per storage
          mode (f32, f16, int8, int4) by the rule the GPU runtime allocates with.
  gpu     the native GPU backend against torch + PEFT on CUDA for a TinyLlama-shaped step (the
          1.1B config, batch 4 x 256), only where torch sees CUDA and the native adapter is a
          real GPU; otherwise the section records why it was skipped.

The random checkpoint is built in memory by transformers (LlamaForCausalLM) and written to a
temporary directory, with a PEFT adapter whose lora_B is random (not PEFT's zeros) so that
every LoRA gradient is non-trivial; both contenders load those same files.
"""

import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

B, T, R, ALPHA = 8, 128, 8, 16
TARGETS = ("q_proj", "v_proj")
GPU_B, GPU_T = 4, 256

TINY_LLAMA = dict(model_type="llama", vocab_size=32000, hidden_size=256, intermediate_size=688,
                  num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                  max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)
TINYLLAMA_1B = dict(model_type="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                    num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                    max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)

# Bytes a stored tensor of `shape` takes, per base-weight format.
def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def base_weight_memory(config=TINYLLAMA_1B, modes=("f32", "f16", "int8", "int4")):
    """{parameters, <mode>: {bytes, gib}}: the GPU bytes of every base tensor of the checkpoint
    under each storage mode, by the rule GpuRuntime.create allocates with (projections f16 or
    quantized in groups of 64 with f32 scales; embeddings, norms and the head f32). The tiny
    model's allocations are checked against the same function in tests/test_chat_model.py."""
    from py_engine.models.llama import LlamaLoRA
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.train.gpu_runtime import planned_base_bytes

    llama = LlamaConfig(**config)
    shapes = llama.parameter_shapes()
    model = LlamaLoRA(llama, None)
    out = {"config": {k: v for k, v in config.items() if k != "model_type"},
           "parameters": sum(math.prod(s) for s in shapes.values())}
    for mode in modes:
        total = planned_base_bytes(model, shapes, mode)
        out[mode] = {"bytes": total, "gib": total / 2**30}
    return out


def write_checkpoint(path, config, seed=0):
    """A random LlamaForCausalLM under path/model and a PEFT adapter under path/adapter."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    base = LlamaForCausalLM(HFLlamaConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    base.save_pretrained(path / "model", safe_serialization=True)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=R, lora_alpha=ALPHA,
                                            lora_dropout=0.0, target_modules=list(TARGETS)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn_like(p))
    model.save_pretrained(path / "adapter")
    del model, base
    return path


def token_batch(vocab, batch, seq, seed=0):
    """(ids, mask, labels) as int64 arrays: every row full length, every next token counted."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq))
    return ids, np.ones_like(ids), ids.copy()


def torch_round(path, ids, mask, labels, device="cpu"):
    """A round function: one PEFT step on `device`; returns (seconds, loss)."""
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(path / "model", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, path / "adapter", is_trainable=True).to(device)
    model.train()
    ids, mask, labels = (torch.as_tensor(a, device=device) for a in (ids, mask, labels))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def one_round():
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        sync()
        return time.perf_counter() - t0, out.loss.item()

    return one_round


def _engine_model(path):
    from py_engine.formats import safetensors
    from py_engine.formats.peft_adapter import load_adapter
    from py_engine.models.llama import LlamaLoRA
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.models.lora_config import LoraConfig

    config = LlamaConfig.from_file(path / "model")
    adapter_config, tensors, _ = load_adapter(path / "adapter")
    model = LlamaLoRA(config, LoraConfig.from_peft_dict(adapter_config))
    return config, model, safetensors.load(path / "model" / "model.safetensors"), tensors


def numpy_round(path, ids, mask, labels):
    """A round function: one step on the NumPy backend in float32; returns (seconds, loss)."""
    import numpy as np

    from py_engine.backends.numpy_backend import NumpyBackend
    from py_engine.models.llama import shift_labels
    from py_engine.ops import rope as rope_ops
    from py_engine.train.batch import Batch

    config, model, file, tensors = _engine_model(path)
    be = NumpyBackend(np.float32)
    for name, shape in config.parameter_shapes().items():
        be.set_param(name, np.frombuffer(file.floats(name), np.float32), shape)
    for name, (shape, values) in tensors.items():
        be.set_param(name, np.asarray(values, np.float32), shape)
        be.add_grad(name)
    n, seq = ids.shape
    batch = Batch(ids.tolist(), [[0] * seq] * n, mask.tolist())
    shifted = np.asarray(shift_labels(labels.tolist()))
    tables = rope_ops.rope_tables(rope_ops.rope_inv_freq(config.head_dim, config.rope_parameters), seq)

    def one_round():
        be.zero_grads()
        t0 = time.perf_counter()
        hidden, saved = model.hidden(be, batch, tables)
        loss, dh = be.lm_head_loss(hidden, be.param(model.head_name), shifted)
        model.backward(be, dh, saved, tables)
        return time.perf_counter() - t0, float(loss)

    return one_round


def gpu_round(device, path, ids, mask, labels, chunk=1024):
    """A round function: one replay of the recorded step on the GPU backend (the loss is the only
    readback); returns (seconds, loss)."""
    import numpy as np

    from py_engine.backends.gpu_backend import GpuBackend, Kernels, Tensor
    from py_engine.gpu import run_sync
    from py_engine.kernels.cross_entropy import decode_metrics
    from py_engine.models.llama import shift_labels
    from py_engine.train.batch import Batch

    config, model, file, tensors = _engine_model(path)
    kernels = run_sync(Kernels.load(device, decoder=True))
    be = GpuBackend(device, kernels)
    for name, shape in config.parameter_shapes().items():
        be.params[name] = Tensor(device.buffer_from(file.floats(name)), shape)
    for name, (shape, values) in tensors.items():
        be.params[name] = Tensor(device.buffer_from(np.asarray(values, np.float32)), shape)
        be.grads[name] = be.new(*shape)
    del file
    u32 = lambda a: Tensor(device.buffer_from(np.asarray(a, np.uint32)), np.shape(a))  # noqa: E731
    n, seq = ids.shape
    batch = Batch(ids.tolist(), [[0] * seq] * n, mask.tolist())
    batch.ids, batch.mask = u32(ids), u32(mask)
    program = device.program("decoder step")
    be.record(program)
    cos, sin = kernels.rope.tables(config.head_dim, seq, config.rope_parameters)
    hidden, saved = model.hidden(be, batch, (cos, sin, seq))
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name),
                                  u32(shift_labels(labels.tolist())), chunk=chunk)
    model.backward(be, dh, saved, (cos, sin, seq))
    program.read(metrics)

    def one_round():
        t0 = time.perf_counter()
        values = run_sync(program.run())
        return time.perf_counter() - t0, decode_metrics(values[0])["loss"]

    return one_round


def side_by_side(rounds, repeats, warmup):
    """{name: () -> (seconds, loss)}: alternate them; per name the median seconds and the
    last loss."""
    seconds = {name: [] for name in rounds}
    losses = {}
    for i in range(warmup + repeats):
        for name, one_round in rounds.items():
            s, losses[name] = one_round()
            if i >= warmup:
                seconds[name].append(s)
    return {name: {"seconds": median(seconds[name]), "rounds": len(seconds[name]),
                   "loss": losses[name]} for name in rounds}


def blas_threads():
    """The threads NumPy's BLAS uses (what torch is then set to), or the CPU count."""
    try:
        from threadpoolctl import threadpool_info

        counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        if counts:
            return max(counts)
    except ImportError:
        pass
    return os.cpu_count() or 1


def _shape(config, batch, seq):
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")
    return {"batch": batch, "seq": seq, "r": R, "lora_alpha": ALPHA, "targets": list(TARGETS),
            **{k: config[k] for k in keys}}


def _compare(results, ours, theirs):
    tokens = results["shape"]["batch"] * results["shape"]["seq"]
    for r in (results[ours], results[theirs]):
        r["tokens_per_s"] = tokens / r["seconds"]
    results[ours]["vs_torch"] = results[ours]["tokens_per_s"] / results[theirs]["tokens_per_s"]
    results["loss_difference"] = abs(results[ours]["loss"] - results[theirs]["loss"])
    return results


def cpu_section(repeats=5, warmup=1):
    """The tiny Llama step: NumPy backend vs torch + PEFT on the CPU, float32."""
    import torch

    threads = blas_threads()
    torch.set_num_threads(threads)
    ids, mask, labels = token_batch(TINY_LLAMA["vocab_size"], B, T)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_checkpoint(Path(tmp), TINY_LLAMA)
        rounds = {"torch": torch_round(path, ids, mask, labels),
                  "numpy": numpy_round(path, ids, mask, labels)}
        results = {"shape": _shape(TINY_LLAMA, B, T), "dtype": "float32", "threads": threads,
                   **side_by_side(rounds, repeats, warmup)}
    results["torch"]["threads"] = torch.get_num_threads()
    return _compare(results, "numpy", "torch")


def open_real_gpu():
    """(device, None) for a native adapter that is a real GPU, else (None, why not)."""
    from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftwareAdapterWarning)
            device = run_sync(open_device("native"))
    except Exception as e:  # no adapter at all, no Vulkan/Metal/D3D12 driver
        return None, f"no native adapter ({type(e).__name__}: {e})"
    if device.info.is_software:
        a = device.info
        return None, f"native adapter is software ({a.vendor} {a.architecture or a.device})"
    return device, None


def gpu_section(config=TINYLLAMA_1B, batch=GPU_B, seq=GPU_T, repeats=5, warmup=2):
    """The native GPU backend vs torch + PEFT on CUDA, float32, for a TinyLlama-shaped step."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no GPU: torch sees no CUDA device"}
    device, why = open_real_gpu()
    if device is None:
        return {"skipped": f"no GPU: {why}"}
    ids, mask, labels = token_batch(config["vocab_size"], batch, seq)
    results = {"shape": _shape(config, batch, seq), "dtype": "float32",
               "adapter": device.info.as_dict(), "cuda": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_checkpoint(Path(tmp), config)
        try:
            rounds = {"gpu": gpu_round(device, path, ids, mask, labels)}
        except Exception as e:   # e.g. a buffer over the adapter's limits: record, do not hide
            results["gpu"] = {"failed": f"{type(e).__name__}: {e}"}
            return results
        rounds["torch"] = torch_round(path, ids, mask, labels, device="cuda")
        results.update(side_by_side(rounds, repeats, warmup))
    return _compare(results, "gpu", "torch")


def table_rows(results):
    """(measure, value, note) rows of bench/run.py's table for what run_all returned."""
    rows = []
    cpu = results.get("cpu")
    if cpu:
        s = cpu["shape"]
        shape = (f"tiny Llama {s['batch']}x{s['seq']} LoRA r={s['r']} on "
                 f"{'+'.join(t.removesuffix('_proj') for t in s['targets'])}")
        rows.append((f"{shape}: torch + PEFT, CPU ({cpu['torch']['threads']} threads)",
                     f"{cpu['torch']['tokens_per_s']:.0f} tok/s",
                     f"{cpu['torch']['seconds'] * 1e3:.0f} ms/step"))
        rows.append((f"{shape}: py_engine NumPy backend", f"{cpu['numpy']['tokens_per_s']:.0f} tok/s",
                     f"{cpu['numpy']['vs_torch']:.2f}x torch; losses differ by "
                     f"{cpu['loss_difference']:.1e}"))
    mem = results.get("memory")
    if mem:
        sizes = [f"{name} {v['gib']:.2f} GiB" for name, v in mem.items()
                 if isinstance(v, dict) and "gib" in v]
        rows.append(("TinyLlama 1.1B base weights", ", ".join(sizes),
                     f"{mem['parameters']:,} parameters"))
    gpu = results.get("gpu")
    if gpu:
        name = "TinyLlama-shaped step: GPU backend vs torch + PEFT on CUDA"
        if "skipped" in gpu:
            rows.append((name, "skipped", gpu["skipped"]))
        elif "failed" in gpu.get("gpu", {}):
            rows.append((name, "failed", gpu["gpu"]["failed"]))
        else:
            s = gpu["shape"]
            shape = f"TinyLlama {s['batch']}x{s['seq']} r={s['r']}"
            rows.append((f"{shape}: torch + PEFT ({gpu['cuda']})",
                         f"{gpu['torch']['tokens_per_s']:.0f} tok/s",
                         f"{gpu['torch']['seconds'] * 1e3:.0f} ms/step"))
            rows.append((f"{shape}: py_engine GPU backend ({gpu['adapter']['vendor']})",
                         f"{gpu['gpu']['tokens_per_s']:.0f} tok/s",
                         f"{gpu['gpu']['vs_torch']:.2f}x torch"))
    return rows


SECTIONS = {"cpu": cpu_section, "memory": base_weight_memory, "gpu": gpu_section}


def run_all(sections=tuple(SECTIONS)):
    return {name: SECTIONS[name]() for name in sections}


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1:] or tuple(SECTIONS)), indent=2))
