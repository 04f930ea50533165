"""Micro-batches in the trainer: a planned batch run as micro-batches of any rows, each scaled by
its share of the batch's loss denominator (class weights, label smoothing, ignored rows; the
causal LM's counted tokens), accumulates the gradient of the whole batch: NumPy in float64 to
1e-12, the GPU to f32 rounding. A slice may end between micro-batches and inference may run
there; the step goes on at the next run() and trains what an uninterrupted run trains. A step
under way is never saved."""

import random

import numpy as np
import pytest

import peft_oracle as po
from conftest import run
from test_bert_oracle import rel
from tiny_chat import tiny_chat_dir
from py_engine.models.bert import BertClassifier
from py_engine.models.checkpoint import Checkpoint, DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from py_engine.train import state as training_state
from py_engine.train.config import CausalTrainConfig, ClassifierTrainConfig
from py_engine.train.gpu_runtime import GpuRuntime
from py_engine.train.numpy_runtime import NumpyRuntime
from py_engine.train.tasks import CausalLMTask, ClassificationTask, LabelledIds
from py_engine.train.trainer import Trainer


class Tokens:
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels


class Partition:
    """A batch manager that cuts planned batches into the given row counts, in turn."""

    def __init__(self, sizes):
        self.sizes, self.k = sizes, 0

    def rows(self, left, T, seconds_left, whole=False, first=False):
        size = self.sizes[self.k % len(self.sizes)]
        self.k += 1
        return min(size, left)

    def observe(self, rows, T, seconds):
        pass


class Capture:
    """A runtime that keeps the gradients an update is about to use."""

    def __init__(self, runtime):
        self.runtime, self.gradients, self.fused = runtime, [], 0

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    async def update(self, *args, **kwargs):
        grads = await self.runtime.gradients()
        self.gradients.append({n: np.asarray(g, np.float64).ravel() for n, g in grads.items()})
        return await self.runtime.update(*args, **kwargs)

    async def train_step(self, batch, seed, lr, max_norm=None, weight_decay=0.0, **adam):
        self.fused += 1
        metrics = dict(await self.runtime.accumulate(batch, seed=seed))
        metrics["grad_norm"] = await self.update(lr, max_norm, weight_decay, **adam)
        return metrics


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("micro")
    return {"classifier": po.tiny_bert_dir(base / "bert", seed=5),
            "chat": tiny_chat_dir(base / "chat", family="qwen2")}


def random_values(model, seed):
    rng = np.random.default_rng(seed)
    return {n: (shape, (rng.standard_normal(int(np.prod(shape))) * 0.05).astype(np.float32))
            for n, shape in model.trainable.items()}


def classifier_parts(dirs, class_weights=None, smoothing=0.0):
    checkpoint = Checkpoint.load(dirs["classifier"])
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"])

    def model():
        return BertClassifier(checkpoint.config, lora, 3, pooling="mean", dropout=0.0)

    task = ClassificationTask(3, 0, smoothing, class_weights)
    rng = random.Random()
    examples = [LabelledIds([2] + [rng.randrange(5, 100) for _ in range(rng.randint(2, 17))] + [3],
                            None, None if rng.random() < 0.15 else rng.randrange(3))
                for _ in range(40)]
    for e in examples:
        e.type_ids = [0] * len(e.ids)
    return checkpoint, model, task, examples


def chat_parts(dirs):
    checkpoint = DecoderCheckpoint.load(dirs["chat"])
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")

    def model():
        return LlamaModel(checkpoint.config, lora)

    rng = random.Random()
    examples = []
    for _ in range(24):
        ids = [rng.randrange(5, 300) for _ in range(rng.randint(4, 30))]
        prompt = rng.randint(1, len(ids) - 1)
        examples.append(Tokens(ids, [-100] * prompt + ids[prompt:]))
    return checkpoint, model, CausalLMTask(0), examples


def runtime(backend, checkpoint, model, task, values, device):
    if backend == "numpy":
        return NumpyRuntime(model(), task, checkpoint, values, dtype=np.float64)
    return run(GpuRuntime.create(model(), task, checkpoint, values, device=device))


def first_step_gradients(rt, task, examples, config, manager):
    capture = Capture(rt)
    trainer = Trainer(capture, task, examples, config, batch_manager=manager)
    report = run(trainer.run(max_steps=1))
    assert report.steps == 1
    return capture, trainer


CASES = {
    "classifier": (lambda dirs: classifier_parts(dirs, [0.5, 2.0, 1.25], 0.1),
                   dict(batch_size=7, grad_accum=2), ClassifierTrainConfig),
    "chat": (chat_parts, dict(batch_size=6, grad_accum=1), CausalTrainConfig),
}


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
@pytest.mark.parametrize("family", ["classifier", "chat"])
def test_micro_batches_accumulate_the_whole_batch_gradient(dirs, device, family, backend):
    """The step's accumulated gradient with micro-batches of 1, 2, 3 rows (and other cuts)
    equals the gradient of its planned batches run whole."""
    parts, options, config_class = CASES[family]
    checkpoint, model, task, examples = parts(dirs)
    values = random_values(model(), seed=random.randrange(1000))
    config = config_class(epochs=1, lr=1e-3, seed=random.randrange(100), **options)
    whole, reference = first_step_gradients(
        runtime(backend, checkpoint, model, task, values, device), task, examples, config, None)
    want = whole.gradients[0]
    bound = 1e-12 if backend == "numpy" else 2e-6
    for sizes in ([1], [2, 1, 3], [4]):
        capture, trainer = first_step_gradients(
            runtime(backend, checkpoint, model, task, values, device), task, examples, config,
            Partition(sizes))
        assert capture.fused == 0
        got = capture.gradients[0]
        for name in want:
            err = rel(got[name], want[name])
            assert err <= bound, f"{sizes} {name}: relative error {err:.2e} > {bound}"
        loss, whole_loss = trainer.history[0].loss, reference.history[0].loss
        assert abs(loss - whole_loss) <= (1e-12 if backend == "numpy" else 1e-5) * whole_loss


def test_the_whole_batch_with_no_accumulation_is_one_fused_step(dirs):
    checkpoint, model, task, examples = classifier_parts(dirs)
    values = random_values(model(), 1)
    config = ClassifierTrainConfig(epochs=1, batch_size=8, lr=1e-3)
    capture, trainer = first_step_gradients(runtime("numpy", checkpoint, model, task, values, None),
                                            task, examples, config, Partition([64]))
    assert capture.fused == 1 and trainer.history[0].step == 1


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_slices_ending_between_micro_batches_train_what_one_run_trains(dirs, device, backend):
    """A slice stopped between micro-batches (inference runs there, reading the weights) goes
    on at the next run(): the weights equal those of one uninterrupted micro-batched run."""
    checkpoint, model, task, examples = classifier_parts(dirs)
    values = random_values(model(), 2)
    config = ClassifierTrainConfig(epochs=2, batch_size=8, grad_accum=2, lr=1e-2, seed=3)
    reference = runtime(backend, checkpoint, model, task, values, device)
    one = Trainer(reference, task, examples, config, batch_manager=Partition([1, 2]))
    run(one.fit())
    want = {n: np.asarray(v, np.float64) for n, (_, v) in run(reference.trainable_values()).items()}

    rt = runtime(backend, checkpoint, model, task, values, device)
    manager = Partition([1, 2])
    trainer = Trainer(rt, task, examples, config, batch_manager=manager)
    probe = trainer.batch(list(range(4)))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] % 4 == 0           # every fourth check: between micro-batches

    interrupted = 0
    while not trainer.done:
        report = run(trainer.run(stop=stop))
        interrupted += report.interrupted
        if trainer.mid_step:
            with pytest.raises(training_state.StateError, match="step is under way"):
                run(training_state.capture(trainer, {}))
            run(rt.outputs(probe))           # inference between micro-batches
    assert interrupted > 3
    assert [s.step for s in trainer.history] == [s.step for s in one.history]
    got = {n: np.asarray(v, np.float64) for n, (_, v) in run(rt.trainable_values()).items()}
    for name, value in want.items():
        if backend == "numpy":
            assert np.array_equal(got[name], value), name
        else:
            assert rel(got[name], value) <= 1e-6, name


def test_finish_step_completes_a_step_under_way_before_saving(dirs, tmp_path):
    checkpoint, model, task, examples = classifier_parts(dirs)
    rt = runtime("numpy", checkpoint, model, task, random_values(model(), 3), None)
    trainer = Trainer(rt, task, examples, ClassifierTrainConfig(epochs=1, batch_size=8),
                      batch_manager=Partition([2]))
    checks = {"n": 0}

    def stop():
        checks["n"] += 1
        return checks["n"] == 3
    report = run(trainer.run(stop=stop))
    assert report.interrupted and report.steps == 0 and trainer.mid_step
    with pytest.raises(RuntimeError, match="between optimizer steps"):
        run(trainer.replace_data(examples[:8]))
    finished = run(trainer.finish_step())
    assert finished.steps == 1 and not trainer.mid_step and trainer.progress.step == 1
    assert run(trainer.finish_step()) is None
    files = run(training_state.capture(trainer, {}))
    assert training_state.STATE_FILE in files
