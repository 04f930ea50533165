"""Mistral (sliding window shorter than the sequences), Gemma (GeGLU, (1 + weight) RMSNorm,
scaled embeddings, tied head, one KV head of 256), Qwen2 with a window and Qwen3 (QK-norm,
heads wider than hidden_size / heads) and Gemma 3 (QK-norm, sandwich norms, a sliding layer
with its own rotary base, scores scaled by query_pre_attn_scalar), Gemma 2 (sandwich norms,
a sliding layer, soft-capped attention scores and logits), SmolLM3 (a layer without rotary
embedding, windowed): the training step
against code we did not write, NumPy backend in float64. A LoRA step's loss and every LoRA
gradient against transformers + PEFT, a full fine-tuning step against torch autograd, adapters
both ways with PEFT and the merged export loaded by transformers. Bounds as for Llama
(transformers keeps RMSNorm in float32 even in a float64 model): loss 1e-6, gradients 1e-5."""

import numpy as np
import pytest
import torch
from peft import PeftModel

from conftest import run
from mistral_gemma_checkpoints import FAMILIES, VOCAB, WINDOW, hf_model, tiny_checkpoint
from py_engine.formats.peft_adapter import load_adapter, read_adapter_config, save_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.llama import LlamaModel
from py_engine.models.lora_config import LoraConfig
from test_gpt2_lora_oracle import adapter_decoder, engine_step, peft_adapter, relative, torch_step

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LOSS_BOUND, GRAD_BOUND = 1e-6, 1e-5
# Our float64 logits against PEFT's, whose RMSNorms compute in float32: Gemma 3 has six per
# layer (input, query, key, after the attention, before and after the MLP), and its last logits
# differ by up to 2.3e-6 over 1,500 random prompts (1.6% over 1e-6; Qwen3 4.2e-7, Gemma 1.6e-7)
LOGIT_BOUNDS = {"gemma3": 5e-6}


def peft_model(path, family, targets):
    """The tiny checkpoint under path / "model" and a PEFT adapter (lora_B non-zero) under
    path / "adapter"; returns the PEFT model in float64."""
    base = hf_model(family)
    base.save_pretrained(path / "model", safe_serialization=True)
    return peft_adapter(base, path, targets)


def a_batch(T=3 * WINDOW):
    """Sequences three windows long, one right-padded, the prompt masked. No id 0: Gemma's
    embedding has padding_idx = pad_token_id = 0, whose row torch never gives a gradient (the
    engine does, as to any other id it meets)."""
    rng = np.random.default_rng()
    B = 3
    ids = rng.integers(1, VOCAB, (B, T))
    ids[0, 4] = ids[0, 2]                               # a repeated id: its rows add up
    mask = np.ones((B, T), np.int64)
    mask[2, T - 4:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100
    return ids, mask, labels


@pytest.mark.parametrize("family, targets", [
    ("mistral", ["q_proj", "v_proj"]), ("mistral", ALL), ("gemma", ALL), ("qwen2-window", ALL),
    ("qwen3", ALL), ("qwen3", ["q_proj", "k_proj"]), ("gemma3", ALL), ("gemma2", ALL),
    ("smollm3", ALL)])
def test_lora_step_matches_peft(tmp_path, family, targets):
    peft = peft_model(tmp_path, family, targets)
    ids, mask, labels = a_batch()
    want_loss = torch_step(peft, ids, mask, labels)
    want = {n.replace("base_model.model.", "").replace(".default", ""): p.grad.numpy()
            for n, p in peft.named_parameters() if p.requires_grad}

    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = LlamaModel(checkpoint.config, LoraConfig.from_peft_dict(adapter_config))
    loss, grads = engine_step(model, checkpoint, tensors, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    assert set(want) == set(model.trainable)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= GRAD_BOUND, name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_full_finetuning_step_matches_torch(tmp_path, family):
    """Every weight's gradient against torch autograd: embeddings (Gemma's through its scale,
    plus its tied head's), norms (Gemma's offsets from 1, Qwen3's per-head q_norm and k_norm),
    projections."""
    hf = tiny_checkpoint(family, tmp_path)
    ids, mask, labels = a_batch()
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = LlamaModel(checkpoint.config, None)
    loss, grads = engine_step(model, checkpoint, {}, ids, mask, labels)
    want_loss = torch_step(hf, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    torch_grads = dict(hf.named_parameters())
    tied = checkpoint.config.tie_word_embeddings
    assert set(model.trainable) == set(torch_grads) - ({"lm_head.weight"} if tied else set())
    for name in model.trainable:
        assert relative(grads[name], torch_grads[name].grad.numpy()) <= GRAD_BOUND, name


@pytest.mark.parametrize("family", ["mistral", "gemma", "qwen3", "gemma3", "gemma2", "smollm3"])
def test_peft_adapter_loads_and_ours_loads_in_peft(tmp_path, family):
    """A PEFT adapter applied here gives PEFT's logits (a sequence longer than the window);
    the same weights saved here as an adapter load in PEFT and give them again."""
    peft = peft_model(tmp_path, family, ALL).eval()
    ids = np.random.default_rng().integers(0, VOCAB, 3 * WINDOW).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()

    decoder, lora, tensors = adapter_decoder(tmp_path)
    assert relative(run(decoder.prefill(ids)), want) <= LOGIT_BOUNDS.get(family, LOSS_BOUND), ids

    model = LlamaModel(decoder.config, lora)
    save_adapter(tmp_path / "ours", model.lora.to_peft_dict(), tensors)
    assert sorted(read_adapter_config(tmp_path / "ours")["target_modules"]) == sorted(ALL)
    reloaded = PeftModel.from_pretrained(hf_model(family), tmp_path / "ours").double().eval()
    with torch.no_grad():
        again = reloaded(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()
    assert relative(again, want) <= LOSS_BOUND


@pytest.mark.parametrize("family", ["mistral", "gemma", "qwen3", "gemma3", "gemma2", "smollm3"])
def test_merged_export_loads_in_transformers(tmp_path, family):
    """A PEFT adapter merged and saved here is, to transformers, PEFT's merged model (its
    config, window and Gemma's tied head included)."""
    from transformers import AutoModelForCausalLM

    from py_engine.export.merged import load_merged, save_merged
    from tiny_chat import train_tokenizer

    peft = peft_model(tmp_path, family, ALL).eval()
    train_tokenizer().save(str(tmp_path / "model" / "tokenizer.json"))   # a chat model has one
    ids = np.random.default_rng().integers(0, VOCAB, 3 * WINDOW).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids])).logits[0].numpy()
    save_merged(load_merged(tmp_path / "model", tmp_path / "adapter"), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").double().eval()
    assert type(merged) is FAMILIES[family][0]
    with torch.no_grad():
        got = merged(input_ids=torch.as_tensor([ids])).logits[0].numpy()
    assert relative(got, want) <= LOSS_BOUND          # the merged weights are float32


def test_gguf_export_refuses_a_window_shorter_than_the_context(tmp_path):
    """llama.cpp's llama architecture attends to the whole context; a Mistral without a window
    (sliding_window null, as Mistral v0.2+ ships) exports."""
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import model_writer
    from py_engine.export.merged import ExportError, load_merged
    from tiny_chat import tiny_chat_dir

    windowed = tiny_chat_dir(tmp_path / "windowed", family="mistral")
    with pytest.raises(ExportError, match=r"sliding-window model \(sliding_window 8 < "
                                          r"max_position_embeddings 256\) is not supported"):
        model_writer(load_merged(windowed), gguf.F16, "tiny")
    plain = tiny_chat_dir(tmp_path / "plain", family="mistral", sliding_window=None)
    assert model_writer(load_merged(plain), gguf.F16, "tiny") is not None
