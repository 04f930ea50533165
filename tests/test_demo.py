"""The demo's main job, natively: MiniLM learns the embedded task (the page runs the same code)."""

import peft_oracle as po
from conftest import run
from py_engine.demo import fine_tune


def test_minilm_learns_the_embedded_task():
    report = run(fine_tune(po.MINILM_DIR, backend="numpy", epochs=1))
    assert report["steps"] == 4
    assert report["last_loss"] < report["first_loss"] - 0.1, report
    assert report["held_out_accuracy"] >= 0.9, report
    (good, bad) = report["predictions"].values()
    assert good["pos"] > 0.5 > bad["pos"], report["predictions"]
