"""Phi-2 family decoder configuration (PhiForCausalLM: microsoft/phi-2, phi-1, phi-1.5), read
from a Hugging Face config.json, validated, with the checkpoint's tensor shapes.

Phi's rotary embedding is partial: only the first int(head_dim * partial_rotary_factor)
dimensions of each head rotate (transformers' default factor 0.5; phi-2's 0.4). The factor is
read from rope_parameters (transformers 5) or the top-level field older configs carry, and kept
in `rope_parameters`, which the rope ops read. The attribute names the shared decoder code
reads are the Llama configuration's.
"""

from ..kernels.rope import rotary_dim
from .bert_config import ConfigError, config_field, read_config_json
from .gpt2_config import EXACT_GELU, TANH_GELU
from .llama_config import ROPE_TYPES, _padding_row, _rope_parameters
from .saved_modules import SavedModulesConfig

MODEL_TYPES = ("phi",)
PARTIAL_ROTARY_FACTOR = 0.5          # transformers' PhiConfig default


class PhiConfig(SavedModulesConfig):
    lora_targets = ("q_proj", "v_proj", "fc1", "fc2")     # PEFT's default LoRA targets for phi
    embedding_tables = ("model.embed_tokens.weight",)     # gathered by rows: kept f32 on a GPU
    # the modules an adapter may train whole (PEFT's modules_to_save): {module: its tensors}
    whole_modules = {"model.embed_tokens": ("model.embed_tokens.weight",),
                     "lm_head": ("lm_head.weight", "lm_head.bias")}

    def __init__(self, **values):
        def need(name, kind=int, default=None):
            return config_field(values, name, kind, default)

        self.model_type = values.get("model_type", "phi")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not a Phi-2 family decoder ({MODEL_TYPES})")
        self.vocab_size = need("vocab_size")
        self.hidden_size = need("hidden_size")
        self.num_hidden_layers = need("num_hidden_layers")
        self.num_attention_heads = need("num_attention_heads")
        self.num_key_value_heads = int(values.get("num_key_value_heads") or self.num_attention_heads)
        self.intermediate_size = need("intermediate_size")
        self.max_position_embeddings = need("max_position_embeddings", int, 2048)
        self.layer_norm_eps = need("layer_norm_eps", float, 1e-5)
        self.hidden_act = values.get("hidden_act", "gelu_new")
        self.tie_word_embeddings = bool(values.get("tie_word_embeddings", False))
        self.head_dim = self.hidden_size // max(1, self.num_attention_heads)
        self.rope_parameters = _rope_parameters(values, max_positions=self.max_position_embeddings)
        self.rope_parameters.setdefault(
            "partial_rotary_factor", need("partial_rotary_factor", float, PARTIAL_ROTARY_FACTOR))
        self.qk_layernorm = bool(values.get("qk_layernorm", False))
        # transformers applies these in train mode only; so does the engine (models/phi.py).
        self.embd_pdrop = need("embd_pdrop", float, 0.0)
        self.resid_pdrop = need("resid_pdrop", float, 0.0)
        self.attention_dropout = float(values.get("attention_dropout") or 0.0)
        self.initializer_range = need("initializer_range", float, 0.02)
        self.bos_token_id = values.get("bos_token_id")
        self.eos_token_id = values.get("eos_token_id")
        # nn.Embedding's padding_idx: that row of the table (and of an embedding LoRA's A^T)
        # gets no gradient
        self.pad_token_id = _padding_row(values.get("pad_token_id"), self.vocab_size)
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.json field {name!r} must be positive, got {getattr(self, name)}")
        for name in ("embd_pdrop", "resid_pdrop", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"config.json field {name!r} must be in [0, 1), got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.hidden_act not in TANH_GELU + EXACT_GELU:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported ({TANH_GELU + EXACT_GELU})")
        if self.qk_layernorm:
            raise ConfigError("qk_layernorm true (a LayerNorm on each head's queries and keys) is "
                              "not supported for Phi checkpoints")
        if self.rope_parameters["rope_type"] not in ROPE_TYPES:
            raise ConfigError(f"rope type {self.rope_parameters['rope_type']!r} is not supported ({ROPE_TYPES})")
        try:
            self.rotary_dim = rotary_dim(self.head_dim, self.rope_parameters)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @property
    def gelu_approximate(self):
        """The gelu op's `approximate` for this checkpoint's activation."""
        return "tanh" if self.hidden_act in TANH_GELU else "none"

    @classmethod
    def from_file(cls, path):
        return cls(**read_config_json(path))

    def parameter_shapes(self):
        """{name: shape} of every tensor a PhiForCausalLM checkpoint holds: every linear and
        LayerNorm with a bias, the head's too (its weight only when not tied)."""
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        shapes = {"model.embed_tokens.weight": (self.vocab_size, h)}
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            shapes.update({p + "input_layernorm.weight": (h,), p + "input_layernorm.bias": (h,)})
            for module, out_f, in_f in (("self_attn.q_proj", q, h), ("self_attn.k_proj", kv, h),
                                        ("self_attn.v_proj", kv, h), ("self_attn.dense", h, q),
                                        ("mlp.fc1", i, h), ("mlp.fc2", h, i)):
                shapes.update({p + module + ".weight": (out_f, in_f), p + module + ".bias": (out_f,)})
        shapes.update({"model.final_layernorm.weight": (h,), "model.final_layernorm.bias": (h,)})
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        shapes["lm_head.bias"] = (self.vocab_size,)
        return shapes

    def checkpoint_layout(self, tensors):
        """Tensors as the checkpoint stores them: the engine's own layout."""
        return tensors
