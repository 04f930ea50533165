"""The batch manager: micro-batch rows from the measured time per padded token and the time
left in a slice (small under short deadlines, the whole batch without one), never past the
device's buffer limits (its estimate of a micro-batch's largest buffer checked against what the
GPU runtime really allocates), and a trainer on a fake clock ending slices within one
micro-batch of their deadline."""

import random

import numpy as np
import pytest

import peft_oracle as po
from conftest import run
from tiny_chat import tiny_chat_dir
from py_engine.app.batches import (BatchConfig, BatchManager, DoesNotFit, largest_buffer_bytes,
                                   power_below)
from py_engine.models.bert import BertClassifier
from py_engine.models.checkpoint import Checkpoint, DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from py_engine.train.batch import Batch
from py_engine.train.config import ClassifierTrainConfig
from py_engine.train.gpu_runtime import GpuRuntime
from py_engine.train.init import initial_trainable
from py_engine.train.numpy_runtime import NumpyRuntime
from py_engine.train.tasks import CausalLMTask, ClassificationTask, LabelledIds
from py_engine.train.trainer import Trainer


class Config:
    def __init__(self, **values):
        self.__dict__.update(values)


class Model:
    """What the manager reads of a model: its config and family."""

    def __init__(self, decoder=False, **config):
        self.decoder = decoder
        self.config = Config(**config)


MINILM = dict(hidden_size=384, intermediate_size=1536, num_attention_heads=12, vocab_size=30522)


def test_rows_follow_the_time_left():
    manager = BatchManager(Model(**MINILM))
    assert manager.rows(16, 32, None, whole=True) == 16           # no deadline: the whole batch
    assert manager.rows(16, 32, 0.05, whole=True, first=True) == 1   # no timing yet: measure
    assert manager.rows(16, 32, 0.05, whole=True) == 1
    manager.observe(4, 32, 0.04)                                    # 0.3125 ms a padded token
    assert manager.predict(8, 32) == pytest.approx(0.08)
    assert manager.rows(16, 32, 0.05, whole=True) == 4              # 40 ms of the 50 left
    assert manager.rows(16, 32, 0.0101, whole=True) == 1
    assert manager.rows(16, 32, 0.009, whole=True) is None          # nothing fits ...
    assert manager.rows(16, 32, 0.009, whole=True, first=True) == 1  # ... but a slice progresses
    assert manager.rows(16, 32, -1.0, whole=True) is None
    assert manager.rows(16, 32, 2.0, whole=True) == 16              # idle: the whole batch
    assert manager.rows(12, 32, 2.0, whole=True) == 12              # a planned batch, as it is
    assert manager.rows(12, 32, 2.0, whole=False) == 8              # a remainder: powers of two
    assert manager.rows(3, 32, 2.0) == 2 and manager.rows(1, 32, 2.0) == 1
    manager.configure(max_micro_ms=20)
    assert manager.rows(16, 32, None, whole=True) == 2              # capped even when idle
    manager.configure(max_micro_ms=None, max_rows=4)
    assert manager.rows(16, 32, 10.0, whole=True) == 4
    with pytest.raises(ValueError, match="min_rows"):
        manager.configure(min_rows=0)


def test_the_median_rate_of_recent_micro_batches():
    manager = BatchManager(Model(**MINILM), config=BatchConfig(samples=3))
    for rows, seconds in ((1, 1.0), (2, 0.02), (4, 0.04), (8, 0.08)):   # an outlier ages out
        manager.observe(rows, 10, seconds)
    assert manager.seconds_per_token() == pytest.approx(0.001)
    assert len(manager.timings) == 3


def test_never_past_the_device_limits():
    """Fake limits: attention probabilities bound a BERT's rows (rows * 12 * T * T * 4 bytes),
    the LM-head block and activations a decoder's."""
    bert = Model(**MINILM)
    T = 128
    per_row = max(12 * T * T, T * 1536) * 4
    limits = {"max_storage_buffer_binding_size": 5 * per_row, "max_buffer_size": 1 << 40}
    manager = BatchManager(bert, limits)
    assert manager.max_rows(T) == 4
    assert manager.rows(32, T, None, whole=True) == 4
    manager.observe(1, T, 1e-6)
    assert manager.rows(32, T, 100.0, whole=True) == 4               # idle, still within limits
    manager = BatchManager(bert, {"max_storage_buffer_binding_size": 1 << 40,
                                  "max_buffer_size": 3 * per_row})
    assert manager.max_rows(T) == 2                                  # the smaller limit counts
    with pytest.raises(DoesNotFit, match="one row of 4096 tokens needs"):
        BatchManager(bert, limits).max_rows(4096)
    llama = Model(decoder=True, hidden_size=2048, intermediate_size=5632, vocab_size=32000,
                  num_attention_heads=32)
    limit = 128 << 20                       # SwiftShader's binding limit in a page
    manager = BatchManager(llama, {"max_storage_buffer_binding_size": limit,
                                   "max_buffer_size": 256 << 20})
    T = 512
    rows = manager.max_rows(T)
    assert largest_buffer_bytes(llama, rows, T) <= limit < largest_buffer_bytes(llama, 2 * rows, T)
    assert rows == power_below(limit // (T * 5632 * 4)) == 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("batches")
    bert_dir, chat_dir = po.tiny_bert_dir(base / "bert", seed=2), tiny_chat_dir(base / "chat")
    bert = Checkpoint.load(bert_dir)
    chat = DecoderCheckpoint.load(chat_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    chat_lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                           task_type="CAUSAL_LM")
    return {"bert": (bert, BertClassifier(bert.config, lora, 2, dropout=0.0), ClassificationTask(2)),
            "chat": (chat, LlamaModel(chat.config, chat_lora), CausalLMTask(0))}


@pytest.mark.parametrize("family", ["bert", "chat"])
def test_the_estimate_bounds_what_a_micro_batch_allocates(models, device, monkeypatch, family):
    """Record training programs for several shapes and watch every buffer the GPU runtime
    creates: the largest is within the estimate (so rows chosen by it never overflow a
    binding), and the estimate is not far above it."""
    checkpoint, model, task = models[family]
    runtime = run(GpuRuntime.create(model, task, checkpoint, initial_trainable(model, 0),
                                    device=device))
    create = device.create_buffer
    for rows, T in ((1, 8), (2, 32), (4, 64), (8, 16)):
        sizes = []

        def watched(size, *args, **kwargs):
            sizes.append(size)
            return create(size, *args, **kwargs)

        monkeypatch.setattr(device, "create_buffer", watched)
        rng = random.Random()
        ids = [[rng.randrange(5, 100) for _ in range(T)] for _ in range(rows)]
        labels = [rng.randrange(2) for _ in range(rows)] if family == "bert" else \
            [rng.randrange(5, 100) for _ in range(rows * T)]
        run(runtime.accumulate(Batch(ids, [[0] * T] * rows if family == "bert" else None,
                                     [[1] * T] * rows, labels)))
        monkeypatch.setattr(device, "create_buffer", create)
        actual = max(sizes)
        estimate = largest_buffer_bytes(model, rows, T)
        assert actual <= estimate <= 4 * actual, (rows, T, actual, estimate)


class FakeClock:
    now = 0.0

    def __call__(self):
        return self.now


class TimedRuntime:
    """A NumPy runtime whose micro-batches take 1 ms per padded token on a fake clock."""

    def __init__(self, runtime, clock, per_token=0.001):
        self.runtime, self.clock, self.per_token = runtime, clock, per_token
        self.shapes = []

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    async def accumulate(self, batch, seed=0, loss_scale=1.0):
        self.clock.now += self.per_token * batch.B * batch.T
        self.shapes.append(batch.B)
        return await self.runtime.accumulate(batch, seed, loss_scale)

    async def train_step(self, batch, seed, lr, **options):
        self.clock.now += self.per_token * batch.B * batch.T
        self.shapes.append(batch.B)
        return await self.runtime.train_step(batch, seed, lr, **options)


def test_a_trainer_keeps_its_slices_within_one_micro_batch_of_the_deadline(models):
    checkpoint, model, task = models["bert"]
    clock = FakeClock()
    runtime = TimedRuntime(NumpyRuntime(model, task, checkpoint, initial_trainable(model, 0)),
                           clock)
    rng = random.Random()
    examples = []
    for _ in range(64):
        ids = [2] + [rng.randrange(5, 100) for _ in range(rng.randint(10, 14))] + [3]
        examples.append(LabelledIds(ids, [0] * len(ids), rng.randrange(2)))
    config = ClassifierTrainConfig(epochs=3, batch_size=16, lr=1e-3, pad_multiple=16)
    manager = BatchManager(model)
    trainer = Trainer(runtime, task, examples, config, clock=clock, batch_manager=manager)
    micro = 0.001 * 16                      # one row of 16 padded tokens: 16 ms
    for budget_ms in (50, 20, 100, 30, 50, 10, 40):
        before = len(runtime.shapes)
        report = run(trainer.run(budget_ms=budget_ms))
        assert report.micro_batches >= 1
        largest = max(runtime.shapes[before:]) * micro
        assert report.seconds * 1000 <= budget_ms + largest * 1000 + 1e-9
        if len(manager.timings) > 1 and budget_ms >= micro * 1000:   # measured, and one fits
            assert report.seconds * 1000 <= budget_ms + 1e-9, (budget_ms, runtime.shapes[before:])
    assert max(runtime.shapes) <= 4                                  # short deadlines: small
    before = len(runtime.shapes)
    was_mid_step = trainer.mid_step
    run(trainer.run(budget_ms=5000, max_steps=2))                    # idle: whole batches
    shapes = runtime.shapes[before:]
    assert shapes[-1] == 16 and (was_mid_step or set(shapes) == {16}), shapes
    assert trainer.progress.step >= 3
