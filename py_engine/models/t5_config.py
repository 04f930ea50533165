"""T5 encoder-decoder configuration (T5ForConditionalGeneration: FLAN-T5, T5 v1.1), read from a
Hugging Face config.json (T5's own field names: d_model, d_kv, d_ff, num_layers, num_heads),
validated, with the checkpoint's tensor shapes in transformers' names.

Supported: the gated feed-forward ("gated-gelu", wo(gelu_tanh(wi_0 x) * wi_1 x), as FLAN-T5 and
T5 v1.1 use; "gated-silu" likewise), a separate lm_head (tie_word_embeddings false: FLAN-T5) or
the tied one, the shared embedding, which transformers then applies to the decoder's output
scaled by d_model ** -0.5 (tie_word_embeddings true or absent, as the original T5's config
says; an lm_head.weight such a checkpoint carries is not read). The original T5's ungated ReLU
feed-forward is refused by name.

The attribute names the shared decoder code reads (hidden_size, num_hidden_layers,
num_attention_heads, num_key_value_heads, head_dim, max_position_embeddings, eos_token_id) are
the decoder stack's: head_dim is d_kv, which need not be d_model / num_heads.
"""

from .bert_config import ConfigError, config_field, read_config_json
from .saved_modules import SavedModulesConfig

MODEL_TYPES = ("t5",)
# feed_forward_proj -> the swiglu op's activation on the gate
GATED_ACTIVATIONS = {"gated-gelu": "gelu_tanh", "gated-silu": "silu"}
# T5 has no position table: relative position buckets reach any length. Generation's cache is
# sized by this default unless a caller asks for another length.
DEFAULT_MAX_LENGTH = 512


class T5Config(SavedModulesConfig):
    lora_targets = ("q", "v")                 # PEFT's default LoRA targets for T5
    embedding_tables = ("shared.weight",)    # gathered by rows: kept f32 on a GPU
    whole_modules = {}      # modules_to_save: none read (T5's adapters train their LoRA alone)
    encoder_decoder = True

    def __init__(self, **values):
        def need(name, kind=int, default=None):
            return config_field(values, name, kind, default)

        self.model_type = values.get("model_type", "t5")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not a T5 encoder-decoder ({MODEL_TYPES})")
        self.vocab_size = need("vocab_size")
        self.hidden_size = need("d_model")
        self.head_dim = need("d_kv", int, 64)
        self.intermediate_size = need("d_ff")
        self.num_encoder_layers = need("num_layers")
        self.num_hidden_layers = need("num_decoder_layers", int, self.num_encoder_layers)
        self.num_attention_heads = need("num_heads")
        self.num_key_value_heads = self.num_attention_heads
        self.relative_attention_num_buckets = need("relative_attention_num_buckets", int, 32)
        self.relative_attention_max_distance = need("relative_attention_max_distance", int, 128)
        self.layer_norm_epsilon = need("layer_norm_epsilon", float, 1e-6)
        self.dropout_rate = need("dropout_rate", float, 0.1)
        self.feed_forward_proj = values.get("feed_forward_proj", "relu")
        self.tie_word_embeddings = bool(values.get("tie_word_embeddings", True))
        self.max_position_embeddings = need("n_positions", int, DEFAULT_MAX_LENGTH)
        self.pad_token_id = need("pad_token_id", int, 0)
        self.eos_token_id = values.get("eos_token_id", 1)
        self.bos_token_id = None
        self.decoder_start_token_id = need("decoder_start_token_id", int, self.pad_token_id)
        self.initializer_range = need("initializer_factor", float, 1.0)
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "head_dim", "intermediate_size", "num_encoder_layers",
                     "num_hidden_layers", "num_attention_heads", "relative_attention_num_buckets",
                     "relative_attention_max_distance", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.json value {name!r} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"config.json value 'dropout_rate' must be in [0, 1), got {self.dropout_rate}")
        if self.feed_forward_proj not in GATED_ACTIVATIONS:
            raise ConfigError(f"feed_forward_proj {self.feed_forward_proj!r} is not supported "
                              f"(supported: {', '.join(GATED_ACTIVATIONS)}, as FLAN-T5 and T5 v1.1 use)")

    @property
    def activation(self):
        """The swiglu op's activation on the gate (wi_0's output)."""
        return GATED_ACTIVATIONS[self.feed_forward_proj]

    @classmethod
    def from_file(cls, path):
        return cls(**read_config_json(path))

    def parameter_shapes(self):
        """{name: shape} of every tensor the model reads, as T5ForConditionalGeneration names
        them; linear weights [out, in]."""
        d, inner, ff = self.hidden_size, self.num_attention_heads * self.head_dim, self.intermediate_size
        attention = {"q": (inner, d), "k": (inner, d), "v": (inner, d), "o": (d, inner)}
        mlp = {"wi_0": (ff, d), "wi_1": (ff, d), "wo": (d, ff)}
        bias_table = (self.relative_attention_num_buckets, self.num_attention_heads)
        shapes = {"shared.weight": (self.vocab_size, d)}
        for stack, layers, sublayers in (("encoder", self.num_encoder_layers, ("SelfAttention",)),
                                         ("decoder", self.num_hidden_layers, ("SelfAttention", "EncDecAttention"))):
            for n in range(layers):
                p = f"{stack}.block.{n}.layer."
                for i, attn in enumerate(sublayers):
                    shapes[f"{p}{i}.layer_norm.weight"] = (d,)
                    shapes.update({f"{p}{i}.{attn}.{m}.weight": s for m, s in attention.items()})
                    if n == 0 and attn == "SelfAttention":
                        shapes[f"{p}{i}.{attn}.relative_attention_bias.weight"] = bias_table
                f = len(sublayers)
                shapes[f"{p}{f}.layer_norm.weight"] = (d,)
                shapes.update({f"{p}{f}.DenseReluDense.{m}.weight": s for m, s in mlp.items()})
            shapes[f"{stack}.final_layer_norm.weight"] = (d,)
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, d)
        return shapes

    def checkpoint_layout(self, tensors):
        """{name: (shape, float32 values)} -> as T5ForConditionalGeneration stores them: the
        engine keeps transformers' names and layouts (a merged model)."""
        return {name: (tuple(shape), values) for name, (shape, values) in tensors.items()}

    @property
    def head_name(self):
        return "shared.weight" if self.tie_word_embeddings else "lm_head.weight"

    @property
    def output_scale(self):
        """What transformers multiplies the decoder's output by before the head: d_model ** -0.5
        with the tied head, 1 otherwise."""
        return self.hidden_size ** -0.5 if self.tie_word_embeddings else 1.0
