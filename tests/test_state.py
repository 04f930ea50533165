"""Saved and restored training state on the host: continuing after a save and a load, in a new
process's worth of objects, trains exactly what an uninterrupted run trains (NumPy: the same
bits; GPU: f32 rounding), for a classifier, a LoRA chat model and a fully fine-tuned one; a
state is refused on other data; the state directory is a PEFT adapter too."""

import json
import random

import numpy as np
import pytest

from conftest import run
from test_trainer import ALL, data, dirs, make, trained  # noqa: F401 (the dirs fixture)
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import CausalTrainConfig, ClassifierTrainConfig, GuardConfig
from py_engine.train.state import StateError

CONFIGS = {
    "classifier": ClassifierTrainConfig(epochs=2, lr=1e-2, batch_size=16, grad_accum=2, seed=3),
    "chat": CausalTrainConfig(epochs=2, lr=1e-2, batch_size=8, seed=3),
    "chat-full": CausalTrainConfig(epochs=2, lr=1e-3, batch_size=8, seed=3, mode="full"),
}


def resume(family, path, state, train, held, backend, device):
    cls = TextClassifier if family == "classifier" else ChatModel
    return run(cls.resume(path, state, train, validation=held, backend=backend, device=device))


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
@pytest.mark.parametrize("family", ["classifier", "chat", "chat-full"])
def test_continuing_after_a_restore_equals_never_stopping(dirs, device, tmp_path, family, backend):
    kind = family.split("-")[0]
    train, held = data(kind)
    config = CONFIGS[family]
    whole = make(dirs, kind, backend, device, dropout=0.1)
    run(whole.fit(train, config))
    want = trained(whole)

    model = make(dirs, kind, backend, device, dropout=0.1)
    trainer = run(model.trainer(train, config, validation=held, guard=GuardConfig(tolerance=100.0)))
    rng = random.Random()
    state = tmp_path / "state"
    while not trainer.done:
        run(trainer.run(max_steps=rng.randint(1, 4)))
        run(model.save_state(trainer, state))
        step, history = trainer.progress.step, [s.loss for s in trainer.history]
        model, trainer = resume(kind, dirs[kind], state, train, held, backend, device)
        assert trainer.progress.step == step and [s.loss for s in trainer.history] == history
    got = trained(model)
    assert set(got) == set(want)
    for name, value in want.items():
        if backend == "numpy":
            assert np.array_equal(got[name], value), name
        else:
            assert np.linalg.norm(got[name] - value) <= 1e-6 * np.linalg.norm(value), name
    saved = json.loads((state / "training_state.json").read_text())
    assert saved["trainer"]["progress"]["step"] == trainer.total_steps


def test_a_state_is_refused_on_other_data(dirs, tmp_path):
    train, held = data("chat")
    model = make(dirs, "chat", "numpy", None)
    trainer = run(model.trainer(train, CONFIGS["chat"]))
    run(trainer.run(max_steps=2))
    run(model.save_state(trainer, tmp_path / "state"))
    with pytest.raises(StateError, match="training data differ"):
        resume("chat", dirs["chat"], tmp_path / "state", train[1:], None, "numpy", None)
    with pytest.raises(StateError, match="validation examples differ"):
        resume("chat", dirs["chat"], tmp_path / "state", train, held, "numpy", None)
    with pytest.raises(StateError, match="trained with a CausalTrainConfig, not a ClassifierTrainConfig"):
        resume("classifier", dirs["classifier"], tmp_path / "state", data("classifier")[0], None,
               "numpy", None)
    with pytest.raises(StateError, match="no training state"):
        resume("chat", dirs["chat"], tmp_path / "nothing", train, None, "numpy", None)


def test_the_state_directory_is_an_adapter_that_loads(dirs, tmp_path):
    train, held = data("classifier")
    clf = make(dirs, "classifier", "numpy", None)
    trainer = run(clf.trainer(train, CONFIGS["classifier"]))
    run(trainer.run(max_steps=3))
    run(clf.save_state(trainer, tmp_path / "state"))
    loaded = run(TextClassifier.load(dirs["classifier"], tmp_path / "state"))
    texts = [e.text for e in held[:5]]
    assert run(loaded.predict(texts)) == run(clf.predict(texts))
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json", "optimizer.safetensors",
            "training_state.json"} <= {p.name for p in (tmp_path / "state").iterdir()}


def test_a_diverged_state_is_not_saved(dirs, tmp_path):
    train, _ = data("chat")
    model = make(dirs, "chat", "numpy", None)
    trainer = run(model.trainer(train, CONFIGS["chat"]))
    run(trainer.run(max_steps=2))
    run(model.save_state(trainer, tmp_path / "state"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()}
    name = next(iter(model.runtime.m))
    model.runtime.m[name][...] = np.nan
    with pytest.raises(ValueError, match="refusing to save the optimizer state: tensor 'm.* holds NaN"):
        run(model.save_state(trainer, tmp_path / "state"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()} == before


def test_a_state_s_adapter_options_include_its_rank_and_alpha_patterns():
    """A state trained with other per-module ranks or alphas differs as other options do (the
    model is rebuilt with them); a state file written before the patterns existed reads as
    having none."""
    from types import SimpleNamespace

    from py_engine.train.state import adapter_differences

    patterned = SimpleNamespace(lora=LoraConfig(r=4, rank_pattern={"query": 2}))
    plain = LoraConfig(r=4).to_peft_dict()
    assert adapter_differences(patterned, plain) == ["rank_pattern"]
    assert adapter_differences(SimpleNamespace(lora=LoraConfig(r=4)),
                               LoraConfig(r=4, alpha_pattern={"value": 3}).to_peft_dict()) == ["alpha_pattern"]
    older = {k: v for k, v in plain.items() if not k.endswith("_pattern")}
    assert adapter_differences(SimpleNamespace(lora=LoraConfig(r=4)), older) == []
    assert adapter_differences(patterned, patterned.lora.to_peft_dict()) == []


def test_a_state_s_adapter_options_include_dora():
    """A LoRA state is not DoRA's, nor the other way round."""
    from types import SimpleNamespace

    from py_engine.train.state import adapter_differences

    dora = SimpleNamespace(lora=LoraConfig(r=4, use_dora=True))
    assert adapter_differences(dora, LoraConfig(r=4).to_peft_dict()) == ["use_dora"]
    assert adapter_differences(SimpleNamespace(lora=LoraConfig(r=4)), dora.lora.to_peft_dict()) == ["use_dora"]
    assert adapter_differences(dora, dora.lora.to_peft_dict()) == []
