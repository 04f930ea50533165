"""Gradient checkpointing (models/checkpointing.py): a step that recomputes each layer's forward
in its backward gives the gradients of the step that keeps every activation, exactly on NumPy
(the same ops on the same inputs, each dropout mask drawn again), and on the GPU (lavapipe)
while holding less memory, for every family (decoders, encoder classifiers, T5); the option
reaches training through the training configs and survives the switch to full fine-tuning."""

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import rel_error, run
from gpt2_checkpoints import tiny_dialogpt_dir
from phi_checkpoints import tiny_phi_dir
from tiny_chat import tiny_chat_dir
import peft_oracle as po
from py_engine.data.classification import Example
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import CausalTrainConfig, ClassifierTrainConfig, ConfigError

LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {"qwen2": LLAMA, "gemma2": LLAMA, "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
           "gpt2": ["c_attn", "c_proj", "c_fc"], "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]}
WITH_DROPOUT = dict(embd_pdrop=0.1, resid_pdrop=0.1)


def checkpoint_dir(tmp_path, family):
    """A tiny checkpoint of `family`; GPT-2 and Phi-2 with their own dropout on."""
    if family == "gpt2":
        return tiny_dialogpt_dir(tmp_path / "gpt2", **WITH_DROPOUT, attn_pdrop=0.1)
    if family == "phi":
        return tiny_phi_dir(tmp_path / "phi", **WITH_DROPOUT, attention_dropout=0.1)
    return tiny_chat_dir(tmp_path, family=family, num_hidden_layers=4)


def examples(seed, n=4, vocab=90):
    """Token sequences of unequal lengths (padding in every batch), every token trained but
    the first of each."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        ids = rng.integers(3, vocab, 6 + 3 * k).tolist()
        out.append(SimpleNamespace(ids=ids, labels=[-100] + ids[1:]))
    return out


async def step(path, checkpointing, mode="lora", lora=None, **kwargs):
    """Loss and gradients of one accumulated step (dropout seed 7) on a fresh chat model."""
    chat = await ChatModel.create(path, lora=lora, mode=mode, seed=3, **kwargs)
    data = examples(1)
    return await accumulated(chat, chat.runtime.task.batch(data, list(range(len(data))), 8, 64),
                             checkpointing)


async def accumulated(model, batch, checkpointing):
    """(loss, {name: gradient}, model) of one step of `model` (ChatModel or TextClassifier)
    over `batch`, its LoRA B drawn at random first so that A gets a gradient too."""
    model.runtime.set_gradient_checkpointing(checkpointing)
    values, rng = await model.runtime.trainable_values(), np.random.default_rng(5)
    for name, (shape, data) in values.items():
        if ".lora_B." in name:
            values[name] = (shape, (0.1 * rng.standard_normal(len(data))).astype(np.float32))
    await model.runtime.load_trainable(values)
    metrics = await model.runtime.accumulate(batch, seed=7)
    grads = {name: np.asarray(g, np.float32).ravel()
             for name, g in (await model.runtime.gradients()).items()}
    return metrics["loss"], grads, model


CLASSIFIERS = {     # family: (checkpoint directory maker, LoRA options)
    "bert": (lambda p: po.tiny_bert_dir(p), dict(target_modules=["query", "value", "dense"])),
    # bias="all" trains the relative rows' norm: their gradients are summed over the layers
    "deberta": (lambda p: po.tiny_deberta_dir(p), dict(target_modules=["query_proj", "value_proj"],
                                                       bias="all")),
    "albert": (lambda p: po.tiny_albert_dir(p), dict(target_modules=["query", "value"])),
    "modernbert": (lambda p: po.tiny_modernbert_dir(p), dict(target_modules=["Wqkv", "Wo"])),
    "qwen2": (lambda p: tiny_chat_dir(p.parent, family="qwen2", num_hidden_layers=4),
              dict(target_modules=["q_proj", "v_proj", "down_proj"])),
}
TEXTS = ["the film was great", "an awful plot and a worse ending, really not good", "it",
         "a film"]


async def classifier_step(family, tmp_path, checkpointing, **kwargs):
    make, options = CLASSIFIERS[family]
    path = tmp_path / family
    if not path.exists():
        make(path)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, task_type="SEQ_CLS", **options)
    clf = await TextClassifier.create(path, ["neg", "pos", "mid"], lora=lora, seed=3, **kwargs)
    encoded = clf.encode_examples([Example(t, ["neg", "pos", "mid"][k % 3])
                                   for k, t in enumerate(TEXTS)])
    batch = clf.runtime.task.batch(encoded, list(range(len(encoded))), 8, 64)
    return await accumulated(clf, batch, checkpointing)


@pytest.mark.parametrize("family", ["qwen2", "gemma2", "phi3", "gpt2", "phi"])
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_numpy_gradients_are_those_without_it(tmp_path, family, mode):
    """Every family that has it, LoRA (with LoRA dropout) and full fine-tuning: the same loss
    and the same gradients, bit for bit."""
    path = checkpoint_dir(tmp_path, family)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[family], lora_dropout=0.2)
    plain_loss, plain, _ = run(step(path, False, mode, lora))
    loss, grads, chat = run(step(path, True, mode, lora))
    assert chat.model.gradient_checkpointing
    assert loss == plain_loss
    assert set(grads) == set(plain) and len(grads) > 4
    for name, values in plain.items():
        assert np.array_equal(grads[name], values), name
        assert np.any(values), name        # every trained tensor got a gradient


def test_numpy_holds_less_memory(tmp_path):
    """On NumPy too the step's peak of allocated memory (tracemalloc, which NumPy reports to)
    falls: the arrays of a layer that will be recomputed are freed, the GELU slopes its forward
    kept for the backward with them (GPT-2 8 layers deep: measured 9.7 MiB -> 4.1 MiB; 8.1 MiB
    when the slopes are kept)."""
    import tracemalloc

    path = tiny_dialogpt_dir(tmp_path / "gpt2", n_layer=8)
    rng = np.random.default_rng(0)
    data = [SimpleNamespace(ids=(ids := rng.integers(3, 90, 60).tolist()), labels=[-100] + ids[1:])
            for _ in range(8)]
    peaks = {}
    for on in (False, True):
        chat = run(ChatModel.create(path, lora=LoraConfig(r=4, target_modules=["c_attn"]), seed=3))
        chat.runtime.set_gradient_checkpointing(on)
        batch = chat.runtime.task.batch(data, list(range(len(data))), 8, 64)
        run(chat.runtime.accumulate(batch, seed=1))       # what the first step makes once
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            run(chat.runtime.accumulate(batch, seed=1))
            peaks[on] = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
    assert peaks[True] < 0.6 * peaks[False], peaks


def test_layers_below_the_lowest_adapter_are_not_kept(tmp_path):
    """LoRA on the top layers only: the backward stops at the lowest adapted layer, with
    checkpointing as without (the same gradients)."""
    path = checkpoint_dir(tmp_path, "qwen2")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA, layers_to_transform=[2, 3])
    plain_loss, plain, _ = run(step(path, False, lora=lora))
    loss, grads, _ = run(step(path, True, lora=lora))
    assert loss == plain_loss and sorted(grads) == sorted(plain)
    assert {name.split(".")[2] for name in grads} == {"2", "3"}
    for name, values in plain.items():
        assert np.array_equal(grads[name], values), name


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_numpy_classifier_gradients_are_those_without_it(tmp_path, family):
    """The encoder classifiers (and a decoder read as one) with their own dropout on: the same
    loss and gradients, bit for bit."""
    plain_loss, plain, _ = run(classifier_step(family, tmp_path, False))
    loss, grads, clf = run(classifier_step(family, tmp_path, True))
    assert clf.model.gradient_checkpointing and loss == plain_loss
    assert set(grads) == set(plain) and len(grads) > 4
    for name, values in plain.items():
        assert np.array_equal(grads[name], values), name
        assert np.any(values), name


@pytest.mark.parametrize("family", ["deberta", "modernbert"])
def test_gpu_classifier_gradients_are_those_without_it(tmp_path, device, family):
    """On the GPU the summed relative rows' gradients (DeBERTa) and the sliding window's bias
    (ModernBERT), made outside the layers, outlive the buffers handed on (1e-6 relative)."""
    kwargs = dict(backend="gpu", device=device)
    plain_loss, plain, plain_clf = run(classifier_step(family, tmp_path, False, **kwargs))
    loss, grads, clf = run(classifier_step(family, tmp_path, True, **kwargs))
    assert abs(loss - plain_loss) <= 1e-6 * abs(plain_loss)
    for name, values in plain.items():
        assert rel_error(grads[name], values) <= 1e-6, name
    assert clf.runtime.recorded_bytes() < plain_clf.runtime.recorded_bytes()


@pytest.mark.parametrize("family, mode", [("qwen2", "lora"), ("gpt2", "full")])
def test_gpu_gradients_are_those_without_it_in_less_memory(tmp_path, device, family, mode):
    """On the GPU (lavapipe) the checkpointed step's gradients are the plain step's (the same
    kernels on the same inputs: 1e-6 relative, measured 0), and its recorded buffers, which
    hand what is no longer read on to later tensors, take less memory."""
    path = checkpoint_dir(tmp_path, family)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[family], lora_dropout=0.2)
    kwargs = dict(backend="gpu", device=device)
    plain_loss, plain, plain_chat = run(step(path, False, mode, lora, **kwargs))
    loss, grads, chat = run(step(path, True, mode, lora, **kwargs))
    assert abs(loss - plain_loss) <= 1e-6 * abs(plain_loss)
    for name, values in plain.items():
        assert rel_error(grads[name], values) <= 1e-6, name
    held, plain_held = chat.runtime.recorded_bytes(), plain_chat.runtime.recorded_bytes()
    assert 0 < held < 0.8 * plain_held, (held, plain_held)
    # the NumPy backend's gradients of the same step (float32), as a third opinion
    _, reference, _ = run(step(path, False, mode, lora))
    for name, values in reference.items():
        assert rel_error(grads[name], values) <= 1e-4, name


def test_the_training_option_trains_as_without_it_and_survives_hybrid(tmp_path):
    """fit() with CausalTrainConfig(gradient_checkpointing=True): the same losses step by step
    as without it, in hybrid mode across the switch to full fine-tuning (which keeps the
    option); the option is a bool."""
    path = checkpoint_dir(tmp_path, "qwen2")
    data = examples(2, n=12)

    async def losses(on):
        chat = await ChatModel.create(path, mode="hybrid", seed=3)
        config = CausalTrainConfig(epochs=6, lr=5e-3, batch_size=4, mode="hybrid", patience=1,
                                   eval_every=1, gradient_checkpointing=on)
        history = await chat.fit(data, config, validation=examples(3, n=2))
        switched = [e["step"] for e in chat.events if e["event"] == "switched to full fine-tuning"]
        return [s.loss for s in history], switched, chat.model.gradient_checkpointing

    plain, plain_switched, _ = run(losses(False))
    got, switched, on = run(losses(True))
    assert got == plain
    # switched to full fine-tuning with steps after it, still checkpointing
    assert switched == plain_switched and len(switched) == 1 and switched[0] < len(got) and on


async def t5_step(path, checkpointing, mode, targets, **kwargs):
    """One step of a T5 (dropout 0.1) made at `path` if not there yet."""
    from t5_checkpoints import tiny_t5
    from py_engine.data.seq2seq import Seq2SeqIds
    from py_engine.train.seq2seq import Seq2SeqModel

    if not path.exists():
        tiny_t5(path, dropout_rate=0.1)
    pairs = [Seq2SeqIds([5, 6, 7, 8, 9], [10, 11, 12]), Seq2SeqIds([13, 14], [15, 16, 17, 18])]
    lora = None if targets is None else LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                   lora_dropout=0.1, task_type="SEQ_2_SEQ_LM")
    model = await Seq2SeqModel.create(path, tokenizer=None, lora=lora, mode=mode, seed=3, **kwargs)
    return await accumulated(model, model.runtime.task.batch(pairs, [0, 1], 8, 64), checkpointing)


@pytest.mark.parametrize("mode, targets", [("lora", ["q", "v", "wo"]), ("lora", ["q", "v"]),
                                           ("full", None)])
def test_t5_gradients_are_those_without_it(tmp_path, mode, targets):
    """T5's two stacks (the encoder output's gradient summed over the decoder layers' cross
    attention), with dropout, LoRA (on both stacks) and full fine-tuning: bit for bit."""
    plain_loss, plain, _ = run(t5_step(tmp_path / "t5", False, mode, targets))
    loss, grads, model = run(t5_step(tmp_path / "t5", True, mode, targets))
    assert model.model.gradient_checkpointing and loss == plain_loss
    assert set(grads) == set(plain) and len(grads) > 4
    for name, values in plain.items():
        assert np.array_equal(grads[name], values), name
        assert np.any(values), name


def test_t5_on_the_gpu(tmp_path, device):
    """On the GPU the encoder output's gradient, summed over the decoder layers, outlives the
    buffers handed on (1e-6 relative), in less memory."""
    kwargs = dict(backend="gpu", device=device)
    plain_loss, plain, plain_model = run(t5_step(tmp_path / "t5", False, "lora", ["q", "v", "wo"],
                                                 **kwargs))
    loss, grads, model = run(t5_step(tmp_path / "t5", True, "lora", ["q", "v", "wo"], **kwargs))
    assert abs(loss - plain_loss) <= 1e-6 * abs(plain_loss)
    for name, values in plain.items():
        assert rel_error(grads[name], values) <= 1e-6, name
    assert model.runtime.recorded_bytes() < plain_model.runtime.recorded_bytes()


def test_a_family_without_it_is_refused_by_name():
    """A model family whose layers do not run through models/checkpointing.py refuses the
    option by name; the training configs take it as a bool."""
    from py_engine.models.lora import AdaptedModel

    plain = type("OwnLayers", (AdaptedModel,), {})()
    with pytest.raises(ValueError, match="gradient checkpointing is not built for OwnLayers"):
        plain.gradient_checkpointing = True
    plain.gradient_checkpointing = False
    assert ClassifierTrainConfig(gradient_checkpointing=True).gradient_checkpointing
    for config in (ClassifierTrainConfig, CausalTrainConfig):
        with pytest.raises(ConfigError, match="gradient_checkpointing must be true or false"):
            config(gradient_checkpointing=1)
