"""The GPU run behind bench/gpu_device.sh: on the native adapter, the kernel selfcheck, a
decoding step's one-row products (bench/decode_products.py: gemv against the GEMM entries), the
MiniLM-shaped, TinyLlama-shaped, GPT-2-small-shaped and Phi-3-shaped LoRA training steps
(bench/decoder_step.py's contenders, the shape a parameter) of py_engine's GPU backend against
torch + PEFT on CUDA (on the CPU where torch sees no GPU; the device used is recorded), the
TinyLlama-shaped step with gradient checkpointing against without it (time and buffers), each
contender in its own process, rounds alternating, and where the engine's step time goes
(per-phase timings and a per-dispatch profile of the recorded step), and on each decoder
checkpoint greedy and sampled generation against transformers' generate
(bench/generation_speed.py).
When extension/dist/model is there (`python build.py build` deploys it; carry it to the GPU
machine), also the tab sorter's classifier on the native adapter: its answers on the
evaluation tabs and its latency per tab alone and in a batch of 50.
Writes gpu_device.json and gpu_device.md (the table) into --out.

    python bench/gpu_device.py --size full --out DIR     # what gpu_device.sh runs
    python bench/gpu_device.py --size small --out DIR    # small shapes: proves the path on lavapipe

The checkpoints are random (bench/checkpoints.py) with the real models' shapes, built in /tmp.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from py_engine.cli import POSITIVE  # noqa: E402

from bert_step import MINILM_SHAPE  # noqa: E402
from decoder_step import GPT2_SMALL_SHAPED, MODELS, PHI3_SHAPED, TINYLLAMA_1B, DecoderShape, contender_args, require_family  # noqa: E402
from decode_products import table_rows as decode_table_rows  # noqa: E402
from attention_variants import table_rows as attention_table_rows  # noqa: E402
from matmul_variants import table_rows as matmul_table_rows  # noqa: E402
from processes import Spec, alternate, call, machine  # noqa: E402
from generation_speed import SAMPLED  # noqa: E402

SMALL_WIDTHS = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
SIZES = {
    # name: (bert config, bert batch, {key: decoder shape}, seconds of rounds per model)
    "full": (MINILM_SHAPE, 16, {
        "tinyllama": DecoderShape("TinyLlama-shaped", "llama", TINYLLAMA_1B, batch=4, seq=256),
        # GPT-2 small as released (124M: 12 layers)
        "gpt2": DecoderShape("GPT-2-small-shaped", "gpt2", dict(GPT2_SMALL_SHAPED, n_layer=12), batch=4,
                             seq=256, targets=MODELS["gpt2"].targets),
        # Phi-3-mini's widths (hidden 3072, 32 heads of 96, intermediate 8192), 8 of its 32 layers
        "phi3": DecoderShape("Phi-3-shaped", "phi3", dict(PHI3_SHAPED, hidden_size=3072, intermediate_size=8192,
                                                          num_attention_heads=32, num_key_value_heads=32,
                                                          num_hidden_layers=8),
                             batch=4, seq=256, targets=MODELS["phi3"].targets)}, 100),
    "small": (dict(MINILM_SHAPE, vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=64),
              4, {
        "tinyllama": DecoderShape("TinyLlama-shaped", "llama", dict(TINYLLAMA_1B, **SMALL_WIDTHS), batch=2, seq=64),
        "gpt2": DecoderShape("GPT-2-small-shaped", "gpt2", dict(GPT2_SMALL_SHAPED, vocab_size=1000, n_embd=64,
                                                                n_head=4, n_layer=2, n_positions=128),
                             batch=2, seq=64, targets=MODELS["gpt2"].targets),
        "phi3": DecoderShape("Phi-3-shaped", "phi3", dict(PHI3_SHAPED, **dict(SMALL_WIDTHS, num_key_value_heads=4)),
                             batch=2, seq=64, targets=MODELS["phi3"].targets)}, 20),
}


def native_report(site=None):
    """Which wgpu this is (and whether it came from `site`), the adapter, the kernel selfcheck."""
    import wgpu

    from contenders import open_native
    from py_engine.gpu import run_sync
    from py_engine.gpu.selfcheck import run_selfcheck

    out = {"wgpu": {"file": wgpu.__file__, "version": wgpu.__version__}}
    if site is not None:
        out["wgpu"]["from_site"] = Path(wgpu.__file__).resolve().is_relative_to(Path(site).resolve())
    device = open_native()
    out["adapter"] = device.info.as_dict()
    out["limits"] = {k: device.limits.get(k) for k in ("max_buffer_size", "max_storage_buffer_binding_size",
                                                       "max_compute_workgroup_storage_size")}
    t0 = time.perf_counter()
    out["selfcheck"] = run_sync(run_selfcheck(device))
    out["selfcheck"]["seconds"] = time.perf_counter() - t0
    return out


TAB_MODEL = ROOT / "extension" / "dist" / "model"   # the extension's model, as `build.py build` deploys it
# size: (evaluation tabs classified, or None for all; single tabs timed; batches of 50 timed)
TAB_RUNS = {"full": (None, 100, 8), "small": (10, 2, 1)}


def tab_report(model, size):
    """The extension's tab classifier (its int8 base weights, adapter and rules, as deployed)
    on the native adapter: its answers on the evaluation tabs there, and the latency of one tab
    alone and of a batch of 50 (the issue's target: under 5 ms per tab in a batch)."""
    from contenders import open_native
    from gpu_profile import ProgramLog
    from py_engine.demo import evaluation_table
    from py_engine.gpu import run_sync

    count, tab_runs, batch_runs = TAB_RUNS[size]
    device = open_native()
    log = ProgramLog(device)
    report = evaluation_table(model, backend="gpu", device=device, count=count,
                              latency_runs=(tab_runs, batch_runs))
    out = {k: report[k] for k in ("accuracy", "model_accuracy", "count", "sizes", "base_dtype",
                                  "latency_ms")}
    # where the time of one tab alone and of a batch of 50 goes (the classifier records a
    # program per batch shape, labelled "outputs BATCHxSEQ"), after the timed calls
    profiles = {}
    for name, prefix in (("one tab", "outputs 1x"), ("a batch of 50", "outputs 50x")):
        program = next((p for p in log.programs if (p.label or "").startswith(prefix)), None)
        if program is not None:
            profiles[name] = run_sync(log.profile_largest(budget_s=15.0, program=program))
    return dict(out, model=str(model), adapter=device.info.as_dict(), profiles=profiles)


def system_report():
    """The driver and the Vulkan loader as the system sees them."""
    out = {"machine": machine()}
    for name, cmd in (("nvidia_smi", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                      "--format=csv,noheader"]),
                      ("vulkan_loader", ["sh", "-c", "ldconfig -p | grep libvulkan"])):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            out[name] = done.stdout.strip() or done.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            out[name] = f"unavailable ({type(e).__name__})"
    out["env"] = {k: os.environ[k] for k in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES", "PYTHONPATH")
                  if k in os.environ}
    return out


def compare(name, engine, torch_spec, budget_s):
    try:
        out = alternate({"gpu": engine, "torch": torch_spec}, baseline="torch", rounds=5, warmup=1,
                        budget_s=budget_s, settle_s=0.1)
    except Exception as e:      # recorded, not hidden: the table says what failed
        return {"failed": f"{type(e).__name__}: {e}"}
    print(f"[gpu_device] {name}: engine {out['gpu']['seconds'] * 1e3:.1f} ms/step, torch "
          f"{out['torch']['seconds'] * 1e3:.1f} ms/step on {out['torch']['info']['device']}", flush=True)
    return out


def compare_generation(name, model_dir, budget_s=20, sampling=None):
    """Generation on the same checkpoint (bench/generation_speed.py), greedy or with `sampling`
    (its settings): per-token time of the GPU decoder against transformers' generate on CUDA,
    and, greedy, how many of the tokens agree (random weights: near-ties may part ways after
    float rounding)."""
    args = {"model_dir": model_dir, "sampling": sampling}
    try:
        out = alternate({"gpu": Spec("generation_speed:EngineGenerate", args),
                         "torch": Spec("generation_speed:TorchGenerate", {**args, "device": "cuda"})},
                        baseline="torch", rounds=3, warmup=1, budget_s=budget_s, settle_s=0.1)
    except Exception as e:
        return {"failed": f"{type(e).__name__}: {e}"}
    ours, theirs = out["gpu"]["finish"]["ids"], out["torch"]["finish"]["ids"]
    out["same_prefix"] = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
    how = "sampled" if sampling else "greedy"
    print(f"[gpu_device] {name} {how} generation: engine {out['gpu']['seconds'] * 1e3:.2f} ms/token, "
          f"torch {out['torch']['seconds'] * 1e3:.2f} ms/token on {out['torch']['info']['device']}",
          flush=True)
    return out


def compare_decoder(m, path, steps, budget, partial=None, left=lambda: float("inf")):
    """A decoder shape's GPU step against torch + PEFT on CUDA; `budget()` the seconds of rounds,
    asked for once the checkpoint is built. A family the engine lacks is a failed row.
    `partial(out)` is handed the step's result before generation is timed, and again after
    the greedy generation, so that a run stopped during generation keeps what it has; sampled
    generation is timed only while `left()` seconds of the run leave room for it."""
    try:
        require_family(m.model_type)
        t0 = time.perf_counter()
        model_dir = call("checkpoints:decoder_dir", path=str(path), family=m.model_type, config=m.config,
                         device="cuda")
        built_s = time.perf_counter() - t0
    except Exception as e:
        return {"failed": f"{type(e).__name__}: {e}", "label": m.label}
    out = compare(m.label,
                  Spec("decoder_step:EngineChat", contender_args(m, model_dir, backend="gpu", steps=steps,
                                                                 profile=True)),
                  Spec("decoder_step:TorchChat", contender_args(m, model_dir, device="cuda", steps=steps)),
                  budget())
    out["label"], out["checkpoint_s"] = m.label, built_s
    out["shape"] = {"model_type": m.model_type, "batch": m.batch, "seq": m.seq, "targets": list(m.targets),
                    **m.config}
    if partial is not None:
        partial(out)
    out["generation"] = compare_generation(m.label, model_dir)
    if partial is not None:
        partial(out)
    if left() >= SAMPLED_NEEDS_S:
        out["sampled_generation"] = compare_generation(m.label, model_dir, sampling=SAMPLED)
    else:
        out["sampled_generation"] = {"skipped": f"{left():.0f} s of the run left, "
                                                f"{SAMPLED_NEEDS_S} s needed"}
    return out


PARTS = ("tabs", "matmul", "attention", "decode", "minilm", "tinyllama", "checkpointing", "gpt2",
         "phi3")
SAMPLED_NEEDS_S = 60   # two processes loading a checkpoint, then rounds of sampled generation


def compare_checkpointing(m, path, steps, budget_s):
    """The decoder shape `m`'s GPU step with gradient checkpointing against without it: time
    per step (alternating rounds, separate processes) and the buffers each step's recorded
    programs hold. The checkpoint at `path` is built there unless a part before built it."""
    try:
        model_dir = str(path) if (Path(path) / "config.json").is_file() else call(
            "checkpoints:decoder_dir", path=str(path), family=m.model_type, config=m.config,
            device="cuda")
        args = contender_args(m, model_dir, backend="gpu", steps=steps)
        out = alternate({"plain": Spec("decoder_step:EngineChat", args),
                         "checkpointed": Spec("decoder_step:EngineChat",
                                              dict(args, checkpointing=True))},
                        baseline="plain", rounds=5, warmup=1, budget_s=budget_s, settle_s=0.1)
    except Exception as e:      # recorded, not hidden: the table says what failed
        return {"failed": f"{type(e).__name__}: {e}", "label": m.label}
    out["label"] = m.label
    out["shape"] = {"batch": m.batch, "seq": m.seq, **m.config}
    print(f"[gpu_device] {m.label} gradient checkpointing: {out['checkpointed']['seconds'] * 1e3:.1f} "
          f"ms/step against {out['plain']['seconds'] * 1e3:.1f}", flush=True)
    return out


def parts_list(text):
    """--parts: names from PARTS, comma-separated."""
    parts = tuple(p for p in text.split(",") if p)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(PARTS)}")
    return parts


def run(size, out_dir, site=None, seconds=420, parts=PARTS):
    """Everything, or the `parts` named (PARTS), within `seconds`: the results are written after
    each part, so a run stopped from outside still leaves what it measured."""
    bert, bert_batch, decoders, budget = SIZES[size]
    decoders = {key: m for key, m in decoders.items() if key in parts}
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"size": size, "command": f"bench/gpu_device.sh {size}", "system": system_report()}

    def save():
        results["total_s"] = time.perf_counter() - started
        (out_dir / "gpu_device.json").write_text(json.dumps(results, indent=2) + "\n")
        (out_dir / "gpu_device.md").write_text(table(results) + "\n")

    def rounds_budget(share):
        """Seconds of measured rounds that still fit: `share` of what is left, at most `budget`."""
        return max(0.0, min(budget, share * (seconds - (time.perf_counter() - started))))

    results["native"] = call("gpu_device:native_report", site=site)
    n = results["native"]
    print(f"[gpu_device] wgpu {n['wgpu']['version']} from {n['wgpu']['file']}; adapter "
          f"{n['adapter']['vendor']} {n['adapter']['device']} ({n['adapter']['backend']}, "
          f"software: {n['adapter']['is_software']}); selfcheck ok: {n['selfcheck']['ok']}", flush=True)
    save()
    if "tabs" in parts and TAB_MODEL.is_dir():   # the tab sorter's model: an ignored build output, carried
        try:
            results["tabs"] = call("gpu_device:tab_report", model=str(TAB_MODEL), size=size)
        except Exception as e:
            results["tabs"] = {"failed": str(e)}
        save()
    elif "tabs" in parts:
        results["tabs"] = {"failed": f"no {TAB_MODEL.relative_to(ROOT)}: run `python build.py "
                                     "build` and carry it beside the checkout"}
        save()
    if "matmul" in parts:    # the matrix products' kernels side by side (seconds)
        try:
            results["matmul"] = call("matmul_variants:measure_native", size=size, seconds=60)
        except Exception as e:
            results["matmul"] = {"failed": str(e)}
        save()
    if "attention" in parts:    # the causal attention's backward, grad_kv both ways (seconds)
        try:
            results["attention"] = call("attention_variants:measure_native", size=size, seconds=40)
        except Exception as e:
            results["attention"] = {"failed": str(e)}
        save()
    if "decode" in parts:    # a decoding step's one-row products: gemv against the GEMM entries (seconds)
        try:
            results["decode_products"] = call("decode_products:measure_native", size=size)
        except Exception as e:
            results["decode_products"] = {"failed": str(e)}
        save()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-device-"))
    steps = 2 if size == "full" else 3          # timed steps per round (one more runs untimed)
    try:
        if "minilm" in parts:
            t0 = time.perf_counter()
            bert_dir = call("checkpoints:bert_dir", path=str(tmp / "bert"), config=bert)
            results["checkpoints_s"] = time.perf_counter() - t0
            results["minilm"] = compare(
                "MiniLM-shaped",
                Spec("bert_step:EngineClassifier", {"model_dir": bert_dir, "backend": "gpu", "batch": bert_batch,
                                                    "steps": steps, "profile": True}),
                Spec("bert_step:TorchClassifier", {"model_dir": bert_dir, "device": "cuda", "batch": bert_batch,
                                                   "steps": steps}), rounds_budget(0.2))
            results["minilm"]["shape"] = {"batch": bert_batch, "seq": 32, **bert}
            save()
        for i, (key, m) in enumerate(decoders.items()):
            # each decoder gets an equal share of what is left (the last all of it, less the
            # checkpoint and model loading the earlier ones showed)
            def partial(out, key=key):
                results[key] = out
                save()
            results[key] = compare_decoder(m, tmp / key, steps, lambda: rounds_budget(0.6 / (len(decoders) - i)),
                                           partial, left=lambda: seconds - (time.perf_counter() - started))
            save()
        if "checkpointing" in parts:    # on the TinyLlama-shaped checkpoint where a part built it
            results["checkpointing"] = compare_checkpointing(
                SIZES[size][2]["tinyllama"], tmp / "tinyllama", steps, rounds_budget(0.5))
            save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        save()
    print(table(results))
    return results


def _md(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def table(results):
    n = results["native"]
    a = n["adapter"]
    check = n["selfcheck"]
    rows = [("measure", "value", "note"),
            ("wgpu", n["wgpu"]["version"], n["wgpu"]["file"]),
            ("adapter", f"{a['vendor']} {a['device']}".strip(),
             f"{a['backend']}, {'software' if a['is_software'] else 'hardware'}"),
            ("kernel selfcheck", "ok" if check["ok"] else "FAIL",
             f"max rel error {check['max_rel_error']:.1e}, {len(check['checks'])} checks")]
    tabs = results.get("tabs")
    if tabs and "failed" in tabs:
        rows.append(("tab classifier", "failed", tabs["failed"][:200]))
    elif tabs:
        lat = tabs["latency_ms"]
        rows.append((f"tab classifier (base {tabs['base_dtype']}): a batch of 50",
                     f"{lat['per_batch_50']['mean'] / 50:.2f} ms per tab",
                     f"target under 5 ms; p95 of the batch {lat['per_batch_50']['p95']:.1f} ms"))
        rows.append(("tab classifier: one tab alone", f"{lat['per_tab']['mean']:.2f} ms",
                     f"p95 {lat['per_tab']['p95']:.2f} ms"))
        rows.append((f"tab classifier: {tabs['count']} evaluation tabs", f"{tabs['accuracy']:.4f}",
                     f"the model alone {tabs['model_accuracy']:.4f}"))
    matmul = results.get("matmul")
    if matmul and "failed" in matmul:
        rows.append(("matrix products", "failed", matmul["failed"][:200]))
    elif matmul:
        rows += matmul_table_rows(matmul)
    attention = results.get("attention")
    if attention and "failed" in attention:
        rows.append(("attention backward", "failed", attention["failed"][:200]))
    elif attention:
        rows += attention_table_rows(attention)
    decode = results.get("decode_products")
    if decode and "failed" in decode:
        rows.append(("decoding products", "failed", decode["failed"][:200]))
    elif decode:
        rows += decode_table_rows(decode, f"{a['vendor']} {a['device']}".strip())
    profiles = []
    for key in ("minilm", *SIZES[results["size"]][2]):
        r = results.get(key)
        if r is None:
            continue
        label = r.get("label", "MiniLM-shaped")
        if "failed" in r:
            rows.append((label, "failed", r["failed"][:200]))
            continue
        s = r["shape"]
        tokens = s["batch"] * s["seq"]
        hidden, layers = s.get("hidden_size", s.get("n_embd")), s.get("num_hidden_layers", s.get("n_layer"))
        name = f"{label} {s['batch']}x{s['seq']} (hidden {hidden}, {layers} layers)"
        t, g = r["torch"], r["gpu"]
        where = t["info"]["cuda"] or "CPU"
        rows.append((f"{name}: torch + PEFT ({where})", f"{t['seconds'] * 1e3:.1f} ms/step",
                     f"{tokens / t['seconds']:.0f} tok/s"))
        phases = g["finish"]["phases"]
        rows.append((f"{name}: py_engine GPU backend", f"{g['seconds'] * 1e3:.1f} ms/step",
                     f"{g['vs_torch']:.2f}x torch; create {phases['create_s']:.1f} s, first step "
                     f"{phases['first_step_s']:.2f} s"))
        prof = g["finish"]["dispatches"]
        rows.append((f"{name}: its step replayed", f"{prof['replay_ms']:.1f} ms",
                     f"{prof['dispatches']} dispatches; kernels alone sum to {prof['sum_of_kernels_ms']:.1f} ms"))
        for key, how in (("generation", "greedy"), ("sampled_generation", "sampled")):
            gen = r.get(key)
            if gen and "skipped" in gen:
                rows.append((f"{label}: {how} generation", "not run", gen["skipped"]))
            elif gen and "failed" in gen:
                rows.append((f"{label}: {how} generation", "failed", gen["failed"][:200]))
            elif gen:
                tg, eg = gen["torch"], gen["gpu"]
                settings = (f"; temperature {SAMPLED['temperature']}, top-p {SAMPLED['top_p']}"
                            if how == "sampled" else "")
                rows.append((f"{label}: {how} generation, transformers ({tg['info']['cuda'] or tg['info']['device']})",
                             f"{tg['seconds'] * 1e3:.2f} ms/token", f"{tg['info']['tokens']} tokens after "
                             f"{tg['info']['prompt']}, prefill included{settings}"))
                agree = f"; first {gen['same_prefix']} tokens the same" if how == "greedy" else ""
                rows.append((f"{label}: {how} generation, py_engine GPU decoder",
                             f"{eg['seconds'] * 1e3:.2f} ms/token", f"{eg['vs_torch']:.2f}x transformers{agree}"))
        profiles.append((name, prof))
    ck = results.get("checkpointing")
    if ck and "failed" in ck:
        rows.append((f"{ck['label']}: gradient checkpointing", "failed", ck["failed"][:200]))
    elif ck:
        s, plain, on = ck["shape"], ck["plain"], ck["checkpointed"]
        held = [r["finish"]["recorded_bytes"] / 2**20 for r in (on, plain)]
        rows.append((f"{ck['label']} {s['batch']}x{s['seq']}: py_engine GPU step with gradient "
                     "checkpointing", f"{on['seconds'] * 1e3:.1f} ms/step",
                     f"{1 / on['vs_plain']:.2f}x the time without it ({plain['seconds'] * 1e3:.1f} "
                     f"ms); step buffers {held[0]:.0f} MiB against {held[1]:.0f} MiB"))
    text = _md(rows)
    if tabs and "failed" not in tabs:
        profiles = [(f"the tab classifier, {name} ({prof['program']})", prof)
                    for name, prof in tabs.get("profiles", {}).items()] + profiles
    for name, prof in profiles:
        kernel_rows = [("kernel", "grid", "per step", "us/dispatch", "ms/step", "share")]
        for r in prof["kernels"][:8]:
            kernel_rows.append((r["kernel"], "x".join(map(str, r["groups"])), r["per_step"],
                                f"{r['us_per_dispatch']:.1f}", f"{r['ms_per_step']:.2f}", f"{r['share']:.0%}"))
        text += f"\n\nWhere the GPU step goes, {name} (each kernel and grid replayed alone):\n\n" + _md(kernel_rows)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--site", default=None, help="where wgpu must come from (checked and recorded)")
    parser.add_argument("--seconds", type=POSITIVE, default=420, help="time for the whole run")
    parser.add_argument("--parts", type=parts_list, default=PARTS,
                        help=f"what to run, comma-separated (default all: {','.join(PARTS)})")
    args = parser.parse_args()
    # `timeout` stops the run with SIGTERM: exit through the finally blocks, which write the
    # results so far and end the contenders' processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args.size, args.out, args.site, args.seconds, args.parts)
    if args.site and not results["native"]["wgpu"]["from_site"]:
        sys.exit(f"[gpu_device] wgpu came from {results['native']['wgpu']['file']}, not {args.site}")
    if not results["native"]["selfcheck"]["ok"]:
        sys.exit("[gpu_device] the kernel selfcheck failed")
