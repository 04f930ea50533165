"""The pre-tokenizers of tokenizer.json files beyond the common ones (Whitespace, BertPreTokenizer,
CharDelimiterSplit, FixedLength, UnicodeScripts, Split with invert) held to Hugging Face
tokenizers: each one's pieces and their offsets on test_tokenizer_bpe's corpus (every script,
spaces of every kind, digits, marks) are the library's pre_tokenize_str, the Whitespace
pre-tokenizer's word class and UnicodeScripts' scripts are the library's on every code point,
and BPE tokenizers the library trained over Whitespace, BertPreTokenizer and UnicodeScripts
encode the corpus as it does (ids, tokens, offsets), so do WordPiece ones trained with the
library's other normalizers and pre-tokenizers."""

import json

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from py_engine.tokenizers import BPETokenizer
from py_engine.tokenizers.bpe import pre_tokenizer_of
from test_tokenizer_bpe import make_corpus, training_texts

SPLIT_BEHAVIORS = ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]
CASES = {
    "whitespace": pre_tokenizers.Whitespace(),
    "bert": pre_tokenizers.BertPreTokenizer(),
    "char_delimiter_space": pre_tokenizers.CharDelimiterSplit(" "),
    "char_delimiter_e": pre_tokenizers.CharDelimiterSplit("e"),
    "fixed_length_3": pre_tokenizers.FixedLength(3),
    "fixed_length_default": pre_tokenizers.FixedLength(),
    **{f"split_invert_{b}": pre_tokenizers.Split(Regex(r"\p{L}+"), behavior=b, invert=True)
       for b in SPLIT_BEHAVIORS},
    "split_invert_string": pre_tokenizers.Split("ab", behavior="removed", invert=True),
    "unicode_scripts": pre_tokenizers.UnicodeScripts(),
    "scripts_after_whitespace": pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                         pre_tokenizers.UnicodeScripts()]),
    "sequence": pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(
        individual_digits=True), pre_tokenizers.FixedLength(4)]),
}


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


def spec_of(pre_tokenizer):
    """The pre-tokenizer as tokenizer.json writes it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    return json.loads(tok.to_str())["pre_tokenizer"]


@pytest.mark.parametrize("name", CASES)
def test_pieces_and_offsets_are_the_librarys(corpus, name):
    theirs = CASES[name]
    ours = pre_tokenizer_of(spec_of(theirs))
    bad = []
    for text in corpus:
        words = ours([(text, [(i, i + 1) for i in range(len(text))])], True)
        mine = [(word, (align[0][0], align[-1][1])) for word, align in words]
        if mine != theirs.pre_tokenize_str(text):
            bad.append(text)
    assert not bad, (len(bad), bad[:3])


def test_the_whitespace_word_class_is_the_librarys_on_every_code_point():
    from py_engine.tokenizers.regex_classes import WHITESPACE_WORD, whitespace_word_from_library
    from py_engine.tokenizers.wordpiece import _ranges

    ours = {c for a, b in _ranges(WHITESPACE_WORD) for c in range(a, b + 1)}
    assert ours == set(whitespace_word_from_library())
    assert 0xB2 not in ours and 0x5F in ours and 0x300 in ours      # No, Pc, Mn


def test_the_scripts_are_the_librarys_on_every_code_point():
    from py_engine.tokenizers.regex_classes import (UNICODE_SCRIPTS, script_ranges,
                                                    unicode_scripts_from_library)

    assert script_ranges(UNICODE_SCRIPTS) == unicode_scripts_from_library()


@pytest.mark.parametrize("pre", ["whitespace", "bert", "unicode_scripts"])
def test_a_bpe_over_the_pre_tokenizer_encodes_as_the_library(corpus, pre):
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = CASES[pre]
    tok.train_from_iterator(training_texts(), trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["[UNK]"], limit_alphabet=200, show_progress=False))
    ours = BPETokenizer.from_json(tok.to_str())
    bad = []
    for text, theirs in zip(corpus, tok.encode_batch(corpus)):
        mine = ours.encode(text, return_offsets=True)
        if (mine.ids, mine.tokens, mine.offsets) != (theirs.ids, theirs.tokens, theirs.offsets):
            bad.append((text, mine.tokens[:20], theirs.tokens[:20]))
    assert not bad, (len(bad), bad[:3])


@pytest.mark.parametrize("pre", ["whitespace", "unicode_scripts", "none"])
def test_a_wordpiece_over_other_normalizers_and_pre_tokenizers_encodes_as_the_library(corpus, pre):
    """A WordPiece the library trains as its own examples do (NFD, Lowercase, StripAccents;
    Whitespace), not BERT's BertNormalizer and BertPreTokenizer: the same ids and tokens."""
    from tokenizers import normalizers, processors

    from py_engine.tokenizers import WordPieceTokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=40))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    if pre != "none":
        tok.pre_tokenizer = CASES[pre]
    tok.train_from_iterator(training_texts(), trainers.WordPieceTrainer(
        vocab_size=2000, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"], limit_alphabet=300,
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    ours = WordPieceTokenizer.from_json(tok.to_str())
    bad = [text for text, theirs in zip(corpus, tok.encode_batch(corpus))
           if (ours.encode(text).ids, ours.encode(text).tokens) != (theirs.ids, theirs.tokens)]
    assert not bad, (len(bad), bad[:3])


def test_what_is_refused_is_named():
    with pytest.raises(ValueError, match="'Fancy'.*UnicodeScripts"):
        pre_tokenizer_of({"type": "Fancy"})
    with pytest.raises(ValueError, match="delimiter must be one character, got 'ab'"):
        pre_tokenizer_of({"type": "CharDelimiterSplit", "delimiter": "ab"})
    with pytest.raises(ValueError, match="length must be a positive integer, got 0"):
        pre_tokenizer_of({"type": "FixedLength", "length": 0})
