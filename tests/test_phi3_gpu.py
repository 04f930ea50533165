"""The Phi-3 family on the GPU backend (wgpu-native; lavapipe here): one LoRA step on the fused
projections and one full fine-tuning step recorded on the GPU against the NumPy backend in
float64 (which tests/test_phi3_lora_oracle.py checks against transformers + PEFT), with
LongRoPE's short and long factors; 32 greedy tokens from the GPU decoder equal to transformers'
(crossing LongRoPE's switch); ChatModel's training run on the native GPU equal to NumPy's."""

import numpy as np
import pytest

from phi3_checkpoints import CASES, ORIGINAL, TINY, tiny_phi3
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from test_chat_model import check_gpu_run
from test_gpt2_gpu import check, f16_rounded, gpu_greedy, gpu_step
from test_gpt2_reference import hf_greedy
from test_gpt2_lora_oracle import a_batch, engine_step
from test_phi3_lora_oracle import ALL, STEPS, peft_phi3, with_padding_tokens
from tiny_chat import tiny_chat_dir


@pytest.mark.parametrize("case, T", STEPS)
def test_lora_step_on_the_gpu_matches_numpy(tmp_path, device, case, T):
    peft_phi3(tmp_path, ALL, case)
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = LlamaModel(checkpoint.config, LoraConfig.from_peft_dict(config))
    ids, mask, labels = a_batch(T)
    want_loss, want = engine_step(model, checkpoint, tensors, ids, mask, labels)
    got_loss, got = gpu_step(device, model, checkpoint, tensors, ids, mask, labels)
    check(got_loss, got, want_loss, want)


def test_full_finetuning_step_on_the_gpu_matches_numpy(tmp_path, device):
    tiny_phi3(tmp_path, **CASES["longrope"])
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = LlamaModel(checkpoint.config, None)
    ids, mask, labels = with_padding_tokens(a_batch(ORIGINAL + 4))
    want_loss, want = engine_step(model, checkpoint, {}, ids, mask, labels)
    got_loss, got = gpu_step(device, model, checkpoint, {}, ids, mask, labels)
    check(got_loss, got, want_loss, want)


@pytest.mark.parametrize("case, half", [("no-scaling", False), ("longrope", False), ("longrope", True),
                                        ("partial-longrope", False)])
def test_gpu_greedy_generation_matches_transformers(tmp_path, device, case, half):
    """With LongRoPE the 37 tokens pass its switch at 12: the GPU decoder re-runs the sequence
    there, on the long factors' programs, as transformers' generate does."""
    hf = tiny_phi3(tmp_path, initializer_range=0.2, **CASES[case])
    if half:
        f16_rounded(hf, ("embed_tokens",))
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, TINY["vocab_size"], 5)]
    assert gpu_greedy(device, tmp_path, prompt, half) == hf_greedy(hf, prompt)


def test_phi3_chat_model_on_the_native_gpu_matches_numpy(tmp_path):
    """ChatModel's LoRA training run and greedy reply on the GPU backend equal the NumPy
    backend's (tests/test_phi3_browser.py runs it in Chromium)."""
    check_gpu_run(tiny_chat_dir(tmp_path, "phi3", initializer_range=0.2), ALL)
