"""The fine-tuning API under load: `py-engine serve-api` in a process of its own (MiniLM, NumPy
backend, a fresh data directory), driven from this process by concurrent HTTP clients
(tests/api_client.py): GET /fine-tuning/status and POST /fine-tuning/query requests, half and
half, from `threads` threads, in rounds that alternate between the server idle and the server
training a job (a MiniLM LoRA job on generated sports/cooking texts, started before the round and
cancelled after it). Reports requests/s, p50 and p95 per endpoint and state, and every failure.

    python bench/api_load.py [--threads 8] [--each 8] [--rounds 2]     # JSON on stdout
    python build.py bench --only api       # the same, into bench/results/api.json and latest.json

A query waits for the optimizer step under way (the engine computes one thing at a time), so
its latency while training is about one MiniLM step on this machine's CPU.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from py_engine.cli import COUNT  # noqa: E402

from api_client import Client, load, percentile  # noqa: E402
from idle_training import topic_texts  # noqa: E402
from processes import relevant_env  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "api.json"
QUERIES = ["we baked the pasta after work", "the team scored a goal on sunday"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "py_engine", "serve-api", "--data-dir", str(data_dir), "--model",
         "minilm", "--backend", "numpy", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    server.stdout.readline()
    token = (Path(data_dir) / "admin_token").read_text().strip()
    client = Client(f"http://127.0.0.1:{port}/", token, timeout=300)
    for _ in range(600):
        try:
            client.get("/fine-tuning/status")
            return server, client
        except ConnectionRefusedError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("serve-api did not start within 60 s")


def wait_job(client, job_id, states, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/fine-tuning/jobs/{job_id}").json()
        if job["state"] in states and (job["state"] != "running" or job["step"] >= 1):
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


def summary(report):
    out = {"requests": report["requests"], "failed": len(report["failed"]),
           "failures": report["failed"][:5], "seconds": round(report["seconds"], 2),
           "per_s": round(report["per_s"], 1)}
    for path, ms in report["latency_ms"].items():
        name = path.rsplit("/", 1)[1]
        out[name] = {"count": len(ms), "p50_ms": round(percentile(ms, 0.5), 1),
                     "p95_ms": round(percentile(ms, 0.95), 1),
                     "ms": [round(x, 2) for x in ms]}
    return out


def run(threads=8, each=8, rounds=2):
    texts = [(t, topic) for topic in ("sports", "cooking") for t in topic_texts(topic, 48, 0)]
    data = "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in texts).encode()
    requests = [("GET", "/fine-tuning/status", None)] + \
        [("POST", "/fine-tuning/query", {"query": q}) for q in QUERIES]
    requests = [requests[0], requests[1], requests[0], requests[2]]       # half status, half query
    with tempfile.TemporaryDirectory() as tmp:
        server, client = start_server(Path(tmp) / "data")
        try:
            upload = client.upload("/fine-tuning/documents", [("file", "topics.jsonl", data)])
            assert upload.status == 201, upload
            first = client.post("/fine-tuning/setup", {"options": {"epochs": 1}}).json()["job"]
            first = wait_job(client, first["id"], ("done", "failed"))
            assert first["state"] == "done", first
            out = {"idle": [], "training": [], "steps_during_load": []}
            load_before = os.getloadavg()
            out["one_client"] = summary(load(client_url(client), client.token,
                                             [requests[1]], threads=1, each=8))
            for _ in range(rounds):
                out["idle"].append(summary(load(client_url(client), client.token, requests,
                                                threads, each)))
                job = client.post("/fine-tuning/setup", {"options": {"epochs": 50}}).json()["job"]
                job = wait_job(client, job["id"], ("running",))
                report = load(client_url(client), client.token, requests, threads, each)
                after = client.get(f"/fine-tuning/jobs/{job['id']}").json()
                client.delete(f"/fine-tuning/jobs/{job['id']}")
                wait_job(client, job["id"], ("cancelled", "done", "failed"))
                out["training"].append(summary(report))
                out["steps_during_load"].append(after["step"] - job["step"])
            out.update(threads=threads, each=each, rounds=rounds, model="minilm",
                       backend="numpy", loadavg_before=load_before,
                       loadavg_after=os.getloadavg(), env=relevant_env(),
                       cpu_count=os.cpu_count())
            return out
        finally:
            server.terminate()
            server.wait(30)


def client_url(client):
    return f"http://{client.host}:{client.port}/"


def pooled(api, state):
    """The rounds of one state together: requests/s, failures, and each endpoint's latencies."""
    rounds = api[state]
    total = sum(r["requests"] for r in rounds)
    return {"requests": total, "failed": sum(r["failed"] for r in rounds),
            "per_s": total / sum(r["seconds"] for r in rounds),
            **{name: [ms for r in rounds for ms in r[name]["ms"]] for name in ("status", "query")}}


def rows(api):
    """The table's rows: (measure, value, note) per endpoint and state, rounds pooled."""
    one = api.get("one_client")
    out = []
    if one:
        out.append(("API query, one client at a time, idle",
                    f"p50 {one['query']['p50_ms']:.0f} ms, p95 {one['query']['p95_ms']:.0f} ms",
                    f"{one['requests']} requests; load average {api['loadavg_before'][0]:.1f} on "
                    f"{api['cpu_count']} CPUs"))
    for state in ("idle", "training"):
        p = pooled(api, state)
        for name in ("status", "query"):
            ms = p[name]
            out.append((f"API {name} {'while a MiniLM job trains' if state == 'training' else 'idle'}",
                        f"p50 {percentile(ms, 0.5):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms",
                        f"{p['per_s']:.1f} requests/s (status and query), {api['threads']} "
                        f"clients; {p['failed']} of {p['requests']} failed" +
                        (f"; {sum(api['steps_during_load'])} training steps meanwhile"
                         if state == "training" else "")))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=COUNT, default=8)
    parser.add_argument("--each", type=COUNT, default=8)
    parser.add_argument("--rounds", type=COUNT, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.threads, args.each, args.rounds), indent=1))


if __name__ == "__main__":
    main()
