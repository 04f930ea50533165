"""The fine-tuning HTTP API (host side; `py-engine serve-api`, needs the `serve` extra).

    py-engine serve-api [--data-dir DIR] [--model NAME=DIR ...] [--port 8600] [--backend auto]

Endpoints (routes.py): GET /fine-tuning/status, POST /fine-tuning/setup, POST
/fine-tuning/query, POST /api/finetune/export, documents (POST/GET /fine-tuning/documents,
DELETE /fine-tuning/documents/{id}), jobs (GET /fine-tuning/jobs[/{id}], DELETE to cancel),
adapters (GET /fine-tuning/adapters, GET/DELETE /fine-tuning/adapters/{id}) and
GET /fine-tuning/events (server-sent events). The work is the Engine's (engine.py: one
thread owning the queue, the jobs and the model that answers), the files the DataDir's
(data_dir.py: owner-only, with the admin token).

    with ApiServer(data_dir, {"tiny": model_dir}, backend="numpy") as api:
        api.url, api.token              # http://127.0.0.1:PORT/, the admin token
"""

from ..server import AppThread, check_loopback
from .data_dir import DEFAULT_DATA_DIR, DataDir
from .engine import Engine
from .routes import ApiLimits, app_for_api

DEFAULT_PORT = 8600
LOOPBACK_WHY = "the fine-tuning API holds the user's data"


class ApiServer:
    """The API on 127.0.0.1 (a free port by default) from a background thread, its engine
    started and stopped with it."""

    def __init__(self, data_dir, models, backend="auto", port=0, limits=ApiLimits()):
        self.data = DataDir.open(data_dir)
        self.engine = Engine(self.data, models, backend)
        self.limits, self.port = limits, port
        self.token, self.url, self._thread = self.data.token, None, None

    def __enter__(self):
        self.engine.start()
        try:
            self._thread = AppThread(app_for_api(self.engine, self.token, self.limits), self.port)
            self.url = self._thread.__enter__()
        except BaseException:
            self.engine.stop()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._thread.__exit__(*exc)
        finally:
            self.engine.stop()


def serve_api(data_dir=None, models=None, host="127.0.0.1", port=DEFAULT_PORT, backend="auto",
              limits=ApiLimits()):
    """Serve until interrupted (loopback only)."""
    import uvicorn

    check_loopback(host, LOOPBACK_WHY)
    if port == 0:          # the port printed below is one clients can use
        import socket

        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    data = DataDir.open(data_dir)
    engine = Engine(data, models or {}, backend).start()
    try:
        print(f"fine-tuning API at http://{host}:{port}/ (data {data.root}, backend "
              f"{engine.backend}: {engine.backend_note}); the admin token is in "
              f"{data.token_path}", flush=True)
        uvicorn.run(app_for_api(engine, data.token, limits), host=host, port=port,
                    log_level="warning", timeout_graceful_shutdown=5)
    finally:
        engine.stop()


__all__ = ["ApiServer", "ApiLimits", "DataDir", "DEFAULT_DATA_DIR", "DEFAULT_PORT", "Engine",
           "app_for_api", "serve_api"]
