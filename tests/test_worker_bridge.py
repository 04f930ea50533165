"""The worker's side of the page <-> worker message API (py_engine/worker_bridge.py) on the host:
bytes cross as buffers beside the JSON, errors become one-line user messages or bugs with their
traceback, and only the service's API methods can be called."""

import asyncio
import json

import pytest

from py_engine.data.classification import DataError
from py_engine.gpu.errors import NoWebGPUError
from py_engine.worker_bridge import Bridge, pack, unpack


def test_bytes_cross_beside_the_json():
    value = {"files": {"a.bin": b"\x00\xff" * 3, "b.json": bytearray(b"{}")}, "n": [1, 2.5, None],
             "nested": [{"data": memoryview(b"xyz")}], "text": "caf\u00e9"}
    text, buffers = pack(value)
    assert buffers == [b"\x00\xff" * 3, b"{}", b"xyz"]
    assert json.loads(text)["files"]["a.bin"] == {"$bytes": 0}
    back = unpack(text, buffers)
    assert back == {"files": {"a.bin": b"\x00\xff" * 3, "b.json": b"{}"}, "n": [1, 2.5, None],
                    "nested": [{"data": b"xyz"}], "text": "caf\u00e9"}
    with pytest.raises(ValueError):
        pack({"loss": float("nan")})         # JSON has no NaN: the page would choke on it


class Service:
    def __init__(self):
        self.calls = []

    async def import_file(self, name, data):
        self.calls.append((name, data))
        if not data:
            raise DataError(f"{name}: the file is empty, nothing to import")
        return {"records": 1, "bytes": len(data)}

    async def load_model(self, source):
        raise NoWebGPUError("navigator.gpu is missing: this browser has no WebGPU")

    async def chat(self, message):
        raise RuntimeError("generation broke\nsecond line")

    async def _private(self):
        return "never"


def call(bridge, method, params):
    return unpack(*asyncio.run(bridge.call(method, *pack(params))))


def test_calls_and_errors():
    service = Service()
    bridge = Bridge(service, ["import_file", "load_model", "chat"])
    assert call(bridge, "import_file", {"name": "a.txt", "data": b"hello"}) == \
        {"result": {"records": 1, "bytes": 5}}
    assert service.calls == [("a.txt", b"hello")]
    error = call(bridge, "import_file", {"name": "e.txt", "data": b""})["error"]
    assert error == {"message": "e.txt: the file is empty, nothing to import", "kind": "user"}
    error = call(bridge, "load_model", {"source": "bundled"})["error"]
    assert error["kind"] == "user" and "no WebGPU" in error["message"]
    error = call(bridge, "chat", {"message": "hi"})["error"]
    assert error["kind"] == "bug" and error["message"] == "generation broke second line"
    assert "Traceback" in error["traceback"] and "RuntimeError" in error["traceback"]
    error = call(bridge, "_private", {})["error"]
    assert error["kind"] == "user" and "unknown method '_private'" in error["message"]
    error = call(bridge, "import_file", {"nme": "x"})["error"]
    assert error["kind"] == "bug" and "unexpected keyword" in error["message"]
