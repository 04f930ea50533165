"""RoBERTa's kind (RoBERTa, XLM-RoBERTa) as classifiers, against transformers + PEFT: one LoRA
step's loss and every gradient (RobertaForSequenceClassification's head, positions from the
padding row + 1), PEFT's adapters read here with the checkpoints' own tokenizers (byte-level
BPE with RobertaProcessing, Unigram with TemplateProcessing) on both backends, ours read by
PEFT, the GPU step against NumPy, and the merged export loaded by transformers."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import peft_oracle as po
from conftest import run
from encoder_checks import check_exports, check_gpu_step, encoded
from py_engine.data.classification import Example
from py_engine.export.merged import load_merged
from py_engine.train.batch import Batch
from py_engine.train.classifier import TextClassifier, TrainConfig
from roberta_checkpoints import tiny_roberta_dir
from test_bert_oracle import engine_from_peft

LABELS = ["neg", "neutral", "pos"]
TEXTS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor",
         "ein sehr guter Film", "la scène finale est longue"]
KINDS = ["roberta", "xlm-roberta"]


@pytest.fixture(scope="module", params=KINDS)
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return tiny_roberta_dir(path / "model", request.param, seed=7)


def roberta_batch(rng, B, T, vocab):
    """Ids drawn above the padding token (1), right-padded with it, as the tokenizer gives
    them (RoBERTa's position ids count the tokens that are not padding)."""
    ids = rng.integers(3, vocab, (B, T))
    ids[:, 0] = 0
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, rng.integers(3, T):] = 0
    ids[mask == 0] = 1
    return ids, np.zeros_like(ids), mask, rng.integers(0, 3, B)


@pytest.mark.parametrize("targets", [("query", "value"), ("query", "key", "value", "dense")])
def test_step_matches_peft(tmp_path, tiny, targets):
    """PEFT's LoRA on RobertaForSequenceClassification: loss and every gradient (the adapters',
    the head's dense and out_proj layers, trained whole) as ours in float64; "dense" wraps the
    layers' dense linears, not the head's (PEFT trains that whole)."""
    peft = po.peft_model(tiny, 3, target_modules=targets, seed=3, dropout=0.0)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    ids, types, mask, labels = roberta_batch(np.random.default_rng(), 4, 11,
                                             peft.config.vocab_size)
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    engine = engine_from_peft(tiny, adapter, 3)
    assert engine.model.head_module == "classifier.out_proj"
    ours = run(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))
    assert abs(ours["loss"] - loss) <= 1e-12 * abs(loss)
    got = run(engine.gradients())
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    assert set(got) == set(want) and "classifier.dense.weight" in want
    po.check_gradients(got, want, 1e-10)


def peft_probabilities(model_dir, adapter, texts):
    from peft import PeftModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(texts, padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    model = PeftModel.from_pretrained(base, adapter).double().eval()
    with torch.no_grad():
        return torch.softmax(model(**enc).logits, -1).numpy()


def our_probabilities(clf, texts=TEXTS):
    return np.array([[p[label] for label in LABELS] for p in run(clf.predict(texts))])


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    """PEFT's adapter gives PEFT's probabilities here, on both backends, through the checkpoint's
    own tokenizer (padded batches: positions of the padded rows as RoBERTa counts them);
    trained here and saved, PEFT reads our probabilities from it."""
    peft = po.peft_model(tiny, 3, target_modules=("query", "value"), seed=4, dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    theirs = peft_probabilities(tiny, adapter, TEXTS)
    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.load(tiny, adapter, backend=backend, device=device))
        assert np.abs(our_probabilities(clf) - theirs).max() <= 1e-5, backend

    clf = run(TextClassifier.load(tiny, adapter, backend="numpy"))
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    saved = run(clf.save(tmp_path / "trained"))
    trained = our_probabilities(clf)
    assert np.abs(trained - theirs).max() > 1e-3
    assert np.abs(peft_probabilities(tiny, saved, TEXTS) - trained).max() <= 1e-5


def test_gpu_step_matches_numpy(tmp_path, tiny, device):
    peft = po.peft_model(tiny, 3, target_modules=("query", "value", "dense"), seed=5)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    check_gpu_step(device, tiny, adapter,
                   *roberta_batch(np.random.default_rng(), 4, 12, peft.config.vocab_size))


def test_merged_and_onnx_exports(tmp_path, tiny):
    """The merged classifier is the checkpoint's own sequence classifier (RoBERTa's head, its
    names under "roberta."); the ONNX graph reads positions from the row after the padding
    token's."""
    peft = po.peft_model(tiny, 3, target_modules=("query", "value"), seed=6, dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    kind = json.loads((tiny / "config.json").read_text())["model_type"]
    check_exports(tiny, adapter, tmp_path, {"roberta": "RobertaForSequenceClassification",
                                            "xlm-roberta": "XLMRobertaForSequenceClassification"}[kind],
                  TEXTS, LABELS)


def test_a_mean_pooled_classifier_s_onnx_graph(tmp_path, tiny):
    """Ours (the mean over real tokens, then out_proj): onnxruntime gives our probabilities."""
    import onnxruntime as ort

    from py_engine.export.onnx_export import save_onnx

    clf = run(TextClassifier.create(tiny, LABELS, pooling="mean", seed=2))
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 2)]
    run(clf.fit(examples, TrainConfig(epochs=1, batch_size=4, lr=1e-2, seed=1)))
    adapter = run(clf.save(tmp_path / "adapter"))
    out = save_onnx(load_merged(tiny, adapter), tmp_path / "onnx")
    ids, mask = encoded(out, TEXTS)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    theirs = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})[0]
    assert np.abs(theirs - our_probabilities(clf)).max() <= 1e-5


def test_the_cli_trains_and_predicts(tmp_path, tiny, capsys):
    """`py-engine train` and `predict` on a checkpoint of RoBERTa's kind: the adapter PEFT reads
    gives the probabilities predict prints; --max-length is bound by the positions after the
    padding token's row (64 of the tiny checkpoint's 66)."""
    from py_engine.cli import main

    rows = [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(TEXTS * 3)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["train", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--max-length", "65"]) != 0
    assert "more than the 64 positions" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--epochs", "2", "--lr", "0.02", "--max-length", "64"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny), "--adapter", str(tmp_path / "a"),
                 "--data", str(data)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = np.array([[line["probs"][label] for label in LABELS] for line in printed[:len(TEXTS)]])
    assert np.abs(got - peft_probabilities(tiny, tmp_path / "a", TEXTS)).max() <= 1e-5


BROWSER_PREDICT = """
import json
from py_engine.train.classifier import TextClassifier

clf = await TextClassifier.load("/work/model", "/work/adapter", backend="gpu")
probs = await clf.predict(json.loads(TEXTS))
json.dumps({"probs": [[p[label] for label in json.loads(LABELS)] for p in probs],
            "backend": clf.runtime.device.info.as_dict()["backend"]})
"""


@pytest.mark.browser
def test_a_peft_adapter_predicts_in_the_browser(engine_page, tmp_path, tiny):
    """In Pyodide + WebGPU the checkpoint's tokenizer and RoBERTa's positions and head give the
    host's probabilities (which are PEFT's: test_a_peft_adapter_round_trips)."""
    from py_engine.harness import put_files, run_json

    peft = po.peft_model(tiny, 3, target_modules=("query", "value"), seed=10, dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    files = {f"/work/model/{p.name}": p.read_bytes() for p in tiny.iterdir()}
    files.update({f"/work/adapter/{p.name}": p.read_bytes() for p in adapter.iterdir()})
    put_files(engine_page, files)
    got = run_json(engine_page, BROWSER_PREDICT.replace("TEXTS", repr(json.dumps(TEXTS)))
                   .replace("LABELS", repr(json.dumps(LABELS))))
    assert got["backend"] == "browser-webgpu"
    host = our_probabilities(run(TextClassifier.load(tiny, adapter, backend="numpy")))
    assert np.abs(np.array(got["probs"]) - host).max() <= 1e-5
