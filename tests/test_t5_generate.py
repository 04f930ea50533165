"""T5 generation (generate/seq2seq.py: the encoder once, cross keys and values once, the
decoder one token at a time with its KV cache) against transformers' T5ForConditionalGeneration:
every step's logits in float64, and 32 greedy tokens equal to its generate()."""

import numpy as np
import pytest
import torch

from conftest import run
from py_engine.formats.peft_adapter import load_adapter
from py_engine.generate import NumpySeq2SeqDecoder
from py_engine.generate.generation import generate
from t5_checkpoints import TINY, tiny_t5
from test_t5_lora_oracle import ALL, peft_t5
from test_t5_reference import float64_layer_norm, relative

V = TINY["vocab_size"]


class _Ids:
    """A tokenizer stand-in for generate(): the ids themselves are the text."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_cached_decoding_logits_match_transformers(tmp_path, monkeypatch):
    """Past max_distance (20) on both sides: the decoder's buckets with a cache offset."""
    float64_layer_norm(monkeypatch)
    hf = tiny_t5(tmp_path)
    rng = np.random.default_rng()
    source = rng.integers(2, V, 23).tolist()
    target = rng.integers(2, V, 26).tolist()
    decoder = NumpySeq2SeqDecoder.load(tmp_path, dtype=np.float64)
    got = [run(decoder.prefill(source))] + [run(decoder.step(t)) for t in target]
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor([source]),
                  decoder_input_ids=torch.as_tensor([[0] + target])).logits[0].numpy()
    assert relative(np.stack(got), want) <= 1e-12          # measured ~1e-15


@pytest.mark.parametrize("adapter", [False, True, "lm_head"])
def test_greedy_generation_matches_transformers(tmp_path, adapter):
    """32 greedy tokens (no eos stop) equal transformers' generate, with the base model and
    with a PEFT adapter on every linear (and on the head). Equal stack depths: transformers' generate() sizes its
    cache by the encoder's num_layers and fails when the decoder has more (5.23); the cached
    logits test above covers the deeper decoder."""
    same = dict(num_decoder_layers=TINY["num_layers"])
    if adapter:
        hf = peft_t5(tmp_path, ALL + (["lm_head"] if adapter == "lm_head" else []), **same).eval()
        config, tensors, _ = load_adapter(tmp_path / "adapter")
        from py_engine.models.checkpoint import DecoderCheckpoint
        checkpoint = DecoderCheckpoint.load(tmp_path / "model")
        params = {n: np.frombuffer(checkpoint.floats(n), np.float32).reshape(checkpoint.shape(n))
                  for n in checkpoint.names()}
        params.update({n: np.asarray(v, np.float32).reshape(s) for n, (s, v) in tensors.items()})
        decoder = NumpySeq2SeqDecoder.from_params(checkpoint.config, params,
                                                  lora_scaling=config["lora_alpha"] / config["r"],
                                                  dtype=np.float64)
    else:
        hf = tiny_t5(tmp_path, **same)
        decoder = NumpySeq2SeqDecoder.load(tmp_path, dtype=np.float64)
    source = [int(t) for t in np.random.default_rng(7).integers(2, V, 9)]
    with torch.no_grad():
        out = hf.generate(input_ids=torch.as_tensor([source]), max_new_tokens=32, do_sample=False,
                          num_beams=1, eos_token_id=None, min_new_tokens=32)
    result = run(generate(decoder, _Ids(), source, max_new_tokens=32, greedy=True))
    assert out[0, 0].item() == 0                       # transformers starts from the pad token
    assert result.ids == out[0, 1:].tolist()
