"""How the tab sorter learns corrections, as the extension learns them (TabService with the
deployed model: int8 base, the background tabs build.py ships; one idle slice per correction),
beside the settings it used before.

Two ways the user corrects it:
- generated: ten of the shipped model's mistakes on generated tabs (its validation split of
  seed 77), five different sets of ten; measured on other generated tabs (the validation split
  of seed 99, 350 tabs) and on the evaluation tabs. The extension's settings are chosen here.
- eval: ten of its mistakes on the hand-checked evaluation tabs; measured on the other
  evaluation tabs and the generated ones.

    python bench/tabs_corrections.py [--model DIR] [--corrections N] [--sets K]

Reported per setting and way: how many corrections the model then gets right, and the
accuracies before and after (means over the sets). JSON in bench/results/tabs_corrections.json
and a short table. NumPy backend, in this one process (the figures are accuracies, not timings).
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
from py_engine.cli import COUNT  # noqa: E402

DEPLOYED = ROOT / "extension" / "dist" / "model"
# None: the extension's own (TabService's defaults, the background it ships); the others as the
# extension learned before: one pass at 6e-4 beside 6 of 224 shipped tabs, and the classifier's
# defaults (app/models.py) beside 3
SETTINGS = {"extension": None,
            "6 of 224 tabs replayed": {"replay": 6, "train": {"lr": 6e-4, "epochs": 1},
                                       "background_per_category": 32},
            "classifier defaults": {"replay": 3, "train": {"lr": 2e-3, "epochs": 3},
                                    "background_per_category": 32}}


def background_bytes(model, setting):
    if setting is None:
        return (model / "background.jsonl").read_bytes()
    from py_engine.tabs.deploy import background_tabs

    record = json.loads((model / "adapter" / "training.json").read_text())
    tabs = background_tabs(record, per_category=setting["background_per_category"])
    return "".join(json.dumps(t) + "\n" for t in tabs).encode()


def run_setting(model, setting, corrections, measured):
    """Learn `corrections` [(url, title, category id)] one slice each; {name: accuracy} of the
    `measured` sets before and after, how many corrections are learned, steps."""
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

        background = background_bytes(model, setting)
        call("load_tab_model", files=model_files(model / "base"),
             adapter=model_files(model / "adapter"),
             categories=(model / "categories.json").read_bytes(), background=background)

        def accuracy(tabs):
            results = call("categorise", tabs=[{"url": u, "title": t} for u, t, _ in tabs])["results"]
            return sum(r["category"] == c for r, (_, _, c) in zip(results, tabs)) / len(tabs)

        before = {name: accuracy(tabs) for name, tabs in measured.items()}
        started = time.perf_counter()
        steps = 0
        for url, title, category in corrections:
            call("correct_tab", url=url, title=title, category=category)
            steps += call("force_slice", budget_ms=600_000).get("steps", 0)
        out = {"learned": round(accuracy(corrections) * len(corrections)), "steps": steps,
               "train_seconds": round(time.perf_counter() - started, 1), "before": before,
               "after": {name: accuracy(tabs) for name, tabs in measured.items()},
               "setting": setting or {"replay": svc.learner_config.replay,
                                      "train": svc.learner_config.train,
                                      "background_tabs": background.count(b"\n")}}
        svc.close()
    return out


def mean_of(runs):
    """The runs of one setting and way summed up: corrections learned of all, mean accuracies."""
    def mean(when, name):
        return sum(r[when][name] for r in runs) / len(runs)
    names = runs[0]["before"]
    return {"learned": sum(r["learned"] for r in runs), "corrections": sum(r["corrections"] for r in runs),
            "steps": sum(r["steps"] for r in runs) / len(runs),
            "before": {n: mean("before", n) for n in names},
            "after": {n: mean("after", n) for n in names}, "runs": runs}


def mistakes(clf, cats, tabs):
    from py_engine.gpu import run_sync

    said = run_sync(clf.predict([(u, t) for u, t, _ in tabs]))
    return [i for i, (p, tab) in enumerate(zip(said, tabs)) if cats.get(p["label"]).id != tab[2]]


def measure(model, count, sets):
    from processes import machine

    from py_engine.gpu import run_sync
    from py_engine.tabs.categories import Categories
    from py_engine.tabs.generator import generate
    from py_engine.tabs.model import TabClassifier
    from py_engine.tabs.tab_data import EVAL_FILE, read_tabs

    cats = Categories.default()

    def generated(size, seed):
        _, held, _ = generate(size, seed=seed, validation=0.1)
        return [(t["url"], t["title"], cats.get(t["label"]).id) for t in held]

    evaluation = [(t.url, t.title, cats.get(t.label).id) for t in read_tabs(EVAL_FILE)]
    validation = generated(3500, 99)
    pool = generated(14000, 77)
    clf = run_sync(TabClassifier.load_deployed(model))
    pool_wrong = [pool[i] for i in mistakes(clf, cats, pool)]
    eval_wrong = mistakes(clf, cats, evaluation)[:count]
    ways = {"generated": [(random.Random(k).sample(pool_wrong, count),
                           {"generated": validation, "eval": evaluation}) for k in range(sets)],
            "eval": [([evaluation[i] for i in eval_wrong],
                      {"other eval": [t for i, t in enumerate(evaluation) if i not in eval_wrong],
                       "generated": validation})]}
    result = {"model": str(model), "eval_file": str(EVAL_FILE), "machine": machine(),
              "pool_mistakes": f"{len(pool_wrong)} of {len(pool)}", "ways": {}}
    for way, runs in ways.items():
        result["ways"][way] = {}
        for name, setting in SETTINGS.items():
            done = [dict(run_setting(model, setting, corrections, measured),
                         corrections=len(corrections)) for corrections, measured in runs]
            result["ways"][way][name] = mean_of(done)
            print(f"{way} / {name}: done", file=sys.stderr, flush=True)
    return result


def table(result):
    rows = [("corrections", "setting", "learned", "accuracy before -> after", "steps")]
    for way, settings in result["ways"].items():
        for name, r in settings.items():
            moved = ", ".join(f"{n} {r['before'][n]:.1%} -> {r['after'][n]:.1%}" for n in r["before"])
            rows.append((way, name, f"{r['learned']}/{r['corrections']}", moved, f"{r['steps']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEPLOYED,
                        help="a directory `py-engine tabs deploy` wrote (default: extension/dist/model)")
    parser.add_argument("--corrections", type=COUNT, default=10, help="corrections per set (10)")
    parser.add_argument("--sets", type=COUNT, default=5, help="sets of generated-tab corrections (5)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "tabs_corrections.json")
    args = parser.parse_args()
    if not (args.model / "manifest.json").is_file():
        sys.exit(f"{args.model}: no deployed tab model (python build.py build writes extension/dist/model)")
    if args.corrections < 1 or args.sets < 1:
        sys.exit("--corrections and --sets must be 1 or more")
    result = measure(args.model, args.corrections, args.sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
