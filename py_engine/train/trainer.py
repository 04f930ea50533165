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

Micro-batches: with a batch manager (py_engine.app.batches.BatchManager, or anything with its
rows() and observe()), each planned batch may run as micro-batches of a few rows, chosen before
each one from the measured time and the budget left, so a slice ends close to its deadline. A
micro-batch's loss is scaled by its share of the planned batch's loss denominator
(task.denominator), so the gradient accumulated on the device equals the whole batch's (within
rounding; dropout masks are drawn per micro-batch). A slice may end between micro-batches; the
step goes on at the next run(), and a step under way is never saved (state.py refuses).
Without a manager, or when it picks the whole batch, steps run whole (grad_accum 1: one fused
submission), exactly as planned. `stop` (run's argument) ends a slice at the next micro-batch
boundary: inference first.
"""

import math
import time

from .batching import plan_epoch
from .guard import Guard
from .schedule import learning_rate

MICRO_SEED_STRIDE = 1_000_003   # dropout seeds of a planned batch's later micro-batches


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
    """Where the loop stands: steps done, the epoch, the step groups done within it, totals,
    and the step at which the current examples began (0 unless replace_data() changed them)."""

    FIELDS = ("step", "epoch", "cursor", "examples_seen", "tokens_seen", "start")

    def __init__(self, step=0, epoch=0, cursor=0, examples_seen=0, tokens_seen=0, start=0):
        self.step, self.epoch, self.cursor = step, epoch, cursor
        self.examples_seen, self.tokens_seen = examples_seen, tokens_seen
        self.start = start

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data):
        data = dict({"start": 0}, **data)      # states saved before `start` existed
        bad = [k for k in cls.FIELDS if isinstance(data.get(k), bool) or not isinstance(data.get(k), int)
               or data[k] < 0]
        if bad or data["start"] > data["step"]:
            raise ValueError(f"training progress has invalid {', '.join(bad) or 'start'}")
        return cls(**{k: data[k] for k in cls.FIELDS})


class StepWork:
    """An optimizer step under way: its planned batches (and their example indices), the
    planned batch and row it has reached, the micro-batches run of the current batch, and the
    metrics and seconds so far."""

    def __init__(self, indices, batches, denominators):
        self.indices, self.batches, self.denominators = indices, batches, denominators
        self.restart()

    def restart(self):
        """From the first row again (the accumulated gradients were dropped)."""
        self.index = self.row = self.part = 0
        self.metrics = {"loss": 0.0, "correct": 0, "counted": 0}
        self.seconds = 0.0

    @property
    def started(self):
        return self.index > 0 or self.row > 0

    @property
    def finished(self):
        return self.index >= len(self.batches)


class Slice:
    """What one run() did: steps taken, time spent, the quality check, rollbacks, and whether
    training is finished."""

    __slots__ = ("steps", "seconds", "quality", "rollbacks", "done", "stopped", "interrupted",
                 "micro_batches")

    def __init__(self):
        self.steps, self.seconds, self.quality, self.rollbacks = 0, 0.0, None, []
        self.done = self.stopped = self.interrupted = False      # stopped: by a hook, for good
        self.micro_batches = 0

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}


def _latched(stop):
    """stop, remembering once it said True (it may count its calls)."""
    if stop is None:
        return None
    said = []

    def latched():
        if not said and stop():
            said.append(True)
        return bool(said)
    return latched


class Trainer:
    def __init__(self, runtime, task, examples, config, validation=None, guard=None,
                 eval_every=None, clock=time.perf_counter, batch_manager=None):
        """examples: encoded examples for `task`; validation: held-out ones (quality checks,
        evaluation hooks); guard: a GuardConfig to check quality and roll back, or None;
        clock: seconds, for step times and budgets; batch_manager: chooses micro-batches (see
        the module docstring), None for whole batches."""
        if not examples:
            raise ValueError("the dataset is empty")
        self.runtime, self.task, self.config = runtime, task, config
        self.validation = list(validation) if validation else []
        self.base_lr = config.lr
        self.eval_every = eval_every
        self.progress = Progress()
        self._use(examples)
        self.history = []
        self.events = []
        self._observers = []
        self._evaluation_hooks = []
        self._durations = []
        self._finished = False
        self._work = None             # the optimizer step under way (StepWork), if any
        self._slice_micro = 0         # micro-batches run in the current run()
        self._unchecked = False       # steps since the last quality check (a slice interrupted)
        self.last_indices = []        # example indices of the last step taken
        self.clock = clock
        self.batch_manager = batch_manager
        if guard is not None and not self.validation:
            raise ValueError("a guard checks held-out quality: give validation examples")
        self.guard = Guard(self, guard) if guard is not None else None

    def _use(self, examples):
        """Train on `examples` from progress.start on: the epoch plan and the schedule."""
        self.examples = list(examples)
        self.lengths = self.task.lengths(self.examples)
        batches = math.ceil(len(self.examples) / self.config.batch_size)
        self.steps_per_epoch = math.ceil(batches / self.config.grad_accum)
        steps = self.run_steps
        self.total_steps = self.progress.start + steps
        self.warmup_steps = self.config.warmup_steps or int(self.config.warmup_ratio * steps)
        self._plans = {}

    async def replace_data(self, examples, validation=None, fresh_optimizer=False):
        """Train on other examples from the next optimizer step on (a dataset that grew or
        changed): a new epoch plan over them, `epochs` epochs from this step, the schedule
        starting again, and with `fresh_optimizer` AdamW's moments too (a new short run whose
        first steps do not follow the last run's momentum). `validation`, when given, replaces
        the held-out examples, and the guard measures against them from now on (see
        Guard.rebase). Only between optimizer steps: finish a step under way first
        (finish_step())."""
        if self.mid_step:
            raise RuntimeError("the training data can only change between optimizer steps: "
                               "finish the step under way first (finish_step())")
        if not examples:
            raise ValueError("the dataset is empty")
        p = self.progress
        if p.cursor:                  # a fresh plan: the next epoch's shuffle
            p.epoch, p.cursor = p.epoch + 1, 0
        p.start = p.step
        self._work = None
        self._use(examples)
        self._finished = False
        if fresh_optimizer:
            await self.runtime.reset_optimizer()
        if validation is not None:
            self.replace_validation(validation)

    def replace_validation(self, validation):
        """Check quality on other held-out examples from now on; the guard measures a new
        baseline on them (Guard.rebase)."""
        self.validation = list(validation)
        if self.guard is not None:
            self.guard.rebase()

    def enable_guard(self, config):
        """Check quality and roll back from now on (needs validation examples)."""
        if self.guard is None:
            if not self.validation:
                raise ValueError("a guard checks held-out quality: give validation examples")
            self.guard = Guard(self, config)
        return self.guard

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
    def run_steps(self):
        """The optimizer steps of a run: max_steps where given (the epoch plan goes round as
        often as it takes), else `epochs` epochs'."""
        return self.config.max_steps or self.steps_per_epoch * self.config.epochs

    @property
    def done(self):
        return self.progress.step >= self.total_steps

    @property
    def mid_step(self):
        """Whether an optimizer step has accumulated gradients that its update has not used."""
        return self._work is not None and self._work.started

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
        start = self.progress.start
        return learning_rate(step - start, self.base_lr, self.warmup_steps,
                             self.total_steps - start, self.config.lr_scheduler_type,
                             self.config.lr_scheduler_kwargs)

    def adam(self):
        """The config's AdamW options, as the runtimes' update() names them."""
        c = self.config
        return {"beta1": c.adam_beta1, "beta2": c.adam_beta2, "eps": c.adam_epsilon}

    def seed(self, step, micro=0):
        """The dropout seed of a micro-batch: a function of the config's seed and the step."""
        return self.config.seed * 7919 + step * 131 + micro

    def batch(self, indices):
        c = self.config
        return self.task.batch(self.examples, indices, c.pad_multiple, c.max_length)

    # --- training ---

    async def step(self, budget_ms=None, started=None, stop=None):
        """Run the optimizer step under way (or the next one) to its end and return its Step
        record (not yet counted when it diverged); or None when `stop()` or the budget ended
        it between micro-batches first (it goes on at the next call)."""
        c, p, runtime = self.config, self.progress, self.runtime
        entered = self.clock()
        started = entered if started is None else started
        if self._work is None:
            indices = self._group()
            batches = [self.batch(i) for i in indices]
            self._work = StepWork(indices, batches, [self.task.denominator(b) for b in batches])
        work = self._work
        try:
            fused = False
            while not work.finished:
                if stop is not None and stop():
                    return None
                rows = self._rows(work, budget_ms, started)
                if rows is None:
                    return None
                batch = work.batches[work.index]
                if len(work.batches) == 1 and not work.started and rows == batch.B:
                    # One submission and one readback for the whole optimizer step on the GPU.
                    fused = await self._fused(work)
                else:
                    await self._micro(work, rows)
            if not fused:
                work.metrics["grad_norm"] = await runtime.update(self.lr(p.step), c.max_grad_norm,
                                                                 c.weight_decay, **self.adam())
        finally:
            work.seconds += self.clock() - entered
        self._work = None
        return self._record(work)

    def _rows(self, work, budget_ms, started):
        """Rows of the current planned batch for the next micro-batch (None: none fits)."""
        left = work.batches[work.index].B - work.row
        if self.batch_manager is None:
            return left
        seconds_left = None
        if budget_ms is not None:
            reserve = self.guard.check_seconds if self.guard is not None else 0.0
            seconds_left = budget_ms / 1000.0 - (self.clock() - started) - reserve
        first = self._slice_micro == 0 and (budget_ms is None or budget_ms > 0)
        return self.batch_manager.rows(left, work.batches[work.index].T, seconds_left,
                                       whole=work.row == 0, first=first)

    async def _timed(self, work, rows, call):
        """Await call(); the batch manager learns its time."""
        begun = self.clock()
        metrics = await call
        self._slice_micro += 1
        if self.batch_manager is not None:
            self.batch_manager.observe(rows, work.batches[work.index].T, self.clock() - begun)
        return metrics

    async def _fused(self, work):
        c, p = self.config, self.progress
        batch = work.batches[0]
        call = self.runtime.train_step(batch, seed=self.seed(p.step), lr=self.lr(p.step),
                                       max_norm=c.max_grad_norm, weight_decay=c.weight_decay,
                                       **self.adam())
        work.metrics = dict(await self._timed(work, batch.B, call))
        work.index, work.row = 1, 0
        return True

    async def _micro(self, work, rows):
        """Forward and backward of the next `rows` rows of the current planned batch, their
        loss scaled by their share of its denominator (over the step's planned batches)."""
        p, n = self.progress, len(work.batches)
        batch = work.batches[work.index]
        whole = work.row == 0 and rows == batch.B
        part = batch if whole else batch.rows(work.row, work.row + rows)
        total = work.denominators[work.index]
        share = 1.0 if whole else (self.task.denominator(part) / total if total else 0.0)
        seed = self.seed(p.step, work.index) + (0 if whole else MICRO_SEED_STRIDE * (work.part + 1))
        m = await self._timed(work, rows, self.runtime.accumulate(part, seed=seed,
                                                                   loss_scale=share / n))
        work.metrics["loss"] += m["loss"] * share / n
        work.metrics["correct"] += m.get("correct", 0)
        work.metrics["counted"] += m["counted"]
        work.row += rows
        work.part += 1
        if work.row >= batch.B:
            work.index, work.row, work.part = work.index + 1, 0, 0

    def _record(self, work):
        p, group, metrics, seconds = self.progress, work.batches, work.metrics, work.seconds
        examples = sum(b.B for b in group)
        tokens = sum(sum(map(sum, b.mask)) for b in group)
        self.last_indices = [i for indices in work.indices for i in indices]
        return Step(step=p.step + 1, epoch=p.epoch, loss=float(metrics["loss"]),
                    grad_norm=float(metrics["grad_norm"]), lr=self.lr(p.step), examples=examples,
                    tokens=tokens, examples_seen=p.examples_seen + examples,
                    tokens_seen=p.tokens_seen + tokens, seconds=seconds,
                    tokens_per_s=tokens / seconds if seconds > 0 else None,
                    **self.task.step_fields(metrics, group[0]))

    async def run(self, budget_ms=None, max_steps=None, stop=None):
        """Train whole optimizer steps until `max_steps` are done, the next step would not fit
        in `budget_ms` (judged from the measured step time; with no measurement yet, one step
        runs to take it), training ends, or an evaluation hook stops it. Then, with a guard,
        check held-out quality (and roll back if it fell). Returns a Slice.

        With a batch manager the budget is judged before each micro-batch, and a slice may end
        inside a step. `stop`: a function; once it returns True the slice ends at the next
        micro-batch boundary (report.interrupted), and the quality check waits for the next
        slice."""
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
        self._slice_micro = 0
        stop = _latched(stop)
        if self.guard is not None:
            await self.guard.start()
        while not self.done and not report.stopped:
            if max_steps is not None and report.steps >= max_steps:
                break
            if stop is not None and stop():
                report.interrupted = True
                break
            if budget_ms is not None and self.batch_manager is None and not self._fits(budget_ms, started):
                break
            record = await self.step(budget_ms, started, stop)
            if record is None:
                report.interrupted = stop is not None and stop()      # else the budget ended it
                break
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
        await self._check(report)
        report.done = self.done or report.stopped
        if report.done and not self._finished:
            await self._finish()
        report.seconds = self.clock() - started
        report.micro_batches = self._slice_micro
        self.emit({"event": "slice", "steps": report.steps, "seconds": report.seconds,
                   "step": self.progress.step, "done": report.done,
                   "rollbacks": len(report.rollbacks), "interrupted": report.interrupted,
                   "micro_batches": report.micro_batches, "mid_step": self.mid_step})
        return report

    async def _check(self, report):
        """The guard's quality check after a slice that trained, unless the slice was
        interrupted (the next one checks); a rollback drops a step's accumulated gradients."""
        if self.guard is None or report.rollbacks:
            return
        if report.interrupted:
            self._unchecked = self._unchecked or report.steps > 0
            return
        if report.steps or self._unchecked:
            self._unchecked = False
            report.quality = await self.guard.check(report)
            if report.rollbacks and self._work is not None:
                self._work.restart()

    async def finish_step(self):
        """Finish the optimizer step under way, if any (before saving the state); returns the
        Slice that did, or None."""
        if not self.mid_step:
            return None
        return await self.run(max_steps=1)

    async def restore_snapshot(self, index):
        """Put the guard's snapshot `index` back (a user's choice); a step under way starts
        again from its first row, its accumulated gradients having been dropped. Returns the
        snapshot's listing."""
        if self.guard is None:
            raise ValueError("this trainer keeps no snapshots (it has no guard)")
        snapshot = await self.guard.ring.restore(index)
        if self._work is not None:
            self._work.restart()
        self.emit({"event": "restore", "snapshot": index, "step": self.progress.step,
                   "to_step": snapshot.step})
        return snapshot.as_dict()

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
        total = progress.start + self.run_steps
        if progress.step > total or progress.cursor >= max(1, self.steps_per_epoch):
            raise ValueError(f"the saved progress (step {progress.step}) does not fit this run of "
                             f"{total} steps")
        self.progress = progress
        self._work = None
        self._use(self.examples)
        self.base_lr = float(state.get("base_lr", self.base_lr))
        self.history[:] = [Step(**s) for s in state.get("history", [])]
        self.events = list(state.get("events", []))
        if self.guard is not None and state.get("guard"):
            self.guard.load_state(state["guard"])
