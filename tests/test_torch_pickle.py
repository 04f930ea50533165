"""PyTorch .bin files read without torch (formats/torch_pickle.py) against torch.load: every
dtype, views of all kinds (offsets, transposes, broadcast strides, shared storages), fresh
random state dicts each run; files that are not state dicts refused without running anything;
and the checkpoints and PEFT adapters older tools saved as .bin, loaded as transformers and PEFT
load them."""

import json
import pickle
import pickletools
import random
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch

import peft_oracle as po
from conftest import run
from py_engine.formats.peft_adapter import load_adapter
from py_engine.formats.torch_pickle import TorchFileError, load_torch
from py_engine.models.checkpoint import Checkpoint, CheckpointError
from py_engine.train.classifier import TextClassifier

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
TEXTS = ["the film was great", "a very bad plot"]


def as_bytes(tensor):
    """A tensor's elements in C order, little-endian, as torch holds them."""
    t = tensor.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def random_tensor(rng, dtype):
    shape = rng.choice([(), (0,), (5,), (3, 4), (2, 3, 4), (1, 7), (4, 0, 2)])
    base = torch.randn(shape) * 10 if dtype.is_floating_point else torch.randint(-100, 100, shape)
    return base.to(dtype)


def random_view(rng, tensor):
    """The tensor itself or a view of a bigger storage: a slice, a transpose, a broadcast."""
    kind = rng.choice(["plain", "slice", "transpose", "expand", "parameter"])
    if kind == "slice":
        bigger = torch.cat([tensor.reshape(-1), tensor.reshape(-1), tensor.reshape(-1)])
        n = tensor.numel()
        return bigger[n:2 * n].reshape(tensor.shape) if n else tensor
    if kind == "transpose" and tensor.dim() >= 2:
        return tensor.transpose(0, 1)
    if kind == "expand" and tensor.dim() == 1 and tensor.numel():
        return tensor.unsqueeze(0).expand(3, -1)
    if kind == "parameter" and tensor.dtype.is_floating_point:
        return torch.nn.Parameter(tensor, requires_grad=False)
    return tensor


def test_random_state_dicts_read_as_torch_load_reads_them(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for round_ in range(12):
        state = {}
        for k in range(rng.randint(1, 8)):
            state[f"layer.{k}.w"] = random_view(rng, random_tensor(rng, rng.choice(list(DTYPES))))
        if rng.random() < 0.5:                   # two names over one storage
            first = next(iter(state))
            state["tied.weight"] = state[first]
        path = tmp_path / f"{round_}.bin"
        torch.save(state, path)
        want = torch.load(path, weights_only=True)
        for source in (path, path.read_bytes()):
            ours = load_torch(source)
            assert ours.keys() == sorted(want), seed
            for name, tensor in want.items():
                assert ours.info(name) == (DTYPES[tensor.dtype], tuple(tensor.shape)), (seed, name)
                assert bytes(ours.raw(name)) == as_bytes(tensor), (seed, name)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (shutil.copyfile, (__file__, str(marker)))

    path = tmp_path / "evil.bin"
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in parts if n.endswith("/data.pkl"))
    parts[pkl] = pickle.dumps({"w": Payload()}, protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    with pytest.raises(TorchFileError, match=r"names shutil.copyfile, which a state dict of "
                                             r"tensors does not hold; it is not read"):
        load_torch(path)
    assert not marker.exists()


def test_files_that_are_no_state_dict_are_named(tmp_path):
    legacy = tmp_path / "legacy.bin"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(TorchFileError, match=r"not a zip archive: a file saved by PyTorch before 1.6"):
        load_torch(legacy)
    listed = tmp_path / "list.bin"
    torch.save([torch.ones(2)], listed)
    with pytest.raises(TorchFileError, match=r"the file holds a list, not a state dict"):
        load_torch(listed)
    nested = tmp_path / "nested.bin"
    torch.save({"model": {"w": torch.ones(2)}}, nested)
    with pytest.raises(TorchFileError, match=r"maps 'model' to something other than a tensor"):
        load_torch(nested)
    cut = tmp_path / "cut.bin"
    torch.save({"w": torch.ones(4)}, cut)
    with zipfile.ZipFile(cut) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    storage = next(n for n in parts if n.endswith("/data/0"))
    parts[storage] = parts[storage][:6]
    with zipfile.ZipFile(cut, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    with pytest.raises(TorchFileError, match=r"storage 0 holds 6 bytes, not the 16 its tensors declare"):
        load_torch(cut)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("torch-bin") / "model", seed=8)


def bin_copy(model_dir, out, shards=1):
    """model_dir's checkpoint with its weights as pytorch_model.bin (torch.save of the state
    dict, as transformers before 5 saved them), or as `shards` .bin files and their index."""
    from safetensors.torch import load_file

    out.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "tokenizer.json"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out / name)
    state = load_file(model_dir / "model.safetensors")
    if shards == 1:
        torch.save(state, out / "pytorch_model.bin")
        return out
    names = sorted(state)
    weight_map = {}
    for k in range(shards):
        file = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        part = {n: state[n] for n in names[k::shards]}
        torch.save(part, out / file)
        weight_map.update({n: file for n in part})
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


@pytest.mark.parametrize("shards", [1, 3])
def test_a_checkpoint_saved_as_pytorch_model_bin_loads(bert, tmp_path, shards):
    old = bin_copy(bert, tmp_path / "old", shards)
    new, ours = Checkpoint.load(bert), Checkpoint.load(old)
    assert new.names() == ours.names()
    for name in ours.names():
        assert ours.floats(name) == new.floats(name), name
    want = run(TextClassifier.create(bert, ["a", "b"], backend="numpy", seed=2))
    got = run(TextClassifier.create(old, ["a", "b"], backend="numpy", seed=2))
    assert run(got.predict(TEXTS)) == run(want.predict(TEXTS))
    (old / ("pytorch_model.bin" if shards == 1 else "pytorch_model-00002-of-00003.bin")).write_bytes(b"PK")
    with pytest.raises(CheckpointError, match=r"pytorch_model.*\.bin: not a zip archive"):
        Checkpoint.load(old)


def test_a_peft_adapter_saved_as_adapter_model_bin_gives_peft_s_probabilities(bert, tmp_path):
    """Older PEFT versions saved adapter_model.bin: it loads as PEFT loads it."""
    from safetensors.torch import load_file
    from transformers import BertTokenizerFast

    peft = po.peft_model(bert, 2, seed=9, dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=["a", "b"])
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    config, tensors, labels = load_adapter(adapter)
    assert labels == ["a", "b"] and any(n.endswith("lora_A.weight") for n in tensors)
    enc = BertTokenizerFast.from_pretrained(str(bert))(TEXTS, padding=True, return_tensors="np")
    theirs = po.probabilities(bert, adapter, enc["input_ids"], enc["attention_mask"])
    clf = run(TextClassifier.load(bert, adapter, backend="numpy"))
    ours = np.array([[p[label] for label in ("a", "b")] for p in run(clf.predict(TEXTS))])
    assert np.abs(ours - theirs).max() <= 1e-6, (ours, theirs)


def test_damaged_pickles_are_refused_by_name_or_read_as_torch_reads_them(tmp_path):
    """Bytes of data.pkl changed at random: the reader names the problem (TorchFileError) or
    gives what torch.load gives; no other error escapes it."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "good.bin"
    torch.save({"a": torch.randn(3, 4), "b": torch.randn(4).half(), "c": torch.arange(6)[1:4]}, path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in parts if n.endswith("/data.pkl"))
    outcomes = {"refused": 0, "read": 0}
    for k in range(150):
        data = bytearray(parts[pkl])
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        damaged = tmp_path / f"damaged-{k}.bin"
        with zipfile.ZipFile(damaged, "w") as z:
            for name, value in parts.items():
                z.writestr(name, bytes(data) if name == pkl else value)
        try:
            ours = load_torch(damaged)
        except TorchFileError:
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        try:
            want = torch.load(damaged, weights_only=True)
        except Exception:
            continue            # torch refuses what this reads: nothing to compare
        assert ours.keys() == sorted(want), (seed, k)
        for name, tensor in want.items():
            assert bytes(ours.raw(name)) == as_bytes(tensor), (seed, k, name)
    assert outcomes["refused"] > 30, (seed, outcomes)


def test_a_broadcast_far_larger_than_its_storage_is_refused(tmp_path):
    path = tmp_path / "wide.bin"
    torch.save({"w": torch.ones(2).unsqueeze(0).expand(1000, -1)}, path)
    with pytest.raises(TorchFileError, match=r"tensor 'w' repeats its storage's elements over 64 "
                                             r"times \(2000 elements from 2\)"):
        load_torch(path)


def test_damaged_archives_are_refused_by_name_or_read_as_torch_reads_them(tmp_path):
    """Bytes anywhere in the file changed or cut at random: TorchFileError, or torch.load's
    tensors; no other error escapes."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "good.bin"
    torch.save({"a": torch.randn(3, 4), "b": torch.arange(5)}, path)
    good = path.read_bytes()
    refused = 0
    for k in range(150):
        data = bytearray(good)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            ours = load_torch(bytes(data))
        except TorchFileError:
            refused += 1
            continue
        damaged = tmp_path / f"damaged-{k}.bin"
        damaged.write_bytes(bytes(data))
        try:
            want = torch.load(damaged, weights_only=True)
        except Exception:
            continue
        assert ours.keys() == sorted(want), (seed, k)
        for name, tensor in want.items():
            assert bytes(ours.raw(name)) == as_bytes(tensor), (seed, k, name)
    assert refused > 30, seed


def test_a_memo_slot_far_past_the_pickle_is_refused_before_unpickling(tmp_path):
    """One byte of data.pkl turned BINPUT into LONG_BINPUT in a CI run: the next four bytes
    named memo slot 0x58..., and the C unpickler grew its memo to it (21 GB, the run killed).
    Such an index is refused by name, with nothing allocated."""
    import resource

    path = tmp_path / "good.bin"
    torch.save({"a": torch.randn(3, 4)}, path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in parts if n.endswith("/data.pkl"))
    data = parts[pkl]
    at = next(pos for op, _, pos in pickletools.genops(data) if op.name == "BINPUT")
    damaged = data[:at] + b"r" + struct.pack("<I", 0x58000000) + data[at + 2:]
    out = tmp_path / "damaged.bin"
    with zipfile.ZipFile(out, "w") as z:
        for name, value in parts.items():
            z.writestr(name, damaged if name == pkl else value)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TorchFileError, match=r"LONG_BINPUT names memo slot 1476395008, past the "
                                             r"\d+ bytes of the pickle"):
        load_torch(out)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000   # KB: no 21 GB


@pytest.mark.parametrize("attribute", [0x10, 0x1E])
def test_an_entry_marked_as_a_directory_is_refused(tmp_path, attribute):
    """A central directory record whose external attributes mark a storage as a directory
    (MS-DOS attribute 0x10; one damaged byte): torch's reader gives that tensor whatever is in
    memory (zeros in one run, other values in the next), so it is refused by name."""
    path = tmp_path / "good.bin"
    torch.save({"a": torch.randn(3, 4), "b": torch.arange(5)}, path)
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")          # the central directory's records, in order
    while not data[at + 46:].startswith(b"good/data/0"):
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 38] = attribute            # the low byte of the external attributes
    with pytest.raises(TorchFileError, match="its record of good/data/0 marks it as a directory"):
        load_torch(bytes(data))
    assert load_torch(path).keys() == ["a", "b"]
