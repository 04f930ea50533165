"""The worker's side of the page <-> worker message API (web/src/worker.mjs, engine_client.mjs).

A message's params and a method's result cross as JSON text plus a list of byte buffers: each
bytes value inside them is replaced by {"$bytes": i}, its index in the list, so that files
travel as ArrayBuffers (transferred, not copied into JSON) and everything else is plain data.

    bridge = Bridge(service, post_event)
    reply = await bridge.call("import_text", params_json, buffers)   # {"result": ...} or {"error"}

Errors: a bad input or an expected failure (a ValueError and its kin: a bad file, a refused
URL, a model too large for the device, no WebGPU) is {"message": one line, "kind": "user"};
anything else is a bug: {"message", "kind": "bug", "traceback"}.

Pure Python (json, traceback): the packing is checked on the host too.
"""

import json
import traceback

BYTES = "$bytes"
BYTE_TYPES = (bytes, bytearray, memoryview)


def pack(value):
    """(JSON text, [bytes]) of a JSON-ready value whose leaves may be bytes."""
    buffers = []

    def walk(v):
        if isinstance(v, BYTE_TYPES):
            buffers.append(bytes(v))
            return {BYTES: len(buffers) - 1}
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return json.dumps(walk(value), allow_nan=False, default=_plain), buffers


def _plain(value):
    """JSON for what json does not know: dataclass-like objects, sets."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"a {type(value).__name__} cannot cross to the page")


def unpack(text, buffers):
    """The value pack() packed: {"$bytes": i} back to buffers[i] (as bytes)."""
    def walk(v):
        if isinstance(v, dict):
            if len(v) == 1 and BYTES in v:
                return bytes(buffers[v[BYTES]])
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(json.loads(text) if text else {})


def is_user_error(error):
    """Whether an exception is the user's to fix (a message), not a bug (a traceback)."""
    from .gpu.errors import DeviceLostError, NoWebGPUError

    if getattr(error, "kind", None) in ("user", "bug"):
        return error.kind == "user"
    return isinstance(error, (ValueError, LookupError, OSError, MemoryError, NoWebGPUError,
                              DeviceLostError))


def error_message(error):
    """One line saying what went wrong."""
    if isinstance(error, MemoryError):
        return "out of memory: the model does not fit in this tab's memory; try a smaller model"
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


class Bridge:
    """Calls `service`'s async methods by name; `methods`: the names the page may call."""

    def __init__(self, service, methods):
        self.service = service
        self.methods = frozenset(methods)

    async def call(self, method, params_text, buffers):
        """{"result": value} or {"error": {...}}, as pack()ed (JSON text, buffers)."""
        try:
            if method not in self.methods:
                raise LookupError(f"unknown method {method!r}")
            params = unpack(params_text, [_bytes_of(b) for b in buffers])
            if not isinstance(params, dict):
                raise ValueError(f"{method}: params must be an object")
            result = await getattr(self.service, method)(**params)
            return pack({"result": result})
        except Exception as e:           # every failure becomes a message to the page
            return pack({"error": describe(e)})


def describe(error):
    """The {"message", "kind"[, "traceback"]} of an exception."""
    if is_user_error(error):
        return {"message": error_message(error), "kind": "user"}
    return {"message": error_message(error), "kind": "bug",
            "traceback": "".join(traceback.format_exception(error))}


def _bytes_of(buffer):
    """bytes of a buffer from JS (a JsProxy of a typed array in Pyodide) or the host."""
    return buffer.to_bytes() if hasattr(buffer, "to_bytes") else bytes(buffer)
