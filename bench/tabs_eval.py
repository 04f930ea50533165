"""The tab classifier measured: accuracy on the hand-checked evaluation set and on the
generator's validation split, per-class F1, the base weights stored f16 and int8, the fallback
rules, the threshold under which the rules answer for an unsure model (answer.UNSURE_BELOW,
swept: it is chosen on the validation split), and the latency of predictions per tab and per
batch of 50 on the host's backends.

    python bench/tabs_eval.py                       # the shipped adapter; JSON + a short table
    python bench/tabs_eval.py --adapter DIR --gpu   # also the native GPU backend (wgpu-py)

The JSON goes to bench/results/tabs_eval.json (--out to change). The validation split is
regenerated from the adapter's training.json (same size, seed and share). Latency is measured
in this one process, model loaded and warmed up, NumPy backend (and with --gpu the native GPU
backend: lavapipe on a machine without a GPU, where it says little about a real GPU); the
environment that matters (BLAS, OPENBLAS_*, CPU, load) is recorded beside it.
"""

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def _accuracy(clf, tabs):
    from py_engine.gpu import run_sync

    predicted = run_sync(clf.predict([(t.url, t.title) for t in tabs]))
    return sum(p["label"] == t.label for p, t in zip(predicted, tabs)) / len(tabs)


SWEEP = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.01)   # 0.0: the model alone; 1.01: rules first


def sweep(clf, rules, tab_sets):
    """{threshold: {set name: accuracy}} of the answers answer.choose gives at each threshold
    of SWEEP (one prediction per tab); "NAME with guess": the same with the word weights'
    guess (rules.py step 7) answering too where the rules say nothing, which the extension
    keeps for a browser without a model (this measures whether it would help the model)."""
    from py_engine.gpu import run_sync
    from py_engine.tabs.answer import choose
    from py_engine.tabs.rules import categorise_name

    answers = {}   # set name -> [(the model's prediction, the rules' label, the true label)]
    for name, tabs in tab_sets.items():
        predicted = run_sync(clf.predict([(t.url, t.title) for t in tabs]))
        answers[name] = [(p, categorise_name(rules, t.url, t.title, clf.categories), t.label)
                         for p, t in zip(predicted, tabs)]
        answers[name + " with guess"] = [(p, categorise_name(rules, t.url, t.title, clf.categories, guess=True),
                                          t.label) for p, t in zip(predicted, tabs)]
    right = lambda rows, u: sum(choose(p, by_rules, unsure_below=u)[0] == gold
                                for p, by_rules, gold in rows) / len(rows)
    return {str(u): {name: right(rows, u) for name, rows in answers.items()} for u in SWEEP}


def measure(adapter, gpu=False, tab_runs=100, batch_runs=8):
    from processes import machine, process_environment

    from py_engine.cli import model_dir
    from py_engine.gpu import run_sync
    from py_engine.tabs import evaluate
    from py_engine.tabs.answer import UNSURE_BELOW
    from py_engine.tabs.compress import compressed_checkpoint
    from py_engine.tabs.generator import generate
    from py_engine.tabs.model import TabClassifier
    from py_engine.tabs.rules import load_rules
    from py_engine.tabs.tab_data import EVAL_FILE, Tab, read_tabs

    base = model_dir("minilm")
    tabs = read_tabs(EVAL_FILE)
    load_before = os.getloadavg()
    report = run_sync(evaluate.evaluate_tabs(base, adapter, tabs))
    record = json.loads((Path(adapter) / "training.json").read_text())
    cfg = record["config"]
    held = generate(cfg["size"], cfg["seed"], cfg["validation"])[1]
    held_tabs = [Tab(r["url"], r["title"], r["label"]) for r in held]
    validation = run_sync(evaluate.evaluate_tabs(base, adapter, held_tabs, timing=False))
    stored = {}
    for dtype in ("f16", "int8", "int8-embeddings"):
        start = time.perf_counter()
        checkpoint = compressed_checkpoint(base, dtype)
        loaded = run_sync(TabClassifier.load(base, adapter, checkpoint=checkpoint))
        stored[dtype] = {"eval_accuracy": _accuracy(loaded, tabs),
                         "load_seconds": round(time.perf_counter() - start, 1)}
    f32 = run_sync(TabClassifier.load(base, adapter))
    out = {"adapter": str(adapter), "training": {k: record.get(k) for k in ("command", "train_seconds", "machine")},
           "eval": {k: report[k] for k in ("accuracy", "model_accuracy", "count", "per_class", "confusion")},
           "validation": {"accuracy": validation["accuracy"], "model_accuracy": validation["model_accuracy"],
                          "count": validation["count"],
                          "f1": {k: m["f1"] for k, m in validation["per_class"].items()}},
           "base_dtypes": {"f32": {"eval_accuracy": report["model_accuracy"]}, **stored},
           "rules": report["rules"],
           "unsure_below": {"shipped": UNSURE_BELOW,
                            "sweep": sweep(f32, load_rules(), {"validation": held_tabs, "eval": tabs})},
           "latency_ms": {"numpy": report["latency_ms"]}, "sizes": report["sizes"]}
    if gpu:
        from py_engine.cli import _open

        device = _open("high-performance")
        on_gpu = run_sync(TabClassifier.load(base, adapter, backend="gpu", device=device))
        out["latency_ms"]["gpu"] = run_sync(evaluate.latency(on_gpu, tabs, tab_runs, batch_runs))
        out["latency_ms"]["gpu"]["adapter"] = device.info.as_dict()
    out["environment"] = {"machine": machine(), "process": process_environment(),
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    return out


def table(out):
    lines = [f"{'measure':<44} value",
             f"{'eval set accuracy (' + str(out['eval']['count']) + ' tabs)':<44} {out['eval']['accuracy']:.4f}"
             f"  (the model alone {out['eval']['model_accuracy']:.4f})",
             f"{'generator validation accuracy (' + str(out['validation']['count']) + ')':<44} {out['validation']['accuracy']:.4f}"
             f"  (the model alone {out['validation']['model_accuracy']:.4f})"]
    for label, m in out["eval"]["per_class"].items():
        lines.append(f"{'  eval F1 ' + label:<44} {m['f1']:.3f}  (validation {out['validation']['f1'][label]:.3f})")
    for dtype, m in out["base_dtypes"].items():
        lines.append(f"{'eval accuracy, the model alone, base ' + dtype:<44} {m['eval_accuracy']:.4f}")
    r = out["rules"]
    lines.append(f"{'rules: answered / right when answered':<44} {r['answered']:.3f} / {r['accuracy_when_answered']:.3f}")
    if r.get("with_guess"):
        lines.append(f"{'rules + word weights (no WebGPU): accuracy':<44} {r['with_guess']['accuracy']:.4f}")
    for u, acc in out["unsure_below"]["sweep"].items():
        mark = "  (shipped)" if float(u) == out["unsure_below"]["shipped"] else ""
        lines.append(f"{'rules answer under p = ' + u + ': validation / eval':<44} "
                     f"{acc['validation']:.4f} / {acc['eval']:.4f}{mark}"
                     f"  (with the guess {acc['validation with guess']:.4f} / {acc['eval with guess']:.4f})")
    for backend, lat in out["latency_ms"].items():
        lines.append(f"{'latency per tab, ' + backend:<44} {lat['per_tab']['mean']:.2f} ms (p95 {lat['per_tab']['p95']:.2f})")
        lines.append(f"{'latency per batch of 50, ' + backend:<44} {lat['per_batch_50']['mean']:.1f} ms "
                     f"(p95 {lat['per_batch_50']['p95']:.1f})")
    lines.append(f"{'sizes: model / adapter bytes':<44} {out['sizes']['model_bytes']:,} / {out['sizes']['adapter_bytes']:,}")
    return "\n".join(lines)


def main(argv=None):
    from py_engine.tabs.model import DEFAULT_ADAPTER

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER))
    parser.add_argument("--gpu", action="store_true", help="also time the native GPU backend")
    parser.add_argument("--out", default=str(BENCH / "results" / "tabs_eval.json"))
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = measure(args.adapter, gpu=args.gpu, tab_runs=10, batch_runs=2)
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(table(out))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
