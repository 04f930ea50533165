"""The adapter shipped with py_engine (py_engine/tabs/default_adapter) on the real MiniLM: the
accuracy on the hand-checked evaluation set that its training record claims (91.6%, short of
the 95% aimed at: the floors below sit just under what it measures, so a worse adapter fails),
every category's F1 above a floor, and the record telling the truth about what it measured."""

import json

import pytest

from py_engine.cli import model_dir
from py_engine.gpu import run_sync
from py_engine.tabs.categories import Categories
from py_engine.tabs.evaluate import evaluate_tabs
from py_engine.tabs.model import DEFAULT_ADAPTER
from py_engine.tabs.tab_data import EVAL_FILE, read_tabs


@pytest.fixture(scope="module")
def report():
    return run_sync(evaluate_tabs(model_dir("minilm"), DEFAULT_ADAPTER, read_tabs(EVAL_FILE), timing=False))


def test_accuracy_on_the_eval_set(report):
    assert report["count"] >= 300
    assert report["accuracy"] >= 0.91
    for label, m in report["per_class"].items():
        assert m["f1"] >= 0.80, (label, m)


def test_training_record(report):
    record = json.loads((DEFAULT_ADAPTER / "training.json").read_text())
    assert record["command"].startswith("py-engine tabs train")
    assert record["train_seconds"] > 0 and record["config"]["seed"] == 0
    assert record["eval"]["accuracy"] == pytest.approx(report["accuracy"], abs=1e-4)
    assert record["validation"]["accuracy"] >= 0.97     # a fifth of it well-known sites' generic pages
    assert record["eval"]["f1"] == pytest.approx({k: m["f1"] for k, m in report["per_class"].items()}, abs=1e-4)
    labels = json.loads((DEFAULT_ADAPTER / "labels.json").read_text())
    assert labels == Categories.default().names()
    assert Categories.from_json((DEFAULT_ADAPTER / "categories.json").read_text()) == Categories.default()
