"""The base model's weights as shipped with the tab classifier: f16, or int8 where accuracy
holds, read back into a Checkpoint the engine runs (pure Python: this runs in the browser).

Files, in a checkpoint directory beside config.json and tokenizer.json:
- "f16": model.safetensors with every tensor F16: an ordinary Hugging Face checkpoint
  (transformers and Checkpoint.load read it as it is).
- "int8": model.int8.safetensors (metadata {"format": INT8_FORMAT, "group_size": "64"}): each
  quantized matrix W [rows, cols] as "NAME" (I8, [rows, cols]) with "NAME.scales" (F32,
  [rows, cols / group_size]), W ~ q * scale per group of group_size consecutive columns (the
  engine's own symmetric scheme, py_engine/ops/quantize.py, so the GPU's int8 storage of the
  same weights reproduces these values); every other tensor F16. Which matrices are quantized
  is the writer's choice (py_engine/tabs/compress.py); the reader takes what it finds.

    checkpoint = load_base(directory)      # a Checkpoint whatever the file
    TextClassifier.load(directory, adapter_dir, checkpoint=checkpoint)
"""

from array import array
from pathlib import Path

from ..formats import safetensors
from ..models.bert_config import BertConfig, ConfigError
from ..models.checkpoint import Checkpoint, CheckpointError

F16_FILE = "model.safetensors"
INT8_FILE = "model.int8.safetensors"
INT8_FORMAT = "py_engine-int8-groups"
SCALES = ".scales"


class Int8Tensors:
    """A safetensors file of int8 matrices and their scales, seen as float tensors: what
    Checkpoint reads (keys, info, floats, f16_bits)."""

    def __init__(self, file, source):
        self.file, self.source = file, source
        meta = file.metadata or {}
        if meta.get("format") != INT8_FORMAT:
            raise CheckpointError(f"{source}: not an int8 weights file of py_engine (metadata "
                                  f"format {meta.get('format')!r})")
        self.group = int(meta.get("group_size", "0"))
        self.quantized = {n for n in file.keys() if file.info(n)[0] == "I8"}
        for name in self.quantized:
            rows, cols = file.info(name)[1]
            if self.group <= 0 or cols % self.group or \
                    tuple(file.info(name + SCALES)[1]) != (rows, cols // self.group):
                raise CheckpointError(f"{source}: {name} has no scales of shape "
                                      f"[{rows}, {cols} / {self.group}]")

    def keys(self):
        return [n for n in self.file.keys() if not n.endswith(SCALES)]

    def info(self, name):
        dtype, shape = self.file.info(name)
        return ("F32" if name in self.quantized else dtype), shape

    def first_non_finite(self, name):
        """As SafeTensorsFile's; a quantized tensor is finite when its scales are (the index is
        then the first element of the group whose scale is not)."""
        if name not in self.quantized:
            return self.file.first_non_finite(name)
        found = self.file.first_non_finite(name + SCALES)     # one scale per `group` elements
        return None if found is None else (found[0] * self.group, found[1])

    def floats(self, name):
        if name not in self.quantized:
            return self.file.floats(name)
        q = self.file.raw(name).cast("b")
        scales = self.file.floats(name + SCALES)
        out, group = array("f"), self.group
        for k, scale in enumerate(scales):
            out.extend(map(scale.__mul__, q[k * group:(k + 1) * group]))
        return out

    def f16_bits(self, name):
        if name not in self.quantized:
            return self.file.f16_bits(name)
        return safetensors.f32_to_f16_bits(self.floats(name))


def base_dtype_of(directory):
    """"int8" when the directory holds INT8_FILE, else "f16" or "f32" by its model.safetensors."""
    directory = Path(directory)
    if (directory / INT8_FILE).is_file():
        return "int8"
    with safetensors.load(directory / F16_FILE) as file:
        dtypes = {file.info(n)[0] for n in file.keys()}
    return "f16" if dtypes == {"F16"} else "f32"


def load_base(directory, weights=None):
    """The Checkpoint of a shipped base model directory (f16 or int8 files, or any checkpoint
    Checkpoint.load reads). `weights`: the weights file's bytes when they were fetched."""
    directory = Path(directory)
    if weights is None and not (directory / INT8_FILE).is_file():
        return Checkpoint.load(directory)
    try:
        config = BertConfig.from_file(directory / "config.json")
        file = safetensors.load(weights if weights is not None else directory / INT8_FILE)
    except (ConfigError, safetensors.SafeTensorsError) as e:
        raise CheckpointError(f"{directory}: {e}") from None
    if (file.metadata or {}).get("format") != INT8_FORMAT:
        return Checkpoint(config, file, str(directory))
    return Checkpoint(config, Int8Tensors(file, f"{directory}/{INT8_FILE}"), str(directory))
