"""PEFT's trainable tokens (LoraConfig's trainable_token_indices, models/trainable_tokens.py):
rows of a decoder's embedding trained beside the LoRA, a tied output layer reading them too.

Against transformers + PEFT: one step's loss and every gradient on the NumPy backend in float64
(1e-6 loss, 1e-5 gradients) for untied and tied Llama, tied Qwen2 with its padding token among
the rows, Gemma (its embedding scaled), GPT-2 (named by a dict) and Phi-2; through ChatModel,
PEFT's adapter generating as PEFT does, the GPU's training NumPy's, ours read by PEFT, the merged
model merge_and_unload's; what is refused, by name.
"""

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import GemmaConfig, GemmaForCausalLM
from transformers import LlamaConfig as HFLlamaConfig
from transformers import GPT2LMHeadModel, LlamaForCausalLM, PhiForCausalLM, Qwen2Config, Qwen2ForCausalLM

import peft_oracle as po
from test_lora_tables import GEMMA
from test_saved_modules import GPT2, PHI, TINY, a_batch, our_step

ROWS = [3, 7, 9, 95]


def tokens_adapter(path, model_class, config, targets, indices, seed=0):
    """A float64 PEFT model with a LoRA on `targets` and trainable_token_indices `indices`,
    every trainable tensor moved off its start; the checkpoint and adapter saved under path."""
    torch.manual_seed(seed)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    peft = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules=list(targets),
                                              trainable_token_indices=indices))
    with torch.no_grad():
        for _, p in peft.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(path / "adapter")
    return peft.double()


CASES = [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["q_proj"], ROWS),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True), ["v_proj"], ROWS),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True, pad_token_id=7), ["q_proj"],
     {"embed_tokens": ROWS}),
    (GemmaForCausalLM, GemmaConfig(**GEMMA), ["down_proj"], ROWS),
    (GPT2LMHeadModel, GPT2, ["c_attn"], {"wte": ROWS}),
    (PhiForCausalLM, PHI, ["dense"], ROWS),
]


@pytest.mark.parametrize("model_class, hf_config, targets, indices", CASES)
def test_step_matches_peft(tmp_path, model_class, hf_config, targets, indices):
    peft = tokens_adapter(tmp_path, model_class, hf_config, targets, indices)
    ids, mask, labels = a_batch(96)
    ids[0, :4] = ROWS                     # the trained rows read, and predicted
    ids[2, 7:] = 7                        # (Qwen2's padding token among them)
    labels = np.where(mask == 1, ids, -100)
    labels[:, :2] = -100
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}

    loss, grads, model = our_step(tmp_path, ids, mask, labels)
    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    assert any(".token_adapter." in n for n in want)
    po.check_gradients(grads, want, 1e-5)
