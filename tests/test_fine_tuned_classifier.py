"""A fine-tuned classifier checkpoint (transformers' *ForSequenceClassification saved with its
labels) as the starting point: TextClassifier.create without labels takes its labels
(config.json's id2label) and predicts as transformers does before any training (every family:
BERT, RoBERTa, DistilBERT, ELECTRA, MPNet, DeBERTa-v2, ModernBERT, ALBERT, ERNIE, Qwen2, GPT-2);
the head tensors it starts from are those PEFT's SEQ_CLS model starts from; labels given by
name take their rows wherever they are (reordered, added, none kept); and a damaged head or
id2label is refused by name."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import peft_oracle as po
from conftest import run
from py_engine.data.classification import Example
from py_engine.models.checkpoint import CheckpointError
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["the film was great", "an awful plot and a worse ending", "it is a film", "really"]
FAMILIES = ["bert", "roberta", "distilbert", "electra", "mpnet", "deberta", "modernbert",
            "albert", "ernie", "qwen2", "gpt2"]


def bare_dir(tmp_path, family):
    """A tiny checkpoint of `family` as its pretrained checkpoints ship (no classifier)."""
    path = tmp_path / "bare"
    if family in ("qwen2", "llama"):
        from tiny_chat import tiny_chat_dir

        return tiny_chat_dir(tmp_path, family=family)
    if family == "gpt2":
        from gpt2_checkpoints import tiny_dialogpt_dir

        return tiny_dialogpt_dir(path)
    if family == "roberta":
        from roberta_checkpoints import tiny_roberta_dir

        path.mkdir()
        return tiny_roberta_dir(path)
    maker = {"bert": po.tiny_bert_dir, "distilbert": po.tiny_distilbert_dir,
             "electra": po.tiny_electra_dir, "mpnet": po.tiny_mpnet_dir,
             "deberta": po.tiny_deberta_dir, "modernbert": po.tiny_modernbert_dir,
             "albert": po.tiny_albert_dir, "ernie": po.tiny_ernie_dir}[family]
    return maker(path)


def fine_tuned_dir(bare, out, labels=LABELS, seed=1):
    """transformers' sequence classifier of `bare` with `labels` (id2label), its new head drawn
    well away from its initial values (as training leaves it), saved with bare's tokenizer."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        bare, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        attn_implementation=po.attention(bare), output_loading_info=True)
    if model.config.pad_token_id is None:       # GPT-2: transformers needs one to batch
        model.config.pad_token_id = model.config.eos_token_id
    new = set(info["missing_keys"])
    assert new and all(n.split(".")[0] in ("classifier", "score", "pre_classifier", "pooler")
                       for n in new), new
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in new:
                p.copy_(0.5 * torch.randn_like(p))
    model.save_pretrained(out)
    for f in bare.iterdir():
        if f.is_file() and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def transformers_probabilities(directory, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        directory, attn_implementation=po.attention(directory)).to(torch.float64).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None:     # GPT-2's: its end of text, as config.json's pad id
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return torch.softmax(logits, -1).numpy(), [model.config.id2label[i] for i in range(logits.shape[1])]


def predicted(clf, texts, labels):
    return np.array([[p[label] for label in labels] for p in run(clf.predict(texts))])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fine_tuned_classifier_predicts_as_transformers_and_starts_as_peft(tmp_path, family):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    directory = fine_tuned_dir(bare_dir(tmp_path, family), tmp_path / "fine_tuned")
    theirs, their_labels = transformers_probabilities(directory, TEXTS)
    clf = run(TextClassifier.create(directory))       # no labels: the checkpoint's
    assert clf.labels == their_labels == LABELS
    assert np.abs(predicted(clf, TEXTS, LABELS) - theirs).max() <= 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # its own labels: no warning
        assert run(TextClassifier.create(directory, LABELS)).labels == LABELS

    # what PEFT's SEQ_CLS model trains whole starts from the checkpoint's values, as here
    peft = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(
            directory, attn_implementation=po.attention(directory)),
        LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8,
                   target_modules=list(clf.model.lora.target_modules)))
    peft.save_pretrained(tmp_path / "peft")
    from safetensors.numpy import load_file

    theirs = {k.removeprefix("base_model.model."): v
              for k, v in load_file(tmp_path / "peft" / "adapter_model.safetensors").items()}
    ours = run(clf.runtime.trainable_values())
    whole = [n for n in theirs if "lora_" not in n]
    assert f"{clf.model.head_module}.weight" in whole
    for name in whole:
        shape, data = ours[name]
        assert tuple(shape) == theirs[name].shape, name
        assert np.array_equal(np.asarray(data, np.float32).reshape(shape), theirs[name]), name


@pytest.mark.parametrize("family", ["roberta", "qwen2"])
def test_labels_take_their_rows_by_name(tmp_path, family):
    """Reordered, dropped and added labels: each kept label's logit is the checkpoint's, an
    added one's the mean of theirs; with none kept the head starts fresh (with a warning); training moves
    from there."""
    directory = fine_tuned_dir(bare_dir(tmp_path, family), tmp_path / "fine_tuned")
    theirs, _ = transformers_probabilities(directory, TEXTS)
    logits = np.log(theirs)         # up to a constant per text
    labels = ["positive", "sarcastic", "negative"]
    clf = run(TextClassifier.create(directory, labels))
    ours = np.log(predicted(clf, TEXTS, labels))
    want = np.stack([logits[:, 2], (logits[:, 0] + logits[:, 2]) / 2, logits[:, 0]], 1)
    shift = (ours - want).mean(1, keepdims=True)
    assert np.abs(ours - want - shift).max() <= 1e-5
    head = run(clf.runtime.trainable_values())[clf.model.head_module + ".weight"]
    assert tuple(head[0]) == (3, clf.checkpoint.config.hidden_size)

    with pytest.warns(UserWarning, match=r"none of which is among \['spam', 'ham'\]"):
        fresh = run(TextClassifier.create(directory, ["spam", "ham"], seed=4))
    weight = np.asarray(run(fresh.runtime.trainable_values())[fresh.model.head_module + ".weight"][1])
    assert np.std(weight) < 0.1         # N(0, initializer_range), not the checkpoint's 0.5

    before = predicted(clf, TEXTS, labels)
    examples = [Example(t, labels[i % 3]) for i, t in enumerate(TEXTS * 2)]
    run(clf.fit(examples, ClassifierTrainConfig(epochs=2, batch_size=4, lr=1e-2, seed=1)))
    assert np.abs(predicted(clf, TEXTS, labels) - before).max() > 1e-3


def test_refusals(tmp_path, capsys):
    from py_engine.cli import main

    bare = bare_dir(tmp_path, "bert")
    data = write_data(tmp_path / "data.jsonl", [{"text": t} for t in TEXTS])
    with pytest.raises(ValueError, match="is not a fine-tuned classifier .*has no "
                                         r"classifier\.weight.*label names are needed"):
        run(TextClassifier.create(bare))
    directory = fine_tuned_dir(bare, tmp_path / "fine_tuned")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    for id2label, match in (({"0": "a", "1": "b"}, r"has shape \(3, 32\) but config.json's 2 "
                                                   r"labels \(id2label\) implies \(2, 32\)"),
                            ({"0": "a", "1": "a", "2": "b"}, "distinct labels"),
                            ({"0": "a", "x": "b", "2": "c"}, "'x': 'b' is not a row number"),
                            ({"0": "a", "1": "b", "3": "c"}, "rows 0 to 2")):
        config_path.write_text(json.dumps(dict(config, id2label=id2label)))
        with pytest.raises(CheckpointError, match=match):
            run(TextClassifier.create(directory))
        with pytest.raises(CheckpointError, match=match):      # given labels: read all the same
            run(TextClassifier.create(directory, ["a", "b"]))
    # transformers leaves its default out: LABEL_0 .. of num_labels (2 unless given)
    plain = {k: v for k, v in config.items() if k not in ("id2label", "label2id")}
    config_path.write_text(json.dumps(dict(plain, num_labels=3)))
    assert run(TextClassifier.create(directory)).labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    config_path.write_text(json.dumps(plain))
    with pytest.raises(CheckpointError, match=r"config.json's 2 labels \(id2label\) implies"):
        run(TextClassifier.create(directory))
    # a kind of head transformers does not know (tests/test_problem_types.py: the others)
    config_path.write_text(json.dumps(dict(config, problem_type="ranking")))
    for labels in (None, LABELS):
        with pytest.raises(ValueError, match="config.json: unknown problem_type 'ranking'"):
            run(TextClassifier.create(directory, labels))
    capsys.readouterr()
    assert main(["predict", "--model", str(directory), "--data", str(data)]) == 2
    assert "unknown problem_type 'ranking'" in capsys.readouterr().err
    config_path.write_text(json.dumps(config))

    from safetensors.numpy import load_file, save_file

    weights = load_file(directory / "model.safetensors")
    weights["classifier.weight"][1, 2] = np.nan
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'classifier.weight' holds NaN \(element 34\)"):
        run(TextClassifier.create(directory))


def write_data(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_the_command_line_predicts_evaluates_trains_and_exports_a_fine_tuned_classifier(
        tmp_path, capsys, family):
    """predict and eval take a fine-tuned classifier without --adapter (transformers'
    probabilities); train starts the data's labels it holds from its head (and says so); the
    merged and ONNX exports need no adapter either; a checkpoint that
    is not one is refused in one line before any work."""
    from py_engine.cli import main

    bare = bare_dir(tmp_path, family)
    directory = fine_tuned_dir(bare, tmp_path / "fine_tuned")
    theirs, _ = transformers_probabilities(directory, TEXTS)
    data = write_data(tmp_path / "data.jsonl",
                      [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(TEXTS)])
    capsys.readouterr()
    assert main(["predict", "--model", str(directory), "--data", str(data)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert np.abs(np.array([[line["probs"][k] for k in LABELS] for line in lines])
                  - theirs).max() <= 1e-5
    assert main(["eval", "--model", str(directory), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == len(TEXTS) and list(report["labels"]) == LABELS

    # the data's labels: two of the checkpoint's and a new one
    rows = [{"text": t, "label": ["positive", "mixed", "negative"][i % 3]}
            for i, t in enumerate(TEXTS * 3)]
    adapter = tmp_path / "adapter"
    assert main(["train", "--model", str(directory), "--data",
                 str(write_data(tmp_path / "train.jsonl", rows)), "--out", str(adapter),
                 "--epochs", "1"]) == 0
    assert f"is a classifier of {', '.join(LABELS)}: the data's labels among them start " \
           "from its head" in capsys.readouterr().err
    assert json.loads((adapter / "labels.json").read_text()) == sorted(["positive", "mixed",
                                                                        "negative"])
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"

    from transformers import AutoModelForSequenceClassification

    merged = tmp_path / "merged"
    assert main(["export", "--format", "merged", "--model", str(directory), "--out",
                 str(merged)]) == 0
    again, labels = transformers_probabilities(merged, TEXTS)
    assert labels == LABELS and np.abs(again - theirs).max() <= 1e-5
    assert type(AutoModelForSequenceClassification.from_pretrained(merged)).__name__ == \
        json.loads((directory / "config.json").read_text())["architectures"][0]
    import onnxruntime as ort

    from encoder_checks import encoded

    assert main(["export", "--format", "onnx", "--model", str(directory), "--out",
                 str(tmp_path / "onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    ids, mask = encoded(directory, TEXTS)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    logits = session.run(None, feed)[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    assert np.abs(probs / probs.sum(1, keepdims=True) - theirs).max() <= 1e-5

    capsys.readouterr()
    refusal = (f"--adapter is needed: {bare} is not a fine-tuned classifier" if family == "bert"
               else f"{bare} is a chat model (a decoder): use score or generate")
    refusals = [(["predict", "--model", str(bare), "--data", str(data)], refusal)]
    if family == "bert":        # a bare decoder's merged export is its chat model's
        refusals.append((["export", "--format", "merged", "--model", str(bare), "--out",
                          str(tmp_path / "other")], "needs --adapter"))
    else:
        refusals.append((["export", "--format", "gguf", "--model", str(directory), "--out",
                          str(tmp_path / "other")], "is a decoder's fine-tuned sequence "
                         "classifier: --format merged exports it"))
    for argv, words in refusals:
        assert main(argv) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_the_service_loads_a_fine_tuned_classifier_with_its_labels(tmp_path):
    """No labels given: the checkpoint's, its family's pooling (the head reads [CLS]), its
    predictions transformers'; a decoder's (Qwen2ForSequenceClassification) loads as a
    classifier without kind; queue labels among its own take their rows; labels none of which
    it holds start a fresh head, which the summary's notes say."""
    from service_calls import call
    from test_adapter_import import files_of, service

    for family in ("bert", "qwen2"):
        directory = fine_tuned_dir(bare_dir(tmp_path / family, family), tmp_path / family / "ft")
        theirs, _ = transformers_probabilities(directory, TEXTS)
        svc = service(tmp_path / family)
        summary = call(svc, "load_model", files=files_of(directory))
        assert summary["kind"] == "classification" and summary["labels"] == LABELS
        assert summary["pooling"] == ("cls" if family == "bert" else "last")
        ours = [call(svc, "predict", text=t)["probs"] for t in TEXTS]
        assert np.abs(np.array([[p[k] for k in LABELS] for p in ours]) - theirs).max() <= 1e-5
        assert summary["notes"] == []
        # labels none of which it holds: a fresh head, and the summary's note says so
        summary = call(svc, "load_model", files=files_of(directory), labels=["spam", "ham"])
        assert summary["labels"] == ["spam", "ham"] and summary["notes"] == [
            f"The checkpoint is a classifier of the labels {LABELS}, none of which is among "
            "['spam', 'ham']: its head is not used, a new one starts"]
        svc.close()


def test_the_export_job_starts_from_the_fine_tuned_head(tmp_path, capsys):
    """`py-engine export --format job` on a fine-tuned classifier: the job's starting adapter
    is the one TextClassifier.create starts from (its head's rows by label)."""
    from safetensors.numpy import load_file

    from py_engine.cli import main

    directory = fine_tuned_dir(bare_dir(tmp_path, "roberta"), tmp_path / "fine_tuned")
    rows = [{"text": t, "label": ["positive", "mixed", "negative"][i % 3]}
            for i, t in enumerate(TEXTS * 2)]
    job = tmp_path / "job"
    assert main(["export-job", "--model", str(directory), "--data",
                 str(write_data(tmp_path / "data.jsonl", rows)), "--out", str(job),
                 "--seed", "5"]) == 0, capsys.readouterr().err
    labels = json.loads((job / "adapter" / "labels.json").read_text())
    theirs = {k.removeprefix("base_model.model."): v
              for k, v in load_file(job / "adapter" / "adapter_model.safetensors").items()}
    ours = run(run(TextClassifier.create(directory, labels, seed=5)).runtime.trainable_values())
    assert set(theirs) == set(ours)
    for name, (shape, data) in ours.items():
        assert np.array_equal(np.asarray(data, np.float32).reshape(shape), theirs[name]), name
    head = theirs["classifier.out_proj.weight"]
    checkpoint = load_file(directory / "model.safetensors")["classifier.out_proj.weight"]
    assert np.array_equal(head[labels.index("positive")], checkpoint[LABELS.index("positive")])


@pytest.mark.parametrize("family", ["deberta", "gpt2"])
def test_on_the_gpu_it_predicts_as_transformers(tmp_path, device, family):
    directory = fine_tuned_dir(bare_dir(tmp_path, family), tmp_path / "fine_tuned")
    theirs, _ = transformers_probabilities(directory, TEXTS)
    clf = run(TextClassifier.create(directory, backend="gpu", device=device))
    assert np.abs(predicted(clf, TEXTS, LABELS) - theirs).max() <= 1e-5
