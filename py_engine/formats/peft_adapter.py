"""PEFT adapter directories: adapter_config.json + adapter_model.safetensors (+ labels.json,
and head_config.json for classifiers).

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
from .json_file import json_kind, read_json, read_json_object
from .output_dir import write_output_dir

PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter directory that cannot be read or written; the message names the file."""


def save_adapter(directory, config_dict, tensors, labels=None, extra_json=None, protected=()):
    """Write an adapter directory atomically.

    tensors: {name without PREFIX: (shape, array('f') or bytes of f32)}; extra_json: {file
    name: JSON-ready value} written beside (py_engine's own settings PEFT has no field for).
    A classifier adapter (task_type SEQ_CLS) always gets head_config.json: extra_json's, else
    cls pooling, what PEFT's own adapters mean. protected: inputs the directory must not be or
    hold (see output_dir.check_output_dir).
    """
    weights = {PREFIX + name: ("F32", tuple(shape), data) for name, (shape, data) in tensors.items()}
    require_finite(weights, directory)
    extra = dict(extra_json or {})
    if config_dict.get("task_type") == "SEQ_CLS":
        extra.setdefault(HEAD_CONFIG, head_config("cls"))

    def fill(staging):
        (staging / "adapter_config.json").write_text(
            json.dumps(config_dict, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        safetensors.save(weights, staging / "adapter_model.safetensors")
        if labels is not None:
            (staging / "labels.json").write_text(
                json.dumps(list(labels), ensure_ascii=False) + "\n", encoding="utf-8")
        for name, value in extra.items():
            (staging / name).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")

    return write_output_dir(directory, fill, protected)


def read_adapter_config(directory):
    """adapter_config.json of an adapter directory, as a dict (AdapterError naming the file)."""
    path = _adapter_file(directory, "adapter_config.json")
    return read_json_object(path)


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
    config = read_adapter_config(directory)
    weights_path = _adapter_file(directory, "adapter_model.safetensors")
    try:
        file = safetensors.load(weights_path)
    except safetensors.SafeTensorsError as e:
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
    labels = None
    labels_path = Path(directory) / "labels.json"
    if labels_path.exists():
        labels = read_json(labels_path)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise AdapterError(f"{labels_path} must hold a JSON list of label names (strings), "
                               f"got {json_kind(labels)}" if not isinstance(labels, list) else
                               f"{labels_path} must hold a JSON list of label names (strings), "
                               f"got {labels!r:.100}")
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise AdapterError(f"{labels_path} must name two or more distinct labels, got "
                               f"{labels!r:.100}")
    return config, tensors, labels
