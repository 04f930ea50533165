"""SentencePiece model files read here (tokenizers/sentencepiece_model.py) against the
sentencepiece library, and DeBERTa-v3's tokenizer built from spm.model alone against
transformers' DebertaV2Tokenizer (which builds its tokenizer from the same file)."""

import json

import pytest
import sentencepiece as spm

import peft_oracle as po
from test_adapter_roundtrip import TEXTS

from py_engine.tokenizers.sentencepiece_model import SentencePieceModelError, read_pieces

KINDS = {1: "normal", 2: "unknown", 3: "control", 4: "user defined", 5: "unused", 6: "byte"}
MORE_TEXTS = TEXTS + ["The FILM was [MASK] great!", "zzz unknown éh", "", "  two  spaces\tand a tab\n",
                      "e\u0301 composed, trailing   ", "[CLS] inside [SEP] text [PAD]"]


@pytest.mark.parametrize("model_type, extra", [
    ("unigram", {}),
    ("bpe", dict(user_defined_symbols=["<mask>", "@@"], byte_fallback=True)),
])
def test_the_pieces_are_the_library_s(tmp_path, model_type, extra):
    """Every piece's text, score (float32, exactly) and type as the library reads them."""
    from roberta_checkpoints import CORPUS

    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "m"),
                                   vocab_size=330 if extra else 50, model_type=model_type,
                                   hard_vocab_limit=False, minloglevel=2, **extra)
    data = (tmp_path / "m.model").read_bytes()
    library = spm.SentencePieceProcessor(model_proto=data)
    pieces = read_pieces(data)
    assert len(pieces) == library.get_piece_size()
    for n, piece in enumerate(pieces):
        kind = ("unknown" if library.is_unknown(n) else "control" if library.is_control(n) else
                "unused" if library.is_unused(n) else "byte" if library.is_byte(n) else None)
        assert (piece.text, piece.score) == (library.id_to_piece(n), library.get_score(n)), n
        assert kind is None or KINDS[piece.kind] == kind, n
    assert {KINDS[p.kind] for p in pieces} >= ({"byte", "user defined"} if extra else {"control"})


@pytest.mark.parametrize("options", [{}, dict(do_lower_case=True, split_by_punct=True),
                                     dict(add_prefix_space=False)])
def test_deberta_s_spm_model_alone_tokenizes_as_transformers(tmp_path, options):
    """A DeBERTa-v2 folder with spm.model and no tokenizer.json (DeBERTa-v3 as released):
    the tokenizer transformers' DebertaV2Tokenizer builds from it ([MASK] added after the
    pieces), with tokenizer_config.json's options: the same ids, pairs and padding included."""
    from transformers import AutoTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    po.deberta_spm(tmp_path, **options)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    ours, theirs = classifier_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(theirs).__name__ == "DebertaV2Tokenizer" and theirs.convert_tokens_to_ids("[MASK]") == 60
    for text in MORE_TEXTS:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
    assert ours.encode("not bad", "a fine plot").ids == theirs("not bad", "a fine plot")["input_ids"]
    padded = ours.encode_batch(["not bad", "the film was really great"], padding="longest")
    want = theirs(["not bad", "the film was really great"], padding=True)
    assert [e.ids for e in padded] == want["input_ids"] and ours.pad_id == 0


def test_a_damaged_model_file_is_refused_by_name(tmp_path):
    po.deberta_spm(tmp_path)
    data = (tmp_path / "spm.model").read_bytes()
    (tmp_path / "spm.model").write_bytes(data[: len(data) // 2])
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    with pytest.raises(SentencePieceModelError, match="spm.model is not a SentencePiece model"):
        classifier_tokenizer(tmp_path)
    with pytest.raises(SentencePieceModelError, match="no pieces"):
        read_pieces(b"")
