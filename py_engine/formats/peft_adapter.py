"""PEFT adapter directories: adapter_config.json + adapter_model.safetensors (+ labels.json,
and head_config.json for classifiers); older PEFT versions' adapter_model.bin is read too.

Key names are PEFT's: "base_model.model." + the module path + ".lora_A.weight" etc., with the
classification head saved under its plain name (PEFT strips "modules_to_save.default" when it
saves). A directory is written only where output_dir allows (new, empty, or py_engine's own),
next to its destination and swapped in only when complete, so a partly written adapter never
replaces a good one; weights holding NaN or infinity are refused before anything is written.
"""

import json
from pathlib import Path

from . import safetensors
from .finite import NonFiniteWeightsError, describe, first_non_finite, require_finite
from .head_config import HEAD_CONFIG, head_config
from .json_file import decode_utf8, json_kind, parse_json, read_json_object
from .output_dir import write_files
from .torch_pickle import TorchFileError, load_torch

PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter directory that cannot be read or written; the message names the file."""


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "labels.json", HEAD_CONFIG)
# the weights an adapter may hold, in PEFT's order: older PEFT versions saved adapter_model.bin
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
READ_FILES = ADAPTER_FILES + WEIGHT_FILES[1:]


def adapter_files(config_dict, tensors, labels=None, extra_json=None, where="the adapter"):
    """An adapter's files as {file name: bytes}: what save_adapter writes into a directory, and
    what a training state keeps in IndexedDB. Weights holding NaN or infinity are refused.

    tensors: {name without PREFIX: (shape, array('f') or bytes of f32)}; extra_json: {file
    name: JSON-ready value} written beside (py_engine's own settings PEFT has no field for).
    A classifier adapter (task_type SEQ_CLS) always gets head_config.json: extra_json's, else
    cls pooling, what PEFT's own adapters mean.
    """
    weights = {PREFIX + name: ("F32", tuple(shape), data) for name, (shape, data) in tensors.items()}
    require_finite(weights, where)
    extra = dict(extra_json or {})
    if config_dict.get("task_type") == "SEQ_CLS":
        extra.setdefault(HEAD_CONFIG, head_config("cls"))
    files = {"adapter_config.json": _json_bytes(config_dict),
             "adapter_model.safetensors": safetensors.save_bytes(weights)}
    if labels is not None:
        files["labels.json"] = (json.dumps(list(labels), ensure_ascii=False) + "\n").encode("utf-8")
    for name, value in extra.items():
        files[name] = _json_bytes(value)
    return files


def _json_bytes(value):
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def save_adapter(directory, config_dict, tensors, labels=None, extra_json=None, protected=()):
    """Write an adapter directory atomically (see adapter_files; protected: inputs the
    directory must not be or hold, see output_dir.check_output_dir)."""
    files = adapter_files(config_dict, tensors, labels, extra_json, directory)
    return write_files(directory, files, protected, kind="a model")


def read_adapter_config(directory):
    """adapter_config.json of an adapter directory, as a dict (AdapterError naming the file)."""
    path = _adapter_file(directory, "adapter_config.json")
    return read_json_object(path)


def adapter_task(directory):
    """adapter_config.json's task_type (PEFT's: SEQ_CLS, CAUSAL_LM, ...; None where absent)."""
    return read_adapter_config(directory).get("task_type")


def _adapter_file(directory, name):
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterError(f"no adapter directory at {directory}" if not directory.exists()
                           else f"{directory} is not a directory (an adapter is a directory)")
    path = directory / name
    if not path.is_file():
        raise AdapterError(f"adapter directory {directory} has no {name}")
    return path


def load_adapter(directory):
    """(config dict, {name without PREFIX: (shape, array('f'))}, labels or None)."""
    read_adapter_config(directory)          # the directory and its config exist, readably
    if not any((Path(directory) / name).is_file() for name in WEIGHT_FILES):
        _adapter_file(directory, WEIGHT_FILES[0])     # the error naming what is missing
    files = {name: (Path(directory) / name).read_bytes() for name in READ_FILES
             if (Path(directory) / name).is_file()}
    return read_adapter_files(files, directory)


def read_adapter_files(files, source):
    """(config dict, {name without PREFIX: (shape, array('f'))}, labels or None) of an
    adapter's {file name: bytes}; errors name `source`/file. Weights holding NaN or infinity
    make the adapter unusable (a diverged run)."""
    weights = next((name for name in WEIGHT_FILES if name in files), WEIGHT_FILES[0])
    for name in ("adapter_config.json", weights):
        if name not in files:
            raise AdapterError(f"{source} has no {name}")
    where = lambda name: f"{source}/{name}"
    config = parse_json(decode_utf8(files["adapter_config.json"], where("adapter_config.json")),
                        where("adapter_config.json"))
    if not isinstance(config, dict):
        raise AdapterError(f"{where('adapter_config.json')} must hold a JSON object, got "
                           f"{json_kind(config)}")
    weights_path = where(weights)
    try:
        file = safetensors.load(bytes(files[weights])) if weights == WEIGHT_FILES[0] else \
            load_torch(files[weights])
    except (safetensors.SafeTensorsError, TorchFileError) as e:
        raise AdapterError(f"{weights_path}: {e}") from None
    tensors = {}
    for key in file.keys():
        if not key.startswith(PREFIX):
            raise AdapterError(f"{weights_path}: unexpected tensor name {key!r} (no {PREFIX!r} "
                               "prefix)")
        dtype, shape = file.info(key)
        if dtype not in safetensors.FLOAT_DTYPES:
            raise AdapterError(f"{weights_path}: tensor {key!r} is {dtype}, not a float dtype")
        values = file.floats(key)
        bad = first_non_finite("F32", values)
        if bad is not None:
            raise NonFiniteWeightsError(f"{weights_path}: tensor {key!r} holds "
                                        f"{describe(values[bad])} (element {bad}): the adapter "
                                        "is unusable (a diverged run?)")
        name = key[len(PREFIX):].replace(".default.", ".").replace(".modules_to_save.", ".")
        tensors[name] = (shape, values)
    return config, tensors, read_labels(files, source)


def read_labels(files, source):
    """The label names in an adapter's labels.json ({file name: bytes}), or None when it has
    none; errors name `source`/labels.json."""
    if "labels.json" not in files:
        return None
    labels_path = f"{source}/labels.json"
    labels = parse_json(decode_utf8(files["labels.json"], labels_path), labels_path)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise AdapterError(f"{labels_path} must hold a JSON list of label names (strings), "
                           f"got {json_kind(labels)}" if not isinstance(labels, list) else
                           f"{labels_path} must hold a JSON list of label names (strings), "
                           f"got {labels!r:.100}")
    # a single-label classifier's two or more are checked where its kind is known (a
    # multi-label or regression head may have one)
    if len(set(labels)) != len(labels) or not labels:
        raise AdapterError(f"{labels_path} must name distinct labels, one or more, got "
                           f"{labels!r:.100}")
    return labels
