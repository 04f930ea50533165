"""HTTP server for web/dist (host side; needs the `serve` extra: starlette and uvicorn).

Serves on loopback only: WebGPU needs a secure context, which http://127.0.0.1 is, and the
server fetches URLs for the page (GET /fetch?url=..., see url_fetch.py), which must never be
open to other machines. Module scripts and wasm need their exact MIME types, which Python's
mimetypes table may lack.

/fetch answers the fetched body with its Content-Type and the final URL in X-Fetched-Url, or
{"error": "<one line>"} with a 4xx/5xx status. It answers only requests addressed to the
server by its loopback name (a web site that rebinds its own name to 127.0.0.1 gets 403) and
not sent cross-site by a browser.
"""

import ipaddress
import mimetypes
import threading
from pathlib import Path

from .url_fetch import FetchLimits, FetchRefused, fetch

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".whl": "application/zip",
    ".zip": "application/zip",
}


FETCH_PATH = "/fetch"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def check_loopback(host, why="it fetches URLs for the page"):
    """Refuse to serve anywhere but loopback (the fetch endpoint must not be an open proxy; the
    fine-tuning API holds the user's data)."""
    name = host.strip("[]")
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the server binds to loopback only (127.0.0.1, ::1 or localhost), "
                         f"not {host!r}: {why}")


def addressed_to_loopback(request):
    """The name a request was addressed to (its Host header, without the port) when that is a
    loopback name, else None: a web site that rebinds its own name to 127.0.0.1 reaches the
    server with its own name there."""
    host = (request.headers.get("host") or "").rsplit(":", 1)[0]
    return host if host in LOOPBACK_NAMES else None


def parse_origins(items):
    """{(address, port)} from "HOST:PORT" strings (the --allow-fetch option)."""
    out = set()
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--allow-fetch {item!r}: give HOST:PORT, e.g. 127.0.0.1:9000")
        try:
            address = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            raise ValueError(f"--allow-fetch {item!r}: {host!r} is not an IP address") from None
        out.add((address, int(port)))
    return out


def fetch_endpoint(limits, allow_fetch):
    """The /fetch route: `limits` (FetchLimits), `allow_fetch`: {(address, port)} that may be
    fetched though not public, besides the server's own address."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response

    def refused(message, status):
        return JSONResponse({"error": message}, status_code=status,
                            headers={"Cache-Control": "no-store"})

    async def endpoint(request):
        own_host, own_port = request.scope["server"][:2]
        if addressed_to_loopback(request) is None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0]
            return refused(f"the fetch endpoint answers requests to 127.0.0.1 only, not {host!r}", 403)
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return refused("the fetch endpoint answers this server's own pages only", 403)
        url = request.query_params.get("url", "")
        if not url:
            return refused("give the URL to fetch: /fetch?url=...", 400)
        own = {(str(ipaddress.ip_address(own_host)), own_port)}

        def is_endpoint(target_host, target_port, path):
            return target_port == own_port and path.split("?")[0].rstrip("/") == FETCH_PATH and \
                target_host.strip("[]") in (own_host, *LOOPBACK_NAMES)

        try:
            page = await run_in_threadpool(fetch, url, limits, own | set(allow_fetch), is_endpoint)
        except FetchRefused as e:
            return refused(str(e), e.status)
        return Response(page.body, media_type=None, headers={
            "Content-Type": page.content_type or "application/octet-stream",
            "X-Fetched-Url": page.url, "Cache-Control": "no-store"})

    return endpoint


def app_for(directory, fetch_limits=FetchLimits(), allow_fetch=()):
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.staticfiles import StaticFiles

    for suffix, mime in MIME_TYPES.items():
        mimetypes.add_type(mime, suffix)
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise FileNotFoundError(f"{directory} has no index.html: run `python build.py build` first")
    class UncachedFiles(StaticFiles):
        # A rebuilt wheel or shader must never be shadowed by a cached copy.
        def file_response(self, *args, **kwargs):
            response = super().file_response(*args, **kwargs)
            response.headers["Cache-Control"] = "no-store"
            return response

    app = Starlette(routes=[Route(FETCH_PATH, fetch_endpoint(fetch_limits, set(allow_fetch)))])
    app.mount("/", UncachedFiles(directory=str(directory), html=True))
    return app


def serve(directory, host="127.0.0.1", port=8000, allow_fetch=()):
    """Serve until interrupted; `allow_fetch`: {(address, port)} the fetch endpoint may reach
    though not public (a wiki on this machine, say)."""
    import uvicorn

    check_loopback(host)
    app = app_for(directory, allow_fetch=allow_fetch)
    print(f"serving {directory} at http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


class AppThread:
    """Serve an ASGI app on 127.0.0.1 from a background thread; `with AppThread(app) as url:`
    (port 0: a free one)."""

    def __init__(self, app, port=0):
        import uvicorn

        # Open event streams would hold a graceful shutdown forever: they get 5 s.
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = None

    def __enter__(self):
        self._thread.start()
        for _ in range(2000):          # a loaded machine starts slowly
            if self._server.started:
                break
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server failed to start")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the HTTP server did not start within 20 s")
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self.url

    def __exit__(self, *exc):
        self._server.should_exit = True
        self._thread.join(timeout=10)


class ServerThread(AppThread):
    """Serve `directory` on 127.0.0.1 from a background thread; `with ServerThread(d) as url:`."""

    def __init__(self, directory, port=0, fetch_limits=FetchLimits(), allow_fetch=()):
        super().__init__(app_for(directory, fetch_limits, allow_fetch), port)
