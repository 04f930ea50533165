"""WGSL loading and compile-time constants (no GPU needed)."""

import re
from pathlib import Path

import numpy as np
import pytest

from py_engine.gpu import shaders, selfcheck

SOURCE = """\
override TILE: u32 = 4u;
  override SCALE: f32 = 1.0;
override SIGNED: i32 = -2i;
override FLAG: bool = false;
override REQUIRED: u32;
fn f() {}
"""


def test_specialize_turns_every_override_into_a_const_line_for_line():
    out = shaders.specialize(SOURCE, {"TILE": 8, "SCALE": 0.5, "FLAG": True, "REQUIRED": 3, "SIGNED": -7})
    assert "override" not in out
    assert out.count("\n") == SOURCE.count("\n")
    assert "const TILE: u32 = 8u;" in out
    assert "  const SCALE: f32 = 0.5f;" in out
    assert "const SIGNED: i32 = -7i;" in out
    assert "const FLAG: bool = true;" in out
    assert "const REQUIRED: u32 = 3u;" in out


def test_specialize_keeps_defaults_and_requires_values_without_one():
    out = shaders.specialize(SOURCE, {"REQUIRED": 1})
    assert "const TILE: u32 = 4u;" in out and "const SIGNED: i32 = -2i;" in out
    with pytest.raises(ValueError, match="REQUIRED has no default"):
        shaders.specialize(SOURCE, {})


@pytest.mark.parametrize("constants, error, match", [
    ({"REQUIRED": 1, "TIEL": 8}, ValueError, "no override constant named TIEL"),
    ({"REQUIRED": 1.5}, TypeError, "REQUIRED is u32"),
    ({"REQUIRED": -1}, ValueError, "negative"),
    ({"REQUIRED": 1, "FLAG": 1}, TypeError, "FLAG is bool"),
])
def test_specialize_rejects_bad_constants(constants, error, match):
    with pytest.raises(error, match=match):
        shaders.specialize(SOURCE, constants, "k.wgsl")


def test_every_shader_file_declares_overrides_with_defaults():
    files = sorted(shaders.shader_dir().rglob("*.wgsl"))
    assert {f.name for f in files} >= {"elementwise.wgsl", "reduce.wgsl", "workgroup_sum.wgsl"}
    for f in files:
        text = f.read_text()
        for name, (_, default) in shaders.declared_constants(text).items():
            assert default is not None, f"{f.name}: {name} needs a default"
        assert re.search(r"^//", text, re.MULTILINE), f"{f.name} needs a header comment"


def test_files_named_in_shader_comments_exist():
    root = Path(__file__).resolve().parents[1]
    cited = {}
    for f in shaders.shader_dir().rglob("*.wgsl"):
        for path in re.findall(r"\b((?:tests|py_engine)/[\w/]+\.py)\b", f.read_text()):
            cited.setdefault(path, f.name)
    assert "tests/test_gpu_native.py" in cited
    missing = {path: by for path, by in cited.items() if not (root / path).is_file()}
    assert not missing, f"shader comments cite files that do not exist: {missing}"


def test_compile_error_finds_naga_positions():
    err = shaders.compile_error("k.wgsl", "a\nb\nc = oops;\n", "error\n  ┌─ wgsl:3:5\n")
    assert (err.line, err.column, err.source_line) == (3, 5, "c = oops;")
    assert "k.wgsl:3:5" in str(err)


def test_python_references_agree_with_numpy():
    """The pure-Python references the browser self-check uses are themselves checked."""
    rng = np.random.default_rng()
    m, n, k = 7, 5, 9
    a = rng.standard_normal(m * k)
    b = rng.standard_normal(k * n)
    ref = (a.reshape(m, k) @ b.reshape(k, n)).ravel()
    assert np.allclose(selfcheck.ref_matmul(list(a), list(b), m, n, k), ref, rtol=1e-12, atol=1e-12)
    x = rng.standard_normal(6 * 11)
    assert np.allclose(selfcheck.ref_sum_rows(list(x), 6, 11), x.reshape(6, 11).sum(1), rtol=1e-12)
    assert np.allclose(selfcheck.ref_scaled_add(0.3, list(a), list(a)), 1.3 * a, rtol=1e-12)
    assert np.allclose(selfcheck.ref_add(list(a), list(a)), 2 * a, rtol=1e-12)
    assert selfcheck.relative_error([1.0, float("nan")], [1.0, 2.0]) == float("inf")
    assert selfcheck.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
