"""The sequence classifier of a checkpoint's family: BertClassifier (BERT, RoBERTa's kind,
DistilBERT, ELECTRA, MPNet, DeBERTa-v2), ModernBertClassifier, or a decoder's
(DecoderClassifier), by its config's type."""

from .bert import BertClassifier
from .bert_config import BertConfig, config_id2label
from .decoder_classifier import DecoderClassifier, DecoderClassifierConfig
from .decoders import CAUSAL_TYPES, decoder_config
from .modernbert import ModernBertClassifier
from .modernbert_config import MODEL_TYPE as MODERNBERT, ModernBertConfig


def classifier_config(values):
    """The config of a classifier checkpoint's config.json `values`: ModernBERT's, a
    decoder's, or a BERT family's (ConfigError naming what is not read)."""
    if values.get("model_type") in CAUSAL_TYPES:
        return DecoderClassifierConfig(decoder_config(values), config_id2label(values),
                                       values.get("problem_type"))
    return (ModernBertConfig if values.get("model_type") == MODERNBERT else BertConfig)(**values)


def names_sequence_classifier(values):
    """Whether config.json `values` names transformers' sequence classifier as its architecture
    (a fine-tuned classifier's: BertForSequenceClassification, Qwen2ForSequenceClassification):
    a decoder's is read as a classifier, not a chat model."""
    return any(isinstance(a, str) and a.endswith("ForSequenceClassification")
               for a in values.get("architectures") or ())


def classifier_model(config, lora, num_labels, pooling=None, dropout=None, train_pooler=False,
                     pooler_lora=True):
    """pooling None: the family's default (BERT's cls, ModernBERT's config.json
    classifier_pooling, a decoder's last token). train_pooler and pooler_lora are
    BertClassifier's (its pooler)."""
    if isinstance(config, ModernBertConfig):
        return ModernBertClassifier(config, lora, num_labels, pooling=pooling, dropout=dropout)
    if isinstance(config, DecoderClassifierConfig):
        return DecoderClassifier(config, lora, num_labels, pooling=pooling, dropout=dropout)
    return BertClassifier(config, lora, num_labels, pooling=pooling or "cls",
                          train_pooler=train_pooler, dropout=dropout, pooler_lora=pooler_lora)


def adapter_pooling(model_dir, adapter_dir, requested=None, config=None):
    """(pooling, note) to load a classifier adapter with (formats.head_config.resolve_pooling),
    an adapter made by PEFT pooling as the checkpoint's family does (`config`: the checkpoint's,
    when read already)."""
    from pathlib import Path

    from ..formats.head_config import resolve_pooling
    from .bert_config import ConfigError, read_config_json

    if config is None:
        try:
            config = classifier_config(read_config_json(Path(model_dir) / "config.json"))
        except ConfigError:         # the checkpoint's load names what is wrong with it
            return resolve_pooling(adapter_dir, requested)
    return resolve_pooling(adapter_dir, requested, config.default_pooling)
