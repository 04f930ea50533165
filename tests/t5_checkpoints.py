"""Tiny random T5ForConditionalGeneration checkpoints made offline with transformers, for the T5
family tests: FLAN-T5's layout (gated GELU, a separate lm_head, tie_word_embeddings false),
d_kv unlike d_model / num_heads, more decoder than encoder layers, few relative position buckets
with a short max_distance so long sequences reach the logarithmic and the saturated buckets, and
non-trivial layer norms."""

import json

import torch
from safetensors.torch import save_file
from transformers import T5Config, T5ForConditionalGeneration

# No dropout unless a test asks for it: the training-mode oracles must be comparable.
TINY = dict(vocab_size=96, d_model=32, d_kv=12, d_ff=40, num_layers=2, num_decoder_layers=3,
            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
            feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0)


def tiny_t5(path, seed=0, tied=False, **overrides):
    """A FLAN-T5-like checkpoint saved to `path` (config.json with tie_word_embeddings false,
    model.safetensors with its own lm_head.weight); returns transformers' model loaded from it,
    in float64 and eval mode. With `tied`, the original T5's layout: tie_word_embeddings true
    and no lm_head.weight (the head is the shared embedding, the output rescaled)."""
    torch.manual_seed(seed)
    values = dict(TINY, **overrides)
    model = T5ForConditionalGeneration(T5Config(**values, tie_word_embeddings=tied))
    tensors = {}
    for name, p in model.state_dict().items():
        if name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight") or (
                tied and name == "lm_head.weight"):
            continue
        p = p.clone()
        if "layer_norm" in name:
            p += 0.2 * torch.randn_like(p)
        if name == "lm_head.weight" or "relative_attention_bias" in name:
            p = torch.randn_like(p)      # untied from shared; a bias that moves the scores
        tensors[name] = p.contiguous()
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["tie_word_embeddings"] = tied
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return T5ForConditionalGeneration.from_pretrained(path).double().eval()
