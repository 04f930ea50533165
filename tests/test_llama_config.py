"""Llama-family configs and their checkpoints' tensor shapes, against transformers."""

import json

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from py_engine.formats import safetensors
from py_engine.models.bert_config import ConfigError
from py_engine.models.llama_config import LlamaConfig

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64)


@pytest.mark.parametrize("hf_config, model_class", [
    (HFLlamaConfig(**TINY), LlamaForCausalLM),
    (HFLlamaConfig(**TINY, tie_word_embeddings=True), LlamaForCausalLM),
    (HFLlamaConfig(**TINY, attention_bias=True, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}), LlamaForCausalLM),
    (Qwen2Config(**TINY), Qwen2ForCausalLM),
])
def test_shapes_match_a_saved_checkpoint(tmp_path, hf_config, model_class):
    torch.manual_seed(0)
    model_class(hf_config).save_pretrained(tmp_path, safe_serialization=True)
    config = LlamaConfig.from_file(tmp_path)
    file = safetensors.load(tmp_path / "model.safetensors")
    saved = {name: file.info(name)[1] for name in file.keys()}
    assert saved == config.parameter_shapes()
    assert config.rope_parameters["rope_type"] == hf_config.rope_parameters["rope_type"]
    assert config.rope_parameters["rope_theta"] == hf_config.rope_parameters["rope_theta"]


def test_older_rope_spelling_and_errors(tmp_path):
    old = dict(TINY, model_type="llama", rope_theta=5e5,
               rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    config = LlamaConfig(**old)
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 5e5
    for bad, match in ((dict(TINY, num_key_value_heads=3), "multiple"),
                       (dict(TINY, model_type="bert"), "not a Llama"),
                       (dict(TINY, hidden_act="gelu"), "silu"),
                       (dict(TINY, rope_parameters={"rope_type": "yarn"}), "yarn")):
        with pytest.raises(ConfigError, match=match):
            LlamaConfig(**bad)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="vocab_size"):
        LlamaConfig.from_file(tmp_path)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral", "smollm3", "gemma", "gemma2",
                                        "gemma3_text", "phi3"])
def test_a_missing_max_position_embeddings_takes_the_familys_default(model_type):
    """The context a config.json that leaves the field out allows (chats and training are cut
    to it) is the family's, as transformers' config class gives it (Qwen2: 32768, not 2048)."""
    from transformers import AutoConfig

    fields = {k: v for k, v in TINY.items() if k != "max_position_embeddings"}
    ours = LlamaConfig(model_type=model_type, pad_token_id=None, **fields)
    theirs = AutoConfig.for_model(model_type, pad_token_id=None, **fields)
    assert ours.max_position_embeddings == theirs.max_position_embeddings
