"""Mistral (sliding window), Gemma (GeGLU, (1 + weight) RMSNorm, scaled embeddings, one KV
head of 256), Qwen3 (QK-norm), Gemma 3 (text), Gemma 2 (soft caps) and SmolLM3 (NoPE layers) on the GPU backend (wgpu-native; lavapipe here): a LoRA step and a full fine-tuning
step recorded on the GPU against the NumPy backend in float64 (which
tests/test_mistral_gemma_lora_oracle.py checks against transformers + PEFT), 32 greedy tokens
from the GPU decoder equal to transformers' (Mistral's prompt + generation far past its window),
and ChatModel's training run on the GPU equal to NumPy's (tests/test_mistral_gemma_browser.py
runs it in Chromium)."""

import numpy as np
import pytest
import torch

from conftest import run
from mistral_gemma_checkpoints import VOCAB, WINDOW, tiny_checkpoint
from py_engine.formats.peft_adapter import load_adapter
from py_engine.generate import GpuDecoder
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from test_chat_model import check_gpu_run
from test_gpt2_gpu import check, gpu_step
from test_mistral_gemma_lora_oracle import ALL, a_batch, engine_step, peft_model

FAMILIES = ["mistral", "gemma", "qwen3", "gemma3", "gemma2", "smollm3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_step_on_the_gpu_matches_numpy(tmp_path, device, family):
    """Llama's bounds (loss 1e-5, gradients 1e-4), sequences three windows long."""
    peft_model(tmp_path, family, ALL)
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = LlamaModel(checkpoint.config, LoraConfig.from_peft_dict(config))
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, tensors, ids, mask, labels)
    got_loss, got = gpu_step(device, model, checkpoint, tensors, ids, mask, labels)
    check(got_loss, got, want_loss, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_full_finetuning_step_on_the_gpu_matches_numpy(tmp_path, device, family):
    tiny_checkpoint(family, tmp_path)
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = LlamaModel(checkpoint.config, None)
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, {}, ids, mask, labels)
    got_loss, got = gpu_step(device, model, checkpoint, {}, ids, mask, labels)
    check(got_loss, got, want_loss, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_greedy_generation_matches_transformers(tmp_path, device, family):
    hf = tiny_checkpoint(family, tmp_path, initializer_range=0.2)
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, VOCAB, 2 * WINDOW + 1)]
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=32, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=32)
    decoder = run(GpuDecoder.load(device, tmp_path, max_length=64))
    tokens, logits = [], run(decoder.prefill(prompt))
    for _ in range(32):
        tokens.append(int(np.argmax(logits)))
        logits = run(decoder.step(tokens[-1]))
    assert tokens == out[0, len(prompt):].tolist(), family


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_model_on_the_native_gpu_matches_numpy(tmp_path, family):
    from tiny_chat import tiny_chat_dir

    check_gpu_run(tiny_chat_dir(tmp_path, family=family, initializer_range=0.2), ALL)
