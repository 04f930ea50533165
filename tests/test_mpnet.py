"""MPNet as a classifier, against transformers + PEFT: BERT's encoder under "mpnet." with its own
names (attention.attn.q ...), no token types, positions counted from the row after its padding
row, a relative position bias (one table, T5's bidirectional buckets) added to every layer's
attention scores, and MPNetForSequenceClassification's head (RoBERTa's: classifier.dense, tanh,
classifier.out_proj, trained whole): one LoRA step's loss and every gradient, the checkpoint's
tokenizer, PEFT's adapters read here on both backends and ours read by PEFT, the GPU step
against NumPy with dropout, the merged and ONNX exports, the CLI."""

import json

import numpy as np
import pytest
import torch

import peft_oracle as po
from encoder_checks import check_classifier_checkpoint, check_exports, check_gpu_step, check_peft_step
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip

PAD = 1     # MPNet's padding row and token


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_mpnet_dir(tmp_path_factory.mktemp("mpnet") / "model", seed=37)


def peft_adapter(model_dir, path, targets=("q", "v"), seed=3, dtype=torch.float32, **lora):
    peft = po.peft_model(model_dir, 3, target_modules=targets, seed=seed, dtype=dtype, **lora)
    return po.save_adapter(peft, path, labels=LABELS), peft


def mpnet_batch(rng, B, T, vocab=120, labels=3):
    """Ids past MPNet's specials, rows after the first padded with <pad> (transformers numbers a
    token's position from the count of non-padding ids before it); T over 16 reaches the
    logarithmic buckets."""
    ids = rng.integers(5, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, rng.integers(2, T):] = 0
    ids[mask == 0] = PAD
    ids[:, 0] = 0
    return ids, np.zeros_like(ids), mask, rng.integers(0, labels, B)


@pytest.mark.parametrize("targets, bias", [
    (("q", "v"), "none"),
    (("q", "k", "v", "o", "dense"), "lora_only"),
    (("q", "v", "intermediate.dense", "output.dense"), "none"),
    (("q", "v"), "all"),
])
def test_step_matches_peft(tmp_path, tiny, targets, bias):
    """Float64: the loss to 1e-12, every gradient (LoRA, the head trained whole, the biases that
    train) to 1e-10, over sequences long enough for the far buckets. PEFT's bias="all" trains
    the parameters whose names end in ".bias": the norms' too, not the relative position bias
    table ("relative_attention_bias.weight")."""
    adapter, peft = peft_adapter(tiny, tmp_path / "adapter", targets, dtype=torch.float64, bias=bias)
    want = check_peft_step(tiny, adapter, peft, *mpnet_batch(np.random.default_rng(), 4, 40))
    assert "mpnet.encoder.relative_attention_bias.weight" not in want
    assert ("mpnet.embeddings.LayerNorm.bias" in want) is (bias == "all")


def test_the_checkpoint_s_tokenizer_encodes_as_transformers(tiny):
    """tokenizer.json as MPNetTokenizer writes it (BertNormalizer, WordPiece, RobertaProcessing:
    <s> A </s>, <s> A </s> </s> B </s>): the ids transformers gives, pairs included."""
    from transformers import AutoTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    ours, theirs = classifier_tokenizer(tiny), AutoTokenizer.from_pretrained(str(tiny))
    for text in TEXTS + ["The FILM was <mask> great!", "zzz unknown éh", ""]:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
    assert ours.encode("not bad", "a fine plot").ids == theirs("not bad", "a fine plot")["input_ids"]
    padded = ours.encode_batch(["not bad", "the film was really great"], padding="longest")
    want = theirs(["not bad", "the film was really great"], padding=True)
    assert [e.ids for e in padded] == want["input_ids"] and ours.pad_id == PAD
    assert [e.attention_mask for e in padded] == want["attention_mask"]


def test_a_vocab_txt_alone_reads_as_mpnet_s_tokenizer(tmp_path, tiny):
    """A checkpoint with vocab.txt and no tokenizer.json: transformers builds MPNetTokenizer
    from config.json's model_type (<s> A </s>, <pad>), not BERT's [CLS] A [SEP]; so does this."""
    import shutil

    from transformers import AutoTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    for name in ("config.json", "vocab.txt"):
        shutil.copy(tiny / name, tmp_path / name)
    ours, theirs = classifier_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tiny))
    for text in TEXTS + ["The FILM was <mask> great!"]:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
    assert ours.encode("not bad", "a fine plot").ids == theirs("not bad", "a fine plot")["input_ids"]
    assert ours.pad_id == PAD


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=4)
    before, after, saved = check_round_trip(tiny, adapter, tmp_path / "trained", device)
    assert np.abs(after["classifier.dense.weight"] - before["classifier.dense.weight"]).max() > 1e-4
    assert json.loads((saved / "adapter_config.json").read_text())["target_modules"] in (["q", "v"], ["v", "q"])


@pytest.mark.parametrize("bias", ["none", "all"])
def test_gpu_step_matches_numpy_with_dropout(tmp_path, tiny, device, bias):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ("q", "v", "o", "dense"), seed=6, bias=bias)
    check_gpu_step(device, tiny, adapter, *mpnet_batch(np.random.default_rng(), 4, 30))


def test_merged_and_onnx_exports(tmp_path, tiny):
    """The merged classifier is MPNetForSequenceClassification (the bias table kept); the ONNX
    graph adds the relative position bias for any length and takes no token types."""
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ("q", "k", "v", "o"), seed=7)
    texts = TEXTS + [" ".join(TEXTS * 2)]       # offsets into the logarithmic buckets
    inputs = check_exports(tiny, adapter, tmp_path, "MPNetForSequenceClassification", texts, LABELS)
    assert inputs == ["input_ids", "attention_mask"]


def test_a_fine_tuned_classifier_checkpoint_reads_its_encoder(tmp_path, tiny):
    """MPNetForSequenceClassification saves the encoder under "mpnet." (the bias table with it):
    read as the bare MPNetModel's tensors."""
    check_classifier_checkpoint(tiny, "MPNetForSequenceClassification", tmp_path / "fine_tuned")
