"""The data store in the browser's IndexedDB, through the JS module "py_engine_queue"
(web/src/queue_store.mjs, registered by boot.mjs). Each read and each write is one IndexedDB
transaction run wholly in JS; queries, ops and results cross as JSON text (one string each way
is far cheaper than converting many small objects through the FFI).

The database is "py_engine_data/<name>", shared by the pages, workers and the extension's
documents of one origin. Chromium deletes an origin's databases when it finds them corrupt on
opening one (a browser killed in the middle of a write can leave them so) and starts them
empty; the store then says so in `lost` (Chromium's message, web/src/storage_loss.mjs) and with
a warning, instead of answering as if it had always been empty, in every page until the user
dismisses it (acknowledge_loss).
"""

import json
import warnings

from . import StoreError, StoreWarning
from .schema import as_json

_SCHEMA = json.dumps(as_json())


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class IndexedDBStore:
    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise StoreError(f"an IndexedDB data store needs a non-empty name, got {name!r}")
        self.name = name
        self.lost = None        # why the browser started the database empty, when it did

    async def _call(self, what, *args):
        import py_engine_queue
        from pyodide.ffi import JsException

        try:
            reply = json.loads(await getattr(py_engine_queue, what)(self.name, _SCHEMA, *args))
        except JsException as e:
            raise StoreError(f"IndexedDB data store {self.name!r}: {what} failed ({e})") from None
        lost = reply.get("lost")
        if lost and lost != self.lost:
            warnings.warn(f"IndexedDB data store {self.name!r}: the browser found the database "
                          f"corrupt, deleted it and started it empty ({lost})", StoreWarning)
        self.lost = lost or None    # kept until the user dismisses it, here or in another page
        return reply

    async def acknowledge_loss(self):
        """The user has read `lost`: no page of the origin says it any more."""
        import py_engine_queue
        from pyodide.ffi import JsException

        try:
            await py_engine_queue.acknowledgeLoss()
        except JsException as e:
            raise StoreError(f"IndexedDB data store {self.name!r}: could not dismiss the notice "
                             f"of lost data ({e})") from None
        self.lost = None

    async def read(self, queries):
        found = await self._call("read", _dumps(queries))
        return found["version"], found["results"]

    async def write(self, ops, version):
        return (await self._call("write", _dumps(ops), version))["ok"]

    def close(self):
        pass
