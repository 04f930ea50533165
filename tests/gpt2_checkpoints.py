"""Tiny random GPT2LMHeadModel checkpoints made offline with transformers, for the GPT-2 family
tests: non-trivial LayerNorms and biases, saved with save_pretrained (safetensors, tied head)."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

# No dropout: the engine's GPT-2 step has none, and the training-mode oracles must be comparable.
TINY = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=95,
            eos_token_id=95, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def tiny_gpt2(path, seed=0, **overrides):
    """A GPT2LMHeadModel (float64, eval) saved to `path`."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**dict(TINY, **overrides)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.double().eval()
