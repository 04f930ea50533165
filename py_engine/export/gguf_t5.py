"""A T5 encoder-decoder (FLAN-T5, T5 v1.1) as llama.cpp reads it: its "t5" architecture's
metadata and tensor names, as convert_hf_to_gguf.py's T5Model writes them for a
T5ForConditionalGeneration. gguf_llama.model_writer writes the file; this module says what
differs.

- Names: the stacks are "enc." and "dec."; per block attn_norm, attn_q/k/v/o, attn_rel_b (the
  relative position bias table, block 0 only), cross_attn_* (the decoder's EncDecAttention),
  ffn_norm, ffn_gate (wi_0), ffn_up (wi_1), ffn_down (wo); enc.output_norm and dec.output_norm;
  shared.weight is token_embd, lm_head output. Linear weights are [out, in] already.
- Metadata: block_count is the encoder's layers, decoder_block_count the decoder's; key and
  value length d_kv; both epsilon keys carry layer_norm_epsilon; the bucket count and the
  decoder's start token.
- The tied head (the original T5's layout) is the shared embedding with the decoder's output
  scaled by d_model ** -0.5 first; llama.cpp's t5 graph has no such scaling, so the head is
  written as output.weight with the scale folded in (the same logits, and transformers' GGUF
  loader, seeing output.weight, unties it).

Refused, as llama.cpp would run them differently: a feed-forward other than gated GELU
(llama.cpp runs GELU on a gated T5, ReLU on an ungated one) and a relative_attention_max_distance
other than 128 (llama.cpp fixes it at 128).
"""

from array import array
from itertools import repeat
from operator import mul

from . import gguf
from .merged import ExportError

ARCHITECTURE = "t5"
LLAMA_CPP_MAX_DISTANCE = 128
_STACKS = {"encoder": "enc", "decoder": "dec"}
_ATTENTION = {"SelfAttention": "attn", "EncDecAttention": "cross_attn"}
_PROJECTIONS = {"q": "q", "k": "k", "v": "v", "o": "o", "relative_attention_bias": "rel_b"}
_FFN = {"wi_0": "ffn_gate", "wi_1": "ffn_up", "wo": "ffn_down"}
# a block's layer_norm by its sublayer index: the encoder's (attention, ffn), the decoder's
# (self attention, cross attention, ffn)
_NORMS = {"encoder": ("attn_norm", "ffn_norm"),
          "decoder": ("attn_norm", "cross_attn_norm", "ffn_norm")}
_GLOBAL = {"shared.weight": "token_embd.weight", "lm_head.weight": "output.weight",
           "encoder.final_layer_norm.weight": "enc.output_norm.weight",
           "decoder.final_layer_norm.weight": "dec.output_norm.weight"}


def check(config):
    if config.feed_forward_proj != "gated-gelu":
        raise ExportError(f"GGUF export of a T5 with feed_forward_proj {config.feed_forward_proj!r} "
                          "is not supported: llama.cpp's t5 runs the gated feed-forward with GELU "
                          "(FLAN-T5's gated-gelu)")
    if config.relative_attention_max_distance != LLAMA_CPP_MAX_DISTANCE:
        raise ExportError(f"GGUF export of a T5 with relative_attention_max_distance "
                          f"{config.relative_attention_max_distance} is not supported: llama.cpp's "
                          f"t5 fixes it at {LLAMA_CPP_MAX_DISTANCE}")


def gguf_name(name):
    """llama.cpp's tensor name for a T5ForConditionalGeneration one
    (decoder.block.2.layer.1.EncDecAttention.k.weight -> dec.blk.2.cross_attn_k.weight); None
    for a name it has none for."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".")
    if len(parts) < 7 or parts[0] not in _STACKS or parts[1] != "block" or parts[3] != "layer":
        return None
    stack, block, sublayer, module = parts[0], parts[2], int(parts[4]), parts[5]
    prefix = f"{_STACKS[stack]}.blk.{block}."
    if module == "layer_norm" and sublayer < len(_NORMS[stack]):
        return prefix + _NORMS[stack][sublayer] + ".weight"
    if module in _ATTENTION and parts[6] in _PROJECTIONS:
        return prefix + f"{_ATTENTION[module]}_{_PROJECTIONS[parts[6]]}.weight"
    if module == "DenseReluDense" and parts[6] in _FFN:
        return prefix + _FFN[parts[6]] + ".weight"
    return None


def hyperparameters(config):
    """The architecture's metadata entries (convert_hf_to_gguf.py's T5Model)."""
    check(config)
    a = ARCHITECTURE
    return [(f"{a}.context_length", gguf.UINT32, config.max_position_embeddings),
            (f"{a}.embedding_length", gguf.UINT32, config.hidden_size),
            (f"{a}.feed_forward_length", gguf.UINT32, config.intermediate_size),
            (f"{a}.block_count", gguf.UINT32, config.num_encoder_layers),
            (f"{a}.decoder_block_count", gguf.UINT32, config.num_hidden_layers),
            (f"{a}.attention.head_count", gguf.UINT32, config.num_attention_heads),
            (f"{a}.attention.key_length", gguf.UINT32, config.head_dim),
            (f"{a}.attention.value_length", gguf.UINT32, config.head_dim),
            (f"{a}.attention.layer_norm_epsilon", gguf.FLOAT32, config.layer_norm_epsilon),
            (f"{a}.attention.relative_buckets_count", gguf.UINT32,
             config.relative_attention_num_buckets),
            (f"{a}.attention.layer_norm_rms_epsilon", gguf.FLOAT32, config.layer_norm_epsilon),
            (f"{a}.decoder_start_token_id", gguf.UINT32, config.decoder_start_token_id)]


def ordered(names):
    """The embedding, the encoder's blocks and norm, the decoder's, then the head."""
    def key(name):
        parts = name.split(".")
        if name == "shared.weight":
            return (0, 0, name)
        stack = {"encoder": 1, "decoder": 2}.get(parts[0], 3)
        return (stack, int(parts[2]) if parts[1:2] == ["block"] else 1 << 30, name)
    return sorted(names, key=key)


def extra_tensors(merged):
    """[(GGUF name, shape, make)] beyond the merged tensors: a tied head as output.weight, the
    shared embedding scaled by d_model ** -0.5 (what transformers does to the decoder's output
    before a tied head)."""
    config = merged.config
    if not config.tie_word_embeddings:
        return []
    scale = config.output_scale

    def make():
        return array("f", map(mul, gguf.f32_array(merged.floats("shared.weight")), repeat(scale)))
    return [("output.weight", tuple(merged.shape("shared.weight")), make)]
