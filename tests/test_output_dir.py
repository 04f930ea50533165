"""Output directories (py_engine.formats.output_dir): py_engine writes only into a new, empty or
its own directory, never over the model, an input or the current directory, and a failed or
refused save leaves what was there byte for byte."""

import json
import os
from array import array

import pytest

from py_engine.formats.model_dir import save_model_dir
from py_engine.formats.output_dir import (MARKER, OutputDirError, check_output_dir,
                                          remove_output_dir, write_files, write_output_dir)
from py_engine.formats.peft_adapter import load_adapter, save_adapter

CONFIG = {"r": 2, "lora_alpha": 2, "target_modules": ["query"], "task_type": "SEQ_CLS",
          "peft_type": "LORA"}
TENSORS = {"bert.encoder.layer.0.attention.self.query.lora_A.weight": ((2, 4), array("f", range(8)))}


def snapshot(directory):
    """{relative path: bytes} of every file under `directory` (hidden ones included)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, directory)] = open(path, "rb").read()
    return out


def fill_with(**files):
    def fill(staging):
        for name, text in files.items():
            (staging / name).write_text(text)
    return fill


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A model directory and a data file in tmp_path/work, the current directory elsewhere."""
    work = tmp_path / "work"
    model = work / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    data = work / "data.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return work, model, data


def test_new_empty_and_own_directories_may_be_written(inputs):
    work, model, data = inputs
    protected = [model, data]
    assert check_output_dir(work / "new" / "deeper", protected) == (work / "new" / "deeper").resolve()
    (work / "empty").mkdir()
    assert check_output_dir(work / "empty", protected) == (work / "empty").resolve()
    write_output_dir(work / "empty", fill_with(a="1"), protected)
    assert json.loads((work / "empty" / MARKER).read_text()) == {"written_by": "py_engine",
                                                                "files": ["a"]}
    # Written by py_engine: replaced, and only what the new save writes is left.
    write_output_dir(work / "empty", fill_with(b="2"), protected)
    assert sorted(os.listdir(work / "empty")) == [MARKER, "b"]
    # Inside the model directory is fine: nothing there is replaced.
    write_output_dir(model / "adapter", fill_with(c="3"), protected)
    assert (model / "config.json").read_text() == "{}"
    assert not [p for p in os.listdir(work) if p.startswith(".")]     # no staging left behind


def test_an_output_is_replaced_only_by_output_of_its_kind(inputs):
    """A dataset export where a training state was (--out pointed at the wrong folder) would
    lose what a resume needs: refused before anything is written."""
    work, model, data = inputs
    state = work / "state"
    write_output_dir(state, fill_with(**{"training_state.json": "{}"}), kind="a training state")
    assert json.loads((state / MARKER).read_text())["kind"] == "a training state"
    before = snapshot(state)
    for kind in ("a dataset", "a model"):
        with pytest.raises(OutputDirError, match=f"cannot write to .*: it holds a training "
                                                 f"state py_engine wrote, which writing {kind} "
                                                 "there would delete"):
            check_output_dir(state, [model, data], kind=kind)
        with pytest.raises(OutputDirError, match="it holds a training state"):
            write_output_dir(state, fill_with(a="1"), kind=kind)
    assert snapshot(state) == before
    write_output_dir(state, fill_with(b="2"), kind="a training state")        # its own kind
    assert sorted(os.listdir(state)) == [MARKER, "b"]
    write_output_dir(work / "old", fill_with(a="1"))        # a marker without a kind (older)
    write_output_dir(work / "old", fill_with(c="3"), kind="a model")
    assert json.loads((work / "old" / MARKER).read_text())["kind"] == "a model"
    with pytest.raises(ValueError, match="unknown output kind 'a poem'"):
        check_output_dir(work / "new", kind="a poem")


def test_written_directories_get_the_umask_or_keep_their_own_permissions(inputs):
    work, model, data = inputs
    old = os.umask(0o027)
    try:
        write_output_dir(work / "fresh", fill_with(a="1"), [model, data])
        (work / "shared").mkdir()
        os.chmod(work / "shared", 0o755)
        write_output_dir(work / "shared", fill_with(a="1"), [model, data])
        write_output_dir(work / "shared", fill_with(b="2"), [model, data])     # replaced
    finally:
        os.umask(old)
    assert (work / "fresh").stat().st_mode & 0o7777 == 0o750      # as mkdir makes it
    assert (work / "shared").stat().st_mode & 0o7777 == 0o755     # not mkdtemp's 0700


@pytest.mark.parametrize("case, reason", [
    ("model", "it is the model directory"),
    ("data", "it is the data file"),
    ("work", "it holds the model directory"),
    ("cwd", "it is the current directory"),
    ("cwd_parent", "it holds the current directory"),
    ("file", "exists and is not a directory"),
    ("under_file", "is a file, not a directory"),
    ("foreign", "holds files py_engine did not write"),
    ("peft", "a PEFT adapter made elsewhere"),
    ("owned_plus_user_file", "besides py_engine's output it holds notes.txt"),
    ("link_to_model", "it is the model directory"),
    ("root", "filesystem root"),
])
def test_refused_outputs_are_named_and_left_alone(inputs, tmp_path, case, reason):
    work, model, data = inputs
    (work / "file.txt").write_text("mine")
    (work / "foreign").mkdir()
    (work / "foreign" / "thesis.tex").write_text("years of work")
    (work / "peft").mkdir()
    (work / "peft" / "adapter_config.json").write_text("{}")
    (work / "peft" / "adapter_model.safetensors").write_bytes(b"weights")
    write_output_dir(work / "owned", fill_with(a="1"))
    (work / "owned" / "notes.txt").write_text("my notes")
    (work / "link").symlink_to(model)
    path = {"model": model, "data": data, "work": work, "cwd": ".", "cwd_parent": "..",
            "file": work / "file.txt", "under_file": work / "file.txt" / "out",
            "foreign": work / "foreign", "peft": work / "peft", "link_to_model": work / "link",
            "owned_plus_user_file": work / "owned", "root": "/"}[case]
    before = snapshot(tmp_path)
    protected = {"the model directory": model, "the data file": data}
    with pytest.raises(OutputDirError, match=reason) as refused:
        check_output_dir(path, protected)
    assert str(path) in str(refused.value)
    with pytest.raises(OutputDirError, match=reason):
        write_output_dir(path, fill_with(x="new"), protected)
    assert snapshot(tmp_path) == before


def test_a_failed_fill_keeps_the_old_directory(inputs):
    work, _, _ = inputs
    write_output_dir(work / "out", fill_with(a="old"))
    before = snapshot(work / "out")

    def broken(staging):
        (staging / "a").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_output_dir(work / "out", broken)
    assert snapshot(work / "out") == before
    assert not [p for p in os.listdir(work) if p.startswith(".")]


def test_save_adapter_never_replaces_a_peft_made_adapter(inputs):
    work, _, _ = inputs
    peft = work / "peft_adapter"
    save_adapter(peft, CONFIG, TENSORS, labels=["a", "b"])
    (peft / MARKER).unlink()            # as PEFT writes it: no marker
    before = snapshot(peft)
    with pytest.raises(OutputDirError, match="did not write"):
        save_adapter(peft, CONFIG, TENSORS, labels=["a", "b"])
    assert snapshot(peft) == before
    # py_engine's own adapter is replaced, and reads back.
    save_adapter(work / "own", CONFIG, TENSORS, labels=["a", "b"])
    save_adapter(work / "own", dict(CONFIG, r=2), TENSORS, labels=["c", "d"])
    assert load_adapter(work / "own")[2] == ["c", "d"]


def test_save_model_dir_never_writes_over_its_source(inputs):
    work, model, _ = inputs
    weights = {"w": ((2,), array("f", [1, 2]))}
    save_model_dir(work / "tuned", model, weights)
    (work / "tuned" / "config.json").write_text('{"tuned": true}')
    # Training again from the fine-tuned checkpoint into itself would replace the weights read.
    before = snapshot(work / "tuned")
    with pytest.raises(OutputDirError, match="it is the checkpoint being fine-tuned"):
        save_model_dir(work / "tuned", work / "tuned", weights)
    with pytest.raises(OutputDirError, match="it holds the checkpoint being fine-tuned"):
        save_model_dir(work, model, weights)
    assert snapshot(work / "tuned") == before


def test_only_py_engine_s_own_output_of_the_kind_is_removed(tmp_path):
    """remove_output_dir deletes a directory py_engine wrote as that kind and nothing else: one
    it did not write, one with a file added, one of another kind are refused and left as
    they were."""
    state = write_files(tmp_path / "state", {"a.json": b"{}"}, kind="a training state")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.json").write_bytes(b"{}")
    added = write_files(tmp_path / "added", {"a.json": b"{}"}, kind="a training state")
    (added / "notes.txt").write_text("mine")
    model = write_files(tmp_path / "model", {"a.json": b"{}"}, kind="a model")
    for path, reason in ((mine, "did not write"), (added, "notes.txt"), (model, "a model"),
                         (tmp_path / "missing", "not a directory")):
        before = sorted(p.name for p in path.iterdir()) if path.exists() else None
        with pytest.raises(OutputDirError, match=reason):
            remove_output_dir(path, "a training state")
        assert (sorted(p.name for p in path.iterdir()) if path.exists() else None) == before
    remove_output_dir(state, "a training state")
    assert not state.exists()
