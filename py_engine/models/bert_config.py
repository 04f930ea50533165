"""BERT-family configuration, read from a Hugging Face config.json and validated."""

import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..formats.json_file import JsonFileError, read_json_object

SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new")  # BERT's exact erf GELU; ALBERT's tanh one

# The encoders read here: BERT, and RoBERTa's kind (its positions count from the row after its
# padding token's, its classifier head is its own: see BertClassifier). Others with BERT's
# tensor names compute otherwise and are refused by name rather than read as BERT (their
# outputs would be wrong without a word): why each differs.
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
BERT_TYPES = ("bert",) + ROBERTA_TYPES + ("distilbert", "electra", "mpnet", "deberta-v2", "albert",
                                         "ernie")
OTHER_ENCODERS = {
    "deberta": "DeBERTa (v1) computes its attention's position terms otherwise than DeBERTa-v2 "
               "(deberta-v2, DeBERTa-v3's type, is read)",
    "xlm-roberta-xl": "it normalises before each sub-layer, which BERT's encoder does not",
    "megatron-bert": "it normalises before each sub-layer, which BERT's encoder does not",
    "nezha": "it uses relative position encodings, which BERT's encoder does not",
}


# Each layer's linears and norms (after "<layers>.<n>."), by what they are: BERT's names (and
# RoBERTa's), DistilBERT's. DistilBERT is BERT's encoder (post-norm, exact GELU) with these
# names, no token types, no dropout after the attention's output linear, and its own head.
BERT_LAYER = {"query": "attention.self.query", "key": "attention.self.key",
              "value": "attention.self.value", "attention_output": "attention.output.dense",
              "attention_norm": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
              "output": "output.dense", "output_norm": "output.LayerNorm"}
DISTILBERT_LAYER = {"query": "attention.q_lin", "key": "attention.k_lin",
                    "value": "attention.v_lin", "attention_output": "attention.out_lin",
                    "attention_norm": "sa_layer_norm", "intermediate": "ffn.lin1",
                    "output": "ffn.lin2", "output_norm": "output_layer_norm"}
# MPNet's (attention.attn.q ...): BERT's encoder with a relative position bias on the scores
MPNET_LAYER = {"query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v",
               "attention_output": "attention.attn.o", "attention_norm": "attention.LayerNorm",
               "intermediate": "intermediate.dense", "output": "output.dense",
               "output_norm": "output.LayerNorm"}
# DeBERTa-v2's (DeBERTa-v3's): BERT's post-norm encoder with *_proj names and a disentangled
# attention (its scores add content-to-position and position-to-content terms read from
# relative embeddings projected by the same query and key linears)
DEBERTA_LAYER = dict(BERT_LAYER, query="attention.self.query_proj", key="attention.self.key_proj",
                     value="attention.self.value_proj")
DEBERTA_POSITION_TERMS = ("c2p", "p2c")
# ALBERT's (one layer whose weights every depth reads: "encoder.albert_layer_groups.0.
# albert_layers.0." at each of num_hidden_layers)
ALBERT_LAYER = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
                "attention_output": "attention.dense", "attention_norm": "attention.LayerNorm",
                "intermediate": "ffn", "output": "ffn_output", "output_norm": "full_layer_layer_norm"}
# AlbertConfig's defaults, where they are not BertConfig's
ALBERT_DEFAULTS = {"vocab_size": 30000, "embedding_size": 128, "hidden_size": 4096,
                   "num_hidden_layers": 12, "num_attention_heads": 64, "intermediate_size": 16384,
                   "hidden_act": "gelu_new", "hidden_dropout_prob": 0.0,
                   "attention_probs_dropout_prob": 0.0, "classifier_dropout_prob": 0.1}
# MPNet's relative position buckets, as transformers computes them whatever config.json's
# relative_attention_num_buckets (MPNetEncoder.compute_position_bias passes its own default)
MPNET_BUCKETS, MPNET_MAX_DISTANCE = 32, 128
# MPNetEmbeddings' padding_idx, fixed there whatever config.json's pad_token_id: positions
# count from the row after it, as RoBERTa's do
MPNET_PADDING_IDX = 1
# DistilBertConfig's names for BertConfig's fields
DISTILBERT_FIELDS = {"dim": "hidden_size", "n_layers": "num_hidden_layers",
                     "n_heads": "num_attention_heads", "hidden_dim": "intermediate_size",
                     "dropout": "hidden_dropout_prob",
                     "attention_dropout": "attention_probs_dropout_prob",
                     "seq_classif_dropout": "classifier_dropout", "activation": "hidden_act"}


@dataclass(frozen=True)
class ClassifierHead:
    """transformers' sequence classifier head of a family, read from the first token (cls
    pooling): output(Dropout(activation(dense(x[:, 0]))))."""
    dense: str          # the dense layer under the activation (transformers' name)
    output: str         # the output layer
    activation: str     # "tanh", "relu" or "gelu"
    drop_first: bool    # a dropout before the dense layer too (RoBERTa's, ELECTRA's heads)
    from_pooler: bool   # the dense layer starts from the checkpoint's pooler where it holds one
    trained: bool       # the dense layer always trains whole (PEFT's modules_to_save "classifier"
                        # matches it), not only where the checkpoint has none


@dataclass(frozen=True)
class EncoderFamily:
    """What a family of encoders names and builds otherwise than BERT (BertConfig.family)."""
    layers: str                 # where the layers are: "<layers><n>.<name>"
    layer_names: dict           # {what: name} of each layer's linears and norms
    token_types: bool           # the embeddings add token type rows
    attention_dropout: bool     # a dropout after the attention's output linear
    pooler_module: str          # the checkpoint's dense layer under the head, where it has one
    targets: tuple              # PEFT's default LoRA targets (peft.utils.constants)
    head: ClassifierHead
    # the table [buckets, heads] of a relative position bias added to every layer's attention
    # scores (MPNet's), None where there is none
    relative_attention_bias: str = None
    ffn_dropout: bool = True    # a dropout after the feed-forward's output linear (not ALBERT's)
    shared_layers: bool = False  # one layer's weights read at every depth (ALBERT's)
    # the linear taking the embeddings up to the layers' width, where they are narrower
    # (ELECTRA-small's), or always (ALBERT's); None where there is none
    projection: str = None
    projection_always: bool = False


_BERT_HEAD = ClassifierHead("bert.pooler.dense", "classifier", "tanh", False, True, False)
_BERT = EncoderFamily("encoder.layer.", BERT_LAYER, True, True, "pooler.dense", ("query", "value"),
                      _BERT_HEAD)
FAMILIES = {
    "bert": _BERT,
    "roberta": replace(_BERT, head=ClassifierHead("classifier.dense", "classifier.out_proj",
                                                  "tanh", True, False, True)),
    "distilbert": EncoderFamily("transformer.layer.", DISTILBERT_LAYER, False, False,
                                "pre_classifier", ("q_lin", "v_lin"),
                                ClassifierHead("pre_classifier", "classifier", "relu", False,
                                               True, True)),
    "electra": replace(_BERT, head=ClassifierHead("classifier.dense", "classifier.out_proj",
                                                  "gelu", True, False, True),
                       projection="embeddings_project"),
    # ERNIE: BERT's encoder and head under "ernie.", its embeddings adding a task type's row
    # (ERNIE 3.0's use_task_id: task 0, as transformers takes it without task_type_ids)
    "ernie": replace(_BERT, head=replace(_BERT_HEAD, dense="ernie.pooler.dense")),
    # AlbertForSequenceClassification: BERT's head, its pooler a linear of its own ("pooler")
    "albert": EncoderFamily("encoder.albert_layer_groups.0.albert_layers.", ALBERT_LAYER, True,
                            True, "pooler", ("query", "value"),
                            ClassifierHead("albert.pooler", "classifier", "tanh", False, True, False),
                            ffn_dropout=False, shared_layers=True,
                            projection="encoder.embedding_hidden_mapping_in",
                            projection_always=True),
    # PEFT has no default targets for MPNet (it asks for target_modules); q and v are BERT's
    # query and value, its default there. MPNetForSequenceClassification's head is RoBERTa's.
    "mpnet": EncoderFamily("encoder.layer.", MPNET_LAYER, False, True, "pooler.dense", ("q", "v"),
                           ClassifierHead("classifier.dense", "classifier.out_proj", "tanh", True,
                                          False, True),
                           relative_attention_bias="encoder.relative_attention_bias.weight"),
    # DebertaV2ForSequenceClassification: ContextPooler (dropout, pooler.dense, GELU) outside the
    # encoder's prefix, trained whole only where a checkpoint has none (PEFT's modules_to_save
    # "classifier" does not match it); PEFT's default targets
    "deberta": EncoderFamily("encoder.layer.", DEBERTA_LAYER, True, True, "pooler.dense",
                             ("query_proj", "value_proj"),
                             ClassifierHead("pooler.dense", "classifier", "gelu", True, True, False)),
}


class ConfigError(ValueError):
    """A config.json that py_engine cannot use; the message names the field."""


def read_config_json(path):
    """The object in a checkpoint's config.json (`path`: the file or its directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json at {path}")
    try:
        return read_json_object(path)
    except JsonFileError as e:
        raise ConfigError(str(e)) from None


def config_id2label(values):
    """config.json's id2label as transformers reads it: where absent (transformers leaves out
    its default), LABEL_0 .. LABEL_{n-1} of num_labels (2 by default). Checked where it is
    read (Checkpoint.head_labels)."""
    if values.get("id2label") is not None:
        return values["id2label"]
    count = values.get("num_labels", 2)
    if not isinstance(count, int) or isinstance(count, bool):
        return count        # refused where it is read, by name
    return {str(i): f"LABEL_{i}" for i in range(count)}


def config_field(values, name, kind=int, default=None):
    """config.json's `name` as `kind` (`default` where it is absent); ConfigError naming the
    field where it is missing or of another type."""
    value = values.get(name, default)
    if value is None:
        raise ConfigError(f"config.json is missing {name!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config.json field {name!r} should be {kind.__name__}, got {value!r}") from None


def _check_model_type(model_type):
    """ConfigError unless config.json's model_type is an encoder read here (BERT_TYPES), naming
    why another is not."""
    if model_type in BERT_TYPES:
        return
    from .decoders import DECODER_TYPES

    if model_type in DECODER_TYPES:
        raise ConfigError(f"model_type {model_type!r} is a decoder, not a BERT-family encoder")
    why = OTHER_ENCODERS.get(model_type, "it is not one of the encoders read here")
    raise ConfigError(f"model_type {model_type!r} is not supported: {why} (supported "
                      f"encoders: {', '.join(BERT_TYPES)})")


class BertConfig:
    """The fields of transformers' BertConfig that the encoder needs."""

    FIELDS = {
        # name: (type, default or REQUIRED)
        "vocab_size": (int, None),
        "hidden_size": (int, None),
        "num_hidden_layers": (int, None),
        "num_attention_heads": (int, None),
        "intermediate_size": (int, None),
        "max_position_embeddings": (int, 512),
        "type_vocab_size": (int, 2),
        "layer_norm_eps": (float, 1e-12),
        "hidden_act": (str, "gelu"),
        "hidden_dropout_prob": (float, 0.1),
        "attention_probs_dropout_prob": (float, 0.1),
        "initializer_range": (float, 0.02),
        "pad_token_id": (int, 0),
        "classifier_dropout": (float, None),
        "position_embedding_type": (str, "absolute"),
    }

    def __init__(self, **values):
        self.model_type = values.get("model_type", "bert")
        _check_model_type(self.model_type)
        if self.deberta:            # DebertaV2Config's defaults
            values = dict({"layer_norm_eps": 1e-7, "type_vocab_size": 0}, **values)
        if self.model_type == "albert":     # AlbertConfig's defaults and names
            values = dict(ALBERT_DEFAULTS, **values)
            values["classifier_dropout"] = values["classifier_dropout_prob"]
            for name in ("num_hidden_groups", "inner_group_num"):
                if values.get(name, 1) != 1:
                    raise ConfigError(f"config.json field {name!r} ({values[name]!r}): ALBERT "
                                      "with other than one group of one layer is not read here")
        if self.distilbert:         # its names, and no token types (one row of zeros here)
            values = {DISTILBERT_FIELDS.get(k, k): v for k, v in values.items()
                      if k not in DISTILBERT_FIELDS.values()}
            values.update(type_vocab_size=1, layer_norm_eps=1e-12)
        for name, (kind, default) in self.FIELDS.items():
            value = values.get(name, default)
            if value is None and name != "classifier_dropout":
                raise ConfigError(f"config.json is missing {name!r}" if default is None else
                                  f"config.json field {name!r} is null; it should be "
                                  f"{kind.__name__} (or left out for {default!r})")
            if value is not None:
                # As JSON gives them: an int field takes no 1.5 (int() would make it 1).
                exact = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
                if isinstance(value, bool) or not exact:
                    raise ConfigError(f"config.json field {name!r} should be {kind.__name__}, got {value!r}")
                value = kind(value)
            setattr(self, name, value)
        if self.model_type in ROBERTA_TYPES and "pad_token_id" not in values:
            self.pad_token_id = 1           # RobertaConfig's default
        self.embedding_size = values.get("embedding_size", self.hidden_size)   # ELECTRA's
        if self.mpnet:
            # MPNetConfig has no classifier_dropout (its head drops at hidden_dropout_prob)
            self.classifier_dropout = None
            self.relative_attention_num_buckets = config_field(
                values, "relative_attention_num_buckets", int, MPNET_BUCKETS)
        if self.deberta:
            self._read_deberta(values)
        # ERNIE's task type embeddings (use_task_id), else none
        use_task_id = values.get("use_task_id", False)
        if not isinstance(use_task_id, bool):
            raise ConfigError(f"config.json field 'use_task_id' should be true or false, got "
                              f"{use_task_id!r}")
        self.use_task_id = self.model_type == "ernie" and use_task_id
        self.task_type_vocab_size = config_field(values, "task_type_vocab_size", int, 3)
        self.id2label = config_id2label(values)
        self.problem_type = values.get("problem_type")
        self._validate()

    def _read_deberta(self, values):
        """DebertaV2Config's own fields, refusing what its model would compute otherwise."""
        def flag(name, default):
            value = values.get(name, default)
            if not isinstance(value, bool):
                raise ConfigError(f"config.json field {name!r} should be true or false, got {value!r}")
            return value

        self.relative_attention = flag("relative_attention", False)
        self.position_biased_input = flag("position_biased_input", True)
        self.share_att_key = flag("share_att_key", False)
        self.max_relative_positions = config_field(values, "max_relative_positions", int, -1)
        self.position_buckets = config_field(values, "position_buckets", int, -1)
        terms = values.get("pos_att_type") or []
        if isinstance(terms, str):          # "p2c|c2p", as DebertaV2Config splits it
            terms = [t.strip() for t in terms.lower().split("|")]
        if not isinstance(terms, list) or any(t not in DEBERTA_POSITION_TERMS for t in terms):
            raise ConfigError(f"config.json field 'pos_att_type' {values.get('pos_att_type')!r} "
                              f"is not supported (terms of {DEBERTA_POSITION_TERMS})")
        self.pos_att_type = tuple(t for t in DEBERTA_POSITION_TERMS if t in terms)
        norms = [t.strip() for t in str(values.get("norm_rel_ebd", "none")).lower().split("|")]
        if any(t not in ("layer_norm", "none") for t in norms):
            raise ConfigError(f"config.json field 'norm_rel_ebd' {values['norm_rel_ebd']!r} is not "
                              "supported (layer_norm or none)")
        self.norm_rel_ebd = "layer_norm" in norms
        self.classifier_dropout = values.get("cls_dropout")     # else hidden_dropout_prob
        if self.classifier_dropout is not None:
            self.classifier_dropout = config_field(values, "cls_dropout", float)
        self.pooler_dropout = config_field(values, "pooler_dropout", float, 0.0)
        refused = {
            "conv_kernel_size": (config_field(values, "conv_kernel_size", int, 0) > 0,
                                 "its first layer's convolution is not built here"),
            "pooler_hidden_size": (config_field(values, "pooler_hidden_size", int, self.hidden_size)
                                   != self.hidden_size, "the pooler's width must be hidden_size"),
            "pooler_hidden_act": (values.get("pooler_hidden_act", "gelu") != "gelu",
                                  "the pooler's activation must be gelu"),
            "embedding_size": (self.embedding_size != self.hidden_size,
                               "its embed_proj layer is not read here"),
            "attention_head_size": (config_field(values, "attention_head_size", int,
                                                 self.hidden_size // self.num_attention_heads)
                                    * self.num_attention_heads != self.hidden_size,
                                    "heads must split hidden_size"),
            "share_att_key": (self.relative_attention and bool(self.pos_att_type)
                              and not self.share_att_key,
                              "separate pos_key_proj and pos_query_proj layers are not read here"),
        }
        for name, (bad, why) in refused.items():
            if bad:
                raise ConfigError(f"config.json field {name!r} ({values.get(name)!r}): {why}")

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if name == "type_vocab_size" and self.deberta and self.type_vocab_size == 0:
                continue        # DeBERTa's: no token type embeddings
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.json field {name!r} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported (only {SUPPORTED_ACTIVATIONS})")
        if self.embedding_size <= 0 or self.embedding_size != self.hidden_size and \
                self.projection is None and not self.deberta:
            raise ConfigError(f"embedding_size {self.embedding_size} must be positive and, where "
                              f"no layer projects the embeddings, hidden_size {self.hidden_size}")
        if self.roberta and not 0 <= self.pad_token_id < min(self.vocab_size,
                                                             self.max_position_embeddings - 1):
            raise ConfigError(f"pad_token_id {self.pad_token_id} leaves no position row: RoBERTa's "
                              "positions start after its padding token's")
        if self.mpnet and self.relative_attention_num_buckets < MPNET_BUCKETS:
            raise ConfigError(f"relative_attention_num_buckets {self.relative_attention_num_buckets} "
                              f"is under the {MPNET_BUCKETS} buckets MPNet's attention reads")
        if self.mpnet and self.max_position_embeddings <= self.first_position:
            raise ConfigError(f"max_position_embeddings {self.max_position_embeddings} leaves no "
                              "position row: MPNet's positions start after its padding row "
                              f"({MPNET_PADDING_IDX})")
        if self.use_task_id and (self.type_vocab_size <= 0 or self.task_type_vocab_size <= 0):
            raise ConfigError("ERNIE's task type embeddings (use_task_id) need token type and "
                              "task type rows (type_vocab_size, task_type_vocab_size)")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"position_embedding_type {self.position_embedding_type!r} is not supported")

    @property
    def family(self):
        """"bert", "roberta" (RoBERTa's kind), "distilbert", "electra", "mpnet" or "deberta"
        (DeBERTa-v2's, its sequence classifier's prefix)."""
        return "roberta" if self.roberta else "deberta" if self.deberta else self.model_type

    @property
    def deberta(self):
        """Whether this is DeBERTa-v2 (DeBERTa-v3's type): see DEBERTA_LAYER."""
        return self.model_type == "deberta-v2"

    @property
    def pair_mask(self):
        """Whether the attention masks query i and key j unless both are real tokens
        (DeBERTa's get_attention_mask), rather than the padded keys alone."""
        return self.deberta

    @property
    def position_table(self):
        """Whether the embeddings add a learned position row (DeBERTa's may not)."""
        return not self.deberta or self.position_biased_input

    @property
    def disentangled(self):
        """Whether the attention scores add DeBERTa's position terms (DEBERTA_POSITION_TERMS)."""
        return self.deberta and self.relative_attention and bool(self.pos_att_type)

    @property
    def attention_scaling(self):
        """The scores' scaling: 1/sqrt(head_dim), DeBERTa's 1/sqrt(head_dim * (1 + its number of
        position terms)) (whether or not relative_attention reads them), whose square root
        transformers takes in float32 whatever the model's dtype (scaled_size_sqrt)."""
        if not self.deberta:
            return self.head_dim ** -0.5
        from .relative_position import f32

        return 1.0 / f32(math.sqrt(self.head_dim * (1 + len(self.pos_att_type))))

    @property
    def relative_span(self):
        """DeBERTa's att_span: position_buckets, else max_relative_positions (else
        max_position_embeddings); its relative embeddings hold 2 * span rows."""
        if self.position_buckets > 0:
            return self.position_buckets
        return self.max_relative_positions if self.max_relative_positions > 0 \
            else self.max_position_embeddings

    def relative_rows(self, seq):
        """The relative embedding rows a sequence of `seq` tokens reads (RelativeRows)."""
        from .relative_position import RelativeRows, deberta_relative_rows

        max_position = self.max_relative_positions if self.max_relative_positions > 0 \
            else self.max_position_embeddings
        return RelativeRows.of(deberta_relative_rows(seq, self.relative_span,
                                                     self.position_buckets, max_position))

    @property
    def prefix(self):
        """Where transformers' sequence classifier keeps the encoder ("bert.", ...)."""
        return self.family + "."

    @property
    def encoder(self):
        """The family's names and structure (EncoderFamily)."""
        return FAMILIES[self.family]

    @property
    def head(self):
        """The family's sequence classifier head (ClassifierHead)."""
        return self.encoder.head

    @property
    def head_output(self):
        """The head's output layer, one row per label ("classifier", "classifier.out_proj")."""
        return self.head.output

    @property
    def distilbert(self):
        """Whether this is DistilBERT (see DISTILBERT_LAYER)."""
        return self.model_type == "distilbert"

    @property
    def layers(self):
        """Where the layers are: "encoder.layer." (BERT, RoBERTa) or "transformer.layer."."""
        return self.encoder.layers

    def layer_prefix(self, n):
        """Where layer n's linears and norms are: "encoder.layer.<n>." (ALBERT's every depth
        reads its one shared layer)."""
        return f"{self.layers}{0 if self.encoder.shared_layers else n}."

    def layer_of(self, name):
        """The first depth that reads tensor `name` under the layers, else None (ALBERT's
        shared layer: the first)."""
        if not name.startswith(self.layers):
            return None
        return 0 if self.encoder.shared_layers else int(name[len(self.layers):].split(".")[0])

    @property
    def projection(self):
        """The linear from embedding_size up to hidden_size after the embeddings (ALBERT's
        encoder.embedding_hidden_mapping_in, ELECTRA-small's embeddings_project), or None."""
        family = self.encoder
        if family.projection and (family.projection_always or self.embedding_size != self.hidden_size):
            return family.projection
        return None

    @property
    def task_type_table(self):
        """ERNIE's task type embeddings, whose row 0 every token adds (use_task_id), or None."""
        return "embeddings.task_type_embeddings.weight" if self.use_task_id else None

    @property
    def gelu_approximation(self):
        """The layers' GELU: exact ("none", BERT's "gelu") or "tanh" (ALBERT's "gelu_new")."""
        return "tanh" if self.hidden_act == "gelu_new" else "none"

    @property
    def layer_names(self):
        """{what: name} of each layer's linears and norms (BERT_LAYER or DISTILBERT_LAYER)."""
        return self.encoder.layer_names

    @property
    def token_types(self):
        """Whether the embeddings add token type rows (DistilBERT's do not, DeBERTa's where
        type_vocab_size is 0)."""
        return self.encoder.token_types and self.type_vocab_size > 0

    @property
    def pooler_module(self):
        """The checkpoint's dense layer under the head's activation, where it has one: BERT's
        pooler, a DistilBertForSequenceClassification checkpoint's pre_classifier."""
        return self.encoder.pooler_module

    @property
    def pooler_in_encoder(self):
        """Whether the checkpoint's pooler sits under the encoder's prefix and is the head's
        dense layer (BERT's): only then may LoRA wrap it, and does a merged model keep it."""
        return self.head.dense == self.prefix + self.pooler_module

    @property
    def pooler_takes_lora(self):
        """Whether a LoRA may wrap the checkpoint's pooler, as PEFT wraps it where its targets
        name it ("dense"): where it is the head's dense layer and trains whole only where the
        checkpoint has none (BERT's under the prefix, DeBERTa's ContextPooler beside it; not
        DistilBERT's pre_classifier, which PEFT's modules_to_save "classifier" matches)."""
        return self.head.from_pooler and not self.head.trained and \
            self.head.dense in (self.prefix + self.pooler_module, self.pooler_module)

    @property
    def classifier_targets(self):
        """PEFT's default LoRA targets for the family (peft.utils.constants)."""
        return self.encoder.targets

    @property
    def mpnet(self):
        """Whether this is MPNet (a relative position bias on the attention scores, positions
        counted as RoBERTa's from its fixed padding row, RoBERTa's head)."""
        return self.model_type == "mpnet"

    @property
    def relative_attention_bias(self):
        """The relative position bias table's name (MPNet's), or None."""
        return self.encoder.relative_attention_bias

    @property
    def roberta(self):
        """Whether this is RoBERTa's kind (RoBERTa, XLM-RoBERTa, CamemBERT): see first_position
        and BertClassifier's head."""
        return self.model_type in ROBERTA_TYPES

    @property
    def word_padding(self):
        """The word embedding's padding_idx in transformers (MPNet's fixed one, else
        pad_token_id): the row whose gradient is never computed."""
        return MPNET_PADDING_IDX if self.mpnet else self.pad_token_id

    @property
    def first_position(self):
        """The position row of a sequence's first token: RoBERTa numbers tokens from its
        padding token's row + 1 (transformers' create_position_ids_from_input_ids), BERT from 0."""
        if self.mpnet:
            return MPNET_PADDING_IDX + 1
        return self.pad_token_id + 1 if self.roberta else 0

    @property
    def positions(self):
        """The longest sequence the position table holds."""
        return self.max_position_embeddings - self.first_position

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    default_pooling = "cls"     # transformers' sequence classifiers pool the first token
    # their config.json has no field for the pooling (ModernBERT's has: ModernBertConfig)
    pooling_in_config = False

    def trains_pooler(self, tensors):
        """Whether an adapter's tensors hold the head's dense layer trained whole (BERT's pooler
        where the checkpoint has none; RoBERTa's and ELECTRA's heads always hold theirs)."""
        return not self.head.from_pooler or self.head.dense + ".weight" in tensors

    def classifier_names(self, names):
        """{transformers name in the family's sequence classifier: checkpoint name} of the
        checkpoint tensors `names` a merged classifier keeps: the encoder's under the prefix,
        the checkpoint's pooler only where it is the head's (BERT's under the prefix,
        DeBERTa's and DistilBERT's beside it; others' heads hold their own dense layer,
        trained)."""
        pooler = self.pooler_module + "."
        out = {self.prefix + name: name for name in names
               if self.pooler_in_encoder or not name.startswith(pooler)}
        if not self.pooler_in_encoder and self.head.from_pooler:
            # the head's dense layer outside the encoder, where the checkpoint holds it
            # (DeBERTa's ContextPooler; one trained whole replaces it)
            out.update({name: name for name in names if name.startswith(pooler)})
        return out

    @property
    def classifier_dropout_prob(self):
        """transformers' BertForSequenceClassification: classifier_dropout, else hidden dropout."""
        return self.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout

    @classmethod
    def from_file(cls, path):
        return cls(**read_config_json(path))

    def to_dict(self):
        out = {name: getattr(self, name) for name in self.FIELDS}
        out["model_type"] = self.model_type
        if self.mpnet:
            out["relative_attention_num_buckets"] = self.relative_attention_num_buckets
        return out
