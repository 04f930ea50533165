"""The worker's side of the page <-> worker message API (web/src/worker.mjs): a message's
params and a method's answer cross the Pyodide boundary as JSON text plus a list of byte
buffers, each bytes value inside them replaced by {"$bytes": i}, its index in the list. Files
(models, adapters, imports, exports) thus travel as typed arrays, never inside JSON, and
everything else is plain data that needs no proxies (nothing to leak or destroy).

    text, buffers = await answer(service, "import_text", params_text, buffers)
    # pack()ed {"result": ...} or {"error": {"message", "kind"}}: EngineService.call's answer

Pure Python (json): the packing is checked on the host too.
"""

import json
import math

BYTES = "$bytes"
BYTE_TYPES = (bytes, bytearray, memoryview)


def pack(value):
    """(JSON text, [bytes]) of a JSON-ready value whose leaves may be bytes; a float that is
    not finite (a diverged step's loss) becomes its name, "NaN", "Infinity" or "-Infinity",
    which JSON has no numbers for."""
    buffers = []

    def walk(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if v != v else "Infinity" if v > 0 else "-Infinity"
        if isinstance(v, BYTE_TYPES):
            buffers.append(bytes(v))
            return {BYTES: len(buffers) - 1}
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return json.dumps(walk(value), allow_nan=False), buffers


def unpack(text, buffers):
    """The value pack() packed: {"$bytes": i} back to buffers[i] as bytes (a JS typed array
    from the page is copied out of JS memory)."""
    buffers = [b.to_bytes() if hasattr(b, "to_bytes") else bytes(b) for b in buffers]

    def walk(v):
        if isinstance(v, dict):
            if len(v) == 1 and BYTES in v:
                return buffers[v[BYTES]]
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(json.loads(text) if text else {})


async def answer(service, method, params_text, buffers):
    """service.call(method, params)'s answer, packed; an answer that cannot cross (a value
    JSON has no form for) becomes a bug report rather than silence."""
    reply = await service.call(method, unpack(params_text, buffers))
    try:
        return pack(reply)
    except (TypeError, ValueError) as e:
        return pack({"error": {"message": f"{method}: its answer cannot be sent to the page ({e})",
                               "kind": "bug"}})
