"""The kind of model an app trains, from config.json: every decoder-only family the engine runs
is a chat model, BERT-family encoders are classifiers, T5 is an encoder-decoder that learns
conversations, and an unknown model type is refused by name."""

import pytest

from py_engine.app.models import KINDS, RECORD_KINDS, ModelFilesError, kind_of
from py_engine.models.decoders import CAUSAL_TYPES, FAMILIES


@pytest.mark.parametrize("model_type", CAUSAL_TYPES)
def test_every_decoder_family_is_a_chat_model(model_type):
    assert kind_of({"model_type": model_type}) == "causal_lm"


def test_the_causal_types_are_every_family_but_the_encoder_decoder():
    names = {name for name, (types, _) in FAMILIES.items() if set(types) & set(CAUSAL_TYPES)}
    assert names == set(FAMILIES) - {"T5"}
    assert {"llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "phi"} <= set(CAUSAL_TYPES)


def test_bert_roberta_s_kind_and_distilbert_are_classifiers():
    for model_type in ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"):
        assert kind_of({"model_type": model_type}) == "classification"


def test_t5_is_an_encoder_decoder_that_learns_conversations():
    assert kind_of({"model_type": "t5"}) == "seq2seq"
    assert RECORD_KINDS == {"classification": "classification", "causal_lm": "causal_lm",
                            "seq2seq": "causal_lm"}
    assert set(RECORD_KINDS) == set(KINDS)


@pytest.mark.parametrize("model_type", ["gpt_neo", "bart", None])
def test_others_are_refused_naming_what_trains(model_type):
    with pytest.raises(ModelFilesError, match=rf"model_type {model_type!r}; this engine trains bert, "
                                              r"roberta, xlm-roberta, camembert, distilbert, electra, mpnet, "
                                              r"deberta-v2, albert, ernie, modernbert classifiers, "
                                              r"llama, "
                                              r".*phi3.* chat models and t5 "
                                              r"encoder-decoders"):
        kind_of({"model_type": model_type})
