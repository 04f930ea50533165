"""The fine-tuning API's HTTP side: a starlette app over an Engine (engine.py).

Every answer is JSON (a dataset export too; an adapter download is a zip, events are
server-sent events); a refused request is {"error": "<one line>"} with its status: 400 a
malformed body, 401 no admin token, 403 a wrong one (or a request not addressed to loopback),
404 no such model, job, document or adapter, 409 not possible now, 413 too large, 415 a body
type the endpoint does not take, 422 values that cannot be used. The admin token is compared in
constant time (hmac.compare_digest). Request bodies are counted as they arrive and refused past
the limit, whatever Content-Length says.
"""

import asyncio
import hmac
import json
import math
import posixpath
import sys
import traceback
from dataclasses import dataclass

from ..data.classification import DataError
from ..tokenizers.chat_template import check_template_args
from ..server import addressed_to_loopback
from .engine import FINISHED, Conflict, NotFound
from .jobs import SETUP_FIELDS, JobError, job_spec

STATUS_PATH = "/fine-tuning/status"
EXPORT_PATH = "/api/finetune/export"
UPLOAD_PATHS = ("/fine-tuning/documents", "/fine-tuning/setup")
EXPORT_FIELDS = {"format": str, "quality_filter": bool, "deduplicate": bool,
                 "include_system": bool, "system_prompt": str, "validation_split": (int, float),
                 "seed": int, "kind": str}
KEEP_ALIVE_S = 15.0
EVENTS_BUFFERED = 1000


@dataclass(frozen=True)
class ApiLimits:
    """max_upload_bytes: a request that uploads documents (all files together);
    max_body_bytes: any other request; max_files: files in one upload; max_query_chars: a
    query's text; max_new_tokens: a chat model's reply."""
    max_upload_bytes: int = 32 << 20
    max_body_bytes: int = 1 << 20
    max_files: int = 20
    max_query_chars: int = 8000
    max_new_tokens: int = 256


class ApiError(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.headers = status, headers


class BodyTooLarge(ApiError):
    def __init__(self, limit):
        super().__init__(413, f"the request body is larger than this endpoint's limit of "
                              f"{limit} bytes")


def error_response(status, message, headers=None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status,
                        headers=dict(headers or {}, **{"Cache-Control": "no-store"}))


def _answer(error):
    """The HTTP answer to an exception raised while handling a request."""
    if isinstance(error, ApiError):
        return error_response(error.status, str(error), error.headers)
    if isinstance(error, NotFound):
        return error_response(404, str(error.args[0]) if error.args else "not found")
    if isinstance(error, Conflict):
        return error_response(409, str(error))
    if isinstance(error, JobError):
        return error_response(error.status, str(error))
    if isinstance(error, (DataError, ValueError)):
        return error_response(422, str(error))
    status = getattr(error, "status_code", None)        # starlette's own (a malformed form)
    if isinstance(status, int) and 400 <= status < 500:
        return error_response(status, str(getattr(error, "detail", "")) or "a malformed request")
    traceback.print_exception(error, file=sys.stderr)
    return error_response(500, f"internal error ({type(error).__name__}: {error}); nothing "
                               "the server holds was changed by this request")


# --- the ASGI layers: loopback Host, body size -------------------------------------------------

class LoopbackOnly:
    """Refuse requests not addressed to a loopback name (a web site rebinding its name to
    127.0.0.1 sends its own name as Host), and requests a browser sends from another site's
    page (a form posted to the API needs no token to reach it, only to be obeyed)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            from starlette.requests import HTTPConnection

            connection = HTTPConnection(scope)
            refusal = None
            if addressed_to_loopback(connection) is None:
                refusal = "this API answers requests to 127.0.0.1, ::1 or localhost only"
            elif connection.headers.get("sec-fetch-site", "none") not in ("same-origin", "none"):
                refusal = "this API does not answer requests that web pages send"
            if refusal is not None:
                return await error_response(403, refusal)(scope, receive, send)
        return await self.app(scope, receive, send)


class BodyLimit:
    """Refuse a body over its path's limit: at once when Content-Length says so, else when the
    bytes received pass it."""

    def __init__(self, app, limits):
        self.app, self.limits = app, limits

    def limit(self, path):
        return self.limits.max_upload_bytes if path in UPLOAD_PATHS else self.limits.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            if not length.isdigit():
                response = error_response(400, "Content-Length is not a number")
            else:
                response = error_response(413, str(BodyTooLarge(limit)))
            return await response(scope, receive, send)
        received = 0
        started = False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as e:
            if not started:
                await _answer(e)(scope, receive, send)


# --- request bodies ----------------------------------------------------------------------------

def _media_type(request):
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


async def json_object(request, allow_form=False):
    """The request's JSON object (415 for another body type, 400 for bad JSON); with
    allow_form, a urlencoded or multipart form's fields as a dict of strings."""
    media = _media_type(request)
    if allow_form and media in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=50)
        return {k: v for k, v in form.items()}
    if media != "application/json":
        wanted = "application/json" + (" or a form" if allow_form else "")
        raise ApiError(415, f"send {wanted}, not {media or 'a body without Content-Type'}")
    body = await request.body()
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"the body is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def display_name(filename):
    """A file name to show and to tell formats by: its last path component, printable."""
    name = posixpath.basename(str(filename or "").replace("\\", "/"))
    name = "".join(c for c in name if c.isprintable())[:200].strip()
    return name or "upload"


async def uploaded_files(request, limits):
    """[(name, bytes)] of the files a request carries: multipart/form-data file fields, or a
    raw body named by ?name=."""
    media = _media_type(request)
    if media == "multipart/form-data":
        from starlette.exceptions import HTTPException

        try:
            form = await request.form(max_files=limits.max_files, max_fields=50)
        except HTTPException as e:
            if "files" in str(e.detail):
                raise ApiError(413, f"at most {limits.max_files} files in one upload") from None
            raise
        files = [v for _, v in form.multi_items() if hasattr(v, "filename")]
        fields = {k: v for k, v in form.multi_items() if not hasattr(v, "filename")}
        out = [(display_name(f.filename), await f.read()) for f in files]
        return out, fields
    if media in ("application/json", "application/x-www-form-urlencoded", ""):
        raise ApiError(415, "upload files as multipart/form-data (curl -F file=@notes.md), or "
                            "send one file as the body with ?name=notes.md")
    name = request.query_params.get("name")
    if not name:
        raise ApiError(422, "a file sent as the body needs its name: ?name=notes.md")
    return [(display_name(name), await request.body())], {}


# --- the app -----------------------------------------------------------------------------------

def app_for_api(engine, token, limits=ApiLimits()):
    """The starlette app of the API over a started Engine; `token`: the admin token."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    from ..data.importers import import_file

    def authorize(request):
        header = request.headers.get("authorization")
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "this needs the admin token: send Authorization: Bearer <token> "
                                "(the token is in the data directory's admin_token file)",
                           {"WWW-Authenticate": 'Bearer realm="py-engine"'})
        if not hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
            raise ApiError(403, "the admin token is wrong")

    def endpoint(handler, admin=False):
        async def run(request):
            try:
                if admin:
                    authorize(request)
                result = await handler(request)
            except Exception as e:        # noqa: BLE001 - every failure is a JSON answer
                return _answer(e)
            if isinstance(result, Response):
                return result
            status = 200
            if isinstance(result, tuple):
                status, result = result
            return JSONResponse(result, status_code=status, headers={"Cache-Control": "no-store"})
        return run

    async def read_documents(files):
        """Each file imported as every importer's input is checked; all or none are queued."""
        if not files:
            raise ApiError(422, "no file in the request: add one (curl -F file=@notes.md)")
        imported = []
        for name, data in files:
            if not data:
                raise ApiError(422, f"{name}: the file is empty")
            try:
                records = await run_in_threadpool(import_file, data, name)
            except DataError as e:
                raise ApiError(422, f"{name}: {e}") from None
            if not records:
                raise ApiError(422, f"{name}: no training example in this file")
            imported.append((name, len(data), records))
        return [await engine.run(engine.add_document(*item)) for item in imported]

    async def status(request):
        return engine.status()

    async def upload(request):
        files, _ = await uploaded_files(request, limits)
        return 201, {"documents": await read_documents(files)}

    async def documents(request):
        return {"documents": engine.document_list()}

    async def delete_document(request):
        return await engine.run(engine.delete_document(request.path_params["id"]))

    async def setup(request):
        if _media_type(request) == "multipart/form-data":
            files, fields = await uploaded_files(request, limits)
            body = _form_setup(fields)
        else:
            files, body = [], await json_object(request)
        if files:
            body.setdefault("documents", None)
        spec = job_spec(engine.models, body)
        engine.check_documents(spec["documents"] or ())    # before the files are queued
        if files:
            spec["documents"] = (spec["documents"] or []) + \
                [d["id"] for d in await read_documents(files)]
        job = await engine.run(engine.submit(spec))
        return 202, {"job": job, "events": f"/fine-tuning/events?job={job['id']}"}

    async def query(request):
        body = await json_object(request, allow_form=True)
        text = body.get("query")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(422, "give the text to answer as the field query")
        if len(text) > limits.max_query_chars:
            raise ApiError(413, f"the query is longer than {limits.max_query_chars} characters")
        tokens = body.get("max_new_tokens", 64)
        if isinstance(tokens, str) and tokens.isdigit():
            tokens = int(tokens)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or \
                not 1 <= tokens <= limits.max_new_tokens:
            raise ApiError(422, f"max_new_tokens must be a whole number in 1..{limits.max_new_tokens}")
        template_args = body.get("chat_template_kwargs")
        if isinstance(template_args, str):      # a form field: the object as JSON text
            template_args = _form_object("chat_template_kwargs", template_args, 422)
        if template_args is not None:
            template_args = check_template_args(template_args, "chat_template_kwargs")
        return await engine.query(text, tokens, template_args)

    async def jobs(request):
        return {"jobs": engine.job_list()}

    async def job(request):
        return engine.job(request.path_params["id"])

    async def cancel(request):
        return await engine.run(engine.cancel(request.path_params["id"]))

    async def adapters(request):
        return engine.adapter_list()

    async def download(request):
        adapter_id = request.path_params["id"]
        data = await run_in_threadpool(engine.adapter_zip, adapter_id)
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{adapter_id}.zip"',
            "Cache-Control": "no-store"})

    async def delete_adapter(request):
        return await engine.run(engine.delete_adapter(request.path_params["id"]))

    async def export(request):
        body = await json_object(request)
        options = _export_options(body)
        kind = options.pop("kind", None)
        if kind not in (None, "classification", "causal_lm"):
            raise ApiError(422, f"kind must be classification or causal_lm, got {kind!r:.40}")
        result = await engine.run(engine.export(options, kind))
        return {"format": options.get("format", "jsonl"), "counts": result.counts,
                "files": {name: data.decode("utf-8") for name, data in result.files.items()},
                "stats": result.stats}

    async def events(request):
        job_id = request.query_params.get("job")
        if job_id is not None:
            engine.job(job_id)
        return StreamingResponse(_event_stream(engine, job_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    routes = [
        Route(STATUS_PATH, endpoint(status), methods=["GET"]),
        Route("/fine-tuning/setup", endpoint(setup, admin=True), methods=["POST"]),
        Route("/fine-tuning/query", endpoint(query), methods=["POST"]),
        Route("/fine-tuning/events", endpoint(events), methods=["GET"]),
        Route("/fine-tuning/jobs", endpoint(jobs), methods=["GET"]),
        Route("/fine-tuning/jobs/{id}", endpoint(job), methods=["GET"]),
        Route("/fine-tuning/jobs/{id}", endpoint(cancel, admin=True), methods=["DELETE"]),
        Route("/fine-tuning/documents", endpoint(upload, admin=True), methods=["POST"]),
        Route("/fine-tuning/documents", endpoint(documents), methods=["GET"]),
        Route("/fine-tuning/documents/{id}", endpoint(delete_document, admin=True),
              methods=["DELETE"]),
        Route("/fine-tuning/adapters", endpoint(adapters), methods=["GET"]),
        Route("/fine-tuning/adapters/{id}", endpoint(download, admin=True), methods=["GET"]),
        Route("/fine-tuning/adapters/{id}", endpoint(delete_adapter, admin=True),
              methods=["DELETE"]),
        Route(EXPORT_PATH, endpoint(export, admin=True), methods=["POST"]),
    ]

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        message = {404: f"no endpoint {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            status, getattr(exc, "detail", "refused"))
        return error_response(status, message)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return LoopbackOnly(BodyLimit(app, limits))


def _form_setup(fields):
    """A setup request's fields from a form: model, documents (ids separated by commas),
    labels (names separated by commas), validation_split, problem_type, lora and options as
    JSON objects, and/or one field per training option (JSON values: 2, 1e-3)."""
    body, options = {}, {}
    for key, value in fields.items():
        if key == "options":
            options.update(_form_object("options", value, 400))
        elif key == "lora":
            body[key] = _form_object("lora", value, 400)
        elif key in ("documents", "labels"):
            body[key] = [x.strip() for x in value.split(",") if x.strip()]
        elif key == "model":
            body[key] = value
        elif key == "validation_split":
            body[key] = _form_number(key, value)
        elif key in SETUP_FIELDS:
            body[key] = value
        else:
            options[key] = _form_number(key, value)
    if options:
        body["options"] = options
    return body


def _form_object(key, value, status):
    """A form field holding a JSON object (how a form sends one); ApiError(status) otherwise."""
    try:
        given = json.loads(value, parse_constant=_no_constant)
    except ValueError:
        given = None
    if not isinstance(given, dict):
        raise ApiError(status, f"{key} must be a JSON object")
    return given


def _form_number(key, value):
    try:
        number = json.loads(value)
    except ValueError:
        raise ApiError(422, f"{key} must be a number, got {value!r:.40}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ApiError(422, f"{key} must be a finite number")
    return number


def _export_options(body):
    unknown = sorted(set(body) - set(EXPORT_FIELDS))
    if unknown:
        raise ApiError(422, f"unknown field {', '.join(map(repr, unknown))}; the export takes "
                            f"{', '.join(EXPORT_FIELDS)}")
    for key, kind in EXPORT_FIELDS.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, kind) or
                                  (kind is not bool and isinstance(value, bool))):
            raise ApiError(422, f"{key} must be a {_type_name(kind)}, got {value!r:.40}")
    return dict(body)


def _type_name(kind):
    return {str: "string", bool: "boolean (true or false)", int: "whole number"}.get(kind, "number")


def _sse(event):
    return f"event: {event['event']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


async def _event_stream(engine, job_id):
    """Server-sent events: the status first, then every event (one job's, with ?job=, ending
    when it ends)."""
    loop = asyncio.get_running_loop()
    waiting = asyncio.Queue()

    def offer(event):
        if waiting.qsize() >= EVENTS_BUFFERED:      # a slow reader loses the oldest
            waiting.get_nowait()
        waiting.put_nowait(event)

    unsubscribe = engine.subscribe(lambda event: loop.call_soon_threadsafe(offer, event))
    try:
        yield _sse(dict(engine.status(), event="status"))
        if job_id is not None:
            job = engine.job(job_id)
            if job["state"] in FINISHED:
                yield _sse({"event": "job", "job": job})
                return
        while True:
            try:
                event = await asyncio.wait_for(waiting.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if job_id is not None and _job_of(event) != job_id:
                continue
            yield _sse(event)
            if job_id is not None and event["event"] == "job" and \
                    event["job"]["state"] in FINISHED:
                return
    finally:
        unsubscribe()


def _job_of(event):
    if event["event"] == "job":
        return event["job"]["id"]
    if event["event"] == "adapter":
        return event["adapter"]["job"]
    return event.get("job")
