"""Llama-family decoder configuration (Llama 2/3, TinyLlama, SmolLM/SmolLM2/SmolLM3, Qwen2, Qwen3,
Mistral, Gemma 1/2/3, Phi-3), read from a Hugging Face config.json, validated, with the checkpoint's
expected tensor shapes.

Both spellings of the rotary settings are read: transformers 5's `rope_parameters` and the
older `rope_theta` + `rope_scaling` that published checkpoints carry.

The variants are parameters of the one decoder (models/llama.py):
- Mistral: `sliding_window` (transformers' default 4096 when config.json omits it; null = none),
  on every layer. Qwen2: a window only with use_sliding_window, on the layers transformers
  gives one (its `layer_types`, or layers from max_window_layers on). `layer_windows` holds
  each layer's window (None = full causal attention).
- SmolLM3 (SmolLM3ForCausalLM, `smollm3`): Llama's, with no rotary embedding on some layers
  (NoPE: its `no_rope_layers`, 1 where a layer rotates, else every no_rope_layer_interval-th
  layer (4) goes without; `layer_rope_used`), a window only with use_sliding_window on the
  layers without rotation, and a tied head by default.
- Gemma (1): GeGLU with the tanh GELU (`mlp_activation` "gelu_tanh"), RMSNorm
  scaling by (1 + weight) (`norm_offset` 1.0), embeddings multiplied by sqrt(hidden_size)
  (`embedding_scale`, rounded to float32 as transformers' float32 buffer holds it), a tied head
  and heads of 256 by default.
- Gemma 3, text only (Gemma3ForCausalLM, `gemma3_text`: Gemma 3 270M and 1B): Gemma's, plus
  QK-norm (as Qwen3's, by 1 + weight), `sandwich_norms` (the attention's and the MLP's outputs
  RMS-normalised before their residual adds: post_attention_layernorm and
  post_feedforward_layernorm; pre_feedforward_layernorm before the MLP), scores scaled by
  query_pre_attn_scalar^-1/2 (`query_scale`: the queries multiplied by
  sqrt(head_dim / query_pre_attn_scalar)), a window on the sliding layers (its `layer_types`,
  else every layer but each sliding_window_pattern-th) whose rotary embedding has its own base
  (rope_local_base_freq, or rope_parameters["sliding_attention"]): `layer_rope` names each
  layer's.
- Gemma 2 (Gemma2ForCausalLM, `gemma2`: gemma-2-2b/9b/27b): Gemma's, with Gemma 3's sandwich
  norms, query_scale and sliding layers (every other one from the first, or its layer_types),
  one rotary base for all layers, no QK-norm, and logit soft-capping: each attention score s
  becomes c * tanh(s / c) with c = attn_logit_softcapping (50 by default) and the final logits
  likewise with final_logit_softcapping (30 by default); null turns either off. Other families
  refuse a soft cap.
- Phi-3 / Phi-3.5-mini (Phi3ForCausalLM): two fused projections, one self_attn.qkv_proj
  ([q + 2 kv, hidden], q first) and one mlp.gate_up_proj ([2 intermediate, hidden], gate first),
  no biases, its `sliding_window` on every layer as Mistral's, and LongRoPE ("longrope", older
  "su" / "yarn") as its rope scaling, read as transformers' Phi3Config reads it: the top-level
  original_max_position_embeddings wins, and the attention factor's `factor` defaults to
  max_position_embeddings / original_max_position_embeddings. Phi-4-mini's partial rotary
  embedding (partial_rotary_factor: only the first `rotary_dim` dimensions of each head turn,
  as transformers' Phi3 rotates them; LongRoPE's factors then number rotary_dim / 2) is read
  too; the other families refuse it, as transformers' rotate whole heads.
"""

import math
import struct

from ..kernels.rope import rotary_dim
from .bert_config import ConfigError, config_field, read_config_json
from .saved_modules import SavedModulesConfig

# The families this configuration serves, by name (models/decoders.py names them to users).
FAMILY_TYPES = {"Llama": ("llama", "qwen2", "qwen3", "mistral", "smollm3"), "Gemma": ("gemma", "gemma2", "gemma3_text"),
                "Phi-3": ("phi3",)}
MODEL_TYPES = tuple(t for types in FAMILY_TYPES.values() for t in types)
PHI3_TYPES = FAMILY_TYPES["Phi-3"]    # the fused-projection variant
ROPE_TYPES = ("default", "linear", "llama3", "longrope")
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
FUSED_PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
# config.json's hidden_act -> the swiglu op family's activation. Gemma checkpoints say "gelu"
# (and hidden_activation "gelu_pytorch_tanh"), which transformers runs as the tanh form.
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}
MISTRAL_WINDOW = 4096    # transformers' MistralConfig default sliding_window
# Gemma2Config's defaults for the soft caps config.json may omit
GEMMA2_SOFTCAPS = {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}
# transformers' pad_token_id defaults where a config.json leaves it out (the embedding's
# padding_idx, whose row full fine-tuning leaves alone); the other families default to none
PAD_TOKEN_DEFAULTS = {"gemma": 0, "gemma2": 0, "gemma3_text": 0, "phi3": 32000, "smollm3": 128004}
# transformers' max_position_embeddings defaults, where a config.json leaves it out
MAX_POSITIONS_DEFAULTS = {"llama": 2048, "qwen2": 32768, "qwen3": 32768, "mistral": 131072,
                          "smollm3": 32768, "gemma": 8192, "gemma2": 8192, "gemma3_text": 131072,
                          "phi3": 4096}


RMS_NORM_EPS = 1e-6      # transformers' LlamaConfig default; the RMSNorm ops' default too
PHI3_RMS_NORM_EPS = 1e-5   # transformers' Phi3Config default

class LlamaConfig(SavedModulesConfig):
    lora_targets = ("q_proj", "v_proj")     # PEFT's default LoRA targets for these models
    embedding_tables = ("model.embed_tokens.weight",)   # gathered by rows: kept f32 on a GPU
    # the modules an adapter may train whole (PEFT's modules_to_save): {module: its tensors}
    whole_modules = {"model.embed_tokens": ("model.embed_tokens.weight",),
                     "lm_head": ("lm_head.weight",)}
    def __init__(self, **values):
        def need(name, kind=int, default=None):
            return config_field(values, name, kind, default)

        self.model_type = values.get("model_type", "llama")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not a Llama-family decoder ({MODEL_TYPES})")
        # Phi-3: q, k, v in one qkv_proj and gate, up in one gate_up_proj
        self.fused_projections = self.model_type in PHI3_TYPES
        self.projections = FUSED_PROJECTIONS if self.fused_projections else PROJECTIONS
        if self.fused_projections:
            # PEFT names no default for phi3: the fused projection holding q and v, Llama's default
            self.lora_targets = ("qkv_proj",)
        self.vocab_size = need("vocab_size")
        self.hidden_size = need("hidden_size")
        self.num_hidden_layers = need("num_hidden_layers")
        self.num_attention_heads = need("num_attention_heads")
        self.num_key_value_heads = need("num_key_value_heads", int, values.get("num_attention_heads"))
        self.intermediate_size = need("intermediate_size")
        self.max_position_embeddings = need("max_position_embeddings", int,
                                            MAX_POSITIONS_DEFAULTS[self.model_type])
        self.rms_norm_eps = need("rms_norm_eps", float,
                                 PHI3_RMS_NORM_EPS if self.fused_projections else RMS_NORM_EPS)
        gemma = self.model_type in FAMILY_TYPES["Gemma"]
        gemma3 = self.model_type == "gemma3_text"
        gemma2 = self.model_type == "gemma2"
        self.hidden_act = _hidden_act(values, gemma)
        self.mlp_activation = ACTIVATIONS.get(self.hidden_act)
        self.norm_offset = 1.0 if gemma else 0.0
        self.embedding_scale = _float32(math.sqrt(self.hidden_size)) if gemma else None
        self.tie_word_embeddings = bool(values.get("tie_word_embeddings",
                                                   gemma or self.model_type == "smollm3"))
        # Qwen2 has biases on q, k, v (not o); Llama's attention_bias puts them on all four.
        self.attention_bias = bool(values.get("attention_bias", self.model_type == "qwen2"))
        self.qkv_bias_only = self.model_type == "qwen2"
        self.qk_norm = self.model_type == "qwen3" or gemma3     # q_norm, k_norm per head
        self.sandwich_norms = gemma3 or gemma2
        self.mlp_bias = bool(values.get("mlp_bias", False))
        self.head_dim = need("head_dim", int, 256 if gemma else 128 if self.qk_norm else
                             self.hidden_size // max(1, self.num_attention_heads))
        self.layer_rope_used = _layer_rope_used(values, self.model_type, self.num_hidden_layers)
        sliding = _sliding_layers(values, self.model_type, self.num_hidden_layers,
                                  self.layer_rope_used)
        self.layer_windows = _layer_windows(values, self.model_type, sliding)
        self.use_bidirectional_attention = bool(values.get("use_bidirectional_attention"))
        # the rotary settings of full-attention layers; Gemma 3's sliding layers have their own
        by_type = values.get("rope_parameters") if gemma3 else None
        by_type = by_type if isinstance(by_type, dict) and "full_attention" in by_type else None
        self.rope_parameters = _rope_parameters(
            dict(values, rope_parameters=dict(by_type["full_attention"]), rope_scaling=None) if by_type
            else dict(values, rope_theta=values.get("rope_theta", 1_000_000.0)) if gemma3 else values,
            self.model_type in PHI3_TYPES, self.max_position_embeddings)
        local = None
        if gemma3:
            local = dict((by_type or {}).get("sliding_attention") or {"rope_type": "default"})
            local.setdefault("rope_theta", values.get("rope_local_base_freq", 10_000.0))
            local = _rope_parameters({"rope_parameters": local},
                                     max_positions=self.max_position_embeddings)
        # each layer's rotary settings: rope_parameters, or on a Gemma 3 sliding layer its own
        self.layer_rope = tuple(local if local is not None and s else self.rope_parameters
                                for s in sliding)
        self.query_scale = None
        if gemma3 or gemma2:
            scalar = need("query_pre_attn_scalar", float, 256.0)
            if scalar != self.head_dim:
                self.query_scale = math.sqrt(self.head_dim / scalar)
        # the soft caps (None = none): Gemma 2's, refused in other families
        caps = {name: values.get(name, default if gemma2 else None)
                for name, default in GEMMA2_SOFTCAPS.items()}
        self.attn_logit_softcapping = _softcap(caps, "attn_logit_softcapping")
        self.final_logit_softcapping = _softcap(caps, "final_logit_softcapping")
        self.softcapping = {} if gemma2 else {n: v for n, v in caps.items() if v is not None}
        # Phi-3's dropout rates, refused unless 0 (the Llama family's attention_dropout is
        # not read, as before)
        self.dropout = {name: float(values.get(name) or 0.0)
                        for name in ("embd_pdrop", "resid_pdrop", "attention_dropout")
                        if self.fused_projections}
        self.initializer_range = need("initializer_range", float, 0.02)
        self.bos_token_id = values.get("bos_token_id")
        self.eos_token_id = values.get("eos_token_id")
        # transformers' padding_idx: the embedding row no token's gradient reaches (a family's
        # default past a tiny vocabulary, where transformers could not build the embedding, is none)
        pad = PAD_TOKEN_DEFAULTS.get(self.model_type)
        pad = values.get("pad_token_id", pad if pad is not None and pad < self.vocab_size else None)
        self.pad_token_id = _padding_row(pad, self.vocab_size)
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.json field {name!r} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.mlp_activation is None:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported "
                              f"({', '.join(ACTIVATIONS)})")
        for window in self.layer_windows:
            if window is not None and window < 1:
                raise ConfigError(f"config.json field 'sliding_window' must be positive or null, got {window}")
        if self.use_bidirectional_attention:
            raise ConfigError("use_bidirectional_attention is not supported (causal decoders only)")
        for name, value in self.softcapping.items():
            raise ConfigError(f"config.json field {name!r} is {value}: logit soft-capping is not "
                              "supported (only null)")
        for rope in (self.rope_parameters, *self.layer_rope):
            if rope["rope_type"] not in ROPE_TYPES:
                raise ConfigError(f"rope type {rope['rope_type']!r} is not supported ({ROPE_TYPES})")
        factor = float(self.rope_parameters.get("partial_rotary_factor", 1.0))
        if factor != 1.0 and not self.fused_projections:
            # transformers rotates whole heads in these families (a partial table fails there)
            raise ConfigError(f"partial_rotary_factor {factor} is not supported for model_type "
                              f"{self.model_type!r} (only 1.0)")
        try:
            self.rotary_dim = rotary_dim(self.head_dim, self.rope_parameters)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.rope_parameters["rope_type"] == "longrope":
            for name in ("short_factor", "long_factor"):
                if len(self.rope_parameters.get(name) or ()) != self.rotary_dim // 2:
                    raise ConfigError(f"longrope {name} must hold one number per rotated pair of "
                                      f"dimensions, {self.rotary_dim // 2}, got "
                                      f"{self.rope_parameters.get(name)!r}")
        for name, p in self.dropout.items():
            if p:
                raise ConfigError(f"config.json field {name!r} is {p}: dropout is not supported for "
                                  f"model_type {self.model_type!r} (only 0)")

    @classmethod
    def from_file(cls, path):
        return cls(**read_config_json(path))

    def parameter_shapes(self):
        """{name: shape} of every tensor a LlamaForCausalLM checkpoint holds (lm_head only when
        the embeddings are not tied)."""
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        shapes = {"model.embed_tokens.weight": (self.vocab_size, h), "model.norm.weight": (h,)}
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            if self.fused_projections:
                shapes.update({
                    p + "self_attn.qkv_proj.weight": (q + 2 * kv, h), p + "self_attn.o_proj.weight": (h, q),
                    p + "mlp.gate_up_proj.weight": (2 * i, h), p + "mlp.down_proj.weight": (h, i),
                    p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                })
                continue
            shapes.update({
                p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
                p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            })
            if self.qk_norm:
                shapes.update({p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)})
            if self.sandwich_norms:
                shapes.update({p + "pre_feedforward_layernorm.weight": (h,),
                               p + "post_feedforward_layernorm.weight": (h,)})
            if self.attention_bias:
                shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                               p + "self_attn.v_proj.bias": (kv,)})
                if not self.qkv_bias_only:
                    shapes[p + "self_attn.o_proj.bias"] = (h,)
            if self.mlp_bias:
                shapes.update({p + "mlp.gate_proj.bias": (i,), p + "mlp.up_proj.bias": (i,),
                               p + "mlp.down_proj.bias": (h,)})
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    def checkpoint_layout(self, tensors):
        """Tensors as the checkpoint stores them: the engine's own layout."""
        return tensors


def _float32(x):
    """x rounded to the nearest float32 (without NumPy: the config runs in the browser too)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _hidden_act(values, gemma):
    """config.json's MLP activation; Gemma's legacy "gelu" (and its hidden_activation) is the
    tanh form, as transformers reads them."""
    if not gemma:
        return values.get("hidden_act", "silu")
    act = values.get("hidden_activation") or values.get("hidden_act") or "gelu_pytorch_tanh"
    return "gelu_pytorch_tanh" if act == "gelu" else act


def _layer_rope_used(values, model_type, layers):
    """Whether each layer rotates its queries and keys: all of them, but SmolLM3's
    no_rope_layers (1 = rotates), by default every no_rope_layer_interval-th without."""
    if model_type != "smollm3":
        return (True,) * layers
    used = values.get("no_rope_layers")
    if used is None:
        interval = config_field(values, "no_rope_layer_interval", int, 4)
        if interval < 1:
            raise ConfigError(f"config.json field 'no_rope_layer_interval' must be positive, got {interval}")
        used = [(n + 1) % interval != 0 for n in range(layers)]
    if not isinstance(used, list) or len(used) != layers or any(u not in (0, 1) for u in used):
        raise ConfigError(f"config.json field 'no_rope_layers' must hold 0 or 1 for each of the "
                          f"{layers} layers, got {used!r}")
    return tuple(bool(u) for u in used)


def _sliding_layers(values, model_type, layers, rope_used):
    """Whether each layer is a sliding-window one, as transformers lays them out: config.json's
    layer_types where the family reads them (Qwen2/3, Gemma 2/3, SmolLM3), else its default
    pattern."""
    if model_type == "mistral" or model_type in PHI3_TYPES:
        return [True] * layers
    if model_type == "gemma2":           # every other layer, from the first
        default = [n % 2 == 0 for n in range(layers)]
    elif model_type == "gemma3_text":    # all but each sliding_window_pattern-th (6 by default)
        pattern = values.get("sliding_window_pattern", values.get("_sliding_window_pattern", 6))
        default = [(n + 1) % pattern != 0 for n in range(layers)]
    elif model_type in ("qwen2", "qwen3"):   # with use_sliding_window, from max_window_layers on
        first = values.get("max_window_layers", 28)
        default = [bool(values.get("use_sliding_window")) and n >= first for n in range(layers)]
    elif model_type == "smollm3":        # with use_sliding_window, the layers without rotation
        window = bool(values.get("use_sliding_window")) and values.get("sliding_window") is not None
        default = [window and not used for used in rope_used]
    else:
        return [False] * layers
    types = values.get("layer_types")
    if types is None:
        return default
    if len(types) != layers:
        raise ConfigError(f"config.json field 'layer_types' has {len(types)} entries for {layers} layers")
    return [t == "sliding_attention" for t in types]


def _layer_windows(values, model_type, sliding):
    """Each layer's sliding window (None = full causal attention), as transformers picks them."""
    if model_type == "mistral":
        window = values.get("sliding_window", MISTRAL_WINDOW)
    elif model_type in PHI3_TYPES:        # Phi3Config's default: none
        window = values.get("sliding_window")
    elif model_type in ("gemma2", "gemma3_text"):
        window = values.get("sliding_window", 4096)
    elif model_type in ("qwen2", "qwen3"):
        window = values.get("sliding_window", 4096) if values.get("use_sliding_window") else None
    elif model_type == "smollm3":
        window = values.get("sliding_window") if values.get("use_sliding_window") else None
    else:
        window = None
    return tuple(window if s else None for s in sliding)


def _softcap(caps, name):
    """A soft cap as a positive float, or None."""
    value = caps[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"config.json field {name!r} must be a positive number or null, got {value!r}")
    return float(value)


def _padding_row(pad, vocab_size):
    """pad_token_id as nn.Embedding takes it for padding_idx (negative counts from the end)."""
    if pad is None:
        return None
    if isinstance(pad, bool) or not isinstance(pad, int) or not -vocab_size <= pad < vocab_size:
        raise ConfigError(f"pad_token_id {pad!r} is not a row of the {vocab_size}-token embedding")
    return pad % vocab_size


def _rope_parameters(values, phi3=False, max_positions=None):
    """The rotary settings of config.json's fields; `max_positions`: the model's context
    (max_position_embeddings, or its family's default), which LongRoPE's factor defaults from."""
    params = values.get("rope_parameters")
    if params is None:
        params = dict(values.get("rope_scaling") or {})
        params.setdefault("rope_theta", values.get("rope_theta", 10000.0))
    params = dict(params)
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    params.setdefault("rope_theta", values.get("rope_theta", 10000.0))
    if values.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", values["partial_rotary_factor"])
    if phi3 and params["rope_type"] in ("su", "yarn"):      # Phi3Config's older spellings
        params["rope_type"] = "longrope"
    if params["rope_type"] == "longrope":
        # a top-level original_max_position_embeddings wins, as transformers reads it
        # (Phi3Config always has one: 4096 by default)
        top = values.get("original_max_position_embeddings", 4096 if phi3 else None)
        if top is not None:
            params["original_max_position_embeddings"] = top
        params.setdefault("original_max_position_embeddings", max_positions)
        if params.get("factor") is None:
            params["factor"] = max_positions / params["original_max_position_embeddings"]
    return params
