"""`py-engine tabs train|eval|deploy` on a tiny random BERT (fast), the report's numbers against
a recomputation, the confusion PNG read back with Pillow, base weights stored f16 and int8, and
every bad input as one line."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from py_engine.cli import main
from py_engine.formats import safetensors
from py_engine.gpu import run_sync
from py_engine.models.bert import LINEAR_NAMES
from py_engine.models.checkpoint import Checkpoint
from py_engine.ops.quantize import dequantize, quantize
from py_engine.tabs import plot
from py_engine.tabs.base_weights import INT8_FILE, load_base
from py_engine.tabs.answer import UNSURE_BELOW
from py_engine.tabs.categories import Categories
from py_engine.tabs.compress import base_files, compressed_checkpoint
from py_engine.tabs.evaluate import SHOWN_MISTAKES, print_report
from py_engine.tabs.generator import generate
from py_engine.tabs.model import TabClassifier
from py_engine.tabs.rules import LISTED_FILE, RULES_FILE, categorise_name, load_rules
from py_engine.tabs.tab_data import read_tabs

from peft_oracle import tiny_bert_dir, write_vocab

LABELS = Categories.default().names()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny BERT whose linears split into groups of 64 (so int8 applies), with a vocabulary
    holding words the generated tabs use."""
    path = tiny_bert_dir(tmp_path_factory.mktemp("tiny"), hidden_size=64, intermediate_size=128,
                         vocab_size=400)
    return path


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """`py-engine tabs train` on 280 generated tabs for one epoch."""
    out = tmp_path_factory.mktemp("runs") / "adapter"
    assert main(["tabs", "train", "--model", str(tiny), "--out", str(out), "--size", "280",
                 "--epochs", "1", "--batch-size", "16", "--seed", "4", "--max-length", "32"]) == 0
    return out


@pytest.fixture(scope="module")
def tabs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tabs.jsonl"
    rows = generate(70, seed=9, validation=0)[0]
    path.write_text("".join(json.dumps({"url": r["url"], "title": r["title"], "label": r["label"]}) + "\n"
                            for r in rows))
    return path


def test_train_writes_the_adapter_and_its_record(trained):
    files = {p.name for p in trained.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json", "head_config.json",
            "categories.json", "training.json"} <= files
    assert json.loads((trained / "labels.json").read_text()) == LABELS
    assert json.loads((trained / "head_config.json").read_text()) == {"pooling": "mean"}
    record = json.loads((trained / "training.json").read_text())
    assert record["config"]["size"] == 280 and record["config"]["seed"] == 4
    assert record["train_examples"] == 252 and record["train_seconds"] > 0
    assert 0 <= record["validation"]["accuracy"] <= 1 and set(record["validation"]["f1"]) == set(LABELS)
    assert record["command"].startswith("py-engine tabs train") and "--size 280" in record["command"]
    assert "eval" in record          # the source checkout has the evaluation set
    assert Categories.from_json((trained / "categories.json").read_text()) == Categories.default()


def test_train_with_augmented_tabs(tiny, tmp_path):
    """--augment adds rewritten copies of that share of the training tabs, and the record says so."""
    out = tmp_path / "augmented"
    assert main(["tabs", "train", "--model", str(tiny), "--out", str(out), "--size", "140", "--epochs", "1",
                 "--batch-size", "16", "--max-length", "32", "--augment", "0.5"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["augment"] == 0.5 and "--augment 0.5" in record["command"]
    assert 126 + 0.4 * 126 <= record["train_examples"] <= 126 + 63
    assert record["validation"]["count"] == 14          # validation tabs are never rewritten


def test_train_and_deploy_a_dora_adapter(tiny, tabs_file, tmp_path, capsys, device):
    """--use-dora trains DoRA (the record and its command line say so); deployed, the
    extension's GPU path (the base stored as the manifest says, DoRA's linears f32) predicts
    what the host predicts, with each probability within 1e-5."""
    out = tmp_path / "dora"
    assert main(["tabs", "train", "--model", str(tiny), "--out", str(out), "--size", "140", "--epochs", "1",
                 "--batch-size", "16", "--max-length", "32", "--use-dora"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["use_dora"] is True and record["command"].endswith("--use-dora")
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    dist = tmp_path / "dist" / "model"
    assert main(["tabs", "deploy", "--to", str(dist), "--adapter", str(out), "--model", str(tiny),
                 "--data", str(tabs_file)]) == 0
    capsys.readouterr()
    tabs = [(t.url, t.title) for t in read_tabs(tabs_file)]
    gpu = run_sync(run_sync(TabClassifier.load_deployed(dist, backend="gpu", device=device)).predict(tabs))
    host = run_sync(run_sync(TabClassifier.load_deployed(dist)).predict(tabs))
    assert [p["label"] for p in gpu] == [p["label"] for p in host]
    assert max(abs(g["probs"][k] - h["probs"][k]) for g, h in zip(gpu, host) for k in h["probs"]) <= 1e-5


def test_train_bad_augment(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["tabs", "train", "--model", str(tiny), "--out", str(tmp_path / "x"), "--augment", "1.5"])
    err = capsys.readouterr().err
    assert "--augment" in err and "[0, 1]" in err and not (tmp_path / "x").exists()


def test_eval_report(tiny, trained, tabs_file, tmp_path, capsys):
    png = tmp_path / "confusion.png"
    assert main(["tabs", "eval", "--data", str(tabs_file), "--adapter", str(trained), "--model", str(tiny),
                 "--json", "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    tabs = read_tabs(tabs_file)
    clf = run_sync(TabClassifier.load(tiny, trained))
    predictions = run_sync(clf.predict([(t.url, t.title) for t in tabs]))
    gold = [t.label for t in tabs]
    # the extension's answers: the model's, or the rules' where the model is under 0.9
    rules = load_rules()
    by_rules = [categorise_name(rules, t.url, t.title, Categories.default()) for t in tabs]
    for p, r in zip(predictions, by_rules):
        if r is not None and p["probs"][p["label"]] < UNSURE_BELOW:
            p.update(model=p["label"], label=r, source="rules")
    predicted = [p["label"] for p in predictions]
    assert report["count"] == len(tabs) == 70
    assert report["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, predicted)) / 70)
    assert report["model_accuracy"] == pytest.approx(
        sum(g == p.get("model", p["label"]) for g, p in zip(gold, predictions)) / 70)
    given = [(r, g) for r, g in zip(by_rules, gold) if r is not None]
    with_guess = report["rules"].pop("with_guess")
    assert report["rules"] == pytest.approx({
        "answered": len(given) / 70, "accuracy_when_answered": sum(r == g for r, g in given) / len(given),
        "accuracy": sum(r == g for r, g in given) / 70,
        "answered_for_model": sum(p.get("source") == "rules" for p in predictions)})
    # without WebGPU the word weights guess where no rule answers: every one of these tabs placed
    guessed = [categorise_name(rules, t.url, t.title, Categories.default(), guess=True) for t in tabs]
    assert all(g is not None for g in guessed)
    assert [g for g, r in zip(guessed, by_rules) if r is not None] == [r for r in by_rules if r is not None]
    assert with_guess == pytest.approx({"answered": 1.0, "accuracy_when_answered": sum(g == t for g, t in zip(guessed, gold)) / 70,
                                        "accuracy": sum(g == t for g, t in zip(guessed, gold)) / 70})
    assert with_guess["accuracy"] > report["rules"]["accuracy"]
    # the tiny model is unsure: the rules answer for it on some tabs, and not on others
    assert 0 < report["rules"]["answered_for_model"] < 70
    matrix = report["confusion"]["matrix"]
    assert report["confusion"]["labels"] == LABELS
    for i, label in enumerate(LABELS):
        row = matrix[i]
        assert sum(row) == report["per_class"][label]["support"] == gold.count(label)
        assert row[i] == sum(g == p == label for g, p in zip(gold, predicted))
        column = sum(r[i] for r in matrix)
        m = report["per_class"][label]
        assert m["precision"] == pytest.approx(row[i] / column if column else 0.0)
        assert m["recall"] == pytest.approx(row[i] / sum(row))
        pr = m["precision"] + m["recall"]
        assert m["f1"] == pytest.approx(2 * m["precision"] * m["recall"] / pr if pr else 0.0)
    for key in ("per_tab", "per_batch_50"):
        stats = report["latency_ms"][key]
        assert 0 < stats["mean"] <= stats["p95"] * 1.5 and stats["runs"] >= 8
    assert report["latency_ms"]["per_batch_50"]["mean"] > report["latency_ms"]["per_tab"]["mean"]
    # every wrong tab, the most confident first, with the probability of what was predicted
    wrong = [(t.url, t.title, t.label, p["label"], p.get("source", "model"), p["probs"][p["label"]])
             for t, p in zip(tabs, predictions) if p["label"] != t.label]
    assert wrong, "the tiny model gets every tab right: nothing to check the mistakes by"
    listed = [(m["url"], m["title"], m["label"], m["predicted"], m["source"], m["confidence"])
              for m in report["mistakes"]]
    assert sorted(m[:5] for m in listed) == sorted(m[:5] for m in wrong)
    confidence = {m[:5]: m[5] for m in wrong}
    assert all(m[5] == pytest.approx(confidence[m[:5]], rel=1e-6) for m in listed)
    assert [m[5] for m in listed] == sorted((m[5] for m in listed), reverse=True)
    print_report(report)            # the printed report lists the most confident of them
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and " as " in line]
    first = report["mistakes"][0]
    assert len(shown) == min(len(wrong), SHOWN_MISTAKES) and first["url"] in shown[0]
    assert shown[0].startswith(f"  {first['label']} as {first['predicted']} ")
    assert report["sizes"]["model_bytes"] == (tiny / "model.safetensors").stat().st_size
    assert report["sizes"]["adapter_bytes"] == sum((trained / n).stat().st_size for n in
                                                   ("adapter_config.json", "adapter_model.safetensors",
                                                    "labels.json", "head_config.json"))
    _check_png(png, report["confusion"])
    # --model-only: the model's answers, the rules answering for none
    assert main(["tabs", "eval", "--data", str(tabs_file), "--adapter", str(trained), "--model", str(tiny),
                 "--json", "--model-only"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["accuracy"] == pytest.approx(report["model_accuracy"]) and alone["rules"]["answered_for_model"] == 0
    assert alone["unsure_below"] == 0 and alone["mistakes"] and {m["source"] for m in alone["mistakes"]} == {"model"}


def _check_png(path, confusion):
    """The PNG's cells are shaded by their row share: read back with Pillow."""
    image = Image.open(path)
    assert image.format == "PNG"
    n = len(confusion["labels"])
    assert image.size == (plot.LEFT + n * plot.CELL + plot.MARGIN, plot.TOP + n * plot.CELL + plot.MARGIN)
    rgb = image.convert("RGB")
    for i, row in enumerate(confusion["matrix"]):
        for j, count in enumerate(row):
            x = plot.LEFT + j * plot.CELL + 3        # a corner of the cell, away from its number
            y = plot.TOP + i * plot.CELL + 3
            assert rgb.getpixel((x, y)) == plot.shade(count / (sum(row) or 1)), (i, j)


def test_eval_uses_the_shipped_adapter_by_default(tabs_file, capsys):
    assert main(["tabs", "eval", "--data", str(tabs_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adapter"].endswith("default_adapter") and report["count"] == 70


@pytest.mark.parametrize("content, message", [
    (None, "no data file at"),
    ('{"url": "https://a.com", "title": "x", "label": "Dev"}\nnot json\n', ":2: not valid JSON"),
    ('{"url": 3, "title": "x", "label": "Dev"}\n', ':1: "url" must be a string'),
    ('{"url": "", "title": "", "label": "Dev"}\n', ":1: a tab needs a url or a title"),
    ('{"url": "https://a.com", "title": "x"}\n', ':1: missing "label"'),
    ('{"url": "https://a.com", "title": "x", "label": "Gaming"}\n', "labels ['Gaming'] are not the adapter's categories"),
    ("", "the dataset is empty"),
])
def test_eval_bad_data(tiny, trained, tmp_path, content, message, capsys):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    code = main(["tabs", "eval", "--data", str(path), "--adapter", str(trained), "--model", str(tiny)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and err.count("\n") == 0, err


def test_eval_bad_plot_path(tiny, trained, tabs_file, tmp_path, capsys):
    for bad in (tmp_path / "x.jpg", tmp_path / "missing" / "x.png"):
        code = main(["tabs", "eval", "--data", str(tabs_file), "--adapter", str(trained),
                     "--model", str(tiny), "--plot", str(bad)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "--plot" in err and err.count("\n") == 0


# --- base weights ---------------------------------------------------------------------------------

def test_int8_and_f16_files_read_back(tiny):
    """The shipped int8 file dequantizes (in pure Python) to the engine's quantizer's values,
    the f16 file to the weights rounded to f16, and the rest keeps its values."""
    source = Checkpoint.load(tiny)
    name = "encoder.layer.0.attention.self.query.weight"
    w = np.frombuffer(source.floats(name), np.float32).reshape(source.shape(name))
    int8 = compressed_checkpoint(tiny, "int8")
    assert np.array_equal(np.frombuffer(int8.floats(name), np.float32).reshape(w.shape),
                          dequantize(quantize(w, 8, 64)))
    f16 = compressed_checkpoint(tiny, "f16")
    assert np.array_equal(np.frombuffer(f16.floats(name), np.float32), w.astype(np.float16).astype(np.float32).ravel())
    emb = "embeddings.word_embeddings.weight"
    assert np.array_equal(np.frombuffer(int8.floats(emb), np.float32),
                          np.frombuffer(source.floats(emb), np.float32).astype(np.float16).astype(np.float32))
    both = compressed_checkpoint(tiny, "int8-embeddings")
    e = np.frombuffer(source.floats(emb), np.float32).reshape(source.shape(emb))
    assert np.array_equal(np.frombuffer(both.floats(emb), np.float32).reshape(e.shape), dequantize(quantize(e, 8, 64)))
    files = base_files(tiny, "int8")
    assert set(files) >= {"config.json", INT8_FILE}
    # each quantized element takes one byte plus a 4-byte scale per 64, against 2 bytes in f16
    linear = sum(math.prod(source.shape(f"encoder.layer.{k}.{m}.weight")) for m in LINEAR_NAMES
                 for k in range(source.config.num_hidden_layers))
    saved = len(base_files(tiny, "f16")["model.safetensors"]) - len(files[INT8_FILE])
    assert abs(saved - linear * 15 / 16) < 4096


def test_int8_gpu_storage_matches_the_shipped_values(device, tiny, trained):
    """Loaded on the GPU with int8 storage, the shipped int8 weights give the logits of the
    NumPy runtime on the same dequantized values (the GPU re-quantizes them to the same
    integers)."""
    tabs = [(r["url"], r["title"]) for r in generate(21, seed=1, validation=0)[0]]
    host = run_sync(TabClassifier.load(tiny, trained, checkpoint=compressed_checkpoint(tiny, "int8")))
    gpu = run_sync(TabClassifier.load(tiny, trained, checkpoint=compressed_checkpoint(tiny, "int8"),
                                      backend="gpu", device=device, base_dtype="int8"))
    for h, g in zip(run_sync(host.predict(tabs)), run_sync(gpu.predict(tabs))):
        for label in LABELS:
            assert g["probs"][label] == pytest.approx(h["probs"][label], rel=1e-3, abs=1e-5)


# --- deploy ---------------------------------------------------------------------------------------

def test_deploy(tiny, trained, tabs_file, tmp_path, capsys):
    out = tmp_path / "dist" / "model"
    args = ["tabs", "deploy", "--to", str(out), "--adapter", str(trained), "--model", str(tiny),
            "--data", str(tabs_file)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_dtype"] == result["base_dtype"] in ("int8-embeddings", "int8", "f16")
    accuracy = result["accuracy"]
    assert accuracy[result["base_dtype"]] >= accuracy["f32"] - 0.005
    assert result["verified"]["tabs"] == 32 and result["verified"]["max_probability_difference"] <= 1e-6
    for name, meta in manifest["files"].items():
        assert (out / name).stat().st_size == meta["bytes"]
    assert json.loads((out / "adapter" / "labels.json").read_text()) == LABELS
    assert (out / "rules.json").read_bytes() == RULES_FILE.read_bytes()
    assert (out / manifest["listed_domains"]).read_bytes() == LISTED_FILE.read_bytes()
    assert Categories.from_json((out / "categories.json").read_text()) == Categories.default()
    clf = run_sync(TabClassifier.load_deployed(out))
    host = run_sync(TabClassifier.load(tiny, trained, checkpoint=load_base(out / "base")))
    tabs = [(t.url, t.title) for t in read_tabs(tabs_file)]
    assert [p["label"] for p in run_sync(clf.predict(tabs))] == [p["label"] for p in run_sync(host.predict(tabs))]
    # again into its own output: replaced; with --base-dtype given: that one
    assert main(args + ["--base-dtype", "f16"]) == 0
    assert json.loads((out / "manifest.json").read_text())["base_dtype"] == "f16"
    assert safetensors.load(out / "base" / "model.safetensors").info("embeddings.word_embeddings.weight")[0] == "F16"


def test_deploy_refuses_other_directories(tiny, trained, tabs_file, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.html").write_text("<p>mine</p>")
    adapter_copy = tmp_path / "adapter_copy"
    main(["tabs", "generate", "--out", str(adapter_copy), "--size", "14"])    # py_engine's, not a deploy
    capsys.readouterr()
    for target in (foreign, adapter_copy, trained):
        code = main(["tabs", "deploy", "--to", str(target), "--adapter", str(trained), "--model", str(tiny),
                     "--data", str(tabs_file)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "cannot write to" in err and err.count("\n") == 0, err
    assert (foreign / "index.html").read_text() == "<p>mine</p>"
    assert (trained / "adapter_model.safetensors").is_file()


def test_train_on_the_gpu(tiny, tmp_path):
    """--backend gpu trains through the GPU runtime (wgpu-native here) and says so."""
    out = tmp_path / "gpu_adapter"
    assert main(["tabs", "train", "--model", str(tiny), "--out", str(out), "--size", "70", "--epochs", "1",
                 "--batch-size", "16", "--max-length", "32", "--backend", "gpu"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["backend"] == "gpu" and "--backend gpu" in record["command"]
    assert json.loads((out / "labels.json").read_text()) == LABELS
