"""ModernBERT configuration (ModernBertForSequenceClassification: ModernBERT-base and -large, and
the classifiers fine-tuned from them), read from a Hugging Face config.json, validated, with the
checkpoint's tensor shapes under transformers' names.

config.json comes in two forms: transformers 5's (layer_types, rope_parameters per layer type)
and the one the released checkpoints carry (global_attn_every_n_layers, global_rope_theta,
local_rope_theta); both read as transformers reads them. Every third layer (by default)
attends globally; the others within local_attention // 2 tokens either side.
"""

from .bert_config import ConfigError, config_field, config_id2label, read_config_json

MODEL_TYPE = "modernbert"
HEAD = "classifier"          # ModernBertForSequenceClassification's output layer
LAYER_TYPES = ("full_attention", "sliding_attention")
# transformers' defaults where config.json leaves them out (ModernBertConfig)
DEFAULT_THETA = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}
POOLINGS = ("cls", "mean")


class ModernBertConfig:
    """The fields of transformers' ModernBertConfig that the classifier needs."""

    family = MODEL_TYPE
    prefix = ""             # the names are transformers' whole ("model.layers.0...", "head.dense")
    # PEFT has no default LoRA targets for ModernBERT (it asks for target_modules): the
    # attention's fused projection, BERT's query and value among its outputs
    classifier_targets = ("Wqkv",)
    token_types = False     # no token type embeddings
    pooling_in_config = True    # config.json's classifier_pooling: see default_pooling
    pair_mask = False           # its attention masks the padded keys alone (BertConfig.pair_mask)

    def trains_pooler(self, tensors):
        """No pooler here: head.dense is the checkpoint's, frozen or under a LoRA."""
        return False

    def __init__(self, **values):
        def need(name, kind=int, default=None):
            return config_field(values, name, kind, default)

        self.model_type = values.get("model_type")
        if self.model_type != MODEL_TYPE:
            raise ConfigError(f"model_type {self.model_type!r} is not ModernBERT")
        self.vocab_size = need("vocab_size")
        self.hidden_size = need("hidden_size")
        self.intermediate_size = need("intermediate_size")
        self.num_hidden_layers = need("num_hidden_layers")
        self.num_attention_heads = need("num_attention_heads")
        self.max_position_embeddings = need("max_position_embeddings", int, 8192)
        self.norm_eps = need("norm_eps", float, 1e-5)
        self.initializer_range = need("initializer_range", float, 0.02)
        self.pad_token_id = need("pad_token_id", int, 50283)
        self.local_attention = need("local_attention", int, 128)
        for name in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias"):
            value = values.get(name, False)
            if not isinstance(value, bool):
                raise ConfigError(f"config.json field {name!r} should be true or false, got {value!r}")
            setattr(self, name, value)
        self.dropout = {name: need(name, float, 0.0) for name in
                        ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout")}
        for name in ("hidden_activation", "classifier_activation"):
            value = values.get(name, "gelu")
            if value != "gelu":
                raise ConfigError(f"config.json field {name!r} is {value!r}; only ModernBERT's "
                                  "exact GELU ('gelu') is read here")
        self.classifier_pooling = values.get("classifier_pooling", "cls")
        if self.classifier_pooling not in POOLINGS:
            raise ConfigError(f"classifier_pooling must be one of {POOLINGS}, got "
                              f"{self.classifier_pooling!r}")
        self.layer_types = self._layer_types(values)
        self.rope_parameters = self._rope_parameters(values)
        self.id2label = config_id2label(values)
        self.problem_type = values.get("problem_type")
        self._validate()

    def _layer_types(self, values):
        types = values.get("layer_types")
        if types is None:
            every = config_field(values, "global_attn_every_n_layers", int, 3)
            if every < 1:
                raise ConfigError(f"global_attn_every_n_layers must be positive, got {every}")
            return ["sliding_attention" if n % every else "full_attention"
                    for n in range(self.num_hidden_layers)]
        if not isinstance(types, list) or len(types) != self.num_hidden_layers \
                or any(t not in LAYER_TYPES for t in types):
            raise ConfigError(f"layer_types must list {self.num_hidden_layers} of {LAYER_TYPES}, "
                              f"got {types!r}")
        return list(types)

    def _rope_parameters(self, values):
        """{layer type: rope_parameters}, as transformers' ModernBertConfig makes them."""
        if values.get("rope_scaling") is not None:
            raise ConfigError("config.json sets rope_scaling, which is not read for ModernBERT")
        given = values.get("rope_parameters") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"rope_parameters must be an object, got {given!r}")
        old = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}
        out = {}
        for kind in LAYER_TYPES:
            params = dict(given.get(kind) or {"rope_type": "default"})
            params.setdefault("rope_theta", config_field(values, old[kind], float, DEFAULT_THETA[kind]))
            if params.get("rope_type", "default") != "default":
                raise ConfigError(f"rope_parameters[{kind!r}] has rope_type "
                                  f"{params.get('rope_type')!r}; only 'default' is read for ModernBERT")
            out[kind] = {"rope_type": "default", "rope_theta": float(params["rope_theta"])}
        return out

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings", "local_attention"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.json field {name!r} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        for name, p in self.dropout.items():
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"config.json field {name!r} must be in [0, 1), got {p}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @property
    def attention_scaling(self):
        """The scores' scaling, 1/sqrt(head_dim)."""
        return self.head_dim ** -0.5

    @property
    def window(self):
        """How far either side a sliding layer's token attends (transformers' sliding_window)."""
        return self.local_attention // 2

    @property
    def positions(self):
        """The longest sequence read."""
        return self.max_position_embeddings

    @property
    def default_pooling(self):
        """The pooling transformers' classifier uses (config.json's classifier_pooling)."""
        return self.classifier_pooling

    head_output = HEAD      # the head's output layer, one row per label

    def classifier_names(self, names):
        """{name in ModernBertForSequenceClassification: checkpoint name}: the same names."""
        return {name: name for name in names}

    @classmethod
    def from_file(cls, path):
        return cls(**read_config_json(path))

    def linear_shapes(self):
        """{module: (out, in)} of every linear but the classifier's output layer, in model order."""
        h, i = self.hidden_size, self.intermediate_size
        modules = {}
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            modules.update({p + "attn.Wqkv": (3 * h, h), p + "attn.Wo": (h, h),
                            p + "mlp.Wi": (2 * i, h), p + "mlp.Wo": (h, i)})
        modules["head.dense"] = (h, h)
        return modules

    def norms(self):
        """The layer norms' module names, in model order (layer 0 has no attn_norm)."""
        out = ["model.embeddings.norm"]
        for n in range(self.num_hidden_layers):
            out += ([f"model.layers.{n}.attn_norm"] if n else []) + [f"model.layers.{n}.mlp_norm"]
        return out + ["model.final_norm", "head.norm"]

    def parameter_shapes(self):
        """{name: shape} of every tensor the classifier reads from the checkpoint (transformers'
        ModernBertForSequenceClassification names; its classifier is the adapter's)."""
        h = self.hidden_size
        shapes = {"model.embeddings.tok_embeddings.weight": (self.vocab_size, h)}
        biased = {"attn": self.attention_bias, "mlp.": self.mlp_bias, "head": self.classifier_bias}
        for module, (out_f, in_f) in self.linear_shapes().items():
            shapes[module + ".weight"] = (out_f, in_f)
            if any(biased[k] for k in biased if k in module):
                shapes[module + ".bias"] = (out_f,)
        for norm in self.norms():
            shapes[norm + ".weight"] = (h,)
            if self.norm_bias:
                shapes[norm + ".bias"] = (h,)
        return shapes
