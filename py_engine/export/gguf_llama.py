"""A Llama-family model as llama.cpp reads it: GGUF metadata, tensor names and layouts, as its
convert_hf_to_gguf.py writes them, and a PEFT LoRA adapter as convert_lora_to_gguf.py does.

- Architectures: Llama, Mistral and TinyLlama/SmolLM checkpoints are "llama"; Qwen2 is "qwen2"
  (q/k/v biases, no permutation), Qwen3 "qwen3" (no biases, q_norm and k_norm as attn_q_norm
  and attn_k_norm, no permutation). None has a sliding window in llama.cpp: a Mistral or Qwen
  model whose window is shorter than its context is refused.
  Gemma (v1) is "gemma": no permutation, key and value length always written, every norm
  weight written as 1 + the checkpoint's (transformers' GemmaRMSNorm scales by 1 + weight,
  llama.cpp's by the weight), no output.weight (the head is tied: llama.cpp reuses
  token_embd) and nothing for the sqrt(hidden_size) embedding scale, which llama.cpp applies
  itself.
  Gemma 3 (text) is "gemma3": Gemma's, plus attn_q_norm and attn_k_norm, its sandwich norms
  as post_attention_norm (the attention's output), ffn_norm (pre_feedforward_layernorm) and
  post_ffw_norm, and the window as attention.sliding_window. llama.cpp's gemma3 fixes what
  config.json may vary: every sixth layer attends to everything and the others slide, the
  sliding layers' rotary base is 10000, and scores are scaled by head_dim^-1/2; a model that
  differs is refused.
  Gemma 2 is "gemma2": Gemma's, with the sandwich norms named as Gemma 3's, the window as
  attention.sliding_window and both soft caps (attn_logit_softcapping,
  final_logit_softcapping). llama.cpp's gemma2 slides every other layer from the first, always
  caps both, and scales scores by head_dim^-1/2 (but for its 27B): a model that differs is
  refused.
  SmolLM3 is "smollm3": Llama's names, rows and metadata (its converter is Llama's);
  llama.cpp's smollm3 leaves out the rotary embedding on every 4th layer and has no window, so
  another pattern, or a window shorter than the context, is refused.
  Phi-3 is "phi3" (fused attn_qkv and ffn_up = gate_up_proj, no permutation; LongRoPE as the rope_factors_long / rope_factors_short tensors, the
  switch as rope.scaling.original_context_length, the cos/sin factor as
  rope.scaling.attn_factor; the sliding window as attention.sliding_window, 0 for none).
- llama.cpp's "llama" rotates each head's dimensions in interleaved pairs (x0, x1), (x2, x3)...
  where transformers rotates halves (x0, x_{d/2}), ...: the converter reorders the rows of the
  q and k projections head by head (row h*d + 2j + i <- row h*d + i*d/2 + j), and so does this.
  An adapter's lora_B holds those rows too; lora_A is unchanged.
- Norms, biases and other 1-D tensors are F32; the rest is the chosen type, F16 where rows do
  not split into quantization blocks. With Q4_0 the token embedding and output matrix stay Q8_0
  (llama.cpp's quantizer also keeps them at more bits than the layers).
- Llama 3's rope scaling is the rope_freqs tensor of per-frequency factors, as the converter
  computes them; linear scaling is metadata.
- GPT-2 family checkpoints are "gpt2", T5 encoder-decoders "t5", Phi-2 "phi2": their names and
  metadata are export/gguf_gpt2.py's, gguf_t5.py's and gguf_phi2.py's, the rest (types,
  tokenizer, writing) is this module's.

    writer = model_writer(merged, Q8_0, name="my-model")      # a GGUFWriter, ready to write()
    writer = adapter_writer(config, lora, tensors, F32)       # the adapter, for --lora
"""

import math
from array import array
from itertools import repeat
from operator import add

from ..kernels.rope import rope_attention_scaling
from . import gguf, gguf_gpt2, gguf_phi2, gguf_t5
from .gguf_vocab import tokenizer_metadata
from .merged import ExportError

FILE_TYPES = {gguf.F32: 0, gguf.F16: 1, gguf.Q4_0: 2, gguf.Q8_0: 7}     # general.file_type
QUANTIZATION_VERSION = 2
# Families with their own module (names, metadata, extra tensors), by model_type.
FAMILIES = {"gpt2": gguf_gpt2, "t5": gguf_t5, "phi": gguf_phi2}
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
                 "smollm3": "smollm3",
                 "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3",
                 **{model_type: family.ARCHITECTURE for model_type, family in FAMILIES.items()}}
_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
          "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
          # Phi-2 (PhiForCausalLM): the same layers under its own module names
          "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
# Gemma 2's and 3's, with their sandwich norms (post_attention_layernorm normalises the
# attention's output)
_SANDWICH_LAYER = dict(_LAYER, post_attention_layernorm="post_attention_norm",
                       pre_feedforward_layernorm="ffn_norm", post_feedforward_layernorm="post_ffw_norm")
SANDWICH_ARCHITECTURES = ("gemma2", "gemma3")
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
LLAMA_CPP_GEMMA3 = {"sliding_every": 6, "local_rope_theta": 10000.0}
LLAMA_CPP_NO_ROPE_STEP = 4     # llama.cpp's smollm3: every 4th layer without rotary embedding
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight", "lm_head.bias": "output.bias",
           "model.final_layernorm.weight": "output_norm.weight",
           "model.final_layernorm.bias": "output_norm.bias"}


def architecture(config):
    try:
        arch = ARCHITECTURES[config.model_type]
    except KeyError:
        raise ExportError(f"no GGUF architecture for model_type {config.model_type!r}") from None
    # llama.cpp's llama, qwen2 and qwen3 attend to the whole context: a model whose window is shorter
    # than its context would answer differently there (a window of null, as Mistral v0.2+
    # ships, or at least the context, changes nothing).
    if arch == "gemma3":
        _check_gemma3(config)
        return arch
    if arch == "gemma2":
        _check_gemma2(config)
        return arch
    if arch == "smollm3" and list(config.layer_rope_used) != \
            [(n + 1) % LLAMA_CPP_NO_ROPE_STEP != 0 for n in range(config.num_hidden_layers)]:
        raise ExportError(f"GGUF export of a SmolLM3 whose layers without rotary embedding are not "
                          f"every {LLAMA_CPP_NO_ROPE_STEP}th is not supported: llama.cpp's smollm3 "
                          "fixes that pattern")
    windows = [w for w in getattr(config, "layer_windows", ()) if w is not None]
    if arch != "phi3" and windows and min(windows) < config.max_position_embeddings:
        raise ExportError(f"GGUF export of a sliding-window model (sliding_window {min(windows)} < "
                          f"max_position_embeddings {config.max_position_embeddings}) is not "
                          f"supported: llama.cpp's {arch!r} architecture has no sliding window")
    return arch


def _check_gemma3(config):
    """ExportError unless llama.cpp's gemma3 would run `config` as transformers does."""
    every = LLAMA_CPP_GEMMA3["sliding_every"]
    sliding = [w is not None for w in config.layer_windows]
    if sliding != [(n + 1) % every != 0 for n in range(config.num_hidden_layers)]:
        raise ExportError(f"GGUF export of a Gemma 3 whose sliding layers are not all but every "
                          f"{every}th is not supported: llama.cpp's gemma3 fixes that pattern")
    local = [r for r, s in zip(config.layer_rope, sliding) if s]
    if any(r["rope_type"] != "default" or r["rope_theta"] != LLAMA_CPP_GEMMA3["local_rope_theta"]
           for r in local):
        raise ExportError("GGUF export of a Gemma 3 whose sliding layers' rotary base is not "
                          f"{LLAMA_CPP_GEMMA3['local_rope_theta']:g} (unscaled) is not supported: "
                          "llama.cpp's gemma3 fixes it")
    if config.query_scale is not None:
        raise ExportError("GGUF export of a Gemma 3 whose query_pre_attn_scalar is not head_dim is "
                          "not supported: llama.cpp's gemma3 scales scores by head_dim^-1/2")


def _check_gemma2(config):
    """ExportError unless llama.cpp's gemma2 would run `config` as transformers does."""
    sliding = [w is not None for w in config.layer_windows]
    if sliding != [n % 2 == 0 for n in range(config.num_hidden_layers)]:
        raise ExportError("GGUF export of a Gemma 2 whose sliding layers are not every other one "
                          "from the first is not supported: llama.cpp's gemma2 fixes that pattern")
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, name) is None:
            raise ExportError(f"GGUF export of a Gemma 2 without {name} is not supported: "
                              "llama.cpp's gemma2 always caps")
    if config.query_scale is not None:
        raise ExportError("GGUF export of a Gemma 2 whose query_pre_attn_scalar is not head_dim is "
                          "not supported: llama.cpp's gemma2 scales scores by head_dim^-1/2")


def gguf_name(name, arch=None):
    """llama.cpp's tensor name for a transformers one (model.layers.3.mlp.up_proj.weight ->
    blk.3.ffn_up.weight); GPT-2's (transformer.*) by gguf_gpt2, T5's (encoder.*, decoder.*,
    shared.weight) by gguf_t5; `arch` "gemma2" or "gemma3" names their sandwich norms."""
    family = _family_of_name(name)
    if family is not None:
        target = family.gguf_name(name)
        if target is None:
            raise ExportError(f"no GGUF name for tensor {name!r}")
        return target
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".")
    if parts[:2] != ["model", "layers"]:
        raise ExportError(f"no GGUF name for tensor {name!r}")
    module, kind = ".".join(parts[3:-1]), parts[-1]
    layer = _SANDWICH_LAYER if arch in SANDWICH_ARCHITECTURES else _LAYER
    if module not in layer:
        raise ExportError(f"no GGUF name for tensor {name!r}")
    return f"blk.{parts[2]}.{layer[module]}.{kind}"


def _family_of_name(name):
    if name.startswith("transformer."):
        return gguf_gpt2
    if name.startswith(("encoder.", "decoder.")) or name == "shared.weight":
        return gguf_t5
    return None


def permuted_heads(values, rows, heads):
    """The rows of a [rows, cols] q or k projection (or bias, cols 1) reordered from
    transformers' rotate-halves layout to llama.cpp's interleaved pairs, head by head."""
    values = gguf.f32_array(values)
    cols = len(values) // rows
    d = rows // heads
    out = array("f", bytes(4 * len(values)))
    for h in range(heads):
        for j in range(d // 2):
            for i in range(2):
                src = (h * d + i * (d // 2) + j) * cols
                dst = (h * d + 2 * j + i) * cols
                out[dst:dst + cols] = values[src:src + cols]
    return out


def _permutation(name, config, arch):
    """The head count whose rows `name` is reordered by (arch: architecture(config)), or None."""
    if arch not in ("llama", "smollm3"):
        return None
    if ".self_attn.q_proj." in name:
        return config.num_attention_heads
    if ".self_attn.k_proj." in name:
        return config.num_key_value_heads
    return None


def tensor_type(gguf_tensor, shape, wanted):
    if len(shape) <= 1 or gguf_tensor.endswith("_norm.weight") or \
            not gguf_tensor.endswith(".weight") or wanted == gguf.F32 or gguf_tensor in gguf_gpt2.KEPT_F32:
        return gguf.F32
    if wanted == gguf.Q4_0 and gguf_tensor in ("token_embd.weight", "output.weight"):
        wanted = gguf.Q8_0
    return gguf.block_type_for(shape, wanted)


def hyperparameters(config, arch, ggml_type):
    """The model's metadata entries (general.* and the architecture's)."""
    a = arch
    general = [("general.file_type", gguf.UINT32, FILE_TYPES[ggml_type]),
               ("general.quantization_version", gguf.UINT32, QUANTIZATION_VERSION)]
    if config.model_type in FAMILIES:
        return general + FAMILIES[config.model_type].hyperparameters(config)
    if arch in GEMMA_ARCHITECTURES and config.hidden_act != "gelu_pytorch_tanh":
        raise ExportError(f"GGUF export of a Gemma with hidden_act {config.hidden_act!r} is not "
                          f"supported: llama.cpp's {arch} runs the MLP with GELU (the tanh form)")
    head_dim = config.hidden_size // config.num_attention_heads
    entries = general + [
        (f"{a}.vocab_size", gguf.UINT32, config.vocab_size),
        (f"{a}.context_length", gguf.UINT32, config.max_position_embeddings),
        (f"{a}.embedding_length", gguf.UINT32, config.hidden_size),
        (f"{a}.block_count", gguf.UINT32, config.num_hidden_layers),
        (f"{a}.feed_forward_length", gguf.UINT32, config.intermediate_size),
        (f"{a}.attention.head_count", gguf.UINT32, config.num_attention_heads),
        (f"{a}.attention.head_count_kv", gguf.UINT32, config.num_key_value_heads),
        (f"{a}.rope.freq_base", gguf.FLOAT32, float(config.rope_parameters["rope_theta"])),
        (f"{a}.attention.layer_norm_rms_epsilon", gguf.FLOAT32, config.rms_norm_eps),
    ]
    if arch in ("llama", "smollm3", "phi3"):
        entries.append((f"{a}.rope.dimension_count", gguf.UINT32, config.rotary_dim))
    if config.head_dim != head_dim or arch in GEMMA_ARCHITECTURES:     # Gemma's converters always write them
        entries += [(f"{a}.attention.key_length", gguf.UINT32, config.head_dim),
                    (f"{a}.attention.value_length", gguf.UINT32, config.head_dim)]
    if arch in SANDWICH_ARCHITECTURES:
        window = next((w for w in config.layer_windows if w is not None), config.max_position_embeddings)
        entries.append((f"{a}.attention.sliding_window", gguf.UINT32, window))
    if arch == "gemma2":
        entries += [(f"{a}.attn_logit_softcapping", gguf.FLOAT32, config.attn_logit_softcapping),
                    (f"{a}.final_logit_softcapping", gguf.FLOAT32, config.final_logit_softcapping)]
    rope = config.rope_parameters
    if rope["rope_type"] == "linear":
        entries += [(f"{a}.rope.scaling.type", gguf.STRING, "linear"),
                    (f"{a}.rope.scaling.factor", gguf.FLOAT32, float(rope["factor"]))]
    if arch == "phi3":
        entries += [(f"{a}.attention.sliding_window", gguf.UINT32, int(config.layer_windows[0] or 0))]
        if rope["rope_type"] == "longrope":
            entries += [(f"{a}.rope.scaling.original_context_length", gguf.UINT32,
                         int(rope["original_max_position_embeddings"])),
                        (f"{a}.rope.scaling.attn_factor", gguf.FLOAT32,
                         rope_attention_scaling(rope))]
    elif rope["rope_type"] == "longrope":
        raise ExportError(f"no GGUF rope scaling for longrope in model_type {config.model_type!r}")
    return entries


def llama3_rope_factors(config):
    """Llama 3's per-frequency rope factors (the rope_freqs tensor), as the converter makes
    them."""
    rope = config.rope_parameters
    base, dim = rope.get("rope_theta", 10000.0), config.head_dim
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for k in range(0, dim, 2):
        freq = gguf._f32(1.0 / gguf._f32(base ** gguf._f32(k / dim)))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return array("f", factors)


def model_writer(merged, ggml_type, name, warn=None):
    """A GGUFWriter holding a merged decoder (see merged.MergedModel) and its tokenizer."""
    if merged.kind != "decoder":
        raise ExportError("GGUF holds language models (Llama, Gemma, GPT-2 and Phi-2 families, T5); "
                          "export classifiers with --format onnx or merged")
    config = merged.config
    arch = architecture(config)
    writer = gguf.GGUFWriter()
    writer.add("general.architecture", gguf.STRING, arch)
    writer.add("general.type", gguf.STRING, "model")
    writer.add("general.name", gguf.STRING, name)
    for key, vtype, value in hyperparameters(config, arch, ggml_type):
        writer.add(key, vtype, value)
    family = FAMILIES.get(config.model_type)
    tokenizer = tokenizer_metadata(merged.tokenizer_dir, config.vocab_size, warn, merged.source)
    for key, vtype, value in getattr(family, "tokenizer_overrides", _same)(tokenizer):
        writer.add(key, vtype, value)
    rope = getattr(config, "rope_parameters", None)       # GPT-2 has learned positions
    if rope and rope["rope_type"] == "llama3":
        factors = llama3_rope_factors(config)
        writer.add_tensor("rope_freqs.weight", (len(factors),), gguf.F32, lambda: factors)
    if rope and rope["rope_type"] == "longrope":     # LongRoPE's per-frequency divisors
        for kind in ("long", "short"):
            factors = array("f", config.rope_parameters[f"{kind}_factor"])
            writer.add_tensor(f"rope_factors_{kind}.weight", (len(factors),), gguf.F32,
                              lambda factors=factors: factors)
    names = getattr(family, "ordered", _ordered)(merged.names())     # Phi-2: the Llama order
    # Gemma's norms hold offsets from 1 (config.norm_offset): llama.cpp wants the scale itself
    norm_offset = getattr(config, "norm_offset", 0.0)
    for hf_name in names:
        target = gguf_name(hf_name, arch)
        shape = tuple(merged.shape(hf_name))
        heads = _permutation(hf_name, config, arch)
        offset = norm_offset if target.endswith("_norm.weight") else 0.0

        def make(hf_name=hf_name, shape=shape, heads=heads, offset=offset):
            values = merged.floats(hf_name)
            if offset:
                values = array("f", map(add, gguf.f32_array(values), repeat(offset)))
            return values if heads is None else permuted_heads(values, shape[0], heads)

        writer.add_tensor(target, shape, tensor_type(target, shape, ggml_type), make)
    for target, shape, make in (family.extra_tensors(merged) if family is not None else ()):
        writer.add_tensor(target, shape, tensor_type(target, shape, ggml_type), make)
    return writer


def _same(entries):
    return entries


def _ordered(names):
    """The converter's order: embeddings, the layers (by number; a T5's encoder's before its
    decoder's), the final norm, the output matrix."""
    def key(name):
        parts = name.split(".")
        numbers = [i for i, p in enumerate(parts) if p.isdigit()]
        if numbers:
            i = numbers[0]
            return (1, ".".join(parts[:i]), int(parts[i]), name)
        return (0 if name in ("model.embed_tokens.weight", "transformer.wte.weight",
                              "shared.weight") else 2, "", 0, name)
    return sorted(names, key=key)


def gguf_groups(merged, writer):
    """merged.groups() under the writer's tensor names (for GGUFWriter.write's progress)."""
    arch = architecture(merged.config)
    names = {gguf_name(n, arch): label for label, group in merged.groups() for n in group}
    groups = {}
    for name, *_ in writer.tensors:
        # not a merged tensor: rope factors (with the embeddings), or a tied head written out
        label = "head" if name == "output.weight" else "embeddings"
        groups.setdefault(names.get(name, label), []).append(name)
    return list(groups.items())


def adapter_writer(config, lora, tensors, ggml_type, name):
    """A GGUFWriter holding a PEFT LoRA adapter for llama.cpp's --lora (general.type adapter,
    adapter.type lora, adapter.lora.alpha; per wrapped linear "<base>.lora_a" [r, in] and
    "<base>.lora_b" [out, r]). `tensors`: {name without PEFT's prefix: (shape, floats)};
    llama.cpp scales by alpha / r, so rsLoRA's alpha / sqrt(r) is written as its alpha, and
    where rank_pattern or alpha_pattern give a module a scale of its own, lora_b carries the
    ratio of that scale to alpha / r (llama.cpp reads r from each lora_b). Every
    family the GGUF export writes: the adapter's tensors take the names of the base tensors
    they change (GPT-2's fused c_attn and T5's enc./dec. ones included), and the rows of those
    the converter reorders (the "llama" architecture's q and k).

    A LoRA on the output layer is output.weight's pair, as a linear's. One on the token
    embedding (PEFT's lora_embedding_A [r, vocab], lora_embedding_B [hidden, r]) is written as
    llama.cpp's build_inp_embd reads token_embd's: lora_a the transpose of A ([vocab, r], the
    rows it gathers by token id) and lora_b B, so that a token's row gains s B.A[:, id], PEFT's
    delta. Where the base GGUF has no output.weight (a tied Llama-family head), llama.cpp's
    output product reads token_embd itself, and applies the embedding's LoRA there too (PEFT's
    changes only the input; llama.cpp aborts on its shapes, GGML_ASSERT(ggml_can_mul_mat),
    seen with llama-cpp-python 0.3.36): such adapters are refused by name. GPT-2's and Phi-2's
    GGUF write a tied head out as output.weight, so their pair takes a LoRA each; so does a
    T5's head of its own (FLAN-T5's), but not its shared embedding or tied head."""
    if lora.use_dora:
        raise ExportError("a DoRA adapter (use_dora) cannot be a llama.cpp LoRA adapter: those "
                          "hold lora_a and lora_b only, and DoRA also rescales each row of the "
                          "weight by its magnitude; export the merged model (--format gguf) "
                          "instead")
    if lora.lora_bias:
        raise ExportError("an adapter with lora_B biases (lora_bias) cannot be a llama.cpp LoRA "
                          "adapter: those hold lora_a and lora_b only; export the merged model "
                          "(--format gguf) instead, where each is added to its layer's bias")
    if lora.bias != "none":
        raise ExportError(f"an adapter that trains the base model's biases (bias={lora.bias!r}) "
                          "cannot be a llama.cpp LoRA adapter: those hold lora_a and lora_b only; "
                          "export the merged model (--format gguf) instead")
    if any(".token_adapter." in k for k in tensors):
        raise ExportError("an adapter with trainable tokens (trainable_token_indices) trains rows "
                          "of the embedding, and llama.cpp's LoRA adapters hold lora_a and lora_b "
                          "only; export the merged model (--format gguf) instead")
    arch = architecture(config)
    tables = sorted({k.rsplit(".lora_", 1)[0] for k in tensors
                     if ".lora_embedding_" in k or k.startswith("lm_head.lora_")})
    if getattr(config, "encoder_decoder", False):     # a head of its own is output.weight
        refused = [t for t in tables if t != "lm_head" or config.tie_word_embeddings]
        if refused:
            raise ExportError(f"a LoRA on a T5's shared embedding or tied head ({', '.join(refused)}) "
                              "is not supported: the embedding feeds both stacks and the tied head "
                              "is scaled by d_model ** -0.5; export the merged model (--format "
                              "gguf) instead")
    if tables and config.tie_word_embeddings and config.model_type not in FAMILIES:
        raise ExportError(f"a LoRA on the tied token embedding and output layer "
                          f"({', '.join(tables)}) cannot be a llama.cpp LoRA adapter: the {arch} "
                          "GGUF holds the one table token_embd for both, and llama.cpp applies a "
                          "LoRA on it to both uses (PEFT's changes only its own; an embedding's "
                          "then stops llama.cpp on a failed assertion); export the merged model "
                          "(--format gguf) instead, which writes the pair untied")
    writer = gguf.GGUFWriter()
    writer.add("general.architecture", gguf.STRING, arch)
    writer.add("general.type", gguf.STRING, "adapter")
    writer.add("general.name", gguf.STRING, name)
    writer.add("adapter.type", gguf.STRING, "lora")
    alpha = float(lora.scaling * lora.r)
    writer.add("adapter.lora.alpha", gguf.FLOAT32, alpha)
    writer.add("general.quantization_version", gguf.UINT32, QUANTIZATION_VERSION)
    pairs = {k[:-len(".lora_A.weight")]: (".lora_A.weight", ".lora_B.weight")
             for k in tensors if k.endswith(".lora_A.weight")}
    pairs.update({k[:-len(".lora_embedding_A")]: (".lora_embedding_A", ".lora_embedding_B")
                  for k in tensors if k.endswith(".lora_embedding_A")})
    for key in _ordered([module + ".weight" for module in pairs]):
        base = gguf_name(key, arch)
        module = key[:-len(".weight")]
        a_name, b_name = pairs[module]
        a_shape, a = tensors[module + a_name]
        b_shape, b = tensors[module + b_name]
        rank = lora.rank_of(module)
        if a_shape[0] != rank or b_shape[1] != rank:
            raise ExportError(f"the adapter's {module} tensors have rank {a_shape[0]} and "
                             f"{b_shape[1]}, its adapter_config.json says {rank}")
        ratio = lora.scaling_of(module) * rank / alpha
        if ratio != 1.0:
            b = array("f", (v * ratio for v in b))
        if a_name == ".lora_embedding_A":       # the rows build_inp_embd gathers by token id
            a_shape, a = (a_shape[1], rank), _transposed(a, a_shape)
        heads = _permutation(key, config, arch)
        b_rows = b if heads is None else permuted_heads(b, b_shape[0], heads)
        for suffix, shape, values in ((".lora_a", a_shape, a), (".lora_b", b_shape, b_rows)):
            target = base[:-len(".weight")] + ".weight" + suffix
            kind = gguf.block_type_for(shape, ggml_type)
            writer.add_tensor(target, shape, kind, lambda values=values: values)
    return writer


def _transposed(values, shape):
    """The [cols, rows] transpose of a row-major [rows, cols] array of floats."""
    out = array("f")
    for j in range(shape[1]):
        out.extend(values[j::shape[1]])
    return out
