"""Benchmarks: `python build.py bench` (runs this inside .venv after building web/dist).

Prints a short table and writes bench/results/latest.json. Comparisons are made side by side
in one run and reported as ratios, because these machines are shared and noisy; absolute times
on a software adapter (SwiftShader, lavapipe) say nothing about a real GPU. Training steps of
py_engine and of torch + PEFT run in separate processes, round by round (bench/processes.py),
with the BLAS, thread counts and OPENBLAS_* / OMP_* / MKL_* variables of each recorded. The GPU
comparison against torch + PEFT on CUDA is bench/gpu_device.sh's.

    python build.py bench                 # everything
    python build.py bench --only native   # one section: native, browser, bert, decoder, browser_step, generation, learning, idle, api, tabs
"""

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_bench import replay_round, side_by_side, transfer_rounds  # noqa: E402

from py_engine.gpu import SoftwareAdapterWarning, open_device, shaders  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "latest.json"
TARGETS = {"replay_vs_js": 2.0, "upload_vs_js": 1.5}
SECTIONS = ("native", "browser", "bert", "decoder", "browser_step", "generation", "learning", "idle",
            "api", "tabs")


def bench_native():
    async def measure():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftwareAdapterWarning)
            device = await open_device("native")
        upload, download = await transfer_rounds(device)
        m = await side_by_side({"replay": await replay_round(device), "upload": upload, "download": download})
        return {
            "adapter": device.info.as_dict(),
            "replay": {"submit_us_per_dispatch": m["replay"][0], "total_us_per_dispatch": m["replay"][1]},
            "transfer": {"bytes": 16 * 2**20, "upload_ms": m["upload"], "download_ms": m["download"]},
        }

    return asyncio.run(measure())


# Runs in the page's Python after gpu_bench.py's source: py_engine and plain JS, round by round.
BROWSER_ROUNDS = """
import json, warnings
from js import plainWebGPU
from py_engine.gpu import open_device
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _device = await open_device()
_py_up, _py_down = await transfer_rounds(_device)
_js_up, _js_down = await plainWebGPU.transferRounds()
_m = await side_by_side({
    "py_replay": await replay_round(_device), "js_replay": await plainWebGPU.replayRound(WGSL),
    "py_upload": _py_up, "js_upload": _js_up, "py_download": _py_down, "js_download": _js_down,
})
json.dumps({"adapter": _device.info.as_dict(), "m": _m})
"""


def bench_browser():
    from py_engine.harness import engine_page, run_json

    wgsl = shaders.specialize(shaders.load_source("elementwise.wgsl"), {"WORKGROUP": 64})
    source = (ROOT / "bench" / "gpu_bench.py").read_text()
    with engine_page(ROOT / "web" / "dist") as page:
        timings = page.timings
        page.add_script_tag(content=(ROOT / "bench" / "plain_webgpu.js").read_text())
        # gpu_bench.py's source runs in the page's Python as-is; no NumPy is needed there.
        out = run_json(page, source + f"\nWGSL = {wgsl!r}\n" + BROWSER_ROUNDS)
        import_ms = run_json(page, """
import json, sys, time
for name in [m for m in sys.modules if m == "py_engine" or m.startswith("py_engine.")]:
    del sys.modules[name]
t0 = time.perf_counter()
import py_engine.gpu
json.dumps((time.perf_counter() - t0) * 1e3)
""")
    m = out["m"]

    def replay(key):
        return {"submit_us_per_dispatch": m[key][0], "total_us_per_dispatch": m[key][1]}

    return {
        "adapter": out["adapter"],
        "pyodide_boot_ms": timings["pyodide_boot_ms"],
        "wheel_load_and_import_ms": timings["py_engine_load_ms"],
        "import_ms": import_ms,
        "replay": replay("py_replay"),
        "transfer": {"bytes": 16 * 2**20, "upload_ms": m["py_upload"], "download_ms": m["py_download"]},
        "plain_js": {
            "replay": replay("js_replay"),
            "transfer": {"bytes": 16 * 2**20, "upload_ms": m["js_upload"], "download_ms": m["js_download"]},
        },
    }


def bench_bert():
    """MiniLM LoRA step: torch + PEFT (CPU) vs the NumPy backend; the GPU backend (native)."""
    import bert_step

    return {"cpu": bert_step.run_cpu(), "gpu": bert_step.run_gpu()}


# Runs in the page's Python: a BERT classifier trained through the public API with
# bert_step.EngineClassifier's LoRA and optimizer settings, each optimizer step timed by fit()'s
# on_step callback.
BROWSER_STEP = """
import json, time
from py_engine.data.classification import Example
from py_engine.gpu import open_device
from py_engine.models.lora_config import LoraConfig
from py_engine.train.classifier import TextClassifier, TrainConfig
device = await open_device()
log = ProgramLog(device) if PROFILE else None
clf = await TextClassifier.create("/work/model", LABELS, lora=LoraConfig(r=RANK, lora_alpha=RANK),
                                  backend="gpu", device=device, base_dtype=DTYPE)
examples = [Example(text, label) for text, label in TEXTS]
marks = [time.perf_counter()]
await clf.fit(examples, TrainConfig(epochs=1, batch_size=BATCH, max_length=SEQ, lr=1e-4, warmup_ratio=0.0,
                                    max_grad_norm=1.0, weight_decay=0.01),
              on_step=lambda step: marks.append(time.perf_counter()))
times = [b - a for a, b in zip(marks, marks[1:])]
out = {"seconds": sorted(times[1:])[len(times[1:]) // 2], "first_step_seconds": times[0],
       "adapter": device.info.as_dict()}
if log:
    report = await log.profile_largest(budget_s=60.0)
    out["profile"] = {k: report[k] for k in ("replay_ms", "sum_of_kernels_ms", "dispatches", "by_kernel_ms")}
json.dumps(out)
"""


def browser_step(model_dir, batch, steps, base_dtype="f32", profile=False):
    """Median optimizer step of the BERT checkpoint in `model_dir` inside the page (Pyodide +
    WebGPU), batch x bert_step.T tokens, the frozen base weights stored as `base_dtype`; with
    `profile`, where the step's time goes, kernel by kernel (bench/gpu_profile.py in the page)."""
    from bert_step import LABELS, R, T, texts

    from py_engine.harness import engine_page, put_files, run_json

    files = {f"/work/model/{p.name}": p.read_bytes() for p in Path(model_dir).iterdir() if p.is_file()}
    source = (BROWSER_STEP.replace("LABELS", json.dumps(LABELS)).replace("RANK", str(R))
              .replace("DTYPE", json.dumps(base_dtype))
              .replace("BATCH", str(batch)).replace("SEQ", str(T))
              .replace("PROFILE", str(profile))
              .replace("TEXTS", json.dumps(texts(batch, steps))))      # last: no name is replaced in them
    source = (ROOT / "bench" / "gpu_profile.py").read_text() + source
    with engine_page(ROOT / "web" / "dist") as page:
        put_files(page, files)
        out = run_json(page, source)
    out["tokens_per_s"] = batch * T / out["seconds"]
    return out


def page_products_share(page):
    """The share of a profiled page step spent in matrix products (matmul.wgsl and
    quantized_linear.wgsl's kernels)."""
    by_kernel = page["profile"]["by_kernel_ms"]
    products = sum(ms for name, ms in by_kernel.items() if name.startswith(("matmul.", "quantized_linear.")))
    return products / sum(by_kernel.values())


def bench_browser_step(batch=8, steps=6, minilm_steps=3):
    """Training steps inside the page (Pyodide + WebGPU): the tiny BERT config, and MiniLM
    (base weights f32, and int8 as the tab extension stores them) beside the same steps on the
    native adapter (each in a process of its own), so that the page's cost over native WebGPU
    shows as a ratio."""
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    import peft_oracle
    from bert_step import T, minilm_dir
    from processes import Spec, alternate

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = peft_oracle.tiny_bert_dir(Path(tmp) / "model")
        out = browser_step(model_dir, batch, steps)
    out["shape"] = {"batch": batch, "seq": T, **{k: v for k, v in peft_oracle.TINY.items()
                                                 if k in ("hidden_size", "num_hidden_layers")}}
    minilm = minilm_dir()
    for dtype in ("f32", "int8"):
        page = browser_step(minilm, batch, minilm_steps, dtype, profile=True)
        spec = Spec("bert_step:EngineClassifier", {"model_dir": minilm, "backend": "gpu", "batch": batch,
                                                   "steps": minilm_steps, "base_dtype": dtype})
        native = alternate({"native": spec}, rounds=1, warmup=0)["native"]
        out["minilm" if dtype == "f32" else f"minilm_{dtype}"] = {
            "shape": {"batch": batch, "seq": T, "model": Path(minilm).name, "base_dtype": dtype},
            "page": page, "native": {"seconds": native["seconds"], "adapter": native["info"].get("adapter")},
            "page_vs_native": page["seconds"] / native["seconds"]}
    return out


def bench_generation():
    """Generation's host time per token (bench/generation.py): logits read back and scanned
    or drawn from in Python against the token chosen, or the candidates picked, on the GPU;
    natively and in the page."""
    from generation import generation_rounds

    from py_engine.harness import engine_page, run_json

    async def native():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftwareAdapterWarning)
            device = await open_device("native")
        return await generation_rounds(device)

    source = (ROOT / "bench" / "generation.py").read_text() + """
import json, warnings
from py_engine.gpu import open_device
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _device = await open_device()
json.dumps(await generation_rounds(_device))
"""
    with engine_page(ROOT / "web" / "dist") as page:
        in_page = run_json(page, source)
    return {"native": asyncio.run(native()), "page": in_page}


def bench_decoder():
    """Decoder LoRA steps, tiny Llama, GPT-2-small-shaped and Phi-3-shaped: NumPy backend vs
    torch + PEFT (CPU); TinyLlama 1.1B base-weight memory. A shape that fails is recorded (and
    fails the run once everything is written)."""
    from decoder_step import run_all

    return run_all(("cpu", "gpt2", "phi3", "memory"), keep_going=True)


def bench_learning():
    from learning import run_all

    return run_all()


def bench_idle():
    from idle_training import FIGURES

    out = {}
    for name, figure in FIGURES.items():
        started = time.perf_counter()
        out[name] = figure()
        out[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
    return out


def bench_api():
    from api_load import RESULTS as API_RESULTS
    from api_load import run as run_api

    api = run_api()
    API_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    API_RESULTS.write_text(json.dumps(dict(api, when=time.strftime("%Y-%m-%d %H:%M:%S")),
                                      indent=2) + "\n")
    return api


def idle_rows(idle):
    rows = []
    for key, where in (("latency", "host, NumPy"), ("app_page", "app page, worker")):
        r = idle.get(key)
        if r:
            rows.append((f"predict() latency added by idle training ({where})",
                         f"p50 {r['p50']['added_ms']:+.1f} ms, p95 {r['p95']['added_ms']:+.1f} ms",
                         f"without: p50 {r['p50']['without_ms']:.1f} ms, p95 {r['p95']['without_ms']:.1f} ms; "
                         f"{r['training_steps']} steps in {r['slices']} slices (target p95 < 5 ms on a real GPU)"))
    page = idle.get("app_page")
    if page:
        lt = page["long_tasks_while_training"]
        rows.append(("main-thread long tasks while training (app page)", f"{lt['over_50ms']} over 50 ms",
                     f"{lt['count']} long tasks, worst {lt['worst_ms']:.0f} ms; the page's own scripts "
                     f"at most {lt['page_scripts_worst_ms']:.0f} ms in one frame; adapter "
                     f"{(page['adapter'] or {}).get('architecture')}"))
    c = idle.get("corrections")
    if c:
        rows.append((f"corrections until MiniLM passes {c['target']:.0%} on a new category",
                     f"{c['corrections']}" + ("" if c["reached"] else " (not reached)"),
                     f"new category {c['travel_accuracy']:.2f}, the others {c['base_accuracy']:.2f}, "
                     f"{c['rollbacks']} rollbacks"))
    m = idle.get("memory")
    if m:
        for backend in ("numpy", "gpu"):
            if backend in m:
                e = m[backend]
                rows.append((f"MiniLM LoRA training state beyond inference ({backend})",
                             f"{e['total_mb']:.1f} MB", f"{e['snapshots_kept']} snapshots; target < "
                             f"{m['target_mb']} MB"))
    return rows


def ratios(browser):
    js = browser["plain_js"]
    return {
        "replay_vs_js": browser["replay"]["total_us_per_dispatch"] / js["replay"]["total_us_per_dispatch"],
        "replay_submit_vs_js": browser["replay"]["submit_us_per_dispatch"] / js["replay"]["submit_us_per_dispatch"],
        "upload_vs_js": browser["transfer"]["upload_ms"] / js["transfer"]["upload_ms"],
        "download_vs_js": browser["transfer"]["download_ms"] / js["transfer"]["download_ms"],
    }


def table(results):
    rows = [("measure", "value", "note")]
    native = results.get("native")
    if native:
        a = native["adapter"]
        name = f"native ({a['vendor'] or a['device']})"
        rows += [
            (f"{name}: replay, per dispatch", f"{native['replay']['total_us_per_dispatch']:.1f} us",
             f"submit only {native['replay']['submit_us_per_dispatch']:.2f} us"),
            (f"{name}: upload 16 MB", f"{native['transfer']['upload_ms']:.1f} ms", ""),
            (f"{name}: download 16 MB", f"{native['transfer']['download_ms']:.1f} ms", ""),
        ]
    bert = results.get("bert")
    if bert:
        from bert_step import table_rows

        rows += table_rows(bert)
    decoder = results.get("decoder")
    if decoder:
        from decoder_step import table_rows

        rows += table_rows(decoder)
    learning = results.get("learning")
    if learning:
        for key in ("cls_f32", "mean_f32", "mean_f16"):
            r = learning[key]
            pooling, base = key.split("_")
            rows.append((f"MiniLM learns a toy task: {pooling} pooling, {base} base ({learning['train']} "
                         f"texts, {len(r['losses'])} steps)", f"{r['held_out_accuracy']:.3f} held-out acc",
                         f"loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}"))
        f32, f16 = learning["mean_f32"]["losses"], learning["mean_f16"]["losses"]
        rows.append(("f16 vs f32 base weights, same run", f"{max(abs(a - b) for a, b in zip(f32, f16)):.1e}",
                     "largest loss difference over the steps"))
    idle = results.get("idle")
    if idle:
        rows += idle_rows(idle)
    api = results.get("api")
    if api:
        from api_load import rows as api_rows

        rows += api_rows(api)
    generation = results.get("generation")
    if generation:
        for where, label in (("native", "native"), ("page", "in the browser")):
            for name, g in generation[where].items():
                rows.append((f"greedy token, {name} vocabulary ({g['vocab']:,}), {label}: host's share",
                             f"{g['saved_ms']:.1f} ms/token saved",
                             f"logits read and scanned in Python {g['host_ms']:.1f} ms/token, "
                             f"chosen on the GPU {g['device_ms']:.1f} (1-layer, hidden 64)"))
                rows.append((f"sampled token, {name} vocabulary, {label}: host's share",
                             f"{g['sampled_saved_ms']:.1f} ms/token saved",
                             f"temperature 0.7, top-p 0.9: drawn from the whole row read back "
                             f"{g['sampled_host_ms']:.1f} ms/token, among the GPU's candidates "
                             f"{g['sampled_device_ms']:.1f} (prompt included; rows read "
                             f"{g['rows_read']})"))
    step = results.get("browser_step")
    if step:
        rows.append((f"tiny BERT {step['shape']['batch']}x{step['shape']['seq']} step in the browser "
                     f"({step['adapter']['vendor']} {step['adapter']['architecture']})",
                     f"{step['seconds'] * 1e3:.0f} ms/step", f"{step['tokens_per_s']:.0f} tok/s; "
                     f"first step (recording) {step['first_step_seconds'] * 1e3:.0f} ms"))
        for m in filter(None, (step.get("minilm"), step.get("minilm_int8"))):
            native = m["native"]["adapter"] or {}
            rows.append((f"MiniLM {m['shape']['batch']}x{m['shape']['seq']} step, {m['shape']['base_dtype']} base, "
                         f"in the browser ({m['page']['adapter']['vendor']} {m['page']['adapter']['architecture']})",
                         f"{m['page']['seconds'] * 1e3:.0f} ms/step",
                         f"native ({native.get('vendor') or native.get('device')}) "
                         f"{m['native']['seconds'] * 1e3:.0f} ms/step: {m['page_vs_native']:.2f}x; "
                         f"{page_products_share(m['page']):.0%} of the page's step in matrix products"))
    browser = results.get("browser")
    if browser:
        r = results["ratios"]
        js = browser["plain_js"]
        a = browser["adapter"]
        name = f"browser ({a['vendor']} {a['architecture']})"
        rows += [
            (f"{name}: replay, per dispatch", f"{browser['replay']['total_us_per_dispatch']:.1f} us",
             f"plain JS {js['replay']['total_us_per_dispatch']:.1f} us: {r['replay_vs_js']:.2f}x "
             f"(target <= {TARGETS['replay_vs_js']}x)"),
            (f"{name}: replay submit, per dispatch", f"{browser['replay']['submit_us_per_dispatch']:.2f} us",
             f"plain JS {js['replay']['submit_us_per_dispatch']:.2f} us: {r['replay_submit_vs_js']:.2f}x"),
            (f"{name}: upload 16 MB", f"{browser['transfer']['upload_ms']:.1f} ms",
             f"plain JS {js['transfer']['upload_ms']:.1f} ms: {r['upload_vs_js']:.2f}x "
             f"(target <= {TARGETS['upload_vs_js']}x)"),
            (f"{name}: download 16 MB", f"{browser['transfer']['download_ms']:.1f} ms",
             f"plain JS {js['transfer']['download_ms']:.1f} ms: {r['download_vs_js']:.2f}x"),
            ("Pyodide boot", f"{browser['pyodide_boot_ms']:.0f} ms", ""),
            ("py_engine wheel load + import", f"{browser['wheel_load_and_import_ms']:.0f} ms",
             f"import alone {browser['import_ms']:.0f} ms"),
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def bench_tabs():
    """The tab classifier (bench/tabs_eval.py: accuracy, sizes, host latency), the tab sorter
    extension (bench/tabs_extension.py: latency in the browser, load to group, size) and how it
    learns corrections (bench/tabs_corrections.py), each in a process of its own; their JSON
    files are kept beside latest.json and their tables printed."""
    out = {}
    for name in ("tabs_eval", "tabs_extension", "tabs_corrections"):
        subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py")], check=True, cwd=ROOT)
        out[name] = json.loads((RESULTS.parent / f"{name}.json").read_text())
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=SECTIONS, action="append")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)

    # Sections not run this time keep their last results (each carries its own "when").
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update({"machine": platform.platform(), "command": "python build.py bench"})
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    results.setdefault("when", {})
    if not isinstance(results["when"], dict):
        results["when"] = {}
    for section in sections:
        results["when"][section] = now
    if "native" in sections:
        results["native"] = bench_native()
    if "browser" in sections:
        results["browser"] = bench_browser()
        results["ratios"] = ratios(results["browser"])
    if "bert" in sections:
        results["bert"] = bench_bert()
    if "decoder" in sections:
        results["decoder"] = bench_decoder()
    if "browser_step" in sections:
        results["browser_step"] = bench_browser_step()
    if "generation" in sections:
        results["generation"] = bench_generation()
    if "learning" in sections:
        results["learning"] = bench_learning()
    if "idle" in sections:
        results["idle"] = bench_idle()
    if "api" in sections:
        results["api"] = bench_api()
    if "tabs" in sections:
        results["tabs"] = bench_tabs()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table({k: v for k, v in results.items() if k in sections or k == "ratios" and "browser" in sections}))
    print(f"\nwritten to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    if "decoder" in sections:
        from decoder_step import failures

        failed = failures(results["decoder"])
        if failed:
            sys.exit("bench: decoder sections failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))


if __name__ == "__main__":
    main()
