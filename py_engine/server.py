"""HTTP server for web/dist (host side; needs the `serve` extra: starlette and uvicorn).

Serves on loopback only: WebGPU needs a secure context, which http://127.0.0.1 is. Module
scripts and wasm need their exact MIME types, which Python's mimetypes table may lack.
"""

import mimetypes
import threading
from pathlib import Path

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".whl": "application/zip",
    ".zip": "application/zip",
}


def app_for(directory):
    from starlette.applications import Starlette
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

    app = Starlette()
    app.mount("/", UncachedFiles(directory=str(directory), html=True))
    return app


def serve(directory, host="127.0.0.1", port=8000):
    """Serve until interrupted."""
    import uvicorn

    app = app_for(directory)
    print(f"serving {directory} at http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


class ServerThread:
    """Serve `directory` on 127.0.0.1 from a background thread; `with ServerThread(d) as url:`."""

    def __init__(self, directory, port=0):
        import uvicorn

        config = uvicorn.Config(app_for(directory), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = None

    def __enter__(self):
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                break
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server failed to start")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the HTTP server did not start within 5 s")
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self.url

    def __exit__(self, *exc):
        self._server.should_exit = True
        self._thread.join(timeout=10)
