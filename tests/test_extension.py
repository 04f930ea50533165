"""The Chrome extension (extension/dist, built by build.py) loaded unpacked in headless Chromium.

Python runs in the extension's offscreen document; Playwright cannot open that document as a
page, so requests go through the service worker's `pyEngineRequest`, as the popup's do. Nothing
here skips: a missing Chromium or build fails with what to install or run.
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from py_engine import harness
from py_engine.gpu.selfcheck import BOUNDS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
EXT_DIST = ROOT / "extension" / "dist"
BOOT_TIMEOUT_MS = 180_000  # Pyodide boots in 4-10 s here, far slower on a loaded machine
STATUS = {"target": "offscreen", "type": "status", "wait": True}
SELFCHECK = {"target": "offscreen", "type": "selfcheck"}


class Extension:
    """The running extension: its browser context, id, and a way to ask the offscreen document."""

    def __init__(self, context, worker):
        self.context = context
        self.id = worker.url.split("/")[2]
        self.worker_url = worker.url

    @property
    def worker(self):
        # The live service worker: after a restart Playwright may hand out a new Worker.
        workers = [w for w in self.context.service_workers if w.url == self.worker_url]
        assert workers, "the extension's service worker is not running"
        return workers[-1]

    def url(self, path):
        return f"chrome-extension://{self.id}/{path}"

    def request(self, message, timeout_ms=BOOT_TIMEOUT_MS):
        # Timed out inside the worker, so that a document that never answers fails the test
        # instead of hanging it (Worker.evaluate has no timeout of its own).
        return self.worker.evaluate(
            """([message, ms]) => Promise.race([
                self.pyEngineRequest(message),
                new Promise((_, reject) => setTimeout(
                    () => reject(new Error(`no answer to ${JSON.stringify(message)} in ${ms} ms`)), ms)),
            ])""",
            [message, timeout_ms],
        )

    def offscreen_documents(self):
        return self.worker.evaluate("""async () =>
            (await chrome.runtime.getContexts({contextTypes: ["OFFSCREEN_DOCUMENT"]})).map((c) => c.documentUrl)""")


@pytest.fixture(scope="session")
def extension_dist():
    """extension/dist, rebuilt if its sources changed (a no-op under `python build.py test`)."""
    subprocess.run([sys.executable, str(ROOT / "build.py"), "build"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    assert (EXT_DIST / "manifest.json").is_file(), "extension/dist was not built: run `python build.py build`"
    return EXT_DIST


@pytest.fixture(scope="module")
def extension(playwright, extension_dist, tmp_path_factory):
    """Chromium with the extension loaded; module-scoped because booting Python takes seconds."""
    try:
        executable = harness.chromium_path()
    except harness.BrowserError as e:
        pytest.fail(str(e))
    # Extensions need a persistent profile, and both flags: --load-extension alone is ignored.
    context = playwright.chromium.launch_persistent_context(
        tmp_path_factory.mktemp("chromium-profile"),
        executable_path=executable,
        headless=True,
        args=[*harness.CHROMIUM_ARGS, f"--disable-extensions-except={extension_dist}",
              f"--load-extension={extension_dist}"],
    )
    try:
        workers = context.service_workers
        # A bad manifest loads nothing and says nothing: no service worker ever appears.
        worker = workers[0] if workers else context.wait_for_event("serviceworker", timeout=30_000)
        yield Extension(context, worker)
    finally:
        context.close()


def test_offscreen_document_boots_py_engine(extension):
    status = extension.request(STATUS)
    assert status["error"] is None, f"py_engine failed to boot in the offscreen document:\n{status['error']}"
    assert status["booted"] is True
    assert status["timings"]["pyodide_boot_ms"] > 0
    assert status["adapter"]["backend"] == "browser-webgpu"
    assert status["adapter"]["vendor"]
    assert extension.offscreen_documents() == [extension.url("offscreen.html")]


def test_selfcheck_runs_in_the_offscreen_document(extension):
    report = extension.request(SELFCHECK)
    assert "error" not in report, f"the self-check raised in the offscreen document:\n{report['error']}"
    assert report["adapter"]["vendor"]
    assert report["adapter"]["backend"] == "browser-webgpu"
    assert {c["kernel"] for c in report["checks"]} == set(BOUNDS)
    for c in report["checks"]:
        assert c["bound"] == BOUNDS[c["kernel"]]
        assert isinstance(c["rel_error"], float), c  # "nan-or-inf" otherwise
        assert c["rel_error"] <= c["bound"], c
    assert report["ok"] is True


def test_popup_shows_status_and_runs_the_selfcheck(extension):
    vendor = extension.request(STATUS)["adapter"]["vendor"]
    page = extension.context.new_page()
    try:
        page.goto(extension.url("popup.html"))
        # "ready" and the adapter appear only once the offscreen document reports a booted engine.
        page.wait_for_selector("#engine.ok", timeout=BOOT_TIMEOUT_MS)
        assert page.inner_text("#engine") == "ready"
        assert vendor in page.inner_text("#adapter")
        assert "ms" in page.inner_text("#timings")
        page.click("#selfcheck")
        page.wait_for_selector("#result.ok", timeout=BOOT_TIMEOUT_MS)
        result = page.inner_text("#result")
        assert result.startswith("Max relative error") and "within bounds" in result, result
        assert page.is_hidden("#error")
    finally:
        page.close()


def test_offscreen_document_survives_a_service_worker_restart(extension):
    before = extension.request(STATUS)
    assert before["booted"] is True, before
    extension.worker.evaluate("() => { self.beforeRestart = true; }")

    page = extension.context.new_page()
    try:
        cdp = extension.context.new_cdp_session(page)
        states = []
        cdp.on("ServiceWorker.workerVersionUpdated", lambda event: states.extend(
            v["runningStatus"] for v in event["versions"] if v["scriptURL"] == extension.worker_url))
        cdp.send("ServiceWorker.enable")
        cdp.send("ServiceWorker.stopAllWorkers")
        wait_for_state(page, states, "stopped")

        # Opening the popup messages the service worker, which wakes it.
        page.goto(extension.url("popup.html"))
        wait_for_state(page, states, "running")
        page.wait_for_selector("#engine.ok", timeout=BOOT_TIMEOUT_MS)

        # A fresh global scope (the flag is gone) reaching the same, still booted document.
        assert extension.worker.evaluate("() => typeof self.beforeRestart") == "undefined"
        after = extension.request(STATUS)
        assert after["instance"] == before["instance"], (before, after)
        assert after["booted"] is True, after
        assert extension.offscreen_documents() == [extension.url("offscreen.html")]
    finally:
        page.close()


def wait_for_state(page, states, wanted, timeout_s=30):
    """Wait until the service worker's last reported running status is `wanted`."""
    deadline = time.monotonic() + timeout_s
    while not (states and states[-1] == wanted):
        assert time.monotonic() < deadline, f"service worker never became {wanted!r}; saw {states}"
        page.wait_for_timeout(50)  # lets Playwright deliver the CDP events
