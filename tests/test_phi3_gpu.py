"""The Phi-3 family on the GPU backend (wgpu-native; lavapipe here): one LoRA step on the fused
projections and one full fine-tuning step recorded on the GPU against the NumPy backend in
float64 (which tests/test_phi3_lora_oracle.py checks against transformers + PEFT), with
LongRoPE's short and long factors; 32 greedy tokens from the GPU decoder equal to transformers'
(crossing LongRoPE's switch); ChatModel's training run on the native GPU equal to NumPy's."""

import numpy as np
import pytest
import torch

from conftest import run
from phi3_checkpoints import CASES, ORIGINAL, TINY, tiny_phi3
from py_engine.formats.peft_adapter import load_adapter
from py_engine.generate import GpuDecoder
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import CausalTrainConfig, ChatModel
from test_chat_model import random_examples
from test_gpt2_gpu import check, gpu_step
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


@pytest.mark.parametrize("case, half", [("no-scaling", False), ("longrope", False), ("longrope", True)])
def test_gpu_greedy_generation_matches_transformers(tmp_path, device, case, half):
    hf = tiny_phi3(tmp_path, initializer_range=0.2, **CASES[case])
    if half:     # transformers on the same f16-rounded linear weights
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if p.dim() == 2 and "embed_tokens" not in name:
                    p.copy_(p.half().double())
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, TINY["vocab_size"], 5)]
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=32, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=32)
    decoder = run(GpuDecoder.load(device, tmp_path, half=half, max_length=64))
    tokens, logits = [], run(decoder.prefill(prompt))
    for _ in range(32):
        tokens.append(int(np.argmax(logits)))
        logits = run(decoder.step(tokens[-1]))
    assert tokens == out[0, len(prompt):].tolist()
    if case == "longrope":      # both sides of the switch were recorded
        assert sorted(decoder._decode) == [False, True]


def host_run(path, examples, prompt, backend):
    """(losses, greedy reply) of two LoRA epochs on every Phi-3 projection, through ChatModel."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=ALL)
    chat = run(ChatModel.create(path, lora=lora, backend=backend, seed=1))
    history = run(chat.fit(examples, CausalTrainConfig(epochs=2, lr=2e-2, batch_size=4)))
    return [h.loss for h in history], run(chat.generate(prompt, max_new_tokens=10))


def test_phi3_chat_model_on_the_native_gpu_matches_numpy(tmp_path):
    """ChatModel's LoRA training run and greedy reply on the GPU backend equal the NumPy
    backend's (tests/test_phi3_browser.py runs it in Chromium)."""
    path = tiny_chat_dir(tmp_path, "phi3", initializer_range=0.2)
    examples = random_examples(8, 320)
    prompt = "What is the capital of France?"
    losses, want = host_run(path, examples, prompt, "numpy")
    gpu_losses, got = host_run(path, examples, prompt, "gpu")
    np.testing.assert_allclose(gpu_losses, losses, rtol=1e-4)
    assert got.ids == want.ids
