"""Multi-label and regression heads (transformers' problem_type "multi_label_classification",
a sigmoid per label, and "regression", a value per label): one training step's loss and
gradients against transformers' own loss with PEFT (NumPy in float64; the GPU against it),
micro-batches and padded rows, the Python API (predict, evaluate, save and load) against
transformers + PEFT reading the saved adapter, the merged export read by transformers, a
fine-tuned checkpoint of each kind taken as it is, and what is refused."""

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error

import peft_oracle as po
from conftest import run
from test_bert_gpu import check_gradients, runtimes
from test_bert_oracle import ALL_LINEARS, random_batch, rel
from test_fine_tuned_classifier import TEXTS, bare_dir, fine_tuned_dir
from py_engine.data.classification import Example
from py_engine.labels import IGNORE_LABEL, MULTI_LABEL, REGRESSION, float_words
from py_engine.train.batch import Batch
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig
from py_engine.train.tasks import ClassificationTask

KINDS = [(MULTI_LABEL, 3), (REGRESSION, 1), (REGRESSION, 2)]


def random_targets(rng, B, C, problem_type):
    """[B, C] targets that f32 holds exactly: 0/1 (some soft) or values."""
    if problem_type == MULTI_LABEL:
        y = rng.integers(0, 2, (B, C)).astype(np.float64)
        y[rng.random((B, C)) < 0.25] = rng.uniform(0, 1)
    else:
        y = rng.standard_normal((B, C)) * 2
    return y.astype(np.float32).astype(np.float64)


def theirs(peft, ids, types, mask, targets):
    """transformers' loss for the config's problem_type (its own code path) and PEFT's
    gradients, by adapter key."""
    peft.train()
    peft.zero_grad()
    out = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
               token_type_ids=torch.as_tensor(types), labels=torch.as_tensor(targets))
    out.loss.backward()
    grads = {po.adapter_key(n).removeprefix("base_model.model."): p.grad.numpy().copy()
             for n, p in peft.named_parameters() if p.requires_grad}
    return out.loss.item(), grads


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny BERT and, per kind, a PEFT adapter on every linear with a random head."""
    path = tmp_path_factory.mktemp("problem_types")
    model_dir = po.tiny_bert_dir(path / "model", seed=31)
    adapters = {}
    for problem_type, C in KINDS:
        peft = po.peft_model(model_dir, C, target_modules=ALL_LINEARS, seed=32 + C,
                             problem_type=problem_type)
        adapters[problem_type, C] = (peft, po.save_adapter(peft, path / f"{problem_type}-{C}"))
    return model_dir, adapters


def batch_of(ids, types, mask, targets):
    words = [w for row in targets for w in (float_words(row) if row is not None
                                            else [IGNORE_LABEL] * len(targets[0]))]
    return Batch(ids.tolist(), types.tolist(), mask.tolist(), words)


@pytest.mark.parametrize("problem_type, C", KINDS)
def test_a_step_matches_transformers_loss_with_peft(device, tiny, problem_type, C):
    model_dir, adapters = tiny
    peft, adapter = adapters[problem_type, C]
    rng = np.random.default_rng()
    ids, types, mask, _ = random_batch(rng, 5, 11, 120, 2)
    targets = random_targets(rng, 5, C, problem_type)
    loss, grads = theirs(peft, ids, types, mask, targets)

    reference, gpu = runtimes(device, model_dir, adapter, C, problem_type=problem_type)
    batch = batch_of(ids, types, mask, targets)
    m = run(reference.accumulate(batch))
    assert abs(m["loss"] - loss) <= 1e-12 * abs(loss), (m["loss"], loss)
    po.check_gradients(run(reference.gradients()), grads, 1e-10)
    logits = run(reference.outputs(batch))
    whole = ((np.asarray(logits) > 0) == (targets > 0.5)).all(axis=1)
    assert m["counted"] == 5
    assert m["correct"] == (whole.sum() if problem_type == MULTI_LABEL else 0)

    got = run(gpu.accumulate(batch))
    assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)
    assert (got["correct"], got["counted"]) == (m["correct"], m["counted"])
    check_gradients(run(gpu.gradients()), run(reference.gradients()))


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
@pytest.mark.parametrize("problem_type, C", [(MULTI_LABEL, 3), (REGRESSION, 2)])
def test_micro_batches_with_a_padded_row_add_up_to_the_batch(device, tiny, backend,
                                                             problem_type, C):
    """Halves scaled by their share of the denominator (the logits counted) give the whole
    batch's gradient; a row without a label counts for nothing."""
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters[problem_type, C][1], C,
                              problem_type=problem_type)
    engine = reference if backend == "numpy" else gpu
    rng = np.random.default_rng()
    ids, types, mask, _ = random_batch(rng, 6, 10, 120, 2)
    targets = list(random_targets(rng, 6, C, problem_type))
    full = batch_of(ids, types, mask, targets[:4] + [None] + targets[5:])
    task = ClassificationTask(C, problem_type=problem_type)
    assert task.denominator(full) == 5 * C
    want_loss = run(reference.accumulate(full))["loss"]
    want = run(reference.gradients())
    reference.be.zero_grads()
    kept = np.array([0, 1, 2, 3, 5])
    alone = batch_of(ids[kept], types[kept], mask[kept], [targets[i] for i in kept])
    assert abs(run(reference.accumulate(alone))["loss"] - want_loss) <= 1e-12 * want_loss
    reference.be.zero_grads()
    loss = 0.0
    for part in (full.rows(0, 3), full.rows(3, 6)):
        share = task.denominator(part) / task.denominator(full)
        loss += run(engine.accumulate(part, loss_scale=share))["loss"] * share
    bound = 1e-12 if backend == "numpy" else 1e-4
    assert abs(loss - want_loss) <= max(bound, 1e-6) * want_loss
    for name, values in run(engine.gradients()).items():
        assert rel(np.asarray(values, np.float64).ravel(), want[name].ravel()) <= bound, name


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def transformers_outputs(model_dir, texts, adapter_dir=None):
    """transformers' logits (with PEFT's adapter when given), and its model's config."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    options = {}
    if adapter_dir is not None:
        head = json.loads((adapter_dir / "head_config.json").read_text())
        labels = json.loads((adapter_dir / "labels.json").read_text())
        options = dict(num_labels=len(labels), problem_type=head["problem_type"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", **options)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model = model.to(torch.float64).eval()
    enc = AutoTokenizer.from_pretrained(str(model_dir))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    config = model.config if adapter_dir is None else model.base_model.model.config
    return logits.numpy(), config


TRAIN = ["the film was great", "an awful plot", "it is a film", "really", "a great plot",
         "awful", "the ending", "it was really great"]


@pytest.mark.parametrize("problem_type", [MULTI_LABEL, REGRESSION])
def test_train_predict_evaluate_save_load_and_export(tmp_path, problem_type):
    """Trained through the API: what predict() gives is transformers + PEFT's sigmoid (or
    value) from the saved adapter, and transformers' from the merged export, whose config says
    its kind; evaluate() agrees with scikit-learn; the loaded adapter predicts the same."""
    from py_engine.export.merged import load_merged, save_merged

    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=5)
    if problem_type == MULTI_LABEL:
        labels = ["plot", "film", "praise"]
        gold = [["film", "praise"], ["plot"], ["film"], [], ["plot", "praise"], [], {"plot": 0.5},
                ["praise"]]
    else:
        labels = ["stars", "length"]
        gold = [{"stars": 4.5, "length": 0.4}, {"stars": 1.0, "length": 0.3},
                {"stars": 3.0, "length": 0.4}, {"stars": 2.5, "length": 0.1},
                {"stars": 4.0, "length": 0.3}, {"stars": 0.5, "length": 0.1},
                {"stars": 3.0, "length": 0.2}, {"stars": 5.0, "length": 0.4}]
    examples = [Example(t, y) for t, y in zip(TRAIN, gold)]
    clf = run(TextClassifier.create(model_dir, labels, problem_type=problem_type, seed=3))
    assert clf.problem_type == problem_type
    before = run(clf.evaluate(examples))
    history = run(clf.fit(examples, ClassifierTrainConfig(epochs=8, batch_size=4, lr=2e-2,
                                                          seed=1)))
    assert np.mean([s.loss for s in history[-2:]]) < np.mean([s.loss for s in history[:2]])
    assert (history[-1].accuracy is None) == (problem_type == REGRESSION)
    ours = np.array([[p[name] for name in labels] for p in run(clf.predict(TEXTS))])

    run(clf.save(tmp_path / "adapter"))
    assert json.loads((tmp_path / "adapter" / "head_config.json").read_text()) == {
        "pooling": "cls", "problem_type": problem_type}
    logits, config = transformers_outputs(model_dir, TEXTS, tmp_path / "adapter")
    assert config.problem_type == problem_type
    want = sigmoid(logits) if problem_type == MULTI_LABEL else logits
    assert np.abs(ours - want).max() <= 1e-5

    loaded = run(TextClassifier.load(model_dir, tmp_path / "adapter"))
    assert loaded.problem_type == problem_type and loaded.labels == labels
    assert np.abs(np.array([[p[n] for n in labels] for p in run(loaded.predict(TEXTS))])
                  - ours).max() <= 1e-6

    save_merged(load_merged(model_dir, tmp_path / "adapter"), tmp_path / "merged")
    logits, config = transformers_outputs(tmp_path / "merged", TEXTS)
    assert config.problem_type == problem_type and list(config.id2label.values()) == labels
    want = sigmoid(logits) if problem_type == MULTI_LABEL else logits
    assert np.abs(ours - want).max() <= 1e-5

    report = run(clf.evaluate(examples))
    outputs = np.array([[p[n] for n in labels] for p in run(clf.predict(TRAIN))])
    targets = np.array([clf.targets(y) for y in gold])
    if problem_type == MULTI_LABEL:
        wanted, predicted = targets > 0.5, outputs > 0.5
        assert report["accuracy"] == pytest.approx((wanted == predicted).all(axis=1).mean())
        f1 = f1_score(wanted, predicted, average=None, zero_division=0)
        assert [report["labels"][n]["f1"] for n in labels] == pytest.approx(f1)
        assert report["accuracy"] >= before["accuracy"]
    else:
        assert report["mse"] == pytest.approx(mean_squared_error(targets, outputs))
        assert report["mae"] == pytest.approx(mean_absolute_error(targets, outputs))
        assert report["labels"]["stars"]["mse"] == pytest.approx(
            mean_squared_error(targets[:, 0], outputs[:, 0]))
        assert report["mse"] < before["mse"]


def test_held_out_quality_and_the_guard_read_the_kind(tmp_path):
    """quality(): a multi-label head's loss is transformers' BCE, its macro-F1 scikit-learn's;
    a regression head's loss its MSE, with the mean absolute error beside it."""
    rng = np.random.default_rng()
    logits = rng.standard_normal((12, 3)) * 2
    gold = random_targets(rng, 12, 3, MULTI_LABEL)
    q = ClassificationTask(3, problem_type=MULTI_LABEL).quality(logits.tolist(), gold.tolist())
    want = torch.nn.BCEWithLogitsLoss()(torch.tensor(logits), torch.tensor(gold)).item()
    assert q["loss"] == pytest.approx(want, rel=1e-12)
    assert q["macro_f1"] == pytest.approx(f1_score(gold > 0.5, logits > 0, average="macro",
                                                   zero_division=0))
    assert q["accuracy"] == pytest.approx(((gold > 0.5) == (logits > 0)).all(axis=1).mean())
    gold = random_targets(rng, 12, 3, REGRESSION)
    q = ClassificationTask(3, problem_type=REGRESSION).quality(logits.tolist(), gold.tolist())
    assert q["loss"] == pytest.approx(mean_squared_error(gold, logits), rel=1e-12)
    assert q["mae"] == pytest.approx(mean_absolute_error(gold, logits), rel=1e-12)
    assert "accuracy" not in q


def fine_tuned(tmp_path, problem_type, labels):
    """A BertForSequenceClassification of that kind saved as transformers saves it (a head of
    one row without problem_type: what transformers reads as regression)."""
    from transformers import AutoModelForSequenceClassification

    bare = bare_dir(tmp_path, "bert")
    directory = fine_tuned_dir(bare, tmp_path / f"fine_tuned-{problem_type}-{len(labels)}",
                               labels=labels)
    if problem_type is not None:
        model = AutoModelForSequenceClassification.from_pretrained(directory,
                                                                   problem_type=problem_type)
        model.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("problem_type, labels", [
    (MULTI_LABEL, ["toxic", "insult", "threat"]), (REGRESSION, ["a", "b"]), (None, ["score"])])
def test_a_fine_tuned_checkpoint_of_each_kind_predicts_as_transformers(tmp_path, problem_type,
                                                                       labels):
    directory = fine_tuned(tmp_path, problem_type, labels)
    logits, config = transformers_outputs(directory, TEXTS)
    assert config.problem_type == problem_type
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = run(TextClassifier.create(directory))
    assert clf.labels == labels and clf.problem_type == (problem_type or REGRESSION)
    want = sigmoid(logits) if problem_type == MULTI_LABEL else logits
    ours = np.array([[p[n] for n in labels] for p in run(clf.predict(TEXTS))])
    assert np.abs(ours - want).max() <= 1e-5
    # a single-label classifier on it: the head is not the start, as the warning says
    with pytest.warns(UserWarning, match=f"holds a {problem_type or REGRESSION} head, not a "
                                         "single_label_classification one: a new head starts"):
        fresh = run(TextClassifier.create(directory, ["x", "y"],
                                          problem_type="single_label_classification"))
    assert fresh.problem_type == "single_label_classification"
    with pytest.raises(ValueError, match=f"holds a {problem_type or REGRESSION} head .*not a "
                                         "single_label_classification one: give label names"):
        run(TextClassifier.create(directory, problem_type="single_label_classification"))


def test_what_is_refused(tmp_path):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=6)
    multi = run(TextClassifier.create(model_dir, ["a", "b"], problem_type=MULTI_LABEL))
    for label, match in ((["a", "z"], r"labels \['z'\] are not among"),
                         ({"a": 1.5}, r"gives each label name a target within \[0, 1\], got "
                                      "'a': 1.5"),
                         ("a", "a list of label names or"),
                         (["a", "a"], "names a label twice"),
                         ({"a": float("nan")}, "target within")):
        with pytest.raises(ValueError, match=match):
            run(multi.fit([Example("text", label)], ClassifierTrainConfig(epochs=1)))
    with pytest.raises(ValueError, match="class weights and label smoothing are a single-label"):
        run(multi.fit([Example("text", ["a"])], ClassifierTrainConfig(class_weights=[1.0, 2.0])))
    regression = run(TextClassifier.create(model_dir, ["x", "y"], problem_type=REGRESSION))
    for label, match in ((1.0, r"\{label: value\} for every label"),
                         ({"x": 1.0}, "a value for every label"),
                         (["x"], r"a regression \"label\" is a number or"),
                         ({"x": 1.0, "y": True}, "gives each label name a number, got 'y'"),
                         ({"x": 1.0, "y": 1e39}, "gives each label name a number, got 'y'"),
                         ({"x": 1.0, "y": 10 ** 400}, "gives each label name a number, got 'y'")):
        with pytest.raises(ValueError, match=match):
            run(regression.fit([Example("text", label)], ClassifierTrainConfig(epochs=1)))
    with pytest.raises(ValueError, match="unknown problem_type 'ranking'"):
        run(TextClassifier.create(model_dir, ["a", "b"], problem_type="ranking"))
    with pytest.raises(ValueError, match="labels must be two or more"):
        run(TextClassifier.create(model_dir, ["a"]))
    run(TextClassifier.create(model_dir, ["a"], problem_type=MULTI_LABEL))   # one is enough

    run(multi.save(tmp_path / "multi"))
    with pytest.raises(ValueError, match="holds a multi_label_classification head .*not a "
                                         "regression one"):
        run(TextClassifier.load(model_dir, tmp_path / "multi", problem_type=REGRESSION))
    single = run(TextClassifier.create(model_dir, ["a", "b"]))
    run(single.save(tmp_path / "single"))
    (tmp_path / "single" / "labels.json").write_text('["a"]')
    with pytest.raises(ValueError, match=r"labels.json names one label \['a'\]: a single-label "
                                         "classifier needs two or more"):
        run(TextClassifier.load(model_dir, tmp_path / "single"))
    files = {f.name: f.read_bytes() for f in (tmp_path / "multi").iterdir()}
    with pytest.raises(ValueError, match="holds a multi_label_classification head, this "
                                         "classifier a single_label_classification one"):
        run(single.load_adapter_files(files))


@pytest.mark.parametrize("problem_type", [MULTI_LABEL, REGRESSION])
def test_the_command_line_trains_predicts_evaluates_and_exports(tmp_path, capsys, problem_type):
    """train --problem-type on JSONL labels of that kind; predict and eval read the kind from
    the adapter; the ONNX export's outputs are transformers' (a sigmoid per label, or values)
    with its kind in the metadata; bad labels are refused naming the line."""
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    from py_engine.cli import main

    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=8)
    if problem_type == MULTI_LABEL:
        gold = [["film", "praise"], ["plot"], ["film"], [], {"plot": 0.5, "film": 1}, ["praise"]]
        labels = ["film", "plot", "praise"]
    else:
        gold = [4.5, 1.0, 3.0, 2.5, 0.5, 5]
        labels = ["LABEL_0"]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                            for t, y in zip(TRAIN, gold)))
    adapter = tmp_path / "adapter"
    assert main(["train", "--model", str(model_dir), "--data", str(data), "--out", str(adapter),
                 "--problem-type", problem_type, "--epochs", "2", "--batch-size", "3"]) == 0
    err = capsys.readouterr().err
    assert f"{', '.join(labels)}, {problem_type})" in err
    assert ('"accuracy"' in err) == (problem_type == MULTI_LABEL)
    assert json.loads((adapter / "labels.json").read_text()) == labels

    assert main(["predict", "--model", str(model_dir), "--adapter", str(adapter), "--data",
                 str(data)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    logits, _ = transformers_outputs(model_dir, TRAIN[:6], adapter)
    if problem_type == MULTI_LABEL:
        probs = np.array([[line["probs"][n] for n in labels] for line in lines])
        assert np.abs(probs - sigmoid(logits)).max() <= 1e-5
        assert [line["labels"] for line in lines] == [[n for n, p in zip(labels, row) if p > 0.5]
                                                      for row in probs]
    else:
        values = np.array([[line["values"]["LABEL_0"]] for line in lines])
        assert np.abs(values - logits).max() <= 1e-5

    assert main(["eval", "--model", str(model_dir), "--adapter", str(adapter), "--data",
                 str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 6 and set(report["labels"]) == set(labels)
    assert ("mse" in report) == (problem_type == REGRESSION)

    onnx_dir = tmp_path / "onnx"
    assert main(["export", "--format", "onnx", "--model", str(model_dir), "--adapter",
                 str(adapter), "--out", str(onnx_dir)]) == 0
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"))
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["problem_type"] == problem_type
    config = AutoConfig.from_pretrained(onnx_dir)     # what ONNX Runtime's wrappers read
    assert config.problem_type == problem_type and list(config.id2label.values()) == labels
    names = [o.name for o in session.get_outputs()]
    assert names == (["logits", "probabilities"] if problem_type == MULTI_LABEL else ["logits"])
    enc = AutoTokenizer.from_pretrained(str(model_dir))(TRAIN[:6], padding=True, return_tensors="np")
    outputs = session.run(None, {k: enc[k].astype(np.int64) for k in
                                 ("input_ids", "attention_mask", "token_type_ids")})
    assert np.abs(outputs[-1] - (sigmoid(logits) if problem_type == MULTI_LABEL
                                 else logits)).max() <= 1e-5

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a", "label": gold[0]}) + "\n" +
                   json.dumps({"text": "b", "label": "film"}) + "\n")
    assert main(["train", "--model", str(model_dir), "--data", str(bad), "--out",
                 str(tmp_path / "never"), "--problem-type", problem_type]) == 2
    assert f"bad.jsonl:2: a {problem_type} \"label\" is" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    if problem_type == MULTI_LABEL:     # a list without the option: named
        assert main(["train", "--model", str(model_dir), "--data", str(data), "--out",
                     str(tmp_path / "never")]) == 2
        assert "--problem-type multi_label_classification" in capsys.readouterr().err
        assert main(["train", "--model", str(model_dir), "--data", str(data), "--out",
                     str(tmp_path / "never"), "--problem-type", problem_type,
                     "--label-smoothing", "0.1"]) == 2
        assert "--label-smoothing: only for single-label classifiers" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
@pytest.mark.parametrize("problem_type, C", [(MULTI_LABEL, 3), (REGRESSION, 1)])
def test_a_decoder_classifier_step_matches_transformers(tmp_path, family, problem_type, C):
    """A decoder read as a sequence classifier (its last real token) trains the same heads:
    transformers' LlamaForSequenceClassification kind computes the loss by problem_type."""
    from test_decoder_classifier import ALL, batch, model_dir

    directory = model_dir(tmp_path, family)
    peft = po.peft_model(directory, C, target_modules=ALL[family], seed=4,
                         problem_type=problem_type)
    if peft.config.pad_token_id is None:        # GPT-2: transformers needs one to batch
        peft.config.pad_token_id = peft.config.eos_token_id
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    rng = np.random.default_rng()
    ids, mask, _ = batch(directory, rng)
    targets = random_targets(rng, len(ids), C, problem_type)
    peft.train()
    out = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
               labels=torch.as_tensor(targets))
    out.loss.backward()
    want = {po.adapter_key(n).removeprefix("base_model.model."): p.grad.numpy().copy()
            for n, p in peft.named_parameters() if p.requires_grad}
    runtime = runtimes(None, directory, adapter, C, gpu=False, last_token=True,
                       problem_type=problem_type)
    ours = run(runtime.accumulate(batch_of(ids, np.zeros_like(ids), mask, targets)))
    # transformers keeps the Llama family's norms and rotary tables in float32 (as
    # tests/test_decoder_classifier.py says): near float32 precision there
    loss_bound, grad_bound = (1e-12, 1e-10) if family == "gpt2" else (1e-6, 1e-5)
    assert abs(ours["loss"] - out.loss.item()) <= loss_bound * abs(out.loss.item())
    got = run(runtime.gradients())
    assert "score.weight" in want
    po.check_gradients(got, want, grad_bound)


def test_the_app_learns_one_label_per_text(tmp_path):
    """The app's service trains single-label classifiers: a multi-label checkpoint loads with
    a new single-label head, which its notes say; a multi-label adapter is refused by name."""
    from service_calls import call, error
    from test_adapter_import import files_of, service

    directory = fine_tuned(tmp_path, MULTI_LABEL, ["toxic", "insult", "threat"])
    svc = service(tmp_path)
    summary = call(svc, "load_model", files=files_of(directory))
    assert summary["labels"] == ["toxic", "insult", "threat"]
    assert summary["notes"] == [f"The checkpoint holds a {MULTI_LABEL} head, not a "
                                "single_label_classification one: a new head starts on its encoder"]
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=9)
    clf = run(TextClassifier.create(model_dir, ["a", "b"], problem_type=MULTI_LABEL))
    run(clf.save(tmp_path / "multi"))
    message = error(svc, "load_model", files=files_of(model_dir),
                    adapter=files_of(tmp_path / "multi"))["message"]
    assert f"holds a {MULTI_LABEL} head (its head_config.json), not a " \
           "single_label_classification one" in message
    svc.close()


def test_the_training_job_keeps_the_kind_of_head(tmp_path, capsys):
    """`py-engine export-job` trains single-label classifiers unless --problem-type or the
    adapter it continues says multi-label (tests/test_export_job.py trains one): a multi-label
    checkpoint's head is not the start of a single-label job's head (what TextClassifier.create
    starts from, with the same seed); a multi-label adapter continued on single-label lines,
    or with --problem-type single_label_classification, is refused by name before anything is
    written, as is a regression adapter."""
    from safetensors.numpy import load_file

    from py_engine.cli import main

    labels = ["toxic", "insult", "threat"]
    directory = fine_tuned(tmp_path, MULTI_LABEL, labels)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": labels[i % 3]}) + "\n"
                            for i, t in enumerate(TRAIN)))
    job = tmp_path / "job"
    assert main(["export-job", "--model", str(directory), "--data", str(data), "--out", str(job),
                 "--seed", "5"]) == 0, capsys.readouterr().err
    theirs = {k.removeprefix("base_model.model."): v
              for k, v in load_file(job / "adapter" / "adapter_model.safetensors").items()}
    with pytest.warns(UserWarning, match="a new head starts"):
        clf = run(TextClassifier.create(directory, labels, seed=5,
                                        problem_type="single_label_classification"))
    ours = run(clf.runtime.trainable_values())
    for name, (shape, values) in ours.items():
        assert np.array_equal(np.asarray(values, np.float32).reshape(shape), theirs[name]), name
    head = load_file(directory / "model.safetensors")["classifier.weight"]
    assert not np.isin(theirs["classifier.weight"], head).any()

    multi = run(TextClassifier.create(directory))
    run(multi.save(tmp_path / "multi"))
    regression = run(TextClassifier.create(directory, ["score"], problem_type=REGRESSION))
    run(regression.save(tmp_path / "regression"))
    capsys.readouterr()
    for adapter, options, message in (
            ("multi", [], f'data.jsonl:1: a {MULTI_LABEL} "label" is a list of label names'),
            ("multi", ["--problem-type", "single_label_classification"],
             f"holds a {MULTI_LABEL} head, not a single_label_classification one"),
            ("regression", [], f"holds a {REGRESSION} head: the job trains single-label and "
                               "multi-label classifiers")):
        assert main(["export-job", "--model", str(directory), "--data", str(data), "--out",
                     str(tmp_path / "never"), "--adapter", str(tmp_path / adapter),
                     *options]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("problem_type", [MULTI_LABEL, REGRESSION])
def test_slices_with_a_guard_and_a_saved_state_equal_one_run(tmp_path, problem_type):
    """Held-out checks watch the kind's own metric (macro-F1, or the loss), the saved state
    keeps the kind, and training resumed from it after every slice ends where one run ends."""
    from py_engine.train.config import GuardConfig

    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=12)
    if problem_type == MULTI_LABEL:
        labels, gold = ["a", "b"], [["a"], ["b"], ["a", "b"], [], ["a"], ["b"], [], ["a", "b"]]
        monitor = "macro_f1"
    else:
        labels, gold = ["y"], [0.5, 1.5, -1.0, 2.0, 0.0, 1.0, -0.5, 3.0]
        monitor = "loss"
    examples = [Example(t, y) for t, y in zip(TRAIN, gold)]
    held = examples[:3]
    config = ClassifierTrainConfig(epochs=3, batch_size=3, lr=1e-2, seed=2)

    def make():
        return run(TextClassifier.create(model_dir, labels, problem_type=problem_type, seed=1))

    whole = make()
    run(whole.fit(examples, config))
    want = run(whole.runtime.trainable_values())

    clf = make()
    trainer = run(clf.trainer(examples, config, validation=held,
                              guard=GuardConfig(monitor=monitor, tolerance=100.0)))
    state = tmp_path / "state"
    while not trainer.done:
        run(trainer.run(max_steps=2))
        run(clf.save_state(trainer, state))
        clf, trainer = run(TextClassifier.resume(model_dir, state, examples, held))
        assert clf.problem_type == problem_type
    got = run(clf.runtime.trainable_values())
    for name, (shape, values) in want.items():
        assert np.array_equal(np.asarray(got[name][1]), np.asarray(values)), name
    quality = run(trainer.quality())        # the held-out examples'
    assert quality["examples"] == 3 and monitor in quality
    assert ("accuracy" in quality) == (problem_type == MULTI_LABEL)
