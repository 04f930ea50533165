"""Snapshots, quality checks and rollback: the trainer's guard against a worse model.

A SnapshotRing keeps the last N copies of the trainable tensors and their optimizer moments,
made by the runtime without a readback (GPU buffers copied on the GPU); each is listed with
its step, time and held-out quality, any one can be restored, old ones are released.

The Guard (configured by GuardConfig) uses the ring around a trainer's slices:
  - at the first slice: the held-out quality of the starting weights, and a snapshot of them;
  - after each slice: the quality again; worse than the best recent snapshot by more than the
    tolerance (or not finite) -> roll back to that snapshot; otherwise a new snapshot every
    `snapshot_every` checks;
  - after each step: a non-finite loss or gradient norm, or a norm far above the recent ones,
    rolls back at once (the trainer asks `exploded()` and calls `rollback()`).
Every rollback is an event with its reason, the step it happened at and the step it returned to.
When the held-out examples change (Guard.rebase), metrics measured on the old ones no longer
compare: the snapshots stay listed and restorable, and the next slice measures a new baseline.
"""

import math
import time

LOWER_IS_BETTER = {"loss": True, "perplexity": True, "accuracy": False, "macro_f1": False}


class Snapshot:
    __slots__ = ("index", "step", "time", "quality", "metric", "handle", "basis")

    def as_dict(self):
        return {"index": self.index, "step": self.step, "time": self.time,
                "metric": self.metric, "quality": self.quality, "basis": self.basis}


class SnapshotRing:
    def __init__(self, runtime, keep):
        self.runtime = runtime
        self.keep = keep
        self.snapshots = []
        self._next = 0

    async def take(self, step, quality=None, metric=None, basis=0):
        """Copy the trainable tensors now; the oldest snapshot beyond `keep` is released.
        basis: which held-out examples `metric` was measured on."""
        return self.add({"index": self._next, "step": step, "time": time.time(),
                         "quality": quality, "metric": metric, "basis": basis},
                        await self.runtime.snapshot())

    def add(self, listing, handle):
        """Keep a snapshot made elsewhere (a saved state's, put back on the device) under its
        listing (as list() gives it)."""
        s = Snapshot()
        s.index, s.step, s.time = listing["index"], listing["step"], listing["time"]
        s.quality, s.metric = listing.get("quality"), listing.get("metric")
        s.basis, s.handle = listing.get("basis", 0), handle
        self._next = max(self._next, s.index + 1)
        self.snapshots.append(s)
        while len(self.snapshots) > self.keep:
            self.runtime.release(self.snapshots.pop(0).handle)
        return s

    def list(self):
        return [s.as_dict() for s in self.snapshots]

    def find(self, index):
        for s in self.snapshots:
            if s.index == index:
                return s
        raise KeyError(f"no snapshot {index}; the ring holds {[s.index for s in self.snapshots]}")

    async def restore(self, index):
        """Put snapshot `index` (see list()) back into the runtime; returns it."""
        s = self.find(index)
        await self.runtime.restore(s.handle)
        return s

    def clear(self):
        for s in self.snapshots:
            self.runtime.release(s.handle)
        self.snapshots = []


class Guard:
    def __init__(self, trainer, config):
        if config.monitor not in LOWER_IS_BETTER:
            raise ValueError(f"unknown monitor {config.monitor!r}")
        self.trainer = trainer
        self.config = config
        self.ring = SnapshotRing(trainer.runtime, config.keep)
        self.norms = []
        self.checks = 0
        self.rollbacks = []
        self.check_seconds = 0.0          # the last quality check's duration, for budgets
        self.version = trainer.runtime.version
        self.basis = 0                    # bumped when the held-out examples change

    def state(self):
        """What the guard remembers beyond its snapshots (which stay on the device)."""
        return {"norms": list(self.norms), "checks": self.checks, "rollbacks": self.rollbacks[-20:],
                "basis": self.basis}

    def load_state(self, state):
        self.norms = [float(x) for x in state.get("norms", [])]
        self.checks = int(state.get("checks", 0))
        self.rollbacks = list(state.get("rollbacks", []))
        self.basis = int(state.get("basis", 0))

    def rebase(self):
        """The held-out examples changed: metrics measured before are not compared with new
        ones; the next start() measures a new baseline (and snapshots it)."""
        self.basis += 1

    def current(self):
        """The snapshots measured on the held-out examples in use."""
        return [s for s in self.ring.snapshots if s.basis == self.basis]

    def metric(self, quality):
        value = quality.get(self.config.monitor)
        if value is None:
            raise ValueError(f"the held-out quality has no {self.config.monitor!r}; it has "
                             f"{sorted(quality)}")
        return value

    def worse(self, value, best):
        """Whether `value` is worse than `best` by more than the tolerance (or not finite)."""
        if not math.isfinite(value):
            return True
        allowed = max(self.config.tolerance * abs(best), self.config.slack)
        if LOWER_IS_BETTER[self.config.monitor]:
            return value > best + allowed
        return value < best - allowed

    def best(self):
        lower = LOWER_IS_BETTER[self.config.monitor]
        pick = min if lower else max
        return pick(self.current() or self.ring.snapshots, key=lambda s: s.metric)

    async def start(self):
        """A baseline: the quality of the weights as they are, and their snapshot."""
        if self.current():
            return
        quality = await self._quality()
        step = self.trainer.progress.step
        self.trainer.emit(dict(quality, event="quality", step=step))
        await self._snapshot(step, quality)

    async def follow(self):
        """After the set of trainable tensors changed (the hybrid mode's switch to every
        weight), older snapshots no longer fit: the ring starts again from the weights now."""
        if self.trainer.runtime.version != self.version:
            self.version = self.trainer.runtime.version
            self.ring.clear()
            self.norms = []
            await self.start()

    async def _quality(self):
        started = self.trainer.clock()
        quality = await self.trainer.quality()
        self.check_seconds = self.trainer.clock() - started
        return quality

    async def _snapshot(self, step, quality):
        s = await self.ring.take(step, quality, self.metric(quality), self.basis)
        self.trainer.emit({"event": "snapshot", "index": s.index, "step": step, "metric": s.metric})
        return s

    def exploded(self, norm):
        """Whether a step's gradient norm is a divergence; accepted norms are remembered."""
        c = self.config
        if c.grad_norm_limit is not None and norm > c.grad_norm_limit:
            return True
        if len(self.norms) >= c.warmup_steps:
            median = sorted(self.norms)[len(self.norms) // 2]
            if median > 0 and norm > c.grad_norm_factor * median:
                return True
        self.norms = (self.norms + [norm])[-50:]
        return False

    async def check(self, report):
        """Held-out quality after a slice; rolls back when it fell, else snapshots on cadence."""
        trainer = self.trainer
        quality = await self._quality()
        step = trainer.progress.step
        trainer.emit(dict(quality, event="quality", step=step))
        value, best = self.metric(quality), self.best()
        if self.worse(value, best.metric):
            report.rollbacks.append(await self.rollback(
                f"held-out {self.config.monitor} {value:.4g} is worse than {best.metric:.4g} "
                f"(step {best.step}) by more than {self.config.tolerance:.0%}"))
            return quality
        self.checks += 1
        if self.checks % self.config.snapshot_every == 0:
            await self._snapshot(step, quality)
        return quality

    async def rollback(self, reason):
        best = self.best()
        await self.ring.restore(best.index)
        event = {"event": "rollback", "reason": reason, "step": self.trainer.progress.step,
                 "to_step": best.step, "snapshot": best.index, "metric": best.metric}
        self.rollbacks.append(event)
        self.trainer.emit(event)
        return event
