"""Non-finite weights are never saved (py_engine.formats.finite): the lane scan finds exactly the
NaN and infinite elements NumPy's isfinite finds, in every float dtype, at any position (chunk
edges included); the save functions refuse them and leave the previous files byte for byte; a
NaN adapter on disk is refused when loaded."""

import math
from array import array

import numpy as np
import pytest

from py_engine.formats import safetensors
from py_engine.formats.finite import NonFiniteWeightsError, first_non_finite, require_finite
from py_engine.formats.model_dir import save_model_dir
from py_engine.formats.peft_adapter import PREFIX, load_adapter, save_adapter
from test_output_dir import CONFIG, snapshot

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}
CHUNK_VALUES = {"F32": 1 << 16, "F16": 1 << 17, "BF16": 1 << 17, "F64": 1 << 15}


def as_bytes(values, dtype):
    """Little-endian bytes of float64 `values` in `dtype` (bfloat16: float32's top halves,
    the values are chosen exactly representable)."""
    if dtype == "BF16":
        return np.asarray(values, "<f4").view("<u2")[1::2].tobytes()
    return np.asarray(values, np.dtype(DTYPES[dtype]).newbyteorder("<")).tobytes()


def reference(values, dtype):
    data = np.frombuffer(as_bytes(values, dtype), "<u2" if dtype == "BF16" else
                         np.dtype(DTYPES[dtype]).newbyteorder("<"))
    if dtype == "BF16":
        data = (data.astype("<u4") << 16).view("<f4")
    bad = np.flatnonzero(~np.isfinite(data))
    return int(bad[0]) if bad.size else None


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_scan_agrees_with_numpy(rng, dtype):
    n = 2 * CHUNK_VALUES[dtype] + 37        # three chunks, the last one partial
    extremes = {"F32": [3.4028235e38, -3.4028235e38, 2.0 ** 127, 1e-45, -0.0],
                "F16": [65504.0, -65504.0, 2.0 ** -24, -0.0],
                "BF16": [2.0 ** 127, -(2.0 ** 127) * 1.5, 2.0 ** -133, -0.0],
                "F64": [1.7976931348623157e308, 2.0 ** 1023, 5e-324, -0.0]}[dtype]
    values = rng.standard_normal(n).astype(np.float32).astype(np.float64)
    values[rng.integers(0, n, 64)] = rng.choice(extremes, 64)
    assert first_non_finite(dtype, as_bytes(values, dtype)) is None     # largest finite: kept
    edge = CHUNK_VALUES[dtype]
    for position in (0, edge - 1, edge, n - 1, int(rng.integers(0, n))):
        for bad in (math.nan, math.inf, -math.inf):
            poisoned = values.copy()
            poisoned[position] = bad
            poisoned[min(n - 1, position + 5)] = -bad if not math.isnan(bad) else bad
            want = reference(poisoned, dtype)
            assert want == position
            assert first_non_finite(dtype, as_bytes(poisoned, dtype)) == want
    assert first_non_finite("I32", np.full(8, -1, np.int32).tobytes()) is None


def test_require_finite_names_the_tensor(rng):
    good = rng.standard_normal(100).astype(np.float32)
    bad = good.copy()
    bad[41] = np.nan
    require_finite({"a": ("F32", (100,), good.tobytes())}, "out")
    with pytest.raises(NonFiniteWeightsError, match=r"out: tensor 'b' holds NaN \(element 41 "
                                                    r"of 100\).*nothing was written"):
        require_finite({"a": ("F32", (100,), good.tobytes()), "b": ("F32", (10, 10), bad)}, "out")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_saves_refuse_non_finite_weights_and_keep_the_previous_files(tmp_path, rng, bad):
    good = array("f", rng.standard_normal(64).astype(np.float32).tobytes())
    diverged = array("f", good)
    diverged[17] = bad
    name = "bert.encoder.layer.0.attention.self.query.lora_A.weight"
    save_adapter(tmp_path / "adapter", CONFIG, {name: ((8, 8), good)}, labels=["a", "b"])
    save_model_dir(tmp_path / "model", tmp_path, {"w": ((8, 8), good)})
    before = snapshot(tmp_path)
    with pytest.raises(NonFiniteWeightsError, match=f"tensor '{PREFIX}{name}' holds"):
        save_adapter(tmp_path / "adapter", CONFIG, {name: ((8, 8), diverged)}, labels=["a", "b"])
    with pytest.raises(NonFiniteWeightsError, match="tensor 'w' holds"):
        save_model_dir(tmp_path / "model", tmp_path, {"w": ((8, 8), diverged)})
    with pytest.raises(NonFiniteWeightsError):
        save_adapter(tmp_path / "new", CONFIG, {name: ((8, 8), diverged)})
    assert snapshot(tmp_path) == before         # and nothing new was created


def test_a_non_finite_adapter_on_disk_is_refused(tmp_path):
    adapter = tmp_path / "adapter"
    name = "bert.encoder.layer.0.attention.self.query.lora_B.weight"
    save_adapter(adapter, CONFIG, {name: ((2, 2), array("f", [1, 2, 3, 4]))}, labels=["a", "b"])
    safetensors.save({PREFIX + name: ("F32", (2, 2), array("f", [1, math.nan, 3, 4]))},
                     adapter / "adapter_model.safetensors")     # as another tool might
    with pytest.raises(NonFiniteWeightsError, match=f"'{PREFIX}{name}' holds NaN"):
        load_adapter(adapter)
