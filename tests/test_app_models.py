"""The kind of model an app trains, from config.json: every decoder-only family the engine runs
is a chat model, BERT-family encoders are classifiers, and T5 (an encoder-decoder the app does
not train) or an unknown model type is refused by name."""

import pytest

from py_engine.app.models import ModelFilesError, kind_of
from py_engine.models.decoders import CAUSAL_TYPES, FAMILIES


@pytest.mark.parametrize("model_type", CAUSAL_TYPES)
def test_every_decoder_family_is_a_chat_model(model_type):
    assert kind_of({"model_type": model_type}) == "causal_lm"


def test_the_causal_types_are_every_family_but_the_encoder_decoder():
    names = {name for name, (types, _) in FAMILIES.items() if set(types) & set(CAUSAL_TYPES)}
    assert names == set(FAMILIES) - {"T5"}
    assert {"llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "phi"} <= set(CAUSAL_TYPES)


def test_bert_is_a_classifier():
    assert kind_of({"model_type": "bert"}) == "classification"


@pytest.mark.parametrize("model_type", ["t5", "gpt_neo", None])
def test_others_are_refused_naming_what_trains(model_type):
    with pytest.raises(ModelFilesError, match=rf"model_type {model_type!r}; this engine trains bert "
                                              r"classifiers and llama, .*phi3.* chat models"):
        kind_of({"model_type": model_type})
