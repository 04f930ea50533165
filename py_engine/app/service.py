"""EngineService: what the page's worker drives, one async method per message of the page's API.

    service = EngineService(queue="default", emit=post_event)      # in the worker (Pyodide)
    service = EngineService(queue="queue.sqlite", states="states/", backend="numpy")   # host
    reply = await service.call("load_model", {"source": "bundled", "name": "minilm",
                                              "files": {...}})
    # {"result": {...}} or {"error": {"message": "...", "kind": "user" | "device_lost" | "bug"}}

Methods (keyword params as the page sends them; results JSON-ready, bytes as Python bytes):
load_model, status, import_text, import_html, import_file, import_url, import_dataset,
predict, predict_many, correct, relabel, reset, chat, idle, activity, set_idle_state, force_slice, pause, resume, configure,
start_loop, stop_loop, snapshots, restore_snapshot, export_adapter, import_adapter,
export_dataset, save, set_aside_states, export_set_aside_state, remove_set_aside_state. Events
go to emit(event): the trainer's ("step", "quality", "snapshot",
"rollback", "slice", "restore", "saved", "restored"), "token" {request, text} while chatting,
"progress" {task, done, total, what}, "state_set_aside" {why, reason, kept_as,
corrections_requeued} (load_model put aside a saved state it could not use), "status" (status(), at most every status_interval_s
while something changes), "log" {level, message}, and "loop_failed" {message, kind, retry_s,
traceback (for a bug)}
when the scheduler's own loop ends on an error: it starts again retry_s later, except for kind
"device_lost" (the GPU went away; no call will work until the engine is made anew on a new
device).

Over the pieces: a model (app/models.py) on the GPU in the browser (NumPy or the native GPU on
the host), the TrainingQueue (IndexedDB in the browser, SQLite on the host), a ChatLog, the
importers and cleaning, a Learner (app/learner.py) fed from the queue, a TrainingScheduler
(app/scheduler.py) that runs its slices when the user is idle and pauses them for inference,
and the state store (IndexedDBStateStore in the browser, a directory per model on the host).

Pure Python: this runs in the browser.
"""

import asyncio
import contextlib
import json
import re
import time
import traceback
from dataclasses import fields, replace

from ..data.chat_log import ChatLog
from ..data.classification import DataError
from ..data.cleaning import clean_records
from ..data.datasets import ExportConfig, dataset_files, loads_dataset
from ..data.importers import import_file as route_file
from ..data.queue import QueueConfig, TrainingQueue
from ..data.record import Record
from ..data.storage import in_browser
from ..gpu import DeviceLostError, GPUError
from ..train.state import (DirectoryStore, IndexedDBStateStore, StateError, as_store,
                           directory_state_keys, indexeddb_state_keys)
from .batches import BatchConfig
from .learner import WORKING_SET_FILE, Learner, LearnerConfig
from .models import load_model_files
from .scheduler import SchedulerConfig, TrainingScheduler

METHODS = ("device", "load_model", "status", "import_text", "import_html", "import_file", "import_url",
           "import_dataset", "predict", "predict_many", "correct", "relabel", "reset", "chat",
           "idle", "activity", "set_idle_state", "force_slice", "pause", "resume", "configure",
           "start_loop", "stop_loop", "snapshots", "restore_snapshot", "export_adapter",
           "import_adapter", "export_dataset", "save", "acknowledge_loss", "set_aside_states",
           "export_set_aside_state", "remove_set_aside_state")
# A saved state set aside (_set_aside): the model's key, why, and a number from 1
SET_ASIDE = re.compile(r"^(?P<model>.+)\.(?P<why>[a-z_]+)-(?P<n>[1-9][0-9]*)$")
LEASE_SECONDS = 120.0        # a reload gives back what it held within two minutes
LOOP_RETRY_S = 60.0          # the scheduler's loop, ended by an error, starts again this much later
EXAMPLES_SHOWN = 5


class UserError(ValueError):
    """A request that cannot be done as asked; the message says why, in one line."""


def error_kind(error):
    """"user" for bad input and expected failures (a one-line message), "device_lost" when the
    GPU device went away (a driver reset, the browser's GPU process restarted: whoever hosts
    the engine makes it anew), "bug" otherwise."""
    if device_lost(error):
        return "device_lost"
    return "user" if isinstance(error, (ValueError, KeyError, GPUError)) else "bug"


def device_lost(error):
    """Whether `error`, or an error it was raised from, is the GPU device's loss."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, DeviceLostError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _message(error):
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error) or type(error).__name__


class EngineService:
    METHODS = METHODS             # what call() answers (an app's service adds its own)
    read_checkpoint = None        # an app's reader of compressed weights (load_model_files)

    def __init__(self, queue="default", states=None, emit=None, backend=None, device=None,
                 clock=time.monotonic, scheduler=None, learner=None, batches=None,
                 status_interval_s=0.25):
        """queue: the training queue's store target (open_store's: an IndexedDB name in the
        browser, an SQLite path on the host); states: where models' states are kept (a host
        directory, one subdirectory per model; a function key -> store; None in the browser:
        IndexedDB); backend: "gpu" (default in the browser) or "numpy" (default on the host);
        scheduler / learner / batches: SchedulerConfig / LearnerConfig / BatchConfig."""
        self.queue = TrainingQueue(queue, QueueConfig(lease_seconds=LEASE_SECONDS))
        self.states = states
        self.emit = emit or (lambda event: None)
        self.backend = backend or ("gpu" if in_browser() else "numpy")
        self.gpu = device
        self.clock = clock
        self.learner_config = learner or LearnerConfig()
        self.batch_config = batches or BatchConfig()
        self.scheduler = TrainingScheduler(self._run_slice, config=scheduler, clock=clock,
                                           on_change=self._status_changed)
        self.model = self.learner = self.chat_log = None
        self.initial = None               # what reset() goes back to: the loaded adapter, labels
        self.background = []              # set_background's Records
        self.conversations = {}
        self.status_interval_s = status_interval_s
        self._status_dirty = False
        self._status_task = None
        self._watched_loop = None         # the scheduler's loop task whose end is told
        self.loop_retry_s = LOOP_RETRY_S
        self._closed = False
        self._last_status = None
        self._queue_stats = None
        self._model_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _using_model(self):
        """Inference and other uses of the model: training paused (a running slice stops at
        its next micro-batch; none starts while any use waits), and one use at a time (two
        readbacks of one device buffer cannot be under way together)."""
        async with self.scheduler.pause_for_inference():
            async with self._model_lock:
                yield

    # --- the message API's one entry ---

    async def call(self, method, params=None):
        """{"result": ...} of await self.<method>(**params), or {"error": {"message", "kind"}}
        ("user": a one-line message; "bug": with the traceback)."""
        if method not in self.METHODS:
            return {"error": {"message": f"unknown method {method!r}", "kind": "user"}}
        try:
            return {"result": await getattr(self, method)(**(params or {}))}
        except TypeError as e:
            if "argument" in str(e) and method in str(e):
                return {"error": {"message": f"{method}: {e}", "kind": "user"}}
            return {"error": {"message": _message(e), "kind": "bug",
                              "traceback": traceback.format_exc()}}
        except Exception as e:          # noqa: BLE001 - every failure becomes an answer
            kind = error_kind(e)
            out = {"message": _message(e), "kind": kind}
            if kind == "bug":
                out["traceback"] = traceback.format_exc()
            return {"error": out}

    # --- models ---

    def _store(self, key):
        if callable(self.states):
            return self.states(key)
        if self.states is None:
            if not in_browser():
                raise UserError("give the service a states directory on the host")
            return IndexedDBStateStore(IndexedDBStateStore.PREFIX + key)
        from pathlib import Path

        return DirectoryStore(Path(self.states) / key)

    def _progress(self, task, done, total, what):
        self.emit({"event": "progress", "task": task, "done": done, "total": total, "what": what})

    async def load_model(self, source="files", name=None, files=None, labels=None, kind=None,
                         pooling=None, adapter=None, state=None, base_dtype="f32",
                         max_length=None):
        """Load a checkpoint given as files (source "bundled": the MiniLM the worker fetched;
        "files": a folder the user picked). `adapter` ({file name: bytes}, a PEFT adapter) is
        what the model starts from, and what reset() goes back to; without one, fresh
        weights. A classifier's labels are given, else the adapter's, else the queue's
        classification labels, else a fine-tuned classifier checkpoint's (config.json's
        id2label; its head's rows start the labels it holds), else a default pair. `state` names where the model's training
        state is kept (default: a name made of the checkpoint and the labels, so another label
        set starts afresh); a saved state is put back, and with `state` named, a classifier
        whose saved state has other labels (relabel() was called) is relabelled to them first.
        base_dtype: how the GPU keeps a classifier's frozen weights ("f32", "f16", "int8");
        max_length: the most tokens of a text (default 128 for classifiers). kind
        "classification" reads a decoder (Llama, Qwen2, GPT-2, ...) as a sequence classifier;
        pooling (fresh classifiers): "mean" by default, a decoder's "last" token, a
        fine-tuned classifier's family's ("cls" for BERT's). Returns the
        model's summary (with "restored": whether a state was)."""
        if source not in ("bundled", "files"):
            raise UserError(f"source must be 'bundled' or 'files', got {source!r}")
        if not files:
            raise UserError("load_model needs the model's files")
        if state is not None and (not isinstance(state, str) or not state.strip()):
            raise UserError(f"state must be a non-empty name, got {state!r}")
        name = name or ("minilm" if source == "bundled" else "model")
        adapter = {n: _bytes(d) for n, d in adapter.items()} if adapter else None
        async with self._using_model():
            await self._unload()
            self._progress("load_model", 0, 3, "reading the checkpoint")
            if labels is None and adapter and "labels.json" in adapter:
                labels = _json_list(adapter["labels.json"], "the adapter's labels.json")
            if labels is None and kind != "causal_lm" and not adapter:
                stats = await self._stats(fresh=True)
                found = sorted(stats["by_label"])
                labels = found if len(found) >= 2 else None
            model = await load_model_files(files, name, kind=kind, labels=labels,
                                           backend=self.backend, device=self.gpu,
                                           pooling=pooling, state=state, adapter=adapter,
                                           base_dtype=base_dtype, max_length=max_length,
                                           read_checkpoint=self.read_checkpoint)
            try:
                self.initial = {"adapter": adapter or await model.adapter_files(),
                                "labels": getattr(model, "labels", None)}
                self._progress("load_model", 1, 3, "restoring the saved state")
                set_aside = learner = None
                try:
                    saved = await self._saved_labels(model) if state is not None else None
                    if saved is not None and saved != model.labels:
                        await model.relabel(saved, {})
                    learner = self._learner(model)
                    restored = await learner.restore()
                except (ValueError, KeyError) as e:
                    if isinstance(e, GPUError):
                        raise
                    if learner is not None:         # what the failed restore may have begun
                        await learner.close()
                    set_aside, learner = await self._set_aside(model, _message(e))
                    restored = False
            except BaseException:
                model.close()
                raise
            self.model, self.learner = model, learner
            if model.record_kind == "causal_lm":    # its chats are learned
                tokenizer = model.model.tokenizer
                self.chat_log = ChatLog(
                    self.queue, max_tokens=min(2048, model.model.max_length),
                    count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids))
            self._progress("load_model", 3, 3, "ready")
        self._status_changed()
        out = dict(model.summary(), restored=restored, step=learner.status()["step"])
        if set_aside is not None:
            out["set_aside"] = set_aside
        return out

    async def _set_aside(self, model, reason, why="unreadable"):
        """Put the saved state of `model` aside and start the model afresh. `why`
        "unreadable": the state cannot be put back (`reason`: a file unreadable or cut short,
        written by another version, trained with other options), which would fail every load
        of the model from now on; an app's service gives its own (the model it was trained
        from changed). The state is kept under another name (KEY.WHY-N), never deleted; the
        model starts from what it was loaded with, and a fresh state, with the app files it
        carries (_carried_app_files), is saved in its place; the user's corrections it had
        learned are queued again (_requeue_corrections). Says so: ({"why", "reason",
        "kept_as", "corrections_requeued"}, also the "state_set_aside" event; its new
        Learner)."""
        files = await as_store(self._store(model.key)).load()
        for n in range(1, 100):
            kept_as = f"{model.key}.{why}-{n}"
            try:
                await as_store(self._store(kept_as)).load()
            except StateError:
                break                       # a free name
        else:
            raise UserError(f"the saved state {model.key!r} is to be set aside ({reason}), but "
                            f"99 states set aside are kept already: remove some "
                            "(set_aside_states lists them, remove_set_aside_state removes one)")
        await as_store(self._store(kept_as)).save(files)
        await self._back_to_initial(model)
        learner = self._learner(model)
        learner.app_files.update(self._carried_app_files(files))
        learner.unsaved = True
        await learner.save()
        requeued = await self._requeue_corrections(files, model)
        learner.queue_changed()
        out = {"why": why, "reason": reason, "kept_as": kept_as, "corrections_requeued": requeued}
        self.emit(dict(out, event="state_set_aside"))
        self.emit({"event": "log", "level": "error" if why == "unreadable" else "info",
                   "message": f"the saved state was set aside ({reason}): kept as {kept_as!r}; "
                              f"the model starts from what it was loaded with, and {requeued} "
                              f"corrections it had learned are queued to learn again"})
        return out, learner

    async def set_aside_states(self):
        """The saved states set aside (_set_aside), of every model this service keeps states
        for: [{"name", "model" (its key), "why", "files" (their names), "bytes"}], by name."""
        out = []
        for key in await self._state_keys():
            found = SET_ASIDE.match(key)
            if found is None:
                continue
            try:
                files = await as_store(self._store(key)).load()
            except StateError:
                files = {}          # listed all the same: it can still be removed
            out.append({"name": key, "model": found["model"], "why": found["why"],
                        "files": sorted(files), "bytes": sum(len(v) for v in files.values())})
        return out

    async def export_set_aside_state(self, name=None):
        """A state set aside, its files as they were kept ({"files": {name: bytes}}): the
        adapter, labels and training state the model had when it was put aside."""
        await self._check_set_aside(name)
        try:
            files = await as_store(self._store(name)).load()
        except StateError as e:
            raise UserError(str(e)) from None
        return {"files": files}

    async def remove_set_aside_state(self, name=None):
        """Delete a state set aside (never the state a model is using: those are not named
        so); the states set aside that remain."""
        await self._check_set_aside(name)
        await as_store(self._store(name)).delete()
        self.emit({"event": "log", "level": "info",
                   "message": f"the saved state set aside as {name!r} was removed"})
        return await self.set_aside_states()

    async def _check_set_aside(self, name):
        if not isinstance(name, str) or SET_ASIDE.match(name) is None:
            raise UserError(f"{name!r} does not name a saved state set aside "
                            "(set_aside_states lists them)")
        if name not in await self._state_keys():
            raise UserError(f"no saved state set aside as {name!r} (set_aside_states lists them)")

    async def _state_keys(self):
        """The keys of every saved state this service keeps."""
        if callable(self.states):
            raise UserError("this service's saved states are kept by a store that cannot list them")
        if self.states is None:
            return await indexeddb_state_keys(IndexedDBStateStore.PREFIX)
        return directory_state_keys(self.states)

    def _carried_app_files(self, files):
        """The app's files of a state set aside that a fresh state keeps ({name: bytes}, those
        that still read): none here; an app's service says which of its own."""
        return {}

    async def _requeue_corrections(self, files, model):
        """The user's corrections a state set aside had learned or was learning (its working
        set's, where that still reads), queued again at their priority so that the fresh
        model learns them too; the number queued (one already queued counts once)."""
        try:
            data = json.loads(bytes(files[WORKING_SET_FILE]).decode("utf-8"))
            records = [Record.from_dict(r) for r in data["records"].values()]
        except (KeyError, ValueError, TypeError, AttributeError):
            return 0                        # unreadable too: nothing to take from it
        labels = getattr(model, "labels", None)
        wanted = [r.replace(id=None) for r in records
                  if r.source == "correction" and r.kind == model.record_kind
                  and (labels is None or r.label in labels)]
        if not wanted:
            return 0
        result = await self.queue.put(wanted)
        self._queue_stats = None
        return result["added"] + result["duplicates"]

    async def _back_to_initial(self, model):
        """The model's weights and labels as load_model gave them (reset, a state set aside)."""
        labels = self.initial["labels"]
        if labels is not None and labels != model.labels:
            await model.relabel(labels, {})
        await model.load_adapter_files(self.initial["adapter"], "the loaded adapter")

    def _learner(self, model):
        learner = Learner(model, self.queue, self._store(model.key), self._forward,
                          self.learner_config, self.batch_config, self.clock)
        learner.set_background(self.background)
        return learner

    def set_background(self, examples):
        """What the loaded model learned before it came here, [(text, label)] (a sample of its
        training data): replayed with the records it learns from, as many as they are, so
        that learning a few corrections does not unlearn the rest. Kept for models loaded
        later (the same task); labels the model lacks are left out."""
        self.background = [Record("classification", "dataset", text=text, label=label,
                                  id=-(i + 1)) for i, (text, label) in enumerate(examples)]
        if self.learner is not None:
            self.learner.set_background(self.background)
        return len(self.background)

    async def _saved_labels(self, model):
        """The labels of the classifier state saved for `model`, or None (none saved)."""
        if model.kind != "classification":
            return None
        try:
            files = await as_store(self._store(model.key)).load()
        except StateError:
            return None
        if "labels.json" not in files:
            return None
        return _json_list(files["labels.json"], "the saved state's labels.json")

    async def device(self):
        """The GPU the engine computes on (opened now, kept for the models to come), as the
        adapter describes itself, with whether it is a software implementation; None on the
        NumPy backend."""
        if self.backend != "gpu":
            return None
        if self.gpu is None:
            from ..gpu import open_device

            try:
                self.gpu = await open_device()
            except GPUError as e:
                raise UserError(f"no usable GPU: {e}") from e
        return self.gpu.info.as_dict()

    async def _unload(self):
        if self.learner is not None:
            if self.learner.unsaved:
                await self.learner.save()
            await self.learner.close()
        if self.model is not None:
            self.model.close()
        self.model = self.learner = self.chat_log = None
        self.conversations = {}

    def _require(self, *kinds):
        if self.model is None:
            raise UserError("no model is loaded: load one first")
        if kinds and self.model.kind not in kinds:
            what = "a classifier" if kinds == ("classification",) else "a chat model"
            raise UserError(f"this needs {what}; the loaded model is a {self.model.kind} model")
        return self.model

    # --- status ---

    async def _stats(self, fresh=False):
        if fresh or self._queue_stats is None:
            self._queue_stats = await self.queue.stats()
        return self._queue_stats

    async def status(self):
        learner = self.learner
        return {"model": None if self.model is None else self.model.summary(),
                "scheduler": self.scheduler.status(),
                "trainer": None if learner is None else learner.status(),
                "queue": await self._stats(),
                "snapshots": [] if learner is None else learner.snapshots(),
                "rollbacks": [] if learner is None else learner.rollbacks(),
                "history": [] if learner is None else learner.history(200)}

    async def acknowledge_loss(self):
        """The user has read the queue's "lost" (the browser started the saved data empty): it
        is no longer said, in this page or any other. Returns the queue's stats."""
        await self.queue.acknowledge_loss()
        self._status_changed()
        return await self._stats(fresh=True)

    def _forward(self, event):
        self.emit(event)
        if event["event"] in ("slice", "rollback", "restore", "saved"):
            self._queue_stats = None if event["event"] == "saved" else self._queue_stats
            self._status_changed()

    def _status_changed(self):
        """Push "status" soon (at most every status_interval_s) when a loop is running."""
        self._status_dirty = True
        if self._status_task is not None and not self._status_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._status_task = loop.create_task(self._push_status())

    async def _push_status(self):
        while self._status_dirty and not self._closed:
            if self._last_status is not None:
                wait = self.status_interval_s - (time.monotonic() - self._last_status)
                if wait > 0:
                    await asyncio.sleep(wait)
            if self._closed:                 # closed while waiting: the queue is gone
                return
            self._status_dirty = False
            self._last_status = time.monotonic()
            self.emit(dict(await self.status(), event="status"))

    # --- data in ---

    async def _put(self, records, what):
        """Clean records and queue them: the import's answer."""
        answer, _ = await clean_and_queue(self.queue, records)
        self._queue_stats = None
        if self.learner is not None:
            self.learner.queue_changed()
        self._status_changed()
        self.emit({"event": "log", "level": "info",
                   "message": f"{what}: {len(records)} records, {answer['added']} added"})
        return answer

    async def import_text(self, name=None, data=None):
        from ..data.importers.text import import_text

        if data is None:
            raise UserError("import_text needs data (the text or the file's bytes)")
        return await self._put(import_text(data, name=name), name or "text")

    async def import_html(self, url=None, data=None):
        from ..data.importers.website import import_html

        if not url or data is None:
            raise UserError("import_html needs the page's url and its data")
        return await self._put(import_html(_bytes(data), url=url), url)

    async def import_file(self, name=None, data=None):
        if not name or data is None:
            raise UserError("import_file needs the file's name and data")
        return await self._put(route_file(_bytes(data), name), name)

    async def import_url(self, url=None, data=None):
        """A URL's records: `data` is what the page fetched through the server's fetch
        endpoint; on the host, without data, the URL is fetched here."""
        if not url:
            raise UserError("import_url needs a url")
        if data is None:
            if in_browser():
                raise UserError("fetch the URL through the server's fetch endpoint and pass its "
                                "data")
            from ..data.importers.website import import_url

            return await self._put(import_url(url), url)
        return await self._put(route_file(_bytes(data), url, url=url), url)

    async def import_dataset(self, format=None, name="dataset", data=None):
        if data is None:
            raise UserError("import_dataset needs data")
        text = data if isinstance(data, str) else _bytes(data).decode("utf-8", errors="strict")
        return await self._put(loads_dataset(text, format, where=name), name)

    # --- inference ---

    async def predict(self, text=None):
        model = self._require("classification")
        if not isinstance(text, str) or not text.strip():
            raise UserError("predict needs a non-empty text")
        async with self._using_model():
            return (await model.predict_many([text]))[0]

    async def predict_many(self, texts=None):
        """predict() for many texts in one call (batched on the device): one {"label",
        "probs"} per text, in order."""
        model = self._require("classification")
        if not isinstance(texts, list) or not texts:
            raise UserError("predict_many needs a non-empty list of texts")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"predict_many: text {i + 1} is not a non-empty string")
        async with self._using_model():
            return await model.predict_many(texts)

    async def correct(self, text=None, label=None, where=None):
        """The user's label for a text: queued as a top-priority correction (`where`: what the
        user did, kept as its origin). An earlier correction of the same text to another
        label is replaced: the user changed their mind."""
        model = self._require("classification")
        if label not in model.labels:
            raise UserError(f"label {label!r} is not among the classifier's labels {model.labels}")
        if not isinstance(text, str) or not text.strip():
            raise UserError("correct needs a non-empty text")
        record = Record("classification", "correction", text=text, label=label,
                        origin={"where": where or "a correction in the page"})
        earlier = [r.id async for r in self.queue.records(kind="classification",
                                                         source="correction")
                   if r.text == text and r.label != label]
        if earlier:
            result = await self.queue.replace(earlier, [record])
        else:
            result = await self.queue.put([record])
        self._queue_stats = None
        self.learner.queue_changed()
        self._status_changed()
        return {"queued": result["added"] == 1, "duplicate": result["duplicates"] == 1,
                "replaced": len(earlier), "id": result["ids"][0]}

    async def relabel(self, labels=None, renamed=None, app_files=None):
        """Change a classifier's labels without training it from scratch: `labels` the new
        list, `renamed` {old: new}. Kept and renamed labels keep what was learned about them
        (their rows of the head; the LoRA weights are kept), an added one starts from the
        mean of the others, a removed one is gone. Queued and learned records of a renamed
        label are renamed (learned ones are still replayed); those of a removed one stay in
        the queue, unused. Training starts a new
        generation; the new state is saved at once, with `app_files` ({name: bytes}, names
        starting "app-": what the app keeps with these labels). Returns the model's summary."""
        model = self._require("classification")
        if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip()
                                                   for x in labels):
            raise UserError(f"relabel needs a list of label names, got {labels!r:.100}")
        renamed = dict(renamed or {})
        async with self._using_model():
            await self.learner.close()
            await model.relabel(labels, renamed)
            # what was learned and left the queue is still replayed, under its new label
            memory = [r.replace(label=renamed.get(r.label, r.label))
                      for r in self.learner.work.memory if renamed.get(r.label, r.label) in labels]
            for old, new in renamed.items():
                records = [r async for r in self.queue.records(kind="classification", label=old)]
                if records:
                    await self.queue.replace([r.id for r in records],
                                             [r.replace(label=new, id=None) for r in records])
            self._queue_stats = None
            await self._new_generation(model, memory, app_files)
            self.learner.unsaved = True
            await self.learner.save()
        self._status_changed()
        return model.summary()

    async def _new_generation(self, model, memory=None, app_files=None):
        """A new learner for `model` rebuilt or relabelled, in place of the closed one: the
        app's files kept (and `app_files` added), what was learned still replayed (`memory`:
        the old learner's, relabelled)."""
        old = self.learner
        self.learner = self._learner(model)
        self.learner.app_files = dict(old.app_files, **(app_files or {}))
        self.learner.work.memory = old.work.memory if memory is None else memory

    async def reset(self):
        """Forget what was learned: the model goes back to the weights and labels it was
        loaded with (load_model's adapter, else its fresh weights), its training state is
        replaced by that, and the queued records of its kind are removed. Returns the model's
        summary, with how many records were removed."""
        model = self._require()
        async with self._using_model():
            await self.learner.close()
            ids = [r.id async for r in self.queue.records(kind=model.record_kind)]
            if ids:
                await self.queue.replace(ids)
            await self._back_to_initial(model)
            self._queue_stats = None
            self.learner = self._learner(model)
            self.learner.unsaved = True
            await self.learner.save()
        self._status_changed()
        return dict(model.summary(), removed=len(ids))

    async def chat(self, conversation_id=None, message=None, log=True, request=None,
                   max_new_tokens=128, template_args=None):
        """A reply to `message` in the conversation, streamed as "token" events {request,
        text} (request: the page's id for this call, default the conversation id); logged for
        training unless log is False. `template_args`: more variables for the chat template
        ({"enable_thinking": false} where the model's summary says thinking). Training pauses
        meanwhile."""
        model = self._require("causal_lm", "seq2seq")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise UserError("chat needs a conversation_id")
        if not isinstance(message, str) or not message.strip():
            raise UserError("chat needs a non-empty message")
        request = conversation_id if request is None else request
        history = self.conversations.get(conversation_id)
        if history is None:
            history = [{"role": m["role"], "content": m["content"]}
                       for m in await self.chat_log.messages(conversation_id)]
        prompt = history + [{"role": "user", "content": message}]
        # a conversation longer than the model's positions: its latest turns that fit
        shown, ids = model.model.latest_turns(prompt, max_new_tokens, template_args,
                                              as_prompt=model.prompt)

        def on_token(_, text):
            if text:
                self.emit({"event": "token", "request": request, "text": text})

        async with self._using_model():
            result = await model.model.generate(model.prompt(shown), max_new_tokens=max_new_tokens,
                                                on_token=on_token, prompt_ids=ids)
        self.conversations[conversation_id] = prompt + [{"role": "assistant", "content": result.text}]
        if log:
            await self.chat_log.log(conversation_id, "user", message)
            await self.chat_log.log(conversation_id, "assistant", result.text)
            self._queue_stats = None
            self.learner.queue_changed()
            self._status_changed()
        return {"text": result.text, "finish_reason": result.finish_reason,
                "logged": bool(log), "dropped": len(prompt) - len(shown)}

    # --- scheduling ---

    async def _run_slice(self, budget_ms, stop):
        if self.learner is None:
            return None
        report = await self.learner.slice(budget_ms, stop)
        if self.scheduler.looping and not self.scheduler.forced:
            await self.learner.maybe_save()     # no one else saves after the loop's slices
        return report

    async def _after_slice(self, result):
        """Save on the learner's cadence, outside the slice, while the user is idle."""
        if self.learner is not None and result.get("ran") and \
                (self.scheduler.user_state() == "idle" or self.scheduler.forced):
            async with self._using_model():
                await self.learner.maybe_save()
        return dict(result, trainer=None if self.learner is None else self.learner.status())

    async def idle(self, deadline_ms=None):
        """A requestIdleCallback deadline: a slice within it, if training may run now."""
        return await self._after_slice(await self.scheduler.idle(deadline_ms))

    async def activity(self):
        self.scheduler.activity()
        return {"state": self.scheduler.state}

    async def set_idle_state(self, state=None):
        """chrome.idle's state ("active", "idle", "locked"), pushed in by the extension."""
        self.scheduler.set_idle_state(state)
        return {"state": self.scheduler.state}

    async def force_slice(self, budget_ms=None):
        self._require()
        result = await self.scheduler.force(budget_ms)
        if self.learner is not None and self.learner.unsaved and \
                self.learner.clock() - self.learner.last_save >= self.learner.config.save_every_s:
            async with self._using_model():
                await self.learner.save()
        return dict(result, trainer=None if self.learner is None else self.learner.status())

    async def pause(self):
        self.scheduler.pause()
        return {"state": self.scheduler.state}

    async def resume(self):
        self.scheduler.resume()
        return {"state": self.scheduler.state}

    async def start_loop(self):
        """The scheduler's own loop (slices by the idle state and the budget, no deadlines
        needed): the extension's way."""
        task = self.scheduler.start()
        if task is not self._watched_loop:
            self._watched_loop = task
            task.add_done_callback(self._loop_ended)
        return {"state": self.scheduler.state}

    def _loop_ended(self, task):
        """The loop's task ended: an error ending it is told (nobody awaits the task), and the
        loop starts again after loop_retry_s, unless the GPU is gone (no slice will ever run
        on it: whoever hosts the engine makes it anew) or the loop was stopped meanwhile. A
        slice that failed once (storage that refused a save, a bug that one batch meets) does
        not end idle training for good."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        kind = error_kind(error)
        retry = None if kind == "device_lost" or self._closed else self.loop_retry_s
        event = {"event": "loop_failed", "message": _message(error), "kind": kind, "retry_s": retry}
        if kind == "bug":
            event["traceback"] = "".join(traceback.format_exception(error))
        self.emit(event)
        if retry is not None:
            asyncio.get_running_loop().call_later(retry, self._restart_loop, task)

    def _restart_loop(self, failed):
        # not if it was stopped, or started again by someone, since
        if self._watched_loop is failed and not self.scheduler.stopped and not self._closed:
            asyncio.ensure_future(self.start_loop())

    async def stop_loop(self):
        self.scheduler.stop()
        return {"state": self.scheduler.state}

    async def configure(self, **options):
        """Scheduler options (SchedulerConfig), micro-batch options (BatchConfig), saving
        (save_every_s, refresh_s) and training options under "train" ({"lr": ...}); all are
        checked before any is applied."""
        groups = {"scheduler": {f.name for f in fields(SchedulerConfig)},
                  "batches": {f.name for f in fields(BatchConfig)},
                  "learner": {"save_every_s", "refresh_s"}}
        split = {name: {} for name in groups}
        train = options.pop("train", None)
        for key, value in options.items():
            group = next((g for g, names in groups.items() if key in names), None)
            if group is None:
                raise UserError(f"unknown option {key!r}; options are "
                                f"{sorted(set().union(*groups.values()) | {'train'})}")
            split[group][key] = value
        SchedulerConfig(**dict(vars(self.scheduler.config), **split["scheduler"]))
        BatchConfig(**dict(vars(self.batch_config), **split["batches"]))
        replace(self.learner_config, **split["learner"])
        if train is not None:
            self._require()
            if not isinstance(train, dict):
                raise UserError("train options are a dict, e.g. {'lr': 1e-3}")
            self.learner.configure(**train)
        if split["scheduler"]:
            self.scheduler.configure(**split["scheduler"])
        if split["batches"]:
            self.batch_config = BatchConfig(**dict(vars(self.batch_config), **split["batches"]))
            if self.learner is not None:
                self.learner.manager.configure(**split["batches"])
        for key, value in split["learner"].items():
            setattr(self.learner_config, key, value)
        return {"scheduler": dict(vars(self.scheduler.config)),
                "batches": dict(vars(self.batch_config)),
                "learner": {"save_every_s": self.learner_config.save_every_s,
                            "refresh_s": self.learner_config.refresh_s,
                            "train": dict(self.learner_config.train)}}

    # --- snapshots ---

    async def snapshots(self):
        return [] if self.learner is None else self.learner.snapshots()

    async def restore_snapshot(self, index=None):
        self._require()
        if isinstance(index, bool) or not isinstance(index, int):
            raise UserError(f"restore_snapshot needs a snapshot index, got {index!r}")
        async with self._using_model():
            restored = await self.learner.restore_snapshot(index)
            await self.learner.save()
        self._status_changed()
        return restored

    # --- adapters and datasets ---

    async def export_adapter(self):
        """The adapter's files. A step under way is finished first (as a save would), so that
        the weights exported are those the next save keeps."""
        model = self._require()
        async with self._using_model():
            await self._finish_step()
            return {"files": await model.adapter_files()}

    async def import_adapter(self, files=None):
        """The adapter's files ({name: bytes}) become the model's weights and are saved as its
        state. One made with other LoRA options (rank, targets, DoRA...) brings them: the model
        is rebuilt with them (its frozen weights kept) and training starts a new generation,
        as after relabel(); reset() goes back to the adapter the model was loaded with."""
        model = self._require()
        if not files:
            raise UserError("import_adapter needs the adapter's files")
        files = {name: _bytes(data) for name, data in files.items()}
        async with self._using_model():
            await self._finish_step()
            if await model.load_adapter_files(files):
                await self.learner.close()      # its trainer was the old model's
                await self._new_generation(model)
            self.learner.unsaved = True
            await self.learner.save()
        self._status_changed()
        return model.summary()

    async def _finish_step(self):
        """Finish the optimizer step a slice left under way; the learner then has unsaved
        training."""
        trainer = self.learner.trainer
        if trainer is not None and await trainer.finish_step() is not None:
            self.learner.unsaved = True

    async def export_dataset(self, format="jsonl", split=None):
        records = [r async for r in self.queue.records()]
        if not records:
            raise UserError("the training queue is empty: nothing to export")
        result = dataset_files(records, ExportConfig(format=format, split=split))
        return {"files": result.files, "counts": result.counts}

    async def save(self):
        self._require()
        async with self._using_model():
            return await self.learner.save()

    def close(self):
        self._closed = True
        if self.model is not None:
            self.model.close()
        if self._status_task is not None and not self._status_task.done():
            self._status_task.cancel()
        self.scheduler.stop()
        self.queue.close()


async def clean_and_queue(queue, records):
    """Clean an import's records and put them into the queue: (the import's answer, the queue
    ids of the records kept, in order; a refused one's is None)."""
    report = clean_records(records)
    result = await queue.put(report.records)
    summary = report.summary()
    summary["records"] = summary["records"][:50]
    return ({"records": len(records), "added": result["added"],
             "duplicates": result["duplicates"], "refused": result["refused"],
             "evicted": result["evicted"], "cleaned": summary,
             "examples": [r.as_dict() for r in report.records[:EXAMPLES_SHOWN]]}, result["ids"])


def _json_list(data, where, items="label names"):
    """The list of text in JSON `data`; a UserError naming `where` and the `items` it should
    hold otherwise."""
    try:
        value = json.loads(_bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{where} is not JSON: {e}") from None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise UserError(f"{where} is not a list of {items}")
    return value


def _bytes(data):
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "to_py"):               # a JS ArrayBuffer or typed array from the page
        return bytes(data.to_py())
    raise UserError(f"expected bytes, got {type(data).__name__}")


__all__ = ["EngineService", "UserError", "clean_and_queue", "METHODS", "error_kind", "DataError",
           "json"]
