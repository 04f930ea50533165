"""The worker's side of the page <-> worker message API (py_engine/worker_bridge.py) on the host:
bytes cross as buffers beside the JSON, and the engine service's answers, errors included, come
back packed."""

import json

import pytest

from py_engine.app.service import EngineService
from py_engine.worker_bridge import answer, pack, unpack
from event_loop import run as run_async


def test_bytes_cross_beside_the_json():
    value = {"files": {"a.bin": b"\x00\xff" * 3, "b.json": bytearray(b"{}")}, "n": [1, 2.5, None],
             "nested": [{"data": memoryview(b"xyz")}], "text": "caf\u00e9"}
    text, buffers = pack(value)
    assert buffers == [b"\x00\xff" * 3, b"{}", b"xyz"]
    assert json.loads(text)["files"]["a.bin"] == {"$bytes": 0}
    back = unpack(text, buffers)
    assert back == {"files": {"a.bin": b"\x00\xff" * 3, "b.json": b"{}"}, "n": [1, 2.5, None],
                    "nested": [{"data": b"xyz"}], "text": "caf\u00e9"}
    # JSON has no NaN: a diverged step's numbers cross by name
    text, _ = pack({"loss": float("nan"), "norm": [float("inf"), -float("inf"), 1.5]})
    assert json.loads(text) == {"loss": "NaN", "norm": ["Infinity", "-Infinity", 1.5]}
    with pytest.raises(TypeError):
        pack({"record": object()})


def test_answers_of_the_service(tmp_path):
    service = EngineService(queue=str(tmp_path / "queue.sqlite"), states=str(tmp_path / "states"))

    def call(method, params):
        return unpack(*run_async(answer(service, method, *pack(params))))

    try:
        got = call("import_text", {"name": "notes.md", "data": b"# Tea\n\nGreen tea is steeped "
                                                           b"at 80 C for two minutes, no longer."})
        assert got["result"]["added"] == 1 and got["result"]["examples"][0]["kind"] == "causal_lm"
        error = call("import_file", {"name": "broken.bin", "data": b"\x00\x01PK garbage"})["error"]
        assert error["kind"] == "user" and error["message"].startswith("broken.bin:")
        assert "\n" not in error["message"]
        error = call("no_such_method", {})["error"]
        assert error["kind"] == "user" and "no_such_method" in error["message"]
    finally:
        service.close()
