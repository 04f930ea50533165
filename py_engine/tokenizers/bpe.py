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
by the pre-tokenizer (a regex Split, ByteLevel with its GPT-2 regex and byte-to-character map,
Metaspace), and each word is merged pair by pair, lowest merge rank first; characters missing
from the vocabulary become <0xNN> byte tokens (byte_fallback) or the unknown token. Then the
post-processor's template adds BOS/EOS. Words repeat, so each word's ids are cached.

Supported tokenizer.json features: model BPE (byte_fallback, fuse_unk, ignore_merges, unk_token;
no dropout, continuing_subword_prefix or end_of_word_suffix) or Unigram (unk_id, byte_fallback);
normalizers Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD (Qwen2's file has NFC),
Lowercase, StripAccents (Python's `unicodedata`, so the Unicode version is the interpreter's),
Precompiled (SentencePiece's charsmap, precompiled.py); pre-tokenizers Sequence, ByteLevel, Split
(string or regex pattern, behaviours Isolated, Removed, MergedWithPrevious, MergedWithNext,
Contiguous; no invert), Metaspace, WhitespaceSplit; post-processors TemplateProcessing,
ByteLevel (with trim_offsets), Sequence; decoders ByteLevel, Sequence, Replace (string),
ByteFallback, Fuse, Strip, Metaspace. Anything else is a ValueError naming it.

Offsets (`return_offsets=True`), as the library's `Encoding.offsets`: per token the range of
characters of the original text it came from, followed through normalization, pre-tokenization
and the byte-level map; used to find which tokens of a rendered chat lie in assistant turns.

Regexes: the library's are Oniguruma regexes with \\p{L}, \\p{N} and a Unicode \\s, which Python's
`re` lacks (and its \\s also takes \\x1c-\\x1f). They are rewritten with the classes below,
written out as code point ranges read from the library, since Python's Unicode database
changes with the interpreter.
"""

import functools
import heapq
import re
import unicodedata

from .precompiled import Precompiled
from .tokenizer_file import TokenizerJsonReader
from .unigram import UnigramModel
from .wordpiece import (Encoding, _AddedTokens, _check_text, _ranges, padded_length,
                        template_processing)

WORD_CACHE_SIZE = 1 << 16   # words whose ids are remembered

# Code point ranges (hex, "a-b" or "a") of the library's regex classes \p{L}, \p{N} and \s.
_LETTER = (
    "41-5a 61-7a aa b5 ba c0-d6 d8-f6 f8-2c1 2c6-2d1 2e0-2e4 2ec 2ee 370-374 376-377 37a-37d 37f "
    "386 388-38a 38c 38e-3a1 3a3-3f5 3f7-481 48a-52f 531-556 559 560-588 5d0-5ea 5ef-5f2 620-64a "
    "66e-66f 671-6d3 6d5 6e5-6e6 6ee-6ef 6fa-6fc 6ff 710 712-72f 74d-7a5 7b1 7ca-7ea 7f4-7f5 7fa "
    "800-815 81a 824 828 840-858 860-86a 870-887 889-88e 8a0-8c9 904-939 93d 950 958-961 971-980 "
    "985-98c 98f-990 993-9a8 9aa-9b0 9b2 9b6-9b9 9bd 9ce 9dc-9dd 9df-9e1 9f0-9f1 9fc a05-a0a "
    "a0f-a10 a13-a28 a2a-a30 a32-a33 a35-a36 a38-a39 a59-a5c a5e a72-a74 a85-a8d a8f-a91 a93-aa8 "
    "aaa-ab0 ab2-ab3 ab5-ab9 abd ad0 ae0-ae1 af9 b05-b0c b0f-b10 b13-b28 b2a-b30 b32-b33 b35-b39 "
    "b3d b5c-b5d b5f-b61 b71 b83 b85-b8a b8e-b90 b92-b95 b99-b9a b9c b9e-b9f ba3-ba4 ba8-baa bae- "
    "bb9 bd0 c05-c0c c0e-c10 c12-c28 c2a-c39 c3d c58-c5a c5d c60-c61 c80 c85-c8c c8e-c90 c92-ca8 "
    "caa-cb3 cb5-cb9 cbd cdd-cde ce0-ce1 cf1-cf2 d04-d0c d0e-d10 d12-d3a d3d d4e d54-d56 d5f-d61 "
    "d7a-d7f d85-d96 d9a-db1 db3-dbb dbd dc0-dc6 e01-e30 e32-e33 e40-e46 e81-e82 e84 e86-e8a "
    "e8c-ea3 ea5 ea7-eb0 eb2-eb3 ebd ec0-ec4 ec6 edc-edf f00 f40-f47 f49-f6c f88-f8c 1000-102a "
    "103f 1050-1055 105a-105d 1061 1065-1066 106e-1070 1075-1081 108e 10a0-10c5 10c7 10cd "
    "10d0-10fa 10fc-1248 124a-124d 1250-1256 1258 125a-125d 1260-1288 128a-128d 1290-12b0 "
    "12b2-12b5 12b8-12be 12c0 12c2-12c5 12c8-12d6 12d8-1310 1312-1315 1318-135a 1380-138f "
    "13a0-13f5 13f8-13fd 1401-166c 166f-167f 1681-169a 16a0-16ea 16f1-16f8 1700-1711 171f-1731 "
    "1740-1751 1760-176c 176e-1770 1780-17b3 17d7 17dc 1820-1878 1880-1884 1887-18a8 18aa "
    "18b0-18f5 1900-191e 1950-196d 1970-1974 1980-19ab 19b0-19c9 1a00-1a16 1a20-1a54 1aa7 "
    "1b05-1b33 1b45-1b4c 1b83-1ba0 1bae-1baf 1bba-1be5 1c00-1c23 1c4d-1c4f 1c5a-1c7d 1c80-1c8a "
    "1c90-1cba 1cbd-1cbf 1ce9-1cec 1cee-1cf3 1cf5-1cf6 1cfa 1d00-1dbf 1e00-1f15 1f18-1f1d "
    "1f20-1f45 1f48-1f4d 1f50-1f57 1f59 1f5b 1f5d 1f5f-1f7d 1f80-1fb4 1fb6-1fbc 1fbe 1fc2-1fc4 "
    "1fc6-1fcc 1fd0-1fd3 1fd6-1fdb 1fe0-1fec 1ff2-1ff4 1ff6-1ffc 2071 207f 2090-209c 2102 2107 "
    "210a-2113 2115 2119-211d 2124 2126 2128 212a-212d 212f-2139 213c-213f 2145-2149 214e "
    "2183-2184 2c00-2ce4 2ceb-2cee 2cf2-2cf3 2d00-2d25 2d27 2d2d 2d30-2d67 2d6f 2d80-2d96 "
    "2da0-2da6 2da8-2dae 2db0-2db6 2db8-2dbe 2dc0-2dc6 2dc8-2dce 2dd0-2dd6 2dd8-2dde 2e2f "
    "3005-3006 3031-3035 303b-303c 3041-3096 309d-309f 30a1-30fa 30fc-30ff 3105-312f 3131-318e "
    "31a0-31bf 31f0-31ff 3400-4dbf 4e00-a48c a4d0-a4fd a500-a60c a610-a61f a62a-a62b a640-a66e "
    "a67f-a69d a6a0-a6e5 a717-a71f a722-a788 a78b-a7cd a7d0-a7d1 a7d3 a7d5-a7dc a7f2-a801 "
    "a803-a805 a807-a80a a80c-a822 a840-a873 a882-a8b3 a8f2-a8f7 a8fb a8fd-a8fe a90a-a925 "
    "a930-a946 a960-a97c a984-a9b2 a9cf a9e0-a9e4 a9e6-a9ef a9fa-a9fe aa00-aa28 aa40-aa42 "
    "aa44-aa4b aa60-aa76 aa7a aa7e-aaaf aab1 aab5-aab6 aab9-aabd aac0 aac2 aadb-aadd aae0-aaea "
    "aaf2-aaf4 ab01-ab06 ab09-ab0e ab11-ab16 ab20-ab26 ab28-ab2e ab30-ab5a ab5c-ab69 ab70-abe2 "
    "ac00-d7a3 d7b0-d7c6 d7cb-d7fb f900-fa6d fa70-fad9 fb00-fb06 fb13-fb17 fb1d fb1f-fb28 "
    "fb2a-fb36 fb38-fb3c fb3e fb40-fb41 fb43-fb44 fb46-fbb1 fbd3-fd3d fd50-fd8f fd92-fdc7 "
    "fdf0-fdfb fe70-fe74 fe76-fefc ff21-ff3a ff41-ff5a ff66-ffbe ffc2-ffc7 ffca-ffcf ffd2-ffd7 "
    "ffda-ffdc 10000-1000b 1000d-10026 10028-1003a 1003c-1003d 1003f-1004d 10050-1005d "
    "10080-100fa 10280-1029c 102a0-102d0 10300-1031f 1032d-10340 10342-10349 10350-10375 "
    "10380-1039d 103a0-103c3 103c8-103cf 10400-1049d 104b0-104d3 104d8-104fb 10500-10527 "
    "10530-10563 10570-1057a 1057c-1058a 1058c-10592 10594-10595 10597-105a1 105a3-105b1 "
    "105b3-105b9 105bb-105bc 105c0-105f3 10600-10736 10740-10755 10760-10767 10780-10785 "
    "10787-107b0 107b2-107ba 10800-10805 10808 1080a-10835 10837-10838 1083c 1083f-10855 "
    "10860-10876 10880-1089e 108e0-108f2 108f4-108f5 10900-10915 10920-10939 10980-109b7 "
    "109be-109bf 10a00 10a10-10a13 10a15-10a17 10a19-10a35 10a60-10a7c 10a80-10a9c 10ac0-10ac7 "
    "10ac9-10ae4 10b00-10b35 10b40-10b55 10b60-10b72 10b80-10b91 10c00-10c48 10c80-10cb2 "
    "10cc0-10cf2 10d00-10d23 10d4a-10d65 10d6f-10d85 10e80-10ea9 10eb0-10eb1 10ec2-10ec4 "
    "10f00-10f1c 10f27 10f30-10f45 10f70-10f81 10fb0-10fc4 10fe0-10ff6 11003-11037 11071-11072 "
    "11075 11083-110af 110d0-110e8 11103-11126 11144 11147 11150-11172 11176 11183-111b2 "
    "111c1-111c4 111da 111dc 11200-11211 11213-1122b 1123f-11240 11280-11286 11288 1128a-1128d "
    "1128f-1129d 1129f-112a8 112b0-112de 11305-1130c 1130f-11310 11313-11328 1132a-11330 "
    "11332-11333 11335-11339 1133d 11350 1135d-11361 11380-11389 1138b 1138e 11390-113b5 113b7 "
    "113d1 113d3 11400-11434 11447-1144a 1145f-11461 11480-114af 114c4-114c5 114c7 11580-115ae "
    "115d8-115db 11600-1162f 11644 11680-116aa 116b8 11700-1171a 11740-11746 11800-1182b "
    "118a0-118df 118ff-11906 11909 1190c-11913 11915-11916 11918-1192f 1193f 11941 119a0-119a7 "
    "119aa-119d0 119e1 119e3 11a00 11a0b-11a32 11a3a 11a50 11a5c-11a89 11a9d 11ab0-11af8 "
    "11bc0-11be0 11c00-11c08 11c0a-11c2e 11c40 11c72-11c8f 11d00-11d06 11d08-11d09 11d0b-11d30 "
    "11d46 11d60-11d65 11d67-11d68 11d6a-11d89 11d98 11ee0-11ef2 11f02 11f04-11f10 11f12-11f33 "
    "11fb0 12000-12399 12480-12543 12f90-12ff0 13000-1342f 13441-13446 13460-143fa 14400-14646 "
    "16100-1611d 16800-16a38 16a40-16a5e 16a70-16abe 16ad0-16aed 16b00-16b2f 16b40-16b43 "
    "16b63-16b77 16b7d-16b8f 16d40-16d6c 16e40-16e7f 16f00-16f4a 16f50 16f93-16f9f 16fe0-16fe1 "
    "16fe3 17000-187f7 18800-18cd5 18cff-18d08 1aff0-1aff3 1aff5-1affb 1affd-1affe 1b000-1b122 "
    "1b132 1b150-1b152 1b155 1b164-1b167 1b170-1b2fb 1bc00-1bc6a 1bc70-1bc7c 1bc80-1bc88 "
    "1bc90-1bc99 1d400-1d454 1d456-1d49c 1d49e-1d49f 1d4a2 1d4a5-1d4a6 1d4a9-1d4ac 1d4ae-1d4b9 "
    "1d4bb 1d4bd-1d4c3 1d4c5-1d505 1d507-1d50a 1d50d-1d514 1d516-1d51c 1d51e-1d539 1d53b-1d53e "
    "1d540-1d544 1d546 1d54a-1d550 1d552-1d6a5 1d6a8-1d6c0 1d6c2-1d6da 1d6dc-1d6fa 1d6fc-1d714 "
    "1d716-1d734 1d736-1d74e 1d750-1d76e 1d770-1d788 1d78a-1d7a8 1d7aa-1d7c2 1d7c4-1d7cb "
    "1df00-1df1e 1df25-1df2a 1e030-1e06d 1e100-1e12c 1e137-1e13d 1e14e 1e290-1e2ad 1e2c0-1e2eb "
    "1e4d0-1e4eb 1e5d0-1e5ed 1e5f0 1e7e0-1e7e6 1e7e8-1e7eb 1e7ed-1e7ee 1e7f0-1e7fe 1e800-1e8c4 "
    "1e900-1e943 1e94b 1ee00-1ee03 1ee05-1ee1f 1ee21-1ee22 1ee24 1ee27 1ee29-1ee32 1ee34-1ee37 "
    "1ee39 1ee3b 1ee42 1ee47 1ee49 1ee4b 1ee4d-1ee4f 1ee51-1ee52 1ee54 1ee57 1ee59 1ee5b 1ee5d "
    "1ee5f 1ee61-1ee62 1ee64 1ee67-1ee6a 1ee6c-1ee72 1ee74-1ee77 1ee79-1ee7c 1ee7e 1ee80-1ee89 "
    "1ee8b-1ee9b 1eea1-1eea3 1eea5-1eea9 1eeab-1eebb 20000-2a6df 2a700-2b739 2b740-2b81d "
    "2b820-2cea1 2ceb0-2ebe0 2ebf0-2ee5d 2f800-2fa1d 30000-3134a 31350-323af "
)
_NUMBER = (
    "30-39 b2-b3 b9 bc-be 660-669 6f0-6f9 7c0-7c9 966-96f 9e6-9ef 9f4-9f9 a66-a6f ae6-aef b66-b6f "
    "b72-b77 be6-bf2 c66-c6f c78-c7e ce6-cef d58-d5e d66-d78 de6-def e50-e59 ed0-ed9 f20-f33 "
    "1040-1049 1090-1099 1369-137c 16ee-16f0 17e0-17e9 17f0-17f9 1810-1819 1946-194f 19d0-19da "
    "1a80-1a89 1a90-1a99 1b50-1b59 1bb0-1bb9 1c40-1c49 1c50-1c59 2070 2074-2079 2080-2089 "
    "2150-2182 2185-2189 2460-249b 24ea-24ff 2776-2793 2cfd 3007 3021-3029 3038-303a 3192-3195 "
    "3220-3229 3248-324f 3251-325f 3280-3289 32b1-32bf a620-a629 a6e6-a6ef a830-a835 a8d0-a8d9 "
    "a900-a909 a9d0-a9d9 a9f0-a9f9 aa50-aa59 abf0-abf9 ff10-ff19 10107-10133 10140-10178 "
    "1018a-1018b 102e1-102fb 10320-10323 10341 1034a 103d1-103d5 104a0-104a9 10858-1085f "
    "10879-1087f 108a7-108af 108fb-108ff 10916-1091b 109bc-109bd 109c0-109cf 109d2-109ff "
    "10a40-10a48 10a7d-10a7e 10a9d-10a9f 10aeb-10aef 10b58-10b5f 10b78-10b7f 10ba9-10baf "
    "10cfa-10cff 10d30-10d39 10d40-10d49 10e60-10e7e 10f1d-10f26 10f51-10f54 10fc5-10fcb "
    "11052-1106f 110f0-110f9 11136-1113f 111d0-111d9 111e1-111f4 112f0-112f9 11450-11459 "
    "114d0-114d9 11650-11659 116c0-116c9 116d0-116e3 11730-1173b 118e0-118f2 11950-11959 "
    "11bf0-11bf9 11c50-11c6c 11d50-11d59 11da0-11da9 11f50-11f59 11fc0-11fd4 12400-1246e "
    "16130-16139 16a60-16a69 16ac0-16ac9 16b50-16b59 16b5b-16b61 16d70-16d79 16e80-16e96 "
    "1ccf0-1ccf9 1d2c0-1d2d3 1d2e0-1d2f3 1d360-1d378 1d7ce-1d7ff 1e140-1e149 1e2f0-1e2f9 "
    "1e4f0-1e4f9 1e5f1-1e5fa 1e8c7-1e8cf 1e950-1e959 1ec71-1ecab 1ecad-1ecaf 1ecb1-1ecb4 "
    "1ed01-1ed2d 1ed2f-1ed3d 1f100-1f10c 1fbf0-1fbf9 "
)
_SPACE = (
    "9-d 20 85 a0 1680 2000-200a 2028-2029 202f 205f 3000 "
)


def _class_body(spec):
    """Body of a regex character class, e.g. "a-z0-9", for a range spec."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in _ranges(spec))


_CLASS_BODIES = {"L": _class_body(_LETTER), "N": _class_body(_NUMBER)}
_SPACE_BODY = _class_body(_SPACE)
_SPACE_RUN = re.compile(f"[{_SPACE_BODY}]*")
_TRAILING_SPACE_RUN = re.compile(f"[{_SPACE_BODY}]*\\Z")

# GPT-2's split, what ByteLevel uses when use_regex is true.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def translate_regex(pattern):
    """A tokenizer.json (Oniguruma) regex as a Python `re` pattern: \\p{L}, \\p{N}, \\P{..},
    \\s and \\S become the library's classes; other class escapes are refused."""
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
                                     " in tokenizer.json (supported: \\p{L}, \\p{N}, \\s, \\S)")
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


def _segments(text, pattern):
    """The library's find_matches: (start, end, is_match) covering text, empty matches
    included."""
    if not text:
        return [(0, 0, False)]
    out, prev = [], 0
    for m in pattern.finditer(text):
        start, end = m.span()
        if prev != start:
            out.append((prev, start, False))
        out.append((start, end, True))
        prev = end
    if prev != len(text):
        out.append((prev, len(text), False))
    return out


def _split_spans(text, pattern, behavior):
    """The library's NormalizedString.split: (start, end) of the non-empty pieces of text.
    Pieces are spans rather than strings so that offsets can follow them."""
    segments = _segments(text, pattern)
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


def _split(text, pattern, behavior):
    """The non-empty pieces of text, as strings."""
    return [text[a:b] for a, b in _split_spans(text, pattern, behavior)]


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


def _normalizer(spec):
    """A str -> str function for a normalizer spec (None: identity)."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [f for f in map(_normalizer, spec["normalizers"]) if f is not None]

        def sequence(text):
            for f in steps:
                text = f(text)
            return text
        return sequence
    if kind == "Prepend":
        prepend = spec["prepend"]
        return lambda text: prepend + text if text else text
    if kind == "Replace":
        content, pattern = spec["content"], spec["pattern"]
        if "String" in pattern:
            old = pattern["String"]
            return lambda text: text.replace(old, content)
        regex = _pattern(pattern)
        return lambda text: regex.sub(content.replace("\\", "\\\\"), text)
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)

        def strip(text):
            if left:
                text = text[_SPACE_RUN.match(text).end():]
            if right:
                text = text[:_TRAILING_SPACE_RUN.search(text).start()]
            return text
        return strip
    if kind in _UNICODE_FORMS:
        return functools.partial(unicodedata.normalize, kind)
    if kind == "Precompiled":
        return Precompiled(spec.get("precompiled_charsmap")).normalize
    if kind == "Lowercase":
        return _lowercase
    if kind == "StripAccents":
        return lambda text: "".join(c for c in text if not _is_mark(c))
    raise ValueError(f"unsupported normalizer {kind!r} in tokenizer.json "
                     "(supported: Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD, "
                     "Precompiled, Lowercase, StripAccents)")


def _lowercase(text):
    """The library lowercases character by character: no final-sigma rule (Python's
    str.lower has one)."""
    return text.lower() if "Σ" not in text else "".join(c.lower() for c in text)


def _is_mark(ch):
    """What StripAccents removes: combining marks (categories Mn, Mc, Me)."""
    return unicodedata.category(ch)[0] == "M"


_WHITESPACE_RUN = re.compile(f"[{_SPACE_BODY}]+")


def _pre_tokenizer(spec):
    """A (words, at_start) -> words function for a pre-tokenizer spec; at_start: the first
    word begins the original text (Metaspace's prepend_scheme "first" needs it)."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [_pre_tokenizer(s) for s in spec["pretokenizers"]]

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
            for word in words:
                if prefix and not word.startswith(" "):
                    word = " " + word
                pieces = _split(word, regex, "Isolated") if regex is not None else [word]
                out += [_byte_level(p) for p in pieces]
            return out
        return byte_level
    if kind == "Split":
        if spec.get("invert"):
            raise ValueError("unsupported Split pre-tokenizer with invert=true")
        regex, behavior = _pattern(spec["pattern"]), spec.get("behavior", "Isolated")
        _split("", regex, behavior)     # refuse an unknown behavior now

        def split(words, at_start):
            return [p for word in words for p in _split(word, regex, behavior)]
        return split
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
            for k, word in enumerate(words):
                word = word.replace(" ", replacement)
                if not word.startswith(replacement) and (
                        scheme == "always" or scheme == "first" and at_start and k == 0):
                    word = replacement + word
                out += _split(word, regex, "MergedWithNext") if do_split else [word]
            return out
        return metaspace
    if kind == "WhitespaceSplit":
        return lambda words, at_start: [p for word in words
                                        for p in _split(word, _WHITESPACE_RUN, "Removed")]
    raise ValueError(f"unsupported pre_tokenizer {kind!r} in tokenizer.json "
                     "(supported: Sequence, ByteLevel, Split, Metaspace, WhitespaceSplit)")


def _prepends_first(spec):
    """Whether a pre-tokenizer spec holds a Metaspace with prepend_scheme "first"."""
    if spec is None:
        return False
    if spec.get("type") == "Sequence":
        return any(map(_prepends_first, spec["pretokenizers"]))
    return spec.get("type") == "Metaspace" and spec.get("prepend_scheme") == "first"


# ---- the same parts, keeping each character's place in the original text ------------------
#
# Offsets need to know where every character of every word came from. These versions of the
# normalizer and pre-tokenizer carry, beside each string, an `align` list: for each of its
# characters the (start, end) range of original characters it stands for. They run only when
# offsets are asked for, so the plain path stays as fast as it was; the tests check that both
# give the same ids.

def _unicode_aligned(form):
    """NFC/NFD/NFKC/NFKD with alignment. Normalization is local: the text is cut before each
    starter (combining class 0), and neighbouring pieces are joined where normalizing them
    apart differs from normalizing them together (Hangul jamo, compositions across starters).
    Each piece that changes maps all its output characters to its whole original range."""
    normalize = unicodedata.normalize

    def aligned(text, align):
        if unicodedata.is_normalized(form, text):
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


def _aligned_normalizer(spec):
    """A (text, align) -> (text, align) function for a normalizer spec (None: identity)."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [f for f in map(_aligned_normalizer, spec["normalizers"]) if f is not None]

        def sequence(text, align):
            for f in steps:
                text, align = f(text, align)
            return text, align
        return sequence
    if kind == "Prepend":
        prepend = spec["prepend"]
        return lambda text, align: (prepend + text, align[:1] * len(prepend) + align) \
            if text else (text, align)
    if kind == "Replace":
        content, pattern = spec["content"], spec["pattern"]
        regex = _pattern(pattern)

        def replace(text, align):
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
            return text[a:b], align[a:b]
        return strip
    if kind in _UNICODE_FORMS:
        return _unicode_aligned(kind)
    if kind == "Precompiled":
        return Precompiled(spec.get("precompiled_charsmap")).normalize_aligned
    if kind in ("Lowercase", "StripAccents"):
        def per_character(text, align, f=_normalizer(spec)):
            out, out_align = [], []
            for c, a in zip(text, align):
                new = f(c)
                out.append(new)
                out_align += [a] * len(new)
            return "".join(out), out_align
        return per_character
    _normalizer(spec)       # raises the error naming the unsupported kind
    raise AssertionError(kind)


def _byte_level_aligned(piece, align):
    text = _byte_level(piece)
    if len(text) == len(piece):
        return text, align
    out_align = []
    for c, a in zip(piece, align):
        n = len(c.encode("utf-8"))
        out_align += [a] * n
    return text, out_align


def _aligned_pre_tokenizer(spec):
    """A ([(word, align)], at_start) -> [(word, align)] function for a pre-tokenizer spec."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [_aligned_pre_tokenizer(s) for s in spec["pretokenizers"]]

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
                    word, align = " " + word, align[:1] + align
                spans = _split_spans(word, regex, "Isolated") if regex is not None \
                    else [(0, len(word))]
                out += [_byte_level_aligned(word[a:b], align[a:b]) for a, b in spans]
            return out
        return byte_level
    if kind == "Split":
        regex, behavior = _pattern(spec["pattern"]), spec.get("behavior", "Isolated")

        def split(words, at_start):
            return [(word[a:b], align[a:b]) for word, align in words
                    for a, b in _split_spans(word, regex, behavior)]
        return split
    if kind == "Metaspace":
        replacement = spec.get("replacement", "▁")
        scheme = spec.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        do_split = spec.get("split", True)
        regex = re.compile(re.escape(replacement))

        def metaspace(words, at_start):
            out = []
            for k, (word, align) in enumerate(words):
                word = word.replace(" ", replacement)
                if not word.startswith(replacement) and (
                        scheme == "always" or scheme == "first" and align and align[0][0] == 0):
                    word, align = replacement + word, align[:1] + align
                spans = _split_spans(word, regex, "MergedWithNext") if do_split \
                    else [(0, len(word))]
                out += [(word[a:b], align[a:b]) for a, b in spans]
            return out
        return metaspace
    if kind == "WhitespaceSplit":
        return lambda words, at_start: [(word[a:b], align[a:b]) for word, align in words
                                        for a, b in _split_spans(word, _WHITESPACE_RUN,
                                                                 "Removed")]
    _pre_tokenizer(spec)    # raises the error naming the unsupported kind
    raise AssertionError(kind)


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


def _split_added(text, added):
    return added.split(text) if added is not None else ((text, None),)


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


class SubwordTokenizer(TokenizerJsonReader):
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
        self._normalize = _normalizer(config.get("normalizer"))
        self._pre_tokenize = _pre_tokenizer(config.get("pre_tokenizer"))
        self._aligned_normalize = _aligned_normalizer(config.get("normalizer"))
        self._aligned_pre_tokenize = _aligned_pre_tokenizer(config.get("pre_tokenizer"))
        # Metaspace's prepend_scheme "first" prepends to a word that begins the original text:
        # after a normalizer or another pre-tokenizer (which may drop the first characters),
        # only alignment tells which word that is.
        pre = config.get("pre_tokenizer")
        self._prepends_first = _prepends_first(pre) and (
            config.get("normalizer") is not None or pre.get("type") == "Sequence")
        self._model_names = None     # id -> model vocabulary entry, built when offsets need it
        decoder = config.get("decoder")
        self._decode = None if decoder is None else _decoder(decoder)

        added = [t for t in config.get("added_tokens") or [] if t["content"]]
        self._vocab = dict(self._model_vocab)   # token -> id, added tokens included
        for token in added:
            self._vocab[token["content"]] = token["id"]
        self._names = [None] * (max(self._vocab.values(), default=-1) + 1)
        for token, i in self._model_vocab.items():
            self._names[i] = token
        if self._unigram is not None:   # a piece listed twice: each id keeps its own name
            for i, piece in enumerate(self._unigram.pieces):
                self._names[i] = piece
        for token in added:     # added tokens win over the model's vocabulary, as in the library
            self._names[token["id"]] = token["content"]
        # Tokens marked "normalized" are matched in normalized text, by their normalized form.
        if self._normalize is not None:
            added = [dict(t, content=self._normalize(t["content"])) if t.get("normalized") else t
                     for t in added]
        raw = [t for t in added if not t.get("normalized")]
        normalized = [t for t in added if t.get("normalized")]
        self._raw_added = _AddedTokens(raw) if raw else None
        self._normalized_added = _AddedTokens(normalized) if normalized else None
        self._special_ids = {t["id"] for t in added if t.get("special")}

        self._read_post_processor(config.get("post_processor"))
        self._read_truncation(config.get("truncation"))
        padding = config.get("padding") or {}
        self.pad_id = padding.get("pad_id") if padding else None
        self._pad_type_id = padding.get("pad_type_id", 0)
        self._pad_left = padding.get("direction", "Right") == "Left"
        self._pad_multiple = padding.get("pad_to_multiple_of")
        strategy = padding.get("strategy")
        self._pad_length = strategy.get("Fixed") if isinstance(strategy, dict) else None
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
        if self.unk_token is not None and self.unk_id is None:
            raise ValueError(f"the unknown token {self.unk_token!r} is not in the vocabulary")
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
        self._byte_ids = unigram.byte_ids or [None] * 256

    # ---- construction (from_file, from_json: TokenizerJsonReader) ------------------------

    def _read_post_processor(self, processor):
        kind = processor and processor.get("type")
        # The ByteLevel processor's trim_offsets moves offsets past a token's leading and
        # trailing spaces (GPT-2's file sets it; Llama-3's and Qwen2's do not).
        byte_levels = [processor] if kind == "ByteLevel" else \
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
        else:
            raise ValueError(f"unsupported post_processor {kind!r} in tokenizer.json "
                             "(supported: TemplateProcessing, ByteLevel, Sequence)")
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

    def _read_truncation(self, truncation):
        truncation = truncation or {}
        self.max_length = truncation.get("max_length")      # default truncation length, or None
        self._truncation_strategy = truncation.get("strategy", "LongestFirst")
        if self._truncation_strategy not in ("LongestFirst", "OnlyFirst", "OnlySecond"):
            raise ValueError(f"unknown truncation strategy {self._truncation_strategy!r}")
        self._truncate_left = truncation.get("direction", "Right") == "Left"

    # ---- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self):
        """Size of the vocabulary, added tokens included (the library's get_vocab_size())."""
        return len(self._vocab)

    def token_to_id(self, token):
        return self._vocab.get(token)

    def id_to_token(self, i):
        return self._names[i] if 0 <= i < len(self._names) else None

    # ---- the pipeline -------------------------------------------------------------------

    def normalize(self, text):
        return self._normalize(text) if self._normalize is not None else text

    def pre_tokenize(self, text, at_start=True):
        """The words of (normalized) text, byte-level mapped where the model is byte-level."""
        if self._pre_tokenize is None:
            return [text] if text else []
        return self._pre_tokenize([text], at_start)

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

    def _text_ids(self, text):
        """Ids of one text, without special tokens, truncation or padding, and their token
        strings if some differ from the vocabulary's (an added token named by the text it
        matched, with the whitespace lstrip/rstrip took)."""
        if self._prepends_first:
            ids, tokens, _ = self._text_ids_offsets(text)
            return ids, tokens
        ids, renamed, at_start = [], [], True
        for piece, added_id in _split_added(text, self._raw_added):
            if added_id is not None:
                renamed.append((len(ids), piece))
                ids.append(added_id)
                at_start = False
                continue
            for part, added_id in _split_added(self.normalize(piece), self._normalized_added):
                if added_id is not None:
                    renamed.append((len(ids), part))
                    ids.append(added_id)
                elif part:
                    for word in self.pre_tokenize(part, at_start):
                        word_ids = self._word_ids(word)
                        if self._unigram is not None and self.unk_id in word_ids:
                            renamed += self._unknown_names(word, word_ids, len(ids))
                        ids.extend(word_ids)
                at_start = False
            at_start = False
        renamed = [(k, name) for k, name in renamed if name != self._names[ids[k]]]
        if not renamed:
            return ids, None
        tokens = [self._names[i] for i in ids]
        for k, name in renamed:
            tokens[k] = name
        return ids, tokens

    # ---- offsets ------------------------------------------------------------------------

    def _text_ids_offsets(self, text):
        """_text_ids plus, per token, the (start, end) range of characters of `text` it came
        from: the library's offsets. A token holding part of a character's UTF-8 bytes
        gets that whole character; an added token gets what it matched (with the whitespace
        lstrip/rstrip took)."""
        ids, offsets, renamed, at_start, pos = [], [], [], True, 0
        for piece, added_id in _split_added(text, self._raw_added):
            end = pos + len(piece)
            if added_id is not None:
                renamed.append((len(ids), piece))
                ids.append(added_id)
                offsets.append((pos, end))
                at_start, pos = False, end
                continue
            align = [(k, k + 1) for k in range(pos, end)]
            if self._aligned_normalize is not None:
                piece, align = self._aligned_normalize(piece, align)
            part_pos = 0
            for part, added_id in _split_added(piece, self._normalized_added):
                part_end = part_pos + len(part)
                part_align = align[part_pos:part_end]
                if added_id is not None:
                    renamed.append((len(ids), part))
                    ids.append(added_id)
                    offsets.append((part_align[0][0], part_align[-1][1]) if part_align
                                   else (pos, pos))
                elif part:
                    words = [(part, part_align)]
                    if self._aligned_pre_tokenize is not None:
                        words = self._aligned_pre_tokenize(words, at_start)
                    for word, word_align in words:
                        word_ids = self._word_ids(word)
                        if self._unigram is not None and self.unk_id in word_ids:
                            renamed += self._unknown_names(word, word_ids, len(ids))
                        ids.extend(word_ids)
                        offsets += [(word_align[a][0], word_align[b - 1][1])
                                    for a, b in self._token_spans(word, word_ids)]
                at_start, part_pos = False, part_end
            at_start, pos = False, end
        names = [self._names[i] for i in ids]
        for k, name in renamed:
            names[k] = name
        if self._trim_offsets:
            offsets = self._trimmed(names, offsets)
        renamed = [(k, name) for k, name in renamed if name != self._names[ids[k]]]
        return ids, (names if renamed else None), offsets

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
            if not n_bytes and name is not None and word.startswith(name, pos):
                spans.append((pos, pos + len(name)))
                pos += len(name)
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
        read = self._text_ids_offsets if return_offsets else self._text_ids
        sequences = {"A": read(_check_text(text, "text"))}
        if pair is not None:
            sequences["B"] = read(_check_text(pair, "pair"))
        if not return_offsets:
            sequences = {name: (ids, tokens, None) for name, (ids, tokens) in sequences.items()}
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
        return BPEEncoding(ids, type_ids, [1] * len(ids), self._names, tokens, offsets)

    def _kept_lengths(self, lengths, max_length, n_special):
        """How many tokens of each sequence truncation to `max_length` keeps."""
        budget = max_length - n_special
        if budget < 0:
            raise ValueError(f"max_length {max_length} leaves no room for the "
                             f"{n_special} special tokens")
        if sum(lengths) <= budget:
            return lengths
        if len(lengths) == 1:
            return [budget]
        n1, n2 = lengths
        if self._truncation_strategy == "LongestFirst":
            short, long_ = min(n1, n2), max(n1, n2)
            long_ = short if short > budget else max(short, budget - short)
            if short + long_ > budget:
                short, long_ = budget // 2, budget // 2 + budget % 2
            return [long_, short] if n1 > n2 else [short, long_]
        excess = n1 + n2 - budget
        first = self._truncation_strategy == "OnlyFirst"
        if (n1 if first else n2) <= excess:
            raise ValueError(f"cannot truncate to {max_length}: the "
                             f"{'first' if first else 'second'} sequence is too short")
        return [n1 - excess, n2] if first else [n1, n2 - excess]

    def _cut(self, items, n):
        return items[len(items) - n:] if self._truncate_left else items[:n]

    def encode_batch(self, texts, pairs=None, add_special_tokens=True, max_length=None,
                     padding="longest", pad_to_multiple_of=None, truncation=True,
                     return_offsets=False):
        """Encode many texts (and pairs), padded with `pad_id` (attention mask 0).

        padding: "longest", "max_length" (`max_length`, else tokenizer.json's) or None. Chat
        models' files often define no pad token: set `tok.pad_id` (e.g. to `tok.eos_id`).
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of str, not a single "
                            f"{type(texts).__name__}; use encode() for one text")
        texts = list(texts)
        if pairs is None:
            pairs = [None] * len(texts)
        elif isinstance(pairs, (str, bytes)) or len(pairs) != len(texts):
            raise ValueError("pairs must be a list as long as texts")
        batch = [self.encode(t, p, add_special_tokens, max_length, truncation, return_offsets)
                 for t, p in zip(texts, pairs)]
        if padding is None:
            return batch
        length = padded_length(self, batch, padding, max_length, pad_to_multiple_of)
        for encoding in batch:
            self._pad(encoding, length)
        return batch

    def _pad(self, encoding, length):
        missing = length - len(encoding.ids)
        if missing <= 0:
            return
        if self.pad_id is None:
            raise ValueError("cannot pad: tokenizer.json defines no pad token; set pad_id "
                             "(e.g. tok.pad_id = tok.eos_id)")
        fields = [("ids", self.pad_id), ("type_ids", self._pad_type_id), ("attention_mask", 0)]
        if encoding._tokens is not None:
            fields.append(("_tokens", self.id_to_token(self.pad_id)))
        if getattr(encoding, "offsets", None) is not None:
            fields.append(("offsets", (0, 0)))
        for field, pad in fields:
            value, padding = getattr(encoding, field), [pad] * missing
            setattr(encoding, field, padding + value if self._pad_left else value + padding)

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
