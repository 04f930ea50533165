"""tokenizer.json as read by both tokenizers: the file decoded (errors name it), and its shape
checked before a tokenizer is built from it, so that a corrupt or hand-edited file is a message
naming the file and the field rather than a TypeError deep inside the tokenizer.

What is checked is the shape the tokenizers rely on: the pipeline sections (normalizer,
pre_tokenizer, post_processor, decoder, truncation, padding) are objects or null, the first
four with a string "type" (which the library always writes), Sequence members that are objects,
and their boolean options (add_prefix_space, trim_offsets, lowercase...) true or false; model
is an object whose vocab (BPE, WordPiece) maps strings to non-negative ids and whose merges are
"a b" strings or [a, b] pairs, or (Unigram) whose vocab is a list of [piece, score] and unk_id
null or an index of it; added_tokens is a list of {"id": int, "content": str} objects whose
flags (lstrip, rstrip, single_word, normalized, special) are true or false where given. Which
kinds and options are supported is each tokenizer's own check.
"""

from ..formats.json_file import decode_utf8, json_kind, parse_json, read_json_object

SECTIONS = ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding")
TYPED_SECTIONS = ("normalizer", "pre_tokenizer", "post_processor", "decoder")   # name a "type"
# Options the library reads as booleans (strip_accents may also be null): another value is an
# error there, and would be read as true or false here
BOOLEAN_OPTIONS = ("add_prefix_space", "trim_offsets", "use_regex", "invert", "split", "lowercase",
                   "clean_text", "handle_chinese_chars", "cleanup", "byte_fallback", "fuse_unk",
                   "ignore_merges", "strip_accents")
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
# The fields a component of these types must have (a Strip decoder also its "content")
REQUIRED_FIELDS = {"Prepend": ("prepend",), "Replace": ("pattern", "content"), "Split": ("pattern",)}
# Options the library reads as strings, and those it reads as strings or null
STRING_OPTIONS = ("replacement", "prepend", "content", "prefix", "pad_token", "direction")
NULLABLE_STRING_OPTIONS = ("unk_token", "end_of_word_suffix")
# ... as non-negative integers, and those it reads as non-negative integers or null
COUNT_OPTIONS = ("max_input_chars_per_word", "max_length", "stride", "pad_id", "pad_type_id")
NULLABLE_COUNT_OPTIONS = ("pad_to_multiple_of",)
SEQUENCE_MEMBERS = ("normalizers", "pretokenizers", "processors", "decoders")
VOCAB_MODELS = ("BPE", "WordPiece", "WordLevel", None)    # vocab: {token: id}


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be used; the message names the file and the field."""


class TokenizerJsonReader:
    """The constructors a tokenizer built from a tokenizer.json config dict (cls(config))
    gets: from_file and from_json, with the file checked and its errors naming it."""

    @classmethod
    def from_file(cls, path, config=None):
        """Read a Hugging Face tokenizer.json (`config`: its checked contents, where they were
        read already: read_tokenizer_json); errors name the file."""
        config = read_tokenizer_json(path) if config is None else config
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
        _check_component(config.get(name), name, where, name in TYPED_SECTIONS)
    model = config.get("model")
    if not isinstance(model, dict):
        raise TokenizerFileError(f"{where}: \"model\" must be an object, got {json_kind(model)}")
    _check_type(model, "model", where)
    _check_options(model, "model", where)
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
                'an object with an integer "id", a string "content" and true or false for '
                + ", ".join(ADDED_TOKEN_FLAGS))


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
        and isinstance(token.get("content"), str) \
        and all(isinstance(token.get(flag, False), bool) for flag in ADDED_TOKEN_FLAGS)


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


def _check_component(spec, name, where, typed=True):
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise TokenizerFileError(f"{where}: \"{name}\" must be an object or null, got "
                                 f"{json_kind(spec)}")
    _check_type(spec, name, where)
    if typed and "type" not in spec:
        raise TokenizerFileError(f"{where}: \"{name}\" has no \"type\" naming what it is")
    required = REQUIRED_FIELDS.get(spec.get("type"), ())
    if spec.get("type") == "Strip" and name.startswith("decoder"):
        required = ("content",)
    for key in required:
        if key not in spec:
            raise TokenizerFileError(f"{where}: \"{name}\" ({spec['type']}) has no \"{key}\"")
    if spec.get("type") == "Sequence" and not any(key in spec for key in SEQUENCE_MEMBERS):
        raise TokenizerFileError(f"{where}: \"{name}\" is a Sequence without the list of its "
                                 f"members ({' or '.join(SEQUENCE_MEMBERS)})")
    _check_options(spec, name, where)
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


def _check_options(spec, name, where):
    """The options of a component (or the model, truncation, padding) the library reads as
    booleans, strings, counts or patterns hold such values: an error naming the option,
    rather than a misreading or a TypeError later."""
    def wrong(key, wanted):
        raise TokenizerFileError(f"{where}: \"{name}.{key}\" must be {wanted}, got "
                                 f"{json_kind(spec[key])}")

    for key in BOOLEAN_OPTIONS:
        if key in spec and not (isinstance(spec[key], bool)
                                or (key == "strip_accents" and spec[key] is None)):
            wrong(key, "true or false")
    for key in STRING_OPTIONS + NULLABLE_STRING_OPTIONS:
        if key in spec and not (isinstance(spec[key], str)
                                or (key in NULLABLE_STRING_OPTIONS and spec[key] is None)):
            wrong(key, "a string")
    for key in COUNT_OPTIONS + NULLABLE_COUNT_OPTIONS:
        value = spec.get(key)
        if key in spec and not ((type(value) is int and value >= 0)
                                or (key in NULLABLE_COUNT_OPTIONS and value is None)):
            wrong(key, "a non-negative integer")
    prefix = spec.get("continuing_subword_prefix")
    if spec.get("type") in ("WordPiece", "BPE") and "continuing_subword_prefix" in spec and not (
            isinstance(prefix, str) or (spec["type"] == "BPE" and prefix is None)):
        wrong("continuing_subword_prefix", "a string")
    if "pattern" in spec:
        pattern = spec["pattern"]
        if not (isinstance(pattern, dict) and len(pattern) == 1
                and next(iter(pattern)) in ("String", "Regex")
                and isinstance(next(iter(pattern.values())), str)):
            wrong("pattern", '{"String": text} or {"Regex": pattern}')


def _check_type(spec, name, where):
    kind = spec.get("type")
    if kind is not None and not isinstance(kind, str):
        raise TokenizerFileError(f"{where}: \"{name}.type\" must be a string, got "
                                 f"{json_kind(kind)}")
