"""Learner: a model learning from the training queue, a slice at a time, and keeping its state.

    learner = Learner(model, queue, store, emit)      # model: an AppModel (app/models.py)
    await learner.restore()                           # the saved state, if there is one
    report = await learner.slice(budget_ms, stop)     # TrainingScheduler's run_slice
    await learner.save()                              # now; maybe_save() on a cadence

Before each slice (between optimizer steps) it takes what arrived in the queue (WorkingSet:
held-out records for the guard, the others leased) and, when records arrived or a generation is
done, trains on the records not yet learned as a new generation (Trainer.replace_data). A
guard (snapshots, quality checks, rollback) runs once there are held-out records. Micro-batches
are chosen by a BatchManager. Saving writes the adapter, the optimizer state, where training
stands, the snapshots (read back from the device), the working set and the history into the
state store, in one write; then the leases whose records were all learned are acknowledged.

Pure Python: this runs in the browser.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field

from ..train import state as training_state
from ..train.config import GuardConfig
from .batches import BatchConfig, BatchManager
from .working_set import WorkingSet

WORKING_SET_FILE = "working_set.json"
LEARNER_FILE = "learner.json"
APP_FILE_PREFIX = "app-"          # the app's own files, kept in the state's writes (app_files)


@dataclass
class LearnerConfig:
    """save_every_s: seconds between saves after slices (when steps were taken); refresh_s:
    seconds between looks at the queue for records others added; replay: records learned
    before (and background ones) mixed into a generation per new record; guard: snapshots,
    quality checks and rollback; train: options of the model's training config (epochs, lr,
    ...)."""

    save_every_s: float = 30.0
    refresh_s: float = 5.0
    replay: int = 1
    guard: GuardConfig = field(default_factory=lambda: GuardConfig(keep=5, tolerance=0.1))
    train: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("save_every_s", "refresh_s"):
            value = getattr(self, name)
            # finite: a NaN or endless save_every_s would never save what was learned
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


class Learner:
    def __init__(self, model, queue, store, emit=None, config=None, batches=None,
                 clock=time.monotonic):
        self.model, self.queue, self.store = model, queue, store
        self.emit = emit or (lambda event: None)
        self.config = config or LearnerConfig()
        self.clock = clock
        self.train_config = model.train_config(**self.config.train)
        self.work = WorkingSet(self.train_config.epochs)
        self.work.replay = self.config.replay
        self.manager = BatchManager.for_runtime(model.runtime, batches or BatchConfig())
        self.trainer = None
        self.dirty = True                 # the queue changed: look before the next slice
        self.last_refresh = None
        self.last_save = clock()
        self.unsaved = False              # steps (or a restore) since the last save
        self.saves = 0
        self.idle_reason = "nothing to learn yet"
        # {name starting with APP_FILE_PREFIX: bytes}: what the app keeps with the model (the
        # meaning of its labels, say), written in the same write as the weights it goes with
        self.app_files = {}

    def set_background(self, records):
        """Records the model learned before (Records with negative ids: never the queue's),
        replayed with what it learns here; those it cannot learn (a label it no longer has)
        are left out."""
        self.work.background = [r for r in records if self.model.unusable(r) is None]

    # --- the queue ---

    def queue_changed(self):
        """Records were put into the queue: take them before the next slice."""
        self.dirty = True

    async def refresh(self):
        """Take what the queue holds (between optimizer steps) and start a new generation
        when records arrived or the current one is done. Returns whether there is training
        to do."""
        trainer = self.trainer
        if trainer is not None and trainer.mid_step:
            return True                   # the step under way comes first
        now = self.clock()
        due = self.dirty or self.last_refresh is None or now - self.last_refresh >= self.config.refresh_s
        if not due and not (trainer is not None and trainer.done):
            return trainer is not None and not trainer.done
        arrived, validation_changed = await self.work.refresh(self.queue, self.model.record_kind,
                                                              self.model.unusable)
        self.dirty, self.last_refresh = False, now
        config = self.train_config
        validation = self.model.encoded(self.work.validation, config) if self.work.validation else []
        if arrived or trainer is None or trainer.done:
            records = self.work.start_generation()
            if not records:
                self.idle_reason = "every record has been learned" if trainer else \
                    "nothing to learn yet"
                if trainer is not None and validation_changed and validation:
                    trainer.replace_validation(validation)
                return False
            if trainer is None:
                self.trainer = await self._make_trainer(records)
            else:
                if trainer.config is not config:        # reconfigured: from this generation on
                    trainer.config, trainer.base_lr = config, config.lr
                # AdamW's moments carry on: fresh ones move every weight by about lr at the
                # first steps, and a generation of one correction then undoes what was learned
                # (the guard rolls it back); carried ones scale its steps by the gradients seen
                await trainer.replace_data(self.model.encoded(records, config),
                                           validation if validation_changed else None)
        elif validation_changed and validation:
            trainer.replace_validation(validation)
        if validation and self.trainer.guard is None:
            self.trainer.enable_guard(self.config.guard)
        self.idle_reason = None
        return True

    async def _make_trainer(self, records):
        guard = self.config.guard if self.work.validation else None
        trainer = await self.model.trainer(self.model.examples(records), self.train_config,
                                     self.model.examples(self.work.validation) or None, guard)
        return self._attach(trainer)

    def _attach(self, trainer):
        trainer.batch_manager = self.manager
        trainer.subscribe(self._on_event)
        return trainer

    def _on_event(self, event):
        if event["event"] == "step":
            self.work.count_step(self.trainer.last_indices)
            self.unsaved = True
        elif event["event"] in ("rollback", "restore"):
            self.unsaved = True
            if event["event"] == "rollback":
                self.work.taint_generation()
        self.emit(event)

    # --- training ---

    async def slice(self, budget_ms, stop=None):
        """The scheduler's run_slice: take new records, then train for at most budget_ms
        (ending within one micro-batch of it), generation after generation while time is left;
        None when there is nothing to train."""
        started, total = self.clock(), None
        while await self.refresh():
            left = None
            if budget_ms is not None:
                left = budget_ms - (self.clock() - started) * 1000.0
                if left <= 0:
                    break
            report = await self.trainer.run(budget_ms=left, stop=stop)
            total = report if total is None else _added(total, report)
            if not report.done or report.stopped or report.rollbacks or not report.steps:
                break
            await self._recheck_corrections()
        return total

    async def _recheck_corrections(self):
        """After a generation: the corrections in it that the model still gets wrong are
        trained on again (a few rounds at most): the user asked for them to be learned."""
        if self.model.kind != "classification":
            return
        seen = set()
        for record in self.work.generation:
            if record.source != "correction" or record.id in seen:
                continue
            seen.add(record.id)
            if (await self.model.predict(record.text))["label"] != record.label:
                self.work.relearn(record.id)

    def configure(self, **options):
        """Training options (the model's config: epochs, lr, batch_size, ...) from the next
        generation on; checked now."""
        config = self.model.train_config(**dict(self.config.train, **options))
        self.config.train = dict(self.config.train, **options)
        self.train_config = config
        self.work.epochs = config.epochs

    async def close(self):
        """Done with this learner (the model is unloaded, relabelled or reset): the step under
        way is finished, the trainer released and the records it leased given back to the
        queue. Nothing is saved: save() first to keep what was learned."""
        if self.trainer is not None:
            await self.trainer.finish_step()
            self.trainer.close()
            self.trainer = None
        await self.work.release(self.queue)

    # --- saving and restoring ---

    async def maybe_save(self):
        """Save when steps were taken and save_every_s has passed since the last save."""
        if self.unsaved and self.clock() - self.last_save >= self.config.save_every_s:
            return await self.save()
        return None

    def _meta(self):
        return {"model": self.model.summary(), "config": {"save_every_s": self.config.save_every_s,
                                                          "train": self.config.train,
                                                          "guard": asdict(self.config.guard)}}

    async def save(self):
        """Write everything into the state store (one write), then acknowledge the learned
        records. A step under way is finished first. Returns {"saved", "consumed"}."""
        trainer = self.trainer
        extra = {WORKING_SET_FILE: _json_bytes(self.work.as_json()),
                 LEARNER_FILE: _json_bytes(self._meta()), **self.app_files}
        if trainer is None:
            files = dict(await self.model.adapter_files(), **extra)
            await training_state.as_store(self.store).save(files)
        else:
            await trainer.finish_step()
            if trainer.guard is not None:
                extra[training_state.SNAPSHOTS_FILE] = \
                    await training_state.capture_snapshots(trainer.guard)
            await self.model.save_state(trainer, self.store, extra)
        consumed = await self.work.consume(self.queue)
        self.last_save, self.unsaved = self.clock(), False
        self.saves += 1
        event = {"event": "saved", "step": 0 if trainer is None else trainer.progress.step,
                 "consumed": consumed}
        self.emit(event)
        return {"saved": True, "consumed": consumed}

    async def restore(self):
        """Put the saved state back (weights, optimizer state, where training stands,
        snapshots, working set, history); False when there is none."""
        try:
            files = await training_state.as_store(self.store).load()
        except training_state.StateError:
            return False
        self.app_files = {n: bytes(b) for n, b in files.items() if n.startswith(APP_FILE_PREFIX)}
        if WORKING_SET_FILE in files:
            data = json.loads(bytes(files[WORKING_SET_FILE]).decode("utf-8"))
            background = self.work.background
            self.work = WorkingSet.from_json(data, self.train_config.epochs)
            self.work.background, self.work.replay = background, self.config.replay
        if training_state.STATE_FILE in files:
            work = self.work
            validation = self.model.examples(work.validation) or None
            trainer = await self.model.restore_state(self.store,
                                                     self.model.examples(work.generation),
                                                     validation)
            self.train_config = trainer.config
            self.trainer = self._attach(trainer)
            if trainer.guard is not None and training_state.SNAPSHOTS_FILE in files:
                await training_state.restore_snapshots(trainer.guard,
                                                       files[training_state.SNAPSHOTS_FILE])
        else:
            await self.model.load_adapter_files(files, "the saved adapter")
        self.dirty, self.unsaved = True, False
        self.emit({"event": "restored", "step": 0 if self.trainer is None else
                   self.trainer.progress.step})
        return True

    # --- what the page shows ---

    def snapshots(self):
        if self.trainer is None or self.trainer.guard is None:
            return []
        basis = self.trainer.guard.basis
        return [dict(s, current=s["basis"] == basis) for s in self.trainer.guard.ring.list()]

    def rollbacks(self):
        if self.trainer is None or self.trainer.guard is None:
            return []
        return list(self.trainer.guard.rollbacks)

    async def restore_snapshot(self, index):
        if self.trainer is None or self.trainer.guard is None:
            raise ValueError("there are no snapshots yet (they start once records are held out "
                             "for checking)")
        return await self.trainer.restore_snapshot(index)

    def history(self, last=200):
        return [] if self.trainer is None else [s.as_dict() for s in self.trainer.history[-last:]]

    def status(self):
        trainer = self.trainer
        out = {"step": 0, "loss": None, "lr": None, "grad_norm": None, "examples_per_s": None,
               "tokens_per_s": None, "done": trainer is None or trainer.done,
               "mid_step": trainer is not None and trainer.mid_step,
               "idle_reason": self.idle_reason, "data": self.work.counts(),
               "batches": self.manager.status(), "saves": self.saves, "unsaved": self.unsaved}
        if trainer is not None:
            out["step"] = trainer.progress.step
            out["epoch"] = trainer.progress.epoch
            out["total_steps"] = trainer.total_steps
            if trainer.history:
                last = trainer.history[-1]
                out.update(loss=last.loss, lr=last.lr, grad_norm=last.grad_norm,
                           tokens_per_s=last.tokens_per_s,
                           examples_per_s=last.examples / last.seconds if last.seconds else None)
        return out


def _added(total, report):
    """One slice's report for two runs of the trainer in a row."""
    total.steps += report.steps
    total.seconds += report.seconds
    total.micro_batches += report.micro_batches
    total.rollbacks = total.rollbacks + report.rollbacks
    total.quality = report.quality if report.quality is not None else total.quality
    total.done, total.stopped, total.interrupted = report.done, report.stopped, report.interrupted
    return total


def _json_bytes(value):
    return (json.dumps(value, sort_keys=True) + "\n").encode("utf-8")
