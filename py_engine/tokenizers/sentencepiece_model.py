"""SentencePiece's model file (spm.model, spiece.model: a protobuf ModelProto), read here
rather than through the protobuf or sentencepiece packages, which Pyodide's core lacks; and the
tokenizer.json that transformers' DebertaV2Tokenizer and AlbertTokenizer build from it
(DeBERTa-v3's checkpoints ship spm.model alone, older ALBERT ones spiece.model). Checked
against the sentencepiece library and transformers (tests/test_tokenizer_sentencepiece.py,
tests/test_albert.py).

    pieces = read_pieces(data)      # [Piece(text, score, kind)], in id order

The wire format: each field a varint key (number << 3 | wire type), then a varint (type 0), 8
bytes (1), a length and that many bytes (2) or 4 bytes (5). ModelProto's field 1 is the
repeated SentencePiece message (1: piece, 2: score as a float, 3: type: 1 normal, 2 unknown,
3 control, 4 user defined, 5 unused, 6 byte).
"""

import struct
from dataclasses import dataclass


class SentencePieceModelError(ValueError):
    """A file that is not a SentencePiece model; the message says what is wrong."""


@dataclass(frozen=True)
class Piece:
    text: str
    score: float
    kind: int = 1       # SentencePiece's type: 1 normal, 2 unknown, 3 control, 4 user defined


def _varint(data, at):
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise SentencePieceModelError("a varint runs past the end of the data")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data):
    """(field number, wire type, value) of each field of a message: an int for varints, bytes
    otherwise."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = bytes(data[at:at + size]), at + size
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = bytes(data[at:at + size]), at + size
        else:
            raise SentencePieceModelError(f"unsupported protobuf wire type {wire}")
        if at > len(data):
            raise SentencePieceModelError("a field runs past the end of the data")
        yield number, wire, value


def read_pieces(data, where="the SentencePiece model"):
    """The vocabulary of a SentencePiece model file's bytes, in id order."""
    pieces = []
    try:
        for number, wire, value in _fields(data):
            if number != 1:
                continue
            if wire != 2:
                raise SentencePieceModelError("a piece is not a message")
            text, score, kind = None, 0.0, 1
            for field, field_wire, field_value in _fields(value):
                if field == 1 and field_wire == 2:
                    text = field_value.decode("utf-8")
                elif field == 2 and field_wire == 5:
                    score = struct.unpack("<f", field_value)[0]
                elif field == 3 and field_wire == 0:
                    kind = field_value
            if text is None:
                raise SentencePieceModelError(f"piece {len(pieces)} has no text")
            pieces.append(Piece(text, score, kind))
    except (SentencePieceModelError, UnicodeDecodeError) as e:
        raise SentencePieceModelError(f"{where} is not a SentencePiece model: {e}") from None
    if not pieces:
        raise SentencePieceModelError(f"{where} is not a SentencePiece model: it holds no pieces")
    return pieces


def read_charsmap(data):
    """The precompiled_charsmap of a SentencePiece model file's normalizer (ModelProto field 3,
    NormalizerSpec; its field 2), or None where it has none (an identity normalizer). The file
    was read by read_pieces first, which names what is wrong with it."""
    for number, wire, value in _fields(data):
        if number == 3 and wire == 2:
            for field, field_wire, field_value in _fields(value):
                if field == 2 and field_wire == 2:
                    return field_value or None
    return None


# DebertaV2Tokenizer's special tokens and their defaults, in the order transformers adds the
# ones the vocabulary lacks (bos, eos, unk, sep, pad, cls, mask); AlbertTokenizer's
DEBERTA_SPECIALS = (("bos_token", "[CLS]"), ("eos_token", "[SEP]"), ("unk_token", "[UNK]"),
                    ("sep_token", "[SEP]"), ("pad_token", "[PAD]"), ("cls_token", "[CLS]"),
                    ("mask_token", "[MASK]"))
ALBERT_SPECIALS = (("bos_token", "[CLS]"), ("eos_token", "[SEP]"), ("unk_token", "<unk>"),
                   ("sep_token", "[SEP]"), ("pad_token", "<pad>"), ("cls_token", "[CLS]"),
                   ("mask_token", "[MASK]"))


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value


def _specials(vocab, options, defaults):
    """({special token name: its text}, {added token text: id}) as transformers' tokenizer
    classes make them: tokenizer_config.json's added_tokens_decoder, then each special token
    (`defaults` in transformers' order) the vocabulary holds at its id, else added after it."""
    ids = {}
    for n, (text, _) in enumerate(vocab):
        ids.setdefault(text, n)
    specials = {name: _token_text(options.get(name, default)) for name, default in defaults}
    added = {_token_text(value): int(key)
             for key, value in (options.get("added_tokens_decoder") or {}).items()}
    next_id = max([len(vocab)] + [i + 1 for i in added.values()])
    for name, _ in defaults:
        text = specials[name]
        if text is None or text in added:
            continue
        if text in ids:
            added[text] = ids[text]
        else:
            added[text], next_id = next_id, next_id + 1
    return specials, added


def deberta_tokenizer_json(pieces, options):
    """The tokenizer.json transformers' DebertaV2Tokenizer builds from a SentencePiece model's
    `pieces` and tokenizer_config.json's `options`: the Unigram pieces with their scores, the
    whitespace runs, tabs and newlines made one space, NFC, the end stripped (lowercased first
    with do_lower_case), punctuation split off with split_by_punct, Metaspace ("always" with
    add_prefix_space, its default, else "first"), [CLS] A [SEP] (B [SEP]), and the special
    tokens the vocabulary lacks added after it."""
    vocab = [[p.text, p.score] for p in pieces]
    specials, added = _specials(vocab, options, DEBERTA_SPECIALS)
    unk = specials["unk_token"]
    unk_id = vocab.index([unk, 0.0]) if [unk, 0.0] in vocab else int(options.get("unk_id", 1))
    normalizers = ([{"type": "Lowercase"}] if options.get("do_lower_case") else []) + [
        {"type": "Replace", "pattern": {"Regex": r"\s{2,}|[\n\r\t]"}, "content": " "},
        {"type": "NFC"}, {"type": "Strip", "strip_left": False, "strip_right": True}]
    scheme = "always" if options.get("add_prefix_space", True) else "first"
    pre = ([{"type": "Punctuation", "behavior": "Isolated"}] if options.get("split_by_punct")
           else []) + [{"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
                        "split": True}]
    return _unigram_json(vocab, unk_id, added, specials, normalizers, pre, scheme)


def albert_tokenizer_json(pieces, charsmap, options):
    """The tokenizer.json transformers' AlbertTokenizer builds from a SentencePiece model's
    `pieces` and normalizer `charsmap` (read_charsmap) and tokenizer_config.json's `options`:
    ``  and '' made a double quote, NFKD and the accents stripped unless keep_accents, lower
    case with do_lower_case (its default), the model's own normalizer (Precompiled), the
    whitespace split, Metaspace ("always" with add_prefix_space, its default, else "never"),
    [CLS] A [SEP] (B [SEP], type 1), the unknown piece id 1, and the special tokens the
    vocabulary lacks added after it."""
    import base64

    vocab = [[p.text, p.score] for p in pieces]
    specials, added = _specials(vocab, options, ALBERT_SPECIALS)
    normalizers = [{"type": "Replace", "pattern": {"String": quote}, "content": '"'}
                   for quote in ("``", "''")]
    if not options.get("keep_accents", False):
        normalizers += [{"type": "NFKD"}, {"type": "StripAccents"}]
    if options.get("do_lower_case", True):
        normalizers.append({"type": "Lowercase"})
    if charsmap is not None:
        normalizers.append({"type": "Precompiled",
                            "precompiled_charsmap": base64.b64encode(charsmap).decode("ascii")})
    scheme = "always" if options.get("add_prefix_space", True) else "never"
    pre = [{"type": "WhitespaceSplit"},
           {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": True}]
    return _unigram_json(vocab, 1, added, specials, normalizers, pre, scheme)


def _unigram_json(vocab, unk_id, added, specials, normalizers, pre, scheme):
    """The tokenizer.json of a SentencePiece Unigram vocabulary with its added tokens,
    normalizers and pre-tokenizers, [CLS] A [SEP] (B [SEP], type 1) in the specials' texts."""
    cls, sep = specials["cls_token"], specials["sep_token"]

    def special(text):
        return {"SpecialToken": {"id": text, "type_id": 0}}

    def sequence(name, type_id):
        return {"Sequence": {"id": name, "type_id": type_id}}
    template = {
        "type": "TemplateProcessing",
        "single": [special(cls), sequence("A", 0), special(sep)],
        "pair": [special(cls), sequence("A", 0), special(sep), sequence("B", 1),
                 {"SpecialToken": {"id": sep, "type_id": 1}}],
        "special_tokens": {t: {"id": t, "ids": [added.get(t, 0)], "tokens": [t]} for t in (cls, sep)},
    }
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for t, i in sorted(added.items(), key=lambda item: item[1])],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": template,
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
                    "split": True},
        "model": {"type": "Unigram", "unk_id": unk_id, "vocab": vocab, "byte_fallback": False},
    }
