"""Training mechanics: gradient accumulation, class weights and label smoothing on both
backends, reproducibility, batching, the learning-rate schedule."""

import re

import numpy as np
import pytest
import torch
from transformers import get_scheduler

import peft_oracle as po
from conftest import run
from test_bert_gpu import compare_step, runtimes, tiny_batch
from test_bert_oracle import rel
from py_engine.data.classification import Example
from py_engine.train.batch import Batch
from py_engine.train.batching import padded_length, plan_epoch
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig, ConfigError, TrainConfig
from py_engine.train.schedule import SCHEDULES, learning_rate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("training")
    model_dir = po.tiny_bert_dir(path / "model", seed=71)
    adapter = po.save_adapter(po.peft_model(model_dir, 3, seed=72), path / "adapter")
    return model_dir, adapter


def halves(batch):
    h = batch.B // 2
    return [Batch(batch.ids[s], batch.type_ids[s], batch.mask[s], batch.labels[s])
            for s in (slice(0, h), slice(h, None))]


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_two_half_batches_accumulate_to_the_full_batch(device, tiny, backend):
    reference, gpu = runtimes(device, *tiny, 3)
    engine = reference if backend == "numpy" else gpu
    full = tiny_batch(81, B=6)
    run(reference.accumulate(full))
    want = run(reference.gradients())
    reference.be.zero_grads()
    for half in halves(full):
        run(engine.accumulate(half, loss_scale=0.5))
    got = run(engine.gradients())
    for name, values in got.items():
        bound = 1e-12 if backend == "numpy" else 1e-4
        assert rel(np.asarray(values, np.float64).ravel(), want[name].ravel()) <= bound, name


def test_class_weights_and_label_smoothing_on_the_gpu(device, tiny):
    reference, gpu = runtimes(device, *tiny, 3, class_weights=[0.5, 2.0, 1.25], label_smoothing=0.1)
    plain_reference, _ = runtimes(device, *tiny, 3)
    batch = tiny_batch(82)
    want = run(reference.accumulate(batch))["loss"]
    got = run(gpu.accumulate(batch))["loss"]
    assert abs(got - want) <= 1e-5 * abs(want)
    theirs = run(reference.gradients())
    for name, values in run(gpu.gradients()).items():
        assert rel(np.asarray(values, np.float64), theirs[name].ravel()) <= 1e-4, name
    plain = run(plain_reference.accumulate(batch))["loss"]
    assert abs(plain - want) > 1e-3        # the options really change the loss


def test_mean_pooling_on_the_gpu_matches_numpy(device, tiny, tmp_path):
    from py_engine.formats.peft_adapter import load_adapter
    from py_engine.models.bert import BertClassifier
    from py_engine.models.checkpoint import Checkpoint
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.gpu_runtime import GpuRuntime
    from py_engine.train.init import initial_trainable, merge_loaded
    from py_engine.train.numpy_runtime import NumpyRuntime
    from py_engine.train.tasks import ClassificationTask

    model_dir, adapter = tiny
    checkpoint = Checkpoint.load(model_dir)
    config, tensors, _ = load_adapter(adapter)
    model = BertClassifier(checkpoint.config, LoraConfig.from_peft_dict(config), 3, pooling="mean", dropout=0.0)
    values = merge_loaded(model, initial_trainable(model, 0), tensors, adapter)
    task = ClassificationTask(3)
    compare_step(NumpyRuntime(model, task, checkpoint, values, dtype=np.float64),
                 run(GpuRuntime.create(model, task, checkpoint, values, device=device)), tiny_batch(83))


TEXTS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor",
         "the scene was fine", "it is this that", "great great great", "bad bad"]


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_same_seed_same_adapter(tmp_path, tiny, device, backend):
    model_dir, _ = tiny
    examples = [Example(t, ["a", "b"][i % 2]) for i, t in enumerate(TEXTS * 2)]
    saved = []
    for attempt in range(2):
        clf = run(TextClassifier.create(model_dir, ["a", "b"], backend=backend, seed=5, device=device))
        history = run(clf.fit(examples, TrainConfig(epochs=2, batch_size=4, lr=1e-2, seed=9, grad_accum=2)))
        path = run(clf.save(tmp_path / f"adapter{attempt}"))
        saved.append(((path / "adapter_model.safetensors").read_bytes(), [s.loss for s in history]))
    assert saved[0] == saved[1]
    assert len(saved[0][1]) == 2 * 2                  # 16 examples / 4 per batch / 2 accumulated, 2 epochs


def test_plan_epoch_buckets_and_covers_every_example():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(3, 128, 500))
    plan = plan_epoch(lengths, 16, seed=1, epoch=0)
    assert sorted(i for batch in plan for i in batch) == list(range(500))
    assert plan == plan_epoch(lengths, 16, seed=1, epoch=0) != plan_epoch(lengths, 16, seed=1, epoch=1)
    shapes = {padded_length(max(lengths[i] for i in b), 8, 128) for b in plan}
    assert len(shapes) <= 16          # padded to multiples of 8: few recorded programs
    waste = sum(padded_length(max(lengths[i] for i in b), 8, 128) * len(b) - sum(lengths[i] for i in b)
                for b in plan) / sum(lengths)
    assert waste < 0.25, waste         # bucketing keeps padding small


def _wsd(rng, total):
    """warmup_stable_decay's kwargs for a run of `total` steps, drawn."""
    kwargs = {"num_decay_steps": int(rng.integers(0, total + 1)),
              "warmup_type": str(rng.choice(["linear", "cosine", "1-sqrt"])),
              "decay_type": str(rng.choice(["linear", "cosine", "1-sqrt"])),
              "min_lr_ratio": float(rng.uniform(0, 0.5))}
    if rng.random() < 0.5:
        kwargs["num_stable_steps"] = int(rng.integers(0, total + 1))
    return kwargs


# every kind with its defaults (those that need a keyword, with one), and kwargs of each
SCHEDULE_CASES = [(kind, None) for kind in SCHEDULES if kind != "warmup_stable_decay"
                  and not kind.endswith("with_min_lr")] + [
    ("cosine", {"num_cycles": 1.5}), ("cosine_with_restarts", {"num_cycles": 3}),
    ("polynomial", {"lr_end": 1e-5, "power": 2.0}), ("inverse_sqrt", {"timescale": 7}),
    ("cosine_with_min_lr", {"min_lr": 1e-5}), ("cosine_with_min_lr", {"min_lr_rate": 0.1, "num_cycles": 1}),
    ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.2}),
    ("cosine_warmup_with_min_lr", {"min_lr": 2e-5, "warmup_lr_rate": 0.3}),
    ("warmup_stable_decay", _wsd)]


@pytest.mark.parametrize("kind,kwargs", SCHEDULE_CASES)
def test_schedules_match_transformers(kind, kwargs):
    """Each lr_scheduler_type's rate at every step (and past the last) is transformers'
    get_scheduler's, with its defaults and with lr_scheduler_kwargs, for fresh random warmups
    and lengths (a warmup of 0, and one as long as the run, among them); every schedule of
    transformers' that follows the step (not a metric) is one of ours."""
    from transformers.trainer_utils import SchedulerType

    assert set(SCHEDULES) == {t.value for t in SchedulerType} - {"reduce_lr_on_plateau", "greedy"}
    rng = np.random.default_rng()
    for total in [1, 2] + rng.integers(3, 200, 6).tolist():
        for warmup in {0, total, int(rng.integers(0, total + 1))}:
            options = kwargs(rng, total) if callable(kwargs) else kwargs
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
            sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total,
                                  scheduler_specific_kwargs=dict(options or {}))
            for step in range(total + 3):
                assert learning_rate(step, 3e-4, warmup, total, kind, options) == pytest.approx(
                    opt.param_groups[0]["lr"], rel=1e-12, abs=1e-18), (kind, options, total, warmup, step)
                opt.step()
                try:
                    sched.step()
                except ZeroDivisionError:   # polynomial, warmup as long as the run: past its end
                    break


def test_schedule_keywords_are_checked():
    """lr_scheduler_kwargs a kind does not take, of the wrong kind, or missing where needed:
    ConfigError naming them (transformers raises TypeError or ValueError for these)."""
    for kind, kwargs, words in (
            ("linear", {"num_cycles": 1}, "lr_scheduler_kwargs 'num_cycles': lr_scheduler_type "
             "linear takes none"),
            ("cosine", {"power": 2}, "cosine takes num_cycles"),
            ("polynomial", {"power": "2"}, "power must be a finite number >= 0"),
            ("polynomial", {"lr_end": 1.0}, "lr_end (1.0) must be smaller than the learning rate"),
            ("inverse_sqrt", {"timescale": 0}, "timescale must be a whole number > 0"),
            ("cosine_with_min_lr", None, "needs one of lr_scheduler_kwargs min_lr or min_lr_rate"),
            ("cosine_with_min_lr", {"min_lr": 1e-5, "min_lr_rate": 0.1}, "needs one of"),
            ("warmup_stable_decay", {}, "needs lr_scheduler_kwargs num_decay_steps"),
            ("warmup_stable_decay", {"num_decay_steps": 2.5}, "must be a whole number >= 0"),
            ("warmup_stable_decay", {"num_decay_steps": 2, "decay_type": "step"},
             "decay_type must be one of linear, cosine, 1-sqrt"),
            ("reduce_lr_on_plateau", None, "lr_scheduler_type must be one of"),
            ("linear", [1], "lr_scheduler_kwargs must be an object")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            TrainConfig(lr=1e-3, lr_scheduler_type=kind, lr_scheduler_kwargs=kwargs)


def test_the_trainer_follows_the_schedule_asked_for(tiny):
    """A cosine schedule of a whole wave (lr_scheduler_kwargs num_cycles 1) with warmup_steps
    (which wins over warmup_ratio, as in transformers): every step's rate is get_scheduler's
    over the run's steps."""
    model_dir, _ = tiny
    clf = run(TextClassifier.create(model_dir, ["a", "b"], seed=5))
    examples = [Example(f"text number {i}", "ab"[i % 2]) for i in range(20)]
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-2, warmup_ratio=0.5, warmup_steps=4,
                         lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 1})
    history = run(clf.fit(examples, config))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    sched = get_scheduler("cosine", opt, num_warmup_steps=4, num_training_steps=15,
                          scheduler_specific_kwargs={"num_cycles": 1})
    want = []
    for _ in range(15):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose([h.lr for h in history], want, rtol=1e-12)


def test_max_steps_runs_that_many_steps_whatever_the_epochs(tiny):
    """max_steps (transformers'): the run's optimizer steps in place of the epochs', the epoch
    plan going round as often as it takes (here past the one epoch asked for), the schedule
    over those steps."""
    model_dir, _ = tiny
    clf = run(TextClassifier.create(model_dir, ["a", "b"], seed=5))
    examples = [Example(f"text number {i}", "ab"[i % 2]) for i in range(20)]
    history = run(clf.fit(examples, TrainConfig(epochs=1, max_steps=12, batch_size=4, lr=1e-2,
                                                warmup_ratio=0.0)))
    assert [h.step for h in history] == list(range(1, 13))
    assert [h.epoch for h in history] == [0] * 5 + [1] * 5 + [2] * 2
    np.testing.assert_allclose([h.lr for h in history], [1e-2 * (12 - k) / 12 for k in range(12)],
                               rtol=1e-12)


def test_train_config_rejects_nonsense():
    for bad in (dict(epochs=0), dict(lr=-1.0), dict(lr=0.0), dict(batch_size=0), dict(grad_accum=0),
                dict(max_grad_norm=0.0), dict(max_grad_norm=-1.0), dict(lr=float("nan")),
                dict(weight_decay=-0.1), dict(warmup_ratio=1.0), dict(max_length=2),
                dict(epochs=1.5), dict(seed=-1), dict(adam_beta1=1.0), dict(adam_beta2=-0.1),
                dict(adam_epsilon=0.0), dict(adam_epsilon=float("inf")), dict(adam_epsilon=1e-300),
                dict(lr=1e39), dict(weight_decay=10 ** 40), dict(max_grad_norm=1e-40),
                dict(warmup_steps=-1), dict(warmup_steps=2.5), dict(lr_scheduler_type="cosine_restarts"),
                dict(max_steps=0), dict(max_steps=2.0)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    for bad in (dict(label_smoothing=1.0), dict(class_weights=[0.0, 0.0]), dict(class_weights=[1.0, -1.0])):
        with pytest.raises(ConfigError):
            ClassifierTrainConfig(**bad)
    with pytest.raises(TypeError):
        TrainConfig(label_smoothing=0.1)          # a classification option, not every task's
    assert TrainConfig(max_grad_norm=None).max_grad_norm is None     # clipping off, explicitly


def test_fused_gpu_step_equals_accumulate_then_update(device, tiny):
    _, separate = runtimes(device, *tiny, 3)
    _, fused = runtimes(device, *tiny, 3)
    for step in range(1, 4):
        batch = tiny_batch(90 + step)
        m1 = run(separate.accumulate(batch, seed=step))
        n1 = run(separate.update(lr=1e-2, max_norm=0.5, weight_decay=0.01))
        m2 = run(fused.train_step(batch, seed=step, lr=1e-2, max_norm=0.5, weight_decay=0.01))
        assert (m1["loss"], m1["correct"], n1) == (m2["loss"], m2["correct"], m2["grad_norm"])   # bit for bit
    a, b = run(separate.trainable_values()), run(fused.trainable_values())
    assert all(a[n][1] == b[n][1] for n in a)
