"""The Phi-2 family decoder (models/phi.py through the NumPy generation decoder) against
transformers' PhiForCausalLM: next-token logits in float64, and 32 greedy tokens."""

import numpy as np
import pytest

from phi_checkpoints import TINY, tiny_phi
from py_engine.models.checkpoint import CheckpointError, DecoderCheckpoint
from test_gpt2_reference import check_logits, hf_greedy, numpy_greedy   # any decoder family's

# phi-2's own factor 0.4 (head_dim 10: 4 dimensions rotate), grouped-query heads, exact GELU,
# and a tied head (its bias stays).
CASES = {"half-rotary": {}, "phi2-factor": dict(hidden_size=40, partial_rotary_factor=0.4),
         "gqa-exact-gelu": dict(num_key_value_heads=2, hidden_act="gelu", num_hidden_layers=3),
         "tied": dict(tie_word_embeddings=True)}


@pytest.fixture(params=sorted(CASES))
def checkpoint(request, tmp_path):
    return tiny_phi(tmp_path, **CASES[request.param]), tmp_path


def test_logits_match_transformers(checkpoint):
    check_logits(*checkpoint, TINY["vocab_size"])


def test_greedy_generation_matches_transformers(checkpoint):
    hf, path = checkpoint
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, TINY["vocab_size"], 5)]
    assert numpy_greedy(path, prompt) == hf_greedy(hf, prompt)


def test_older_config_spelling_reads_the_top_level_factor(tmp_path):
    """phi-2's own config.json: partial_rotary_factor and rope_theta at the top level."""
    from py_engine.models.phi_config import PhiConfig

    config = PhiConfig(model_type="phi", vocab_size=96, hidden_size=40, intermediate_size=48,
                       num_hidden_layers=1, num_attention_heads=4, partial_rotary_factor=0.4,
                       rope_theta=10000.0, rope_scaling=None)
    assert (config.head_dim, config.rotary_dim) == (10, 4)
    assert PhiConfig(model_type="phi", vocab_size=96, hidden_size=32, intermediate_size=48,
                     num_hidden_layers=1, num_attention_heads=4).rotary_dim == 4   # default 0.5


@pytest.mark.parametrize("field, value, message", [
    ("qk_layernorm", True, "qk_layernorm true .* is not supported"),
    ("hidden_act", "relu", "hidden_act 'relu' is not supported"),
    ("resid_pdrop", 1.0, "'resid_pdrop' must be in \\[0, 1\\), got 1.0"),
])
def test_unsupported_configs_are_refused_by_name(tmp_path, field, value, message):
    import json

    tiny_phi(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        DecoderCheckpoint.load(tmp_path)


def test_an_odd_rotary_dimension_is_refused(tmp_path):
    import json

    tiny_phi(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"]["partial_rotary_factor"] = 0.375      # 3 of 8 dimensions
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="gives 3 rotary dimensions"):
        DecoderCheckpoint.load(tmp_path)


def test_unsupported_model_type_names_the_phi_family(tmp_path):
    tiny_phi(tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"phi"', '"phimoe"')
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=r"'phimoe' is not a supported decoder; supported: "
                                              r".*Phi-2 \(phi\)"):
        DecoderCheckpoint.load(tmp_path)
