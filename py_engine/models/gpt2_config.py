"""GPT-2 family decoder configuration (GPT2LMHeadModel: GPT-2, DialoGPT, distilgpt2), read from a
Hugging Face config.json (GPT-2's own field names: n_embd, n_layer, n_head, n_positions),
validated, with the checkpoint's tensor shapes in the engine's layout.

The engine keeps every linear weight as [out, in]. GPT-2 stores its linears as Conv1D, [in, out]
(`CONV1D` below); the checkpoint transposes them on load (models/checkpoint.py) and merged
exports write them back. The attribute names the shared decoder code reads (hidden_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, max_position_embeddings,
eos_token_id) are the Llama configuration's.
"""

from array import array

from .bert_config import ConfigError, config_field, read_config_json
from .saved_modules import SavedModulesConfig

MODEL_TYPES = ("gpt2",)
# transformers' names for the tanh GELU, and for the exact one.
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
EXACT_GELU = ("gelu",)
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")   # every GPT-2 linear


class Gpt2Config(SavedModulesConfig):
    lora_targets = ("c_attn",)             # PEFT's default LoRA target for GPT-2
    embedding_tables = ("transformer.wte.weight", "transformer.wpe.weight")   # kept f32 on a GPU
    # the modules an adapter may train whole (PEFT's modules_to_save): {module: its tensors}.
    # GPT-2's head is tied; trained whole it is a copy of its own (SavedModulesConfig.with_saved)
    whole_modules = {"transformer.wte": ("transformer.wte.weight",), "lm_head": ("lm_head.weight",)}

    def __init__(self, **values):
        def need(name, kind=int, default=None):
            return config_field(values, name, kind, default)

        self.model_type = values.get("model_type", "gpt2")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not a GPT-2 family decoder ({MODEL_TYPES})")
        self.vocab_size = need("vocab_size")
        self.hidden_size = need("n_embd")
        self.num_hidden_layers = need("n_layer")
        self.num_attention_heads = need("n_head")
        self.num_key_value_heads = self.num_attention_heads
        # n_inner is null in GPT-2's own configs: 4 * n_embd, as transformers reads it.
        self.intermediate_size = int(values.get("n_inner") or 4 * self.hidden_size)
        self.max_position_embeddings = need("n_positions", int, 1024)
        self.layer_norm_epsilon = need("layer_norm_epsilon", float, 1e-5)
        self.activation_function = values.get("activation_function", "gelu_new")
        self.tie_word_embeddings = bool(values.get("tie_word_embeddings", True))
        self.head_dim = self.hidden_size // max(1, self.num_attention_heads)
        self.initializer_range = need("initializer_range", float, 0.02)
        # transformers applies these in train mode only; so does the engine (models/gpt2.py).
        self.embd_pdrop = need("embd_pdrop", float, 0.1)
        self.resid_pdrop = need("resid_pdrop", float, 0.1)
        self.attn_pdrop = need("attn_pdrop", float, 0.1)
        self.bos_token_id = values.get("bos_token_id")
        self.eos_token_id = values.get("eos_token_id")
        self._validate(values)

    def _validate(self, values):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.json value {name!r} must be positive, got {getattr(self, name)}")
        for name in ("embd_pdrop", "resid_pdrop", "attn_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"config.json value {name!r} must be in [0, 1), got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"n_embd {self.hidden_size} is not a multiple of n_head {self.num_attention_heads}")
        if self.activation_function not in TANH_GELU + EXACT_GELU:
            raise ConfigError(f"activation_function {self.activation_function!r} is not supported "
                              f"({TANH_GELU + EXACT_GELU})")
        if not values.get("scale_attn_weights", True) or values.get("scale_attn_by_inverse_layer_idx"):
            raise ConfigError("only GPT-2's standard attention scaling (1 / sqrt(head_dim)) is supported")

    @property
    def gelu_approximate(self):
        """The gelu op's `approximate` for this checkpoint's activation."""
        return "tanh" if self.activation_function in TANH_GELU else "none"

    @classmethod
    def from_file(cls, path):
        return cls(**read_config_json(path))

    def parameter_shapes(self):
        """{name: shape} of every tensor the model reads, as GPT2LMHeadModel names them, linear
        weights in the engine's [out, in] layout (transposed from the checkpoint's Conv1D)."""
        h, i = self.hidden_size, self.intermediate_size
        shapes = {"transformer.wte.weight": (self.vocab_size, h),
                  "transformer.wpe.weight": (self.max_position_embeddings, h)}
        for n in range(self.num_hidden_layers):
            p = f"transformer.h.{n}."
            for ln in ("ln_1", "ln_2"):
                shapes.update({p + ln + ".weight": (h,), p + ln + ".bias": (h,)})
            for module, out_f, in_f in (("attn.c_attn", 3 * h, h), ("attn.c_proj", h, h),
                                        ("mlp.c_fc", i, h), ("mlp.c_proj", h, i)):
                shapes.update({p + module + ".weight": (out_f, in_f), p + module + ".bias": (out_f,)})
        shapes.update({"transformer.ln_f.weight": (h,), "transformer.ln_f.bias": (h,)})
        if not self.tie_word_embeddings:      # a head of its own (an adapter's, trained whole)
            shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    @staticmethod
    def is_conv1d(name):
        """Whether tensor `name` is a Conv1D weight (stored [in, out] in the checkpoint)."""
        return name.endswith(".weight") and name[:-len(".weight")].split(".", 3)[-1] in CONV1D

    def checkpoint_layout(self, tensors):
        """{name: (shape, float32 values)} in the engine's layout -> as GPT2LMHeadModel stores
        them: Conv1D weights transposed back to [in, out] (a saved or merged model)."""
        out = {}
        for name, (shape, values) in tensors.items():
            if self.is_conv1d(name):
                rows, cols = shape
                if not isinstance(values, array):
                    values = array("f", bytes(memoryview(values)))
                shape, values = (cols, rows), transposed(values, rows, cols)
            out[name] = (tuple(shape), values)
        return out


def transposed(values, rows, cols):
    """A row-major [rows, cols] array('f' or 'H') as [cols, rows], in pure Python: column j is
    the strided slice values[j::cols], copied in C by array's slicing."""
    out = array(values.typecode)
    for j in range(cols):
        out.extend(values[j::cols])
    return out
