"""TrainingScheduler: when training runs, and for how long.

Training runs in slices while the user is idle, within a budget, and gives way to inference:

    scheduler = TrainingScheduler(learner.slice, idle_source=ActivityIdleSource(clock))
    await scheduler.idle(deadline_ms=40)      # the page's requestIdleCallback deadline
    scheduler.activity()                      # user input (the page's idle source)
    scheduler.set_idle_state("idle")          # chrome.idle's state (the extension's)
    task = scheduler.start()                  # or its own loop: slices while idle, in budget
    async with scheduler.pause_for_inference():
        ...                                   # a running slice stopped at a micro-batch boundary
    await scheduler.force(budget_ms=2000)     # one slice now, whatever the budget says
    scheduler.pause(); scheduler.resume(); scheduler.configure(active_fraction=0.05)
    scheduler.status()                        # state, running, slices, steps, ...

`run_slice(budget_ms, stop)` is what trains: a coroutine running training for at most
`budget_ms` (ending within one micro-batch of it) that returns once `stop()` is True at the
next micro-batch boundary, and reports what it did ({"steps": n} or an object with `.steps`;
None when there was nothing to train).

Budget: over a sliding window (window_s), training takes at most active_fraction of wall time
while the user is active and at most idle_fraction while idle; a slice is given the smaller of
its deadline and what is left of that share. A forced slice is not counted against it.
Clock and sleep are injectable (tests use fake ones): seconds, and an awaitable pause. No
threads and no blocking sleeps: this runs in Pyodide's event loop.
"""

import asyncio
import math
import time
from dataclasses import dataclass, fields

IDLE_STATES = ("active", "idle", "locked")


@dataclass
class SchedulerConfig:
    """active_fraction / idle_fraction: the most of wall time spent training, over window_s
    seconds, while the user is active / idle; idle_after_s: seconds without input after which
    the page's user counts as idle; slice_ms: the longest slice the scheduler's own loop runs
    (start()); min_slice_ms: a share left below this starts no slice; poll_s: how often the
    loop looks again when it may not train."""

    active_fraction: float = 0.1
    idle_fraction: float = 0.9
    window_s: float = 10.0
    idle_after_s: float = 30.0
    slice_ms: float = 250.0
    min_slice_ms: float = 5.0
    poll_s: float = 0.25

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            # finite (Python's json reads Infinity and NaN): an endless poll stops the loop
            # for good, an endless window lifts the budget
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("active_fraction", "idle_fraction"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("window_s", "slice_ms", "poll_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class ActivityIdleSource:
    """A page's idle source: the user is active for idle_after_s seconds after each input."""

    def __init__(self, clock=time.monotonic, idle_after_s=30.0):
        self.clock, self.idle_after_s = clock, idle_after_s
        self.last_input = None

    def activity(self):
        self.last_input = self.clock()

    def state(self):
        if self.last_input is None or self.clock() - self.last_input >= self.idle_after_s:
            return "idle"
        return "active"


class PushedIdleSource:
    """The extension's idle source: chrome.idle's state ("active", "idle", "locked") pushed in
    by set(); starts active (nothing known yet)."""

    def __init__(self, state="active"):
        self.set(state)

    def set(self, state):
        if state not in IDLE_STATES:
            raise ValueError(f"an idle state is one of {IDLE_STATES}, got {state!r}")
        self._state = state

    def activity(self):
        self._state = "active"

    def state(self):
        return "active" if self._state == "active" else "idle"


def _steps(report):
    if report is None:
        return 0
    return report.get("steps", 0) if isinstance(report, dict) else getattr(report, "steps", 0)


class TrainingScheduler:
    def __init__(self, run_slice, idle_source=None, config=None, clock=time.monotonic,
                 sleep=asyncio.sleep, on_change=None):
        """run_slice: see the module docstring; idle_source: anything with state() ->
        "active" | "idle" (ActivityIdleSource by default); on_change(): called whenever the
        status changes."""
        self.run_slice = run_slice
        self.config = config or SchedulerConfig()
        self.clock, self.sleep = clock, sleep
        self.idle_source = idle_source or ActivityIdleSource(clock, self.config.idle_after_s)
        self.on_change = on_change
        self.created = clock()
        self.trained = []            # (start, end) of the slices in the window, not forced
        self.slices = self.steps = 0
        self.last_slice_end = None
        self.running = False
        self.forced = False
        self.paused = False
        self.stopped = False
        self._inference = 0          # inference requests in progress
        self._interrupt = False      # pause() asked the running slice to stop
        self._done = None            # an asyncio.Event set when the running slice ends
        self._loop_task = None

    # --- configuration and state ---

    def configure(self, **options):
        """Change SchedulerConfig options while running (checked; nothing changes on error)."""
        unknown = sorted(set(options) - {f.name for f in fields(SchedulerConfig)})
        if unknown:
            raise ValueError(f"unknown scheduler option {', '.join(unknown)}")
        self.config = SchedulerConfig(**dict(vars(self.config), **options))
        if "idle_after_s" in options and isinstance(self.idle_source, ActivityIdleSource):
            self.idle_source.idle_after_s = self.config.idle_after_s
        self._changed()

    def activity(self):
        """User input: the user is active now."""
        if hasattr(self.idle_source, "activity"):
            self.idle_source.activity()
        self._changed()

    def set_idle_state(self, state):
        """chrome.idle's state pushed in (the idle source becomes a PushedIdleSource)."""
        if not isinstance(self.idle_source, PushedIdleSource):
            self.idle_source = PushedIdleSource()
        self.idle_source.set(state)
        self._changed()

    def user_state(self):
        return self.idle_source.state()

    @property
    def state(self):
        if self.stopped:
            return "stopped"
        if self.forced:
            return "forced"
        if self.paused:
            return "paused"
        return self.user_state()

    def pause(self):
        """No slices until resume() (but forced ones); a running one, forced or not, stops at
        its next micro-batch boundary."""
        self.paused = self._interrupt = True
        self._changed()

    def resume(self):
        self.paused = False
        self._changed()

    def _changed(self):
        if self.on_change is not None:
            self.on_change()

    # --- the budget ---

    def _prune(self, now):
        start = now - self.config.window_s
        self.trained = [(a, b) for a, b in self.trained if b > start]

    def trained_seconds(self, now=None):
        """Training seconds (slices not forced) within the window ending `now`."""
        now = self.clock() if now is None else now
        self._prune(now)
        start = now - self.config.window_s
        return sum(b - max(a, start) for a, b in self.trained)

    def fraction(self):
        """The share of wall time the user's state allows now."""
        c = self.config
        return c.idle_fraction if self.user_state() == "idle" else c.active_fraction

    def allowance_ms(self):
        """What is left of the window's share for training now, in ms."""
        now = self.clock()
        share = self.fraction() * self.config.window_s
        return max(0.0, share - self.trained_seconds(now)) * 1000.0

    def training_fraction(self):
        """The share of wall time spent training over the window (or since the start)."""
        now = self.clock()
        span = min(self.config.window_s, now - self.created)
        return self.trained_seconds(now) / span if span > 0 else 0.0

    def may_start(self):
        return not (self.stopped or self.paused or self.running or self._inference)

    # --- slices ---

    def _stop_requested(self):
        return bool(self._inference) or self._interrupt or self.stopped

    async def _slice(self, budget_ms, forced=False):
        self.running, self.forced, self._interrupt = True, forced, False
        self._done = asyncio.Event()
        self._changed()
        started = self.clock()
        try:
            report = await self.run_slice(budget_ms, self._stop_requested)
        finally:
            ended = self.clock()
            if not forced:
                self.trained.append((started, ended))
            self.running = self.forced = False
            self.last_slice_end = ended
            self._done.set()
        self.slices += 1
        self.steps += _steps(report)
        self._changed()
        return {"ran": True, "steps": _steps(report), "ms": (ended - started) * 1000.0,
                "budget_ms": budget_ms}

    async def idle(self, deadline_ms):
        """An idle period of `deadline_ms` (a requestIdleCallback deadline): a slice within it
        and within the budget, when training may run now. Returns {"ran", ...}."""
        if not (isinstance(deadline_ms, (int, float)) and not isinstance(deadline_ms, bool)
                and deadline_ms >= 0):
            raise ValueError(f"deadline_ms must be a number >= 0, got {deadline_ms!r}")
        if not self.may_start():
            return {"ran": False, "reason": self._why_not()}
        budget = min(deadline_ms, self.allowance_ms())
        if budget < self.config.min_slice_ms:
            return {"ran": False, "reason": "budget" if deadline_ms >= self.config.min_slice_ms
                    else "deadline"}
        return await self._slice(budget)

    def _why_not(self):
        if self.stopped:
            return "stopped"
        if self.paused:
            return "paused"
        if self._inference:
            return "inference"
        return "running"

    async def force(self, budget_ms):
        """One slice of `budget_ms` now, whatever the budget and idle state say (not while
        stopped); it waits for inference in progress and a running slice to end first."""
        if not (isinstance(budget_ms, (int, float)) and not isinstance(budget_ms, bool)
                and budget_ms > 0):
            raise ValueError(f"budget_ms must be a number > 0, got {budget_ms!r}")
        if self.stopped:
            return {"ran": False, "reason": "stopped"}
        while self.running or self._inference:
            if self.running:
                await self._done.wait()
            else:
                await self.sleep(self.config.poll_s)
        return await self._slice(budget_ms, forced=True)

    def pause_for_inference(self):
        """An async context manager: a running slice stops at its next micro-batch boundary
        (entering waits for that), and no slice starts until it exits."""
        return _InferencePause(self)

    # --- its own loop (the extension, or a page that prefers it) ---

    def start(self):
        """Run slices by the idle source's state and the budget, in an asyncio task; returns
        the task (stop() ends it)."""
        self.stopped = False
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self.run_forever())
        self._changed()
        return self._loop_task

    async def run_forever(self):
        while not self.stopped:
            await self.tick()

    async def tick(self):
        """One decision of the loop: a slice of up to slice_ms if one may run now, else a
        pause of poll_s (or until the window's share comes back)."""
        if self.may_start():
            budget = min(self.config.slice_ms, self.allowance_ms())
            if budget >= self.config.min_slice_ms:
                result = await self._slice(budget)
                await self.sleep(0)          # let waiting requests in between slices
                return result
        await self.sleep(self.config.poll_s)
        return {"ran": False, "reason": self._why_not() if not self.may_start() else "budget"}

    @property
    def looping(self):
        """Whether slices come from the scheduler's own loop (start())."""
        return self._loop_task is not None and not self._loop_task.done()

    def stop(self):
        """No more slices (a running one stops at its next micro-batch boundary)."""
        self.stopped = True
        self._changed()

    def status(self):
        now = self.clock()
        return {"state": self.state, "user": self.user_state(), "running": self.running,
                "scheduled": self.looping,
                "slices": self.slices, "steps": self.steps,
                "last_slice_ago_s": None if self.last_slice_end is None else now - self.last_slice_end,
                "training_fraction": self.training_fraction(),
                "allowance_ms": self.allowance_ms(), "inference": self._inference,
                "config": dict(vars(self.config))}


class _InferencePause:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    async def __aenter__(self):
        s = self.scheduler
        s._inference += 1
        s._changed()
        if s.running and s._done is not None:
            await s._done.wait()
        return s

    async def __aexit__(self, *exc):
        s = self.scheduler
        s._inference -= 1
        s._changed()
        return False
