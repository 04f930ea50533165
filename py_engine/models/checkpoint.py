"""Hugging Face checkpoint directories: config.json + model.safetensors (or the shards a
model.safetensors.index.json names, or an older checkpoint's pytorch_model.bin), validated.

Reads with the pure-Python safetensors reader, so the same code loads a model natively and in
the browser. Tensor names are normalized to the bare BertModel layout (a "bert." prefix, as
BertFor* checkpoints carry, is removed; old "gamma"/"beta" LayerNorm names are renamed).
"""

import re
from functools import cached_property
from pathlib import Path

from ..formats import safetensors
from ..formats.finite import describe
from ..formats.json_file import JsonFileError, read_json_object
from ..formats.torch_pickle import TorchFileError, load_torch
from ..labels import SINGLE_LABEL, head_problem_type
from .bert_config import ConfigError, read_config_json
from .decoder_classifier import DecoderClassifierConfig
from .decoders import decoder_config
from .gpt2_config import Gpt2Config, transposed
from .modernbert_config import ModernBertConfig


WEIGHTS = "model.safetensors"
SHARD_INDEX = WEIGHTS + safetensors.INDEX_SUFFIX      # transformers' sharded checkpoints
GENERATION_CONFIG = "generation_config.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = TORCH_WEIGHTS + safetensors.INDEX_SUFFIX


# ERNIE's embeddings add its task type table's row 0 to every token: the model reads the token
# type table with that row added to each of its rows (the same sum, one table fewer), a table
# the checkpoint derives under this name and does not list among its tensors (an export
# writes the two tables as they are)
TYPES_AND_TASK = "embeddings.token_type_and_task_embeddings.weight"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file or tensor."""


def _read_weights(directory):
    """The weights of a checkpoint directory, in transformers' order: model.safetensors, the
    shards its index names, pytorch_model.bin (older checkpoints; torch_pickle), its shards."""
    readers = ((WEIGHTS, safetensors.load), (SHARD_INDEX, safetensors.load_sharded),
               (TORCH_WEIGHTS, load_torch),
               (TORCH_INDEX, lambda path: safetensors.load_sharded(path, load_torch, ".bin")))
    for name, read in readers:
        path = directory / name
        if path.is_file():
            try:
                return read(path)
            except (safetensors.SafeTensorsError, TorchFileError, JsonFileError) as e:
                # an index's errors name the index or the shard already
                raise CheckpointError(str(e) if name.endswith(".json") else f"{path}: {e}") \
                    from None
    raise CheckpointError(f"no {WEIGHTS} in {directory} (nor {SHARD_INDEX}, {TORCH_WEIGHTS} or "
                          f"{TORCH_INDEX})")


def bert_parameter_shapes(config):
    """{name: shape} of every encoder parameter the model reads, with the pooler's (BERT's,
    where a checkpoint has one), under the family's names (BertConfig.layer_names)."""
    h, i, e = config.hidden_size, config.intermediate_size, config.embedding_size
    shapes = {"embeddings.word_embeddings.weight": (config.vocab_size, e)}
    if config.position_table:
        shapes["embeddings.position_embeddings.weight"] = (config.max_position_embeddings, e)
    if config.token_types:
        shapes["embeddings.token_type_embeddings.weight"] = (config.type_vocab_size, e)
    if config.task_type_table:      # ERNIE's
        shapes[config.task_type_table] = (config.task_type_vocab_size, e)
    shapes["embeddings.LayerNorm.weight"] = shapes["embeddings.LayerNorm.bias"] = (e,)
    if config.projection:       # the embeddings up to the layers' width
        shapes[config.projection + ".weight"] = (h, e)
        shapes[config.projection + ".bias"] = (h,)
    names = config.layer_names
    linears = {"query": (h, h), "key": (h, h), "value": (h, h), "attention_output": (h, h),
               "intermediate": (i, h), "output": (h, i)}
    for n in range(config.num_hidden_layers):       # ALBERT's depths share one layer's names
        p = config.layer_prefix(n)
        for what, shape in linears.items():
            shapes[p + names[what] + ".weight"] = shape
            shapes[p + names[what] + ".bias"] = (shape[0],)
        for what in ("attention_norm", "output_norm"):
            shapes[p + names[what] + ".weight"] = (h,)
            shapes[p + names[what] + ".bias"] = (h,)
    if config.deberta and config.relative_attention:    # read by every layer
        shapes["encoder.rel_embeddings.weight"] = (2 * config.relative_span, h)
        if config.norm_rel_ebd:
            shapes["encoder.LayerNorm.weight"] = shapes["encoder.LayerNorm.bias"] = (h,)
    if config.relative_attention_bias:      # MPNet's, read by every layer
        shapes[config.relative_attention_bias] = (config.relative_attention_num_buckets,
                                                  config.num_attention_heads)
    shapes[config.pooler_module + ".weight"] = (h, h)
    shapes[config.pooler_module + ".bias"] = (h,)
    return shapes


def _normalized(name):
    for prefix in ("bert.", "roberta.", "distilbert.", "electra.", "mpnet.", "deberta.", "albert.",
                   "ernie.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def id2label_list(id2label, where, fewest=2):
    """config.json's id2label ({"0": "NEGATIVE", "1": "POSITIVE"}) as the list of label names
    by row; CheckpointError naming `where` unless it names rows 0..n-1 (n >= `fewest`: a
    single-label classifier's two, a multi-label or regression head's one) with distinct,
    non-empty names."""
    if not isinstance(id2label, dict) or len(id2label) < fewest:
        raise CheckpointError(f"{where}: id2label (or num_labels) must name the classifier's "
                              f"{'two' if fewest == 2 else 'one'} or more labels by row, got "
                              f"{id2label!r:.100}")
    rows = {}
    for key, label in id2label.items():
        row = int(key) if isinstance(key, str) and key.isdigit() else None
        if row is None or not isinstance(label, str) or not label.strip():
            raise CheckpointError(f"{where}: id2label entry {key!r}: {label!r:.60} is not a "
                                  "row number and a label name")
        rows[row] = label
    labels = [rows.get(i) for i in range(len(id2label))]
    if None in labels or len(set(labels)) != len(labels):
        raise CheckpointError(f"{where}: id2label must name rows 0 to {len(id2label) - 1} with "
                              f"distinct labels, got {id2label!r:.100}")
    return labels


def _layer_pattern(name):
    """A tensor name with its layer numbers blanked: "layer.#.output.dense.weight"."""
    return re.sub(r"(^|\.)\d+(?=\.)", r"\1#", name)


class Checkpoint:
    """A validated BERT checkpoint: `config`, and tensors by normalized name.

    `floats(name)` gives array('f'); `f16_bits(name)` the IEEE half bits; `shape(name)`.
    The pooler is optional (sentence-embedding checkpoints may lack it): `has_pooler`.
    """

    def __init__(self, config, tensors, source):
        self._index(config, tensors, source, _normalized)
        pooler = config.pooler_module + "."
        self.has_pooler = pooler + "weight" in self._names
        expected = {name: shape for name, shape in bert_parameter_shapes(config).items()
                    if self.has_pooler or not name.startswith(pooler)}
        self._validate(expected)
        self._expected = list(expected)

    def _index(self, config, tensors, source, name_of):
        """Keep the config, the tensors and where they came from; name each tensor as the
        model reads it (name_of(its name in the file); the first of a name is kept)."""
        self.config = config
        self.source = source
        self._file = tensors
        self._names = {}
        for raw in tensors.keys():
            self._names.setdefault(name_of(raw), raw)

    def names(self):
        """The (normalized) names of the tensors the model reads, in model order."""
        return list(self._expected)

    def _validate(self, expected):
        for name, shape in expected.items():
            self._check_tensor(name, shape)
        used = {_layer_pattern(name) for name in expected}
        for name in sorted(set(self._names) - set(expected)):
            if _layer_pattern(name) in used:
                raise CheckpointError(
                    f"{self.source}: tensor {self._names[name]!r} is in a layer config.json "
                    "does not have: the checkpoint has more layers than config.json says")

    def _check_tensor(self, name, shape, implied_by="config.json"):
        """Tensor `name` is there, of `shape` (what `implied_by` implies), a float type and
        finite."""
        if name not in self._names:
            raise CheckpointError(f"{self.source}: tensor {name!r} is missing")
        dtype, found = self._file.info(self._names[name])
        if tuple(found) != tuple(shape):
            raise CheckpointError(f"{self.source}: tensor {name!r} has shape {tuple(found)} but "
                                  f"{implied_by} implies {tuple(shape)}")
        if dtype not in safetensors.FLOAT_DTYPES:
            raise CheckpointError(f"{self.source}: tensor {name!r} has dtype {dtype}, not a float type")
        found = self._file.first_non_finite(self._names[name])
        if found is not None:      # else every error later blames the run or the adapter
            raise CheckpointError(f"{self.source}: tensor {name!r} holds "
                                  f"{describe(found[1])} (element {found[0]}); the "
                                  "checkpoint is damaged")

    def holds(self, name):
        """Whether the checkpoint has tensor `name` (a normalized name), read by the model or
        not (a fine-tuned classifier's head)."""
        return name in self._names

    def head_floats(self, name, shape):
        """array('f') of tensor `name`, which the model does not read as it is (a fine-tuned
        classifier's head, a starting value), checked as the model's own tensors are."""
        self._check_tensor(name, shape, "the model")
        return self.floats(name)

    def head_labels(self):
        """The labels of the sequence classifier a fine-tuned checkpoint holds (its output
        layer, config.json's id2label, in the order of its rows), whatever its kind
        (head_problem); None for a bare encoder or decoder (no output layer, whatever id2label
        says: transformers writes LABEL_0 and LABEL_1 into every config.json)."""
        return self._head[0]

    def head_problem(self):
        """The kind of the head a fine-tuned checkpoint holds, as transformers reads it
        (config.json's problem_type: "single_label_classification", the default;
        "multi_label_classification", a sigmoid per label; "regression", which a head of one
        row without a problem_type is); None without a head."""
        return self._head[1]

    @cached_property
    def _head(self):
        """(head_labels, head_problem), worked out once: the output layer is checked (read
        whole for non-finite values) here, however often a load asks."""
        weight = self.config.head_output + ".weight"
        if not self.holds(weight):
            return None, None
        try:
            problem = head_problem_type(self.config.problem_type, self.shape(weight)[0])
        except ValueError as e:
            raise ValueError(f"{self.source}/config.json: {e}") from None
        labels = id2label_list(self.config.id2label, f"{self.source}/config.json",
                               fewest=1 if problem != SINGLE_LABEL else 2)
        self._check_tensor(weight, (len(labels), self.config.hidden_size),
                           f"config.json's {len(labels)} labels (id2label)")
        return labels, problem

    @classmethod
    def read_config(cls, path):
        """The classifier's config: ModernBERT's, or a BERT family's."""
        from .classifiers import classifier_config

        return classifier_config(read_config_json(path))

    @classmethod
    def load(cls, directory, weights=None):
        """Load `directory` (config.json and its weights, see _read_weights). `weights`: the
        safetensors file's bytes, when it was fetched rather than read from disk."""
        directory = Path(directory)
        if weights is None and not directory.is_dir():
            raise CheckpointError(f"no model directory at {directory}")
        try:
            config = cls.read_config(directory / "config.json")
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        if weights is None:
            tensors = _read_weights(directory)
        else:
            try:
                tensors = safetensors.load(weights)
            except safetensors.SafeTensorsError as e:
                raise CheckpointError(f"{directory}/{WEIGHTS}: {e}") from None
        return cls.for_config(config)(config, tensors, str(directory))

    @classmethod
    def for_config(cls, config):
        """The checkpoint class that reads `config`'s model family (a decoder's as a
        classifier reads it: DecoderClassifierConfig)."""
        if isinstance(config, DecoderClassifierConfig):
            return DecoderCheckpoint.for_config(config.decoder)
        return ModernBertCheckpoint if isinstance(config, ModernBertConfig) else cls

    def shape(self, name):
        if name == TYPES_AND_TASK:
            return self.shape("embeddings.token_type_embeddings.weight")
        return tuple(self._file.info(self._names[name])[1])

    def floats(self, name):
        if name == TYPES_AND_TASK:
            return self._types_and_task()
        return self._file.floats(self._names[name])

    def f16_bits(self, name):
        if name == TYPES_AND_TASK:
            return safetensors.f32_to_f16_bits(self._types_and_task().tobytes())
        return self._file.f16_bits(self._names[name])

    def _types_and_task(self):
        """ERNIE's token type rows, each with the task type table's row 0 added (what every
        token adds, task 0: see TYPES_AND_TASK)."""
        from array import array

        width = self.config.embedding_size
        types = self._file.floats(self._names["embeddings.token_type_embeddings.weight"])
        task = self._file.floats(self._names[self.config.task_type_table])[:width]
        return array("f", (v + task[i % width] for i, v in enumerate(types)))


class ModernBertCheckpoint(Checkpoint):
    """A ModernBERT checkpoint: ModernBertForMaskedLM's (the released ones: the encoder under
    "model.", its prediction head "head.dense" and "head.norm", which the sequence classifier
    reads too, and a decoder the classifier does not), or a fine-tuned
    ModernBertForSequenceClassification's (its classifier the one a new one starts from:
    head_labels). Names are kept as transformers writes them; a bare ModernBertModel's
    ("layers.0...") get "model."."""

    def __init__(self, config, tensors, source):
        self._index(config, tensors, source, lambda raw: raw if raw.startswith(
            ("model.", "head.", "decoder.", "classifier.")) else "model." + raw)
        self.has_pooler = True
        shapes = config.parameter_shapes()
        missing = [n for n in ("head.dense.weight", "head.norm.weight") if n not in self._names]
        if missing:
            raise CheckpointError(
                f"{source} has no prediction head ({', '.join(missing)}): "
                "ModernBertForSequenceClassification reads it, and PEFT would draw it at random "
                "each time it loads the checkpoint; use a ModernBertForMaskedLM checkpoint (the "
                "released ModernBERT-base and -large are)")
        self._validate(shapes)
        self._expected = list(shapes)


class DecoderCheckpoint(Checkpoint):
    """A validated decoder checkpoint of any supported family (models/decoders.py), picked by
    config.json's model_type. Llama-family (LlamaForCausalLM / Qwen2ForCausalLM layout): tensor
    names are kept as transformers writes them ("model.layers.0...", "lm_head.weight"); an
    lm_head.weight a tied checkpoint still carries is ignored. GPT-2: see Gpt2Checkpoint."""

    @classmethod
    def read_config(cls, path):
        return decoder_config(read_config_json(path))

    @classmethod
    def for_config(cls, config):
        return Gpt2Checkpoint if isinstance(config, Gpt2Config) else DecoderCheckpoint

    def __init__(self, config, tensors, source):
        self.config = config
        self.source = source
        self._file = tensors
        self._names = {raw: raw for raw in tensors.keys()}
        self._validate(config.parameter_shapes())

    generation_eos = ()     # generation_config.json's eos_token_id(s), as load reads them
    has_pooler = False      # read as a classifier (DecoderClassifier): no pooler

    @classmethod
    def load(cls, directory, weights=None):
        """As Checkpoint.load, and generation_config.json's eos_token_id read where there is one
        (transformers' generate stops there: instruct checkpoints name their end of turn in it,
        such as Phi-3's <|end|> and Gemma 2's <end_of_turn>, which config.json may leave out)."""
        checkpoint = super().load(directory, weights)
        path = Path(directory) / GENERATION_CONFIG
        if path.is_file():
            try:
                eos = read_json_object(path).get("eos_token_id")
            except JsonFileError as e:
                raise CheckpointError(str(e)) from None
            checkpoint.generation_eos = _token_ids(eos, f"{path}: eos_token_id")
        checkpoint.eos_token_ids()      # config.json's, checked before any work
        return checkpoint

    def eos_token_ids(self):
        """The ids that end a reply: config.json's eos_token_id(s) and generation_config.json's."""
        eos = _token_ids(self.config.eos_token_id, "config.json: eos_token_id")
        return sorted(set(eos) | set(self.generation_eos))

    def names(self):
        return list(self.config.parameter_shapes())


def _token_ids(value, where):
    """An eos_token_id field's ids: a token id, a list of them, or null."""
    ids = [] if value is None else value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise CheckpointError(f"{where} must be a token id, a list of them or null, got {value!r}")
    return list(ids)


class Gpt2Checkpoint(DecoderCheckpoint):
    """A GPT2LMHeadModel checkpoint. Names are GPT2LMHeadModel's ("transformer.h.0.attn.c_attn
    .weight"); a GPT2Model checkpoint's bare names ("h.0...", as distilgpt2 ships) get the
    "transformer." prefix; the attention's saved mask buffers and a tied lm_head.weight are
    ignored. Conv1D weights are stored [in, out]: shape(), floats() and f16_bits() give them
    transposed to the engine's [out, in]."""

    def __init__(self, config, tensors, source):
        self.config = config
        self.source = source
        self._file = tensors
        self._names = {}
        for raw in tensors.keys():
            # GPT2ForSequenceClassification's head, "score", is beside the transformer
            name = raw if raw.startswith(("transformer.", "lm_head.", "score.")) \
                else "transformer." + raw
            self._names[name] = raw
        self._validate({n: self._stored_shape(n, s) for n, s in config.parameter_shapes().items()})

    def _stored_shape(self, name, shape):
        return tuple(reversed(shape)) if self.config.is_conv1d(name) else tuple(shape)

    def shape(self, name):
        return self._stored_shape(name, super().shape(name))

    def floats(self, name):
        return self._engine_layout(name, super().floats(name))

    def f16_bits(self, name):
        return self._engine_layout(name, super().f16_bits(name))

    def _engine_layout(self, name, values):
        if not self.config.is_conv1d(name):
            return values
        rows, cols = super().shape(name)          # [in, out] as stored
        return transposed(values, rows, cols)

