"""The Unigram (SentencePiece) tokenizer and the Precompiled normalizer against code we did not
write: Hugging Face `tokenizers` (what a T5 / FLAN-T5 tokenizer.json is run by) and
`sentencepiece` itself.

SentencePiece unigram models are trained here, offline, on text generated from
test_tokenizer_bpe's corpus pieces, then converted to tokenizer.json the way transformers
converts a T5 checkpoint's spiece.model (its T5Converter: Precompiled charsmap + Strip +
Replace normalizers, Metaspace, the "</s>" template, <extra_id_N> special tokens):
  - "t5": nmt_nfkc rules (T5's, mT5's), no byte fallback, pad/eos/unk = 0/1/2 like T5;
  - "t5-bytes": nfkc rules with byte_fallback (unknown characters become <0xNN> pieces);
  - "flan": the nmt_nfkc model with the WhitespaceSplit + Metaspace pre-tokenizer and the
    Replace(" {2,}" -> " ") normalizer older T5 / FLAN-T5 files carry;
  - "albert": ALBERT / XLNet style: Replace ``/'' -> ", NFKD, StripAccents, Lowercase, then
    the charsmap; Metaspace(prepend_scheme="first").
Each is compared on test_tokenizer_bpe's corpus (5000+ strings: prose, code, whitespace runs,
accents, CJK, full-width forms, emoji, control characters, random code points, special tokens
in the text, 10k+ character inputs): ids and tokens identical, decoding identical, offsets.

Run: .venv/bin/python -m pytest tests/test_tokenizer_unigram.py -q   (-s prints counts)
"""

import base64
import collections
import json
import random
import types
import unicodedata
import warnings

import pytest
import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from transformers.convert_slow_tokenizer import T5Converter

from py_engine.tokenizers import SubwordTokenizer
from py_engine.tokenizers.checkpoint import seq2seq_tokenizer
from py_engine.tokenizers.precompiled import Precompiled
from py_engine.tokenizers.tokenizer_file import TokenizerFileError
from test_tokenizer_bpe import make_corpus, report, segment

N_EXTRA_IDS = 5
STYLES = ["t5", "t5-bytes", "flan", "albert"]
SPECIAL = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(N_EXTRA_IDS)]
# Characters the trained models have no piece for (coverage < 1 leaves rare ones out, these
# never occur in training): unknown runs, fused.
UNSEEN = "ʬ\u16a0ꙮ𓀀"


def training_lines():
    """Generated lines with their rarest characters dropped (the trainer wants a piece for
    each character of 98% of the text), so that the corpus meets unknown characters."""
    rng = random.Random(7)
    lines = [" ".join(segment(rng) for _ in range(rng.randint(1, 8))).replace("\n", " ")
             for _ in range(3000)]
    counts = collections.Counter("".join(lines))
    return ["".join(c for c in line if counts[c] >= 4) for line in lines]


class _Converter(T5Converter):
    """transformers' T5 conversion; byte fallback kept for models trained with it (T5's own
    files have none), decoded like Llama's files decode byte pieces."""

    def __init__(self, original, byte_fallback):
        self.handle_byte_fallback = byte_fallback
        super().__init__(original)

    def decoder(self, replacement, add_prefix_space):
        if not self.handle_byte_fallback:
            return super().decoder(replacement, add_prefix_space)
        return decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                  decoders.Fuse(), decoders.Strip(" ", 1, 0)])


def convert(model_file, byte_fallback=False, legacy=True):
    """tokenizer.json of a .model file as transformers writes it for T5, with its
    <extra_id_N> sentinels added as special tokens (as T5's files have them)."""
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    original = types.SimpleNamespace(vocab_file=str(model_file), _extra_ids=N_EXTRA_IDS,
                                     legacy=legacy, convert_tokens_to_ids=sp.piece_to_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # its warning about byte fallback
        tok = _Converter(original, byte_fallback).converted()
    tok.add_special_tokens([sp.id_to_piece(i) for i in range(3)]
                           + [f"<extra_id_{i}>" for i in range(N_EXTRA_IDS)])
    return sp, tok


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """style -> (sentencepiece processor, tokenizers.Tokenizer)."""
    folder = tmp_path_factory.mktemp("spm")
    text = folder / "train.txt"
    text.write_text("\n".join(training_lines()), encoding="utf-8")
    trained = {}
    for rule, byte_fallback in (("nmt_nfkc", False), ("nfkc", True)):
        prefix = folder / f"{rule}_{int(byte_fallback)}"
        spm.SentencePieceTrainer.train(
            input=str(text), model_prefix=str(prefix), model_type="unigram",
            vocab_size=3000, normalization_rule_name=rule, byte_fallback=byte_fallback,
            character_coverage=0.98, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            minloglevel=2, num_threads=1)
        trained[rule] = f"{prefix}.model"
    out = {"t5": convert(trained["nmt_nfkc"]),
           "t5-bytes": convert(trained["nfkc"], byte_fallback=True)}
    sp, flan = convert(trained["nmt_nfkc"])
    flan.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Metaspace()])
    flan.normalizer = normalizers.Sequence([charsmap_normalizer(sp),
                                            normalizers.Replace(Regex(" {2,}"), " ")])
    out["flan"] = sp, flan
    sp, albert = convert(trained["nfkc"], legacy=False)
    albert.normalizer = normalizers.Sequence([
        normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
        normalizers.StripAccents(), normalizers.Lowercase(), charsmap_normalizer(sp),
        normalizers.Replace(Regex(" {2,}"), " ")])
    out["albert"] = sp, albert
    return out


def charsmap_normalizer(sp):
    return normalizers.Precompiled(charsmap(sp))


def charsmap(sp):
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    return proto.normalizer_spec.precompiled_charsmap


@pytest.fixture(scope="module")
def corpus():
    texts = make_corpus()
    rng = random.Random(11)
    extra = ["ｅ\u0301 ﬁ\u0301 ①\u0308 ｅ\u0301\u0302", "Ｆｕｌｌ－ｗｉｄｔｈ　ｆｏｒｍｓ！ ５０％",
             "㎏ ㍻ ℡ ﬃ ǅ Ⅻ ½", UNSEEN, f"a{UNSEEN}b {UNSEEN[::-1]}", "<extra_id_0> x<extra_id_4>",
             "``quoted'' text", "\r\n\r\n", "  many    spaces  ", "<0x41>", "</s><pad><unk>"]
    extra += [unicodedata.normalize("NFD", t) for t in texts[::7]]
    extra += ["".join(rng.choice(UNSEEN + "ab ") for _ in range(rng.randint(1, 12)))
              for _ in range(200)]
    return texts + extra


def same_case_and_marks(text):
    """Whether Lowercase and StripAccents see text alike here and in the library: they use
    the interpreter's Unicode database, the library tables of its own (older for marks, newer
    for case), and the two differ on letters and marks of recent scripts beyond the BMP."""
    return all(ord(c) < 0x10000 or unicodedata.category(c)[0] not in "LM" and
               unicodedata.category(c) != "Cn" for c in text)


def ours_for(ref):
    return SubwordTokenizer.from_json(ref.to_str())


# ---- against Hugging Face tokenizers ------------------------------------------------------

@pytest.mark.parametrize("style", STYLES)
def test_encode_and_decode_like_the_library(corpus, models, style):
    _, ref = models[style]
    config = json.loads(ref.to_str())
    assert config["model"]["type"] == "Unigram"
    assert config["normalizer"]["normalizers"][0 if style != "albert" else 5]["type"] == \
        "Precompiled"
    ours = ours_for(ref)
    texts = corpus if style in ("t5", "t5-bytes") else corpus[::3]
    if style == "albert":
        texts = [t for t in texts if same_case_and_marks(t)]
    theirs = ref.encode_batch(texts)
    bad, unknowns, bytes_seen = [], 0, 0
    for text, r in zip(texts, theirs):
        m = ours.encode(text)
        if (m.ids, m.tokens) != (r.ids, r.tokens):
            bad.append((text, m.tokens[:30], r.tokens[:30]))
        unknowns += ours.unk_id in m.ids
        bytes_seen += any(t.startswith("<0x") for t in m.tokens)
    assert not bad, report(bad, len(texts), f"strings ({style})")
    # the corpus reaches what differs from BPE: unknown runs, and byte pieces where they exist
    assert unknowns > 100 or style == "t5-bytes"
    assert bytes_seen > 100 or style != "t5-bytes"
    for skip in (True, False):
        ids = [r.ids for r in theirs]
        mine = [ours.decode(i, skip_special_tokens=skip) for i in ids]
        bad = [(t, m, r) for t, m, r in zip(texts, mine, ref.decode_batch(
            ids, skip_special_tokens=skip)) if m != r]
        assert not bad, report(bad, len(texts), f"decodings ({style}, skip={skip})")
    print(f"\n{style}: {len(texts)} strings: ids, tokens and decoding identical "
          f"({unknowns} with unknown runs, {bytes_seen} with byte pieces)")


@pytest.mark.parametrize("style", ["t5", "t5-bytes"])
def test_the_unknown_pieces_own_text_fuses_with_unknown_characters(models, style):
    """The library fuses unknown tokens by id, so the unknown piece's own text ("<unk>", where
    no added token takes it: here single_word after a letter) fuses with the unknown
    characters beside it into one token, or (byte_fallback) into the bytes of the whole run."""
    _, ref = models[style]
    config = json.loads(ref.to_str())
    for token in config["added_tokens"]:
        token["single_word"] = True
    ref = Tokenizer.from_str(json.dumps(config))
    ours = SubwordTokenizer.from_json(json.dumps(config))
    for text in [f"is<unk>{UNSEEN}", f"x{UNSEEN}<unk>y", "is<unk>", f"{UNSEEN} <unk>{UNSEEN}"]:
        want, got = ref.encode(text), ours.encode(text, return_offsets=True)
        assert (got.ids, got.tokens, got.offsets) == (want.ids, want.tokens, want.offsets), text
    fused = ours.encode(f"is<unk>{UNSEEN}").tokens
    assert (f"<unk>{UNSEEN}" in fused) if style == "t5" else ("<unk>" not in fused)


@pytest.mark.parametrize("style", ["t5", "t5-bytes"])
def test_offsets_like_the_library(corpus, models, style):
    """encode(return_offsets=True): the same ids, and the library's offsets on every text the
    charsmap leaves as it is. Where it replaces or removes characters, the library's
    bookkeeping ties the result to neighbouring characters in ways of its own (a removed
    control character's place goes to the next one); ours gives each new character the whole
    cluster it replaced, and those offsets are only checked to lie within the text."""
    sp, ref = models[style]
    charsmap_of = Precompiled(base64.b64encode(charsmap(sp)).decode())
    ours = ours_for(ref)
    texts = corpus[::2]
    bad, compared = [], 0
    for text, r in zip(texts, ref.encode_batch(texts)):
        m = ours.encode(text, return_offsets=True)
        if m.ids != r.ids:
            bad.append((text, m.ids[:20], r.ids[:20]))
        elif charsmap_of.normalize(text) == text:
            compared += 1
            if m.offsets != r.offsets:
                diff = [(k, mo, ro) for k, (mo, ro) in enumerate(zip(m.offsets, r.offsets))
                        if mo != ro]
                bad.append((text, diff[:3], r.tokens[diff[0][0]]))
        elif not all(0 <= a <= b <= len(text) for a, b in m.offsets):
            bad.append((text, m.offsets, "within the text"))
    assert not bad, report(bad, len(texts), f"offsets ({style})")
    assert compared > len(texts) // 5
    print(f"\n{style}: offsets of {compared} strings identical to the library's, "
          f"{len(texts)} with the same ids")


@pytest.mark.parametrize("style", STYLES)
def test_vocabulary_and_special_ids(models, style):
    sp, ref = models[style]
    ours = ours_for(ref)
    assert ours.vocab_size == ref.get_vocab_size() == sp.get_piece_size() + N_EXTRA_IDS
    assert [ours.id_to_token(i) for i in range(ours.vocab_size)] == \
        [ref.id_to_token(i) for i in range(ours.vocab_size)]
    assert (ours.eos_id, ours.unk_id) == (1, 2) == (sp.eos_id(), sp.unk_id())
    assert ours.token_to_id("<extra_id_0>") == ref.token_to_id("<extra_id_0>")
    assert ours.encode("x").ids[-1] == ours.eos_id      # the template appends </s>


def test_pairs_truncation_and_padding(corpus, models):
    ref = Tokenizer.from_str(models["t5"][1].to_str())
    ours = ours_for(ref)
    ours.pad_id = 0
    ref.enable_truncation(max_length=40)
    ref.enable_padding(pad_id=0, pad_token="<pad>", pad_to_multiple_of=8)
    texts = [t for t in corpus if len(t) < 2000][:1200]
    rng = random.Random(4)
    start = 0
    while start < len(texts):
        batch = texts[start:start + rng.randint(1, 30)]
        pairs = rng.sample(texts, len(batch)) if rng.random() < 0.4 else None
        theirs = ref.encode_batch(list(zip(batch, pairs)) if pairs else batch)
        mine = ours.encode_batch(batch, pairs=pairs, max_length=40, pad_to_multiple_of=8)
        for m, r in zip(mine, theirs):
            assert (m.ids, m.type_ids, m.attention_mask, m.tokens) == \
                (r.ids, r.type_ids, r.attention_mask, r.tokens)
        start += len(batch)


# ---- against sentencepiece itself ---------------------------------------------------------

def plain(text):
    """Texts on which the converted tokenizer.json and sentencepiece mean to agree: not where
    the library's grapheme-wise charsmap drops marks after a replaced character ("ｅ" + U+0301
    -> "e"), its Strip/Replace steps treat leading and non-space whitespace otherwise, special
    tokens are added tokens (plain text for sentencepiece), "▁" is typed in (a space for
    sentencepiece) or a "<0xNN>" piece is spelled out (matched as a piece by the library)."""
    return not any(unicodedata.category(c)[0] in "MCZ" and c != " " for c in text) \
        and not text.startswith(" ") and "  " not in text and "▁" not in text \
        and "<0x" not in text and not any(special in text for special in SPECIAL)


@pytest.mark.parametrize("style", ["t5", "t5-bytes"])
def test_ids_like_sentencepiece(corpus, models, style):
    """Our ids are sentencepiece's on (nearly) every plain text; where they differ, they are
    the library's: the converted tokenizer.json and sentencepiece differ there themselves."""
    sp, ref = models[style]
    ours = ours_for(ref)
    texts = [t for t in corpus if plain(t)]
    assert len(texts) > 600
    differ, bad = 0, []
    for text in texts:
        mine, theirs = ours.encode(text, add_special_tokens=False), sp.encode(text)
        if mine.ids != theirs:
            differ += 1
            if mine.ids != ref.encode(text, add_special_tokens=False).ids:
                bad.append((text, mine.tokens[:30], sp.encode(text, out_type=str)[:30]))
    assert not bad, report(bad, len(texts), f"strings ({style}; neither sentencepiece's)")
    assert differ <= len(texts) // 100, f"{differ} of {len(texts)} differ from sentencepiece"
    print(f"\n{style}: {len(texts)} strings: ids identical to sentencepiece's but {differ} "
          "(where the library differs from it too)")


# ---- the Precompiled normalizer on its own ------------------------------------------------

def normalizer_corpus(corpus):
    rng = random.Random(12)
    extra = [chr(c) for c in range(0x20, 0x3400)]      # every BMP character up to CJK
    extra += ["".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(1, 8)))
              for _ in range(3000)]
    extra += [a + m for a in "aeoｅﬁ①Ａ가\u1100👍" for m in
              ("\u0301", "\u0308\u0301", "\u0323\u0302\u0301", "\u1161", "\U0001F3FD",
               "\u200d👍", "\ufe0f", "\u0301\u0301\u0301")]
    extra = [t for t in extra if not any(0xD800 <= ord(c) < 0xE000 for c in t)]
    return corpus + extra


@pytest.mark.parametrize("style", ["t5", "t5-bytes"])
def test_precompiled_normalizer_like_the_library(corpus, models, style):
    sp, _ = models[style]
    blob = charsmap(sp)
    ref = normalizers.Precompiled(blob)
    ours = Precompiled(base64.b64encode(blob).decode())
    texts = normalizer_corpus(corpus)
    bad = [(t, ours.normalize(t), ref.normalize_str(t)) for t in texts
           if ours.normalize(t) != ref.normalize_str(t)]
    assert not bad, report(bad, len(texts), f"normalized strings ({style})")
    changed = sum(ours.normalize(t) != t for t in texts)
    assert changed > 1000
    for t in texts[::5]:    # the aligned path gives the same text, an alignment per character
        text, align = ours.normalize_aligned(t, [(k, k + 1) for k in range(len(t))])
        assert text == ours.normalize(t) and len(align) == len(text)
    print(f"\n{style}: {len(texts)} strings normalized as the library does ({changed} changed)")


def test_a_replaced_character_keeps_or_drops_the_next_as_the_library_does(models):
    """The library replaces a whole grapheme cluster under 6 bytes by the replacement of its
    first character, dropping what joined it; so every character after a replaced one must
    join it or not as UAX #29 says. Every spacing mark (Mc: the exceptions UAX #29 makes for
    some, U+102B, U+1A61, U+AA7B... start clusters of their own) and fresh random characters,
    each after replaced characters of 1, 2 and 3 bytes; characters this Python's Unicode does
    not have are left out (see precompiled.py)."""
    sp, _ = models["t5"]
    blob = charsmap(sp)
    ref, ours = normalizers.Precompiled(blob), Precompiled(base64.b64encode(blob).decode())
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    replaced = [c for c in map(chr, range(0x80, 0x10000)) if not 0xD800 <= ord(c) < 0xE000
                and ours.normalize(c) != c]
    firsts = [c for c in replaced if len(c.encode()) == 2][:40] + rng.sample(
        [c for c in replaced if len(c.encode()) == 3], 40) + ["\u00a0", "\u00b4", "\uff45", "\ufb01"]
    assigned = [c for c in map(chr, range(0x80, 0x10000)) if unicodedata.category(c) not in ("Cn", "Cs")]
    marks = [c for c in assigned if unicodedata.category(c) == "Mc"]
    pairs = [(a, b) for a in firsts for b in marks] + \
        [(rng.choice(firsts), rng.choice(assigned)) for _ in range(20000)]
    bad = [(a + b, ours.normalize(a + b), ref.normalize_str(a + b)) for a, b in pairs
           if len((a + b).encode()) < 6 and ours.normalize(a + b) != ref.normalize_str(a + b)]
    assert not bad, f"seed {seed}: " + report(bad, len(pairs), "pairs")


# ---- the checkpoint directory -------------------------------------------------------------

def test_seq2seq_tokenizer_from_a_checkpoint_directory(models, tmp_path):
    _, ref = models["t5"]
    (tmp_path / "tokenizer.json").write_text(ref.to_str(), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}), encoding="utf-8")
    tok = seq2seq_tokenizer(tmp_path)
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    text = "translate English to German: The house is wonderful."
    assert tok.encode(text).ids == ref.encode(text).ids
    assert tok.decode(tok.encode(text).ids) == ref.decode(ref.encode(text).ids)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        seq2seq_tokenizer(tmp_path / "missing")


# ---- what is refused ----------------------------------------------------------------------

def test_bad_unigram_files_are_refused(models):
    config = json.loads(models["t5"][1].to_str())
    model = config["model"]
    cases = [
        (dict(model, vocab=[["a", "x"]]), "vocab"),
        (dict(model, vocab=[["a"]]), "vocab"),
        (dict(model, vocab=[]), "vocab"),
        (dict(model, unk_id=len(model["vocab"])), "unk_id"),
        (dict(model, unk_id="2"), "unk_id"),
    ]
    for bad_model, field in cases:
        with pytest.raises(TokenizerFileError, match=field):
            SubwordTokenizer.from_json(dict(config, model=bad_model))
    charsmap_bad = dict(config, normalizer={"type": "Precompiled",
                                            "precompiled_charsmap": "not base64!"})
    with pytest.raises(ValueError, match="precompiled_charsmap"):
        SubwordTokenizer.from_json(charsmap_bad)
    truncated = dict(config, normalizer={"type": "Precompiled",
                                         "precompiled_charsmap": "AAEAAAAA"})
    with pytest.raises(ValueError, match="trie size"):
        SubwordTokenizer.from_json(truncated)
    no_unk = SubwordTokenizer.from_json(dict(config, model=dict(model, unk_id=None)))
    with pytest.raises(ValueError, match="unk_id"):
        no_unk.encode(UNSEEN)


# ---- in the browser -----------------------------------------------------------------------

@pytest.mark.browser
def test_in_the_browser_like_the_library(corpus, models, engine_page):
    """The same tokenizer inside Pyodide (the wheel's pure Python, no compiled tokenizers):
    a checkpoint directory's T5 tokenizer gives the library's ids and decodings."""
    from py_engine.harness import put_files, run_json

    _, ref = models["t5"]
    texts = [t for t in corpus if len(t) < 500][::10]
    put_files(engine_page, {"/t5tok/tokenizer.json": ref.to_str().encode(),
                            "/t5tok/texts.json": json.dumps(texts).encode()})
    got = run_json(engine_page, """
import json
from py_engine.tokenizers.checkpoint import seq2seq_tokenizer
tok = seq2seq_tokenizer("/t5tok")
texts = json.load(open("/t5tok/texts.json", encoding="utf-8"))
ids = [tok.encode(t).ids for t in texts]
json.dumps({"ids": ids, "decoded": [tok.decode(i) for i in ids]})
""")
    theirs = ref.encode_batch(texts)
    assert len(texts) > 400
    bad = [(t, m, r.ids) for t, m, r in zip(texts, got["ids"], theirs) if m != r.ids]
    assert not bad, report(bad, len(texts), "strings in the browser")
    assert got["decoded"] == ref.decode_batch([r.ids for r in theirs])
