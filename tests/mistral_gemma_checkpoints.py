"""Tiny random MistralForCausalLM, GemmaForCausalLM, Qwen2ForCausalLM (sliding window),
Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM and SmolLM3ForCausalLM checkpoints made offline with transformers, for the Mistral, Gemma and Qwen3
tests: non-trivial norms (Gemma's stored as offsets from 1; Qwen3's q_norm and k_norm too),
saved with save_pretrained (safetensors).

Mistral's window (5) is shorter than the test sequences, so the window decides the outputs; the
Gemma case has multi-query attention (one KV head) and heads of 256; Qwen3's heads (16) are
not hidden_size / heads (8), and its layer 1 has a window; Gemma 3's layer 0 slides, and so
does Gemma 2's, whose weights are drawn ten times wider than transformers' default (std 0.2)
so that its soft caps bend the attention scores and the logits (without the caps the logits
reach 4.8; with a final cap of 2 they stay below 2). SmolLM3's layer 1 has no rotary embedding
(NoPE) and a window."""

import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
                          GemmaConfig, GemmaForCausalLM, SmolLM3Config, SmolLM3ForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

VOCAB = 96
WINDOW = 5
BASE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, intermediate_size=48,
            max_position_embeddings=128, attention_dropout=0.0)
FAMILIES = {
    "mistral": (MistralForCausalLM, MistralConfig,
                dict(BASE, num_attention_heads=4, num_key_value_heads=2, sliding_window=WINDOW)),
    "gemma": (GemmaForCausalLM, GemmaConfig,
              dict(BASE, num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                   hidden_act="gelu_pytorch_tanh")),
    # Qwen2 with use_sliding_window: a window on the layers from max_window_layers on (layer 1).
    "qwen2-window": (Qwen2ForCausalLM, Qwen2Config,
                     dict(BASE, num_attention_heads=4, num_key_value_heads=2,
                          use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)),
    # Qwen3: QK-norm, head_dim 16 (queries 64 wide on a hidden size of 32), a window on layer 1.
    "qwen3": (Qwen3ForCausalLM, Qwen3Config,
              dict(BASE, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)),
    # Gemma 3 (text): QK-norm and sandwich norms by 1 + weight, a sliding layer (its own rotary
    # base) then a full one, scores scaled by query_pre_attn_scalar (not head_dim) ^ -1/2.
    "gemma3": (Gemma3ForCausalLM, Gemma3TextConfig,
               dict(BASE, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                    query_pre_attn_scalar=24, sliding_window=WINDOW,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})),
    # Gemma 2: Gemma 3's sandwich norms and query scale without QK-norm, every other layer
    # sliding (layer 0 here), logit soft-capping of the attention scores and of the logits.
    "gemma2": (Gemma2ForCausalLM, Gemma2Config,
               dict(BASE, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                    query_pre_attn_scalar=24, sliding_window=WINDOW, initializer_range=0.2,
                    attn_logit_softcapping=1.0, final_logit_softcapping=2.0)),
    # SmolLM3: Llama's, every second layer without rotary embedding (NoPE) and, with
    # use_sliding_window, a window there; a tied head; pad 0 (its default, 128004, is no row here)
    "smollm3": (SmolLM3ForCausalLM, SmolLM3Config,
                dict(BASE, num_attention_heads=4, num_key_value_heads=2, no_rope_layer_interval=2,
                     use_sliding_window=True, sliding_window=WINDOW, pad_token_id=0)),
}


def hf_model(family, seed=0, **overrides):
    """A fresh float32 transformers model of `family` with non-trivial norms."""
    model_class, config_class, fields = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_class(config_class(**dict(fields, **overrides)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


def tiny_checkpoint(family, path, seed=0, **overrides):
    """A tiny `family` model saved to `path`; returns it in float64, eval mode."""
    model = hf_model(family, seed, **overrides)
    model.save_pretrained(path, safe_serialization=True)
    return model.double().eval()
