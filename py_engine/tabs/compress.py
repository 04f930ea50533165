"""Writing the base model's weights compressed for shipping (host side, NumPy): f16, or int8
by the engine's own quantizer (py_engine/ops/quantize.py). base_weights.py reads them back.

    files = base_files(model_dir, "int8")    # {file name: bytes}: config, tokenizer, weights
    checkpoint = compressed_checkpoint(model_dir, "int8")   # the same weights, in memory

"int8" quantizes the encoder's linear weights (those the GPU's int8 storage would) and, with
`embeddings=True` ("int8-embeddings"), the word embeddings too, in groups of 64 columns;
everything else is F16.
"""

import numpy as np

from ..formats import safetensors
from ..models.bert import LINEAR_NAMES
from ..models.checkpoint import Checkpoint
from ..ops.quantize import DEFAULT_GROUP, quantize_values
from .base_weights import F16_FILE, INT8_FILE, INT8_FORMAT, SCALES, load_base

DTYPES = ("f32", "f16", "int8", "int8-embeddings")
CHECKPOINT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def _quantized_names(names, embeddings):
    linear = {f"{name}.weight" for name in LINEAR_NAMES}
    out = {n for n in names if any(n.endswith("." + w) for w in linear)}
    if embeddings:
        out |= {n for n in names if n.endswith(WORD_EMBEDDINGS)}
    return out


def weights_bytes(model_dir, dtype, group=DEFAULT_GROUP):
    """(file name, bytes) of the base weights of `model_dir` stored as `dtype`."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown base dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    Checkpoint.load(model_dir)          # the source is a checkpoint this engine reads
    source = safetensors.load(f"{model_dir}/{F16_FILE}")
    names = list(source.keys())
    quantized = _quantized_names(names, dtype == "int8-embeddings") if "int8" in dtype else set()
    tensors = {}
    for name in names:
        kind, shape = source.info(name)
        if kind not in safetensors.FLOAT_DTYPES:      # buffers such as position_ids, as they are
            tensors[name] = (kind, shape, source.raw(name))
        elif dtype == "f32":
            tensors[name] = ("F32", shape, source.floats(name))
        elif name in quantized and shape[1] % group == 0:
            w = np.frombuffer(source.floats(name), np.float32).reshape(shape)
            q, scales = quantize_values(w, bits=8, group_size=group)
            tensors[name] = ("I8", shape, q.tobytes())
            tensors[name + SCALES] = ("F32", scales.shape, scales.astype("<f4").tobytes())
        else:
            tensors[name] = ("F16", shape, source.f16_bits(name))
    if dtype in ("f32", "f16"):
        return F16_FILE, safetensors.save_bytes(tensors)
    return INT8_FILE, safetensors.save_bytes(tensors, {"format": INT8_FORMAT, "group_size": str(group)})


def base_files(model_dir, dtype, group=DEFAULT_GROUP):
    """{file name: bytes} of a base model directory to ship: config, tokenizer files and the
    weights stored as `dtype`."""
    from pathlib import Path

    names = list(CHECKPOINT_FILES)
    if not (Path(model_dir) / "tokenizer.json").is_file():
        names.append("vocab.txt")           # the tokenizer of a checkpoint without tokenizer.json
    files = {name: (Path(model_dir) / name).read_bytes() for name in names
             if (Path(model_dir) / name).is_file()}
    name, data = weights_bytes(model_dir, dtype, group)
    files[name] = data
    return files


def compressed_checkpoint(model_dir, dtype, group=DEFAULT_GROUP):
    """The Checkpoint a model directory shipped as `dtype` loads as (its weights in memory)."""
    name, data = weights_bytes(model_dir, dtype, group)
    return load_base(model_dir, weights=data) if name == INT8_FILE else \
        Checkpoint(Checkpoint.load(model_dir).config, safetensors.load(data), str(model_dir))
