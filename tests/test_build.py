"""The build: a deterministic pure-Python wheel, the page and extension trees, the server."""

import hashlib
import json
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

from py_engine.server import ServerThread

ROOT = Path(__file__).resolve().parents[1]


def build():
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "build"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout


def test_rebuild_is_incremental_and_wheel_is_pure_python(built_dist):
    assert "(0 files changed)" in build()
    wheels = list((ROOT / "build" / "wheel").glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "py_engine/gpu/device.py" in names
    assert {"py_engine/shaders/matmul.wgsl", "py_engine/shaders/reduce.wgsl"} <= set(names)
    assert not any(n.startswith("tests/") or n.endswith(".pyc") for n in names)
    # Deterministic: every entry carries the fixed timestamp, so rebuilds are byte-identical.
    assert {i.date_time for i in zipfile.ZipFile(wheels[0]).infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_the_browser_wheel_is_the_wheel_without_host_only_files(built_dist):
    """The page and the extension load the wheel without the tab generator's data, the default
    tab adapter and the listed domains (the extension has those under model/): every other
    entry byte for byte, and a RECORD that lists exactly what it holds."""
    import importlib.util

    # loaded under another name: on sys.path as "build" it would hide pypa's build package
    spec = importlib.util.spec_from_file_location("py_engine_build_script", ROOT / "build.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    HOST_ONLY = script.HOST_ONLY

    full = zipfile.ZipFile(next((ROOT / "build" / "wheel").glob("*.whl")))
    browser = zipfile.ZipFile(next((ROOT / "build" / "browser-wheel").glob("*.whl")))
    dropped = [n for n in full.namelist() if n.startswith(HOST_ONLY)]
    assert "py_engine/tabs/default_adapter/adapter_model.safetensors" in dropped
    assert "py_engine/tabs/data/listed_domains.json" in dropped
    assert "py_engine/tabs/data/word_weights.json" in dropped
    assert browser.namelist() == [n for n in full.namelist() if n not in dropped]
    record = next(n for n in browser.namelist() if n.endswith(".dist-info/RECORD"))
    listed = [line.split(",")[0] for line in browser.read(record).decode().splitlines()]
    assert sorted(listed) == sorted(browser.namelist())
    for name in browser.namelist():
        if name != record:
            assert browser.read(name) == full.read(name), name
    assert (ROOT / "extension" / "dist" / "model" / "listed_domains.json").is_file()
    assert (ROOT / "extension" / "dist" / "model" / "word_weights.json").is_file()
    assert (ROOT / "extension" / "dist" / "model" / "adapter" / "adapter_model.safetensors").is_file()


def test_dist_trees_hold_runtime_wheel_and_registered_lock(built_dist):
    wheel = next((ROOT / "build" / "browser-wheel").glob("*.whl"))
    for dist in (ROOT / "web" / "dist", ROOT / "extension" / "dist"):
        for name in ("pyodide.mjs", "pyodide.asm.wasm", "python_stdlib.zip", wheel.name):
            assert (dist / "pyodide" / name).is_file(), (dist, name)
        lock = json.loads((dist / "pyodide" / "pyodide-lock.json").read_text())
        entry = lock["packages"]["py-engine"]
        assert entry["file_name"] == wheel.name
        assert entry["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert entry["imports"] == ["py_engine"]
        assert (dist / "boot.mjs").is_file() and (dist / "webgpu_helper.mjs").is_file()
    assert (ROOT / "extension" / "dist" / "manifest.json").is_file()


def test_server_sends_the_mime_types_browsers_require(built_dist):
    with ServerThread(built_dist) as url:
        for path, mime in (("pyodide/pyodide.asm.wasm", "application/wasm"),
                           ("boot.mjs", "text/javascript"), ("index.html", "text/html")):
            with urllib.request.urlopen(url + path) as response:
                assert response.headers["Content-Type"].split(";")[0] == mime, path
                assert response.headers["Cache-Control"] == "no-store"


def test_cli_selfcheck_and_errors(built_dist):
    cli = [sys.executable, "-m", "py_engine.cli"]
    out = subprocess.run([*cli, "selfcheck", "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["ok"] and report["adapter"]["backend"].startswith("native-")
    bad = subprocess.run([*cli, "serve", "/nonexistent-dir"], capture_output=True, text=True)
    assert bad.returncode == 2 and "has no index.html" in bad.stderr
