"""The Phi-2 family on the GPU backend (wgpu-native; lavapipe here): one LoRA step and one full
fine-tuning step recorded on the GPU against the NumPy backend in float64 (which
tests/test_phi_lora_oracle.py checks against transformers + PEFT), 32 greedy tokens from the GPU
decoder equal to transformers', and ChatModel's training run equal to the host's."""

import numpy as np
import pytest

from phi_checkpoints import TINY, tiny_phi, tiny_phi_dir
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.lora_config import LoraConfig
from py_engine.models.phi import PhiModel
from test_chat_model import check_gpu_run
from test_gpt2_gpu import check, f16_rounded, gpu_greedy, gpu_step      # any decoder family's
from test_gpt2_reference import hf_greedy
from test_phi_lora_oracle import ALL, DROPOUT, a_batch, engine_step, peft_phi


@pytest.mark.parametrize("overrides, seed", [({}, 0), (DROPOUT, 11)])
def test_lora_step_on_the_gpu_matches_numpy(tmp_path, device, overrides, seed):
    """All six linears, partial rotary (phi-2's factor 0.4 over head_dim 10); with dropout the
    GPU draws the NumPy backend's masks from the same seed."""
    peft_phi(tmp_path, ALL, hidden_size=40, partial_rotary_factor=0.4, **overrides)
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = PhiModel(checkpoint.config, LoraConfig.from_peft_dict(config))
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, tensors, ids, mask, labels, seed=seed)
    got_loss, got = gpu_step(device, model, checkpoint, tensors, ids, mask, labels, seed=seed)
    check(got_loss, got, want_loss, want)


@pytest.mark.parametrize("overrides", [{}, dict(DROPOUT, num_key_value_heads=2)])
def test_full_finetuning_step_on_the_gpu_matches_numpy(tmp_path, device, overrides):
    """Every weight, the head's bias included (its gradient through the head loss's chunks)."""
    tiny_phi(tmp_path, **overrides)
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = PhiModel(checkpoint.config, None)
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, {}, ids, mask, labels, seed=3)
    got_loss, got = gpu_step(device, model, checkpoint, {}, ids, mask, labels, seed=3)
    assert "lm_head.bias" in want
    check(got_loss, got, want_loss, want)


@pytest.mark.parametrize("half", [False, True])
def test_gpu_greedy_generation_matches_transformers(tmp_path, device, half):
    hf = tiny_phi(tmp_path, initializer_range=0.2, hidden_size=40, partial_rotary_factor=0.4)
    if half:     # transformers on the same f16-rounded linear weights
        f16_rounded(hf, ("embed_tokens",))
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, TINY["vocab_size"], 5)]
    assert gpu_greedy(device, tmp_path, prompt, half) == hf_greedy(hf, prompt)


@pytest.mark.parametrize("full", [False, True])
def test_phi_chat_model_on_the_native_gpu_matches_numpy(tmp_path, full):
    """ChatModel's training run (dropout on) and greedy reply on the GPU backend equal the
    NumPy backend's (tests/test_phi_browser.py runs it in Chromium)."""
    check_gpu_run(tiny_phi_dir(tmp_path / "phi", initializer_range=0.2, **DROPOUT), ALL, full,
                  vocab=300)
