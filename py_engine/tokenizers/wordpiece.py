"""WordPiece (BERT) tokenization in pure Python, giving the ids Hugging Face `tokenizers` gives.

This is our own implementation: the `tokenizers` library is compiled Rust and cannot run in the
browser (Pyodide has no build of it), and the engine must tokenize training text there. It is
tested against that library (tests/test_tokenizer_wordpiece.py): ids, type ids, attention masks
and tokens on thousands of varied strings with the real MiniLM tokenizer, truncation, padding,
decoding, and every Unicode code point through the normalizer and the word splitter.

    tok = WordPieceTokenizer.from_file("tokenizer.json")    # or .from_vocab("vocab.txt")
    enc = tok.encode("How are you?", pair="Fine.", max_length=128)
    enc.ids, enc.type_ids, enc.attention_mask, enc.tokens
    batch = tok.encode_batch(texts, padding="longest")      # padded with tok.pad_id, mask 0
    tok.decode(enc.ids)                                      # "how are you? fine."

The pipeline is the library's: added tokens ([CLS], [MASK]...) are cut out of the raw text; the
rest is normalized (BertNormalizer), split into words at whitespace and punctuation
(BertPreTokenizer), and each word is cut greedily into the longest vocabulary pieces (WordPiece);
then the sequences are truncated, wrapped in the template ([CLS] A [SEP] B [SEP]) and padded.

Unicode: the library classifies characters with its own tables, not Python's `unicodedata`.
Control/format characters, punctuation and nonspacing marks come from Unicode 8.0 tables, its
NFD does not know some newer characters, and its lowercasing follows Unicode 17. Python's
database changes with the interpreter (Unicode 14 in CPython 3.11, 16 in Pyodide's 3.14), so
the classes that matter are written out below as code point ranges read from the library; the
test checks every code point against it.
"""

import functools
import os
import re
import unicodedata

from ..formats.json_file import read_utf8
from .encoding import Encoding, TokenizerBase
from .tokenizer_file import TokenizerFileError
from .regex_classes import WHITESPACE_WORD

WORD_CACHE_SIZE = 1 << 16   # words whose pieces are remembered; text repeats words a lot

# Code point ranges (hex, "a-b" or "a") of the library's character classes.
# Removed by clean_text: Cc, Cf and Co of Unicode 8.0, with U+0000 and U+FFFD, minus \t \n \r.
_OTHER = (
    "0-8 b-c e-1f 7f-9f ad 600-605 61c 6dd 70f 180e 200b-200f 202a-202e 2060-2064 2066-206f "
    "e000-f8ff feff fff9-fffb fffd 110bd 1bca0-1bca3 1d173-1d17a e0001 e0020-e007f f0000-ffffd "
    "100000-10fffd")
# Unicode White_Space: clean_text maps what survives of it to " "; words split at all of it.
_WHITESPACE = "9-d 20 85 a0 1680 2000-200a 2028-2029 202f 205f 3000"
# Isolated by the word splitter: ASCII punctuation (which includes $+<=>^`|~) and Unicode 8.0 P*.
_PUNCTUATION = (
    "21-2f 3a-40 5b-60 7b-7e a1 a7 ab b6-b7 bb bf 37e 387 55a-55f 589-58a 5be 5c0 5c3 5c6 5f3-5f4 "
    "609-60a 60c-60d 61b 61e-61f 66a-66d 6d4 700-70d 7f7-7f9 830-83e 85e 964-965 970 af0 df4 e4f "
    "e5a-e5b f04-f12 f14 f3a-f3d f85 fd0-fd4 fd9-fda 104a-104f 10fb 1360-1368 1400 166d-166e "
    "169b-169c 16eb-16ed 1735-1736 17d4-17d6 17d8-17da 1800-180a 1944-1945 1a1e-1a1f 1aa0-1aa6 "
    "1aa8-1aad 1b5a-1b60 1bfc-1bff 1c3b-1c3f 1c7e-1c7f 1cc0-1cc7 1cd3 2010-2027 2030-2043 "
    "2045-2051 2053-205e 207d-207e 208d-208e 2308-230b 2329-232a 2768-2775 27c5-27c6 27e6-27ef "
    "2983-2998 29d8-29db 29fc-29fd 2cf9-2cfc 2cfe-2cff 2d70 2e00-2e2e 2e30-2e42 3001-3003 "
    "3008-3011 3014-301f 3030 303d 30a0 30fb a4fe-a4ff a60d-a60f a673 a67e a6f2-a6f7 a874-a877 "
    "a8ce-a8cf a8f8-a8fa a8fc a92e-a92f a95f a9c1-a9cd a9de-a9df aa5c-aa5f aade-aadf aaf0-aaf1 "
    "abeb fd3e-fd3f fe10-fe19 fe30-fe52 fe54-fe61 fe63 fe68 fe6a-fe6b ff01-ff03 ff05-ff0a "
    "ff0c-ff0f ff1a-ff1b ff1f-ff20 ff3b-ff3d ff3f ff5b ff5d ff5f-ff65 10100-10102 1039f 103d0 "
    "1056f 10857 1091f 1093f 10a50-10a58 10a7f 10af0-10af6 10b39-10b3f 10b99-10b9c 11047-1104d "
    "110bb-110bc 110be-110c1 11140-11143 11174-11175 111c5-111c9 111cd 111db 111dd-111df "
    "11238-1123d 112a9 114c6 115c1-115d7 11641-11643 1173c-1173e 12470-12474 16a6e-16a6f 16af5 "
    "16b37-16b3b 16b44 1bc9f 1da87-1da8b")
# Removed by strip_accents after NFD: Mn of Unicode 8.0.
_NONSPACING_MARKS = (
    "300-36f 483-487 591-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-65f 670 6d6-6dc 6df-6e4 6e7-6e8 "
    "6ea-6ed 711 730-74a 7a6-7b0 7eb-7f3 816-819 81b-823 825-827 829-82d 859-85b 8e3-902 93a 93c "
    "941-948 94d 951-957 962-963 981 9bc 9c1-9c4 9cd 9e2-9e3 a01-a02 a3c a41-a42 a47-a48 a4b-a4d "
    "a51 a70-a71 a75 a81-a82 abc ac1-ac5 ac7-ac8 acd ae2-ae3 b01 b3c b3f b41-b44 b4d b56 b62-b63 "
    "b82 bc0 bcd c00 c3e-c40 c46-c48 c4a-c4d c55-c56 c62-c63 c81 cbc cbf cc6 ccc-ccd ce2-ce3 d01 "
    "d41-d44 d4d d62-d63 dca dd2-dd4 dd6 e31 e34-e3a e47-e4e eb1 eb4-eb9 ebb-ebc ec8-ecd f18-f19 "
    "f35 f37 f39 f71-f7e f80-f84 f86-f87 f8d-f97 f99-fbc fc6 102d-1030 1032-1037 1039-103a "
    "103d-103e 1058-1059 105e-1060 1071-1074 1082 1085-1086 108d 109d 135d-135f 1712-1714 "
    "1732-1734 1752-1753 1772-1773 17b4-17b5 17b7-17bd 17c6 17c9-17d3 17dd 180b-180d 18a9 "
    "1920-1922 1927-1928 1932 1939-193b 1a17-1a18 1a1b 1a56 1a58-1a5e 1a60 1a62 1a65-1a6c "
    "1a73-1a7c 1a7f 1ab0-1abd 1b00-1b03 1b34 1b36-1b3a 1b3c 1b42 1b6b-1b73 1b80-1b81 1ba2-1ba5 "
    "1ba8-1ba9 1bab-1bad 1be6 1be8-1be9 1bed 1bef-1bf1 1c2c-1c33 1c36-1c37 1cd0-1cd2 1cd4-1ce0 "
    "1ce2-1ce8 1ced 1cf4 1cf8-1cf9 1dc0-1df5 1dfc-1dff 20d0-20dc 20e1 20e5-20f0 2cef-2cf1 2d7f "
    "2de0-2dff 302a-302d 3099-309a a66f a674-a67d a69e-a69f a6f0-a6f1 a802 a806 a80b a825-a826 "
    "a8c4 a8e0-a8f1 a926-a92d a947-a951 a980-a982 a9b3 a9b6-a9b9 a9bc a9e5 aa29-aa2e aa31-aa32 "
    "aa35-aa36 aa43 aa4c aa7c aab0 aab2-aab4 aab7-aab8 aabe-aabf aac1 aaec-aaed aaf6 abe5 abe8 "
    "abed fb1e fe00-fe0f fe20-fe2f 101fd 102e0 10376-1037a 10a01-10a03 10a05-10a06 10a0c-10a0f "
    "10a38-10a3a 10a3f 10ae5-10ae6 11001 11038-11046 1107f-11081 110b3-110b6 110b9-110ba "
    "11100-11102 11127-1112b 1112d-11134 11173 11180-11181 111b6-111be 111ca-111cc 1122f-11231 "
    "11234 11236-11237 112df 112e3-112ea 11300-11301 1133c 11340 11366-1136c 11370-11374 "
    "114b3-114b8 114ba 114bf-114c0 114c2-114c3 115b2-115b5 115bc-115bd 115bf-115c0 115dc-115dd "
    "11633-1163a 1163d 1163f-11640 116ab 116ad 116b0-116b5 116b7 1171d-1171f 11722-11725 "
    "11727-1172b 16af0-16af4 16b30-16b36 16f8f-16f92 1bc9d-1bc9e 1d167-1d169 1d17b-1d182 "
    "1d185-1d18b 1d1aa-1d1ad 1d242-1d244 1da00-1da36 1da3b-1da6c 1da75 1da84 1da9b-1da9f "
    "1daa1-1daaf 1e8d0-1e8d6 e0100-e01ef")
# Characters that Python's NFD (up to Unicode 16) decomposes or reorders but the library's NFD
# leaves alone as plain starters: newer canonical decompositions and newer combining classes.
_NFD_UNKNOWN = (
    "7fd 897-89f 8ca-8d3 9fe c3c d3b-d3c eba 1715 1abf-1ace 1df6-1dfa a82c 105c9 105e4 "
    "10d24-10d27 10d69-10d6d 10eab-10eac 10efd-10eff 10f46-10f50 10f82-10f85 11070 1133b 11383 "
    "11385 1138e 11391 113c5 113c7-113c8 113ce-113d0 1145e 11839-1183a 11938 1193d-1193e 11943 "
    "119e0 11a34 11a47 11a99 11d42 11d44-11d45 11d97 11f41-11f42 16121-16128 1612f 16d68-16d6a "
    "16ff0-16ff1 1e08f 1e130-1e136 1e2ae 1e2ec-1e2ef 1e4ec-1e4ef 1e5ee-1e5ef")
# Compatibility decompositions Python's NFKC and NFKD apply (Unicode 14 on the host, 16 in
# Pyodide) and the library's do not know: characters they leave alone, as unknown starters
# (with _NFD_UNKNOWN's).
_NFK_UNKNOWN = ("32ff a7f2-a7f4 ab69 10781-10785 10787-107b0 107b2-107ba 1ccd6-1ccf9 1e030-1e06d "
                "1f16c 1fbf0-1fbf9")
# Lowercase mappings of Unicode 15-17 that the library applies and older Pythons lack
# ("first-last:target" maps the range onto consecutive targets).
_LOWERCASE_ADDED = (
    "1c89:1c8a a7cb:264 a7cc:a7cd a7ce:a7cf a7d2:a7d3 a7d4:a7d5 a7da:a7db a7dc:19b "
    "10d50-10d65:10d70 16ea0-16eb8:16ebb")
# CJK ideographs that handle_chinese_chars surrounds with spaces (the library's list).
_CJK = "3400-4dbf 4e00-9fff f900-faff 20000-2a6df 2a700-2b73f 2b740-2b81f 2b920-2ceaf 2f800-2fa1f"


def _ranges(spec):
    """(first, last) code points of a range spec ("41-5a 61-7a aa ..."); a range cut in two
    ("bae- bb9", as a table split across lines once had) is refused, not read as one point."""
    for item in spec.split():
        first, sep, last = item.partition("-")
        if sep and not last:
            raise ValueError(f"malformed range {item!r}")
        yield int(first, 16), int(last or first, 16)


def _char_class(spec):
    """Body of a regex character class, e.g. "a-z0-9", for a range spec."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in _ranges(spec))


def _lowercase_table(spec):
    table = {}
    for item in spec.split():
        source, target = item.split(":")
        (first, last), = _ranges(source)
        for offset in range(last - first + 1):
            table[first + offset] = int(target, 16) + offset
    return table


_CONTROL_RE = re.compile(f"[{_char_class(_OTHER)}]+")
_SPACE_RE = re.compile(f"[{_char_class(_WHITESPACE)}]")
_MARKS_RE = re.compile(f"[{_char_class(_NONSPACING_MARKS)}]+")
_NFD_UNKNOWN_RE = re.compile(f"([{_char_class(_NFD_UNKNOWN)}])")
_NFK_UNKNOWN_RE = re.compile(f"([{_char_class(_NFD_UNKNOWN + ' ' + _NFK_UNKNOWN)}])")
_CJK_RE = re.compile(f"([{_char_class(_CJK)}])")
# the library's is_punc (BertPreTokenizer's, and the Punctuation pre-tokenizer's) as a class
PUNCTUATION_CLASS = _char_class(_PUNCTUATION)
# A word is one punctuation character or a run of anything but punctuation and whitespace.
_WORD_RE = re.compile(f"[{PUNCTUATION_CLASS}]|[^{PUNCTUATION_CLASS}{_char_class(_WHITESPACE)}]+")
_LOWERCASE_ADDED_TABLE = _lowercase_table(_LOWERCASE_ADDED)
_LOWERCASE_ADDED_RE = re.compile("[" + "".join(map(chr, _LOWERCASE_ADDED_TABLE)) + "]")
# The Rust regex crate's \w, which the library's single_word check uses: the Whitespace
# pre-tokenizer's word class (regex_classes.py, read from the library). Python's \w differs:
# it has No ("²") and lacks the marks; its Unicode tables are older or newer than the library's.
WORD_CLASS = _char_class(WHITESPACE_WORD)
_WORD_CHAR_RE = re.compile(f"[{WORD_CLASS}]")


def is_word_char(ch):
    return _WORD_CHAR_RE.match(ch) is not None

_TRAILING_SPACE = re.compile(f"[{_char_class(_WHITESPACE)}]*\\Z")
_LEADING_SPACE = re.compile(f"[{_char_class(_WHITESPACE)}]*")


def library_normalize(form, text):
    """Python's NFC, NFD, NFKC or NFKD, but leaving alone what the library's does not know
    (_NFD_UNKNOWN; for NFKC and NFKD also _NFK_UNKNOWN).

    Those characters act as unknown starters there: nothing decomposes, composes or reorders
    across them, so the form of the pieces between them, joined, is the library's of the whole.
    """
    unknown = _NFK_UNKNOWN_RE if form.startswith("NFK") else _NFD_UNKNOWN_RE
    if unknown.search(text) is None:
        return unicodedata.normalize(form, text)
    parts = unknown.split(text)
    return "".join(p if i % 2 else unicodedata.normalize(form, p) for i, p in enumerate(parts))


def _nfd(text):
    return library_normalize("NFD", text)


def library_lowercase(text):
    """The library's Lowercase: character by character (no final-sigma rule, which Python's
    str.lower has), with the mappings of Unicode versions newer than the interpreter's."""
    if _LOWERCASE_ADDED_RE.search(text):
        text = text.translate(_LOWERCASE_ADDED_TABLE)
    return text.lower() if "Σ" not in text else "".join(c.lower() for c in text)


def _split_added(text, added):
    return added.split(text) if added is not None else ((text, None, 0),)


def _check_text(value, name):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def template_processing(processor):
    """(single, pair) templates of a TemplateProcessing post-processor: lists of (special ids,
    None, type id) for special tokens and (None, sequence name "A"/"B", type id) for the text.
    A malformed one (a piece that is neither kind, a special token its map lacks, ids and
    tokens of different lengths) is a ValueError naming it, where the library refuses it."""
    specials = processor.get("special_tokens", {})
    if not isinstance(specials, dict):
        raise ValueError("post_processor.special_tokens must be an object")
    for name, token in specials.items():
        ids = token.get("ids") if isinstance(token, dict) else None
        tokens = token.get("tokens") if isinstance(token, dict) else None
        if not (isinstance(ids, list) and all(_is_u32(i) for i in ids) and isinstance(tokens, list)
                and len(tokens) == len(ids)):
            raise ValueError(f"post_processor.special_tokens[{name!r}] must hold as many ids "
                             f"(non-negative integers) as tokens")

    def compile_template(which):
        pieces = processor.get(which)
        if not isinstance(pieces, list):
            raise ValueError(f"post_processor.{which} must be a list of pieces")
        out = []
        for piece in pieces:
            kind = next(iter(piece)) if isinstance(piece, dict) and len(piece) == 1 else None
            fields = piece[kind] if kind in ("SpecialToken", "Sequence") else None
            name = fields.get("id") if isinstance(fields, dict) else None
            if not isinstance(name, str) or not _is_u32(fields.get("type_id")):
                raise ValueError(f"post_processor.{which}: {piece!r:.100} is not a piece "
                                 f"({{\"Sequence\": {{\"id\": \"A\", \"type_id\": 0}}}} or "
                                 f"{{\"SpecialToken\": {{\"id\": ..., \"type_id\": 0}}}})")
            if kind == "SpecialToken":
                if name not in specials:
                    raise ValueError(f"post_processor.{which}: special token {name!r} is not "
                                     f"among its special_tokens")
                out.append((list(specials[name]["ids"]), None, fields["type_id"]))
            elif name in ("A", "B"):
                out.append((None, name, fields["type_id"]))
            else:
                raise ValueError(f"post_processor.{which}: sequence {name!r} is neither A nor B")
        return out

    single = compile_template("single")
    if not any(name == "A" for _, name, _ in single):
        raise ValueError("post_processor.single has no place for the text (a Sequence A piece)")
    return single, compile_template("pair")


def cls_sep_processing(processor):
    """(single, pair) templates, as template_processing gives them, of BertProcessing
    ([CLS] A [SEP], then B [SEP] of type 1) or RobertaProcessing (<s> A </s>, then </s> B </s>,
    every token of type 0)."""
    try:
        (_, cls_id), (_, sep_id) = processor["cls"], processor["sep"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"post_processor {processor.get('type')} needs cls and sep as "
                         "[token, id]") from None
    if not (_is_u32(cls_id) and _is_u32(sep_id)):
        raise ValueError(f"post_processor {processor.get('type')}: ids must be non-negative "
                         "integers")
    single = [([cls_id], None, 0), (None, "A", 0), ([sep_id], None, 0)]
    if processor.get("type") == "RobertaProcessing":
        return single, single + [([sep_id], None, 0), (None, "B", 0), ([sep_id], None, 0)]
    return single, single + [(None, "B", 1), ([sep_id], None, 1)]


def _is_u32(value):
    return type(value) is int and 0 <= value < 1 << 32


def _trie_pattern(words):
    """A regex matching any of `words` (non-empty strings): at each position the longest word
    there, so finditer gives the leftmost-longest matches the library's Aho-Corasick automaton
    finds. Written as a trie, as Python's `re` tries an alternation's branches one by one at
    every position: Llama 3's 256 reserved tokens made its encoding 30 times slower. Words
    nested too deeply for that (hundreds of prefixes of one another) get the alternation,
    longest first."""
    try:
        return _trie_regex(words)
    except RecursionError:
        return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _trie_regex(words):
    trie = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[None] = None           # a word ends here

    def pattern(node):
        ends = None in node
        branches = [re.escape(ch) + pattern(child) for ch, child in node.items() if ch is not None]
        if not branches:
            return ""
        if len(branches) == 1 and not ends:
            return branches[0]
        # Greedy: the longer continuation first, this node's own word when it fails.
        return "(?:" + "|".join(branches) + ")" + ("?" if ends else "")

    return re.compile(pattern(trie)).pattern   # the compiler's recursion fails here too


class _AddedTokens:
    """Tokens matched verbatim before WordPiece (special tokens and user-added ones)."""

    def __init__(self, tokens):
        self.by_content = {}
        for token in tokens:        # the first of tokens with the same text wins
            self.by_content.setdefault(token["content"], token)
        self.pattern = re.compile(_trie_pattern(self.by_content))

    def split(self, text):
        """Yield (piece, None, start) for plain text and (matched text, id, start) for each
        added token, start being where the piece begins in `text`: as in the library, a token
        matched inside the spaces a previous one's rstrip took is a token of its own, its
        span overlapping that one's."""
        start = 0
        for match in self.pattern.finditer(text):
            token = self.by_content[match.group()]
            left, right = match.span()
            if token.get("single_word") and (
                    (left and is_word_char(text[left - 1]))
                    or (right < len(text) and is_word_char(text[right]))):
                continue
            if token.get("lstrip"):
                # the spaces before it, but none a previous token's rstrip took (that token
                # may even have taken this one's text: as the library, it keeps its id)
                left = _TRAILING_SPACE.search(text, start, left).start() if start <= left else start
            if token.get("rstrip"):
                right = _LEADING_SPACE.match(text, right).end()
            if left >= right:
                continue            # all of it taken by the previous token's rstrip
            if start < left:
                yield text[start:left], None, start
            yield text[left:right], token["id"], left
            start = right
        if start < len(text):
            yield text[start:], None, start


class WordPieceTokenizer(TokenizerBase):
    """A BERT WordPiece tokenizer read from a Hugging Face tokenizer.json or a vocab.txt."""

    def __init__(self, config):
        model = config.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"tokenizer.json describes a {model.get('type')!r} model, "
                             "not WordPiece; this tokenizer reads WordPiece (BERT) models only")
        self._model_vocab = model["vocab"]     # what WordPiece pieces are looked up in
        prefix = model.get("continuing_subword_prefix", "##")
        # Pieces after the first are looked up without their prefix, saving a concatenation.
        self._continuations = {t[len(prefix):]: i for t, i in self._model_vocab.items()
                               if t.startswith(prefix)}
        self._max_word_chars = model.get("max_input_chars_per_word", 100)
        self._longest = max(map(len, self._model_vocab), default=0)
        self._longest_continuation = max(map(len, self._continuations), default=0)
        self.unk_token = model.get("unk_token", "[UNK]")
        self.unk_id = self._model_vocab.get(self.unk_token)

        self._read_normalizer(config.get("normalizer"))
        self._read_pre_tokenizer(config.get("pre_tokenizer"))

        self._read_added_tokens(config, self.normalize, _AddedTokens)

        self._read_post_processor(config.get("post_processor"))
        decoder = config.get("decoder")
        if decoder is not None and decoder.get("type") != "WordPiece":
            raise ValueError(f"unsupported decoder {decoder.get('type')!r}; expected WordPiece")
        self._decoder = None if decoder is None else (decoder.get("prefix", "##"),
                                                      decoder.get("cleanup", True))
        self._read_truncation(config.get("truncation"))
        self._read_padding(config.get("padding"))
        # Per-instance cache of word -> ids: most of the time goes to words seen before.
        self._word_ids = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(self._wordpiece)

    # ---- construction (from_file, from_json: TokenizerBase's) ----------------------------

    @classmethod
    def from_vocab(cls, path_or_lines, lowercase=True, family="bert"):
        """From a BERT vocab.txt (a path, or its lines) with BERT's defaults, as `transformers`
        builds them: BertNormalizer, BertPreTokenizer, [CLS] A [SEP] B [SEP], [UNK], [PAD].
        family="mpnet": MPNetTokenizer's instead, the same vocabulary file with other special
        tokens: <s> A </s> </s> B </s> (RobertaProcessing), [UNK], <pad>, <mask>."""
        if family not in ("bert", "mpnet"):
            raise ValueError(f"family must be 'bert' or 'mpnet', got {family!r}")
        if isinstance(path_or_lines, (str, os.PathLike)):
            path = path_or_lines
            path_or_lines = read_utf8(path).splitlines()
            if "[UNK]" not in path_or_lines:
                raise TokenizerFileError(f"{path}: not a BERT vocabulary (one token per line, "
                                         "[UNK] among them)")
        vocab = {}
        for i, line in enumerate(path_or_lines):
            vocab[line.rstrip("\r\n")] = i
        special = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab]
        cls_sep = {name: {"id": name, "ids": [vocab[name]], "tokens": [name]}
                   for name in ("[CLS]", "[SEP]") if name in vocab}
        config = {
            "added_tokens": [{"id": vocab[t], "content": t, "special": True, "normalized": False}
                             for t in special],
            "normalizer": {"type": "BertNormalizer", "clean_text": True,
                           "handle_chinese_chars": True, "strip_accents": None,
                           "lowercase": lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing", "special_tokens": cls_sep,
                               "single": _template("[CLS] A [SEP]"),
                               "pair": _template("[CLS] A [SEP] B:1 [SEP]:1")}
            if len(cls_sep) == 2 else None,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab},
        }
        if family == "mpnet":
            specials = {"<s>": False, "<pad>": False, "</s>": False, "[UNK]": False,
                        "<mask>": True}        # MPNetTokenizer's <mask> takes the space before it
            config["added_tokens"] = [{"id": vocab[t], "content": t, "special": True,
                                       "normalized": False, "lstrip": lstrip}
                                      for t, lstrip in specials.items() if t in vocab]
            config["post_processor"] = {"type": "RobertaProcessing", "cls": ["<s>", vocab["<s>"]],
                                        "sep": ["</s>", vocab["</s>"]]} \
                if "<s>" in vocab and "</s>" in vocab else None
        tokenizer = cls(config)
        if family == "mpnet":
            tokenizer.use_pad_token("<pad>")
        return tokenizer

    def use_pad_token(self, token):
        """Pad with `token` (tokenizer_config.json's pad_token, where tokenizer.json names
        none) where the vocabulary holds it; keep the padding as it was otherwise."""
        if token in self._vocab:
            self.pad_token, self.pad_id = token, self._vocab[token]

    def _read_normalizer(self, normalizer):
        """BertNormalizer (or none) here; any other the BPE tokenizer's normalizers read
        (a WordPiece trained with NFD, Lowercase and StripAccents, say)."""
        self._other_normalize = None
        if normalizer is None or normalizer.get("type") != "BertNormalizer":
            if normalizer is not None:
                from .bpe import normalizer_of      # bpe.py builds on this module

                self._other_normalize = normalizer_of(normalizer)
            normalizer = {"clean_text": False, "handle_chinese_chars": False,
                          "strip_accents": False, "lowercase": False}
        self._clean_text = normalizer.get("clean_text", True)
        self._chinese = normalizer.get("handle_chinese_chars", True)
        self._lowercase = normalizer.get("lowercase", True)
        strip = normalizer.get("strip_accents")
        self._strip_accents = self._lowercase if strip is None else strip   # None: as lowercase

    def _read_pre_tokenizer(self, spec):
        """BertPreTokenizer here (_WORD_RE); any other the BPE tokenizer's pre-tokenizers read
        (Whitespace, as the library's WordPiece examples train with)."""
        if spec is not None and spec.get("type") == "BertPreTokenizer":
            self._words = _WORD_RE.findall
            return
        from .bpe import pre_tokenizer_of

        pre = pre_tokenizer_of(spec)
        self._words = (lambda text: [text] if text else []) if pre is None else \
            (lambda text: [word for word, _ in pre([(text, None)], True)])

    def _read_post_processor(self, processor):
        kind = processor and processor.get("type")
        if kind is None:
            single, pair = [(None, "A", 0)], [(None, "A", 0), (None, "B", 0)]
        elif kind in ("BertProcessing", "RobertaProcessing"):
            single, pair = cls_sep_processing(processor)
        elif kind == "TemplateProcessing":
            single, pair = template_processing(processor)
        else:
            raise ValueError(f"unsupported post_processor {kind!r}; "
                             "expected TemplateProcessing or BertProcessing")
        self._templates = {False: single, True: pair}
        self._n_special = {is_pair: sum(len(ids) for ids, _, _ in t if ids)
                           for is_pair, t in self._templates.items()}
        # [CLS] and [SEP] are the first and last special tokens of the single template.
        marks = [ids[0] for ids, _, _ in single if ids]
        self.cls_id = marks[0] if len(marks) >= 2 else self._vocab.get("[CLS]")
        self.sep_id = marks[-1] if len(marks) >= 2 else self._vocab.get("[SEP]")

    def _read_padding(self, padding):
        """BERT's pad token [PAD] unless the padding section names another."""
        self.pad_token = (padding or {}).get("pad_token", "[PAD]")
        self.pad_id = (padding or {}).get("pad_id", self._vocab.get(self.pad_token))
        super()._read_padding(padding)

    def _no_pad_token(self):
        return f"cannot pad: the pad token {self.pad_token!r} is not in the vocabulary"

    # ---- the pipeline -------------------------------------------------------------------

    def normalize(self, text):
        """BertNormalizer: clean_text, handle_chinese_chars, strip_accents, lowercase (or the
        tokenizer.json's other normalizer)."""
        if self._other_normalize is not None:
            return self._other_normalize(text, None)[0]
        if self._clean_text and not (text.isascii() and text.isprintable()):
            text = _SPACE_RE.sub(" ", _CONTROL_RE.sub("", text))
        if not text.isascii():    # ASCII needs none of the Unicode steps but lowercasing
            if self._chinese:     # " 中 " for each ideograph; split+join runs in C everywhere
                text = " ".join(_CJK_RE.split(text))
            if self._strip_accents:
                text = _MARKS_RE.sub("", _nfd(text))
            if self._lowercase:
                return library_lowercase(text)
        return text.lower() if self._lowercase else text

    def pre_tokenize(self, text):
        """BertPreTokenizer: words split at whitespace, each punctuation character alone (or
        the tokenizer.json's other pre-tokenizer)."""
        return self._words(text)

    def _wordpiece(self, word):
        """Ids of one word: longest vocabulary piece first, or [UNK] for the whole word."""
        if len(word) > self._max_word_chars:
            return (self._require_unk(),)
        vocab, longest, ids = self._model_vocab, self._longest, []
        start, n = 0, len(word)
        while start < n:
            end = min(n, start + longest)
            while end > start:
                i = vocab.get(word[start:end])
                if i is not None:
                    break
                end -= 1
            else:
                return (self._require_unk(),)
            ids.append(i)
            start = end
            vocab, longest = self._continuations, self._longest_continuation
        return tuple(ids)

    def _require_unk(self):
        if self.unk_id is None:
            raise ValueError(f"the unknown token {self.unk_token!r} is not in the vocabulary")
        return self.unk_id

    def _text_ids(self, text):
        """Ids of one text, without special tokens, truncation or padding, and their token
        strings if some differ from the vocabulary's: the library names an added token by the
        text it matched (with the whitespace lstrip/rstrip took, or normalized)."""
        ids, renamed = [], []
        for piece, added_id, _ in _split_added(text, self._raw_added):
            if added_id is not None:
                renamed.append((len(ids), piece))
                ids.append(added_id)
                continue
            for part, added_id, _ in _split_added(self.normalize(piece), self._normalized_added):
                if added_id is not None:
                    renamed.append((len(ids), part))
                    ids.append(added_id)
                    continue
                for word in self._words(part):
                    ids.extend(self._word_ids(word))
        renamed = [(k, name) for k, name in renamed if name != self._names[ids[k]]]
        if not renamed:
            return ids, None
        tokens = [self._names[i] for i in ids]
        for k, name in renamed:
            tokens[k] = name
        return ids, tokens

    # ---- encoding -----------------------------------------------------------------------

    def encode(self, text, pair=None, max_length=None, truncation=True):
        """Encode a text, or a pair, with [CLS]/[SEP] and type ids; not padded.

        With truncation, the result has at most `max_length` tokens (default: the length in
        tokenizer.json, if any); a pair is cut longest-first, as the library does.
        """
        sequences = {"A": self._text_ids(_check_text(text, "text"))}
        if pair is not None:
            sequences["B"] = self._text_ids(_check_text(pair, "pair"))
        limit = self.max_length if max_length is None else max_length
        if truncation and limit is not None:
            kept = self._kept_lengths([len(ids) for ids, _ in sequences.values()], limit,
                                      self._n_special[pair is not None])
            sequences = {name: (self._cut(ids, n), tokens and self._cut(tokens, n))
                         for (name, (ids, tokens)), n in zip(sequences.items(), kept)}
        named = any(tokens is not None for _, tokens in sequences.values())
        ids, type_ids, tokens = [], [], [] if named else None
        for special, sequence, type_id in self._templates[pair is not None]:
            part, part_tokens = (special, None) if special is not None else sequences[sequence]
            ids += part
            type_ids += [type_id] * len(part)
            if named:
                tokens += part_tokens or [self._names[i] for i in part]
        self._check_ids(ids, text)
        return Encoding(ids, type_ids, [1] * len(ids), self._names, tokens)

    def encode_batch(self, texts, pairs=None, max_length=None, padding="longest",
                     pad_to_multiple_of=None, truncation=True):
        """Encode many texts (and pairs), padded with `pad_id` (attention mask 0).

        padding: "longest" (the longest in the batch), "max_length" (`max_length`, else the
        length in tokenizer.json) or None. pad_to_multiple_of rounds the padded length up.
        """
        return self._encode_batch(texts, pairs, lambda t, p: self.encode(t, p, max_length, truncation),
                                  padding, max_length, pad_to_multiple_of)

    # ---- decoding -----------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens=True):
        """Text back from ids, as the library's WordPiece decoder writes it ("##" pieces glued,
        " ." -> "."); unknown ids are dropped, special tokens too unless asked to keep them."""
        names, skip = self._names, self._special_ids if skip_special_tokens else ()
        tokens = [names[i] for i in ids
                  if 0 <= i < len(names) and names[i] is not None and i not in skip]
        if self._decoder is None:
            return " ".join(tokens)
        prefix, cleanup = self._decoder
        out = []
        for k, token in enumerate(tokens):
            if k:
                token = token[len(prefix):] if token.startswith(prefix) else " " + token
            out.append(_cleanup(token) if cleanup else token)
        return "".join(out)

    def __repr__(self):
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={self._lowercase}, "
                f"max_length={self.max_length})")


def _cleanup(token):
    """The library's decoder cleanup, applied to each token as it applies it."""
    for dirty, clean in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                         (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"),
                         (" 've", "'ve"), (" 're", "'re")):
        token = token.replace(dirty, clean)
    return token


def _template(text):
    """A TemplateProcessing piece list from BERT's shorthand, e.g. "[CLS] A [SEP] B:1 [SEP]:1"."""
    pieces = []
    for item in text.split():
        name, _, type_id = item.partition(":")
        kind = "Sequence" if name in ("A", "B") else "SpecialToken"
        pieces.append({kind: {"id": name, "type_id": int(type_id or 0)}})
    return pieces
