"""The Phi-2 family's training step against code we did not write, on tiny random
PhiForCausalLM checkpoints (tests/phi_checkpoints.py), NumPy backend in float64: a LoRA step's
loss and every LoRA gradient against transformers + PEFT (with and without dropout, the engine's
masks put into transformers), a full fine-tuning step's gradients (the head's bias too) against
torch autograd, adapters both ways with PEFT, and the merged export in transformers."""

import numpy as np
import pytest

import peft_oracle as po
import torch
from transformers import PhiForCausalLM

from phi_checkpoints import TINY, tiny_phi
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.lora_config import LoraConfig
from py_engine.models.phi import PhiModel
from test_gpt2_lora_oracle import (   # any decoder family's helpers
    a_batch, check_adapters_both_ways, check_merged_export, engine_step, patch_attention_dropout,
    peft_adapter, relative, torch_step)

V = TINY["vocab_size"]
assert V == 96                   # a_batch draws ids below GPT-2's tiny vocabulary: the same size
DEFAULT = ["q_proj", "v_proj", "fc1", "fc2"]                      # PEFT's default for phi
ALL = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
# transformers' causal-LM loss casts the logits to float32 even in a float64 model, so the
# agreement stops near float32 precision: the Llama family's bounds.
LOSS_BOUND, GRAD_BOUND = 1e-6, 1e-5


def peft_phi(path, targets, lora=None, **overrides):
    """The tiny checkpoint (config `overrides`) under path / "model" and a PEFT adapter (lora_B
    non-zero; PEFT's other options in `lora`) under path / "adapter"; returns the PEFT model in
    float64."""
    return peft_adapter(tiny_phi(path / "model", **overrides), path, targets, **(lora or {}))


def peft_grads(peft):
    return {n.replace("base_model.model.", "").replace(".default", ""): p.grad.numpy()
            for n, p in peft.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("targets, overrides", [
    (DEFAULT, {}), (ALL, dict(hidden_size=40, partial_rotary_factor=0.4)),
    (["dense", "k_proj"], dict(num_key_value_heads=2, num_hidden_layers=3)),
    (DEFAULT, dict(lora=dict(bias="all"))),    # the norms' and the head's biases train too
])
def test_lora_step_matches_peft(tmp_path, targets, overrides):
    overrides = dict(overrides)
    peft = peft_phi(tmp_path, targets, lora=overrides.pop("lora", None), **overrides)
    ids, mask, labels = a_batch()
    want_loss = torch_step(peft, ids, mask, labels)
    want = peft_grads(peft)

    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = PhiModel(checkpoint.config, LoraConfig.from_peft_dict(adapter_config))
    loss, grads = engine_step(model, checkpoint, tensors, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    assert set(want) == set(model.trainable)
    po.check_gradients(grads, want, GRAD_BOUND)


class Multiply(torch.nn.Module):
    """A dropout module replaced by the engine's masks, one per call in order (Phi's
    resid_dropout serves the attention branch, then the MLP branch): x times the multiplier."""

    def __init__(self, multipliers, shape):
        super().__init__()
        self.multipliers = [torch.as_tensor(m).reshape(shape) for m in multipliers]
        self.calls = 0

    def forward(self, x):
        m = self.multipliers[self.calls % len(self.multipliers)]
        self.calls += 1
        return x * m


def inject_masks(hf, saved, B, T, monkeypatch):
    """Put the engine's dropout masks into a PhiForCausalLM: its embedding and residual dropout
    modules replaced, and transformers' eager attention patched to multiply the attention
    probabilities by the engine's [B, H, T, T] mask."""
    import transformers.models.phi.modeling_phi as phi_module

    h = hf.config.hidden_size
    hf.model.embed_dropout = Multiply([saved["emb_drop"].multiplier], (B, T, h))
    for layer, s in zip(hf.model.layers, saved["layers"]):
        layer.resid_dropout = Multiply([s["attn_drop"].multiplier, s["mlp_drop"].multiplier], (B, T, h))
    patch_attention_dropout(hf, phi_module, saved, monkeypatch)


DROPOUT = dict(embd_pdrop=0.2, resid_pdrop=0.3, attention_dropout=0.25)


def test_lora_step_with_dropout_matches_peft_with_the_same_masks(tmp_path, monkeypatch):
    """Embedding, residual and attention dropout on: transformers + PEFT in train mode with the
    engine's masks in place of its dropout gives the engine's loss and LoRA gradients."""
    peft = peft_phi(tmp_path, ALL, **DROPOUT)
    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    c = checkpoint.config
    assert (c.embd_pdrop, c.resid_pdrop, c.attention_dropout) == (0.2, 0.3, 0.25)
    model = PhiModel(c, LoraConfig.from_peft_dict(adapter_config))
    ids, mask, labels = a_batch()
    saved = {}
    loss, grads = engine_step(model, checkpoint, tensors, ids, mask, labels, seed=5, saved_into=saved)
    first = saved["layers"][0]
    for site, rate in ((saved["emb_drop"], 0.2), (first["attn_drop"], 0.3), (first["mlp_drop"], 0.3),
                       (first["attn"].site, 0.25)):
        assert abs(np.mean(site.multiplier == 0) - rate) < 0.1
    assert not np.array_equal(first["attn_drop"].multiplier, first["mlp_drop"].multiplier)

    inject_masks(peft.base_model.model, saved, *ids.shape, monkeypatch)
    want_loss = torch_step(peft, ids, mask, labels)
    want = peft_grads(peft)
    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    assert set(want) == set(model.trainable)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= GRAD_BOUND, name

    # The masks matter: without them (rates 0) the gradients differ by far more than the bound.
    still = PhiModel(DecoderCheckpoint.load(tmp_path / "model").config, model.lora, dropout=0.0)
    _, plain = engine_step(still, checkpoint, tensors, ids, mask, labels, seed=5)
    assert min(relative(plain[name], ref) for name, ref in want.items()) > 100 * GRAD_BOUND


@pytest.mark.parametrize("overrides", [{}, dict(tie_word_embeddings=True), DROPOUT])
def test_full_finetuning_step_matches_torch(tmp_path, overrides, monkeypatch):
    """Every weight's gradient against torch autograd, the head's weight and bias included."""
    hf = tiny_phi(tmp_path, **overrides)
    ids, mask, labels = a_batch()
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = PhiModel(checkpoint.config, None)
    saved = {}
    loss, grads = engine_step(model, checkpoint, {}, ids, mask, labels, seed=7, saved_into=saved)
    if overrides is DROPOUT:
        inject_masks(hf, saved, *ids.shape, monkeypatch)
    want_loss = torch_step(hf, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    torch_grads = dict(hf.named_parameters())
    assert set(model.trainable) == set(torch_grads)
    assert "lm_head.bias" in model.trainable
    for name in model.trainable:
        assert relative(grads[name], torch_grads[name].grad.numpy()) <= GRAD_BOUND, name


def test_peft_adapter_loads_and_ours_loads_in_peft(tmp_path):
    """A PEFT adapter applied here gives PEFT's logits; the same weights saved here as an
    adapter load in PEFT and give them again."""
    check_adapters_both_ways(tmp_path, peft_phi(tmp_path, ALL), PhiModel, tiny_phi, ALL)


def test_merged_export_loads_in_transformers(tmp_path):
    """A PEFT adapter merged and saved here is, to transformers, PEFT's merged model (the head's
    bias kept)."""
    check_merged_export(tmp_path, peft_phi(tmp_path, ALL), PhiForCausalLM)
