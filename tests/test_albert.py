"""ALBERT as a classifier, against transformers + PEFT: embeddings narrower than the layers
taken up by encoder.embedding_hidden_mapping_in, one layer's weights read at every depth (its
LoRA too: each depth's gradient adds into the one adapter), gelu_new, no dropout after the
feed-forward, and AlbertForSequenceClassification's head (BERT's: its pooler, a linear of its
own, under tanh; the classifier trained whole). One LoRA step's loss and every gradient in
float64, PEFT's adapters read here on both backends and ours read by PEFT, the GPU step
against NumPy with dropout, the merged and ONNX exports, a fine-tuned checkpoint; and
ELECTRA-small's kind (its embeddings_project layer), read the same way."""

import json

import numpy as np
import pytest
import torch

import peft_oracle as po
from encoder_checks import check_exports, check_gpu_step, check_peft_step, peft_adapter
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip
from test_bert_oracle import random_batch
from py_engine.models.bert_config import BertConfig, ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_albert_dir(tmp_path_factory.mktemp("albert") / "model", seed=17)


@pytest.fixture(scope="module")
def electra_small(tmp_path_factory):
    return po.tiny_electra_dir(tmp_path_factory.mktemp("electra_small") / "model", seed=19,
                               embedding_size=16)


def vocab(model_dir):
    return json.loads((model_dir / "config.json").read_text())["vocab_size"]


@pytest.mark.parametrize("targets, bias", [
    (("query", "value"), "none"),
    # every linear: the shared layer's, the embeddings' projection and the pooler
    (("query", "key", "value", "dense", "ffn", "ffn_output", "embedding_hidden_mapping_in",
      "pooler"), "lora_only"),
    (("query", "value"), "all"),        # every bias, the embeddings' norm's and projection's too
])
def test_step_matches_peft(tmp_path, tiny, targets, bias):
    adapter, peft = peft_adapter(tiny, tmp_path / "adapter", targets, dtype=torch.float64, bias=bias)
    ids, types, mask, labels = random_batch(np.random.default_rng(), 4, 11, vocab(tiny), 3)
    want = check_peft_step(tiny, adapter, peft, ids, types, mask, labels, token_type_ids=types,
                           head=("classifier.weight",))
    shared = "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.query.lora_A.weight"
    assert any(k.endswith(shared) for k in want)
    if bias == "all":
        assert "albert.encoder.embedding_hidden_mapping_in.bias" in want
        assert "albert.embeddings.LayerNorm.bias" in want


def test_electra_small_step_matches_peft(tmp_path, electra_small):
    targets = ("query", "value", "embeddings_project")
    adapter, peft = peft_adapter(electra_small, tmp_path / "adapter", targets, dtype=torch.float64)
    ids, types, mask, labels = random_batch(np.random.default_rng(), 4, 11, 120, 3)
    want = check_peft_step(electra_small, adapter, peft, ids, types, mask, labels,
                           token_type_ids=types)
    assert "electra.embeddings_project.lora_A.weight" in want


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ("query", "value", "ffn"), seed=4)
    before, after, _ = check_round_trip(tiny, adapter, tmp_path / "trained", device)
    assert np.abs(after["classifier.weight"] - before["classifier.weight"]).max() > 1e-4


def test_gpu_step_matches_numpy_with_dropout(tmp_path, tiny, electra_small, device):
    for model_dir, targets in ((tiny, ("query", "value", "ffn", "embedding_hidden_mapping_in")),
                               (electra_small, ("query", "value", "embeddings_project"))):
        adapter, _ = peft_adapter(model_dir, tmp_path / model_dir.parent.name, targets, seed=6)
        check_gpu_step(device, model_dir, adapter,
                       *random_batch(np.random.default_rng(), 4, 12, vocab(model_dir), 3))


def test_merged_and_onnx_exports(tmp_path, tiny, electra_small):
    """The merged classifier is AlbertForSequenceClassification (the shared layer once); the
    ONNX graph reads it at every depth."""
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ("query", "value", "ffn"), seed=7)
    inputs = check_exports(tiny, adapter, tmp_path, "AlbertForSequenceClassification", TEXTS,
                           LABELS)
    assert inputs == ["input_ids", "attention_mask", "token_type_ids"]
    adapter, _ = peft_adapter(electra_small, tmp_path / "electra_adapter", seed=8)
    check_exports(electra_small, adapter, tmp_path / "electra",
                  "ElectraForSequenceClassification", TEXTS, LABELS)


def test_what_is_not_read_is_refused_by_name():
    config = json.loads(json.dumps({"model_type": "albert", "vocab_size": 30, "hidden_size": 8,
                                    "num_hidden_layers": 2, "num_attention_heads": 2,
                                    "intermediate_size": 16}))
    assert BertConfig(**config).hidden_act == "gelu_new"        # AlbertConfig's defaults
    assert BertConfig(**config).hidden_dropout_prob == 0.0
    for field in ("num_hidden_groups", "inner_group_num"):
        with pytest.raises(ConfigError, match=f"'{field}' \\(2\\): ALBERT with other than one "
                                              "group of one layer"):
            BertConfig(**dict(config, **{field: 2}))
    with pytest.raises(ConfigError, match="embedding_size 4 must be positive and, where no layer "
                                          "projects the embeddings, hidden_size 8"):
        BertConfig(**dict(config, model_type="bert", embedding_size=4))


def train_spiece(path, **options):
    """A SentencePiece Unigram model trained offline as ALBERT's spiece.model holds its
    vocabulary (<pad> 0, <unk> 1, [CLS] 2, [SEP] 3; sentencepiece's default normalizer,
    nmt_nfkc), written to path / "spiece.model"; `options` the trainer's own."""
    import sentencepiece as spm

    from roberta_checkpoints import CORPUS

    corpus = path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3 + [" ".join(po.WORDS), "Café ``quoted'' Ünïcödé ﬁne"]),
                      encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(path / "spiece"), vocab_size=70, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>",
        bos_piece="[CLS]", eos_piece="[SEP]", minloglevel=2, **options)


def test_albert_s_tokenizer_reads_as_transformers(tmp_path):
    """The tokenizer.json transformers writes for ALBERT (``/'' to a quote, NFKD, accents
    stripped, lower case, whitespace split, Metaspace, Unigram, [CLS] A [SEP] B [SEP] with type
    ids) over a SentencePiece vocabulary trained offline: the same ids and type ids."""
    import sentencepiece as spm
    from transformers import AlbertTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    train_spiece(tmp_path, user_defined_symbols=["[MASK]"])
    pieces = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    theirs = AlbertTokenizer(vocab=[(pieces.id_to_piece(i), pieces.get_score(i))
                                    for i in range(pieces.get_piece_size())])
    theirs.save_pretrained(tmp_path / "tokenizer")
    ours = classifier_tokenizer(tmp_path / "tokenizer")
    texts = ["The Film was GREAT", "Café ``quoted'' text  with  Ünïcödé", "a very bad plot.",
             "l'été   à Paris", "  leading and trailing  "]
    for text in texts:
        assert ours.encode_batch([text], None, max_length=64, padding=None)[0].ids == \
            theirs(text)["input_ids"], text
    pair = ours.encode_batch(["first text"], ["second one"], max_length=64, padding=None)[0]
    want = theirs("first text", "second one", return_token_type_ids=True)
    assert pair.ids == want["input_ids"] and pair.type_ids == want["token_type_ids"]
    assert 1 in pair.type_ids


@pytest.mark.parametrize("options", [{}, {"do_lower_case": False, "keep_accents": True},
                                     {"add_prefix_space": False}])
def test_a_spiece_model_alone_reads_as_transformers(tmp_path, options):
    """A checkpoint shipping spiece.model alone (no tokenizer.json): the tokenizer
    transformers' AlbertTokenizer builds from it, its normalizer's precompiled charsmap
    (sentencepiece's nmt_nfkc) and tokenizer_config.json's options included."""
    from transformers import AutoTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    train_spiece(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "spiece.model").rename(model / "spiece.model")
    (model / "config.json").write_text(json.dumps({"model_type": "albert"}))
    (model / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "AlbertTokenizer", **options}))
    theirs = AutoTokenizer.from_pretrained(str(model))
    ours = classifier_tokenizer(model)
    texts = ["The Film was GREAT", "Café ``quoted'' text  with  Ünïcödé", "ﬁne ①  ＡＢＣ",
             "l'été   à Paris [MASK]", "  leading and trailing  "]
    for text in texts:
        assert ours.encode_batch([text], None, max_length=64, padding=None)[0].ids == \
            theirs(text)["input_ids"], text
    assert ours.pad_id == theirs.pad_token_id == 0
    mask = theirs.convert_tokens_to_ids("[MASK]")
    assert mask == 70 and mask in ours.encode_batch(["a [MASK] b"], None, max_length=64,
                                                    padding=None)[0].ids


def test_a_spiece_model_alone_exports_its_tokenizer(tmp_path, capsys):
    """An ALBERT shipping spiece.model alone trains, and its ONNX export carries the
    tokenizer.json transformers builds from it (read back by transformers)."""
    from transformers import AutoTokenizer

    from conftest import run
    from py_engine.cli import main
    from py_engine.data.classification import Example
    from py_engine.train.classifier import TextClassifier
    from py_engine.train.config import ClassifierTrainConfig

    model = po.tiny_albert_dir(tmp_path / "model", seed=9, vocab_size=71)
    (model / "tokenizer.json").unlink()
    train_spiece(tmp_path)
    (tmp_path / "spiece.model").rename(model / "spiece.model")
    clf = run(TextClassifier.create(model, LABELS))
    run(clf.fit([Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS)],
                ClassifierTrainConfig(epochs=1, batch_size=4)))
    run(clf.save(tmp_path / "adapter"))
    assert main(["export", "--format", "onnx", "--model", str(model), "--adapter",
                 str(tmp_path / "adapter"), "--out", str(tmp_path / "onnx")]) == 0, \
        capsys.readouterr().err
    exported = AutoTokenizer.from_pretrained(str(tmp_path / "onnx"))
    for text in TEXTS:
        assert exported(text)["input_ids"] == clf.encode([text])[0].ids, text
