"""The decoder families the engine runs, picked from a checkpoint's config.json `model_type`:
each family's configuration and model class, and the refusal that names them all.

    config = decoder_config(values)      # a LlamaConfig (Llama, Gemma, Phi-3), Gpt2Config,
                                         # PhiConfig (Phi-2) or T5Config (encoder-decoder)
    model = decoder_model(config, lora)  # a LlamaModel, Gpt2Model, PhiModel or T5Model
"""

from .bert_config import ConfigError
from .gpt2_config import MODEL_TYPES as GPT2_TYPES, Gpt2Config
from .llama_config import FAMILY_TYPES as LLAMA_FAMILIES, LlamaConfig
from .saved_modules import check_saved_modules, saved_modules
from .phi_config import MODEL_TYPES as PHI_TYPES, PhiConfig
from .t5_config import MODEL_TYPES as T5_TYPES, T5Config

FAMILIES = {**{name: (types, LlamaConfig) for name, types in LLAMA_FAMILIES.items()},
            "GPT-2": (GPT2_TYPES, Gpt2Config), "Phi-2": (PHI_TYPES, PhiConfig),
            "T5": (T5_TYPES, T5Config)}


DECODER_TYPES = tuple(t for types, _ in FAMILIES.values() for t in types)
# The decoder-only ones (ChatModel's); T5 is an encoder-decoder (train/seq2seq.py).
CAUSAL_TYPES = tuple(t for t in DECODER_TYPES if t not in T5_TYPES)


def config_positions(config):
    """The positions a config.json (a dict) gives its model: max_position_embeddings (less the
    rows up to the padding token's for RoBERTa's kind, whose positions start after it), GPT-2's
    n_positions; None when it gives no int."""
    from .bert_config import ROBERTA_TYPES

    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if type(positions) is not int:
        return None
    pad = config.get("pad_token_id", 1)
    if config.get("model_type") in ROBERTA_TYPES and type(pad) is int:
        return positions - pad - 1
    return positions


def supported():
    """The supported decoders as one phrase: 'Llama (llama, qwen2, qwen3, mistral, smollm3), Gemma (gemma,
    gemma2, gemma3_text), Phi-3 (phi3), GPT-2 (gpt2), Phi-2 (phi), T5 (t5)'."""
    return ", ".join(f"{name} ({', '.join(types)})" for name, (types, _) in FAMILIES.items())


def decoder_config(values):
    """The configuration of the family config.json's `model_type` names (Llama when absent,
    as older Llama checkpoints omit it); ConfigError naming the supported families otherwise."""
    model_type = values.get("model_type", "llama")
    for types, config_class in FAMILIES.values():
        if model_type in types:
            return config_class(**values)
    raise ConfigError(f"model_type {model_type!r} is not a supported decoder; supported: {supported()}")


def decoder_model(config, lora, dropout=None, vocab_size=None):
    """The model of `config`'s family (lora: a LoraConfig, or None for full fine-tuning;
    dropout: None for the checkpoint's rates, 0.0 for none in training, see DecoderModel).
    Where the LoRA's modules_to_save trains the embedding or the output layer whole, the
    model's config is the checkpoint's for that (LlamaConfig.with_saved; vocab_size: the rows
    of an adapter's saved embedding)."""
    if lora is not None and lora.modules_to_save:
        whole = config.whole_modules
        check_saved_modules(lora.modules_to_save, whole)
        config = config.with_saved(saved_modules(lora, whole), vocab_size,
                                   keep_tied=lora.ensure_weight_tying)
    if isinstance(config, Gpt2Config):
        from .gpt2 import Gpt2Model
        return Gpt2Model(config, lora, dropout=dropout)
    if isinstance(config, PhiConfig):
        from .phi import PhiModel
        return PhiModel(config, lora, dropout=dropout)
    if isinstance(config, T5Config):
        from .t5 import T5Model
        return T5Model(config, lora, dropout=dropout)
    from .llama import LlamaModel
    return LlamaModel(config, lora, dropout=dropout)
