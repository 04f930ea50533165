"""DeBERTa-v2 (DeBERTa-v3's model type) as a classifier, against transformers + PEFT: BERT's
post-norm encoder under "deberta." with *_proj names, a disentangled attention (each score adds
the query against the key and query projections of the relative embedding of its distance,
log-bucketed, and the key against them), no position or token type embeddings in v3's config,
and DebertaV2ForSequenceClassification's head (ContextPooler: pooler.dense under GELU, then
classifier): one LoRA step's loss and every gradient, the checkpoint's tokenizer, PEFT's adapters
read here on both backends and ours read by PEFT, the GPU step against NumPy with dropout, the
merged export, a fine-tuned classifier checkpoint, the config's refusals."""

import json

import numpy as np
import pytest
import torch

import peft_oracle as po
from encoder_checks import check_gpu_step
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip

# DeBERTa-v2's other configs: learned positions and token types, exact distances clamped at 6
# (no buckets), c2p alone, the relative embeddings not normalised
V2_LIKE = dict(position_biased_input=True, type_vocab_size=2, position_buckets=-1,
               max_relative_positions=6, pos_att_type=["c2p"], norm_rel_ebd="none")
ALL_LINEARS = ("query_proj", "key_proj", "value_proj", "dense")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_deberta_dir(tmp_path_factory.mktemp("deberta") / "model", seed=41)


def peft_adapter(model_dir, path, targets=("query_proj", "value_proj"), seed=3, dtype=torch.float32,
                 **lora):
    """PEFT's adapter; the released checkpoints hold no pooler, so it trains whole
    (modules_to_save "pooler", beside the classifier PEFT adds)."""
    lora.setdefault("modules_to_save", ["pooler"])
    peft = po.peft_model(model_dir, 3, target_modules=targets, seed=seed, dtype=dtype, **lora)
    return po.save_adapter(peft, path, labels=LABELS), peft


def deberta_batch(model_dir, rng, B, T, labels=3):
    """Ids past the specials, [CLS] first, rows after the first padded; T of 20 reaches the
    logarithmic buckets of the tiny config (8 buckets)."""
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    ids = rng.integers(5, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, rng.integers(2, T):] = 0
    ids[mask == 0] = 0
    ids[:, 0] = 1
    types = np.zeros_like(ids)
    types[:, T // 2:] = 1
    return ids, types * mask, mask, rng.integers(0, labels, B)


def check_peft_step(model_dir, adapter, peft, ids, types, mask, labels, with_types=False):
    """In float64, one step's loss (1e-12) and every gradient (1e-10) of PEFT's model here."""
    from conftest import run
    from py_engine.train.batch import Batch
    from test_bert_oracle import engine_from_peft

    loss, grads, _ = po.step_gradients(peft, ids, mask, labels,
                                       token_type_ids=types if with_types else None)
    engine = engine_from_peft(model_dir, adapter, 3)
    if not with_types:
        types = np.zeros_like(types)
    ours = run(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))
    assert abs(ours["loss"] - loss) <= 1e-12 * abs(loss)
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    got = run(engine.gradients())
    assert set(got) == set(want) and {"classifier.weight"} <= set(want)
    po.check_gradients(got, want, 1e-10)
    return want


@pytest.mark.parametrize("config, targets, bias", [
    ({}, ("query_proj", "value_proj"), "none"),
    ({}, ALL_LINEARS, "lora_only"),
    ({}, ("query_proj", "key_proj"), "all"),
    (V2_LIKE, ALL_LINEARS, "none"),
    (V2_LIKE, ("key_proj", "value_proj"), "all"),
    (dict(pos_att_type="p2c"), ("query_proj", "key_proj"), "none"),
    (dict(relative_attention=False), ("query_proj", "value_proj"), "none"),
])
def test_step_matches_peft(tmp_path, config, targets, bias):
    """The LoRA on query_proj and key_proj reaches the scores through the relative rows'
    projections too (PEFT wraps the modules, whichever input they take); bias="all" trains the
    relative embeddings' norm's bias through them. Sequences of 20 (v3's log buckets) and of
    6 tokens past the clamp (v2's)."""
    model_dir = po.tiny_deberta_dir(tmp_path / "model", seed=43, **config)
    adapter, peft = peft_adapter(model_dir, tmp_path / "adapter", targets, dtype=torch.float64,
                                 bias=bias)
    with_types = config.get("type_vocab_size", 0) > 0
    want = check_peft_step(model_dir, adapter, peft,
                           *deberta_batch(model_dir, np.random.default_rng(), 4, 20), with_types)
    assert "pooler.dense.weight" in want
    assert ("deberta.encoder.LayerNorm.bias" in want) is (bias == "all" and config == {})


@pytest.mark.parametrize("bias", ["none", "all"])
def test_a_fine_tuned_checkpoint_s_pooler_is_read_frozen_or_wrapped(tmp_path, bias):
    """DebertaV2ForSequenceClassification's checkpoint holds the pooler: an adapter that
    leaves it out (PEFT's default modules_to_save) reads it from the checkpoint, frozen, as
    PEFT does; with bias="all" its bias trains, under its own name ("pooler.dense.bias").
    PEFT's target "dense" matches pooler.dense too: the pooler then takes a LoRA, named beside
    the encoder's prefix as PEFT names it ("pooler.dense.lora_A.weight")."""
    from py_engine.models.checkpoint import Checkpoint

    model_dir = po.tiny_deberta_dir(tmp_path / "model", seed=44, with_head=True)
    checkpoint = Checkpoint.load(model_dir)
    assert checkpoint.has_pooler and "pooler.dense.weight" in checkpoint.names()
    targets = ("query_proj", "key_proj", "value_proj", "output.dense", "intermediate.dense")
    adapter, peft = peft_adapter(model_dir, tmp_path / "adapter", targets, dtype=torch.float64,
                                 modules_to_save=None, bias=bias)
    batch = deberta_batch(model_dir, np.random.default_rng(), 3, 12)
    want = check_peft_step(model_dir, adapter, peft, *batch)
    assert [n for n in want if n.startswith("pooler.")] == (["pooler.dense.bias"] if bias == "all" else [])
    on_pooler, peft = peft_adapter(model_dir, tmp_path / "on_pooler", ALL_LINEARS,
                                   dtype=torch.float64, modules_to_save=None, bias=bias)
    want = check_peft_step(model_dir, on_pooler, peft, *batch)
    pooler = sorted(n for n in want if n.startswith("pooler."))
    assert pooler == sorted(["pooler.dense.lora_A.weight", "pooler.dense.lora_B.weight"] + (
        ["pooler.dense.base_layer.bias"] if bias == "all" else []))


def test_a_lora_on_the_pooler_round_trips_and_exports(tmp_path, device):
    """The pooler's LoRA (a fine-tuned checkpoint, PEFT's targets with "dense"): trained on the
    GPU against NumPy, trained here and read back by PEFT, merged into
    DebertaV2ForSequenceClassification's pooler and into the ONNX graph."""
    from encoder_checks import check_exports

    model_dir = po.tiny_deberta_dir(tmp_path / "model", seed=46, with_head=True)
    adapter, _ = peft_adapter(model_dir, tmp_path / "adapter", ALL_LINEARS, seed=8,
                              modules_to_save=None)
    check_gpu_step(device, model_dir, adapter, *deberta_batch(model_dir, np.random.default_rng(), 3, 16))
    before, after, _ = check_round_trip(model_dir, adapter, tmp_path / "trained", device)
    assert np.abs(after["pooler.dense.lora_B.weight"] - before["pooler.dense.lora_B.weight"]).max() > 0
    check_exports(model_dir, adapter, tmp_path, "DebertaV2ForSequenceClassification",
                  TEXTS, LABELS)


@pytest.mark.parametrize("options", [{}, dict(split_by_punct=True, do_lower_case=True),
                                     dict(add_prefix_space=False)])
def test_the_checkpoint_s_tokenizer_encodes_as_transformers(tmp_path, options):
    """DebertaV2Tokenizer's tokenizer.json (whitespace runs and NFC normalised, the end
    stripped, Metaspace, Unigram, [CLS] A [SEP] B [SEP]; lowercase and punctuation split where
    asked): the ids transformers gives, pairs and padding included."""
    from transformers import AutoTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    po.deberta_tokenizer(po.TINY["vocab_size"], **options).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    ours, theirs = classifier_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(theirs).__name__ == "DebertaV2Tokenizer"
    for text in TEXTS + ["The FILM was [MASK] great!", "zzz unknown éh", "", "  two  spaces\tand a tab\n",
                         "e\u0301 composed, trailing   "]:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
    pair = theirs("not bad", "a fine plot")
    assert ours.encode("not bad", "a fine plot").ids == pair["input_ids"]
    padded = ours.encode_batch(["not bad", "the film was really great"], padding="longest")
    want = theirs(["not bad", "the film was really great"], padding=True)
    assert [e.ids for e in padded] == want["input_ids"] and ours.pad_id == 0
    assert [e.attention_mask for e in padded] == want["attention_mask"]


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=4)
    before, after, saved = check_round_trip(tiny, adapter, tmp_path / "trained", device)
    assert np.abs(after["pooler.dense.weight"] - before["pooler.dense.weight"]).max() > 1e-4
    config = json.loads((saved / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["query_proj", "value_proj"]


@pytest.mark.parametrize("bias", ["none", "all"])
def test_gpu_step_matches_numpy_with_dropout(tmp_path, tiny, device, bias):
    """The disentangled bias on the GPU (the products as one batched matmul over all queries,
    the gather and scatter kernels), with the relative rows' own dropout per layer."""
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ALL_LINEARS, seed=6, bias=bias)
    check_gpu_step(device, tiny, adapter, *deberta_batch(tiny, np.random.default_rng(), 4, 20))


@pytest.mark.parametrize("config", [{}, V2_LIKE, dict(pos_att_type="p2c")])
def test_merged_and_onnx_exports(tmp_path, config):
    """The merged classifier is DebertaV2ForSequenceClassification; the ONNX graph gathers the
    disentangled terms for any length (GatherElements over each distance's row), padded either
    side, and takes token types where the config has them."""
    from encoder_checks import check_exports

    model_dir = po.tiny_deberta_dir(tmp_path / "model", seed=45, **config)
    adapter, _ = peft_adapter(model_dir, tmp_path / "adapter", ALL_LINEARS, seed=7)
    texts = TEXTS + [" ".join(TEXTS)]       # distances in the logarithmic buckets, within 64
    inputs = check_exports(model_dir, adapter, tmp_path, "DebertaV2ForSequenceClassification",
                           texts, LABELS)
    assert inputs == ["input_ids", "attention_mask"] + (["token_type_ids"] if config.get("type_vocab_size") else [])


@pytest.mark.parametrize("field, value, named", [
    ("conv_kernel_size", 3, "convolution"),
    ("share_att_key", False, "pos_key_proj"),
    ("pos_att_type", "p2p", "pos_att_type"),
    ("embedding_size", 16, "embed_proj"),
    ("pooler_hidden_act", "tanh", "gelu"),
    ("norm_rel_ebd", "batch_norm", "norm_rel_ebd"),
])
def test_what_is_not_built_is_refused_by_name(tmp_path, field, value, named):
    from py_engine.models.bert_config import BertConfig, ConfigError

    config = dict(po.TINY, **po.DEBERTA_V3, model_type="deberta-v2")
    config[field] = value
    with pytest.raises(ConfigError, match=named):
        BertConfig(**config)
    assert BertConfig(**dict(po.TINY, **po.DEBERTA_V3, model_type="deberta-v2")).disentangled


def test_a_classifier_trained_here_loads_in_peft(tmp_path, tiny, device):
    """Made here on the released kind of checkpoint (no pooler): the pooler trains whole beside
    the LoRA and the head, on either backend, and PEFT reads the saved adapter as trained (its
    modules_to_save names the pooler, so PEFT trains it too)."""
    from conftest import run
    from test_adapter_roundtrip import our_probabilities, peft_probabilities

    from py_engine.data.classification import Example
    from py_engine.train.classifier import TextClassifier, TrainConfig

    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.create(tiny, LABELS, backend=backend, seed=3, device=device))
        examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
        run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
        adapter = run(clf.save(tmp_path / backend))
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert "pooler" in config["modules_to_save"] and config["target_modules"] in (
            ["query_proj", "value_proj"], ["value_proj", "query_proj"])
        assert np.abs(our_probabilities(clf) - peft_probabilities(tiny, adapter, TEXTS)).max() <= 1e-5


@pytest.mark.parametrize("behavior", ["isolated", "removed", "merged_with_previous",
                                      "merged_with_next", "contiguous"])
def test_the_punctuation_pre_tokenizer_splits_as_the_library(behavior):
    """The Punctuation pre-tokenizer (DeBERTa's split_by_punct) cuts at the library's
    punctuation characters, ASCII and Unicode P*, as each behavior says."""
    from tokenizers import pre_tokenizers

    from py_engine.tokenizers.bpe import pre_tokenizer_of

    theirs = pre_tokenizers.Punctuation(behavior=behavior)
    spec = json.loads(pre_tokenizers.Sequence([theirs]).__getstate__())["pretokenizers"][0]
    ours = pre_tokenizer_of(spec)
    texts = ["Hello, world!!", "a--b...c", "«Guillemets» – dash — “quotes”", "¿Qué? ¡Sí!",
             "日本語。句読点、です", "$5+3=8 ~tilde^ `tick` |pipe|", "no punctuation here",
             "(nested [brackets {x}])", "", "!!!", "e.g. U.S.A.", "a\u2019s \u2026 x"]
    for text in texts:
        want = [piece for piece, _ in theirs.pre_tokenize_str(text)]
        assert [word for word, _ in ours([(text, None)], True)] == want, text


def test_a_checkpoint_with_its_spm_model_alone(tmp_path, device):
    """DeBERTa-v3 as released holds spm.model and no tokenizer.json: its tokenizer is built from
    it as transformers builds it; PEFT's adapter round-trips, the merged export carries
    spm.model, and the ONNX export a tokenizer.json that the tokenizers library reads to
    transformers' ids."""
    from encoder_checks import check_exports
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    model_dir = po.tiny_deberta_dir(tmp_path / "model", seed=46, spm_only=True)
    assert not (model_dir / "tokenizer.json").exists() and (model_dir / "spm.model").is_file()
    adapter, _ = peft_adapter(model_dir, tmp_path / "adapter", seed=8)
    check_round_trip(model_dir, adapter, tmp_path / "trained", device)
    check_exports(model_dir, adapter, tmp_path, "DebertaV2ForSequenceClassification", TEXTS, LABELS)
    assert (tmp_path / "merged" / "spm.model").is_file()
    exported = Tokenizer.from_file(str(tmp_path / "onnx" / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(str(model_dir))
    for text in TEXTS + ["The FILM was [MASK] great!"]:
        assert exported.encode(text).ids == theirs(text)["input_ids"], text
