"""One training loop for every model and task, run in slices.

    trainer = Trainer(runtime, task, examples, TrainConfig(epochs=3), validation=held_out,
                      guard=GuardConfig())
    report = await trainer.run(budget_ms=200)     # whole optimizer steps that fit in 200 ms
    ...                                           # later, or after a reload (see state.py)
    report = await trainer.run()                  # the rest

The loop, once: an epoch plan (batches bucketed by length, seeded per epoch), gradient
accumulation over `grad_accum` batches per optimizer step, transformers' linear warmup/decay
schedule, one dropout seed per (step, micro-batch), observers called on every event, and
evaluations every `eval_every` steps for hooks such as the hybrid mode's plateau switch.
Everything random is a function of (config.seed, epoch, step), so where the loop stands
(epoch, step, the batch group within the epoch) is all it needs to resume exactly: a run cut
into slices of any sizes, saved and restored in between or not, trains the same weights.

With a guard (GuardConfig) the trainer keeps a ring of snapshots, checks held-out quality after
each slice and rolls back to the best recent snapshot when quality falls past the tolerance,
the loss turns non-finite or the gradient norm explodes; every rollback is an event with its
reason. Without one, a non-finite loss stops training with TrainingDiverged.
"""

import math
import time

from .batching import plan_epoch
from .guard import Guard
from .schedule import linear_warmup_decay


class TrainingDiverged(ValueError):
    """The loss or gradient norm became non-finite and no snapshot could be restored; `what`
    says where and how, without advice."""

    def __init__(self, message, what):
        super().__init__(message)
        self.what = what


class Step:
    """What one optimizer step reports."""

    __slots__ = ("step", "epoch", "loss", "grad_norm", "lr", "examples", "tokens",
                 "examples_seen", "tokens_seen", "tokens_per_s", "seconds", "accuracy",
                 "trained_tokens")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__
                if getattr(self, name) is not None}

    def __repr__(self):
        return f"Step({self.step}, loss={self.loss:.4f}, grad_norm={self.grad_norm:.4f})"


class Progress:
    """Where the loop stands: steps done, the epoch, the step groups done within it, totals."""

    FIELDS = ("step", "epoch", "cursor", "examples_seen", "tokens_seen")

    def __init__(self, step=0, epoch=0, cursor=0, examples_seen=0, tokens_seen=0):
        self.step, self.epoch, self.cursor = step, epoch, cursor
        self.examples_seen, self.tokens_seen = examples_seen, tokens_seen

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data):
        bad = [k for k in cls.FIELDS if isinstance(data.get(k), bool) or not isinstance(data.get(k), int)
               or data[k] < 0]
        if bad:
            raise ValueError(f"training progress has invalid {', '.join(bad)}")
        return cls(**{k: data[k] for k in cls.FIELDS})


class Slice:
    """What one run() did: steps taken, time spent, the quality check, rollbacks, and whether
    training is finished."""

    __slots__ = ("steps", "seconds", "quality", "rollbacks", "done", "stopped")

    def __init__(self):
        self.steps, self.seconds, self.quality, self.rollbacks = 0, 0.0, None, []
        self.done = self.stopped = False

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}


class Trainer:
    def __init__(self, runtime, task, examples, config, validation=None, guard=None,
                 eval_every=None, clock=time.perf_counter):
        """examples: encoded examples for `task`; validation: held-out ones (quality checks,
        evaluation hooks); guard: a GuardConfig to check quality and roll back, or None;
        clock: seconds, for step times and budgets."""
        if not examples:
            raise ValueError("the dataset is empty")
        self.runtime, self.task, self.examples, self.config = runtime, task, list(examples), config
        self.validation = list(validation) if validation else []
        self.lengths = task.lengths(self.examples)
        batches = math.ceil(len(self.examples) / config.batch_size)
        self.steps_per_epoch = math.ceil(batches / config.grad_accum)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = int(config.warmup_ratio * self.total_steps)
        self.base_lr = config.lr
        self.eval_every = eval_every
        self.progress = Progress()
        self.history = []
        self.events = []
        self._observers = []
        self._evaluation_hooks = []
        self._plans = {}
        self._durations = []
        self._finished = False
        self.clock = clock
        if guard is not None and not self.validation:
            raise ValueError("a guard checks held-out quality: give validation examples")
        self.guard = Guard(self, guard) if guard is not None else None

    # --- observers ---

    def subscribe(self, observer):
        """Call observer(event) for every event: {"event": "step" | "quality" | "snapshot" |
        "rollback" | "slice" | ..., ...}. Returns a function that unsubscribes it."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def emit(self, event):
        if event["event"] != "step":
            self.events.append(event)
        for observer in list(self._observers):
            observer(event)

    def on_evaluation(self, hook):
        """await hook(trainer, quality) after each evaluation every `eval_every` steps (and
        after the last step); a hook returning True stops training. A hook with a `finish`
        coroutine has it awaited once when training ends."""
        self._evaluation_hooks.append(hook)

    async def _finish(self):
        self._finished = True
        if self.eval_every and self.progress.step % self.eval_every and self.history:
            await self.evaluate_hooks()          # the last steps get their evaluation too
        for hook in self._evaluation_hooks:
            if hasattr(hook, "finish"):
                await hook.finish(self)

    # --- the data plan ---

    @property
    def done(self):
        return self.progress.step >= self.total_steps

    def _plan(self, epoch):
        if epoch not in self._plans:
            self._plans = {epoch: plan_epoch(self.lengths, self.config.batch_size, self.config.seed, epoch)}
        return self._plans[epoch]

    def _group(self):
        """The batches (lists of example indices) of the next optimizer step."""
        plan, a = self._plan(self.progress.epoch), self.config.grad_accum
        return plan[self.progress.cursor * a:(self.progress.cursor + 1) * a]

    def _advance(self, examples, tokens):
        p = self.progress
        p.step += 1
        p.examples_seen += examples
        p.tokens_seen += tokens
        p.cursor += 1
        if p.cursor >= self.steps_per_epoch:
            p.epoch, p.cursor = p.epoch + 1, 0

    def lr(self, step):
        """The learning rate of optimizer step `step` (0-based)."""
        return linear_warmup_decay(step, self.base_lr, self.warmup_steps, self.total_steps)

    def seed(self, step, micro=0):
        """The dropout seed of a micro-batch: a function of the config's seed and the step."""
        return self.config.seed * 7919 + step * 131 + micro

    def batch(self, indices):
        c = self.config
        return self.task.batch(self.examples, indices, c.pad_multiple, c.max_length)

    # --- training ---

    async def step(self):
        """One optimizer step; returns its Step record (not yet counted when it diverged)."""
        c, p, runtime = self.config, self.progress, self.runtime
        started = self.clock()
        group = [self.batch(indices) for indices in self._group()]
        lr = self.lr(p.step)
        if len(group) == 1:
            # One submission and one readback for the whole optimizer step on the GPU.
            metrics = await runtime.train_step(group[0], seed=self.seed(p.step), lr=lr,
                                               max_norm=c.max_grad_norm, weight_decay=c.weight_decay)
        else:
            metrics = {"loss": 0.0, "correct": 0, "counted": 0}
            for micro, batch in enumerate(group):
                m = await runtime.accumulate(batch, seed=self.seed(p.step, micro),
                                             loss_scale=1.0 / len(group))
                metrics["loss"] += m["loss"] / len(group)
                metrics["correct"] += m.get("correct", 0)
                metrics["counted"] += m["counted"]
            metrics["grad_norm"] = await runtime.update(lr, c.max_grad_norm, c.weight_decay)
        seconds = self.clock() - started
        examples = sum(b.B for b in group)
        tokens = sum(sum(map(sum, b.mask)) for b in group)
        record = Step(step=p.step + 1, epoch=p.epoch, loss=float(metrics["loss"]),
                      grad_norm=float(metrics["grad_norm"]), lr=lr, examples=examples,
                      tokens=tokens, examples_seen=p.examples_seen + examples,
                      tokens_seen=p.tokens_seen + tokens, seconds=seconds,
                      tokens_per_s=tokens / seconds if seconds > 0 else None,
                      **self.task.step_fields(metrics, group[0]))
        return record

    async def run(self, budget_ms=None, max_steps=None):
        """Train whole optimizer steps until `max_steps` are done, the next step would not fit
        in `budget_ms` (judged from the measured step time; with no measurement yet, one step
        runs to take it), training ends, or an evaluation hook stops it. Then, with a guard,
        check held-out quality (and roll back if it fell). Returns a Slice."""
        if budget_ms is not None and not budget_ms >= 0:
            raise ValueError(f"budget_ms must be >= 0, got {budget_ms}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                      or max_steps < 0):
            raise ValueError(f"max_steps must be a whole number >= 0, got {max_steps!r}")
        report = Slice()
        if self._finished:
            report.done = True
            return report
        started = self.clock()
        if self.guard is not None:
            await self.guard.start()
        while not self.done and not report.stopped:
            if max_steps is not None and report.steps >= max_steps:
                break
            if budget_ms is not None and not self._fits(budget_ms, started):
                break
            record = await self.step()
            self._durations = (self._durations + [record.seconds])[-8:]
            if not (math.isfinite(record.loss) and math.isfinite(record.grad_norm)):
                await self._diverged(record, report, "the loss or gradient norm is not finite")
                break
            if self.guard is not None and self.guard.exploded(record.grad_norm):
                await self._diverged(record, report, "the gradient norm exploded")
                break
            self._advance(record.examples, record.tokens)
            self.history.append(record)
            self.emit(dict(record.as_dict(), event="step"))
            report.steps += 1
            if self.eval_every and self.progress.step % self.eval_every == 0:
                report.stopped = await self.evaluate_hooks()
                if self.guard is not None:
                    await self.guard.follow()     # a hook may have changed what trains
        if self.guard is not None and report.steps and not report.rollbacks:
            report.quality = await self.guard.check(report)
        report.done = self.done or report.stopped
        if report.done and not self._finished:
            await self._finish()
        report.seconds = self.clock() - started
        self.emit({"event": "slice", "steps": report.steps, "seconds": report.seconds,
                   "step": self.progress.step, "done": report.done,
                   "rollbacks": len(report.rollbacks)})
        return report

    def _fits(self, budget_ms, started):
        """Whether one more step, and the guard's quality check after the slice, fit."""
        if not self._durations:
            return budget_ms > 0
        estimate = sorted(self._durations)[len(self._durations) // 2]
        if self.guard is not None:
            estimate += self.guard.check_seconds
        return (self.clock() - started + estimate) * 1000.0 <= budget_ms

    async def _diverged(self, record, report, reason):
        """A step gave a non-finite loss or an exploded gradient norm: its update is undone by
        restoring a snapshot (with a guard), else training stops with an error."""
        if self.guard is None:
            what = (f"training diverged at step {record.step}: loss {record.loss:.4g}, gradient "
                    f"norm {record.grad_norm:.4g}: {reason}")
            raise TrainingDiverged(f"{what}; lower the learning rate (the weights are no longer "
                                   "finite and will not be saved)", what)
        self._advance(record.examples, record.tokens)     # the poisoned batches are skipped
        report.rollbacks.append(await self.guard.rollback(f"{reason} at step {record.step} "
                                                          f"(loss {record.loss:.4g}, gradient "
                                                          f"norm {record.grad_norm:.4g})"))

    def close(self):
        """Release what the trainer holds on the device (the guard's snapshots)."""
        if self.guard is not None:
            self.guard.ring.clear()

    async def fit(self):
        """Train to the end in one go; returns the step records."""
        while not self._finished:
            await self.run()
        return self.history

    # --- evaluation ---

    async def quality(self, examples=None, batch_size=16):
        """Held-out quality of the current weights (validation examples by default)."""
        examples = examples or self.validation
        if not examples:
            raise ValueError("no held-out examples to evaluate")
        return await self.task.evaluate(self.runtime, examples, self.config.pad_multiple,
                                        self.config.max_length, batch_size)

    async def evaluate_hooks(self):
        quality = await self.quality()
        self.emit(dict(quality, event="evaluation", step=self.progress.step))
        stop = False
        for hook in self._evaluation_hooks:
            stop = bool(await hook(self, quality)) or stop
        return stop

    # --- state ---

    def state(self):
        """Where the loop stands, as JSON-ready values (see state.py for the whole state)."""
        return {"progress": self.progress.as_dict(), "base_lr": self.base_lr,
                "total_steps": self.total_steps, "history": [s.as_dict() for s in self.history[-100:]],
                "events": self.events[-100:],
                "guard": None if self.guard is None else self.guard.state()}

    def load_state(self, state):
        progress = Progress.from_dict(state["progress"])
        if progress.step > self.total_steps or progress.cursor >= max(1, self.steps_per_epoch):
            raise ValueError(f"the saved progress (step {progress.step}) does not fit this run of "
                             f"{self.total_steps} steps")
        self.progress = progress
        self.base_lr = float(state.get("base_lr", self.base_lr))
        self.history[:] = [Step(**s) for s in state.get("history", [])]
        self.events = list(state.get("events", []))
        if self.guard is not None and state.get("guard"):
            self.guard.load_state(state["guard"])
