"""The tab sorter extension's speed: in the browser, natively for the same tabs, and its size.

    python bench/tabs_extension.py                  # JSON in bench/results/tabs_extension.json
    python bench/tabs_extension.py --rounds 1 --singles 3 --loads 3    # quicker

- In the extension (extension/dist in headless Chromium; WebGPU is SwiftShader here, a CPU
  implementation): the model's latency for one tab at a time and for a batch of 50 tabs (the
  first 50 of the hand-checked evaluation set), through the extension's own API
  (tabs_api.mjs benchmark(): the round trip service worker -> offscreen document -> worker ->
  Python -> WebGPU and back), with the Python side's share ("model_ms"); the rules' time per
  tab for comparison.
- Natively, the same batch of 50 through TabClassifier.load_deployed on the same deployed
  model: the NumPy backend and the native GPU backend (wgpu-native; lavapipe, a CPU Vulkan
  driver, on a machine without a GPU), each in a process of its own (bench/processes.py),
  rounds alternating, the environment recorded.
- From a new tab loading to its grouping (the page's load event to the tab in its group),
  with the rules (the model over its budget, as SwiftShader is) and with the model (the
  budget raised).
- The extension's size on disk, by part.

Absolute times on a software adapter say nothing about a real GPU: the target of under 5 ms
per tab in a batch is for one.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
from py_engine.cli import COUNT  # noqa: E402

from processes import Spec, alternate, machine  # noqa: E402

EXT_DIST = ROOT / "extension" / "dist"
MODEL = ROOT / "build" / "tabs-model"
RESULTS = BENCH / "results" / "tabs_extension.json"
BATCH = 50
SOFTWARE_BUDGET = {"perTabMs": 600_000, "minMs": 600_000}


def eval_tabs(n=BATCH):
    from py_engine.tabs.tab_data import EVAL_FILE, read_tabs

    return [{"url": t.url, "title": t.title, "label": t.label} for t in read_tabs(EVAL_FILE)[:n]]


# --- natively, in processes of their own ------------------------------------------------------

class NativeBatch:
    """The deployed classifier on one backend; a round predicts the batch of 50 once."""

    def __init__(self, backend, model=str(MODEL)):
        import warnings

        from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync
        from py_engine.tabs.model import TabClassifier

        device = None
        started = time.perf_counter()
        if backend == "gpu":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SoftwareAdapterWarning)
                device = run_sync(open_device("native"))
        self.clf = run_sync(TabClassifier.load_deployed(model, backend=backend, device=device))
        self.tabs = [(t["url"], t["title"]) for t in eval_tabs()]
        run_sync(self.clf.predict(self.tabs, batch_size=BATCH))           # warm: pipelines, caches
        self.info = {"backend": backend, "setup_s": time.perf_counter() - started,
                     "adapter": device.info.as_dict() if device is not None else None}

    def round(self):
        from py_engine.gpu import run_sync

        started = time.perf_counter()
        run_sync(self.clf.predict(self.tabs, batch_size=BATCH))
        return {"seconds": [time.perf_counter() - started], "loss": 0.0}


def native(rounds):
    specs = {"numpy": Spec("tabs_extension:NativeBatch", {"backend": "numpy"}),
             "gpu": Spec("tabs_extension:NativeBatch", {"backend": "gpu"})}
    results = alternate(specs, rounds=rounds, warmup=1)
    out = {"method": results["method"]}
    for name in specs:
        r = results[name]
        ms = r["seconds"] * 1000
        out[name] = {"batch_ms": ms, "per_tab_ms": ms / BATCH, "rounds_ms": [s * 1000 for s in r["steps"]],
                     "info": r["info"], "environment": r["environment"]}
    return out


# --- in the extension --------------------------------------------------------------------------

def in_extension(rounds, singles, loads):
    from playwright.sync_api import sync_playwright

    from py_engine import harness
    from py_engine.tab_pages import TabPages

    from py_engine.tabs.rules import categorise, load_rules

    tabs = eval_tabs()
    rules = load_rules()
    # the rules' timing on tabs they can place (the others wait for the model), the model's on others
    known = [t for t in eval_tabs(400) if categorise(rules, t["url"], t["title"])][:loads]
    unknown = [t for t in eval_tabs(400) if not categorise(rules, t["url"], t["title"])][:loads]
    served = known + unknown
    with TabPages([(t["url"], t["title"]) for t in served]) as pages, sync_playwright() as pw, \
            tempfile.TemporaryDirectory(prefix="tabs-bench-") as profile:
        ext = harness.launch_extension(pw, EXT_DIST, Path(profile), pages.chromium_args)
        try:
            while (state := ext.sorter("snapshot")["engine"])["phase"] not in ("ready", "failed"):
                time.sleep(0.5)
            if state["phase"] != "ready":
                raise SystemExit(f"the model did not load in the extension: {state['error']}")
            out = {"adapter": state["adapter"], "boot_ms": state["timings"]["boot_ms"],
                   "load_ms": state["timings"]["load_ms"], "warm_ms": state["timings"]["warm_ms"]}
            plain = [{"url": t["url"], "title": t["title"]} for t in tabs]
            out["benchmark"] = ext.sorter("benchmark", plain, {"rounds": rounds, "singles": singles},
                                          timeout_ms=3_600_000)
            out["load_to_group_ms"] = {"rules": load_to_group(ext, [t["url"] for t in known])}
            ext.sorter("configure", SOFTWARE_BUDGET)
            out["load_to_group_ms"]["model"] = load_to_group(ext, [t["url"] for t in unknown])
        finally:
            ext.context.close()
    return out


def load_to_group(ext, urls):
    """ms from each page's load event to its tab in a group (polled every 10 ms), and what
    sorted it."""
    times, sources = [], []
    for url in urls:
        page = ext.context.new_page()
        page.goto(url)                           # returns at the load event
        loaded = time.perf_counter()
        tab = ext.tab_id(url)
        while ext.evaluate("async (id) => (await chrome.tabs.get(id)).groupId", tab) == -1:
            if time.perf_counter() - loaded > 600:
                raise SystemExit(f"{url} was not grouped in 10 minutes")
            time.sleep(0.01)
        times.append((time.perf_counter() - loaded) * 1000)
        sources.append(ext.sorter("snapshot")["tabs"][str(tab)]["source"])
    return {"median": statistics.median(times), "runs": [round(t, 1) for t in times], "sources": sources}


# --- size --------------------------------------------------------------------------------------

def sizes(dist=EXT_DIST):
    files = [p for p in dist.rglob("*") if p.is_file()]
    part = lambda p: ("model: base weights" if "model/base" in p.as_posix() else
                      "model: adapter" if "model/adapter" in p.as_posix() else
                      "model: categories, rules, background" if "/model/" in p.as_posix() else
                      "py_engine wheel" if p.suffix == ".whl" else
                      "Pyodide runtime" if "/pyodide/" in p.as_posix() else "extension code")
    out = {}
    for p in files:
        out[part(p)] = out.get(part(p), 0) + p.stat().st_size
    out["total"] = sum(p.stat().st_size for p in files)
    return out


def table(result):
    ext = result["extension"]
    b = ext["benchmark"]
    a = ext["adapter"]
    gpu = f"{a['vendor']} {a['architecture']}{' (software)' if a['is_software'] else ''}"
    rows = [
        (f"extension ({gpu}): one tab", f"{b['single']['meanMs']:.0f} ms", f"p95 {b['single']['p95Ms']:.0f} ms, {b['single']['n']} tabs"),
        (f"extension ({gpu}): batch of {b['batch']['n']}", f"{b['batch']['medianMs']:.0f} ms",
         f"{b['batch']['perTabMs']:.1f} ms per tab; Python side {b['batch']['modelMs']:.0f} ms"),
        ("extension: the rules, per tab", f"{b['rules']['perTabMs'] * 1000:.1f} us", "in the service worker"),
    ]
    for name, n in result["native"].items():
        if name == "method":
            continue
        adapter = n["info"].get("adapter")
        what = f"{adapter['vendor']} {adapter['device'] or adapter['architecture']}" if adapter else "CPU"
        rows.append((f"native {name} ({what}): batch of {BATCH}", f"{n['batch_ms']:.0f} ms", f"{n['per_tab_ms']:.1f} ms per tab"))
    for how, m in ext["load_to_group_ms"].items():
        rows.append((f"new tab loaded -> grouped ({how})", f"{m['median']:.0f} ms", f"runs {m['runs']}"))
    rows.append(("engine start in the offscreen document", f"{ext['boot_ms'] / 1000:.1f} s", f"model load {ext['load_ms'] / 1000:.1f} s, first call (pipelines compiled) {ext['warm_ms'] / 1000:.1f} s"))
    for part, n in result["sizes"].items():
        rows.append((f"size: {part}", f"{n / 2**20:.1f} MiB", ""))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(("measure", "value", "note"), width)),
             "-|-".join("-" * w for w in width)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=COUNT, default=2, help="batches of 50 timed in the extension (and natively)")
    parser.add_argument("--singles", type=COUNT, default=5, help="single tabs timed in the extension")
    parser.add_argument("--loads", type=COUNT, default=3, help="new tabs timed from load to group, per way")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (EXT_DIST / "model" / "manifest.json").is_file():
        raise SystemExit("extension/dist has no deployed model: run `python build.py build` first")
    load_before = os.getloadavg()
    result = {"machine": machine(), "load_before": load_before,
              "extension": in_extension(args.rounds, args.singles, args.loads),
              "native": native(args.rounds), "sizes": sizes(),
              "model": json.loads((MODEL / "manifest.json").read_text())["base_dtype"]}
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nload average {load_before[0]:.1f} before, {result['load_after'][0]:.1f} after; JSON in {args.out}")


if __name__ == "__main__":
    main()
