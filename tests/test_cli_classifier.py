"""`py-engine train | predict | eval`: the command-line contract, and its errors."""

import json
import shutil
import subprocess
import sys

import pytest

import peft_oracle as po

CLI = [sys.executable, "-m", "py_engine.cli"]
TEXTS = {"pos": ["the film was great", "a very good movie", "great actor, really fine"],
         "neg": ["the film was awful", "a very bad plot", "not good, really bad"]}


def cli(*args, check=True):
    out = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and out.returncode:
        raise AssertionError(f"exit {out.returncode}\n{out.stderr}")
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = po.tiny_bert_dir(root / "model", seed=41)
    rows = [{"text": t, "label": label} for label, texts in TEXTS.items() for t in texts] * 3
    return root, model, write_jsonl(root / "train.jsonl", rows)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_train_predict_eval(workspace, backend):
    root, model, data = workspace
    out = root / f"adapter-{backend}"
    train = cli("train", "--model", model, "--data", data, "--out", out, "--backend", backend,
                "--epochs", 3, "--lr", 0.02, "--r", 4, "--batch-size", 6, "--seed", 7)
    steps = [json.loads(line) for line in train.stderr.splitlines() if line.startswith("{")]
    assert [s["step"] for s in steps] == list(range(1, 10))
    assert all(0 < s["loss"] < 5 and s["grad_norm"] > 0 for s in steps), steps
    assert json.loads((out / "labels.json").read_text()) == ["neg", "pos"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4

    predicted = cli("predict", "--model", model, "--adapter", out, "--data", data, "--backend", backend)
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(lines) == 18
    for line in lines:
        assert set(line["probs"]) == {"neg", "pos"} and line["label"] in ("neg", "pos")
        assert abs(sum(line["probs"].values()) - 1) < 1e-5
        assert line["label"] == max(line["probs"], key=line["probs"].get)

    report = json.loads(cli("eval", "--model", model, "--adapter", out, "--data", data, "--json",
                            "--backend", backend).stdout)
    assert report["count"] == 18 and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["labels"]) == {"neg", "pos"}
    for m in report["labels"].values():
        assert set(m) == {"precision", "recall", "f1", "support"}
    agree = sum(line["label"] == row["label"] for line, row in
                zip(lines, map(json.loads, data.read_text().splitlines())))
    assert report["accuracy"] == pytest.approx(agree / 18)


def error_of(*args):
    out = cli(*args, check=False)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("py-engine: error:") and "Traceback" not in out.stderr
    return out.stderr


def test_bad_input_gets_a_clear_error(workspace, tmp_path):
    root, model, data = workspace
    adapter = root / "adapter-numpy"
    if not adapter.exists():
        cli("train", "--model", model, "--data", data, "--out", adapter, "--epochs", 1)
    assert "no model directory" in error_of("train", "--model", tmp_path / "nope", "--data", data,
                                            "--out", tmp_path / "a")
    broken = tmp_path / "broken-model"
    shutil.copytree(model, broken)
    (broken / "model.safetensors").unlink()
    assert "no model.safetensors" in error_of("train", "--model", broken, "--data", data, "--out", tmp_path / "a")
    wrong = tmp_path / "wrong-model"
    shutil.copytree(model, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["intermediate_size"] += 1
    (wrong / "config.json").write_text(json.dumps(config))
    assert "config.json implies" in error_of("train", "--model", wrong, "--data", data, "--out", tmp_path / "a")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "pos"}\n\n{"text": "oops", "label": }\n')
    assert "bad.jsonl:3" in error_of("train", "--model", model, "--data", bad, "--out", tmp_path / "a")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    assert "empty" in error_of("train", "--model", model, "--data", empty, "--out", tmp_path / "a")
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"text": "great", "label": "meh"}])
    assert "meh" in error_of("predict", "--model", model, "--adapter", adapter, "--data", unknown)
    assert "no adapter_config.json" in error_of("predict", "--model", model, "--adapter", tmp_path,
                                                "--data", data)
    assert not (tmp_path / "a").exists()      # nothing half-written by the failed runs


def test_minilm_alias_predicts_with_a_peft_adapter(tmp_path):
    import torch

    adapter = po.save_adapter(po.peft_model(po.MINILM_DIR, 2, seed=61, dtype=torch.float32),
                              tmp_path / "adapter", labels=["neg", "pos"])
    data = write_jsonl(tmp_path / "data.jsonl", [{"text": "what a lovely day"}, {"text": "meh"}])
    lines = cli("predict", "--model", "minilm", "--adapter", adapter, "--data", data).stdout.splitlines()
    assert [set(json.loads(line)["probs"]) for line in lines] == [{"neg", "pos"}] * 2


def test_a_sentence_transformers_checkpoint_s_pooling_is_named(workspace, tmp_path):
    """A checkpoint whose sentence-transformers Pooling module pools the mean of its tokens
    (MiniLM's, all-mpnet-base-v2's): training it with the default pooling says that --pooling
    mean trains it as it was made; nothing is said with --pooling given, for a cls Pooling
    module, or where the files cannot be read (a note never stops a run)."""
    from py_engine.formats.head_config import checkpoint_pooling

    root, model, data = workspace
    made = tmp_path / "model"
    shutil.copytree(model, made)
    (made / "1_Pooling").mkdir()
    (made / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    modes = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
             "pooling_mode_max_tokens": False}
    (made / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    train = ("train", "--model", made, "--data", data, "--epochs", 1, "--batch-size", 6)
    said = cli(*train, "--out", tmp_path / "a").stderr
    assert "sentence-transformers checkpoint made to pool the mean" in said and "--pooling mean" in said
    assert "sentence-transformers" not in cli(*train, "--out", tmp_path / "b", "--pooling", "mean").stderr
    assert checkpoint_pooling(made) == "mean" and checkpoint_pooling(model) is None
    (made / "1_Pooling" / "config.json").write_text(json.dumps(
        dict(modes, pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)))
    assert checkpoint_pooling(made) == "cls"
    (made / "1_Pooling" / "config.json").write_text(json.dumps(dict(modes, pooling_mode_max_tokens=True)))
    assert checkpoint_pooling(made) is None                  # mean and max: neither here
    (made / "modules.json").write_text("[{")
    assert checkpoint_pooling(made) is None
    (made / "modules.json").write_text(json.dumps([{"path": "../..", "type": "x.Pooling"}]))
    assert checkpoint_pooling(made) is None                  # nothing read outside the folder
    assert "sentence-transformers" not in cli(*train, "--out", tmp_path / "c").stderr
