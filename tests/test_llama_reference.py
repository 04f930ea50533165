"""The NumPy Llama-family decoder against transformers: logits and 32 greedy tokens, on tiny
random Llama (GQA, untied and tied head, llama3 rope scaling) and Qwen2 (attention bias)."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from llama_reference import LlamaReference

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

CASES = {
    "llama": (LlamaForCausalLM, LlamaConfig(**TINY)),
    "llama-tied-llama3-rope": (LlamaForCausalLM, LlamaConfig(**TINY, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**TINY)),
}


@pytest.fixture(params=sorted(CASES))
def checkpoint(request, tmp_path):
    model_class, config = CASES[request.param]
    torch.manual_seed(0)
    model = model_class(config)
    with torch.no_grad():   # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model.double().eval(), tmp_path


def test_logits_match_transformers(checkpoint):
    hf, path = checkpoint
    ours = LlamaReference.load(path)
    ids = np.random.default_rng().integers(0, 96, (2, 13))
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor(ids)).logits.numpy()
    got = ours.logits(ids)
    # transformers computes RMSNorm and the rotary tables in float32 even in a float64 model,
    # so agreement stops near float32 precision (measured ~7e-8).
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-6


def test_greedy_generation_matches_transformers(checkpoint):
    hf, path = checkpoint
    ours = LlamaReference.load(path)
    # A fixed prompt: over 32 greedy steps a fresh one now and then meets two logits within
    # float32 rounding of each other, where either choice is right (transformers rounds its
    # norms to float32); the logits test above covers fresh inputs.
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, 96, 5)]
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=32, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=32)
    assert ours.generate_greedy(prompt, 32) == out[0, len(prompt):].tolist()


def test_loss_with_masked_prompt_matches_transformers(checkpoint):
    """The training loss: prompt tokens masked with -100, the vocabulary in chunks of 40."""
    hf, path = checkpoint
    ours = LlamaReference.load(path)
    rng = np.random.default_rng()
    ids = rng.integers(0, 96, (2, 11))
    labels = ids.copy()
    labels[:, :4] = -100                       # the prompt does not count
    labels[1, 9:] = -100                       # nor does padding
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor(ids), labels=torch.as_tensor(labels)).loss.item()
    assert abs(ours.loss(ids, labels, chunk=40) - want) <= 1e-6 * abs(want)
