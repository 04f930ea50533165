"""The trainer on both model families and both backends: slices of any size train exactly what
one uninterrupted run trains; budgets stop between steps; snapshots, quality checks and
rollback undo poisoned slices (shuffled labels, a learning rate 1,000 times too large, a NaN in
the batch) and leave clean ones alone; every step and check is an event for observers."""

import math
import random

import numpy as np
import pytest

import peft_oracle as po
from conftest import run
from tiny_chat import tiny_chat_dir
from py_engine.data.classification import Example
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import CausalTrainConfig, ClassifierTrainConfig, GuardConfig
from py_engine.train.trainer import TrainingDiverged

POSITIVE, NEGATIVE = ["good", "great", "fine"], ["bad", "awful", "not"]
FILLER = "the film was movie plot actor scene really very and a it is this that of to in".split()
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SUBSET = [40, 41, 57, 63, 88, 101, 150, 203]     # the tokens the tiny LM learns to expect


def sentiment(n, seed):
    """Texts of three sentiment words and two fillers: learnable by the tiny BERT."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILLER, 2) + rng.choices(POSITIVE if label == "pos" else NEGATIVE, k=3)
        rng.shuffle(words)
        out.append(Example(" ".join(words), label))
    return out


class Tokens:
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels


def sequences(n, seed):
    """Token sequences drawn from a small subset of the vocabulary (after a fixed first token),
    the first two positions a prompt: the tiny LM learns the subset quickly."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [SUBSET[0]] + [rng.choice(SUBSET) for _ in range(rng.randint(6, 18))]
        out.append(Tokens(ids, [-100, -100] + ids[2:]))
    return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer")
    return {"classifier": po.tiny_bert_dir(base / "bert", seed=3),
            "chat": tiny_chat_dir(base / "chat", family="qwen2", initializer_range=0.5)}


def make(dirs, family, backend, device, dropout=0.0):
    if family == "classifier":
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=["query", "value"])
        return run(TextClassifier.create(dirs[family], ["neg", "pos"], lora=lora, backend=backend,
                                         pooling="mean", seed=1, dropout=dropout, device=device))
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=ALL)
    return run(ChatModel.create(dirs[family], lora=lora, backend=backend, seed=1, device=device))


def data(family):
    if family == "classifier":
        return sentiment(128, 1), sentiment(64, 2)
    return sequences(48, 1), sequences(16, 2)


def config(family, **options):
    if family == "classifier":
        return ClassifierTrainConfig(**{**dict(epochs=6, lr=1e-2, batch_size=16, warmup_ratio=0.0), **options})
    return CausalTrainConfig(**{**dict(epochs=8, lr=1e-2, batch_size=8), **options})


def trained(model):
    return {n: np.asarray(v, np.float64) for n, (_, v) in run(model.runtime.trainable_values()).items()}


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
@pytest.mark.parametrize("family", ["classifier", "chat"])
def test_slices_of_any_size_train_what_one_run_trains(dirs, device, family, backend):
    """Dropout on and gradient accumulation for the classifier: one uninterrupted run, then the
    same run cut into random slices (step counts, time budgets, empty slices). NumPy: the same
    bits; GPU: the same within f32 rounding (1e-6 relative per tensor)."""
    train, _ = data(family)
    cfg = config(family, epochs=2, grad_accum=2 if family == "classifier" else 1, seed=7)
    whole = make(dirs, family, backend, device, dropout=0.1)
    history = run(whole.fit(train, cfg))
    want = trained(whole)

    sliced = make(dirs, family, backend, device, dropout=0.1)
    trainer = run(sliced.trainer(train, cfg))
    rng = random.Random()
    sizes = []
    while not trainer.done:
        if rng.random() < 0.3:
            report = run(trainer.run(budget_ms=rng.choice([0, 1, 20, 200])))
        else:
            report = run(trainer.run(max_steps=rng.randint(0, 3)))
        sizes.append(report.steps)
    assert sum(sizes) == len(history) == trainer.total_steps
    losses = [s.loss for s in trainer.history]
    if backend == "numpy":
        assert losses == [s.loss for s in history]
    else:
        np.testing.assert_allclose(losses, [s.loss for s in history], rtol=1e-6)
    got = trained(sliced)
    for name, value in want.items():
        if backend == "numpy":
            assert np.array_equal(got[name], value), name
        else:
            assert np.linalg.norm(got[name] - value) <= 1e-6 * np.linalg.norm(value), name


class SlowRuntime:
    """A runtime whose every step takes `seconds` on a fake clock: budgets become exact."""

    def __init__(self, runtime, clock, seconds):
        self.runtime, self.clock, self.seconds = runtime, clock, seconds

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    async def train_step(self, *args, **kwargs):
        self.clock.now += self.seconds
        return await self.runtime.train_step(*args, **kwargs)

    async def evaluate(self, *args, **kwargs):
        self.clock.now += 2 * self.seconds            # a quality check's batch
        return await self.runtime.evaluate(*args, **kwargs)


class FakeClock:
    now = 0.0

    def __call__(self):
        return self.now


def test_a_budget_runs_the_whole_steps_that_fit(dirs):
    from py_engine.train.trainer import Trainer

    model = make(dirs, "chat", "numpy", None)
    train, _ = data("chat")
    plain = run(model.trainer(train, config("chat", epochs=4)))
    clock = FakeClock()
    trainer = Trainer(SlowRuntime(model.runtime, clock, 0.05), plain.task, plain.examples,
                      plain.config, clock=clock)
    assert run(trainer.run(budget_ms=0)).steps == 0          # nothing fits in nothing
    assert run(trainer.run(budget_ms=10)).steps == 1         # no step time yet: one measures it
    assert run(trainer.run(budget_ms=175)).steps == 3        # 3 x 50 ms fit, a 4th would not
    assert run(trainer.run(budget_ms=49)).steps == 0
    report = run(trainer.run(budget_ms=1001))                # the other 20 steps of 24
    assert report.steps == 20 and report.seconds == pytest.approx(1.0) and report.done
    with pytest.raises(ValueError, match="budget_ms"):
        run(trainer.run(budget_ms=-1))
    # With a guard, the quality check after the slice (100 ms here) is part of the budget.
    clock.now = 0.0
    _, held = data("chat")
    guarded = Trainer(SlowRuntime(model.runtime, clock, 0.05), plain.task, plain.examples,
                      plain.config, validation=held[:8], guard=GuardConfig(tolerance=100.0),
                      clock=clock)
    report = run(guarded.run(budget_ms=425))     # baseline 100, then 4 steps and the check 100
    assert report.steps == 4 and report.seconds == pytest.approx(0.4) and report.quality
    report = run(guarded.run(budget_ms=425))     # 6 steps and the check: 400 ms; a 7th: 450
    assert report.steps == 6 and report.seconds == pytest.approx(0.4)


def embedding_row(model, name, row, value):
    """Overwrite one row of a frozen embedding table on either backend (fault injection);
    returns the row's old values."""
    be = model.runtime.be
    if model.runtime.name == "numpy":
        old = be.params[name][row].copy()
        be.params[name][row] = value
        return old
    width = be.params[name].shape[1]
    buffer = be.params[name].buffer
    old = np.frombuffer(bytes(run(model.runtime.device.read(buffer, 4 * row * width, 4 * width))), np.float32)
    buffer.write(np.full(width, value, np.float32) if np.isscalar(value) else np.asarray(value, np.float32),
                 offset=4 * row * width)
    return old


def poison_labels(trainer, family):
    """Shuffled labels: for the classifier each example's label is flipped; for the LM the
    trained tokens are permuted onto tokens outside what it was learning. Returns the undo."""
    saved = [(e, getattr(e, "label", None), list(getattr(e, "labels", []))) for e in trainer.examples]
    shuffled = dict(zip(SUBSET, range(250, 250 + len(SUBSET))))
    for e in trainer.examples:
        if family == "classifier":
            e.label = 1 - e.label
        else:
            e.labels = [shuffled.get(y, y) for y in e.labels]

    def undo():
        for e, label, labels in saved:
            if family == "classifier":
                e.label = label
            else:
                e.labels = labels
    return undo


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
@pytest.mark.parametrize("family", ["classifier", "chat"])
def test_poisoned_slices_roll_back_and_clean_ones_do_not(dirs, device, family, backend):
    model = make(dirs, family, backend, device)
    train, held = data(family)
    trainer = run(model.trainer(train, config(family, epochs=40), validation=held,
                                guard=GuardConfig(keep=3)))
    events = []
    trainer.subscribe(events.append)
    monitor = "loss"

    def clean(slices):
        for _ in range(slices):
            report = run(trainer.run(max_steps=3))
            assert report.rollbacks == [], report.rollbacks
            assert report.quality is not None
        return report.quality[monitor]

    first = clean(1)
    before = clean(7)
    assert before < first                          # it learns
    nan_token = 2 if family == "classifier" else SUBSET[0]    # [CLS] / every sequence's first token
    name = "embeddings.word_embeddings.weight" if family == "classifier" else "model.embed_tokens.weight"
    poisons = {
        "shuffled labels": (lambda: poison_labels(trainer, family), "worse than"),
        "learning rate x1000": (lambda: lr_times(trainer, 1000.0), "worse than|exploded"),
        "NaN in the batch": (lambda: nan_row(model, name, nan_token), "not finite"),
    }
    for poison, (apply, reason) in poisons.items():
        undo = apply()
        report = run(trainer.run(max_steps=8))
        undo()
        assert len(report.rollbacks) == 1, (poison, report.rollbacks)
        assert any(word in report.rollbacks[0]["reason"] for word in reason.split("|")), report.rollbacks
        after = run(trainer.quality())[monitor]
        assert abs(after - before) <= 0.01 * abs(before), (poison, after, before)
        before = clean(2)                           # and training goes on, clean
    rollbacks = [e for e in events if e["event"] == "rollback"]
    assert [e["step"] > e["to_step"] for e in rollbacks] == [True] * 3
    assert len(trainer.guard.ring.list()) == 3


def lr_times(trainer, factor):
    trainer.base_lr *= factor

    def undo():
        trainer.base_lr /= factor
    return undo


def nan_row(model, name, row):
    old = embedding_row(model, name, row, np.nan)
    return lambda: embedding_row(model, name, row, old)


def test_snapshots_are_listed_restorable_and_bounded(dirs):
    model = make(dirs, "classifier", "numpy", None)
    train, held = data("classifier")
    trainer = run(model.trainer(train, config("classifier"), validation=held,
                                guard=GuardConfig(keep=2, tolerance=10.0)))
    weights = {}
    for _ in range(4):
        run(trainer.run(max_steps=2))
        weights[trainer.progress.step] = trained(model)
    ring = trainer.guard.ring
    listed = ring.list()
    assert [s["step"] for s in listed] == [6, 8]           # the two newest of 0, 2, 4, 6, 8
    assert all(set(s) >= {"index", "step", "time", "metric", "quality"} for s in listed)
    assert listed[0]["time"] <= listed[1]["time"]
    run(ring.restore(listed[0]["index"]))
    for name, value in trained(model).items():
        assert np.array_equal(value, weights[6][name])
    with pytest.raises(KeyError, match="no snapshot"):
        run(ring.restore(0))                               # released when the ring moved on


def test_divergence_without_a_guard_stops_with_a_message(dirs):
    model = make(dirs, "chat", "numpy", None)
    train, _ = data("chat")
    trainer = run(model.trainer(train, config("chat")))
    nan_row(model, "model.embed_tokens.weight", SUBSET[0])
    with pytest.raises(TrainingDiverged, match="not finite.*lower the learning rate"):
        run(trainer.run(max_steps=2))


def test_metrics_stream(dirs):
    """Every step: step, loss, lr, grad norm, examples and tokens (this step's and all seen),
    tokens/s; each slice its quality check; observers can leave."""
    model = make(dirs, "classifier", "numpy", None)
    train, held = data("classifier")
    trainer = run(model.trainer(train, config("classifier", grad_accum=2, batch_size=8),
                                validation=held, guard=GuardConfig()))
    seen, late = [], []
    trainer.subscribe(seen.append)
    leave = trainer.subscribe(late.append)
    run(trainer.run(max_steps=2))
    leave()
    run(trainer.run(max_steps=1))
    steps = [e for e in seen if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for e in steps:
        assert {"loss", "lr", "grad_norm", "examples", "tokens", "examples_seen", "tokens_seen",
                "tokens_per_s", "accuracy"} <= set(e)
        assert e["examples"] == 16 and e["tokens"] > e["examples"] and e["tokens_per_s"] > 0
        assert math.isfinite(e["loss"]) and e["grad_norm"] > 0
    assert steps[2]["examples_seen"] == 48
    assert steps[2]["tokens_seen"] == sum(e["tokens"] for e in steps)
    kinds = [e["event"] for e in seen]
    assert kinds.count("quality") == 3 and kinds.count("slice") == 2     # baseline + 2 checks
    assert [e["event"] for e in late].count("step") == 2


def test_an_int8_classifier_refuses_to_merge(dirs, device):
    clf = run(TextClassifier.create(dirs["classifier"], ["neg", "pos"], backend="gpu", device=device,
                                    base_dtype="int8", quant_group=16))
    assert all(clf.runtime.be.params[w].quant is not None for _, w, *_ in clf.model.merge_names())
    with pytest.raises(ValueError, match="needs f32 base weights"):
        run(clf.merge())


def test_quality_metrics_match_torch_and_a_confusion_matrix():
    """Held-out loss against torch's cross_entropy, accuracy and macro-F1 against a confusion
    matrix; the causal-LM perplexity is exp(mean token loss)."""
    import torch

    from py_engine.train.tasks import CausalLMTask, ClassificationTask

    rng = np.random.default_rng()
    logits = rng.standard_normal((57, 4)) * 3
    gold = rng.integers(0, 4, 57)
    gold[:3] = 3                                    # every class appears
    got = ClassificationTask(4).quality(logits.tolist(), gold.tolist())
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(gold)).item()
    assert abs(got["loss"] - want) <= 1e-12 * want
    predicted = logits.argmax(axis=1)
    confusion = np.zeros((4, 4))
    np.add.at(confusion, (gold, predicted), 1)
    tp = np.diag(confusion)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(confusion.sum(0) + confusion.sum(1), 1), 0.0)
    assert got["accuracy"] == tp.sum() / 57
    assert abs(got["macro_f1"] - f1.mean()) <= 1e-12
    lm = CausalLMTask.quality(total_loss=30.0, counted=12)
    assert lm["loss"] == 2.5 and abs(lm["perplexity"] - math.exp(2.5)) <= 1e-12


def test_programs_made_again_free_the_old_ones(dirs, device):
    """A new task (label smoothing changes the recorded loss) records new programs; the old
    ones and their activations are released, so memory does not grow with each change beyond
    a few small uniforms."""
    clf = make(dirs, "classifier", "gpu", device)
    train, _ = data("classifier")
    before = device.allocated_bytes()
    sizes = []
    for smoothing in (0.0, 0.1, 0.2, 0.0):
        trainer = run(clf.trainer(train, config("classifier", label_smoothing=smoothing)))
        run(trainer.run(max_steps=2))
        sizes.append(device.allocated_bytes())
    recorded = sizes[0] - before                  # what one task's programs hold
    growth = [b - a for a, b in zip(sizes, sizes[1:])]
    assert recorded > 100_000 and max(growth) <= 0.1 * recorded, (recorded, growth)


def test_a_guard_follows_the_hybrid_switch_to_full_fine_tuning(dirs):
    """Hybrid mode with a guard: once the plateau switches to every weight, the ring starts
    again from the switched weights, and a NaN in the full phase rolls back to them."""
    model = make(dirs, "chat", "numpy", None)
    train, held = data("chat")
    cfg = config("chat", mode="hybrid", lr=1e-9, full_lr=1e-3, patience=1, eval_every=1, epochs=6)
    trainer = run(model.trainer(train, cfg, validation=held, guard=GuardConfig(tolerance=100.0)))
    while not model.model.full:
        assert run(trainer.run(max_steps=1)).rollbacks == []
    assert all(s["step"] == trainer.progress.step for s in trainer.guard.ring.list())
    before = run(trainer.quality())["loss"]
    undo = nan_row(model, "model.embed_tokens.weight", SUBSET[0])
    report = run(trainer.run(max_steps=2))
    undo()
    assert len(report.rollbacks) == 1 and "not finite" in report.rollbacks[0]["reason"]
    assert abs(run(trainer.quality())["loss"] - before) <= 1e-9 * before
