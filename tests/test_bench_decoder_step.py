"""bench/decoder_step.py's model shapes: a shape whose family the engine lacks fails by name,
before anything is built, and stays in the results and the table as a failure (bench/run.py
then exits non-zero); the shapes' LoRA targets exist in transformers' models of their configs."""

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import decoder_step  # noqa: E402


def test_a_shape_without_an_engine_family_fails_by_name(monkeypatch):
    shape = replace(decoder_step.MODELS["gpt2"], label="GPT-Neo-shaped", model_type="gpt_neo")
    monkeypatch.setitem(decoder_step.MODELS, "gpt2", shape)
    monkeypatch.setattr(decoder_step, "call", lambda *a, **k: pytest.fail("built a checkpoint"))
    message = "py_engine has no decoder family for model_type 'gpt_neo'; supported: Llama"
    with pytest.raises(RuntimeError, match=message):
        decoder_step.run_all(("gpt2",))
    results = decoder_step.run_all(("gpt2",), keep_going=True)
    assert list(decoder_step.failures(results)) == ["gpt2"]
    [(measure, value, note)] = decoder_step.table_rows(results)
    assert measure == "GPT-Neo-shaped: failed" and value == "-" and message in note


@pytest.mark.parametrize("key", sorted(decoder_step.MODELS))
def test_shapes_build_in_transformers_with_their_lora_targets(key):
    from transformers import AutoConfig, AutoModelForCausalLM

    m = decoder_step.MODELS[key]
    config = AutoConfig.for_model(m.model_type, **dict(m.config, num_hidden_layers=1, n_layer=1))
    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(m.targets) <= names
    assert config.vocab_size == m.config["vocab_size"]
