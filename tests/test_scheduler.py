"""The training scheduler on a fake clock with a fake trainer (micro-batches of fixed length):
the share of wall time spent training over any window stays within the active or idle fraction;
slices never pass their deadline by more than one micro-batch; inference stops a running slice
within one micro-batch and keeps new ones from starting; force, pause, resume and configure work
while running; its own loop follows pushed idle states. Then the wiring with a real trainer."""

import asyncio
import random

import pytest

import peft_oracle as po
from py_engine.app.batches import BatchManager
from py_engine.app.scheduler import (ActivityIdleSource, PushedIdleSource, SchedulerConfig,
                                     TrainingScheduler)
from py_engine.data.classification import Example
from py_engine.models.lora_config import LoraConfig
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig
from event_loop import run as run_async


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeTrainer:
    """Micro-batches of `micro_s` on the fake clock, `per_step` to a step; a slice ends when
    stop() says so or when the next micro-batch would pass the budget (the first always runs,
    as the real trainer's)."""

    def __init__(self, clock, micro_s=0.004, per_step=3):
        self.clock, self.micro_s, self.per_step = clock, micro_s, per_step
        self.micro = 0
        self.slices = []           # (start, end, budget_ms)
        self.stop_seen = []        # clock time at which a slice saw stop() True

    async def run_slice(self, budget_ms, stop):
        start, ran = self.clock.now, 0
        while True:
            if stop():
                self.stop_seen.append(self.clock.now)
                break
            if ran and (self.clock.now - start + self.micro_s) * 1000.0 > budget_ms:
                break
            self.clock.now += self.micro_s
            self.micro += 1
            ran += 1
            await asyncio.sleep(0)   # a GPU readback: other requests may run
        self.slices.append((start, self.clock.now, budget_ms))
        return {"steps": self.micro // self.per_step - (self.micro - ran) // self.per_step}


def windowed_fractions(slices, window, end):
    """The share of each window [t - window, t] spent in slices, at every slice end."""
    out = []
    for _, t, _ in slices:
        if t < window + slices[0][0]:
            continue
        trained = sum(max(0.0, min(b, t) - max(a, t - window)) for a, b, _ in slices)
        out.append(trained / window)
    return out


def make(clock, idle_source=None, **config):
    trainer = FakeTrainer(clock)
    scheduler = TrainingScheduler(trainer.run_slice, idle_source=idle_source,
                                  config=SchedulerConfig(**config), clock=clock,
                                  sleep=fake_sleep(clock))
    return trainer, scheduler


def fake_sleep(clock):
    async def sleep(seconds):
        clock.now += seconds
        await asyncio.sleep(0)
    return sleep


@pytest.mark.parametrize("user", ["active", "idle"])
def test_page_idle_callbacks_keep_to_the_fraction_and_the_deadlines(user):
    clock = FakeClock()
    source = ActivityIdleSource(clock, idle_after_s=1e9 if user == "active" else 1.0)
    source.activity()
    clock.now += 2.0
    trainer, scheduler = make(clock, source, window_s=5.0)
    rng = random.Random()

    async def page():
        for _ in range(4000):
            deadline = rng.choice([1, 8, 20, 50])
            result = await scheduler.idle(deadline_ms=deadline)
            if result["ran"]:
                assert result["budget_ms"] <= deadline
            clock.now += rng.uniform(0.0, 0.02)        # the page's own work between callbacks

    run_async(page())
    fraction = 0.1 if user == "active" else 0.9
    slack = trainer.micro_s / 5.0
    shares = windowed_fractions(trainer.slices, 5.0, clock.now)
    assert max(shares) <= fraction + slack, max(shares)
    # the page's deadlines (about 20 ms, between gaps of about 10) bound what idle can reach
    assert sum(shares) / len(shares) >= (0.06 if user == "active" else 0.5)
    for start, end, budget in trainer.slices:
        assert (end - start) * 1000 <= budget + trainer.micro_s * 1000 + 1e-9
    status = scheduler.status()
    assert status["state"] == user and status["slices"] == len(trainer.slices)
    assert status["steps"] > 0 and 0 < status["training_fraction"] <= fraction + slack


def test_inference_stops_a_slice_within_one_micro_batch_and_holds_new_ones():
    clock = FakeClock()
    trainer, scheduler = make(clock, idle_fraction=1.0)
    scheduler.set_idle_state("idle")
    log = []

    async def inference():
        for _ in range(7):
            await asyncio.sleep(0)
        asked = clock.now
        async with scheduler.pause_for_inference():
            log.append(("entered", asked, clock.now))
            assert not scheduler.running
            assert (await scheduler.idle(50))["ran"] is False
            assert scheduler.status()["inference"] == 1
            clock.now += 0.1                                   # the inference itself
        log.append(("left", clock.now))

    async def main():
        slice_ = asyncio.ensure_future(scheduler.force(budget_ms=10_000))
        await inference()
        await slice_
        return (await scheduler.idle(50))["ran"]

    assert run_async(main()) is True                         # slices start again after
    (_, asked, entered), _ = log
    assert entered - asked <= trainer.micro_s + 1e-12
    assert trainer.stop_seen and trainer.stop_seen[0] - asked <= trainer.micro_s + 1e-12


def test_force_pause_resume_configure_while_running():
    clock = FakeClock()
    trainer, scheduler = make(clock)
    scheduler.activity()

    async def main():
        assert (await scheduler.idle(50))["ran"]                # the active share allows it
        scheduler.pause()
        assert scheduler.status()["state"] == "paused"
        assert (await scheduler.idle(50)) == {"ran": False, "reason": "paused"}
        forced = await scheduler.force(budget_ms=300)            # forced, even paused
        assert forced["ran"] and 296 - 1e-6 <= forced["ms"] <= 300
        scheduler.resume()
        scheduler.configure(active_fraction=0.0)
        assert (await scheduler.idle(50)) == {"ran": False, "reason": "budget"}
        with pytest.raises(ValueError, match="active_fraction"):
            scheduler.configure(active_fraction=1.5)
        with pytest.raises(ValueError, match="unknown scheduler option"):
            scheduler.configure(speed=2)
        for name in ("poll_s", "slice_ms", "window_s"):
            with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0, got inf"):
                scheduler.configure(**{name: float("inf")})
        with pytest.raises(ValueError, match="idle_after_s must be a finite number >= 0, got nan"):
            scheduler.configure(idle_after_s=float("nan"))
        assert scheduler.config.active_fraction == 0.0
        # pause() stops a running slice at its next micro-batch
        running = asyncio.ensure_future(scheduler.force(budget_ms=5_000))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        scheduler.pause()
        asked = clock.now
        await running
        return asked

    asked = run_async(main())
    assert clock.now - asked <= trainer.micro_s + 1e-12
    status = scheduler.status()
    assert status["slices"] == 3 and status["last_slice_ago_s"] == 0.0
    assert set(status) >= {"state", "running", "slices", "steps", "last_slice_ago_s",
                           "training_fraction"}
    with pytest.raises(ValueError, match="deadline_ms"):
        run_async(scheduler.idle(-1))


def test_its_own_loop_follows_pushed_idle_states():
    """The extension pushes chrome.idle's states: the loop trains up to the idle share while
    idle or locked and falls back to the active share when the user returns."""
    clock = FakeClock()
    trainer, scheduler = make(clock, PushedIdleSource(), window_s=4.0, slice_ms=100.0)

    async def main():
        scheduler.set_idle_state("locked")
        task = scheduler.start()
        assert scheduler.status()["scheduled"]
        while clock.now < 1020.0:
            await asyncio.sleep(0)
        idle_share = scheduler.training_fraction()
        scheduler.set_idle_state("active")
        while clock.now < 1040.0:
            await asyncio.sleep(0)
        active_share = scheduler.training_fraction()
        scheduler.stop()
        await task
        return idle_share, active_share

    idle_share, active_share = run_async(main())
    assert 0.8 <= idle_share <= 0.9 + trainer.micro_s / 4.0
    assert 0.05 <= active_share <= 0.1 + trainer.micro_s / 4.0
    assert scheduler.status()["state"] == "stopped"
    with pytest.raises(ValueError, match="idle state"):
        scheduler.set_idle_state("asleep")


def test_the_wiring_with_a_real_trainer(tmp_path):
    """A tiny BERT's trainer with a batch manager behind the scheduler: idle callbacks train
    it, a slice keeps to its deadline (within one micro-batch), and inference waits for it."""
    from conftest import run
    model_dir = po.tiny_bert_dir(tmp_path / "bert", seed=4)
    clf = run(TextClassifier.create(model_dir, ["neg", "pos"], lora=LoraConfig(r=4, lora_alpha=8),
                                    pooling="mean", dropout=0.0))
    rng = random.Random(0)
    words = {"pos": ["good", "great"], "neg": ["bad", "awful"]}
    examples = [Example(" ".join(rng.choices(words[label], k=3)), label)
                for label in rng.choices(["neg", "pos"], k=48)]
    trainer = run(clf.trainer(examples, ClassifierTrainConfig(epochs=2, batch_size=8)))
    trainer.batch_manager = BatchManager.for_runtime(clf.runtime)
    scheduler = TrainingScheduler(lambda budget, stop: trainer.run(budget_ms=budget, stop=stop),
                                  config=SchedulerConfig(idle_fraction=1.0))
    scheduler.set_idle_state("idle")

    async def main():
        results = []
        while not trainer.done:
            results.append(await scheduler.idle(deadline_ms=30))
        async with scheduler.pause_for_inference():
            probs = await clf.predict(["good good great"])
        return results, probs

    results, probs = run_async(main())
    assert trainer.progress.step == trainer.total_steps == 12
    micro = max(ms for ms, _ in [(r["ms"], r) for r in results])
    assert all(r["ran"] for r in results) and micro < 10_000
    assert scheduler.status()["steps"] == 12
    assert probs[0]["pos"] > 0.5
