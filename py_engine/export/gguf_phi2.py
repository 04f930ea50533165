"""A Phi-2 family model (microsoft/phi-2, phi-1.5, phi-1: PhiForCausalLM) as llama.cpp reads it:
its "phi2" architecture's metadata, as convert_hf_to_gguf.py's Phi2Model writes it.
gguf_llama.model_writer writes the file; the tensor names are in its table (the layers under
PhiForCausalLM's module names), this module says what else differs from the Llama family.

- Names: q_proj, k_proj, v_proj stay separate (attn_q, attn_k, attn_v: the converter fuses
  nothing for a transformers checkpoint), dense attn_output, fc1 ffn_up, fc2 ffn_down,
  input_layernorm attn_norm (the one norm of each parallel attention + MLP block),
  final_layernorm output_norm; weights and biases alike, lm_head's bias as output.bias. No row
  permutation: llama.cpp rotates phi2's heads in halves, as transformers does.
- Metadata: rope.dimension_count is the rotating part of each head (partial rotary);
  attention.layer_norm_epsilon; add_bos_token false, as the converter sets it.
- Where the converter writes a constant this writes the checkpoint's own value, the same for
  phi-2 itself: feed_forward_length (the converter's 4 * hidden_size), head_count_kv (its
  head_count), and rope.freq_base (it writes none: llama.cpp's default, 10000).
- A tied head (none of the phi checkpoints has one) is written again as output.weight: llama.cpp's
  phi2 requires the output matrix.

Refused, as llama.cpp's phi2 would run them differently: an activation other than GELU's tanh
form, rope scaling other than linear.
"""

from . import gguf
from .merged import ExportError

ARCHITECTURE = "phi2"
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def check(config):
    if config.hidden_act not in TANH_GELU:
        raise ExportError(f"GGUF export of a Phi model with hidden_act {config.hidden_act!r} is not "
                          "supported: llama.cpp's phi2 runs the MLP with GELU's tanh form")
    if config.rope_parameters["rope_type"] not in ("default", "linear"):
        raise ExportError(f"no GGUF rope scaling for {config.rope_parameters['rope_type']} in "
                          "llama.cpp's phi2")


def hyperparameters(config):
    """The architecture's metadata entries (convert_hf_to_gguf.py's Phi2Model)."""
    check(config)
    a, rope = ARCHITECTURE, config.rope_parameters
    entries = [(f"{a}.context_length", gguf.UINT32, config.max_position_embeddings),
               (f"{a}.embedding_length", gguf.UINT32, config.hidden_size),
               (f"{a}.feed_forward_length", gguf.UINT32, config.intermediate_size),
               (f"{a}.block_count", gguf.UINT32, config.num_hidden_layers),
               (f"{a}.attention.head_count", gguf.UINT32, config.num_attention_heads),
               (f"{a}.attention.head_count_kv", gguf.UINT32, config.num_key_value_heads),
               (f"{a}.attention.layer_norm_epsilon", gguf.FLOAT32, config.layer_norm_eps),
               (f"{a}.rope.dimension_count", gguf.UINT32, config.rotary_dim),
               (f"{a}.rope.freq_base", gguf.FLOAT32, float(rope["rope_theta"]))]
    if rope["rope_type"] == "linear":
        entries += [(f"{a}.rope.scaling.type", gguf.STRING, "linear"),
                    (f"{a}.rope.scaling.factor", gguf.FLOAT32, float(rope["factor"]))]
    return entries


def tokenizer_overrides(entries):
    """The tokenizer's entries with add_bos_token false (the converter's Phi2Model sets it so:
    phi-2's tokenizer adds nothing)."""
    return [(key, vtype, False if key == "tokenizer.ggml.add_bos_token" else value)
            for key, vtype, value in entries]


def extra_tensors(merged):
    """[(GGUF name, shape, make)] beyond the merged tensors: a tied head as output.weight."""
    if not merged.config.tie_word_embeddings:
        return []
    source = "model.embed_tokens.weight"
    return [("output.weight", tuple(merged.shape(source)), lambda: merged.floats(source))]
