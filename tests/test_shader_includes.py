"""//#include in WGSL files: expansion, line mapping of compile errors, the shared pieces in
shaders/lib/ and the wheel that ships them."""

import json
import re
import zipfile

import numpy as np
import pytest

from conftest import ROOT, floats, run
from py_engine.gpu import ShaderCompileError, ShaderIncludeError
from py_engine.harness import run_json
from py_engine.gpu.shaders import (
    compile_error,
    declared_constants,
    load_source,
    shader_dir,
    source_position,
    specialize,
)


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def kernel_files():
    return sorted(shader_dir().glob("*.wgsl"))


@pytest.mark.parametrize("path", kernel_files(), ids=lambda p: p.name)
def test_expansion_keeps_every_line_of_the_kernel_at_its_number(path):
    own = path.read_text().splitlines()
    expanded = load_source(path.name).splitlines()
    assert expanded[:len(own)] == own
    for number in range(1, len(own) + 1):
        assert source_position(load_source(path.name), number, path.name) == (path.name, number)


def test_included_text_follows_the_last_line_behind_a_line_marker(tmp_path):
    kernel = write(tmp_path, "k.wgsl", 'const A: u32 = 1u;\n//#include "parts/b.wgsl"\nconst C: u32 = 3u;')
    write(tmp_path, "parts/b.wgsl", "// b\nconst B: u32 = 2u;\n")
    expanded = load_source(kernel)
    assert expanded == ('const A: u32 = 1u;\n//#include "parts/b.wgsl"\nconst C: u32 = 3u;\n'
                        '//#line 1 "parts/b.wgsl"\n// b\nconst B: u32 = 2u;\n')
    assert source_position(expanded, 3, "k.wgsl") == ("k.wgsl", 3)
    assert source_position(expanded, 5, "k.wgsl") == ("parts/b.wgsl", 1)
    assert source_position(expanded, 6, "k.wgsl") == ("parts/b.wgsl", 2)


def test_a_file_without_includes_loads_unchanged(tmp_path):
    kernel = write(tmp_path, "k.wgsl", "const A: u32 = 1u;")
    assert load_source(kernel) == "const A: u32 = 1u;"


def test_nested_includes_and_a_diamond_appear_once_each(tmp_path):
    # k includes b and c; both include d (relative to their own folder); d includes e.
    kernel = write(tmp_path, "k.wgsl", '//#include "p/b.wgsl"\n//#include "p/c.wgsl"\nfn k() {}\n')
    write(tmp_path, "p/b.wgsl", '//#include "d.wgsl"\nfn b() {}\n')
    write(tmp_path, "p/c.wgsl", 'fn c() {}\n//#include "d.wgsl"\n')
    write(tmp_path, "p/d.wgsl", 'fn d() {}\n//#include "../e.wgsl"\n')
    write(tmp_path, "e.wgsl", "fn e() {}\n")
    expanded = load_source(kernel)
    markers = re.findall(r'^//#line 1 "(.*)"$', expanded, re.MULTILINE)
    assert markers == ["p/b.wgsl", "p/d.wgsl", "e.wgsl", "p/c.wgsl"]
    for name in "kbcde":
        assert expanded.count(f"fn {name}() {{}}") == 1
    lines = expanded.splitlines()
    for name, file in (("d", "p/d.wgsl"), ("e", "e.wgsl"), ("c", "p/c.wgsl")):
        number = lines.index(f"fn {name}() {{}}") + 1
        assert source_position(expanded, number, "k.wgsl") == (file, 1)


def test_a_cycle_is_an_error_at_the_directive_that_closes_it(tmp_path):
    kernel = write(tmp_path, "k.wgsl", '//#include "a.wgsl"\n')
    write(tmp_path, "a.wgsl", 'fn a() {}\n\n//#include "b.wgsl"\n')
    write(tmp_path, "b.wgsl", 'fn b() {}\n//#include "a.wgsl"\n')
    with pytest.raises(ShaderIncludeError) as caught:
        load_source(kernel)
    err = caught.value
    assert (err.source, err.line, err.source_line) == ("b.wgsl", 2, '//#include "a.wgsl"')
    assert err.included_by == str(kernel)
    assert f"{kernel} -> a.wgsl -> b.wgsl -> a.wgsl" in str(err)
    assert str(err).startswith(f"WGSL error in b.wgsl:2:1 (included by {kernel}): including")


def test_a_file_including_itself_is_a_cycle(tmp_path):
    kernel = write(tmp_path, "k.wgsl", 'fn k() {}\n//#include "k.wgsl"\n')
    with pytest.raises(ShaderIncludeError, match="closes a cycle") as caught:
        load_source(kernel)
    assert (caught.value.source, caught.value.line) == (str(kernel), 2)


def test_a_missing_include_names_the_including_file_and_line(tmp_path):
    kernel = write(tmp_path, "k.wgsl", '//#include "a.wgsl"\n')
    write(tmp_path, "a.wgsl", 'fn a() {}\n  //#include "lib/nowhere.wgsl"\n')
    with pytest.raises(ShaderIncludeError) as caught:
        load_source(kernel)
    err = caught.value
    assert (err.source, err.line, err.included_by) == ("a.wgsl", 2, str(kernel))
    assert "no file 'lib/nowhere.wgsl' to include" in str(err)
    assert str(tmp_path / "lib" / "nowhere.wgsl") in str(err)


@pytest.mark.parametrize("line", ['//#include lib/a.wgsl', '//#inclde "a.wgsl"', '//#line 1 "a.wgsl"'])
def test_a_malformed_directive_is_an_error(tmp_path, line):
    kernel = write(tmp_path, "k.wgsl", f"fn k() {{}}\n{line}\n")
    with pytest.raises(ShaderIncludeError, match="is not a directive") as caught:
        load_source(kernel)
    assert (caught.value.source, caught.value.line, caught.value.included_by) == (str(kernel), 2, None)


def test_compile_error_maps_naga_positions_into_included_files():
    expanded = 'fn k() {}\n//#include "lib/x.wgsl"\n//#line 1 "lib/x.wgsl"\n// x\nbad line;\n'
    message = "error\n  ┌─ wgsl:5:1\n  │\n5 │ bad line;\n"
    err = compile_error("k.wgsl", expanded, message)
    assert (err.source, err.line, err.column, err.included_by) == ("lib/x.wgsl", 2, 1, "k.wgsl")
    assert err.source_line == "bad line;"
    assert "┌─ lib/x.wgsl:2:1" in err.message and "\n2 │ bad line;" in err.message
    assert str(err).startswith("WGSL error in lib/x.wgsl:2:1 (included by k.wgsl): error")
    # A position the caller gives (the browser's compilation info) maps the same way.
    err = compile_error("k.wgsl", expanded, "bad", line=5, column=3)
    assert (err.source, err.line, err.column) == ("lib/x.wgsl", 2, 3)
    err = compile_error("k.wgsl", expanded, "bad", line=1)
    assert (err.source, err.line, err.included_by) == ("k.wgsl", 1, None)


KERNEL = """\
override WORKGROUP: u32 = 64u;
//#include "parts/scale.wgsl"
@group(0) @binding(0) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  out[gid.x] = scaled(f32(gid.x));
}
"""

# Uses the kernel's WORKGROUP; declares an override of its own.
SCALE = """\
// a shared piece
override SCALE: f32 = 1.0;

fn scaled(v: f32) -> f32 {
  return v * SCALE + f32(WORKGROUP);
}
"""


def test_constants_of_an_included_file_are_specialized(device, tmp_path):
    kernel = write(tmp_path, "k.wgsl", KERNEL)
    write(tmp_path, "parts/scale.wgsl", SCALE)
    assert set(declared_constants(load_source(kernel))) == {"WORKGROUP", "SCALE"}
    assert "const SCALE: f32 = 2.5f;" in specialize(load_source(kernel), {"SCALE": 2.5})
    for constants, scale, workgroup in (({}, 1.0, 64), ({"SCALE": 2.5, "WORKGROUP": 32}, 2.5, 32)):
        out = device.create_buffer(4 * 64)
        device.write(out, np.full(64, np.nan, np.float32))
        compiled = run(device.kernel(str(kernel), "main", constants))
        run(device.run(compiled, [out], 64 // workgroup))
        expected = np.arange(64, dtype=np.float32) * scale + workgroup
        assert np.array_equal(floats(run(device.read(out))), expected)


BROKEN = """\
// a shared piece with a mistake on line 4
fn scaled(v: f32) -> f32 {
  let w = v * 2.0;
  return w * not_declared;
}
"""


def test_a_compile_error_in_an_included_file_names_that_file_and_line(device, tmp_path):
    kernel = write(tmp_path, "k.wgsl", KERNEL)
    write(tmp_path, "parts/scale.wgsl", BROKEN)
    with pytest.raises(ShaderCompileError) as caught:
        run(device.kernel(str(kernel), "main"))
    err = caught.value
    assert (err.source, err.line, err.included_by) == ("parts/scale.wgsl", 4, str(kernel))
    assert err.source_line == "  return w * not_declared;"
    assert str(err).startswith(f"WGSL error in parts/scale.wgsl:4:{err.column} (included by {kernel}):")
    assert "parts/scale.wgsl:4:" in err.message


def test_a_compile_error_in_the_kernel_keeps_its_line_despite_includes(device, tmp_path):
    kernel = write(tmp_path, "k.wgsl", KERNEL.replace("scaled(f32(gid.x))", "scaled(f32(gid.x)) + nope"))
    write(tmp_path, "parts/scale.wgsl", SCALE)
    with pytest.raises(ShaderCompileError) as caught:
        run(device.kernel(str(kernel), "main"))
    err = caught.value
    assert (err.source, err.line, err.included_by) == (str(kernel), 7, None)
    assert "nope" in err.source_line


@pytest.mark.browser
def test_the_browser_maps_compile_errors_into_included_files(engine_page):
    """WebGPU's compilation info (Tint) gives the line in the expanded text; it maps the same way."""
    files = {"k.wgsl": KERNEL, "parts/scale.wgsl": BROKEN}
    err = run_json(engine_page, f"""
import json, pathlib
from py_engine.gpu import open_device, ShaderCompileError
folder = pathlib.Path("/tmp/include_check")
for name, text in json.loads({json.dumps(json.dumps(files))}).items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
try:
    await (await open_device()).kernel(str(folder / "k.wgsl"), "main")
    found = None
except ShaderCompileError as e:
    found = {{"source": e.source, "line": e.line, "included_by": e.included_by,
              "source_line": e.source_line}}
json.dumps(found)
""")
    assert err == {"source": "parts/scale.wgsl", "line": 4, "included_by": "/tmp/include_check/k.wgsl",
                   "source_line": "  return w * not_declared;"}


def helper_definitions(path):
    """Names of the functions a WGSL file defines that are not entry points."""
    text = path.read_text()
    entry_points = set(re.findall(r"@compute[^;{]*?\bfn\s+(\w+)", text))
    return set(re.findall(r"^fn\s+(\w+)", text, re.MULTILINE)) - entry_points


def test_no_helper_function_is_defined_in_two_shader_files():
    """A helper needed by several kernels lives once, in shaders/lib/, and is included."""
    homes = {}
    for path in sorted(shader_dir().rglob("*.wgsl")):
        for name in helper_definitions(path):
            homes.setdefault(name, []).append(path.relative_to(shader_dir()).as_posix())
    assert {"workgroup_sum", "row_sum", "workgroup_index", "thread_index", "row_max"} <= set(homes)
    copies = {name: files for name, files in homes.items() if len(files) > 1}
    assert not copies, f"helpers defined in more than one shader file: {copies}"


def test_every_shared_piece_is_included_somewhere():
    included = set()
    for path in shader_dir().rglob("*.wgsl"):
        for target in re.findall(r'^[ \t]*//#include "(.+)"', path.read_text(), re.MULTILINE):
            included.add((path.parent / target).resolve())
    for piece in (shader_dir() / "lib").glob("*.wgsl"):
        assert piece.resolve() in included, f"{piece.name} is included by no kernel"


def test_the_wheel_ships_every_shader_file(built_dist):
    wheel = next((ROOT / "build" / "wheel").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"py_engine/shaders/{p.relative_to(ROOT / 'shaders').as_posix()}"
               for p in (ROOT / "shaders").rglob("*.wgsl")}
    assert "py_engine/shaders/lib/workgroup_sum.wgsl" in sources
    assert sources <= names, sorted(sources - names)
