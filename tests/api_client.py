"""A small HTTP client for the fine-tuning API (the standard library's http.client): requests
with or without the admin token, multipart uploads, server-sent events, and a load of
concurrent requests (used by tests/test_api.py and bench/api_load.py).

    api = Client(url, token)
    status, body = api.post("/fine-tuning/query", {"query": "great film"})
    report = load(url, token, [("GET", "/fine-tuning/status", None)], threads=8, each=25)
"""

import http.client
import json
import math
import threading
import time
import urllib.parse
import uuid


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Answer({self.status}, {self.body[:200]!r})"


def multipart(fields=(), files=()):
    """(body, content type) of a multipart/form-data request: fields [(name, text)], files
    [(field, filename, bytes)]."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for field, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, url, token=None, timeout=60):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.token, self.timeout = parsed.hostname, parsed.port, token, timeout

    def request(self, method, path, body=None, content_type=None, token=True, headers=None):
        """body: a dict (sent as JSON), bytes, or None; token: True (the client's), None (no
        Authorization header) or a string (sent as given)."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body, content_type = json.dumps(body).encode(), content_type or "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if token is True:
            token = self.token
        if token is not None:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())   # any case
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, content_type=None, **kw):
        return self.request("POST", path, body, content_type, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def upload(self, path, files, fields=(), **kw):
        body, content_type = multipart(fields, files)
        return self.request("POST", path, body, content_type, **kw)

    def events(self, path, until=None, timeout=60):
        """The server-sent events of `path` as (event, data) pairs, until the stream ends or
        until(event, data) is true."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        out = []
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200, response.read()
            assert response.getheader("Content-Type").startswith("text/event-stream")
            kind, data = None, []
            while True:
                line = response.fp.readline()
                if not line:
                    return out
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and kind is not None:
                    out.append((kind, json.loads("\n".join(data))))
                    if until is not None and until(*out[-1]):
                        return out
                    kind, data = None, []
        finally:
            conn.close()

    def wait_job(self, job_id, states=("done", "failed", "cancelled"), timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/fine-tuning/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"{job_id} did not reach {states}: {job}")


def load(url, token, requests, threads=8, each=25):
    """`threads` threads each send `each` requests, cycling through `requests` [(method, path,
    body)]; returns {"requests", "failed" [(status, body)], "seconds", "per_s", "latency_ms":
    {path: [ms, ...]}}."""
    client = Client(url, token)
    latencies, failed = {}, []
    lock = threading.Lock()

    def worker(k):
        for i in range(each):
            method, path, body = requests[(k + i) % len(requests)]
            started = time.perf_counter()
            try:
                answer = client.request(method, path, body)
                ok, detail = answer.status == 200, (answer.status, answer.body[:200])
            except OSError as e:
                ok, detail = False, (None, repr(e))
            ms = (time.perf_counter() - started) * 1000
            with lock:
                latencies.setdefault(path, []).append(ms)
                if not ok:
                    failed.append(detail)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - started
    total = threads * each
    return {"requests": total, "failed": failed, "seconds": seconds, "per_s": total / seconds,
            "latency_ms": latencies}


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
