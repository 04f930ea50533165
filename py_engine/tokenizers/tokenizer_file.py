"""tokenizer.json as read by both tokenizers: the file decoded (errors name it), and its shape
checked before a tokenizer is built from it, so that a corrupt or hand-edited file is a message
naming the file and the field rather than a TypeError deep inside the tokenizer.

What is checked is the shape the tokenizers rely on: the pipeline sections (normalizer,
pre_tokenizer, post_processor, decoder, truncation, padding) are objects or null, with a string
"type" and Sequence members that are objects; model is an object whose vocab (BPE,
WordPiece) maps strings to non-negative ids and whose merges are "a b" strings or [a, b] pairs,
or (Unigram) whose vocab is a list of [piece, score] and unk_id null or an index of it;
added_tokens is a list of {"id": int, "content": str} objects. Which kinds and options are supported is each tokenizer's
own check.
"""

from ..formats.json_file import decode_utf8, json_kind, parse_json, read_json_object

SECTIONS = ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding")
SEQUENCE_MEMBERS = ("normalizers", "pretokenizers", "processors", "decoders")
VOCAB_MODELS = ("BPE", "WordPiece", "WordLevel", None)    # vocab: {token: id}


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be used; the message names the file and the field."""


class TokenizerJsonReader:
    """The constructors a tokenizer built from a tokenizer.json config dict (cls(config))
    gets: from_file and from_json, with the file checked and its errors naming it."""

    @classmethod
    def from_file(cls, path):
        """Read a Hugging Face tokenizer.json; errors name the file."""
        config = read_tokenizer_json(path)
        try:
            return cls(config)
        except TokenizerFileError:
            raise
        except ValueError as e:
            raise TokenizerFileError(f"{path}: {e}") from None

    @classmethod
    def from_json(cls, text_or_dict):
        """From the text of a tokenizer.json, or the dict it decodes to."""
        return cls(tokenizer_config(text_or_dict))


def read_tokenizer_json(path):
    """The checked contents of a tokenizer.json file."""
    config = read_json_object(path)
    check_tokenizer_json(config, str(path))
    return config


def tokenizer_config(text_or_dict, where="tokenizer.json"):
    """The checked contents of tokenizer.json given as its text or as the decoded dict."""
    config = text_or_dict
    if not isinstance(config, (str, bytes, bytearray, dict)):     # a caller's mistake
        raise TypeError(f"expected tokenizer.json text or dict, not {type(config).__name__}")
    if isinstance(config, (bytes, bytearray)):
        config = decode_utf8(config, where)
    if isinstance(config, str):
        config = parse_json(config, where)
    if not isinstance(config, dict):
        raise TokenizerFileError(f"{where} must hold a JSON object, got {json_kind(config)}")
    check_tokenizer_json(config, where)
    return config


def check_tokenizer_json(config, where):
    for name in SECTIONS:
        _check_component(config.get(name), name, where)
    model = config.get("model")
    if not isinstance(model, dict):
        raise TokenizerFileError(f"{where}: \"model\" must be an object, got {json_kind(model)}")
    _check_type(model, "model", where)
    kind = model.get("type")
    if kind == "Unigram":
        _check_unigram(model, where)
    elif kind in VOCAB_MODELS:
        _check_vocab_map(model.get("vocab"), where)
        _check_list(model.get("merges"), "model.merges", where, _is_merge,
                    '"a b" or ["a", "b"]')
    else:
        return      # another kind of model: each tokenizer names what it reads
    _check_list(config.get("added_tokens"), "added_tokens", where, _is_added_token,
                'an object with an integer "id" and a string "content"')


def _check_vocab_map(vocab, where):
    if vocab is None:
        return
    if not isinstance(vocab, dict):
        raise TokenizerFileError(f"{where}: \"model.vocab\" must map tokens to ids, got "
                                 f"{json_kind(vocab)}")
    for token, i in vocab.items():
        if type(i) is not int or i < 0:
            raise TokenizerFileError(f"{where}: \"model.vocab\" gives {token!r:.40} the id "
                                     f"{i!r:.40}, not a non-negative integer")


def _check_unigram(model, where):
    """A Unigram model: vocab a non-empty list of [piece, score], unk_id null or its index."""
    vocab = model.get("vocab")
    if not isinstance(vocab, list) or not vocab:
        raise TokenizerFileError(f"{where}: Unigram \"model.vocab\" must be a non-empty list of "
                                 f"[piece, score], got {json_kind(vocab)}")
    _check_list(vocab, "model.vocab", where, _is_scored_piece, "[piece, score]")
    unk_id = model.get("unk_id")
    if unk_id is not None and (type(unk_id) is not int or not 0 <= unk_id < len(vocab)):
        raise TokenizerFileError(f"{where}: \"model.unk_id\" {unk_id!r:.40} is not an index of "
                                 f"the {len(vocab)}-piece vocab")


def _is_scored_piece(entry):
    return isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) \
        and type(entry[1]) in (int, float)


def _is_merge(merge):
    if isinstance(merge, str):
        return " " in merge
    return isinstance(merge, list) and len(merge) == 2 and all(isinstance(m, str) for m in merge)


def _is_added_token(token):
    return isinstance(token, dict) and type(token.get("id")) is int and token["id"] >= 0 \
        and isinstance(token.get("content"), str)


def _check_list(values, name, where, accept, wanted):
    """`values` is null or a list whose every item `accept`s; else an error naming the item."""
    if values is None:
        return
    if not isinstance(values, list):
        raise TokenizerFileError(f"{where}: \"{name}\" must be a list, got {json_kind(values)}")
    for k, value in enumerate(values):
        if not accept(value):
            raise TokenizerFileError(f"{where}: \"{name}\"[{k}] must be {wanted}, got "
                                     f"{value!r:.80}")


def _check_component(spec, name, where):
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise TokenizerFileError(f"{where}: \"{name}\" must be an object or null, got "
                                 f"{json_kind(spec)}")
    _check_type(spec, name, where)
    for key in SEQUENCE_MEMBERS:
        if key in spec:
            members = spec[key]
            if not isinstance(members, list):
                raise TokenizerFileError(f"{where}: \"{name}.{key}\" must be a list, got "
                                         f"{json_kind(members)}")
            for k, member in enumerate(members):
                if not isinstance(member, dict):
                    raise TokenizerFileError(f"{where}: \"{name}.{key}\"[{k}] must be an "
                                             f"object, got {json_kind(member)}")
                _check_component(member, f"{name}.{key}[{k}]", where)


def _check_type(spec, name, where):
    kind = spec.get("type")
    if kind is not None and not isinstance(kind, str):
        raise TokenizerFileError(f"{where}: \"{name}.type\" must be a string, got "
                                 f"{json_kind(kind)}")
