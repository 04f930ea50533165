"""Chrome's GPU process crashing (CDP Browser.crashGpuProcess: what a driver reset or a GPU hang
does) while py_engine compiles kernels in the page: the compile in flight, and every call after,
raise DeviceLostError, which tells whoever hosts the engine to make it anew (the browser's own
error for it, "OperationError: Instance dropped error in getCompilationInfo", said nothing of
the kind). A browser of its own: the crash reaches every page of a browser."""

import pytest

from py_engine import harness
from py_engine.harness import run_json, run_python

pytestmark = pytest.mark.browser

START = """
import asyncio
from py_engine.gpu import open_device

device = await open_device()
SOURCE = ("@group(0) @binding(0) var<storage, read_write> x: array<f32>;\\n"
          "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3<u32>) "
          "{ x[i.x] = x[i.x] * %d.0 + 1.0; }")
compiled = 0

async def compile_until_it_fails(limit=100000):
    # distinct sources: none is a cached module
    global compiled
    while compiled < limit:
        try:
            await device.kernel_from_source(SOURCE % compiled, "main", f"probe {compiled}")
        except Exception as e:
            return {"type": type(e).__name__, "message": str(e), "compiled": compiled}
        compiled += 1
    return {"type": None, "compiled": compiled}

await device.kernel_from_source(SOURCE % 0, "main", "probe")     # the device works
compiling = asyncio.ensure_future(compile_until_it_fails())
await asyncio.sleep(0.2)
compiled
"""

AFTER = """
import json
failed = await compiling
try:
    device.create_buffer(16)
    after = None
except Exception as e:
    after = type(e).__name__
json.dumps({"failed": failed, "after": after, "lost": device.lost})
"""


def test_a_gpu_crash_while_kernels_compile_is_a_lost_device(playwright, built_dist):
    from py_engine.server import ServerThread

    browser = playwright.chromium.launch(**harness.launch_args())
    try:
        with ServerThread(built_dist) as url:
            page = browser.new_page()
            page.goto(url + "index.html?noselfcheck")
            harness.wait_for_engine(page)
            assert run_python(page, START) > 0           # compiling when the GPU goes
            browser.new_browser_cdp_session().send("Browser.crashGpuProcess")
            got = run_json(page, AFTER)
    finally:
        browser.close()
    failed = got["failed"]
    assert failed["type"] == "DeviceLostError", failed
    assert failed["message"].startswith("the GPU device was lost"), failed
    assert got["after"] == "DeviceLostError" and got["lost"]
