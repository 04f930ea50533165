"""Byte-pair encoding (GPT-2, Llama-3, Qwen2; Llama-2, TinyLlama) and SentencePiece's unigram
model (T5, FLAN-T5, mT5, ALBERT; the model itself in unigram.py) in pure Python, giving the ids
Hugging Face `tokenizers` gives. SubwordTokenizer reads both; BPETokenizer is the same class.

Like wordpiece.py this runs in the browser, where the compiled `tokenizers` library does not,
and is tested against that library (tests/test_tokenizer_bpe.py): ids, tokens and decoding of
thousands of varied strings with byte-level tokenizers configured like GPT-2 and Llama-3 and a
SentencePiece-style one with byte fallback configured like Llama-2; the Unigram model and the
Precompiled charsmap against it and sentencepiece (tests/test_tokenizer_unigram.py).

    tok = BPETokenizer.from_file("tokenizer.json")
    enc = tok.encode("<|im_start|>user\nHello!")        # enc.ids, enc.tokens
    enc = tok.encode(text, return_offsets=True)         # enc.offsets: [(start, end), ...]
    batch = tok.encode_batch(texts, padding="longest")  # padded with tok.pad_id, mask 0
    tok.decode(enc.ids, skip_special_tokens=False)
    tok.bos_id, tok.eos_id, tok.pad_id                  # None where the file defines none

The pipeline is the library's: added tokens (<|begin_of_text|>, <s>...) are cut out of the raw
text; the rest is normalized (Prepend/Replace, for SentencePiece-style models), split into words
by the pre-tokenizer (a regex Split, Digits, ByteLevel with its GPT-2 regex and
byte-to-character map, Metaspace), and each word is merged pair by pair, lowest merge rank
first; characters missing from the vocabulary become <0xNN> byte tokens (byte_fallback) or the
unknown token. Then the post-processor's template adds BOS/EOS. Words repeat, so each word's
ids are cached.

Supported tokenizer.json features: model BPE (byte_fallback, fuse_unk, ignore_merges, unk_token;
no dropout, continuing_subword_prefix or end_of_word_suffix) or Unigram (unk_id, byte_fallback);
normalizers Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD (Qwen2's file has NFC),
Lowercase, StripAccents (Python's `unicodedata`, so the Unicode version is the interpreter's),
Precompiled (SentencePiece's charsmap, precompiled.py); pre-tokenizers Sequence, ByteLevel, Split
(string or regex pattern, behaviours Isolated, Removed, MergedWithPrevious, MergedWithNext,
Contiguous; no invert), Digits (SmolLM and SmolLM2 isolate each digit), Metaspace,
WhitespaceSplit; post-processors TemplateProcessing, RobertaProcessing, BertProcessing,
ByteLevel (with trim_offsets), Sequence; decoders ByteLevel, Sequence, Replace (string),
ByteFallback, Fuse, Strip, Metaspace. Anything else is a ValueError naming it.

Offsets (`return_offsets=True`), as the library's `Encoding.offsets`: per token the range of
characters of the original text it came from, followed through normalization, pre-tokenization
and the byte-level map; used to find which tokens of a rendered chat lie in assistant turns.

Regexes: the library's are Oniguruma regexes with \\p{L} (and its parts \\p{Lu}, \\p{Ll}, \\p{Lt},
\\p{Lm}, \\p{Lo}), \\p{M}, \\p{N}, \\p{P}, \\p{S} and a Unicode \\s, which Python's `re` lacks (and
its \\s also takes \\x1c-\\x1f). They are rewritten with the classes of regex_classes.py and the
\\s below, written out as code point ranges read from the library, since Python's Unicode
database changes with the interpreter.
"""

import bisect
import functools
import heapq
import re
import unicodedata

from .precompiled import Precompiled
from .regex_classes import (CLASSES, NUMERIC_BEYOND_N, PARTS, STRIPPED_MARKS, UNICODE_SCRIPTS,
                            class_spec, script_ranges)
from .encoding import Encoding, TokenizerBase
from .unigram import UnigramModel
from .wordpiece import (PUNCTUATION_CLASS, WORD_CLASS, _AddedTokens, _char_class, _check_text,
                        _ranges, _split_added, cls_sep_processing, library_lowercase,
                        library_normalize, template_processing)

WORD_CACHE_SIZE = 1 << 16   # words whose ids are remembered

# Code point ranges (hex, "a-b" or "a") of the library's \s; its \p{..} classes are
# regex_classes.py's.
_SPACE = (
    "9-d 20 85 a0 1680 2000-200a 2028-2029 202f 205f 3000 "
)


_CLASS_BODIES = {name: _char_class(class_spec(name)) for name in (*CLASSES, *PARTS)}
_SPACE_BODY = _char_class(_SPACE)
_NUMERIC = re.compile(f"[{_char_class(class_spec('N') + ' ' + NUMERIC_BEYOND_N)}]")
_SPACE_RUN = re.compile(f"[{_SPACE_BODY}]*")
_TRAILING_SPACE_RUN = re.compile(f"[{_SPACE_BODY}]*\\Z")

# GPT-2's split, what ByteLevel uses when use_regex is true.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def translate_regex(pattern):
    """A tokenizer.json (Oniguruma) regex as a Python `re` pattern: \\p{..} (L, Lu, Ll, Lt, Lm,
    Lo, M, N, P, S), \\P{..}, \\s and \\S become the library's classes; other class escapes
    are refused."""
    out, i, in_class, n = [], 0, False, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            e = pattern[i + 1]
            if e in "pP":
                m = re.match(r"\{\^?(\w+)\}", pattern[i + 2:])
                name = m and m.group(1)
                if name not in _CLASS_BODIES:
                    raise ValueError(f"unsupported regex class {pattern[i:i + 2 + (m.end() if m else 1)]!r}"
                                     f" in tokenizer.json (supported: {', '.join(sorted(_CLASS_BODIES))}, \\s, \\S)")
                negate = (e == "P") != ("^" in m.group(0))
                body = _CLASS_BODIES[name]
                i += 2 + m.end()
            elif e in "sS":
                negate, body = e == "S", _SPACE_BODY
                i += 2
            elif e in "dDwWhHbBRXk" or e.isdigit() and e != "0":
                raise ValueError(f"unsupported regex escape '\\{e}' in tokenizer.json pattern "
                                 f"{pattern!r}")
            else:
                out.append(pattern[i:i + 2])
                i += 2
                continue
            if in_class:
                if negate:
                    raise ValueError(f"unsupported negated class inside [...] in {pattern!r}")
                out.append(body)
            else:
                out.append(f"[{'^' if negate else ''}{body}]")
            continue
        if c == "[":
            if in_class:
                raise ValueError(f"unsupported nested character class in regex {pattern!r}")
            in_class = True
            out.append(c)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):     # a leading ] is a literal
                out.append("\\]")
                i += 1
            continue
        if c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return re.compile("".join(out))


def _pattern(spec):
    """A Split/Replace pattern: {"String": s} or {"Regex": r}."""
    if "String" in spec:
        return re.compile(re.escape(spec["String"]))
    if "Regex" in spec:
        return translate_regex(spec["Regex"])
    raise ValueError(f"unsupported pattern {spec!r}")


def _segments(text, pattern, invert=False):
    """The library's find_matches: (start, end, is_match) covering text, empty matches
    included; `invert` (its Invert pattern): what is between the matches is the match."""
    if not text:
        return [(0, 0, invert)]
    out, prev = [], 0
    for m in pattern.finditer(text):
        start, end = m.span()
        if prev != start:
            out.append((prev, start, invert))
        out.append((start, end, not invert))
        prev = end
    if prev != len(text):
        out.append((prev, len(text), invert))
    return out


def _split_spans(text, pattern, behavior, invert=False):
    """The library's NormalizedString.split: (start, end) of the non-empty pieces of text.
    Pieces are spans rather than strings so that offsets can follow them."""
    segments = _segments(text, pattern, invert)
    if behavior == "Isolated":
        pieces = [(a, b) for a, b, _ in segments]
    elif behavior == "Removed":
        pieces = [(a, b) for a, b, is_match in segments if not is_match]
    elif behavior == "MergedWithPrevious":
        pieces, previous_match = [], False
        for a, b, is_match in segments:
            if is_match and not previous_match and pieces:
                pieces[-1] = (pieces[-1][0], b)
            else:
                pieces.append((a, b))
            previous_match = is_match
    elif behavior == "MergedWithNext":
        pieces, next_match = [], False
        for a, b, is_match in reversed(segments):
            if is_match and not next_match and pieces:
                pieces[-1] = (a, pieces[-1][1])
            else:
                pieces.append((a, b))
            next_match = is_match
        pieces.reverse()
    elif behavior == "Contiguous":
        pieces, previous_match = [], False
        for a, b, is_match in segments:
            if is_match and previous_match:
                pieces[-1] = (pieces[-1][0], b)
            else:
                pieces.append((a, b))
            previous_match = is_match
    else:
        raise ValueError(f"unsupported Split behavior {behavior!r}")
    return [(a, b) for a, b in pieces if a < b]


def bytes_to_unicode():
    """GPT-2's map of the 256 bytes to printable characters (byte -> str)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_BYTE_CHARS = bytes_to_unicode()

_CHAR_BYTES = {c: b for b, c in _BYTE_CHARS.items()}


def _byte_level(text):
    """UTF-8 bytes of text, each as its GPT-2 character."""
    return text.encode("utf-8").decode("latin-1").translate(_BYTE_CHARS)


# ---- the pipeline's parts, read from tokenizer.json -----------------------------------------

_UNICODE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


# What StripAccents removes: the library's combining marks (regex_classes.py)
_STRIPPED_MARKS = re.compile(f"[{_char_class(STRIPPED_MARKS)}]+")


_WHITESPACE_RUN = re.compile(f"[{_SPACE_BODY}]+")
_PUNCTUATION = re.compile(f"[{PUNCTUATION_CLASS}]")
# The Whitespace pre-tokenizer's words: \w+|[^\w\s]+ with its own \w (wordpiece.WORD_CLASS)
_WHITESPACE_WORDS = re.compile(f"[{WORD_CLASS}]+|[^{WORD_CLASS}{_SPACE_BODY}]+")
_SCRIPT_RANGES = script_ranges(UNICODE_SCRIPTS)
_SCRIPT_FIRSTS = [first for first, _, _ in _SCRIPT_RANGES]


def _script(ch):
    """The UnicodeScripts pre-tokenizer's script of a character, None for Any."""
    k = bisect.bisect_right(_SCRIPT_FIRSTS, ord(ch)) - 1
    return _SCRIPT_RANGES[k][2] if k >= 0 and ord(ch) <= _SCRIPT_RANGES[k][1] else None


def _unicode_scripts(words, at_start):
    """A piece wherever the script changes (Any characters join the piece they are in); as in
    the library, Any characters before a word's first scripted one are dropped, and a word of
    Any characters alone gives no piece."""
    out = []
    for word, align in words:
        cuts, last = [], None
        for i, ch in enumerate(word):
            script = _script(ch)
            if script is not None and script != last:
                cuts.append(i)
                last = script
        cuts.append(len(word))
        out += [(word[a:b], _part(align, a, b)) for a, b in zip(cuts, cuts[1:])]
    return out


def pre_tokenizer_of(spec):
    """A (words, at_start) -> words function for a pre-tokenizer spec. Each word is a pair
    (text, align): align is None where offsets are not asked for, else for each character the
    (start, end) range of original characters it stands for (as the normalizers carry it).
    at_start: the first word begins the original text (Metaspace's prepend_scheme
    "first" needs it; where align is kept, it tells that instead)."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [pre_tokenizer_of(s) for s in spec["pretokenizers"]]

        def sequence(words, at_start):
            for f in steps:
                words = f(words, at_start)
            return words
        return sequence
    if kind == "ByteLevel":
        prefix = spec.get("add_prefix_space", True)
        regex = translate_regex(GPT2_PATTERN) if spec.get("use_regex", True) else None

        def byte_level(words, at_start):
            out = []
            for word, align in words:
                if prefix and not word.startswith(" "):
                    word, align = " " + word, None if align is None else align[:1] + align
                if regex is None:
                    out.append(_byte_level_aligned(word, align))
                else:
                    out += [_byte_level_aligned(word[a:b], _part(align, a, b))
                            for a, b in _split_spans(word, regex, "Isolated")]
            return out
        return byte_level
    if kind == "Split":
        return _splitter(_pattern(spec["pattern"]), spec.get("behavior", "Isolated"),
                         bool(spec.get("invert", False)))
    if kind == "Whitespace":        # the words kept, what is between them removed
        return _splitter(_WHITESPACE_WORDS, "Removed", invert=True)
    if kind == "BertPreTokenizer":  # at whitespace (removed), then each punctuation mark alone
        return pre_tokenizer_of({"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"}]})
    if kind == "CharDelimiterSplit":
        delimiter = spec.get("delimiter")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"CharDelimiterSplit's delimiter must be one character, got {delimiter!r}")
        return _splitter(re.compile(re.escape(delimiter)), "Removed")
    if kind == "UnicodeScripts":
        return _unicode_scripts
    if kind == "FixedLength":       # pieces of `length` characters
        length = spec.get("length", 5)
        if type(length) is not int or length < 1:
            raise ValueError(f"FixedLength's length must be a positive integer, got {length!r}")

        def fixed(words, at_start):
            return [(word[a:a + length], _part(align, a, a + length)) for word, align in words
                    for a in range(0, len(word), length)]
        return fixed
    if kind == "Digits":    # each number, or each run of them, a word of its own (SmolLM2)
        return _splitter(_NUMERIC, "Isolated" if spec.get("individual_digits") else "Contiguous")
    if kind == "Metaspace":
        replacement = spec.get("replacement", "▁")
        scheme = spec.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise ValueError(f"unsupported Metaspace prepend_scheme {scheme!r}")
        do_split = spec.get("split", True)
        regex = re.compile(re.escape(replacement))

        def metaspace(words, at_start):
            out = []
            for k, (word, align) in enumerate(words):
                word = word.replace(" ", replacement)
                first = at_start and k == 0 if align is None else bool(align) and align[0][0] == 0
                if not word.startswith(replacement) and (
                        scheme == "always" or scheme == "first" and first):
                    word, align = replacement + word, None if align is None else align[:1] + align
                if do_split:
                    out += [(word[a:b], _part(align, a, b))
                            for a, b in _split_spans(word, regex, "MergedWithNext")]
                else:
                    out.append((word, align))
            return out
        return metaspace
    if kind == "WhitespaceSplit":
        return _splitter(_WHITESPACE_RUN, "Removed")
    if kind == "Punctuation":   # DeBERTa-v2's split_by_punct: BERT's punctuation characters
        return _splitter(_PUNCTUATION, spec.get("behavior", "Isolated"))
    raise ValueError(f"unsupported pre_tokenizer {kind!r} in tokenizer.json (supported: Sequence, "
                     "ByteLevel, Split, Digits, Metaspace, Whitespace, WhitespaceSplit, "
                     "BertPreTokenizer, Punctuation, CharDelimiterSplit, FixedLength, "
                     "UnicodeScripts)")


def _splitter(regex, behavior, invert=False):
    """A pre-tokenizer cutting each word where `regex` matches (with `invert`, where it does
    not), as `behavior` says."""
    _split_spans("", regex, behavior)     # refuse an unknown behavior now

    def split(words, at_start):
        return [(word[a:b], _part(align, a, b)) for word, align in words
                for a, b in _split_spans(word, regex, behavior, invert)]
    return split


def _part(align, start, end):
    """The alignment of word[start:end] (None stays None: offsets are not being kept)."""
    return None if align is None else align[start:end]


def _prepends_first(spec):
    """Whether a pre-tokenizer spec holds a Metaspace with prepend_scheme "first"."""
    if spec is None:
        return False
    if spec.get("type") == "Sequence":
        return any(map(_prepends_first, spec["pretokenizers"]))
    return spec.get("type") == "Metaspace" and spec.get("prepend_scheme") == "first"


# ---- normalizers, keeping each character's place in the original text where asked ----------
#
# Offsets need to know where every character of every word came from: the normalizers and
# pre-tokenizers carry, beside each string, an `align` list: for each of its characters the
# (start, end) range of original characters it stands for; None where offsets are not asked
# for.

def _unicode_aligned(form):
    """NFC/NFD/NFKC/NFKD with alignment. Normalization is local: the text is cut before each
    starter (combining class 0), and neighbouring pieces are joined where normalizing them
    apart differs from normalizing them together (Hangul jamo, compositions across starters).
    Each piece that changes maps all its output characters to its whole original range."""
    normalize = library_normalize

    def aligned(text, align):
        if unicodedata.is_normalized(form, text) and normalize(form, text) == text:
            return text, align
        cuts = [k for k in range(1, len(text)) if not unicodedata.combining(text[k])]
        groups = []
        for a, b in zip([0] + cuts, cuts + [len(text)]):
            if groups:
                ga, gb = groups[-1]
                g, c = text[ga:gb], text[a:b]
                if normalize(form, g + c) != normalize(form, g) + normalize(form, c):
                    groups[-1] = (ga, b)
                    continue
            groups.append((a, b))
        out, out_align = [], []
        for a, b in groups:
            piece = text[a:b]
            normal = normalize(form, piece)
            out.append(normal)
            if normal == piece:
                out_align += align[a:b]
            else:
                out_align += [(align[a][0], align[b - 1][1])] * len(normal)
        return "".join(out), out_align
    return aligned


def normalizer_of(spec):
    """A (text, align) -> (text, align) function for a normalizer spec (None: identity). align:
    for each character of text the (start, end) range of original characters it stands for,
    or None where offsets are not asked for; then none is computed (the plain path stays as
    fast as str methods: replace, unicodedata.normalize, lower)."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [f for f in map(normalizer_of, spec["normalizers"]) if f is not None]

        def sequence(text, align):
            for f in steps:
                text, align = f(text, align)
            return text, align
        return sequence
    if kind == "Prepend":
        prepend = spec["prepend"]
        return lambda text, align: (prepend + text, align and align[:1] * len(prepend) + align) \
            if text else (text, align)
    if kind == "Replace":
        content, pattern = spec["content"], spec["pattern"]
        regex = _pattern(pattern)
        plain = (lambda text, old=pattern["String"]: text.replace(old, content)) if "String" in pattern \
            else (lambda text, escaped=content.replace("\\", "\\\\"): regex.sub(escaped, text))

        def replace(text, align):
            if align is None:
                return plain(text), None
            out, out_align, prev = [], [], 0
            for m in regex.finditer(text):
                a, b = m.span()
                out.append(text[prev:a])
                out_align += align[prev:a]
                out.append(content)
                if a == b:      # an empty match inserts content between characters
                    at = align[a][0] if a < len(align) else align[-1][1] if align else 0
                    out_align += [(at, at)] * len(content)
                else:   # the library ties the new text to the match's last character
                    out_align += [align[b - 1]] * len(content)
                prev = b
            out.append(text[prev:])
            out_align += align[prev:]
            return "".join(out), out_align
        return replace
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)

        def strip(text, align):
            a, b = 0, len(text)
            if left:
                a = _SPACE_RUN.match(text).end()
            if right:
                b = max(a, _TRAILING_SPACE_RUN.search(text).start())
            return text[a:b], _part(align, a, b)
        return strip
    if kind in _UNICODE_FORMS:
        aligned = _unicode_aligned(kind)
        return lambda text, align: (library_normalize(kind, text), None) if align is None \
            else aligned(text, align)
    if kind == "Precompiled":
        charsmap = Precompiled(spec.get("precompiled_charsmap"))
        return lambda text, align: (charsmap.normalize(text), None) if align is None \
            else charsmap.normalize_aligned(text, align)
    if kind in ("Lowercase", "StripAccents"):
        plain = library_lowercase if kind == "Lowercase" else \
            (lambda text: _STRIPPED_MARKS.sub("", text))

        def per_character(text, align):
            if align is None:
                return plain(text), None
            out, out_align = [], []
            for c, a in zip(text, align):
                new = plain(c)
                out.append(new)
                out_align += [a] * len(new)
            return "".join(out), out_align
        return per_character
    raise ValueError(f"unsupported normalizer {kind!r} in tokenizer.json "
                     "(supported: Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD, "
                     "Precompiled, Lowercase, StripAccents)")


def _byte_level_aligned(piece, align):
    """(piece byte-level mapped, its alignment: each character's for each of its bytes)."""
    text = _byte_level(piece)
    if align is None or len(text) == len(piece):
        return text, align
    out_align = []
    for c, a in zip(piece, align):
        n = len(c.encode("utf-8"))
        out_align += [a] * n
    return text, out_align


def _byte_fallback(tokens):
    out, pending = [], bytearray()
    for token in tokens:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                pending.append(int(token[3:5], 16))
                continue
            except ValueError:
                pass
        if pending:
            out += _decode_bytes(pending)
            pending = bytearray()
        out.append(token)
    if pending:
        out += _decode_bytes(pending)
    return out


def _decode_bytes(data):
    try:
        return [data.decode("utf-8")]
    except UnicodeDecodeError:
        return ["\ufffd"] * len(data)


def _byte_level_decode(tokens):
    data = bytearray()
    for token in tokens:
        try:
            data += bytes(_CHAR_BYTES[c] for c in token)
        except KeyError:
            data += token.encode("utf-8")
    return [data.decode("utf-8", errors="replace")]


def _decoder(spec):
    """A list-of-str -> list-of-str function (the library's decode_chain) for a decoder spec."""
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [_decoder(s) for s in spec["decoders"]]

        def sequence(tokens):
            for f in steps:
                tokens = f(tokens)
            return tokens
        return sequence
    if kind == "ByteLevel":
        return _byte_level_decode
    if kind == "ByteFallback":
        return _byte_fallback
    if kind == "Fuse":
        return lambda tokens: ["".join(tokens)]
    if kind == "Replace":
        content, pattern = spec["content"], spec["pattern"]
        if "String" not in pattern:
            raise ValueError("unsupported Replace decoder with a Regex pattern")
        old = pattern["String"]
        return lambda tokens: [t.replace(old, content) for t in tokens]
    if kind == "Strip":
        content, start, stop = spec["content"], spec.get("start", 0), spec.get("stop", 0)

        def strip(tokens):
            out = []
            for t in tokens:
                a = 0
                while a < start and a < len(t) and t[a] == content:
                    a += 1
                b = len(t)
                while len(t) - b < stop and b > a and t[b - 1] == content:
                    b -= 1
                out.append(t[a:b])
            return out
        return strip
    if kind == "Metaspace":
        replacement = spec.get("replacement", "▁")
        scheme = spec.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if spec.get("add_prefix_space", True) else "never"

        def metaspace(tokens):
            out = []
            for k, t in enumerate(tokens):
                t = t.replace(replacement, " ")
                if k == 0 and scheme != "never" and t.startswith(" "):
                    t = t[1:]
                out.append(t)
            return out
        return metaspace
    raise ValueError(f"unsupported decoder {kind!r} in tokenizer.json (supported: Sequence, "
                     "ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)")


# What trim_offsets counts as space: the byte-level space "Ġ" and the library's whitespace.
_TRIM_CHARS = "Ġ" + "".join(chr(c) for a, b in _ranges(_SPACE) for c in range(a, b + 1))


class BPEEncoding(Encoding):
    """An Encoding that may also carry `offsets`: per token the (start, end) character range
    of the input it came from, or None where encode() was not asked for them."""

    __slots__ = ("offsets",)

    def __init__(self, ids, type_ids, attention_mask, names, tokens=None, offsets=None):
        super().__init__(ids, type_ids, attention_mask, names, tokens)
        self.offsets = offsets


_BOS_NAMES = ("<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>")
_EOS_NAMES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>")


class SubwordTokenizer(TokenizerBase):
    """A tokenizer read from a Hugging Face tokenizer.json whose model is byte-pair encoding
    (BPE) or SentencePiece's unigram language model (Unigram: T5, mT5, ALBERT, XLNet). The
    pipeline around the model is the same; only how a word becomes ids differs."""

    def __init__(self, config):
        model = config.get("model") or {}
        kind = model.get("type")
        self._unigram = None
        if kind == "BPE":
            self._read_bpe(model)
        elif kind == "Unigram":
            self._read_unigram(model)
        else:
            raise ValueError(f"tokenizer.json describes a {kind!r} model; this tokenizer reads "
                             "BPE and Unigram models")
        self._byte_id_set = {i for i in self._byte_ids if i is not None} \
            if self._byte_fallback else set()
        self._normalize = normalizer_of(config.get("normalizer"))
        self._pre_tokenize = pre_tokenizer_of(config.get("pre_tokenizer"))
        # Metaspace's prepend_scheme "first" prepends to a word that begins the original text:
        # after a normalizer or another pre-tokenizer (which may drop the first characters),
        # only alignment tells which word that is.
        pre = config.get("pre_tokenizer")
        self._prepends_first = _prepends_first(pre) and (
            config.get("normalizer") is not None or pre.get("type") == "Sequence")
        self._model_names = None     # id -> model vocabulary entry, built when offsets need it
        decoder = config.get("decoder")
        self._decode = None if decoder is None else _decoder(decoder)

        unigram = self._unigram
        self._read_added_tokens(config, self._normalize and self.normalize, _AddedTokens,
                                None if unigram is None else dict(enumerate(unigram.pieces)),
                                None if unigram is None else len(unigram.pieces))

        self._read_post_processor(config.get("post_processor"))
        self._read_truncation(config.get("truncation"))
        padding = config.get("padding") or {}
        self.pad_id = padding.get("pad_id")             # chat models' files often define none
        self.pad_token = padding.get("pad_token")
        self._read_padding(padding)
        # Per-instance cache of word -> ids: most of the time goes to words seen before.
        self._word_ids = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(
            self._bpe if self._unigram is None else self._unigram.word_ids)
        if self._unigram is not None:
            self._word_unknown_names = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(
                self._unigram.unknown_names)

    def _read_bpe(self, model):
        for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(option):
                raise ValueError(f"unsupported BPE option {option}={model[option]!r}")
        self._model_vocab = model["vocab"]
        self._byte_fallback = bool(model.get("byte_fallback"))
        self._fuse_unk = bool(model.get("fuse_unk"))
        self._ignore_merges = bool(model.get("ignore_merges"))
        self.unk_token = model.get("unk_token")
        self.unk_id = self._model_vocab.get(self.unk_token)
        # An unknown token the vocabulary lacks is an error only for a text that needs it (a
        # byte-level model never does), as in the library.
        self._missing_unk = self.unk_token if self.unk_id is None else None
        # (left id, right id) -> (rank, merged id); the lowest rank merges first.
        self._merges = {}
        for rank, merge in enumerate(model.get("merges") or []):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            ids = self._model_vocab.get(left), self._model_vocab.get(right)
            merged = self._model_vocab.get(left + right)
            if None in ids or merged is None:
                raise ValueError(f"merge {left!r} + {right!r} uses tokens not in the vocabulary")
            self._merges.setdefault(ids, (rank, merged))
        self._byte_ids = [self._model_vocab.get(f"<0x{b:02X}>") for b in range(256)]

    def _read_unigram(self, model):
        unigram = self._unigram = UnigramModel(model)
        self._model_vocab = unigram.vocab
        self._byte_fallback = unigram.byte_fallback
        self._fuse_unk = True
        self._merges = {}
        self.unk_token, self.unk_id = unigram.unk_token, unigram.unk_id
        self._missing_unk = None
        self._byte_ids = unigram.byte_ids or [None] * 256

    # ---- construction (from_file, from_json: TokenizerBase's) ----------------------------

    def _read_post_processor(self, processor):
        kind = processor and processor.get("type")
        # The ByteLevel processor's trim_offsets moves offsets past a token's leading and
        # trailing spaces (GPT-2's file sets it; Llama-3's and Qwen2's do not).
        # RobertaProcessing carries the same two fields
        byte_levels = [processor] if kind in ("ByteLevel", "RobertaProcessing") else \
            [p for p in processor["processors"] if p.get("type") == "ByteLevel"] \
            if kind == "Sequence" else []
        trimming = [p for p in byte_levels if p.get("trim_offsets", True)]
        self._trim_offsets = bool(trimming)
        self._trim_prefix_space = bool(trimming) and trimming[0].get("add_prefix_space", True)
        if kind == "Sequence":
            templates = [p for p in processor["processors"] if p.get("type") != "ByteLevel"]
            if len(templates) > 1:
                raise ValueError("unsupported post_processor Sequence of "
                                 f"{[p.get('type') for p in templates]}")
            processor = templates[0] if templates else None
            kind = processor and processor.get("type")
        if kind is None or kind == "ByteLevel":     # ByteLevel only trims offsets
            single, pair = [(None, "A", 0)], [(None, "A", 0), (None, "B", 1)]
        elif kind == "TemplateProcessing":
            single, pair = template_processing(processor)
        elif kind in ("RobertaProcessing", "BertProcessing"):
            single, pair = cls_sep_processing(processor)
        else:
            raise ValueError(f"unsupported post_processor {kind!r} in tokenizer.json "
                             "(supported: TemplateProcessing, RobertaProcessing, BertProcessing, "
                             "ByteLevel, Sequence)")
        self._templates = {False: single, True: pair}
        self._n_special = {is_pair: sum(len(ids) for ids, _, _ in t if ids)
                           for is_pair, t in self._templates.items()}
        a = next(k for k, (_, name, _) in enumerate(single) if name == "A")
        before = [i for ids, _, _ in single[:a] if ids for i in ids]
        after = [i for ids, _, _ in single[a + 1:] if ids for i in ids]
        # BOS/EOS: what the template puts around the text, else the usual names.
        self.bos_id = before[0] if before else self._named(_BOS_NAMES)
        self.eos_id = after[-1] if after else self._named(_EOS_NAMES)

    def _named(self, names):
        return next((self._vocab[n] for n in names if n in self._vocab), None)

    # ---- the pipeline -------------------------------------------------------------------

    def normalize(self, text):
        return self._normalize(text, None)[0] if self._normalize is not None else text

    def pre_tokenize(self, text, at_start=True):
        """The words of (normalized) text, byte-level mapped where the model is byte-level."""
        if self._pre_tokenize is None:
            return [text] if text else []
        return [word for word, _ in self._pre_tokenize([(text, None)], at_start)]

    def _symbols(self, word):
        """Ids of a word's characters: their vocabulary entries, <0xNN> byte tokens for the
        others (byte_fallback), else the unknown token (runs of them fused with fuse_unk)."""
        vocab, ids, unk = self._model_vocab, [], 0     # unk: unknown characters pending
        for ch in word:
            i = vocab.get(ch)
            if i is not None:
                if unk:
                    ids.append(self.unk_id)
                    unk = 0
                ids.append(i)
                continue
            if self._byte_fallback:
                byte_ids = [self._byte_ids[b] for b in ch.encode("utf-8")]
                if None not in byte_ids:
                    ids += byte_ids
                    continue
            if self._missing_unk is not None:
                raise ValueError(f"{ch!r} is not in the vocabulary, and neither is the unknown "
                                 f"token {self._missing_unk!r} that should stand for it")
            if self.unk_id is not None:
                if unk and not self._fuse_unk:
                    ids.append(self.unk_id)
                unk = 1
        if unk:
            ids.append(self.unk_id)
        return ids

    def _bpe(self, word):
        """Ids of one word: its characters merged pair by pair, lowest rank first (leftmost
        first among equal ranks), as the library's priority queue does."""
        if self._ignore_merges:
            i = self._model_vocab.get(word)
            if i is not None:
                return (i,)
        c = self._symbols(word)
        n = len(c)
        merges = self._merges
        if n < 2:
            return tuple(c)
        if n == 2:
            m = merges.get((c[0], c[1]))
            return (m[1],) if m else tuple(c)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for k in range(n - 1):
            m = merges.get((c[k], c[k + 1]))
            if m is not None:
                heap.append((m[0], k, m[1]))
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            rank, pos, new = pop(heap)
            if not alive[pos]:
                continue
            j = nxt[pos]
            if j < 0:
                continue
            m = merges.get((c[pos], c[j]))
            if m is None or m[1] != new:    # an entry gone stale
                continue
            c[pos] = new
            alive[j] = False
            k = nxt[j]
            nxt[pos] = k
            if k >= 0:
                prv[k] = pos
                m = merges.get((new, c[k]))
                if m is not None:
                    push(heap, (m[0], pos, m[1]))
            p = prv[pos]
            if p >= 0:
                m = merges.get((c[p], new))
                if m is not None:
                    push(heap, (m[0], p, m[1]))
        out, k = [], 0
        while k >= 0:
            out.append(c[k])
            k = nxt[k]
        return tuple(out)

    def _text_ids(self, text, with_offsets=False):
        """(ids, token strings, offsets) of one text, without special tokens, truncation or
        padding. Token strings: None unless some differ from the vocabulary's (an added token
        named by the text it matched, with the whitespace lstrip/rstrip took). Offsets, where
        asked for (else None): per token the (start, end) range of characters of `text` it
        came from, the library's offsets; a token holding part of a character's UTF-8 bytes
        gets that whole character, an added token what it matched (with that whitespace).
        Alignment is kept only for offsets, or where Metaspace's prepend_scheme "first" needs
        it (see __init__)."""
        aligned = with_offsets or self._prepends_first
        ids, offsets, renamed, at_start = [], [], [], True
        for piece, added_id, pos in _split_added(text, self._raw_added):
            end = pos + len(piece)
            if added_id is not None:
                renamed.append((len(ids), piece))
                ids.append(added_id)
                offsets.append((pos, end))
                at_start = False
                continue
            align = [(k, k + 1) for k in range(pos, end)] if aligned else None
            if self._normalize is not None:
                piece, align = self._normalize(piece, align)
            for part, added_id, part_pos in _split_added(piece, self._normalized_added):
                part_align = _part(align, part_pos, part_pos + len(part))
                if added_id is not None:
                    renamed.append((len(ids), part))
                    ids.append(added_id)
                    offsets.append((part_align[0][0], part_align[-1][1]) if part_align
                                   else (pos, pos))
                elif part:
                    words = [(part, part_align)]
                    if self._pre_tokenize is not None:
                        words = self._pre_tokenize(words, at_start)
                    for word, word_align in words:
                        word_ids = self._word_ids(word)
                        if self._unigram is not None and self.unk_id in word_ids:
                            renamed += self._unknown_names(word, word_ids, len(ids))
                        ids.extend(word_ids)
                        if with_offsets:
                            offsets += [(word_align[a][0], word_align[b - 1][1])
                                        for a, b in self._token_spans(word, word_ids)]
                at_start = False
            at_start = False
        renamed = [(k, name) for k, name in renamed if name != self._names[ids[k]]]
        names = None
        if renamed or with_offsets and self._trim_offsets:
            names = [self._names[i] for i in ids]
            for k, name in renamed:
                names[k] = name
        if with_offsets and self._trim_offsets:
            offsets = self._trimmed(names, offsets)
        return ids, (names if renamed else None), (offsets if with_offsets else None)

    def _unknown_names(self, word, ids, first):
        """(index, name) of a Unigram word's unknown tokens, numbered from `first`."""
        return [(first + k, name) for k, name in self._word_unknown_names(word)]

    def _token_spans(self, word, ids):
        """(start, end) of each token of a word in the word's characters: a vocabulary entry
        covers its own text, a <0xNN> byte token the character its byte belongs to, the
        unknown token the character (with fuse_unk, the run of characters) it replaced."""
        if self._unigram is not None:
            return self._unigram.token_spans(word)
        names = self._model_names
        if names is None:
            names = self._model_names = {i: t for t, i in self._model_vocab.items()}
        spans, pos, n_bytes = [], 0, 0
        for i in ids:
            name = names.get(i)
            if not n_bytes and self.unk_id is None:
                while pos < len(word) and self._is_unknown(word[pos]):
                    pos += 1        # no unknown token: the character gives no token
            end = None if n_bytes or name is None else self._symbol_end(name, word, pos)
            if end is not None:
                spans.append((pos, end))
                pos = end
            elif i in self._byte_id_set:
                spans.append((pos, pos + 1))
                n_bytes += 1
                if n_bytes == len(word[pos].encode("utf-8")):
                    pos, n_bytes = pos + 1, 0
            elif i == self.unk_id:
                end = pos + 1
                while self._fuse_unk and end < len(word) and self._is_unknown(word[end]):
                    end += 1
                spans.append((pos, end))
                pos = end
            else:
                raise AssertionError(f"token {name!r} does not match word {word!r} at {pos}")
        return spans

    def _symbol_end(self, name, word, pos):
        """Where a vocabulary entry `name` ends if it begins at word[pos], or None. Its name is
        the characters it covers, but that the library merges the unknown token's symbol as
        any other (an entry such as "<unk>d" covers an unknown character, with fuse_unk a run
        of them, then "d"), and that without an unknown token an unknown character gives no
        symbol at all (so "▁don't" may cover "▁ڷdon't")."""
        if word.startswith(name, pos):
            return pos + len(name)
        unk, dropped = self.unk_token, self.unk_id is None
        if not dropped and (not unk or unk not in name):
            return None
        j = 0
        while j < len(name):
            unknown = pos < len(word) and self._is_unknown(word[pos])
            if unknown and dropped:
                pos += 1
            elif unknown and name.startswith(unk, j):
                pos += 1
                while self._fuse_unk and pos < len(word) and self._is_unknown(word[pos]):
                    pos += 1
                j += len(unk)
            elif pos < len(word) and name[j] == word[pos]:
                j, pos = j + 1, pos + 1
            else:
                return None
        return pos

    def _is_unknown(self, ch):
        if ch in self._model_vocab:
            return False
        return not (self._byte_fallback and
                    None not in (self._byte_ids[b] for b in ch.encode("utf-8")))

    def _trimmed(self, tokens, offsets):
        """The ByteLevel post-processor's trim_offsets: offsets moved past the spaces ("Ġ"
        or whitespace) a token starts or ends with, but for the space add_prefix_space put
        before the first token."""
        out = []
        for k, (token, (start, end)) in enumerate(zip(tokens, offsets)):
            lead = len(token) - len(token.lstrip(_TRIM_CHARS))
            trail = len(token) - len(token.rstrip(_TRIM_CHARS))
            if lead:
                if (k == 0 or start == 0) and self._trim_prefix_space and lead == 1:
                    lead = 0
                start = min(start + lead, end)
            if trail and end >= trail:
                end = max(end - trail, start)
            out.append((start, end))
        return out

    # ---- encoding -----------------------------------------------------------------------

    def encode(self, text, pair=None, add_special_tokens=True, max_length=None,
               truncation=True, return_offsets=False):
        """Encode a text (or a pair), with the template's special tokens (BOS for Llama) when
        add_special_tokens; truncated to `max_length` (default: tokenizer.json's, if any).

        return_offsets: also fill `encoding.offsets`, per token the (start, end) character
        range of the text (of the pair, for its tokens) it came from, as the library's
        `Encoding.offsets`; (0, 0) for the template's special tokens. Off by default: it
        costs about as much again as encoding."""
        sequences = {"A": self._text_ids(_check_text(text, "text"), return_offsets)}
        if pair is not None:
            sequences["B"] = self._text_ids(_check_text(pair, "pair"), return_offsets)
        template = self._templates[pair is not None]
        if not add_special_tokens:
            template = [(None, name, 0) for name in sequences]
        limit = self.max_length if max_length is None else max_length
        if truncation and limit is not None:
            n_special = sum(len(ids) for ids, _, _ in template if ids)
            kept = self._kept_lengths([len(ids) for ids, _, _ in sequences.values()], limit,
                                      n_special)
            sequences = {name: (self._cut(ids, n), tokens and self._cut(tokens, n),
                                offsets and self._cut(offsets, n))
                         for (name, (ids, tokens, offsets)), n in zip(sequences.items(), kept)}
        named = any(tokens is not None for _, tokens, _ in sequences.values())
        ids, type_ids, tokens = [], [], [] if named else None
        offsets = [] if return_offsets else None
        for special, sequence, type_id in template:
            if special is not None:
                part, part_tokens, part_offsets = special, None, [(0, 0)] * len(special)
            else:
                part, part_tokens, part_offsets = sequences[sequence]
            ids += part
            type_ids += [type_id] * len(part)
            if named:
                tokens += part_tokens or [self._names[i] for i in part]
            if return_offsets:
                offsets += part_offsets
        self._check_ids(ids, text)
        return BPEEncoding(ids, type_ids, [1] * len(ids), self._names, tokens, offsets)

    def encode_batch(self, texts, pairs=None, add_special_tokens=True, max_length=None,
                     padding="longest", pad_to_multiple_of=None, truncation=True,
                     return_offsets=False):
        """Encode many texts (and pairs), padded with `pad_id` (attention mask 0).

        padding: "longest", "max_length" (`max_length`, else tokenizer.json's) or None. Chat
        models' files often define no pad token: set `tok.pad_id` (e.g. to `tok.eos_id`).
        """
        return self._encode_batch(
            texts, pairs, lambda t, p: self.encode(t, p, add_special_tokens, max_length, truncation, return_offsets),
            padding, max_length, pad_to_multiple_of)

    # ---- decoding -----------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens=True):
        """Text back from ids through the file's decoder; unknown ids are dropped, special
        tokens too unless asked to keep them."""
        names, skip = self._names, self._special_ids if skip_special_tokens else ()
        tokens = [names[i] for i in ids
                  if 0 <= i < len(names) and names[i] is not None and i not in skip]
        if self._decode is None:
            return " ".join(tokens)
        return "".join(self._decode(tokens))

    def __repr__(self):
        model = "Unigram" if self._unigram is not None else f"BPE, merges={len(self._merges)}"
        return (f"SubwordTokenizer({model}, vocab_size={self.vocab_size}, "
                f"byte_fallback={self._byte_fallback})")


BPETokenizer = SubwordTokenizer     # the name it had when it read BPE models only
