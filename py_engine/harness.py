"""Run py_engine inside headless Chromium (host side; needs playwright and the `serve` extra).

Used by `build.py demo`, the benchmarks and the browser tests: serves web/dist on loopback,
starts Debian's Chromium with WebGPU enabled, waits for the page to boot Pyodide and py_engine,
and runs Python in it. A Python exception inside the page surfaces with its traceback.
"""

import json
import os
from contextlib import contextmanager
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# WebGPU on Linux needs --enable-unsafe-webgpu; the rest keep Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

BOOT_TIMEOUT_MS = 180_000


class BrowserError(RuntimeError):
    """The browser, the page or Python inside it failed."""


def chromium_path():
    """Debian's Chromium, or $PY_ENGINE_CHROMIUM; a missing one is an error, never a skip."""
    path = os.environ.get("PY_ENGINE_CHROMIUM", DEFAULT_CHROMIUM)
    if not Path(path).is_file():
        raise BrowserError(
            f"Chromium not found at {path}: run `python build.py setup` as root "
            "(it installs Debian's chromium), or set PY_ENGINE_CHROMIUM"
        )
    return path


def launch_args(webgpu=True):
    """Keyword arguments for Playwright's chromium.launch()."""
    args = [a for a in CHROMIUM_ARGS if webgpu or a != "--enable-unsafe-webgpu"]
    return {"executable_path": chromium_path(), "headless": True, "args": args}


def wait_for_engine(page, timeout_ms=BOOT_TIMEOUT_MS):
    """Wait until the page's pyEngine has booted; raise BrowserError with the page's error."""
    page.wait_for_function(
        "() => window.pyEngine && (window.pyEngine.pyodide || window.pyEngine.error)",
        timeout=timeout_ms,
    )
    error = page.evaluate("() => window.pyEngine.error || null")
    if error:
        raise BrowserError(f"the page failed to boot py_engine:\n{error}")
    return page.evaluate("() => window.pyEngine.timings")


def run_python(page, code):
    """Run Python source in the page (top-level await allowed); returns its last value.

    A Python exception raises BrowserError carrying the Python traceback.
    """
    try:
        return page.evaluate("(code) => window.pyEngine.run(code)", code)
    except Exception as e:  # playwright.Error: the message holds the PythonError traceback
        raise BrowserError(f"Python in the page raised:\n{e}") from None


PUT_CHUNK = 4 << 20     # bytes per page.evaluate: a 90 MB checkpoint in one call crashes the page


def put_files(page, files):
    """Write {path in Pyodide's filesystem: bytes} into the page (e.g. a checkpoint directory),
    each file in chunks of PUT_CHUNK bytes."""
    import base64

    for path, data in files.items():
        for start in range(0, max(len(data), 1), PUT_CHUNK):
            chunk = base64.b64encode(data[start:start + PUT_CHUNK]).decode()
            page.evaluate("""([path, b64, first]) => {
                const FS = window.pyEngine.pyodide.FS;
                const dir = path.slice(0, path.lastIndexOf("/"));
                if (dir) FS.mkdirTree(dir);
                FS.writeFile(path, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)),
                             {flags: first ? "w" : "a"});
            }""", [path, chunk, start == 0])


def run_json(page, code):
    """Run Python whose last expression is a JSON string; return it decoded."""
    return json.loads(run_python(page, code))


@contextmanager
def engine_page(dist, query="?noselfcheck"):
    """Serve `dist`, start Chromium, open the page and wait for py_engine; yields the page."""
    from playwright.sync_api import sync_playwright

    from .server import ServerThread

    with ServerThread(dist) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(**launch_args())
        try:
            page = browser.new_page()
            console = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url + "index.html" + query)
            try:
                page.timings = wait_for_engine(page)
            except Exception as e:
                tail = "\n".join(console[-20:])
                raise BrowserError(f"{e}\nbrowser console:\n{tail}") from None
            page.console_lines = console
            yield page
        finally:
            browser.close()


# --- the extension ---------------------------------------------------------------------------


class Extension:
    """The unpacked extension running in a persistent Chromium context (launch_extension):
    its id, pages, and its service worker, through which everything else is reached (the
    offscreen document is no Playwright page)."""

    def __init__(self, context, worker):
        self.context = context
        self.id = worker.url.split("/")[2]
        self.worker_url = worker.url
        self.console = []       # what the context's pages (the popup, the overview) logged
        context.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))

    @property
    def worker(self):
        # the live service worker: after a restart Playwright hands out a new Worker
        workers = [w for w in self.context.service_workers if w.url == self.worker_url]
        if not workers:
            raise BrowserError("the extension's service worker is not running")
        return workers[-1]

    def url(self, path):
        return f"chrome-extension://{self.id}/{path}"

    def evaluate(self, expression, arg=None, timeout_ms=BOOT_TIMEOUT_MS):
        """Evaluate an async function `(arg) => ...` in the service worker, timed out there
        (Worker.evaluate has none of its own): a request nobody answers fails, never hangs."""
        return self.worker.evaluate(
            """async ([source, arg, ms]) => {
                const run = (0, eval)(source);
                let timer;
                const late = new Promise((_, reject) => { timer = setTimeout(
                    () => reject(new Error(`no answer in ${ms} ms: ${source.slice(0, 120)}`)), ms); });
                try { return await Promise.race([run(arg), late]); } finally { clearTimeout(timer); }
            }""",
            [expression, arg, timeout_ms],
        )

    def sorter(self, action, *args, timeout_ms=BOOT_TIMEOUT_MS):
        """self.tabSorter[action](...args) in the service worker."""
        return self.evaluate("([action, args]) => self.tabSorter[action](...args)", [action, list(args)],
                             timeout_ms)

    def engine(self, method, params=None, timeout_ms=BOOT_TIMEOUT_MS):
        """An engine method (TabService) through the service worker's link to it."""
        return self.evaluate("([method, params]) => self.tabSorter.engine(method, params)",
                             [method, params or {}], timeout_ms)

    def tab_id(self, url):
        """The id of the newest tab showing `url` (tab ids grow: an older one may still be open)."""
        return self.evaluate("async (url) => Math.max(...(await chrome.tabs.query({})).filter((t) => t.url === url).map((t) => t.id))",
                             url)

    def tab_strip(self):
        """The groups and the tabs, read so that they agree: {"groups": [{id, title, color}],
        "tabs": [{id, groupId, title}]} (groupId -1: in no group). They are two reads of
        Chrome's; a group the sorter makes between them is named by a tab and missing from the
        groups, so both are read again until they agree (at most 50 times, 20 ms apart)."""
        return self.evaluate("""async () => {
            for (let tries = 1; ; tries++) {
                const groups = await chrome.tabGroups.query({});
                const tabs = await chrome.tabs.query({});
                const known = new Set(groups.map((g) => g.id));
                const unknown = tabs.filter((t) => t.groupId !== -1 && !known.has(t.groupId));
                if (!unknown.length) {
                    return { groups: groups.map(({ id, title, color }) => ({ id, title, color })),
                             tabs: tabs.map(({ id, groupId, title }) => ({ id, groupId, title })) };
                }
                if (tries === 50) throw new Error(`tabs name groups that are not there: ${unknown.map((t) => `${t.id} in ${t.groupId}`)}`);
                await new Promise((resolve) => setTimeout(resolve, 20));
            }
        }""")

    def restart_worker(self, page):
        """Stop the service worker (CDP), then wake it by opening `page`'s popup: its globals are
        gone, the offscreen document is not."""
        cdp = self.context.new_cdp_session(page)
        states = []
        cdp.on("ServiceWorker.workerVersionUpdated", lambda event: states.extend(
            v["runningStatus"] for v in event["versions"] if v["scriptURL"] == self.worker_url))
        cdp.send("ServiceWorker.enable")
        cdp.send("ServiceWorker.stopAllWorkers")
        _wait_for(page, lambda: states and states[-1] == "stopped", "the service worker to stop")
        page.goto(self.url("popup.html"))
        _wait_for(page, lambda: states and states[-1] == "running", "the service worker to start")
        cdp.detach()


def _wait_for(page, condition, what, timeout_s=30):
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BrowserError(f"timed out waiting for {what}")
        page.wait_for_timeout(50)       # lets Playwright deliver events


def launch_extension(playwright, dist, profile_dir, extra_args=(), webgpu=True):
    """Chromium with the unpacked extension in `dist` (both flags are needed: --load-extension
    alone is ignored) in a persistent profile; returns an Extension. webgpu=False: a browser
    that offers no WebGPU adapter. A bad manifest loads nothing and says nothing: no service
    worker ever appears."""
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir), **dict(launch_args(webgpu), args=[
            *launch_args(webgpu)["args"], f"--disable-extensions-except={dist}",
            f"--load-extension={dist}", *extra_args]))
    try:
        workers = context.service_workers
        worker = workers[0] if workers else context.wait_for_event("serviceworker", timeout=30_000)
    except Exception:
        context.close()
        raise BrowserError(f"the extension in {dist} did not start (no service worker): check its "
                           "manifest with --enable-logging=stderr") from None
    return Extension(context, worker)
