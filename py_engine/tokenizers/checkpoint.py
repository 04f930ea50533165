"""A checkpoint directory's tokenizer: tokenizer.json (or BERT's vocab.txt, DeBERTa-v3's
spm.model, ALBERT's spiece.model: SENTENCEPIECE_FILES), and for chat models
tokenizer_config.json's padding token and chat template (or chat_template.jinja).

    tokenizer = classifier_tokenizer(model_dir)              # BERT family, RoBERTa's kind
    tokenizer, template = chat_tokenizer(model_dir)          # decoders; template may be None
    tokenizer = seq2seq_tokenizer(model_dir)                 # T5 family (Unigram)
"""

from pathlib import Path

from ..formats.json_file import read_json_object
from .bpe import SubwordTokenizer
from .chat_template import ChatTemplate
from .tokenizer_file import read_tokenizer_json
from .wordpiece import WordPieceTokenizer


def classifier_tokenizer(model_dir):
    """A classifier checkpoint's tokenizer: BERT's WordPiece (tokenizer.json, or vocab.txt), or
    the subword tokenizer.json of RoBERTa's kind (byte-level BPE; XLM-RoBERTa's Unigram),
    padding as tokenizer_config.json says where tokenizer.json does not; a decoder's, as its
    chat model reads it (padding with its pad token, else its end of text)."""
    from ..models.decoders import CAUSAL_TYPES

    model_dir = Path(model_dir)
    model_type = _model_type(model_dir)
    if model_type in CAUSAL_TYPES:      # a decoder read as a classifier
        return chat_tokenizer(model_dir)[0]
    path = model_dir / "tokenizer.json"
    if path.is_file():
        config = read_tokenizer_json(path)
        if (config.get("model") or {}).get("type") != "WordPiece":
            return _tokenizer_and_config(model_dir, config)[0]
        tokenizer = WordPieceTokenizer.from_file(path, config)
        if not config.get("padding"):       # MPNet's files name <pad> in tokenizer_config.json only
            token = _tokenizer_config(model_dir).get("pad_token")
            tokenizer.use_pad_token(token.get("content") if isinstance(token, dict) else token)
        return tokenizer
    if (model_dir / "vocab.txt").is_file():
        # MPNet's vocab.txt is BERT's with MPNet's special tokens added: its tokenizer uses those
        family = "mpnet" if model_type == "mpnet" else "bert"
        return WordPieceTokenizer.from_vocab(model_dir / "vocab.txt", family=family)
    options = _tokenizer_config(model_dir)
    config = sentencepiece_tokenizer_json(model_dir, model_type, options)
    if config is not None:
        tokenizer = SubwordTokenizer.from_json(config)
        _pad_as_configured(tokenizer, {"pad_token": SENTENCEPIECE_FILES[model_type][1], **options})
        return tokenizer
    spm = SENTENCEPIECE_FILES.get(model_type)
    raise FileNotFoundError(f"{model_dir} has neither tokenizer.json nor vocab.txt" +
                            (f" (nor {spm[0]}, read for {model_type})" if spm else ""))


# The families whose checkpoints may ship their SentencePiece model alone (DeBERTa-v3's
# spm.model, older ALBERT's spiece.model): {model_type: (file, default pad token)}
SENTENCEPIECE_FILES = {"deberta-v2": ("spm.model", "[PAD]"), "albert": ("spiece.model", "<pad>")}


def sentencepiece_tokenizer_json(model_dir, model_type=None, options=None):
    """The tokenizer.json transformers' tokenizer class builds from a checkpoint's SentencePiece
    model and tokenizer_config.json (`options`: its contents, when read already;
    DebertaV2Tokenizer's, AlbertTokenizer's: see sentencepiece_model), or None where the
    family ships none or the file is not there."""
    from .sentencepiece_model import (albert_tokenizer_json, deberta_tokenizer_json,
                                      read_charsmap, read_pieces)

    model_dir = Path(model_dir)
    model_type = model_type or _model_type(model_dir)
    if model_type not in SENTENCEPIECE_FILES:
        return None
    path = model_dir / SENTENCEPIECE_FILES[model_type][0]
    if not path.is_file():
        return None
    data = path.read_bytes()
    pieces = read_pieces(data, str(path))
    options = _tokenizer_config(model_dir) if options is None else options
    if model_type == "albert":
        return albert_tokenizer_json(pieces, read_charsmap(data), options)
    return deberta_tokenizer_json(pieces, options)


def _model_type(model_dir):
    """config.json's model_type (None where there is no config.json)."""
    path = model_dir / "config.json"
    return read_json_object(path).get("model_type") if path.is_file() else None


def chat_tokenizer(model_dir, adapter_dir=None, own_vocabulary=False):
    """(SubwordTokenizer, ChatTemplate or None). Without a pad token of its own, the tokenizer
    pads with tokenizer_config.json's pad_token, else its eos_token (as transformers' users do).

    With `adapter_dir`, a chat template the adapter's folder carries is used instead of the
    checkpoint's (TRL's trainers save the tokenizer they trained with beside the adapter, and
    one loads it from there); see adapter_chat_template. With `own_vocabulary` (the adapter
    carries its embedding and output layer, PEFT's modules_to_save, and its folder a
    tokenizer.json), that tokenizer.json is the tokenizer, tokens added to it included (TRL's
    setup_chat_format adds its ChatML tokens so)."""
    model_dir = Path(model_dir)
    tokenizer, config = _tokenizer_and_config(Path(adapter_dir) if own_vocabulary else model_dir)
    if own_vocabulary:
        config = _tokenizer_config(model_dir)
    template = adapter_chat_template(adapter_dir, model_dir, own_vocabulary) \
        if adapter_dir is not None else None
    if template is None and _holds_chat_template(model_dir, config):
        template = ChatTemplate.from_pretrained(model_dir)
    return tokenizer, template or family_template(model_dir, config)


class AdapterTokenizerError(ValueError):
    """An adapter folder's tokenizer that is not its checkpoint's."""


def adapter_chat_template(adapter_dir, model_dir, own_vocabulary=False):
    """The ChatTemplate of an adapter folder's tokenizer_config.json (or chat_template.jinja),
    with that file's special tokens, or None where it carries none. Unless the adapter carries
    its own embedding (`own_vocabulary`), a tokenizer.json beside it must hold the checkpoint's
    vocabulary: one with tokens added (an adapter trained with a resized embedding) is refused
    by name, since its new tokens have no embedding here."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "tokenizer_config.json"
    config = read_json_object(config_path) if config_path.is_file() else {}
    if not _holds_chat_template(adapter_dir, config):
        return None
    if (adapter_dir / "tokenizer.json").is_file() and not own_vocabulary:
        _check_same_vocabulary(adapter_dir / "tokenizer.json", Path(model_dir) / "tokenizer.json")
    return ChatTemplate.from_pretrained(adapter_dir)


def _holds_chat_template(directory, tokenizer_config):
    return (directory / "tokenizer_config.json").is_file() and bool(
        tokenizer_config.get("chat_template") or (directory / "chat_template.jinja").is_file())


def _check_same_vocabulary(theirs, ours):
    """AdapterTokenizerError unless tokenizer.json files `theirs` and `ours` map the same tokens
    (the model's vocabulary and the added tokens) to the same ids."""
    def tokens(path):
        data = read_json_object(path)
        vocab = (data.get("model") or {}).get("vocab") or {}
        if isinstance(vocab, list):                      # Unigram: [[piece, score], ...]
            vocab = {piece[0]: i for i, piece in enumerate(vocab) if piece}
        added = {t.get("content"): t.get("id") for t in data.get("added_tokens") or ()
                 if isinstance(t, dict)}
        return {**vocab, **added}

    adapter, base = tokens(theirs), tokens(ours)
    if adapter == base:
        return
    new = sorted((t for t in adapter if t not in base), key=lambda t: _id_order(adapter[t]))
    moved = sorted((t for t in adapter if t in base and adapter[t] != base[t]), key=str)
    what = (f"{_tokens(len(new))} the checkpoint lacks ({', '.join(map(repr, new[:3]))}"
            f"{', ...' if len(new) > 3 else ''}): it was trained with tokens added, whose "
            "embeddings this adapter does not carry" if new else
            f"other ids for {_tokens(len(moved))} ({', '.join(map(repr, moved[:3]))})" if moved else
            f"{_tokens(len(base) - len(adapter))} fewer than the checkpoint's")
    raise AdapterTokenizerError(f"{theirs}: the adapter's tokenizer has {what}; load the "
                                "checkpoint it was trained on")


def _id_order(token_id):
    return token_id if isinstance(token_id, int) else -1


def _tokens(n):
    return f"{n} token{'' if n == 1 else 's'}"


def seq2seq_tokenizer(model_dir):
    """The SubwordTokenizer of an encoder-decoder checkpoint (T5, FLAN-T5, mT5: a Unigram
    tokenizer.json with a SentencePiece charsmap), pure Python. pad_id: tokenizer.json's, else
    tokenizer_config.json's pad_token (T5's "<pad>", id 0), else its eos_token; eos_id: what
    the template appends ("</s>")."""
    return _tokenizer_and_config(Path(model_dir))[0]


def _tokenizer_and_config(model_dir, parsed=None):
    """tokenizer.json's tokenizer (`parsed`: its contents, where read already), padding as
    chat_tokenizer says, and tokenizer_config.json ({} where there is none)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json")
    tokenizer = SubwordTokenizer.from_file(path, parsed)
    config = _tokenizer_config(model_dir)
    _pad_as_configured(tokenizer, config)
    return tokenizer, config


def _pad_as_configured(tokenizer, config):
    """Where the tokenizer defines no padding: tokenizer_config.json's pad_token, else its
    eos_token, where the vocabulary holds it."""
    if tokenizer.pad_id is None:
        for key in ("pad_token", "eos_token"):
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if token is not None and tokenizer.token_to_id(token) is not None:
                tokenizer.pad_id = tokenizer.token_to_id(token)
                break


def _tokenizer_config(directory):
    """tokenizer_config.json's fields ({} where there is none)."""
    path = Path(directory) / "tokenizer_config.json"
    return read_json_object(path) if path.is_file() else {}


# DialoGPT's conversation format (GPT-2 family checkpoints carry no chat template): each turn's
# text followed by the end-of-text token, the turns joined with nothing between them, as
# DialoGPT was trained and as transformers' former GPT-2 default chat template renders it. The
# generation prompt adds nothing: the reply follows the last turn's end-of-text.
DIALOGPT_TEMPLATE = "{% for message in messages %}{{ message['content'] + eos_token }}{% endfor %}"
DIALOGPT_EOS = "<|endoftext|>"


def family_template(model_dir, tokenizer_config):
    """The conversation format of a checkpoint whose files hold no chat template, where its
    family has one (config.json's model_type "gpt2": DialoGPT's, with tokenizer_config.json's
    eos_token); None otherwise."""
    path = Path(model_dir) / "config.json"
    if not path.is_file() or read_json_object(path).get("model_type") != "gpt2":
        return None
    eos = tokenizer_config.get("eos_token") or DIALOGPT_EOS
    eos = eos.get("content") if isinstance(eos, dict) else eos
    return ChatTemplate(DIALOGPT_TEMPLATE, eos_token=eos, end_tokens=[eos])
