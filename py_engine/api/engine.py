"""The API's engine: one thread with its own event loop that owns the training queue, the jobs,
the adapters and the model that answers queries. HTTP handlers hand it coroutines
(`await engine.run(engine.query(...))`) and read its status without waiting for it.

    engine = Engine(DataDir.open(path), {"minilm": model_dir}, backend="auto")
    engine.start()
    job = await engine.run(engine.submit(spec))        # queued; jobs run one at a time
    engine.subscribe(callback)                         # events, from the engine's thread

Jobs run one at a time, in the order they were set up, on the best backend present (the
native GPU when wgpu finds a hardware adapter, else NumPy: a software adapter is slower than
NumPy on the same CPU). A query is answered by the last good adapter (the job's own model takes
over when the job has finished and its adapter is saved): on NumPy from a thread of its own,
beside the training; on the GPU between two optimizer steps of a running job. A job's failure is the job's: its error is recorded, the worker goes on
with the next one, and the queue and the adapters stay as they were.

Registries (data_dir: jobs.json, documents.json, adapters.json, counters.json) are written
atomically after each change; after a restart, jobs that were waiting run, and one that was
running is marked "interrupted" (nothing of it was written).
"""

import asyncio
import copy
import io
import shutil
import sys
import threading
import time
import traceback
import warnings
import zipfile

from ..app.models import RECORD_KINDS, load_model_dir
from ..app.service import clean_and_queue
from ..data.datasets import ExportConfig, dataset_files
from ..data.queue import TrainingQueue
from ..formats.output_dir import written_by_py_engine
from ..labels import SINGLE_LABEL
from ..train.trainer import TrainingDiverged
from .data_dir import checked_id
from .jobs import JobCancelled, JobError, JobRun

BACKENDS = ("auto", "numpy", "gpu")
JOBS_KEPT = 200
FINISHED = ("done", "failed", "cancelled", "interrupted")


class NotFound(KeyError):
    """No job, document or adapter with that id."""


class Conflict(ValueError):
    """The request cannot be done in the present state (the message says why)."""


async def pick_backend(wanted):
    """(backend, device, why): the native GPU when asked for, or for "auto" when wgpu finds a
    hardware adapter; NumPy otherwise."""
    if wanted == "numpy":
        return "numpy", None, "asked for (--backend numpy)"
    try:
        from ..gpu import SoftwareAdapterWarning, open_device

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftwareAdapterWarning)
            device = await open_device("native")
    except Exception as e:           # noqa: BLE001 - no wgpu, no driver, no adapter: all say why
        if wanted == "gpu":
            raise ValueError(f"--backend gpu: no native GPU ({e})") from None
        return "numpy", None, f"no native GPU ({e})"
    info = device.info
    if info.is_software and wanted == "auto":
        name = info.device or info.architecture or info.vendor
        return "numpy", None, f"the only GPU adapter is a software one ({name}), slower than NumPy"
    return "gpu", device, f"{info.vendor} {info.device or info.architecture}".strip()


class LoopThread:
    """An event loop running in a thread of its own."""

    def __init__(self, name):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)

    def call(self, coro):
        """Run a coroutine on the loop: a concurrent.futures.Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro):
        """Await a coroutine run on the loop (from another event loop)."""
        return await asyncio.wrap_future(self.call(coro))

    def stop(self):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


class Engine:
    def __init__(self, data, models, backend="auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.data, self.models, self.wanted_backend = data, dict(models), backend
        self._engine = LoopThread("py-engine-api")
        self._inference = None          # NumPy: queries on a thread of their own (see query)
        self._batches = PredictionBatches()
        self._lock = threading.RLock()        # the status that HTTP threads read
        self._listeners = []
        self.backend = self.device = self.backend_note = None
        self.queue = None
        self.jobs = {}
        self.documents = {}
        self.counters = {}
        self.adapters = {"current": None, "adapters": []}
        self._pending = None
        self._running = None                   # (job, cancel flag) of the job under way
        self._serving = None                   # (adapter id, AppModel) answering queries
        self._queue_stats = None
        self._worker = None
        self._stopping = False

    # --- life ---

    def start(self):
        self._engine.thread.start()
        try:
            self.call(self._startup()).result()
        except BaseException:
            self.stop()
            raise
        if self.backend == "numpy":
            self._inference = LoopThread("py-engine-api-inference")
            self._inference.thread.start()
        return self

    def call(self, coro):
        """Run a coroutine on the engine's loop: a concurrent.futures.Future."""
        return self._engine.call(coro)

    async def run(self, coro):
        """Await a coroutine run on the engine's loop (from another event loop)."""
        return await self._engine.run(coro)

    async def _startup(self):
        self.backend, self.device, self.backend_note = await pick_backend(self.wanted_backend)
        self.queue = TrainingQueue(str(self.data.queue_path))
        self.jobs = {j["id"]: j for j in self.data.read_registry("jobs", [])}
        self.documents = self.data.read_registry("documents", {})
        self.adapters = self.data.read_registry("adapters", {"current": None, "adapters": []})
        self.counters = self.data.read_registry("counters", {})
        self._pending = asyncio.Queue()
        for job in self.jobs.values():
            if job["state"] == "running":
                job.update(state="interrupted", finished=time.time(),
                           error="the server stopped while it ran; nothing of it was written")
            elif job["state"] == "queued":
                self._pending.put_nowait(job["id"])
        self._save_jobs()
        self._queue_stats = await self.queue.stats()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def stop(self):
        """Stop the job under way ("interrupted": nothing of it is written), stop the loop, close
        the queue."""
        self._stopping = True
        if self._running is not None:
            self._running[1].set()

        async def shut():
            if self._worker is not None:
                self._worker.cancel()
                try:
                    await self._worker
                except (asyncio.CancelledError, Exception):   # noqa: BLE001
                    pass
            if self.queue is not None:
                self.queue.close()

        if self._inference is not None:
            self._inference.stop()
        if self._engine.thread.is_alive():
            try:
                self.call(shut()).result(timeout=60)
            finally:
                self._engine.stop()

    # --- events and status ---

    def subscribe(self, listener):
        """listener(event) is called from the engine's thread for each event (job state,
        progress, adapter, document); returns a function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe():
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _publish(self, event):
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def status(self):
        """What GET /fine-tuning/status answers (safe to call from any thread)."""
        with self._lock:
            current = self._adapter(self.adapters["current"])
            jobs = sorted(self.jobs.values(), key=lambda j: j["number"])
            running = self._running[0] if self._running else None
            finished = [j for j in jobs if j["state"] in FINISHED]
            done = [j for j in finished if j["state"] == "done"]
            return copy.deepcopy({
                "trained": current is not None,
                "adapter": current,
                "job": running or (jobs[-1] if jobs else None),
                "queued_jobs": [j["id"] for j in jobs if j["state"] == "queued"],
                "last_metrics": done[-1]["metrics"] if done else None,
                "backend": {"name": self.backend, "why": self.backend_note},
                "models": sorted(self.models),
                "queue": self._queue_stats,
            })

    def _adapter(self, adapter_id):
        return next((a for a in self.adapters["adapters"] if a["id"] == adapter_id), None)

    def _save_jobs(self):
        with self._lock:
            kept = sorted(self.jobs.values(), key=lambda j: j["number"])[-JOBS_KEPT:]
            self.jobs = {j["id"]: j for j in kept}
            kept = copy.deepcopy(kept)
        self.data.write_registry("jobs", kept)

    def _update(self, job, **changes):
        """Change a job, keep the registry, tell the listeners."""
        with self._lock:
            job.update(changes)
            snapshot = copy.deepcopy(job)
        if "state" in changes or "phase" in changes:
            self._save_jobs()
            self._publish({"event": "job", "job": snapshot})
        else:
            self._publish(dict({k: snapshot.get(k) for k in ("step", "total_steps", "epoch",
                                                            "loss", "accuracy", "grad_norm")},
                               event="progress", job=snapshot["id"]))

    # --- jobs ---

    def _next_number(self, kind):
        """The next number of a job or document: never one given before (ids name adapters,
        and a finished job keeps naming its documents)."""
        self.counters[kind] = self.counters.get(kind, 0) + 1
        self.data.write_registry("counters", self.counters)
        return self.counters[kind]

    def check_documents(self, ids):
        """NotFound for the first of `ids` that is not an uploaded document's."""
        with self._lock:
            missing = [d for d in ids if d not in self.documents]
        if missing:
            raise NotFound(f"no document {missing[0]!r:.40}; GET /fine-tuning/documents lists "
                           "them")

    async def submit(self, spec):
        """Queue a job (a checked job_spec); returns it."""
        self.check_documents(spec["documents"] or ())
        number = self._next_number("job")
        job = dict(spec, id=f"job-{number}", number=number, state="queued", created=time.time(),
                   started=None, finished=None, phase=None, step=0, total_steps=None,
                   epoch=None, loss=None, accuracy=None, grad_norm=None, metrics=None,
                   error=None, adapter=None)
        with self._lock:
            self.jobs[job["id"]] = job
        self._save_jobs()
        self._pending.put_nowait(job["id"])
        self._publish({"event": "job", "job": copy.deepcopy(job)})
        return copy.deepcopy(job)

    def job(self, job_id):
        with self._lock:
            job = self.jobs.get(job_id) if _is_id(job_id) else None
            if job is None:
                raise NotFound(f"no job {job_id!r:.40}")
            return copy.deepcopy(job)

    def job_list(self):
        with self._lock:
            return copy.deepcopy(sorted(self.jobs.values(), key=lambda j: j["number"]))

    async def cancel(self, job_id):
        """Cancel a queued job, or stop a running one at its next micro-batch; nothing of it is
        written."""
        self.job(job_id)
        job = self.jobs[job_id]
        if job["state"] in FINISHED:
            raise Conflict(f"{job_id} has already ended ({job['state']})")
        if job["state"] == "queued":
            self._update(job, state="cancelled", finished=time.time())
        elif self._running is not None and self._running[0] is job:
            self._running[1].set()
        return copy.deepcopy(job)

    async def _work(self):
        while True:
            job_id = await self._pending.get()
            if self._stopping:
                return                    # a waiting job waits for the next start
            job = self.jobs.get(job_id)
            if job is None or job["state"] != "queued":
                continue
            await self._run_job(job)

    async def _live_device(self):
        """Open the GPU anew if the device held was lost (a driver reset, a GPU fault: a lost
        device never works again); the model serving queries on it goes with it. A job or a
        query that met the loss failed; the next one runs on the new device."""
        if self.backend != "gpu" or self.device.lost is None:
            return
        lost = self.device.lost
        self.backend, self.device, self.backend_note = await pick_backend(self.wanted_backend)
        with self._lock:
            self._serving = None
        print(f"py-engine: the GPU device was lost ({lost}); now on {self.backend} "
              f"({self.backend_note})", file=sys.stderr)

    async def _job_records(self, job):
        if job["documents"]:
            ids = {i for d in job["documents"] for i in self.documents[d]["ids"] if i is not None}
            return [r async for r in self.queue.records() if r.id in ids]
        return [r async for r in self.queue.records(kind=RECORD_KINDS[job["kind"]])]

    async def _run_job(self, job):
        cancel = threading.Event()
        self._running = (job, cancel)
        self._update(job, state="running", started=time.time(), phase="reading the queue")
        try:
            if any(d not in self.documents for d in job["documents"] or ()):
                raise JobError("a document of this job was deleted before it started", 409)
            if job["model"] not in self.models:
                raise JobError(f"this server was started without the model {job['model']!r} "
                               f"(--model {job['model']}=DIR)", 409)
            await self._live_device()
            run = JobRun(job, self.models[job["model"]], self.backend, self.device,
                         await self._job_records(job), self._update,
                         lambda: cancel.is_set() or self._stopping)
            model, metrics = await run.train()
            adapter = await self._keep_adapter(job, model, metrics)
            self._update(job, state="done", finished=time.time(), phase=None, metrics=metrics,
                         adapter=adapter["id"])
        except JobCancelled:
            if self._stopping:
                self._update(job, state="interrupted", finished=time.time(), phase=None,
                             error="the server stopped while it ran; nothing of it was written")
            else:
                self._update(job, state="cancelled", finished=time.time(), phase=None)
        except (JobError, TrainingDiverged) as e:
            self._update(job, state="failed", finished=time.time(), phase=None,
                         error=f"{e}; the queue and the last good adapter are as they were")
        except Exception as e:       # noqa: BLE001 - a job's crash ends the job, not the worker
            traceback.print_exc(file=sys.stderr)
            self._update(job, state="failed", finished=time.time(), phase=None,
                         error=f"{type(e).__name__}: {e}; the queue and the last good adapter "
                               "are as they were")
        finally:
            self._running = None

    async def _keep_adapter(self, job, model, metrics):
        """Write the job's adapter (atomically, in a directory of its own), make it the
        current one, and let it answer queries."""
        adapter_id = f"adapter-{job['number']}"
        path = self.data.adapter_dir(adapter_id)
        await model.model.save(str(path))
        entry = {"id": adapter_id, "job": job["id"], "model": job["model"], "kind": job["kind"],
                 "labels": getattr(model, "labels", None),
                 "problem_type": getattr(model, "problem_type", None), "created": time.time(),
                 "metrics": metrics,
                 "files": sorted(p.name for p in path.iterdir() if not p.name.startswith("."))}
        with self._lock:
            self.adapters = {"current": adapter_id,
                             "adapters": self.adapters["adapters"] + [entry]}
        self.data.write_registry("adapters", self.adapters)
        self._serve(adapter_id, model)
        self._publish({"event": "adapter", "adapter": copy.deepcopy(entry)})
        return entry

    # --- adapters ---

    def _serve(self, adapter_id, model):
        with self._lock:
            self._serving = (adapter_id, model)  # the previous model is dropped with its weights

    def adapter_list(self):
        with self._lock:
            return copy.deepcopy(self.adapters)

    def adapter_zip(self, adapter_id):
        """The adapter's files as a zip archive (bytes)."""
        with self._lock:
            entry = self._adapter(adapter_id) if _is_id(adapter_id) else None
        if entry is None:
            raise NotFound(f"no adapter {adapter_id!r:.40}")
        path = self.data.adapter_dir(adapter_id)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for name in entry["files"]:
                z.write(path / name, f"{adapter_id}/{name}")
        return out.getvalue()

    async def delete_adapter(self, adapter_id):
        if not _is_id(adapter_id) or self._adapter(adapter_id) is None:
            raise NotFound(f"no adapter {adapter_id!r:.40}")
        if adapter_id == self.adapters["current"]:
            raise Conflict(f"{adapter_id} is the current adapter, which answers queries; train "
                           "another before deleting it")
        with self._lock:
            self.adapters = {"current": self.adapters["current"],
                             "adapters": [a for a in self.adapters["adapters"]
                                          if a["id"] != adapter_id]}
        self.data.write_registry("adapters", self.adapters)
        path = self.data.adapter_dir(adapter_id)
        if written_by_py_engine(path) is not None:       # never a directory we did not write
            shutil.rmtree(path)
        self._publish({"event": "adapter_deleted", "adapter": adapter_id})
        return {"deleted": adapter_id}

    # --- queries ---

    async def _serving_model(self):
        current = self.adapters["current"]
        if current is None:
            raise Conflict("no fine-tuned model yet: set up a job (POST /fine-tuning/setup) and "
                           "wait for it to finish")
        await self._live_device()
        if self._serving is None or self._serving[0] != current:
            entry = self._adapter(current)
            if entry["model"] not in self.models:
                raise Conflict(f"the current adapter {current} was trained on the model "
                               f"{entry['model']!r}, which this server was not started with "
                               f"(--model {entry['model']}=DIR)")
            path = self.data.adapter_dir(current)
            model = await load_model_dir(self.models[entry["model"]], entry["model"],
                                         kind=entry["kind"], labels=entry["labels"],
                                         backend=self.backend, device=self.device,
                                         problem_type=entry.get("problem_type") or SINGLE_LABEL)
            await model.load_adapter_files({p.name: p.read_bytes() for p in path.iterdir()
                                            if p.name in entry["files"]})
            self._serve(current, model)
        return self._serving

    def _serving_now(self):
        with self._lock:
            serving = self._serving
            current = self.adapters["current"]
            lost = self.backend == "gpu" and self.device.lost is not None
        return serving if serving is not None and serving[0] == current and not lost else None

    async def query(self, text, max_new_tokens=64, template_args=None):
        """The fine-tuned model's answer: a classifier's label and probabilities, or a chat
        model's (or an encoder-decoder's) reply, its chat template given `template_args`
        (awaited from the HTTP side's loop). On NumPy
        the serving model computes on a thread of its own, beside a job's training (BLAS
        releases the GIL); on the GPU it shares the engine's loop and device, and a query waits
        for the step under way. Classifier queries that arrive together are answered in one
        batch."""
        adapter_id, model = self._serving_now() or await self.run(self._serving_model())
        where = self._inference or self._engine
        if template_args and model.kind != "causal_lm":
            raise ValueError("chat_template_kwargs are for a chat model's template; the serving "
                             f"adapter is {'a classifier' if model.kind == 'classification' else 'an encoder-decoder'}")
        if model.kind == "classification":
            answer = await where.run(self._batches.ask(model, text))
            return dict(answer, adapter=adapter_id)
        result = await where.run(model.model.generate(
            model.prompt([{"role": "user", "content": text}]), max_new_tokens=max_new_tokens,
            template_args=template_args))
        return {"text": result.text, "finish_reason": result.finish_reason, "adapter": adapter_id}

    # --- documents and the dataset ---

    async def add_document(self, name, size, records):
        """Queue an uploaded document's records (cleaned as every import is)."""
        answer, ids = await clean_and_queue(self.queue, records)
        number = self._next_number("document")
        doc = {"id": f"doc-{number}", "number": number, "name": name, "bytes": size,
               "created": time.time(), "ids": ids,
               **{k: answer[k] for k in ("records", "added", "duplicates", "refused", "evicted")}}
        with self._lock:
            self.documents[doc["id"]] = doc
        self.data.write_registry("documents", self.documents)
        await self._refresh_stats()
        self._publish({"event": "document", "document": _shown(doc)})
        return dict(_shown(doc), cleaned=answer["cleaned"], examples=answer["examples"])

    def document_list(self):
        with self._lock:
            return [_shown(d) for d in sorted(self.documents.values(), key=lambda d: d["number"])]

    async def delete_document(self, doc_id):
        """Forget a document and take its records out of the queue (those another document
        also brought stay)."""
        if not _is_id(doc_id) or doc_id not in self.documents:
            raise NotFound(f"no document {doc_id!r:.40}")
        if any(j["state"] in ("queued", "running") and doc_id in (j["documents"] or ())
               for j in self.jobs.values()):
            raise Conflict(f"{doc_id} is used by a job that has not ended; cancel it first")
        others = {i for d, doc in self.documents.items() if d != doc_id for i in doc["ids"]}
        ids = [i for i in self.documents[doc_id]["ids"] if i is not None and i not in others]
        result = await self.queue.replace(ids, [])
        with self._lock:
            del self.documents[doc_id]
        self.data.write_registry("documents", self.documents)
        await self._refresh_stats()
        self._publish({"event": "document_deleted", "document": doc_id})
        return {"deleted": doc_id, "records_removed": result["removed"]}

    async def _refresh_stats(self):
        stats = await self.queue.stats()
        with self._lock:
            self._queue_stats = stats

    async def export(self, options, kind=None):
        """The queue as a dataset: `py-engine data export`'s config (ExportConfig.from_options)
        and files (dataset_files), in memory."""
        config = ExportConfig.from_options(**options)
        records = [r async for r in self.queue.records(kind=kind)]
        if not records:
            raise Conflict("the training queue is empty: nothing to export")
        result = dataset_files(records, config)
        return result


class PredictionBatches:
    """Classifier queries waiting together are answered by one pass over all of them (up to
    MAX_BATCH), on the loop that computes predictions: the throughput of one forward over many
    texts, not of many forwards."""

    MAX_BATCH = 32

    def __init__(self):
        self.waiting = []                 # (model, text, future)
        self.task = None

    async def ask(self, model, text):
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((model, text, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self):
        await asyncio.sleep(0)            # the queries that arrived together join the batch
        while self.waiting:
            model = self.waiting[0][0]
            batch = [w for w in self.waiting if w[0] is model][:self.MAX_BATCH]
            self.waiting = [w for w in self.waiting if not any(w is b for b in batch)]
            try:
                answers = await model.predict_many([text for _, text, _ in batch])
            except Exception as e:        # noqa: BLE001 - each query gets the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, _, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)


def _is_id(value):
    try:
        checked_id(value)
    except KeyError:
        return False
    return True


def _shown(doc):
    return {k: v for k, v in doc.items() if k not in ("ids", "number")}


__all__ = ["Engine", "NotFound", "Conflict", "pick_backend"]
