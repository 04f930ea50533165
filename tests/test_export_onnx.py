"""ONNX export of classifiers, run by ONNX Runtime: the float32 graph gives our probabilities
(both poolings); the int8 variant (onnxruntime's dynamic quantization) is compared on a small
labelled set after a short fine-tuning."""

import json
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from transformers import AutoConfig, BertTokenizerFast

import export_models as em
import peft_oracle as po
from conftest import run
from py_engine.data.classification import Example
from py_engine.export.merged import MergedModel, load_merged
from py_engine.export.onnx_export import classifier_graph, save_onnx
from py_engine.formats.finite import NonFiniteWeightsError
from py_engine.train.classifier import ClassifierTrainConfig, TextClassifier

TEXTS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor",
         "it is this that", "the scene"]
# float32 on both sides, summed in other orders: measured 2e-8 (cls) and 6e-8 (mean).
F32_BOUND = 1e-6


def onnx_probabilities(path, model_dir, texts):
    enc = BertTokenizerFast.from_pretrained(str(model_dir))(texts, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    return session.run(["probabilities"], feeds)[0]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_onnx_runtime_gives_our_probabilities(tmp_path, pooling):
    model, adapter = em.classifier_with_adapter(tmp_path)
    (adapter / "head_config.json").write_text(json.dumps({"pooling": pooling}))
    lines = []
    out = save_onnx(load_merged(model, adapter), tmp_path / "onnx", progress=lines.append)
    assert lines == [f"onnx: graph of {90 if pooling == 'mean' else 88} nodes, 2 layers"]
    assert json.loads((out / "labels.json").read_text()) == em.LABELS
    assert (out / "vocab.txt").is_file()
    config = AutoConfig.from_pretrained(out)          # what ONNX Runtime's wrappers read
    assert config.id2label == dict(enumerate(em.LABELS)) and config.model_type == "bert"
    assert config.problem_type == "single_label_classification"
    loaded = onnx.load(out / "model.onnx")
    assert {p.key: p.value for p in loaded.metadata_props} == \
        {**{f"label.{k}": label for k, label in enumerate(em.LABELS)},
         "problem_type": "single_label_classification"}
    ours = em.our_probabilities(model, adapter, TEXTS)
    theirs = onnx_probabilities(out / "model.onnx", model, TEXTS)
    assert np.abs(theirs - ours).max() <= F32_BOUND


def test_onnx_runtime_gives_our_probabilities_with_a_dora_adapter(tmp_path):
    """The export folds DoRA's magnitudes into the weights it writes: onnxruntime's
    probabilities are ours, computed unmerged."""
    model, adapter = em.classifier_with_adapter(tmp_path, targets=("query", "value", "dense"),
                                                lora=dict(use_dora=True))
    out = save_onnx(load_merged(model, adapter), tmp_path / "onnx")
    ours = em.our_probabilities(model, adapter, TEXTS)
    theirs = onnx_probabilities(out / "model.onnx", model, TEXTS)
    assert np.abs(theirs - ours).max() <= F32_BOUND


def labelled(n, seed):
    """Short texts labelled by the sentiment words in them (a small labelled set)."""
    rng = random.Random(seed)
    good, bad = ["great", "good", "fine"], ["bad", "awful"]
    filler = ["the", "film", "was", "movie", "plot", "actor", "scene", "really", "very", "a"]
    out = []
    for k in range(n):
        label = "pos" if k % 2 else "neg"
        words = rng.sample(filler, 3) + [rng.choice(good if label == "pos" else bad)]
        rng.shuffle(words)
        out.append(Example(" ".join(words), label))
    return out


def test_int8_variant_accuracy_against_float32(tmp_path, capsys):
    model = po.tiny_bert_dir(tmp_path / "bert", seed=5)
    clf = run(TextClassifier.create(model, ["neg", "pos"], pooling="mean", seed=1))
    run(clf.fit(labelled(64, 0), ClassifierTrainConfig(epochs=10, batch_size=16, lr=3e-2, seed=1)))
    held_out = labelled(40, 1)
    merged = run(MergedModel.of(clf))
    f32 = save_onnx(merged, tmp_path / "f32") / "model.onnx"
    int8 = save_onnx(merged, tmp_path / "int8", quant="int8") / "model.onnx"
    texts, gold = [e.text for e in held_out], [e.label for e in held_out]
    ours = np.array([[p["neg"], p["pos"]] for p in run(clf.predict(texts))])
    p32, p8 = onnx_probabilities(f32, model, texts), onnx_probabilities(int8, model, texts)

    def accuracy(p):
        return float(np.mean([["neg", "pos"][i] == g for i, g in zip(p.argmax(1), gold)]))

    assert np.abs(p32 - ours).max() <= F32_BOUND
    with capsys.disabled():
        print(f"\n  ONNX on {len(gold)} held-out texts: accuracy f32 {accuracy(p32):.3f}, int8 "
              f"{accuracy(p8):.3f}; probabilities differ by {np.abs(p8 - p32).max():.4f} at most;"
              f" sizes {f32.stat().st_size} and {int8.stat().st_size} bytes")
    assert accuracy(p32) >= 0.9                  # it learned the task (1.0 measured)
    assert abs(accuracy(p8) - accuracy(p32)) <= 0.1
    assert np.abs(p8 - p32).max() <= 0.1
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops


def test_non_finite_weights_are_refused(tmp_path):
    model, adapter = em.classifier_with_adapter(tmp_path)
    merged = load_merged(model, adapter)
    shape, data = merged.replaced["classifier.weight"]
    data = np.array(data)
    data[0] = -np.inf
    merged.replaced["classifier.weight"] = (shape, data)
    with pytest.raises(NonFiniteWeightsError, match="classifier.weight"):
        classifier_graph(merged)
    with pytest.raises(NonFiniteWeightsError):
        save_onnx(merged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
