"""The Phi-3 family (models/llama.py with fused qkv_proj and gate_up_proj, through the NumPy
generation decoder) against transformers' Phi3ForCausalLM in float64: next-token logits with no
rope scaling and with LongRoPE's short and long factors (and its older spellings), and 32 greedy
tokens, which with LongRoPE cross the switch to the long factors as transformers' generate does."""

import numpy as np
import pytest
import torch

from conftest import run
from phi3_checkpoints import CASES, ORIGINAL, TINY, tiny_phi3
from py_engine.generate import NumpyDecoder
from py_engine.models.bert_config import ConfigError
from py_engine.models.checkpoint import CheckpointError, DecoderCheckpoint
from py_engine.models.llama_config import LlamaConfig
from test_gpt2_reference import hf_greedy, numpy_greedy

V = TINY["vocab_size"]
# transformers computes the rope tables in float32 (angle errors ~ p * 6e-8): Llama's bound
BOUND = 1e-6


@pytest.fixture(params=sorted(CASES))
def checkpoint(request, tmp_path):
    return request.param, tiny_phi3(tmp_path, **CASES[request.param]), tmp_path


def hf_last_logits(hf, ids):
    with torch.no_grad():
        return hf(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()


def relative(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def test_logits_match_transformers(checkpoint):
    """Each step's logits are transformers' on the whole sequence so far: short factors up to
    ORIGINAL tokens, long ones after (the step that crosses re-runs the sequence)."""
    case, hf, path = checkpoint
    ids = np.random.default_rng().integers(0, V, 2 * ORIGINAL).tolist()
    decoder = NumpyDecoder.load(path, dtype=np.float64)
    got = {6: run(decoder.prefill(ids[:6]))}
    for n in range(7, len(ids) + 1):
        got[n] = run(decoder.step(ids[n - 1]))
    for n, logits in got.items():
        assert relative(logits, hf_last_logits(hf, ids[:n])) <= BOUND, (case, n)
    if case != "no-scaling":    # the factors switch: position 5's logits in a long sequence differ
        with torch.no_grad():
            long = hf(input_ids=torch.as_tensor([ids])).logits[0, 5].numpy()
        assert relative(long, hf_last_logits(hf, ids[:6])) > 1e-3


def test_prompt_longer_than_the_switch(checkpoint):
    """A prompt past original_max_position_embeddings runs on the long factors from the start."""
    case, hf, path = checkpoint
    ids = np.random.default_rng().integers(0, V, ORIGINAL + 5).tolist()
    decoder = NumpyDecoder.load(path, dtype=np.float64)
    assert relative(run(decoder.prefill(ids)), hf_last_logits(hf, ids)) <= BOUND


def test_greedy_generation_matches_transformers(checkpoint):
    case, hf, path = checkpoint
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, V, 5)]
    assert numpy_greedy(path, prompt) == hf_greedy(hf, prompt)


def test_config_reads_phi3_as_transformers_does(tmp_path):
    hf = tiny_phi3(tmp_path, **CASES["su"])
    config = DecoderCheckpoint.load(tmp_path).config
    assert config.fused_projections and config.lora_targets == ("qkv_proj",)
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope" == hf.config.rope_parameters["rope_type"]
    assert rope["original_max_position_embeddings"] == ORIGINAL
    assert rope["factor"] == TINY["max_position_embeddings"] / ORIGINAL
    assert config.rms_norm_eps == hf.config.rms_norm_eps
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        assert {n: tuple(f.get_slice(n).get_shape()) for n in f.keys()} == config.parameter_shapes()


@pytest.mark.parametrize("fields, match", [
    (dict(partial_rotary_factor=0.375), "partial_rotary_factor 0.375 of head_dim 8 gives 3 rotary"),
    (dict(partial_rotary_factor=0.1), "gives 0 rotary dimensions"),
    (dict(rope_scaling={"type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 4}),
     "short_factor must hold one number per rotated pair of dimensions, 4"),
    (dict(partial_rotary_factor=0.5, rope_scaling={"type": "longrope", "short_factor": [1.0] * 4,
                                                   "long_factor": [1.0] * 4}),
     "short_factor must hold one number per rotated pair of dimensions, 2"),
    (dict(resid_pdrop=0.1), "'resid_pdrop' is 0.1: dropout is not supported"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope type 'dynamic' is not supported"),
])
def test_config_refusals(fields, match):
    with pytest.raises(ConfigError, match=match):
        LlamaConfig(**dict(TINY, model_type="phi3", **fields))


def test_partial_rotary_is_phi3s_alone():
    """transformers rotates whole heads in the other Llama-family models."""
    with pytest.raises(ConfigError, match="partial_rotary_factor 0.5 is not supported for model_type 'llama'"):
        LlamaConfig(**dict(TINY, model_type="llama", partial_rotary_factor=0.5))
    assert LlamaConfig(**dict(TINY, model_type="phi3", partial_rotary_factor=0.5)).rotary_dim == 4


def test_sequences_past_the_sliding_window(tmp_path):
    """Phi-3-mini's configs carry a sliding window: a prompt and replies longer than it attend
    to the last `sliding_window` keys only, as transformers' Phi3ForCausalLM does."""
    hf = tiny_phi3(tmp_path, sliding_window=10)
    ids = np.random.default_rng().integers(0, V, 24).tolist()
    decoder = NumpyDecoder.load(tmp_path, dtype=np.float64)
    assert relative(run(decoder.prefill(ids[:14])), hf_last_logits(hf, ids[:14])) <= BOUND
    for n in range(15, len(ids) + 1):
        last = run(decoder.step(ids[n - 1]))
        assert relative(last, hf_last_logits(hf, ids[:n])) <= BOUND, n
    hf.config.sliding_window = None      # the window matters: the whole context answers otherwise
    assert relative(last, hf_last_logits(hf, ids)) > 1e-3


def test_unsupported_model_type_names_phi3(tmp_path):
    tiny_phi3(tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"phi3"', '"phimoe"')
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=r"'phimoe' is not a supported decoder; supported: "
                                              r"Llama \(llama, qwen2, qwen3, mistral, smollm3\), .*Phi-3 \(phi3\)"):
        DecoderCheckpoint.load(tmp_path)
