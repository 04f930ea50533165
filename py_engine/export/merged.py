"""The merged model: a checkpoint with its LoRA adapter folded into the base weights
(W + scaling * B.A), under transformers' tensor names. Every export reads it; save_merged writes
it as a Hugging Face checkpoint directory that transformers loads as it loads the base.

    merged = await MergedModel.of(chat_or_classifier)   # any backend (the browser's GPU too)
    merged = load_merged(model_dir, adapter_dir)        # host: the NumPy backend
    merged.names(), merged.shape(name), merged.floats(name)
    save_merged(merged, "out_dir", progress=print)

The folding itself is the runtime's (runtime.merged_weights(), the merge inference uses), so it
runs where the model runs. A decoder gives its family's tensors (LlamaForCausalLM's,
GPT2LMHeadModel's, ...), a T5 encoder-decoder T5ForConditionalGeneration's (kind DECODER too:
one config, transformers' names); a classifier BertForSequenceClassification's: "bert." + the
encoder and pooler, and the "classifier." head from its adapter (RoBERTa's kind's:
"roberta." + the encoder, and its head "classifier.dense" and "classifier.out_proj"). Pure Python (it runs in
Pyodide); load_merged is host-side only in that it picks the NumPy backend.
"""

import math
from array import array

from ..formats.model_dir import decoder_config_json, save_model_dir
from ..labels import SINGLE_LABEL
from ..models.decoder_classifier import DecoderClassifierConfig
from ..models.saved_modules import HEAD_WEIGHT

DECODER, ENCODER = "decoder", "encoder"
# transformers' sequence classifier of each encoder type read here (models/bert_config.py)
CLASSIFIER_ARCHITECTURES = {"bert": "BertForSequenceClassification",
                            "roberta": "RobertaForSequenceClassification",
                            "xlm-roberta": "XLMRobertaForSequenceClassification",
                            "camembert": "CamembertForSequenceClassification",
                            "distilbert": "DistilBertForSequenceClassification",
                            "electra": "ElectraForSequenceClassification",
                            "mpnet": "MPNetForSequenceClassification",
                            "modernbert": "ModernBertForSequenceClassification",
                            "deberta-v2": "DebertaV2ForSequenceClassification",
                            "albert": "AlbertForSequenceClassification",
                            "ernie": "ErnieForSequenceClassification"}


class ExportError(ValueError):
    """A model, adapter or option an export cannot use; the message says why."""


class MergedModel:
    """kind: DECODER or ENCODER; config: the model's LlamaConfig or BertConfig; source: the
    checkpoint directory; checkpoint: its tensors; replaced: {transformers name: (shape,
    floats)} that differ from the checkpoint's (merged linears, a classifier's head)."""

    def __init__(self, kind, config, source, checkpoint, replaced, labels=None, pooling=None,
                 tokenizer_dir=None, pad_id=None, problem_type=None):
        self.kind = kind
        self.config = config
        self.source = source
        # the tokenizer's files: the checkpoint's, or an adapter's own (tokens added with its
        # saved embedding and output layer)
        self.tokenizer_dir = tokenizer_dir or source
        self.checkpoint = checkpoint
        self.replaced = dict(replaced)
        self.labels = labels
        self.pooling = pooling
        self.pad_id = pad_id    # a classifier's tokenizer's padding id (a decoder's needs one)
        self.problem_type = problem_type    # a classifier's kind of head (labels.PROBLEM_TYPES)
        if kind == DECODER:
            self._names = {name: name for name in config.parameter_shapes()}
        else:
            self._names = config.classifier_names(checkpoint.names())
        for name in self.replaced:
            self._names.setdefault(name, None)

    @classmethod
    async def of(cls, model):
        """The merged model of a ChatModel or TextClassifier as it stands (any backend)."""
        runtime, structure = model.runtime, model.model
        trained = await runtime.trainable_values()
        if getattr(structure, "full", False):      # every weight trains: they are the model
            replaced = trained
        else:
            merged = await runtime.merged_weights()
            # what trained beside the adapter (PEFT's bias option, a language model's
            # modules_to_save) replaces the checkpoint's, but where a lora_B bias (lora_bias)
            # was added to a trained bias in the merge
            biases = structure.bias_sources()
            merged.update({base: trained[key] for key, base in structure.kept_names().items()
                           if base not in merged})
            if structure.decoder:
                replaced = merged
            else:
                # transformers' names: the prefix added, but beside it (DeBERTa's pooler)
                named = {bare: name for name, bare in
                         structure.config.classifier_names(list(merged)).items()}
                prefix = structure.config.prefix
                replaced = {named.get(name, prefix + name): value for name, value in merged.items()}
                replaced.update({n: v for n, v in trained.items()
                                 if ".lora_" not in n and n not in biases})
        replaced = {name: (tuple(shape), data) for name, (shape, data) in replaced.items()}
        if structure.decoder:
            for name, (table, rows) in structure.token_sources().items():
                # trainable tokens: the table with the trained rows in place of those
                shape, values = trained[name]
                width = shape[1]
                base = replaced.get(table) or (tuple(model.checkpoint.shape(table)),
                                               model.checkpoint.floats(table))
                floats = array("f", base[1])
                for j, token in enumerate(rows):
                    floats[token * width:(token + 1) * width] = array("f", values[j * width:(j + 1) * width])
                replaced[table] = (tuple(base[0]), floats)
            config = structure.merged_config()
            if config is not structure.config and HEAD_WEIGHT not in replaced:
                # a LoRA on the embedding of a tied pair: the output layer keeps the table
                table = structure.config.embedding_tables[0]
                replaced[HEAD_WEIGHT] = (tuple(model.checkpoint.shape(table)),
                                         model.checkpoint.floats(table))
            return cls(DECODER, config, model.source, model.checkpoint, replaced,
                       tokenizer_dir=model.tokenizer_dir)
        return cls(ENCODER, structure.config, model.model_dir, model.checkpoint, replaced,
                   labels=list(model.labels), pooling=structure.pooling,
                   pad_id=model.tokenizer.pad_id, problem_type=model.problem_type)

    def names(self):
        """transformers' names of every tensor of the merged model."""
        return list(self._names)

    def has(self, name):
        """Whether the merged model holds tensor `name` (a linear's or a norm's bias)."""
        return name in self._names

    def shape(self, name):
        if name in self.replaced:
            return self.replaced[name][0]
        return self.checkpoint.shape(self._names[name])

    def floats(self, name):
        """The tensor as a flat sequence of float32 values (array('f') or a NumPy array)."""
        if name in self.replaced:
            return self.replaced[name][1]
        return self.checkpoint.floats(self._names[name])

    def layer_of(self, name):
        """(stack, layer index) of a tensor, or None (embeddings, final norms, head); stack is
        "encoder" or "decoder" for an encoder-decoder's blocks, "" otherwise."""
        parts = name.split(".")
        # T5 (before its "layer"), Llama, BERT, ALBERT's one shared layer, GPT-2
        for marker in ("block", "layers", "layer", "albert_layers", "h"):
            if marker in parts:
                stack = parts[0] if marker == "block" else ""
                return stack, int(parts[parts.index(marker) + 1])
        return None

    def groups(self, names=None):
        """[(label, [names])]: the tensors in groups of one layer each (what progress reports):
        the embeddings, each layer (an encoder-decoder's encoder blocks, then its decoder's),
        then the rest (final norms, pooler, head)."""
        names = self.names() if names is None else list(names)
        first, layers, last = [], {}, []
        for name in names:
            layer = self.layer_of(name)
            if layer is not None:
                layers.setdefault(layer, []).append(name)
            else:
                (first if "embed" in name or name == "shared.weight" else last).append(name)
        out = [("embeddings", first)] if first else []
        for stack in sorted({stack for stack, _ in layers}, key=("", "encoder", "decoder").index):
            indices = sorted(n for s, n in layers if s == stack)
            prefix = f"{stack} " if stack else ""
            out += [(f"{prefix}layer {n + 1}/{len(indices)}", layers[(stack, n)]) for n in indices]
        return out + ([("head", last)] if last else [])

    def classifier_config(self):
        """config.json of the merged classifier: the checkpoint's with transformers' sequence
        classifier of its type as architecture (CLASSIFIER_ARCHITECTURES) and the adapter's
        labels."""
        from ..formats.json_file import read_json_object

        config = read_json_object(f"{self.source}/config.json")
        if isinstance(self.config, DecoderClassifierConfig):
            # transformers finds each text's last token by the padding id: it needs one
            architecture = self.config.classifier_architecture(config.get("architectures"))
            if config.get("pad_token_id") is None and self.pad_id is not None:
                config["pad_token_id"] = self.pad_id
        else:
            architecture = CLASSIFIER_ARCHITECTURES[self.config.model_type]
        config["architectures"] = [architecture]
        if self.config.pooling_in_config:
            config["classifier_pooling"] = self.pooling
        config["id2label"] = {str(i): label for i, label in enumerate(self.labels)}
        config["label2id"] = {label: i for i, label in enumerate(self.labels)}
        config.pop("num_labels", None)
        # transformers' loss and pipelines read the kind of head from it (a head of one row
        # without it reads as regression)
        config["problem_type"] = self.problem_type or SINGLE_LABEL
        return config


def load_merged(model_dir, adapter_dir=None):
    """The merged model of a checkpoint directory and (optionally, for decoders) a PEFT
    adapter, on the host's NumPy backend. A classifier's head lives in its adapter, so
    classifiers need one (a decoder's SEQ_CLS adapter makes it a classifier), but for a
    fine-tuned classifier checkpoint (its own head and labels)."""
    from ..cli import SEQ2SEQ, model_kind, reads_as_classifier
    from ..gpu import run_sync
    from ..models.checkpoint import DecoderCheckpoint

    kind = model_kind(model_dir, seq2seq=True)
    if reads_as_classifier(model_dir, kind, adapter_dir):
        kind = ENCODER          # a decoder's sequence classifier: read as classifiers are
    if kind in (DECODER, SEQ2SEQ):
        if adapter_dir is None:
            checkpoint = DecoderCheckpoint.load(model_dir)
            return MergedModel(DECODER, checkpoint.config, str(model_dir), checkpoint, {})
        from ..train.chat import ChatModel
        from ..train.seq2seq import Seq2SeqModel

        model_class = Seq2SeqModel if kind == SEQ2SEQ else ChatModel
        model = run_sync(model_class.load(model_dir, adapter_dir=adapter_dir, backend="numpy"))
    else:
        from ..models.checkpoint import Checkpoint
        from ..models.classifiers import adapter_pooling
        from ..train.classifier import TextClassifier

        if adapter_dir is None:
            checkpoint = Checkpoint.load(model_dir)
            if checkpoint.head_labels() is None:
                raise ExportError(f"{model_dir} is a classifier checkpoint (BERT family): its "
                                  "head is in the adapter trained on it; give --adapter")
            # a fine-tuned classifier: its own head and labels, as it is
            model = run_sync(TextClassifier.create(model_dir, backend="numpy",
                                                   checkpoint=checkpoint))
        else:
            pooling, _ = adapter_pooling(model_dir, adapter_dir)
            model = run_sync(TextClassifier.load(model_dir, adapter_dir, backend="numpy",
                                                 pooling=pooling))
    return run_sync(MergedModel.of(model))


def check_lora_biases_merge(model_dir, adapter_dir, kind):
    """Refuse, from the configs alone (before any weight is read), an adapter whose lora_B
    biases (lora_bias) sit on layers without a bias of their own: no merged model holds them
    (runtime.check_lora_biases_fold, which the merge runs too; PEFT's merge refuses them).
    `kind`: ENCODER for a classifier (an encoder's, or a decoder's SEQ_CLS), else a decoder's
    or a T5's."""
    from pathlib import Path

    from ..formats.peft_adapter import read_adapter_config
    from ..models.checkpoint import Checkpoint, DecoderCheckpoint
    from ..models.lora_config import LoraConfig
    from ..train.runtime import check_lora_biases_fold

    adapter = read_adapter_config(adapter_dir)
    if adapter.get("lora_bias") is not True:
        return
    if kind == ENCODER:
        from ..models.classifiers import classifier_model

        config = Checkpoint.read_config(Path(model_dir) / "config.json")
        model = classifier_model(config, LoraConfig.from_peft_dict(adapter, config.classifier_targets), 2)
    else:
        from ..models.decoders import decoder_model

        config = DecoderCheckpoint.read_config(model_dir)
        model = decoder_model(config, LoraConfig.from_language_model_dict(
            adapter, config.lora_targets, config.whole_modules))
    check_lora_biases_fold(model, "the merged model")


def check_mergeable(kind, pooling, config):
    """Refuse what a Hugging Face checkpoint cannot express: transformers' BERT-family
    classifier heads pool the [CLS] token (mean pooling has no field in their config;
    ModernBERT's has one: the encoder config's pooling_in_config)."""
    if kind != ENCODER or pooling != "mean" or config.pooling_in_config:
        return
    if isinstance(config, DecoderClassifierConfig):
        raise ExportError("this classifier pools with the mean over tokens, which transformers' "
                          "decoder sequence classifiers cannot express (they read the last "
                          "token): export it with --format onnx, whose graph pools as it was "
                          "trained, or export its adapter")
    raise ExportError("this classifier pools with the mean over tokens, which transformers' "
                      "sequence classifiers cannot express (they always pool [CLS]); "
                      "export it with --format onnx, whose graph pools as it was trained")


def save_merged(merged, directory, protected=(), progress=None):
    """Write the merged model as a Hugging Face checkpoint directory (config and tokenizer
    files copied, model.safetensors in F32), atomically and only where py_engine may write.
    progress(label) is called per group of tensors as they are gathered."""
    check_mergeable(merged.kind, merged.pooling, merged.config)
    tensors = {}
    for label, names in merged.groups():
        for name in names:
            shape = tuple(merged.shape(name))
            data = merged.floats(name)
            if len(data) != math.prod(shape):
                raise ExportError(f"tensor {name} holds {len(data)} values for shape {shape}")
            tensors[name] = (shape, data)
        if progress is not None:
            progress(f"merged: {label}")
    if merged.kind == ENCODER:
        config = merged.classifier_config()
        if isinstance(merged.config, DecoderClassifierConfig):   # GPT-2's Conv1D layout
            tensors = merged.config.checkpoint_layout(tensors)
    else:
        config = decoder_config_json(merged.source, merged.config)
        tensors = merged.config.checkpoint_layout(tensors)
    return save_model_dir(directory, merged.source, tensors, protected, config=config,
                          tokenizer_dir=merged.tokenizer_dir)
