"""Shared fixtures: a native device on wgpu-native, and the built web page in headless Chromium.

Nothing here skips: a missing adapter, browser or build fails the tests that need it, with a
message saying what to install or run.
"""

import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from py_engine import harness
from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync

ROOT = Path(__file__).resolve().parents[1]
WEB_DIST = ROOT / "web" / "dist"


def floats(view):
    """The f32 values of bytes read back from the GPU."""
    return np.frombuffer(bytes(view), dtype=np.float32)


def rel_error(out, ref):
    """||out - ref|| / ||ref|| in float64; inf when out holds a NaN or inf (an element the kernel
    never wrote keeps its NaN poison); the absolute error when ref is all zeros."""
    out = np.asarray(out, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if not np.all(np.isfinite(out)):
        return np.inf
    norm = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / norm if norm else np.linalg.norm(out - ref)


def column_sum_error(out, ref, terms):
    """rel_error of column sums of `terms` ([rows, cols]) over many rows, against the larger of
    ||ref|| and ||terms||: a column whose terms happen to cancel has a small sum but the
    rounding of all its terms, so a long sum is bounded against its terms' own scale (the norm
    of the terms, the size such a sum has on average). inf when out holds a NaN or inf."""
    out = np.asarray(out, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if not np.all(np.isfinite(out)):
        return np.inf
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), np.linalg.norm(terms))


def read(program, *buffers):
    """Add reads of `buffers` to `program`, run it, return their f32 values."""
    for b in buffers:
        program.read(b)
    return [floats(v) for v in run(program.run())]


@pytest.fixture
def rng():
    """A fresh, unseeded generator: every run draws new inputs."""
    return np.random.default_rng()


def run(coro):
    """Drive a coroutine of the compute API to completion (natively nothing truly waits; the
    browser tests' Playwright loop may already be running, which rules out asyncio.run)."""
    return run_sync(coro)


@pytest.fixture(scope="session")
def device():
    """One native device for the session (wgpu-native; Mesa lavapipe on CI)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftwareAdapterWarning)
        dev = run(open_device("native"))
    yield dev


@pytest.fixture(scope="session")
def built_dist():
    """web/dist, rebuilt if its sources changed (a no-op under `python build.py test`)."""
    subprocess.run([sys.executable, str(ROOT / "build.py"), "build"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    assert (WEB_DIST / "index.html").is_file(), "web/dist was not built: run `python build.py build`"
    return WEB_DIST


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright launches Debian's Chromium with WebGPU on (never a downloaded browser)."""
    return {**browser_type_launch_args, **harness.launch_args()}


@pytest.fixture(scope="module")
def engine_page(browser, built_dist):
    """A page that has booted Pyodide and py_engine; module-scoped because booting takes seconds."""
    from py_engine.server import ServerThread

    with ServerThread(built_dist) as url:
        page = browser.new_page()
        console = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.goto(url + "index.html?noselfcheck")
        try:
            page.timings = harness.wait_for_engine(page)
        except Exception as e:
            pytest.fail(f"py_engine did not boot in Chromium: {e}\n" + "\n".join(console[-30:]))
        yield page
        page.close()


@contextmanager
def stopped_after_first_epoch(monkeypatch):
    """Within the block, a training run (its Trainer.run calls, one per epoch on the command
    line) stops with KeyboardInterrupt when its second epoch starts, as a user's Ctrl-C would."""
    from py_engine.train.trainer import Trainer

    original, calls = Trainer.run, []

    async def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", interrupted)
    try:
        yield
    finally:
        monkeypatch.setattr(Trainer, "run", original)
