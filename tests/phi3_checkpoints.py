"""Tiny random Phi3ForCausalLM checkpoints made offline with transformers, for the Phi-3 family
tests: fused qkv_proj and gate_up_proj, grouped-query attention, non-trivial RMSNorm weights, and
the rope scaling variants Phi-3 checkpoints ship (none, as Phi-3-mini-4k; LongRoPE, as
Phi-3-mini-128k and Phi-3.5-mini, with a short original_max_position_embeddings so that tests
reach the long factors; and with Phi-4-mini's partial rotary embedding, half of each head
turning), saved with save_pretrained (safetensors)."""

import torch
from transformers import Phi3Config, Phi3ForCausalLM

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
            original_max_position_embeddings=64, bos_token_id=1, eos_token_id=95,
            pad_token_id=0, tie_word_embeddings=False)
HALF = TINY["hidden_size"] // TINY["num_attention_heads"] // 2
ORIGINAL = 12          # LongRoPE's switch: sequences longer than this use the long factors


def longrope(kind="longrope", half=HALF, **extra):
    """A LongRoPE rope_scaling as Phi-3-mini-128k's config.json spells it (its own factors, one
    per rotated pair of dimensions: `half`). The older spellings ("su", "yarn") pass
    transformers' check only with the switch inside rope_scaling too."""
    g = torch.Generator().manual_seed(11)
    short = (1.0 + 0.3 * torch.rand(half, generator=g, dtype=torch.float64)).tolist()
    long = (1.0 + 8.0 * torch.rand(half, generator=g, dtype=torch.float64)).tolist()
    return dict(rope_scaling=dict({"type": kind, "short_factor": short, "long_factor": long}, **extra),
                original_max_position_embeddings=ORIGINAL)


CASES = {"no-scaling": {}, "longrope": longrope(),
         "su": longrope("su", original_max_position_embeddings=ORIGINAL),
         "yarn": longrope("yarn", original_max_position_embeddings=ORIGINAL),
         "longrope-attention-factor": longrope(attention_factor=1.3),
         # Phi-4-mini: partial_rotary_factor (0.75 there), LongRoPE over the rotated dimensions
         "partial-longrope": dict(longrope(half=HALF // 2), partial_rotary_factor=0.5)}


def tiny_phi3(path, seed=0, **overrides):
    """A Phi3ForCausalLM (float64, eval) saved to `path`."""
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(Phi3Config(**dict(TINY, **overrides)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.double().eval()
