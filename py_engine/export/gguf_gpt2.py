"""A GPT-2 family model (GPT-2, DialoGPT, distilgpt2) as llama.cpp reads it: its "gpt2"
architecture's metadata and tensor names, as convert_hf_to_gguf.py's GPT2Model writes them.
gguf_llama.model_writer writes the file; this module says what differs from the Llama family.

- Names: wte token_embd, wpe position_embd, ln_1 attn_norm, c_attn attn_qkv (one fused
  projection), attn.c_proj attn_output, ln_2 ffn_norm, c_fc ffn_up, mlp.c_proj ffn_down, ln_f
  output_norm; weights and biases alike.
- Layout: the converter transposes the Conv1D weights to [out, in]; the engine holds them so
  already (models/gpt2_config.py), so they are written as they are.
- The head is tied: the converter writes the token embedding a second time as output.weight
  (an adapter's head trained whole, modules_to_save, is written there instead).
- The position embedding stays F32 whatever the type, as llama.cpp's converter keeps it.
"""

from . import gguf

ARCHITECTURE = "gpt2"
_LAYER = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
          "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
_GLOBAL = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
           "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias",
           "lm_head.weight": "output.weight"}     # an adapter's head trained whole (untied)
TIED_HEAD = ("transformer.wte.weight", "output.weight")     # (its source, the copy's name)
KEPT_F32 = ("position_embd.weight",)


def gguf_name(name):
    """llama.cpp's tensor name for a GPT2LMHeadModel one (transformer.h.3.mlp.c_fc.bias ->
    blk.3.ffn_up.bias); None for a name it has none for."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".")
    module = ".".join(parts[3:-1])
    if parts[:2] != ["transformer", "h"] or module not in _LAYER:
        return None
    return f"blk.{parts[2]}.{_LAYER[module]}.{parts[-1]}"


def hyperparameters(config):
    """The architecture's metadata entries (convert_hf_to_gguf.py's GPT2Model)."""
    a = ARCHITECTURE
    return [(f"{a}.vocab_size", gguf.UINT32, config.vocab_size),
            (f"{a}.context_length", gguf.UINT32, config.max_position_embeddings),
            (f"{a}.embedding_length", gguf.UINT32, config.hidden_size),
            (f"{a}.block_count", gguf.UINT32, config.num_hidden_layers),
            (f"{a}.feed_forward_length", gguf.UINT32, config.intermediate_size),
            (f"{a}.attention.head_count", gguf.UINT32, config.num_attention_heads),
            (f"{a}.attention.layer_norm_epsilon", gguf.FLOAT32, config.layer_norm_epsilon)]


def extra_tensors(merged):
    """[(GGUF name, shape, make)] beyond the merged tensors: the tied head, the token embedding
    written again as output.weight (none where an adapter trained the head as its own)."""
    if not merged.config.tie_word_embeddings:
        return []
    source, target = TIED_HEAD
    return [(target, tuple(merged.shape(source)), lambda: merged.floats(source))]


def ordered(names):
    """The converter's order: the embeddings, the layers, the final norm (the head after)."""
    def key(name):
        parts = name.split(".")
        if parts[:2] == ["transformer", "h"]:
            return (1, int(parts[2]), name)
        return (0 if name.startswith(("transformer.wte", "transformer.wpe")) else 2, 0, name)
    return sorted(names, key=key)
