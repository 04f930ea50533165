"""How the tab sorter learns corrections: the user corrects the shipped model's mistakes on the
hand-checked evaluation tabs, one idle slice after each, as the extension does it (TabService
with the deployed model: int8 base, the background tabs build.py ships), and beside it with
the classifier defaults the extension used before (three passes at lr 2e-3, three background
tabs replayed).

    python bench/tabs_corrections.py [--model DIR] [--corrections N]

Reported per setting: how many of the N corrections the model then gets right, and the
accuracy on the evaluation tabs it was not corrected on and on the generator's validation tabs
(3,500 generated, seed 99), before and after. JSON in bench/results/tabs_corrections.json and
a short table. NumPy backend, in this one process (the figures are accuracies, not timings).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

DEPLOYED = ROOT / "extension" / "dist" / "model"
# what the extension did before: the classifier's defaults (app/models.py) with three tabs replayed
SETTINGS = {"extension": None,
            "classifier defaults": {"replay": 3, "train": {"lr": 2e-3, "epochs": 3}}}


def run_setting(model, setting, corrections, others, generated):
    from idle_training import model_files

    from py_engine.app.learner import LearnerConfig
    from py_engine.app.scheduler import SchedulerConfig
    from py_engine.app.tab_service import TabService
    from py_engine.gpu import run_sync

    with tempfile.TemporaryDirectory() as tmp:
        learner = None if setting is None else LearnerConfig(replay=setting["replay"],
                                                             train=dict(setting["train"]))
        svc = TabService(queue=f"{tmp}/queue.sqlite", states=f"{tmp}/states", backend="numpy",
                         learner=learner, scheduler=SchedulerConfig(idle_fraction=1.0))

        def call(method, **params):
            reply = run_sync(svc.call(method, params))
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]

        call("load_tab_model", files=model_files(model / "base"),
             adapter=model_files(model / "adapter"),
             categories=(model / "categories.json").read_bytes(),
             background=(model / "background.jsonl").read_bytes())

        def accuracy(tabs):
            results = call("categorise", tabs=[{"url": u, "title": t} for u, t, _ in tabs])["results"]
            return sum(r["category"] == c for r, (_, _, c) in zip(results, tabs)) / len(tabs)

        before = {"others": accuracy(others), "generated": accuracy(generated)}
        started = time.perf_counter()
        steps = 0
        for url, title, category in corrections:
            call("correct_tab", url=url, title=title, category=category)
            steps += call("force_slice", budget_ms=600_000).get("steps", 0)
        seconds = time.perf_counter() - started
        out = {"learned": round(accuracy(corrections) * len(corrections)),
               "corrections": len(corrections), "steps": steps, "train_seconds": round(seconds, 1),
               "before": before,
               "after": {"others": accuracy(others), "generated": accuracy(generated)},
               "setting": setting or {"replay": svc.learner_config.replay,
                                      "train": svc.learner_config.train}}
        svc.close()
    return out


def measure(model, count):
    from processes import machine

    from py_engine.gpu import run_sync
    from py_engine.tabs.categories import Categories
    from py_engine.tabs.generator import generate
    from py_engine.tabs.model import TabClassifier
    from py_engine.tabs.tab_data import EVAL_FILE, read_tabs

    cats = Categories.default()
    tabs = [(t.url, t.title, cats.get(t.label).id) for t in read_tabs(EVAL_FILE)]
    clf = run_sync(TabClassifier.load_deployed(model))
    said = run_sync(clf.predict([(u, t) for u, t, _ in tabs]))
    wrong = [i for i, (p, tab) in enumerate(zip(said, tabs)) if cats.get(p["label"]).id != tab[2]]
    picked = set(wrong[:count])
    corrections = [tabs[i] for i in sorted(picked)]
    others = [tab for i, tab in enumerate(tabs) if i not in picked]
    _, held, _ = generate(3500, seed=99, validation=0.1)
    generated = [(t["url"], t["title"], cats.get(t["label"]).id) for t in held]
    return {"model": str(model), "eval_file": str(EVAL_FILE), "machine": machine(),
            "settings": {name: run_setting(model, s, corrections, others, generated)
                         for name, s in SETTINGS.items()}}


def table(result):
    rows = [("setting", "corrections learned", "other eval tabs", "generated tabs", "steps")]
    for name, r in result["settings"].items():
        rows.append((name, f"{r['learned']}/{r['corrections']}",
                     f"{r['before']['others']:.1%} -> {r['after']['others']:.1%}",
                     f"{r['before']['generated']:.1%} -> {r['after']['generated']:.1%}",
                     str(r["steps"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEPLOYED,
                        help="a directory `py-engine tabs deploy` wrote (default: extension/dist/model)")
    parser.add_argument("--corrections", type=int, default=10)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "tabs_corrections.json")
    args = parser.parse_args()
    if not (args.model / "manifest.json").is_file():
        sys.exit(f"{args.model}: no deployed tab model (python build.py build writes extension/dist/model)")
    if args.corrections < 1:
        sys.exit("--corrections must be 1 or more")
    result = measure(args.model, args.corrections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
