"""DistilBERT as a classifier, against transformers + PEFT: one LoRA step's loss and every
gradient (its own layer names, no token types, DistilBertForSequenceClassification's head:
pre_classifier, ReLU, classifier), PEFT's adapters read here on both backends and ours read by
PEFT, the checkpoint's own pre_classifier where it has one, an adapter PEFT cannot reproduce
refused by name (PEFT's default modules_to_save, "classifier", trains pre_classifier
whole too: a name ending in it), the GPU step against NumPy with dropout, the merged and ONNX exports, and the
CLI's default targets (PEFT's: q_lin, v_lin)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import peft_oracle as po
from conftest import run
from encoder_checks import check_exports, check_gpu_step, encoded
from py_engine.models.checkpoint import Checkpoint
from py_engine.train.batch import Batch
from py_engine.train.classifier import TextClassifier
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip, our_probabilities
from test_bert_oracle import engine_from_peft, random_batch

ALL = ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_distilbert_dir(tmp_path_factory.mktemp("distilbert") / "model", seed=21)


def peft_adapter(model_dir, path, targets=("q_lin", "v_lin"), seed=3, dtype=torch.float32):
    """PEFT's SEQ_CLS adapter: its default modules_to_save ("classifier") matches
    pre_classifier too (a name ending in it), so both train whole and are saved."""
    peft = po.peft_model(model_dir, 3, target_modules=targets, seed=seed, dtype=dtype)
    return po.save_adapter(peft, path, labels=LABELS), peft


@pytest.mark.parametrize("targets", [("q_lin", "v_lin"), ALL])
def test_step_matches_peft(tmp_path, tiny, targets):
    adapter, peft = peft_adapter(tiny, tmp_path / "adapter", targets, dtype=torch.float64)
    ids, _, mask, labels = random_batch(np.random.default_rng(), 4, 11, 120, 3)
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    engine = engine_from_peft(tiny, adapter, 3)
    assert (engine.model.dense_module, engine.model.head_module) == ("pre_classifier", "classifier")
    types = np.zeros_like(ids)
    ours = run(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))
    assert abs(ours["loss"] - loss) <= 1e-12 * abs(loss)
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    got = run(engine.gradients())
    assert set(got) == set(want) and "pre_classifier.weight" in want
    po.check_gradients(got, want, 1e-10)


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=4)
    assert "base_model.model.pre_classifier.weight" in load_file(adapter / "adapter_model.safetensors")
    before, after, saved = check_round_trip(tiny, adapter, tmp_path / "trained", device)
    assert np.abs(after["pre_classifier.weight"] - before["pre_classifier.weight"]).max() > 1e-4
    assert set(json.loads((saved / "adapter_config.json").read_text())["target_modules"]) == \
        {"q_lin", "v_lin"}


def test_a_new_adapter_starts_from_the_checkpoint_s_pre_classifier(tmp_path, device):
    """A DistilBertForSequenceClassification checkpoint holds a pre_classifier: a new adapter
    trains it whole from there (as PEFT's modules_to_save starts from it), and PEFT gives our
    probabilities from the saved adapter. PEFT needs the adapter to hold it (its modules_to_save
    matches it), so an adapter without it is refused by name where the checkpoint has none."""
    model_dir = po.tiny_distilbert_dir(tmp_path / "head", seed=22, with_head=True, num_labels=3)
    checkpoint = Checkpoint.load(model_dir)
    assert checkpoint.has_pooler
    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.create(model_dir, LABELS, backend=backend, seed=2, device=device))
        values = run(clf.runtime.trainable_values())
        assert np.array_equal(np.asarray(values["pre_classifier.weight"][1]),
                              np.asarray(checkpoint.floats("pre_classifier.weight")))
        adapter = run(clf.save(tmp_path / f"adapter-{backend}"))
        theirs = po.probabilities(model_dir, adapter, *encoded(model_dir, TEXTS))
        assert np.abs(our_probabilities(clf) - theirs).max() <= 1e-5, backend

    without = tmp_path / "without"
    shutil.copytree(adapter, without)
    tensors = load_file(without / "adapter_model.safetensors")
    save_file({k: v for k, v in tensors.items() if "pre_classifier" not in k},
              without / "adapter_model.safetensors")
    bare = po.tiny_distilbert_dir(tmp_path / "bare", seed=22)
    with pytest.raises(ValueError, match="holds no pre_classifier and .* has none"):
        run(TextClassifier.load(bare, without, backend="numpy"))


def test_gpu_step_matches_numpy_with_dropout(tmp_path, tiny, device):
    """The model's dropout (no site after the attention's output linear, as DistilBERT has
    none) draws the same masks on the GPU as in NumPy."""
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ALL, seed=6)
    ids, _, mask, labels = random_batch(np.random.default_rng(), 4, 12, 120, 3)
    check_gpu_step(device, tiny, adapter, ids, np.zeros_like(ids), mask, labels)


def test_merged_and_onnx_exports(tmp_path, tiny):
    """The merged classifier is DistilBertForSequenceClassification; the ONNX graph takes no
    token types and copies the checkpoint's vocab.txt."""
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=7)
    inputs = check_exports(tiny, adapter, tmp_path, "DistilBertForSequenceClassification", TEXTS,
                           LABELS)
    assert inputs == ["input_ids", "attention_mask"]
    assert (tmp_path / "onnx" / "vocab.txt").read_bytes() == (tiny / "vocab.txt").read_bytes()


def test_the_cli_trains_with_peft_s_default_targets(tmp_path, tiny, capsys):
    from py_engine.cli import main

    rows = [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(TEXTS * 3)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["train", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--epochs", "2", "--lr", "0.02"]) == 0
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_lin", "v_lin"]
    clf = run(TextClassifier.load(tiny, tmp_path / "a", backend="numpy"))
    theirs = po.probabilities(tiny, tmp_path / "a", *encoded(tiny, TEXTS))
    assert np.abs(our_probabilities(clf) - theirs).max() <= 1e-5
