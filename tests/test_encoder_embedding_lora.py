"""PEFT's LoRA on an encoder classifier's word embedding (target_modules naming
"word_embeddings", ModernBERT's "tok_embeddings": PEFT's lora.Embedding), against
transformers + PEFT: one step's loss and every gradient in float64 for each family (ModernBERT's in test_modernbert.py; the row of the embedding's
padding_idx gets no gradient, MPNet's a fixed 1; ELECTRA-small's and ALBERT's narrower
embeddings go through their projection), the GPU step against NumPy, a new adapter trained
here and read by PEFT, the merged and ONNX exports, and what stays refused."""

import json

import numpy as np
import pytest
import torch

import peft_oracle as po
from conftest import run
from encoder_checks import check_exports, check_gpu_step, encoded
from py_engine.data.classification import Example
from py_engine.formats import peft_adapter
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.models.lora import LoraTargetError
from py_engine.train.batch import Batch
from py_engine.train.classifier import TextClassifier, TrainConfig
from roberta_checkpoints import tiny_roberta_dir
from test_bert_oracle import engine_from_peft

LABELS = ["neg", "neutral", "pos"]
TEXTS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor"]
EMBEDDING_A = "embeddings.word_embeddings.lora_embedding_A"

# family: (checkpoint maker, the LoRA's targets beside the embedding, token types fed); the
# tiny DeBERTa holds no pooler, which trains whole (as test_deberta.py's adapters)
FAMILIES = {
    "bert": (po.tiny_bert_dir, ("query", "value"), True),
    "roberta": (lambda path, seed: tiny_roberta_dir(path, "roberta", seed=seed), ("query", "value"), False),
    "distilbert": (po.tiny_distilbert_dir, ("q_lin", "v_lin"), False),
    "electra-small": (lambda path, seed: po.tiny_electra_dir(path, seed, embedding_size=16),
                      ("query", "value"), True),
    "albert": (po.tiny_albert_dir, ("query", "value"), True),
    "mpnet": (po.tiny_mpnet_dir, ("q", "v"), False),
    # MPNet's padding_idx is 1 whatever pad_token_id says: row 0 trains, row 1 does not
    "mpnet-pad0": (lambda path, seed: po.tiny_mpnet_dir(path, seed, pad_token_id=0), ("q", "v"), False),
    "deberta": (po.tiny_deberta_dir, ("query_proj", "value_proj"), False),
}


def padded_batch(rng, B, T, vocab, pad, inner=None):
    """Random ids, rows after the first padded with `pad`, and the id `inner` among the real
    tokens (the padding id, whose row of the LoRA's A takes no gradient; None for RoBERTa and
    MPNet, whose transformers positions skip the padding id wherever it is)."""
    ids = rng.integers(0, vocab, (B, T))
    ids[ids == pad] = (pad + 1) % vocab
    ids[:, 0] = 2
    if inner is not None:
        ids[0, 3] = inner
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, rng.integers(4, T):] = 0
    ids[mask == 0] = pad
    return ids, mask, rng.integers(0, 3, B)


@pytest.mark.parametrize("family", FAMILIES)
def test_step_matches_peft(tmp_path, family):
    make, targets, with_types = FAMILIES[family]
    model_dir = make(tmp_path / "model", seed=11)
    config = json.loads((model_dir / "config.json").read_text())
    pad = 1 if config["model_type"] == "mpnet" else config.get("pad_token_id", 0)
    inner = {"roberta": None, "mpnet": None, "mpnet-pad0": 0}.get(family, pad)
    saved = dict(modules_to_save=["pooler"]) if family == "deberta" else {}
    peft = po.peft_model(model_dir, 3, target_modules=("word_embeddings",) + targets, seed=12, **saved)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    ids, mask, labels = padded_batch(np.random.default_rng(), 4, 12, config["vocab_size"], pad, inner)
    types = (np.arange(12)[None, :] >= 6).astype(np.int64) * mask if with_types else np.zeros_like(ids)
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels,
                                       token_type_ids=types if with_types else None)
    engine = engine_from_peft(model_dir, adapter, 3)
    ours = run(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))
    assert abs(ours["loss"] - loss) <= 1e-12 * abs(loss)
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    got = run(engine.gradients())
    assert set(got) == set(want)
    a_name = next(k for k in want if k.endswith(EMBEDDING_A))
    assert np.abs(want[a_name]).max() > 1e-3 and not want[a_name][:, pad].any()
    po.check_gradients(got, want, 1e-10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("bert") / "model", seed=21)


@pytest.mark.parametrize("family", ["bert", "electra-small", "modernbert"])
def test_gpu_step_matches_numpy(tmp_path, device, family):
    if family == "modernbert":
        from test_modernbert import PAD

        model_dir, targets, pad = po.tiny_modernbert_dir(tmp_path / "model", seed=13), ("tok_embeddings", "Wqkv"), PAD
    else:
        make, targets, _ = FAMILIES[family]
        model_dir, targets, pad = make(tmp_path / "model", seed=13), ("word_embeddings",) + targets, 0
    peft = po.peft_model(model_dir, 3, target_modules=targets, seed=14)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    ids, mask, labels = padded_batch(np.random.default_rng(), 4, 12, peft.config.vocab_size, pad, pad)
    check_gpu_step(device, model_dir, adapter, ids, np.zeros_like(ids), mask, labels)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_new_adapter_trains_and_peft_reads_it(tmp_path, tiny, device, backend):
    """A new adapter starts as PEFT starts one (A zeros: the base model's answers), trains the
    embedding's pair on either backend, and PEFT reads our probabilities from what was saved;
    PEFT's own adapter is read here on both backends."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["word_embeddings", "query", "value"])
    clf = run(TextClassifier.create(tiny, LABELS, lora=lora, backend=backend, seed=3, device=device))
    _, fresh, _ = peft_adapter.load_adapter(run(clf.save(tmp_path / "fresh")))
    a, b = (np.asarray(fresh["bert.embeddings.word_embeddings." + n][1])
            for n in ("lora_embedding_A", "lora_embedding_B"))
    assert not a.any() and 0.5 < b.std() < 2.0      # PEFT's: A zeros, B from N(0, 1)
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=3, batch_size=8, lr=2e-2, seed=1)))
    adapter = run(clf.save(tmp_path / "adapter"))
    _, tensors, _ = peft_adapter.load_adapter(adapter)
    shape, values = tensors["bert." + EMBEDDING_A]
    assert shape == (4, 120) and np.abs(np.asarray(values)).max() > 1e-4
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    theirs = po.probabilities(tiny, adapter, *encoded(tiny, TEXTS), dtype=torch.float32)
    assert np.abs(ours - theirs).max() <= 1e-5

    peft = po.peft_model(tiny, 3, target_modules=("word_embeddings", "query"), seed=15,
                         dtype=torch.float32)
    theirs_dir = po.save_adapter(peft, tmp_path / "theirs", labels=LABELS)
    loaded = run(TextClassifier.load(tiny, theirs_dir, backend=backend, device=device))
    ours = np.array([[p[label] for label in LABELS] for p in run(loaded.predict(TEXTS))])
    want = po.probabilities(tiny, theirs_dir, *encoded(tiny, TEXTS), dtype=torch.float32)
    assert np.abs(ours - want).max() <= 1e-5


def test_merged_and_onnx_exports(tmp_path, tiny):
    """The merged classifier's word embedding holds E + s (B.A)^T: transformers and
    onnxruntime give our probabilities."""
    peft = po.peft_model(tiny, 3, target_modules=("word_embeddings", "query", "value"), seed=16,
                         dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    check_exports(tiny, adapter, tmp_path, "BertForSequenceClassification", TEXTS, LABELS)


def test_what_stays_refused(tiny):
    """The other tables (positions, token types) are not wrapped here: named; DoRA on the
    embedding and trainable tokens likewise."""
    refusals = [
        (dict(target_modules=["position_embeddings", "query"]), LoraTargetError, "position_embeddings"),
        (dict(target_modules=["word_embeddings", "query"], use_dora=True), LoraConfigError,
         "DoRA on bert.embeddings.word_embeddings"),
        (dict(target_modules=["query"], trainable_token_indices=[5]), LoraConfigError,
         "trainable_token_indices"),
    ]
    for options, error, words in refusals:
        with pytest.raises(error, match=words):
            run(TextClassifier.create(tiny, LABELS, lora=LoraConfig(r=4, **options)))
