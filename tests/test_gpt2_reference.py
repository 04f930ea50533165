"""The GPT-2 family decoder (models/gpt2.py through the NumPy generation decoder) against
transformers' GPT2LMHeadModel: next-token logits in float64, and 32 greedy tokens."""

import numpy as np
import pytest
import torch

from conftest import run
from gpt2_checkpoints import TINY, tiny_gpt2
from py_engine.generate import NumpyDecoder
from py_engine.generate.generation import generate
from py_engine.models.checkpoint import CheckpointError, DecoderCheckpoint

CASES = {"gelu_new": {}, "distil-depth": dict(n_layer=3, n_inner=40),
         "exact-gelu": dict(activation_function="gelu")}


@pytest.fixture(params=sorted(CASES))
def checkpoint(request, tmp_path):
    return tiny_gpt2(tmp_path, **CASES[request.param]), tmp_path


def test_logits_match_transformers(checkpoint):
    check_logits(*checkpoint, TINY["vocab_size"])


def check_logits(hf, path, vocab):
    """Any decoder family: the NumPy decoder's next-token logits over a prompt and then token
    by token (its KV cache) equal transformers' `hf` in float64."""
    ids = np.random.default_rng().integers(0, vocab, 13).tolist()
    decoder = NumpyDecoder.load(path, dtype=np.float64)
    got = [run(decoder.prefill(ids[:5]))]
    got += [run(decoder.step(t)) for t in ids[5:]]
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor([ids])).logits[0, 4:].numpy()
    err = np.linalg.norm(np.stack(got) - want) / np.linalg.norm(want)
    assert err <= 1e-5, err          # measured 4.8e-16 (float64 on both sides)


class _Ids:
    """A tokenizer stand-in for generate(): the ids themselves are the text."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def hf_greedy(hf, prompt, n=32):
    """transformers' n greedy tokens after `prompt` (no end-of-text stops it)."""
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=n)
    return out[0, len(prompt):].tolist()


def numpy_greedy(path, prompt, n=32):
    """The NumPy decoder's n greedy tokens (float64) through generate()."""
    decoder = NumpyDecoder.load(path, dtype=np.float64)
    return run(generate(decoder, _Ids(), prompt, max_new_tokens=n, greedy=True)).ids


def test_greedy_generation_matches_transformers(checkpoint):
    hf, path = checkpoint
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, TINY["vocab_size"], 5)]
    assert numpy_greedy(path, prompt) == hf_greedy(hf, prompt)


def test_gpt2_model_checkpoint_names_and_conv1d_layout(tmp_path):
    """A GPT2Model checkpoint ("h.0..." names, as distilgpt2 ships) loads like GPT2LMHeadModel's;
    Conv1D weights come out as [out, in]."""
    hf = tiny_gpt2(tmp_path / "lm")
    hf.transformer.float().save_pretrained(tmp_path / "bare", safe_serialization=True)
    checkpoint = DecoderCheckpoint.load(tmp_path / "bare")
    name = "transformer.h.1.attn.c_attn.weight"
    assert checkpoint.shape(name) == (96, 32)
    got = np.frombuffer(checkpoint.floats(name), np.float32).reshape(96, 32)
    want = hf.transformer.h[1].attn.c_attn.weight.detach().float().numpy().T
    assert np.array_equal(got, want)


def test_unsupported_model_type_names_the_supported_families(tmp_path):
    tiny_gpt2(tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"gpt2"', '"gpt_neo"')
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=r"'gpt_neo' is not a supported decoder; supported: "
                                              r"Llama \(llama, qwen2, qwen3, mistral, smollm3\), .*GPT-2 \(gpt2\)"):
        DecoderCheckpoint.load(tmp_path)
