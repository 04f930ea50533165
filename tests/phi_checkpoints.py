"""Tiny random PhiForCausalLM checkpoints made offline with transformers, for the Phi-2 family
tests: partial rotary (rotary_dim < head_dim), non-trivial LayerNorms and biases (the head's
too), an untied head, saved with save_pretrained (safetensors)."""

import torch
from transformers import PhiConfig, PhiForCausalLM

# head_dim 8, partial_rotary_factor 0.5: 4 of each head's 8 dimensions rotate. No dropout
# unless a test asks for it: the training-mode oracles must be comparable.
TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, partial_rotary_factor=0.5,
            hidden_act="gelu_new", bos_token_id=95, eos_token_id=95, resid_pdrop=0.0,
            embd_pdrop=0.0, attention_dropout=0.0, tie_word_embeddings=False)


def tiny_phi(path, seed=0, **overrides):
    """A PhiForCausalLM (float64, eval) saved to `path`."""
    torch.manual_seed(seed)
    values = dict(TINY, **overrides)
    factor = values.pop("partial_rotary_factor")
    config = PhiConfig(**values, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "partial_rotary_factor": factor})
    model = PhiForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.double().eval()
