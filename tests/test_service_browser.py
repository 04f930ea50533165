"""The engine service inside the browser (Pyodide, WebGPU through SwiftShader, the queue and the
states in IndexedDB): imports, a forced slice on the GPU with micro-batches under a deadline,
a correction that changes the next prediction, and after a page reload a new service that puts
everything back."""

import json

import numpy as np
import pytest

import peft_oracle as po
from py_engine.harness import put_files, run_json, wait_for_engine
from test_service import jsonl, sentiment

pytestmark = pytest.mark.browser

SETUP = """
import json, os
from py_engine.app.learner import LearnerConfig
from py_engine.app.service import EngineService
from py_engine.train.config import GuardConfig

events = []
config = LearnerConfig(save_every_s=0.0, guard=GuardConfig(keep=3),
                       train={"lr": 1e-2, "epochs": 3})
svc = EngineService(queue="service-browser-test", emit=events.append, learner=config)
files = {name: open(f"/work/bert/{name}", "rb").read() for name in os.listdir("/work/bert")}

async def call(method, **params):
    reply = await svc.call(method, params)
    if "error" in reply:
        raise RuntimeError(json.dumps(reply["error"]))
    return reply["result"]

async def weights():
    values = await svc.model.runtime.trainable_values()
    return {n: list(v) for n, (_, v) in values.items()}

loaded = await call("load_model", source="files", name="tiny", files=files, labels=["neg", "pos"])
"""

FIRST = SETUP + """
imported = await call("import_text", name="reviews.jsonl", data=DATA)
await call("configure", max_rows=4)                    # micro-batches of 4 rows on the GPU
whole = await call("force_slice", budget_ms=600_000)
await call("configure", max_rows=None)
text = "the actor in this scene"
before = await call("predict", text=text)
wanted = "neg" if before["label"] == "pos" else "pos"
await call("correct", text=text, label=wanted)
corrected = await call("force_slice", budget_ms=600_000)
after = await call("predict", text=text)
await call("save")
status = await svc.status()
slices = [e for e in events if e["event"] == "slice"]
json.dumps({"loaded": loaded, "imported": imported["added"], "slices": slices, "whole": whole,
            "before": before, "after": after, "wanted": wanted, "weights": await weights(),
            "step": status["trainer"]["step"], "snapshots": status["snapshots"],
            "queue": status["queue"]["total"],
            "events": sorted({e["event"] for e in events})})
"""

AFTER_RELOAD = SETUP + """
status = await svc.status()
json.dumps({"loaded": loaded, "weights": await weights(), "step": status["trainer"]["step"],
            "snapshots": status["snapshots"], "queue": status["queue"]["total"],
            "after": await call("predict", text="the actor in this scene")})
"""


@pytest.fixture(scope="module")
def bert_files(tmp_path_factory):
    path = po.tiny_bert_dir(tmp_path_factory.mktemp("bert"), seed=3)
    return {f"/work/bert/{p.name}": p.read_bytes() for p in path.iterdir()}


def test_the_service_learns_and_reloads_in_the_browser(engine_page, bert_files):
    put_files(engine_page, bert_files)
    data = jsonl(sentiment(48, 11)).decode()
    got = run_json(engine_page, FIRST.replace("DATA", repr(data)))
    assert got["loaded"]["backend"] == "gpu" and got["loaded"]["restored"] is False
    assert got["imported"] == 48
    first = got["slices"][0]
    assert first["steps"] == got["whole"]["steps"] >= 2
    assert first["micro_batches"] > 2 * first["steps"]          # 16 rows a batch, 4 at a time
    assert got["step"] > got["whole"]["steps"]
    assert got["after"]["label"] == got["wanted"]
    assert got["after"]["probs"][got["wanted"]] > got["before"]["probs"][got["wanted"]]
    assert {"step", "quality", "snapshot", "slice", "saved", "progress"} <= set(got["events"])

    engine_page.reload()
    wait_for_engine(engine_page)
    put_files(engine_page, bert_files)
    again = run_json(engine_page, AFTER_RELOAD)
    assert again["loaded"]["restored"] is True and again["step"] == got["step"]
    assert json.dumps(again["snapshots"], sort_keys=True) == json.dumps(got["snapshots"],
                                                                        sort_keys=True)
    assert again["queue"] == got["queue"]
    for name, value in got["weights"].items():
        assert np.array_equal(np.asarray(again["weights"][name]), np.asarray(value)), name
    assert again["after"]["label"] == got["wanted"]
