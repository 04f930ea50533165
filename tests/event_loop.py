"""asyncio.run() for tests that may run after a browser test: Playwright's sync API (the
session's browser) leaves an event loop running in this thread, and asyncio.run() refuses to
start inside one. The coroutine then runs in a new loop on a thread of its own."""

import asyncio
import concurrent.futures


def run(coroutine):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
