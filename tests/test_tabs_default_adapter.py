"""The adapter shipped with py_engine (py_engine/tabs/default_adapter) on the real MiniLM: the
accuracy on the hand-checked evaluation set of the extension's answers (93.9%: the model, and
the rules where it is unsure; short of the 95% aimed at: the floors below sit just under what
it measures, so a worse adapter or a worse choice between it and the rules fails), every
category's F1 above a floor, the training record telling the truth about what the model alone
measured (91.6%), and
the extension's way of learning corrections (TabService's defaults, the background it
replays) learning three of them without unlearning the generator's validation tabs."""

import json
import tempfile
from pathlib import Path

import pytest

from py_engine.app.scheduler import SchedulerConfig
from py_engine.app.tab_service import TabService
from py_engine.cli import model_dir
from py_engine.gpu import run_sync
from py_engine.tabs.categories import Categories
from py_engine.tabs.deploy import background_tabs
from py_engine.tabs.evaluate import evaluate_tabs
from py_engine.tabs.generator import generate
from py_engine.tabs.model import DEFAULT_ADAPTER
from py_engine.tabs.tab_data import EVAL_FILE, read_tabs
from test_tab_service import call, files_of


@pytest.fixture(scope="module")
def report():
    return run_sync(evaluate_tabs(model_dir("minilm"), DEFAULT_ADAPTER, read_tabs(EVAL_FILE), timing=False))


def test_accuracy_on_the_eval_set(report):
    assert report["count"] >= 300
    assert report["accuracy"] >= 0.935 and report["model_accuracy"] >= 0.91
    assert report["accuracy"] >= report["model_accuracy"] + 0.015      # the rules earn their place
    for label, m in report["per_class"].items():
        assert m["f1"] >= 0.86, (label, m)


def test_training_record():
    record = json.loads((DEFAULT_ADAPTER / "training.json").read_text())
    alone = run_sync(evaluate_tabs(model_dir("minilm"), DEFAULT_ADAPTER, read_tabs(EVAL_FILE),
                                   timing=False, unsure_below=0.0))
    assert alone["rules"]["answered_for_model"] == 0
    assert record["command"].startswith("py-engine tabs train")
    assert record["train_seconds"] > 0 and record["config"]["seed"] == 0
    assert record["eval"]["accuracy"] == pytest.approx(alone["accuracy"], abs=1e-4)
    assert record["validation"]["accuracy"] >= 0.97     # a fifth of it well-known sites' generic pages
    assert record["eval"]["f1"] == pytest.approx({k: m["f1"] for k, m in alone["per_class"].items()}, abs=1e-4)
    labels = json.loads((DEFAULT_ADAPTER / "labels.json").read_text())
    assert labels == Categories.default().names()
    assert Categories.from_json((DEFAULT_ADAPTER / "categories.json").read_text()) == Categories.default()


CORRECTIONS = [
    ("https://www.youtube.com/watch?v=hT_nvWreIhg",
     "OneRepublic - Counting Stars (Official Music Video) - YouTube", "dev"),
    ("https://www.bbc.com/sport/football/123", "Arsenal 2-1 Chelsea: match report - BBC Sport",
     "entertainment"),
    ("https://www.notion.so/acme/Reading-list-1234", "Reading list - Notion", "social")]


def test_corrections_are_learned_without_unlearning_the_rest():
    """Three corrections, each against what the shipped model says, each learned in one idle
    slice with TabService's defaults and the background build.py ships; the generator's
    validation tabs lose at most 2 points (at the classifier defaults, 3 passes at lr 2e-3 with
    3 tabs replayed, they lost 10 here, 25 on the int8 base the extension ships)."""
    _, held, _ = generate(3500, seed=99, validation=0.1)
    probe = [{"url": t["url"], "title": t["title"]} for t in held]
    cats = Categories.default()
    gold = [cats.get(t["label"]).id for t in held]
    record = json.loads((DEFAULT_ADAPTER / "training.json").read_text())
    background = "".join(json.dumps(t) + "\n" for t in background_tabs(record)).encode()
    base = Path(model_dir("minilm"))
    with tempfile.TemporaryDirectory() as tmp:
        svc = TabService(queue=f"{tmp}/queue.sqlite", states=f"{tmp}/states", backend="numpy",
                         scheduler=SchedulerConfig(idle_fraction=1.0))
        call(svc, "load_tab_model", files={n: (base / n).read_bytes() for n in
                                           ("config.json", "tokenizer.json", "model.safetensors")},
             adapter=files_of(DEFAULT_ADAPTER), categories=cats.to_json().encode(),
             background=background)

        def accuracy():
            results = call(svc, "categorise", tabs=probe)["results"]
            return sum(r["category"] == g for r, g in zip(results, gold)) / len(gold)

        before = accuracy()
        for url, title, category in CORRECTIONS:
            said = call(svc, "categorise", tabs=[{"url": url, "title": title}])["results"][0]
            assert said["category"] != category
            call(svc, "correct_tab", url=url, title=title, category=category)
            assert call(svc, "force_slice", budget_ms=600_000)["ran"]
        corrected = [{"url": u, "title": t} for u, t, _ in CORRECTIONS]
        results = call(svc, "categorise", tabs=corrected)["results"]
        assert [r["category"] for r in results] == [c for *_, c in CORRECTIONS]
        after = accuracy()
        svc.close()
    assert before >= 0.95 and after >= before - 0.02, (before, after)
