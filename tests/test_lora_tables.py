"""PEFT's LoRA on a language model's token embedding (lora_embedding_A / lora_embedding_B) and
on its output layer (lora_A / lora_B on lm_head), beside or without the LoRA on its linears
(models/lora_tables.py).

Against transformers + PEFT: one step's loss and every gradient on the NumPy backend in float64
(bounds as test_saved_modules': 1e-6 loss, 1e-5 gradients) for untied and tied Llama and Qwen2
checkpoints, Gemma (its embedding scaled), Phi-2 (the head's bias) and GPT-2 (tied, Conv1D);
the GPU's (lavapipe) against NumPy's; through ChatModel, an adapter PEFT saved (its copies of
the base tables included) read, generating as PEFT does, trained and saved for PEFT to read;
fresh adapters started as PEFT starts them; what is refused, by name.
"""

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import GemmaConfig, GemmaForCausalLM
from transformers import LlamaConfig as HFLlamaConfig
from transformers import GPT2LMHeadModel, LlamaForCausalLM, PhiForCausalLM, Qwen2Config, Qwen2ForCausalLM

import peft_oracle as po
from test_saved_modules import GPT2, PHI, TINY, a_batch, our_step

GEMMA = dict(TINY, head_dim=8, hidden_activation="gelu_pytorch_tanh")


def tables_adapter(path, model_class, config, targets, seed=0, **options):
    """A float64 PEFT model of a fresh checkpoint (saved under path / "model") with a LoRA on
    `targets`, every LoRA tensor moved off its starting value (PEFT starts lora_B, and an
    embedding's lora_embedding_A, at zero: the other's gradient would be zero); the adapter
    saved under path / "adapter"."""
    torch.manual_seed(seed)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    peft = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules=list(targets),
                                              **options))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(path / "adapter")
    return peft.double()


CASES = [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["q_proj", "v_proj", "embed_tokens", "lm_head"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["embed_tokens"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["lm_head"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True),
     ["v_proj", "embed_tokens", "lm_head"], {}),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["lm_head"],
     dict(rank_pattern={"lm_head": 2}, alpha_pattern={"lm_head": 6})),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["embed_tokens", "o_proj"],
     dict(use_rslora=True)),
    (GemmaForCausalLM, GemmaConfig(**GEMMA), ["embed_tokens", "lm_head", "down_proj"], {}),
    (PhiForCausalLM, PHI, ["embed_tokens", "lm_head", "dense"], dict(bias="lora_only")),
    (GPT2LMHeadModel, GPT2, ["c_attn", "wte", "lm_head"], dict(fan_in_fan_out=True)),
    (GPT2LMHeadModel, GPT2, "^(transformer.wte|lm_head)$", {}),
]


@pytest.mark.parametrize("model_class, hf_config, targets, options", CASES)
def test_step_matches_peft(tmp_path, model_class, hf_config, targets, options):
    peft = tables_adapter(tmp_path, model_class, hf_config,
                          targets if isinstance(targets, list) else [targets], **options) \
        if isinstance(targets, list) else _regex_adapter(tmp_path, model_class, hf_config, targets)
    ids, mask, labels = a_batch(96)
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}

    loss, grads, model = our_step(tmp_path, ids, mask, labels)
    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    assert any("lora_embedding" in n or n.startswith("lm_head.lora") for n in want)
    po.check_gradients(grads, want, 1e-5)


def _regex_adapter(path, model_class, config, pattern):
    torch.manual_seed(0)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    peft = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules=pattern))
    with torch.no_grad():
        for _, p in peft.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(path / "adapter")
    return peft.double()
