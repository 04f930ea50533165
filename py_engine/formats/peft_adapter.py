"""PEFT adapter directories: adapter_config.json + adapter_model.safetensors (+ labels.json).

Key names are PEFT's: "base_model.model." + the module path + ".lora_A.weight" etc., with the
classification head saved under its plain name (PEFT strips "modules_to_save.default" when it
saves). A directory is written next to its destination and swapped in only when complete, so a
partly written adapter never replaces a good one.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from . import safetensors

PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter directory that cannot be read or written; the message names the file."""


def save_adapter(directory, config_dict, tensors, labels=None, extra_json=None):
    """Write an adapter directory atomically.

    tensors: {name without PREFIX: (shape, array('f') or bytes of f32)}; extra_json: {file
    name: JSON-ready value} written beside (py_engine's own settings PEFT has no field for).
    """
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
    try:
        (staging / "adapter_config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
        safetensors.save(
            {PREFIX + name: ("F32", tuple(shape), data) for name, (shape, data) in tensors.items()},
            staging / "adapter_model.safetensors",
        )
        if labels is not None:
            (staging / "labels.json").write_text(json.dumps(list(labels), ensure_ascii=False) + "\n")
        for name, value in (extra_json or {}).items():
            (staging / name).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
        _swap_in(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _swap_in(staging, directory):
    """Replace `directory` by `staging` with renames only; the old one is removed last."""
    old = None
    if directory.exists():
        if not directory.is_dir():
            raise AdapterError(f"{directory} exists and is not a directory")
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    try:
        os.replace(staging, directory)
    except BaseException:
        if old is not None:
            os.replace(old, directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_adapter(directory):
    """(config dict, {name without PREFIX: (shape, array('f'))}, labels or None)."""
    directory = Path(directory)
    config_path = directory / "adapter_config.json"
    weights_path = directory / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise AdapterError(f"adapter directory {directory} has no {path.name}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{config_path} is not valid JSON: {e}") from None
    try:
        file = safetensors.load(weights_path)
    except safetensors.SafeTensorsError as e:
        raise AdapterError(f"{weights_path}: {e}") from None
    tensors = {}
    for key in file.keys():
        if not key.startswith(PREFIX):
            raise AdapterError(f"{weights_path}: unexpected tensor name {key!r} (no {PREFIX!r} prefix)")
        name = key[len(PREFIX):].replace(".default.", ".").replace(".modules_to_save.", ".")
        tensors[name] = (file.info(key)[1], file.floats(key))
    labels = None
    labels_path = directory / "labels.json"
    if labels_path.is_file():
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise AdapterError(f"{labels_path} must hold a JSON list of label names")
    return config, tensors, labels


def adapter_files(config_dict, tensors, labels=None, extra_json=None):
    """An adapter's files as {file name: bytes} (what save_adapter writes), for stores that
    are not directories (IndexedDB)."""
    files = {"adapter_config.json": (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode(),
             "adapter_model.safetensors": safetensors.save_bytes(
                 {PREFIX + name: ("F32", tuple(shape), data) for name, (shape, data) in tensors.items()})}
    if labels is not None:
        files["labels.json"] = (json.dumps(list(labels), ensure_ascii=False) + "\n").encode()
    for name, value in (extra_json or {}).items():
        files[name] = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
    return files


def read_adapter_files(files, source="the adapter"):
    """(config dict, {name without PREFIX: (shape, array('f'))}, labels or None) from
    adapter_files()'s {file name: bytes}."""
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if name not in files:
            raise AdapterError(f"{source} has no {name}")
    try:
        config = json.loads(bytes(files["adapter_config.json"]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise AdapterError(f"{source}: adapter_config.json is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{source}: adapter_config.json must hold a JSON object")
    try:
        file = safetensors.load(bytes(files["adapter_model.safetensors"]))
    except safetensors.SafeTensorsError as e:
        raise AdapterError(f"{source}: adapter_model.safetensors: {e}") from None
    tensors = {}
    for key in file.keys():
        if not key.startswith(PREFIX):
            raise AdapterError(f"{source}: unexpected tensor name {key!r} (no {PREFIX!r} prefix)")
        tensors[key[len(PREFIX):]] = (file.info(key)[1], file.floats(key))
    labels = None
    if "labels.json" in files:
        labels = json.loads(bytes(files["labels.json"]).decode("utf-8"))
    return config, tensors, labels
