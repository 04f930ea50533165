"""Checkpoints saved in shards (model-00001-of-0000N.safetensors and the
model.safetensors.index.json naming each tensor's shard, as transformers' save_pretrained
writes checkpoints over its max_shard_size: Phi-2's, Phi-3's, Gemma 2's among the real ones)
read as transformers reads them, and an index that does not hold together is named."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, BertForSequenceClassification

import export_models as em
import peft_oracle as po
from conftest import run
from tiny_chat import tiny_chat_dir
from py_engine.models.checkpoint import Checkpoint, CheckpointError, DecoderCheckpoint
from py_engine.train.classifier import TextClassifier

INDEX = "model.safetensors.index.json"
IDS = [5, 17, 2, 40, 33, 8]


def sharded_copy(model, model_dir, out, shard_size="40KB"):
    """`model` (a transformers model of `model_dir`) saved to `out` in shards, with model_dir's
    tokenizer files beside; the shard files' names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(out, max_shard_size=shard_size)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out / name)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (out / "model.safetensors").exists()
    return shards


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(single-file checkpoint, the same in shards)."""
    path = tmp_path_factory.mktemp("sharded")
    model_dir = tiny_chat_dir(path, family="llama", **em.CHAT_SIZES)
    sharded_copy(AutoModelForCausalLM.from_pretrained(model_dir), model_dir, path / "sharded")
    return model_dir, path / "sharded"


def test_a_sharded_decoder_gives_transformers_logits(llama):
    model_dir, sharded = llama
    ours = em.our_decoder_logits(sharded, None, IDS)
    hf = AutoModelForCausalLM.from_pretrained(sharded).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([IDS])).logits[0].double().numpy()
    assert em.relative_error(ours, theirs) <= 1e-5
    single, shards = DecoderCheckpoint.load(model_dir), DecoderCheckpoint.load(sharded)
    library = {}
    for shard in sharded.glob("model-*.safetensors"):
        library.update(load_file(shard))
    assert single.names() == shards.names()
    for name in shards.names():
        assert np.array_equal(np.frombuffer(shards.floats(name), np.float32),
                              np.frombuffer(single.floats(name), np.float32)), name
        raw = next(k for k in library if k.endswith(name))
        assert np.array_equal(np.frombuffer(shards.floats(name), np.float32), library[raw].ravel())


def test_a_sharded_classifier_checkpoint_loads(tmp_path):
    model_dir = po.tiny_bert_dir(tmp_path / "bert", seed=4)
    sharded_copy(BertForSequenceClassification.from_pretrained(model_dir, num_labels=2), model_dir,
                 tmp_path / "sharded", shard_size="20KB")
    single, shards = Checkpoint.load(model_dir), Checkpoint.load(tmp_path / "sharded")
    assert shards.has_pooler and single.names() == shards.names()
    for name in shards.names():
        assert shards.floats(name) == single.floats(name), name
    texts = ["the film was great", "a very bad plot"]
    want = run(TextClassifier.create(model_dir, ["a", "b"], backend="numpy", seed=1))
    got = run(TextClassifier.create(tmp_path / "sharded", ["a", "b"], backend="numpy", seed=1))
    assert [p["a"] for p in run(got.predict(texts))] == [p["a"] for p in run(want.predict(texts))]


def test_model_safetensors_comes_first_as_in_transformers(llama, tmp_path):
    model_dir, sharded = llama
    both = tmp_path / "both"
    shutil.copytree(sharded, both)
    shutil.copyfile(model_dir / "model.safetensors", both / "model.safetensors")
    first = sorted(both.glob("model-*.safetensors"))[0]
    first.write_bytes(b"not a safetensors file")           # the shards are not read
    assert DecoderCheckpoint.load(both).names() == DecoderCheckpoint.load(model_dir).names()
    (both / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=rf"{first.name}: header length"):
        DecoderCheckpoint.load(both)


def _edit_index(directory, edit):
    index = json.loads((directory / INDEX).read_text())
    edit(index)
    (directory / INDEX).write_text(json.dumps(index))


@pytest.mark.parametrize("change, message", [
    (lambda d, idx, shards: (d / shards[1]).unlink(), r"names {s1}, which is missing from"),
    (lambda d, idx, shards: _edit_index(d, lambda i: i["weight_map"].update({idx[0]: "../x.safetensors"})),
     r"tensor '{t0}' is in '../x.safetensors', which is not the name of a .safetensors file beside"),
    (lambda d, idx, shards: _edit_index(d, lambda i: i["weight_map"].update({idx[0]: "model.bin"})),
     r"tensor '{t0}' is in 'model.bin', which is not the name of a .safetensors file"),
    (lambda d, idx, shards: _edit_index(d, lambda i: i.pop("weight_map")),
     r"\"weight_map\" must be an object naming the shard of each tensor, got null"),
    (lambda d, idx, shards: _edit_index(d, lambda i: i["weight_map"].update({"extra.weight": shards[0]})),
     r"says tensor 'extra.weight' is in {s0}, but no shard holds it"),
    (lambda d, idx, shards: (d / INDEX).write_text("[1, 2"), r"model.safetensors.index.json"),
    (lambda d, idx, shards: shutil.copyfile(d / shards[0], d / shards[1]), r"tensor '.*' is in both {s0} and {s1}"),
])
def test_an_index_that_does_not_hold_together_is_named(llama, tmp_path, change, message):
    _, sharded = llama
    directory = tmp_path / "broken"
    shutil.copytree(sharded, directory)
    index = json.loads((directory / INDEX).read_text())["weight_map"]
    shards = sorted(set(index.values()))
    by_shard = [n for n in sorted(index, key=lambda n: index[n]) if index[n] == shards[0]]
    change(directory, by_shard, shards)
    with pytest.raises(CheckpointError, match=message.format(s0=shards[0], s1=shards[1],
                                                             t0=by_shard[0])):
        DecoderCheckpoint.load(directory)


def test_a_directory_without_weights_names_both_forms(tmp_path, llama):
    model_dir, _ = llama
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copyfile(model_dir / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match=r"no model.safetensors in .* \(nor model.safetensors."
                                              r"index.json, pytorch_model.bin or pytorch_model.bin."
                                              r"index.json\)"):
        DecoderCheckpoint.load(empty)


def test_the_app_loads_a_sharded_checkpoint_from_its_files(llama):
    """The page hands the engine a picked folder's files: the index and its shards load."""
    from py_engine.app.models import load_model_files

    _, sharded = llama
    files = {p.name: p.read_bytes() for p in sharded.iterdir()}
    model = run(load_model_files(files, name="tiny", backend="numpy"))
    try:
        assert model.kind == "causal_lm"
    finally:
        model.close()
