"""The Phi-3 family's training step against code we did not write, on tiny random
Phi3ForCausalLM checkpoints (tests/phi3_checkpoints.py), NumPy backend in float64: a LoRA step's
loss and every LoRA gradient against transformers + PEFT (LoRA on the fused qkv_proj and
gate_up_proj under PEFT's names), with no rope scaling and with LongRoPE's short and long
factors; a full fine-tuning step's gradients against torch autograd; adapters both ways with
PEFT; the merged export loaded by transformers as a Phi3ForCausalLM."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import Phi3ForCausalLM

from conftest import run
from phi3_checkpoints import CASES, ORIGINAL, TINY, tiny_phi3
from py_engine.formats.peft_adapter import load_adapter, read_adapter_config, save_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from test_gpt2_lora_oracle import (a_batch, adapter_decoder, engine_step, peft_adapter, relative,
                                   torch_step)

V = TINY["vocab_size"]
ALL = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
# transformers keeps RMSNorm and the rotary tables in float32 and casts the logits to float32
# for the loss even in a float64 model: the Llama family's bounds.
LOSS_BOUND, GRAD_BOUND = 1e-6, 1e-5
# (rope case, sequence length): LongRoPE's short factors, and its long ones past ORIGINAL
STEPS = [("no-scaling", 10), ("longrope", 10), ("longrope", ORIGINAL + 4), ("partial-longrope", ORIGINAL + 4)]


def peft_phi3(path, targets, case="no-scaling"):
    """The tiny checkpoint under path / "model" and a PEFT adapter (lora_B non-zero) under
    path / "adapter"; returns the PEFT model in float64."""
    return peft_adapter(tiny_phi3(path / "model", **CASES[case]), path, targets)


def peft_grads(peft):
    return {n.replace("base_model.model.", "").replace(".default", ""): p.grad.numpy()
            for n, p in peft.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("case, T", STEPS)
@pytest.mark.parametrize("targets", [["qkv_proj"], ALL])
def test_lora_step_matches_peft(tmp_path, targets, case, T):
    peft = peft_phi3(tmp_path, targets, case)
    ids, mask, labels = a_batch(T)
    want_loss = torch_step(peft, ids, mask, labels)
    want = peft_grads(peft)

    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    assert sorted(adapter_config["target_modules"]) == sorted(targets)
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = LlamaModel(checkpoint.config, LoraConfig.from_peft_dict(adapter_config))
    loss, grads = engine_step(model, checkpoint, tensors, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    assert set(want) == set(model.trainable)
    assert any(".qkv_proj.lora_A" in name for name in want)       # one adapter on the fused matrix
    for name, ref in want.items():
        assert relative(grads[name], ref) <= GRAD_BOUND, name


def with_padding_tokens(batch):
    """The batch with pad_token_id among its real tokens: transformers' embedding gives that
    row no gradient (padding_idx)."""
    ids, mask, labels = batch
    ids[0, 4] = ids[1, 2] = TINY["pad_token_id"]
    return ids, mask, np.where(mask == 1, np.where(labels == -100, -100, ids), -100)


@pytest.mark.parametrize("case, T", STEPS)
def test_full_finetuning_step_matches_torch(tmp_path, case, T):
    hf = tiny_phi3(tmp_path, **CASES[case])
    ids, mask, labels = with_padding_tokens(a_batch(T))
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = LlamaModel(checkpoint.config, None)
    loss, grads = engine_step(model, checkpoint, {}, ids, mask, labels)
    want_loss = torch_step(hf, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    torch_grads = dict(hf.named_parameters())
    assert set(model.trainable) == set(torch_grads)
    for name in model.trainable:
        assert relative(grads[name], torch_grads[name].grad.numpy()) <= GRAD_BOUND, name
    assert not grads["model.embed_tokens.weight"][TINY["pad_token_id"]].any()


def test_peft_adapter_loads_and_ours_loads_in_peft(tmp_path):
    """A PEFT adapter on every fused and plain projection applied here gives PEFT's logits;
    the same weights saved here as an adapter load in PEFT (PEFT's module names) and give
    them again."""
    peft = peft_phi3(tmp_path, ALL, "longrope").eval()
    ids = np.random.default_rng().integers(0, V, ORIGINAL + 3).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()

    decoder, lora, tensors = adapter_decoder(tmp_path)
    assert relative(run(decoder.prefill(ids)), want) <= 1e-6     # the adapter file holds float32

    model = LlamaModel(decoder.config, lora)
    save_adapter(tmp_path / "ours", model.lora.to_peft_dict(), tensors)
    ours = read_adapter_config(tmp_path / "ours")
    assert sorted(ours["target_modules"]) == sorted(ALL)
    base = tiny_phi3(tmp_path / "base", **CASES["longrope"])
    reloaded = PeftModel.from_pretrained(base.float(), tmp_path / "ours").double().eval()
    with torch.no_grad():
        again = reloaded(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()
    assert relative(again, want) <= 1e-6


def test_merged_export_loads_in_transformers(tmp_path):
    """A PEFT adapter merged and saved here is, to transformers, PEFT's merged Phi3ForCausalLM."""
    from py_engine.export.merged import load_merged, save_merged

    from tiny_chat import train_tokenizer

    peft = peft_phi3(tmp_path, ALL, "longrope").eval()
    train_tokenizer().save(str(tmp_path / "model" / "tokenizer.json"))   # a chat model has one
    ids = np.random.default_rng().integers(0, V, ORIGINAL + 3).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids])).logits[0].numpy()
    save_merged(load_merged(tmp_path / "model", tmp_path / "adapter"), tmp_path / "merged")
    saved = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert saved["model_type"] == "phi3" and saved["architectures"] == ["Phi3ForCausalLM"]
    merged = Phi3ForCausalLM.from_pretrained(tmp_path / "merged").double().eval()
    with torch.no_grad():
        got = merged(input_ids=torch.as_tensor([ids])).logits[0].numpy()
    assert relative(got, want) <= 1e-6          # the merged weights are float32
