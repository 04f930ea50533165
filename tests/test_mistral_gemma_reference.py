"""Mistral (sliding window), Gemma, Qwen2 with a sliding window, Qwen3, Gemma 2, Gemma 3 (text) and SmolLM3 through the Llama-family
decoder (models/llama.py via the NumPy generation decoder, KV cache included) against
transformers: logits in float64 over sequences longer than the window, and 32 greedy tokens
(Mistral's prompt + generation far longer than its window)."""

import numpy as np
import pytest
import torch

from conftest import run
from mistral_gemma_checkpoints import FAMILIES, VOCAB, WINDOW, tiny_checkpoint
from py_engine.generate import NumpyDecoder
from py_engine.generate.generation import generate
from py_engine.models.checkpoint import CheckpointError, DecoderCheckpoint
from py_engine.models.bert_config import ConfigError
from py_engine.models.llama_config import LlamaConfig

# transformers computes RMSNorm (and Gemma's (1 + weight)) in float32 even in a float64 model:
# agreement stops near float32 precision (measured 5e-8 .. 1e-7), as for Llama.
LOGITS_BOUND = 1e-6


@pytest.fixture(params=sorted(FAMILIES))
def checkpoint(request, tmp_path):
    return request.param, tiny_checkpoint(request.param, tmp_path), tmp_path


def relative(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def test_logits_match_transformers(checkpoint):
    """A prompt of 5 and 12 single-token steps (the KV-cache path, every query beyond the
    window of 5 sees only its window), and the 17 tokens as one prompt."""
    family, hf, path = checkpoint
    ids = np.random.default_rng().integers(0, VOCAB, 17).tolist()
    decoder = NumpyDecoder.load(path, dtype=np.float64)
    got = [run(decoder.prefill(ids[:5]))] + [run(decoder.step(t)) for t in ids[5:]]
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor([ids])).logits[0, 4:].numpy()
    assert relative(np.stack(got), want) <= LOGITS_BOUND, family
    assert relative(run(decoder.prefill(ids)), want[-1]) <= LOGITS_BOUND, family


def test_the_window_and_the_gemma_parameters_decide_the_logits(tmp_path):
    """Each variant's parameter matters: without it the logits move far beyond the bound."""
    ids = np.random.default_rng().integers(0, VOCAB, 17).tolist()
    for family, off in (("mistral", dict(layer_windows=(None, None))),
                        ("gemma", dict(norm_offset=0.0)), ("gemma", dict(embedding_scale=None)),
                        ("gemma", dict(mlp_activation="silu")), ("qwen3", dict(qk_norm=False)),
                        ("gemma3", dict(query_scale=None)), ("gemma3", dict(sandwich_norms=False)),
                        ("gemma3", dict(layer_windows=(None, None))),
                        ("gemma2", dict(attn_logit_softcapping=None)),
                        ("gemma2", dict(final_logit_softcapping=None)),
                        ("gemma2", dict(layer_windows=(None, None))),
                        ("gemma2", dict(sandwich_norms=False)),
                        ("smollm3", dict(layer_rope_used=(True, True))),
                        ("smollm3", dict(layer_windows=(None, None)))):
        hf = tiny_checkpoint(family, tmp_path / family)
        with torch.no_grad():
            want = hf(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()
        decoder = NumpyDecoder.load(tmp_path / family, dtype=np.float64)
        for name, value in off.items():
            setattr(decoder.config, name, value)
        assert relative(run(decoder.prefill(ids)), want) > 100 * LOGITS_BOUND, (family, off)


class _Ids:
    """A tokenizer stand-in for generate(): the ids themselves are the text."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_greedy_generation_matches_transformers(checkpoint):
    family, hf, path = checkpoint
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, VOCAB, 2 * WINDOW + 1)]
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=32, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=32)
    decoder = NumpyDecoder.load(path, dtype=np.float64)
    result = run(generate(decoder, _Ids(), prompt, max_new_tokens=32, greedy=True))
    assert result.ids == out[0, len(prompt):].tolist(), family


def test_config_fields_as_transformers_reads_them():
    tiny = dict(vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=48)
    assert LlamaConfig(**tiny, model_type="mistral").layer_windows == (4096,) * 3   # its default
    assert LlamaConfig(**tiny, model_type="mistral", sliding_window=None).layer_windows == (None,) * 3
    assert LlamaConfig(**tiny, model_type="qwen2", sliding_window=7).layer_windows == (None,) * 3
    qwen = LlamaConfig(**tiny, model_type="qwen2", use_sliding_window=True, sliding_window=7,
                       max_window_layers=2)
    assert qwen.layer_windows == (None, None, 7)
    gemma = LlamaConfig(**tiny, model_type="gemma", hidden_act="gelu",
                        hidden_activation="gelu_pytorch_tanh")
    assert (gemma.mlp_activation, gemma.norm_offset, gemma.tie_word_embeddings,
            gemma.head_dim) == ("gelu_tanh", 1.0, True, 256)
    assert gemma.embedding_scale == float(np.float32(np.sqrt(32)))
    assert LlamaConfig(**tiny).embedding_scale is None and LlamaConfig(**tiny).norm_offset == 0.0
    qwen3 = LlamaConfig(**tiny, model_type="qwen3", use_sliding_window=True, sliding_window=7,
                        max_window_layers=1)
    assert (qwen3.qk_norm, qwen3.head_dim, qwen3.attention_bias, qwen3.layer_windows) == \
        (True, 128, False, (None, 7, 7))
    assert "model.layers.2.self_attn.k_norm.weight" in qwen3.parameter_shapes()


@pytest.mark.parametrize("fields", [
    dict(rope_theta=500_000.0, rope_local_base_freq=5_000.0, sliding_window=512,
         sliding_window_pattern=3, query_pre_attn_scalar=256),        # as published configs
    dict(rope_scaling={"rope_type": "linear", "factor": 8.0}),          # defaults, scaled
    dict(layer_types=["full_attention"] * 5 + ["sliding_attention"] * 2, sliding_window=64)])
def test_gemma3_fields_as_transformers_reads_them(fields):
    """Gemma 3's windows and rotary bases per layer, from the older spellings of published
    config.json files too, as transformers' Gemma3TextConfig reads them."""
    from transformers import Gemma3TextConfig

    tiny = dict(vocab_size=96, hidden_size=32, num_hidden_layers=7, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=48, head_dim=16, **fields)
    theirs = Gemma3TextConfig(**tiny)
    ours = LlamaConfig(model_type="gemma3_text", **tiny)
    assert ours.layer_windows == tuple(theirs.sliding_window if t == "sliding_attention" else None
                                       for t in theirs.layer_types)
    for rope, kind in zip(ours.layer_rope, theirs.layer_types):
        want = theirs.rope_parameters[kind]
        assert (rope["rope_type"], rope["rope_theta"], rope.get("factor")) == \
            (want["rope_type"], want["rope_theta"], want.get("factor")), kind
    assert ours.query_scale == (None if theirs.query_pre_attn_scalar == 16 else
                                (16 / theirs.query_pre_attn_scalar) ** 0.5)


@pytest.mark.parametrize("fields", [
    dict(),                                                             # Gemma2Config's defaults
    dict(num_hidden_layers=5, sliding_window=512, query_pre_attn_scalar=144,
         attn_logit_softcapping=None, final_logit_softcapping=20.0),
    dict(layer_types=["full_attention"] * 3 + ["sliding_attention"] * 2, rope_theta=5_000.0)])
def test_gemma2_fields_as_transformers_reads_them(fields):
    """Gemma 2's windows, query scale, rotary base and soft caps (defaults when config.json
    omits them, null for none) as transformers' Gemma2Config reads them."""
    from transformers import Gemma2Config

    tiny = dict(vocab_size=96, hidden_size=32, num_hidden_layers=5, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=48, head_dim=16)
    tiny.update(fields)
    theirs = Gemma2Config(**tiny)
    ours = LlamaConfig(model_type="gemma2", **tiny)
    assert ours.layer_windows == tuple(theirs.sliding_window if t == "sliding_attention" else None
                                       for t in theirs.layer_types)
    assert all(r["rope_theta"] == theirs.rope_parameters["rope_theta"] for r in ours.layer_rope)
    assert ours.query_scale == (None if theirs.query_pre_attn_scalar == 16 else
                                (16 / theirs.query_pre_attn_scalar) ** 0.5)
    assert (ours.attn_logit_softcapping, ours.final_logit_softcapping) == \
        (theirs.attn_logit_softcapping, theirs.final_logit_softcapping)
    assert (ours.sandwich_norms, ours.qk_norm, ours.norm_offset) == (True, False, 1.0)


@pytest.mark.parametrize("fields", [
    dict(),                                                             # SmolLM3Config's defaults
    dict(num_hidden_layers=7, no_rope_layer_interval=3, use_sliding_window=True, sliding_window=64),
    dict(no_rope_layers=[1, 0, 0, 1, 1], use_sliding_window=True, sliding_window=32),
    dict(use_sliding_window=False, sliding_window=32)])
def test_smollm3_fields_as_transformers_reads_them(fields):
    """SmolLM3's layers without rotary embedding and its windows, as SmolLM3Config lays them out."""
    from transformers import SmolLM3Config

    tiny = dict(vocab_size=96, hidden_size=32, num_hidden_layers=5, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=48, pad_token_id=0)
    tiny.update(fields)
    theirs = SmolLM3Config(**tiny)
    ours = LlamaConfig(model_type="smollm3", **tiny)
    assert ours.layer_rope_used == tuple(bool(x) for x in theirs.no_rope_layers)
    assert ours.layer_windows == tuple(
        theirs.sliding_window if theirs.use_sliding_window and t == "sliding_attention" else None
        for t in theirs.layer_types)
    assert ours.tie_word_embeddings is theirs.tie_word_embeddings is True
    with pytest.raises(ConfigError, match=r"'no_rope_layers' must hold 0 or 1 for each of the \d layers"):
        LlamaConfig(model_type="smollm3", **dict(tiny, no_rope_layers=[1, 0]))


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral", "smollm3", "gemma",
                                        "gemma2", "gemma3_text", "phi3"])
def test_pad_token_id_defaults_as_transformers(model_type):
    """A config.json without pad_token_id gets the family's default, as its transformers config
    class gives it (the embedding's padding_idx, which full fine-tuning leaves alone); one that
    says null gets none."""
    from transformers import AutoConfig

    tiny = dict(vocab_size=130_000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=48, head_dim=16)
    theirs = AutoConfig.for_model(model_type, **tiny)
    assert LlamaConfig(model_type=model_type, **tiny).pad_token_id == theirs.pad_token_id
    assert LlamaConfig(model_type=model_type, **tiny, pad_token_id=None).pad_token_id is None
    small = LlamaConfig(model_type=model_type, **dict(tiny, vocab_size=96))
    assert small.pad_token_id == (0 if model_type.startswith("gemma") else None)


def test_logit_softcapping_is_refused_outside_gemma2():
    from py_engine.models.bert_config import ConfigError

    tiny = dict(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=48)
    with pytest.raises(ConfigError, match="'final_logit_softcapping' is 30.0: logit soft-capping is not supported"):
        LlamaConfig(model_type="gemma3_text", **tiny, final_logit_softcapping=30.0)
    with pytest.raises(ConfigError, match="'attn_logit_softcapping' must be a positive number or null, got 0"):
        LlamaConfig(model_type="gemma2", **tiny, attn_logit_softcapping=0)


@pytest.mark.parametrize("model_type", ["recurrent_gemma", "gemma3"])
def test_other_gemmas_are_refused_naming_the_supported(tmp_path, model_type):
    tiny_checkpoint("gemma", tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"gemma"', f'"{model_type}"')
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=rf"'{model_type}' is not a supported decoder; "
                                              r"supported: Llama \(llama, qwen2, qwen3, mistral, smollm3\), Gemma \(gemma, gemma2, gemma3_text\), .*GPT-2"):
        DecoderCheckpoint.load(tmp_path)


def test_bad_window_and_activation_are_refused():
    from py_engine.models.bert_config import ConfigError

    tiny = dict(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                intermediate_size=48)
    with pytest.raises(ConfigError, match="'sliding_window' must be positive or null, got 0"):
        LlamaConfig(**tiny, model_type="mistral", sliding_window=0)
    with pytest.raises(ConfigError, match="hidden_act 'relu' is not supported"):
        LlamaConfig(**tiny, model_type="gemma", hidden_act="relu")
