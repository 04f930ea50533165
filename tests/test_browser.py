"""The same compute API inside headless Chromium: Pyodide + py_engine wheel + WebGPU.

The page is web/dist/index.html as built by build.py, served on loopback, driven by
pytest-playwright with Debian's Chromium (WebGPU through SwiftShader here). Python runs in the
page; what it returns is checked here; a Python exception in the page fails the test with its
traceback.
"""

import pytest
from test_gpu_native import check_api_observations, check_lost_observations

from py_engine.harness import BrowserError, run_json, run_python
from py_engine.gpu.selfcheck import BOUNDS

pytestmark = pytest.mark.browser


def test_page_boots_pyodide_and_loads_the_wheel(engine_page):
    info = run_json(engine_page, """
import json, sys, py_engine, py_engine.gpu
json.dumps({"platform": sys.platform, "version": py_engine.__version__,
            "backend": py_engine.gpu.default_backend(), "file": py_engine.__file__,
            "has_numpy": __import__("importlib.util").util.find_spec("numpy") is not None})
""")
    assert info["platform"] == "emscripten"
    assert info["backend"] == "browser"
    assert "site-packages/py_engine" in info["file"]  # installed from the wheel, not a path hack
    assert info["has_numpy"] is False                 # the browser runtime needs no numpy
    assert engine_page.timings["pyodide_boot_ms"] > 0


def test_browser_device_reports_adapter(engine_page):
    info = run_json(engine_page, """
import json, warnings
from py_engine.gpu import open_device, SoftwareAdapterWarning
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    device = await open_device()
json.dumps({"info": device.info.as_dict(), "limits": device.limits, "backend": device.backend,
            "warned": [w.category.__name__ for w in caught]})
""")
    assert info["backend"] == "browser"
    assert info["info"]["backend"] == "browser-webgpu"
    assert info["info"]["vendor"]
    assert info["limits"]["max_storage_buffer_binding_size"] > 0
    assert info["limits"]["max_compute_workgroups_per_dimension"] >= 65535
    if info["info"]["is_software"]:  # SwiftShader here: reported, not fatal
        assert "SoftwareAdapterWarning" in info["warned"]


def test_kernel_selfcheck_in_the_browser(engine_page):
    report = run_json(engine_page, """
import json
from py_engine.gpu import open_device
from py_engine.gpu.selfcheck import run_selfcheck
json.dumps(await run_selfcheck(await open_device()))
""")
    assert report["adapter"]["backend"] == "browser-webgpu"
    assert {c["kernel"] for c in report["checks"]} == set(BOUNDS)
    for c in report["checks"]:
        assert c["ok"] and c["rel_error"] <= BOUNDS[c["kernel"]], c
    assert report["ok"]


def test_api_behaves_as_natively(engine_page):
    obs = run_json(engine_page, """
import json
from py_engine.gpu import open_device
from py_engine.gpu.selfcheck import api_observations
json.dumps(await api_observations(await open_device()))
""")
    check_api_observations(obs)


def test_lost_device_in_the_browser(engine_page):
    obs = run_json(engine_page, """
import json
from py_engine.gpu import open_device
from py_engine.gpu.selfcheck import lost_observations
json.dumps(await lost_observations(await open_device()))
""")
    check_lost_observations(obs)


def test_python_exception_in_page_carries_its_traceback(engine_page):
    with pytest.raises(BrowserError) as caught:
        run_python(engine_page, "def inner():\n    raise KeyError('deep inside')\ninner()")
    text = str(caught.value)
    assert "Traceback" in text and "KeyError" in text and "deep inside" in text and "inner" in text


def test_missing_chromium_is_an_error_not_a_skip(monkeypatch):
    from py_engine import harness

    monkeypatch.setenv("PY_ENGINE_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(BrowserError, match="Chromium not found at /nonexistent/chromium"):
        harness.launch_args()


def test_browser_without_webgpu_raises_no_webgpu(playwright, built_dist):
    """Chromium on Linux without --enable-unsafe-webgpu gives no adapter: a clear error."""
    from py_engine import harness
    from py_engine.server import ServerThread

    browser = playwright.chromium.launch(**harness.launch_args(webgpu=False))
    try:
        with ServerThread(built_dist) as url:
            page = browser.new_page()
            page.goto(url + "index.html?noselfcheck")
            harness.wait_for_engine(page)
            error = run_json(page, """
import json
from py_engine.gpu import open_device, NoWebGPUError
try:
    await open_device()
    result = None
except NoWebGPUError as e:
    result = str(e)
json.dumps(result)
""")
    finally:
        browser.close()
    assert error and "requestAdapter() returned null" in error


def test_pytorch_and_sharded_weights_read_in_the_browser(engine_page, tmp_path):
    """The .bin reader (pickle, zipfile: Pyodide's standard library) and the sharded
    safetensors reader give in Pyodide what they give here, refusals included."""
    import hashlib
    import json

    import torch
    from safetensors.torch import save_file

    from py_engine.formats import safetensors
    from py_engine.formats.torch_pickle import TorchFileError, load_torch
    from py_engine.harness import put_files

    torch.manual_seed(3)
    state = {"w": torch.randn(4, 3).t(), "h": torch.randn(5).half(), "i": torch.arange(4)}
    torch.save(state, tmp_path / "model.bin")
    torch.save([1, 2], tmp_path / "list.bin")
    save_file({"a": torch.randn(2, 2)}, tmp_path / "s-1.safetensors")
    save_file({"b": torch.randn(3)}, tmp_path / "s-2.safetensors")
    (tmp_path / "index.json").write_text(json.dumps(
        {"weight_map": {"a": "s-1.safetensors", "b": "s-2.safetensors"}}))
    files = {f"/work/weights/{p.name}": p.read_bytes() for p in tmp_path.iterdir()}
    put_files(engine_page, files)

    def digest(file):
        return {n: [file.info(n)[0], list(file.info(n)[1]), hashlib.sha256(bytes(file.raw(n))).hexdigest()]
                for n in file.keys()}

    want = {"model": digest(load_torch(tmp_path / "model.bin")),
            "sharded": digest(safetensors.load_sharded(tmp_path / "index.json"))}
    with pytest.raises(TorchFileError) as refused:
        load_torch(tmp_path / "list.bin")
    want["list"] = str(refused.value)
    got = run_json(engine_page, """
import hashlib, json
from py_engine.formats import safetensors
from py_engine.formats.torch_pickle import TorchFileError, load_torch

def digest(file):
    return {n: [file.info(n)[0], list(file.info(n)[1]), hashlib.sha256(bytes(file.raw(n))).hexdigest()]
            for n in file.keys()}

out = {"model": digest(load_torch("/work/weights/model.bin")),
       "sharded": digest(safetensors.load_sharded("/work/weights/index.json"))}
try:
    load_torch("/work/weights/list.bin")
except TorchFileError as e:
    out["list"] = str(e)
json.dumps(out)
""")
    assert got == want and len(want["model"]) == 3 and "not a state dict" in want["list"]
