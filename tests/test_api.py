"""The fine-tuning HTTP API (`py-engine serve-api`) through an HTTP client against the real
server on 127.0.0.1 (uvicorn on a free port, in a thread; once as the command, in a process):
every endpoint, every auth failure, malformed and oversized requests, jobs one at a time,
cancelled, failed and crashed jobs that leave the queue and the last good adapter alone, a
restart, the data directory's rules, and concurrent status and query requests while a job
trains (nothing may fail; the figures are bench/api_load.py's). Answers are checked against
the adapter downloaded and loaded by the engine's own loaders, and the dataset export against
`py-engine data export` on the same queue."""

import hmac
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

import peft_oracle as po
from chat_template_fixtures import model_template
from api_client import Client, load, multipart
from test_trainer import sentiment
from t5_tokenizer import t5_dir
from tiny_chat import tiny_chat_dir
from py_engine.api import ApiLimits, ApiServer, DataDir
from py_engine.api.data_dir import DataDirError
from py_engine.api.engine import pick_backend
from py_engine.cli import main as cli_main
from py_engine.gpu import run_sync

LIMITS = ApiLimits(max_upload_bytes=256 << 10, max_body_bytes=64 << 10, max_files=4)
ADMIN = [("POST", "/fine-tuning/setup", {"model": "tiny"}),
         ("POST", "/api/finetune/export", {}),
         ("POST", "/fine-tuning/documents?name=a.txt", b"some text to learn from"),
         ("DELETE", "/fine-tuning/documents/doc-1", None),
         ("DELETE", "/fine-tuning/adapters/adapter-1", None),
         ("DELETE", "/fine-tuning/jobs/job-1", None),
         ("GET", "/fine-tuning/adapters/adapter-1", None)]
CHATS = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                       {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
         for a in range(4) for b in range(4)]


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def labelled(n, seed):
    return jsonl({"text": e.text, "label": e.label} for e in sentiment(n, seed))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("api-models")
    bert = po.tiny_bert_dir(base / "bert", seed=3)
    chat = tiny_chat_dir(base / "chat", family="qwen2")
    # Qwen3's template: its enable_thinking is what chat_template_kwargs set
    config = json.loads((chat / "tokenizer_config.json").read_text())
    config["chat_template"] = model_template("qwen-3")
    (chat / "tokenizer_config.json").write_text(json.dumps(config))
    t5 = t5_dir(base / "t5")[0]
    broken = base / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((bert / "config.json").read_bytes())
    (broken / "vocab.txt").write_bytes((bert / "vocab.txt").read_bytes())
    (broken / "model.safetensors").write_bytes((bert / "model.safetensors").read_bytes()[:500])
    return {"tiny": str(bert), "chat": str(chat), "t5": str(t5), "broken": str(broken)}


@pytest.fixture(scope="module")
def api(models, tmp_path_factory):
    with ApiServer(tmp_path_factory.mktemp("api") / "data", models, backend="numpy",
                   limits=LIMITS) as server:
        server.client = Client(server.url, server.token)
        yield server


def upload(client, name, data):
    answer = client.upload("/fine-tuning/documents", [("file", name, data)])
    assert answer.status == 201, answer
    return answer.json()["documents"][0]


def setup_job(client, body):
    answer = client.post("/fine-tuning/setup", body)
    assert answer.status == 202, answer
    return answer.json()["job"]


def wait_running(client, job_id, steps=1, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/fine-tuning/jobs/{job_id}").json()
        if job["state"] == "running" and job["step"] >= steps:
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.02)
    raise TimeoutError(job)


def trained(client):
    """Make sure a classifier adapter answers (for a test run alone); returns the status."""
    status = client.get("/fine-tuning/status").json()
    if not status["trained"] or status["adapter"]["kind"] != "classification":
        upload(client, "reviews.jsonl", labelled(24, 11))
        job = client.wait_job(setup_job(client, {"model": "tiny", "options": {"epochs": 1}})["id"])
        assert job["state"] == "done", job
        status = client.get("/fine-tuning/status").json()
    return status


def unzip(data, into):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        z.extractall(into)
    (top,) = {n.split("/")[0] for n in names}
    return into / top


# --- before anything is trained ------------------------------------------------------------------

def test_status_and_query_before_training(api, device):
    status = api.client.get("/fine-tuning/status")
    assert status.status == 200 and status.headers["Content-Type"] == "application/json"
    status = status.json()
    assert status["trained"] is False and status["adapter"] is None and status["job"] is None
    assert status["backend"]["name"] == "numpy" and status["models"] == ["broken", "chat", "t5", "tiny"]
    answer = api.client.post("/fine-tuning/query", {"query": "good film"})
    assert answer.status == 409 and "no fine-tuned model yet" in answer.json()["error"]
    # "auto" takes the native GPU only when it is a hardware one (lavapipe is not)
    backend, _, why = run_sync(pick_backend("auto"))
    assert backend == ("numpy" if device.info.is_software else "gpu"), why


def test_every_admin_endpoint_refuses_without_the_right_token(api, monkeypatch):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    near = api.token[:-1] + ("A" if api.token[-1] != "A" else "B")
    for method, path, body in ADMIN:
        kind = "application/octet-stream" if isinstance(body, bytes) else None
        for token, status in ((None, 401), ("Basic " + api.token, 401), ("Bearer ", 401),
                              ("wrong", 403), (near, 403)):
            answer = api.client.request(method, path, body, kind, token=token)
            assert answer.status == status, (method, path, token, answer)
            assert answer.json()["error"], answer
            if status == 401:
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(compared) == 2 * len(ADMIN)          # every token given was compared in constant time
    status = api.client.get("/fine-tuning/status").json()
    assert status["job"] is None and status["queue"]["total"] == 0
    assert api.client.get("/fine-tuning/documents").json() == {"documents": []}


# --- the data directory ------------------------------------------------------------------------

def test_data_directory_is_owner_only_and_never_someone_elses(tmp_path):
    data = DataDir.open(tmp_path / "new" / "api")
    assert stat.S_IMODE(data.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(data.token_path.stat().st_mode) == 0o600
    assert len(data.token) >= 40 and data.token_path.read_text().strip() == data.token
    assert DataDir.open(data.root).token == data.token           # kept across starts
    os.chmod(data.token_path, 0o644)
    with pytest.raises(DataDirError, match="can be read by others"):
        DataDir.open(data.root)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"...")
    with pytest.raises(DataDirError, match="not the API's"):
        DataDir.open(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert DataDir.open(empty).root == empty
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataDirError, match="is a file"):
        DataDir.open(tmp_path / "file")


# --- a classifier end to end ---------------------------------------------------------------------

def test_classifier_upload_setup_events_query_download(api, models, tmp_path):
    import threading

    doc = upload(api.client, "reviews.jsonl", labelled(48, 1))
    assert doc["records"] == 48 and doc["added"] == 48 and doc["id"].startswith("doc-")
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(api.client.events(
        "/fine-tuning/events", until=lambda kind, data: kind == "job" and
        data["job"]["state"] in ("done", "failed"))))
    reader.start()
    time.sleep(0.3)
    job = setup_job(api.client, {"model": "tiny", "documents": [doc["id"]], "validation_split": 0.25,
                                 "options": {"epochs": 3, "lr": 1e-2, "seed": 1,
                                             "lr_scheduler_type": "cosine_with_restarts",
                                             "lr_scheduler_kwargs": {"num_cycles": 2},
                                             "warmup_steps": 1}})
    assert job["state"] == "queued" and job["kind"] == "classification"
    assert job["options"]["lr_scheduler_kwargs"] == {"num_cycles": 2}, job
    reader.join(60)
    kinds = [k for k, _ in seen]
    assert kinds[0] == "status" and seen[-1][1]["job"]["state"] == "done", seen[-1]
    steps = [d["step"] for k, d in seen if k == "progress" and d["job"] == job["id"]]
    assert steps and steps == sorted(steps) and steps[-1] == seen[-1][1]["job"]["total_steps"]
    assert "adapter" in kinds

    status = api.client.get("/fine-tuning/status").json()
    done = status["job"]
    assert status["trained"] and status["adapter"]["id"] == done["adapter"] == "adapter-" + \
        job["id"].split("-")[1]
    assert done["metrics"]["records"] == 36 and done["metrics"]["validation"]["examples"] == 12
    assert status["last_metrics"] == done["metrics"]

    by_json = api.client.post("/fine-tuning/query", {"query": "great good fine film"}).json()
    by_form = api.client.post("/fine-tuning/query", b"query=great+good+fine+film",
                              "application/x-www-form-urlencoded").json()
    assert by_json == by_form and by_json["label"] in ("neg", "pos")
    assert abs(sum(by_json["probs"].values()) - 1) < 1e-9
    answer = api.client.post("/fine-tuning/query", {"query": "x", "chat_template_kwargs": {"a": 1}})
    assert answer.status == 422 and "a classifier" in answer.json()["error"]

    texts = [" ".join(e.text.split()[:k + 2]) for k, e in enumerate(sentiment(8, 7))]
    alone = [api.client.post("/fine-tuning/query", {"query": t}).json() for t in texts]
    with ThreadPoolExecutor(8) as pool:       # answered together, in one batch or a few
        together = list(pool.map(lambda t: api.client.post("/fine-tuning/query",
                                                           {"query": t}).json(), texts))
    for a, b in zip(alone, together):
        assert a["label"] == b["label"] and a["probs"] == pytest.approx(b["probs"], rel=1e-6)

    listing = api.client.get("/fine-tuning/adapters").json()
    assert listing["current"] == done["adapter"]
    archive = api.client.get(f"/fine-tuning/adapters/{done['adapter']}")
    assert archive.status == 200 and archive.headers["Content-Type"] == "application/zip"
    adapter = unzip(archive.body, tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json"} <= \
        {p.name for p in adapter.iterdir()}
    from py_engine.train.classifier import TextClassifier

    clf = run_sync(TextClassifier.load(models["tiny"], str(adapter), backend="numpy"))
    (probs,) = run_sync(clf.predict(["great good fine film"]))
    assert probs == pytest.approx(by_json["probs"], rel=1e-9, abs=1e-12)


def test_a_job_takes_the_new_adapter_s_lora_options(api, tmp_path):
    """"lora" in the setup: PEFT's LoraConfig names over the app's defaults, checked against the
    model before the job is queued (unknown names, bad values, targets naming no linear
    layer, a draw not made here: 422, nothing queued); the adapter holds them."""
    jobs_before = len(api.client.get("/fine-tuning/jobs").json()["jobs"])
    for lora, words in (({"rank": 4}, "unknown LoRA option 'rank'"),
                        ({"r": 0}, "lora: r must be a positive int"),
                        ({"target_modules": ["q_proj"]}, "lora: LoRA targets ['q_proj'] match no"),
                        ({"init_lora_weights": "eva"}, "lora: init_lora_weights 'eva' draws"),
                        ({"lora_bias": True, "use_dora": True}, "lora: lora_bias (a bias on "
                         "lora_B) with DoRA (use_dora): PEFT refuses the pair"),
                        ({"rank_pattern": {"value": 0}}, "lora: rank_pattern['value'] must be "
                         "a positive int"),
                        ("r=4", "lora must be an object")):
        answer = api.client.post("/fine-tuning/setup", {"model": "tiny", "lora": lora})
        assert answer.status == 422 and words in answer.json()["error"], answer
    assert len(api.client.get("/fine-tuning/jobs").json()["jobs"]) == jobs_before
    doc = upload(api.client, "reviews.jsonl", labelled(24, 5))
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "key", "value"],
            "init_lora_weights": "gaussian", "use_rslora": True, "exclude_modules": ["key"],
            "layers_to_transform": [0], "rank_pattern": {"value": 2}, "alpha_pattern": {"query": 6}}
    job = api.client.wait_job(setup_job(api.client, {"model": "tiny", "documents": [doc["id"]],
                                                     "options": {"epochs": 1}, "lora": lora})["id"])
    assert job["state"] == "done" and job["lora"] == lora, job
    adapter = unzip(api.client.get(f"/fine-tuning/adapters/{job['adapter']}").body, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert {k: sorted(config[k]) if k == "target_modules" else config[k] for k in lora} == \
        dict(lora, target_modules=sorted(lora["target_modules"]))
    from py_engine.formats import safetensors

    saved = safetensors.load(adapter / "adapter_model.safetensors")
    assert sorted((k, saved.info(k)[1][0]) for k in saved.keys() if "lora_A" in k) == \
        [(f"base_model.model.bert.encoder.layer.0.attention.self.{m}.lora_A.weight", r)
         for m, r in (("query", 4), ("value", 2))]
    assert api.client.post("/fine-tuning/query", {"query": "good film"}).json()["label"] in ("neg", "pos")


def test_chat_job_on_the_queue_and_its_reply(api, models, tmp_path):
    answer = api.client.post("/fine-tuning/documents?name=sums.jsonl", jsonl(CHATS),
                             "application/octet-stream")
    assert answer.status == 201 and answer.json()["documents"][0]["records"] == len(CHATS)
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj"],
            "lora_bias": True}
    job = setup_job(api.client, {"model": "chat", "options": {"epochs": 2, "lr": 1e-2,
                                                              "gradient_checkpointing": True},
                                 "lora": lora})
    job = api.client.wait_job(job["id"])
    assert job["state"] == "done" and job["metrics"]["records"] == len(CHATS), job
    reply = api.client.post("/fine-tuning/query", {"query": "What is 2 plus 1?",
                                                   "max_new_tokens": 12}).json()
    assert reply["adapter"] == job["adapter"] and isinstance(reply["text"], str)
    adapter = unzip(api.client.get(f"/fine-tuning/adapters/{job['adapter']}").body, tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"]), config["lora_bias"]) == \
        (4, 8, sorted(lora["target_modules"]), True)
    from py_engine.train.chat import ChatModel

    chat = run_sync(ChatModel.load(models["chat"], str(adapter), backend="numpy"))
    expected = run_sync(chat.generate([{"role": "user", "content": "What is 2 plus 1?"}],
                                      max_new_tokens=12))
    assert reply["text"] == expected.text and reply["finish_reason"] == expected.finish_reason
    # chat_template_kwargs reach the template: Qwen3's enable_thinking=false closes an empty
    # think block in the prompt, which changes the reply; as JSON and as a form field
    args = {"enable_thinking": False}
    unthinking = run_sync(chat.generate([{"role": "user", "content": "What is 2 plus 1?"}],
                                        max_new_tokens=12, template_args=args))
    assert chat.prompt_ids("Hi", template_args=args) != chat.prompt_ids("Hi")
    for body in ({"query": "What is 2 plus 1?", "max_new_tokens": 12, "chat_template_kwargs": args},
                 {"query": "What is 2 plus 1?", "max_new_tokens": "12",
                  "chat_template_kwargs": json.dumps(args)}):
        if isinstance(body["max_new_tokens"], str):
            answer = api.client.post("/fine-tuning/query", urlencode(body).encode(),
                                     "application/x-www-form-urlencoded")
        else:
            answer = api.client.post("/fine-tuning/query", body)
        assert answer.json()["text"] == unthinking.text, body
    for kwargs, message in (([1], "must be an object"), ({"messages": []}, "set by generate itself"),
                            ({"not a name": 1}, "not a template variable name"),
                            ("{not json", "must be a JSON object")):
        answer = api.client.post("/fine-tuning/query", {"query": "x", "chat_template_kwargs": kwargs})
        assert answer.status == 422 and "chat_template_kwargs" in answer.json()["error"], answer.json()
        assert message in answer.json()["error"]


def test_flan_t5_job_learns_conversations_and_replies(api, models, tmp_path):
    """An encoder-decoder learns the queue's conversations as (input, target) pairs, as `train`
    maps a conversation file; a plain text has no target and is left out. Its reply is the
    downloaded adapter's, generated by the engine's own Seq2SeqModel."""
    words = ["cat", "house", "river", "green", "apple", "stone"]
    rows = [{"messages": [{"role": "user", "content": f"Spell {w} backwards."},
                          {"role": "assistant", "content": w[::-1]}]} for w in words]
    doc = upload(api.client, "spelling.jsonl", jsonl(rows + [{"text": "a text with no target"}]))
    job = setup_job(api.client, {"model": "t5", "documents": [doc["id"]],
                                 "options": {"epochs": 2, "lr": 1e-2, "batch_size": 3,
                                             "gradient_checkpointing": True}})
    assert job["kind"] == "seq2seq"
    job = api.client.wait_job(job["id"])
    assert job["state"] == "done" and job["metrics"]["records"] == len(rows), job
    assert job["metrics"]["steps"] == 4 and job["metrics"]["loss"] is not None
    status = api.client.get("/fine-tuning/status").json()
    assert status["adapter"]["id"] == job["adapter"] and status["adapter"]["kind"] == "seq2seq"
    reply = api.client.post("/fine-tuning/query", {"query": "Spell river backwards.",
                                                   "max_new_tokens": 8}).json()
    assert reply["adapter"] == job["adapter"]
    answer = api.client.post("/fine-tuning/query", {"query": "x", "chat_template_kwargs": {"a": 1}})
    assert answer.status == 422 and "an encoder-decoder" in answer.json()["error"]
    adapter = unzip(api.client.get(f"/fine-tuning/adapters/{job['adapter']}").body, tmp_path)
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
    from py_engine.train.seq2seq import Seq2SeqModel

    t5 = run_sync(Seq2SeqModel.load(models["t5"], adapter_dir=str(adapter), backend="numpy"))
    expected = run_sync(t5.generate("Spell river backwards.", max_new_tokens=8))
    assert reply["text"] == expected.text and reply["finish_reason"] == expected.finish_reason
    # labels are for classifiers
    answer = api.client.post("/fine-tuning/setup", {"model": "t5", "labels": ["a", "b"]})
    assert answer.status == 422 and "seq2seq model" in answer.json()["error"]
    # its records leave the queue the later tests export
    assert api.client.delete(f"/fine-tuning/documents/{doc['id']}").status == 200


def test_setup_as_a_form_with_files(api):
    body, content_type = multipart([("model", "tiny"), ("epochs", "1"), ("lr", "0.01"),
                                    ("labels", "neg,pos"), ("lora", '{"r": 4}')],
                                   [("file", "more.jsonl", labelled(16, 9))])
    answer = api.client.post("/fine-tuning/setup", body, content_type)
    assert answer.status == 202, answer
    job = answer.json()["job"]
    assert job["options"] == {"epochs": 1, "lr": 0.01} and job["labels"] == ["neg", "pos"]
    assert job["lora"] == {"r": 4}
    (doc,) = job["documents"]
    listed = {d["id"]: d for d in api.client.get("/fine-tuning/documents").json()["documents"]}
    assert listed[doc]["name"] == "more.jsonl" and listed[doc]["records"] == 16
    job = api.client.wait_job(job["id"])
    assert job["state"] == "done" and 1 <= job["metrics"]["records"] <= 16, job
    bad, content_type = multipart([("model", "tiny"), ("epochs", "many")],
                                  [("file", "more.jsonl", labelled(4, 10))])
    answer = api.client.post("/fine-tuning/setup", bad, content_type)
    assert answer.status == 422 and "epochs" in answer.json()["error"]
    for field in ("options", "lora"):     # a JSON object each
        for value in ("[1]", "{not json", "{\"lr\": NaN}"):
            bad, content_type = multipart([("model", "tiny"), (field, value)],
                                          [("file", "more.jsonl", labelled(4, 10))])
            answer = api.client.post("/fine-tuning/setup", bad, content_type)
            assert answer.status == 400 and f"{field} must be a JSON object" in \
                answer.json()["error"], (field, value)
    assert len(api.client.get("/fine-tuning/documents").json()["documents"]) == len(listed)


# --- jobs: one at a time, cancelled, failed ------------------------------------------------------

def test_jobs_run_one_at_a_time_and_a_cancelled_one_writes_nothing(api):
    upload(api.client, "first.jsonl", labelled(24, 12))
    first = api.client.wait_job(setup_job(api.client, {"model": "tiny",
                                                       "options": {"epochs": 1}})["id"])
    before = api.client.get("/fine-tuning/adapters").json()
    long = setup_job(api.client, {"model": "tiny", "options": {"epochs": 400}})
    short = setup_job(api.client, {"model": "tiny", "options": {"epochs": 1}})
    wait_running(api.client, long["id"])
    assert api.client.get(f"/fine-tuning/jobs/{short['id']}").json()["state"] == "queued"
    assert api.client.get("/fine-tuning/status").json()["queued_jobs"] == [short["id"]]
    answer = api.client.delete(f"/fine-tuning/jobs/{long['id']}")
    assert answer.status == 200
    long = api.client.wait_job(long["id"])
    short = api.client.wait_job(short["id"])
    assert long["state"] == "cancelled" and long["adapter"] is None and long["step"] > 0
    assert short["state"] == "done" and short["started"] >= long["finished"]
    after = api.client.get("/fine-tuning/adapters").json()
    assert [a["id"] for a in after["adapters"]] == \
        [a["id"] for a in before["adapters"]] + [short["adapter"]]
    assert api.client.delete(f"/fine-tuning/jobs/{long['id']}").status == 409
    old = first["adapter"]                              # not the current one: it can go
    assert api.client.delete(f"/fine-tuning/adapters/{old}").json() == {"deleted": old}
    assert old not in [a["id"] for a in api.client.get("/fine-tuning/adapters").json()["adapters"]]
    assert not api.data.adapter_dir(old).exists()
    assert api.client.get(f"/fine-tuning/adapters/{old}").status == 404
    current = api.client.delete(f"/fine-tuning/adapters/{short['adapter']}")
    assert current.status == 409 and "current adapter" in current.json()["error"]
    # a queued job cancelled before it starts never runs
    first = setup_job(api.client, {"model": "tiny", "options": {"epochs": 400}})
    second = setup_job(api.client, {"model": "tiny", "options": {"epochs": 1}})
    assert api.client.delete(f"/fine-tuning/jobs/{second['id']}").json()["state"] == "cancelled"
    assert api.client.delete(f"/fine-tuning/jobs/{first['id']}").status == 200
    assert api.client.wait_job(first["id"])["state"] == "cancelled"
    second = api.client.get(f"/fine-tuning/jobs/{second['id']}").json()
    assert second["started"] is None and second["state"] == "cancelled"


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_failed_and_crashed_jobs_keep_the_queue_and_the_last_good_adapter(api):
    status = trained(api.client)
    adapters = api.client.get("/fine-tuning/adapters").json()
    answer = api.client.post("/fine-tuning/query", {"query": "bad awful film"}).json()
    crashed = api.client.wait_job(setup_job(api.client, {"model": "broken"})["id"])
    diverged = api.client.wait_job(setup_job(api.client, {"model": "tiny", "options": {
        "lr": 1e9, "max_grad_norm": None, "epochs": 3}})["id"])
    for job in (crashed, diverged):
        assert job["state"] == "failed" and job["adapter"] is None
        assert "the last good adapter" in job["error"], job["error"]
    assert "diverged" in diverged["error"]
    now = api.client.get("/fine-tuning/status").json()
    assert now["adapter"] == status["adapter"] and now["queue"] == status["queue"]
    assert api.client.get("/fine-tuning/adapters").json() == adapters
    assert api.client.post("/fine-tuning/query", {"query": "bad awful film"}).json() == answer
    later = api.client.wait_job(setup_job(api.client, {"model": "tiny",
                                                       "options": {"epochs": 1}})["id"])
    assert later["state"] == "done"                       # the worker carries on


# --- the dataset export ------------------------------------------------------------------------

def test_export_is_py_engine_data_export(api, tmp_path, capsys):
    upload(api.client, "reviews.jsonl", labelled(48, 1))      # as earlier tests did, if run alone
    upload(api.client, "sums.jsonl", jsonl(CHATS))
    queue = api.data.queue_path
    cases = [({"format": "jsonl", "quality_filter": True, "deduplicate": True,
               "validation_split": 0.25, "seed": 2, "kind": "classification"},
              ["--format", "jsonl", "--quality", "--dedup", "--validation-split", "0.25",
               "--seed", "2", "--kind", "classification"]),
             ({"format": "messages", "include_system": False, "kind": "causal_lm"},
              ["--format", "messages", "--no-system", "--kind", "causal_lm"]),
             ({"format": "sharegpt", "system_prompt": "Answer in one line.", "kind": "causal_lm"},
              ["--format", "sharegpt", "--system-prompt", "Answer in one line.", "--kind",
               "causal_lm"])]
    for k, (body, options) in enumerate(cases):
        answer = api.client.post("/api/finetune/export", body)
        assert answer.status == 200, answer
        exported = answer.json()
        out = tmp_path / f"cli{k}"
        assert cli_main(["data", "export", "--queue", str(queue), "--out", str(out), *options]) == 0
        capsys.readouterr()
        written = {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".")}
        assert exported["files"] == written
    split = api.client.post("/api/finetune/export", cases[0][0]).json()
    assert set(split["counts"]) == {"train", "validation"} and split["stats"]["split"]
    plain = api.client.post("/api/finetune/export", {"format": "messages", "kind": "causal_lm"})
    rows = [json.loads(line) for line in plain.json()["files"]["data.jsonl"].splitlines()]
    assert len(rows) == len(CHATS) and all(r["messages"][0]["role"] == "user" for r in rows)
    prompted = [json.loads(line) for line in api.client.post(
        "/api/finetune/export", {"format": "messages", "kind": "causal_lm",
                                 "system_prompt": "Be brief."}).json()["files"]["data.jsonl"]
        .splitlines()]
    assert all(r["messages"][0] == {"role": "system", "content": "Be brief."} for r in prompted)


# --- bad requests --------------------------------------------------------------------------------

def raw(api, method, path, body, headers):
    """A request with headers exactly as given (Content-Length, Host, chunked bodies)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(api.url.rsplit(":", 1)[1].strip("/")))
    try:
        conn.putrequest(method, path, skip_host="Host" in headers,
                        skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        chunked = headers.get("Transfer-Encoding") == "chunked"
        conn.endheaders()
        try:
            if chunked:
                for part in body:
                    conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                conn.send(b"0\r\n\r\n")
            elif body:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass                          # the server answered and closed before the end
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_malformed_and_wrong_requests_get_one_line_errors(api, tmp_path):
    c = api.client
    jobs_before = c.get("/fine-tuning/jobs").json()
    cases = [
        (c.post("/fine-tuning/setup", b"{not json", "application/json"), 400, "not valid JSON"),
        (c.post("/fine-tuning/setup", b"[1, 2]", "application/json"), 400, "JSON object"),
        (c.post("/fine-tuning/setup", b"model=tiny", "text/plain"), 415, "application/json"),
        (c.post("/fine-tuning/setup", {"model": "nope"}), 404, "model must be one of"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "options": {"lr": -1}}), 422, "lr"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "options": {"mode": "full"}}), 422,
         "unknown training option"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "colour": 1}), 422, "unknown field"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "options": {"lr_scheduler_type": "step"}}),
         422, "lr_scheduler_type must be one of linear, cosine, cosine_with_restarts, polynomial"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "options": {
            "lr_scheduler_type": "warmup_stable_decay"}}), 422,
         "lr_scheduler_type warmup_stable_decay needs lr_scheduler_kwargs num_decay_steps"),
        (c.post("/fine-tuning/setup", {"model": "t5", "options": {"class_weights": [1, 2]}}),
         422, "unknown training option 'class_weights' for a seq2seq model"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "options": {"neftune_noise_alpha": 5}}),
         422, "unknown training option 'neftune_noise_alpha' for a classification model"),
        (c.post("/fine-tuning/setup", {"model": "chat", "options": {"gradient_checkpointing": 1}}),
         422, "gradient_checkpointing must be true or false, got 1"),
        (c.post("/fine-tuning/setup", {"model": "chat", "options": {"max_length": 100000}}), 422,
         "max_length 100000 is more than the 256 positions of the 'chat' model"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "documents": ["doc-999"]}), 404,
         "no document"),
        (c.post("/fine-tuning/setup", {"model": "tiny", "validation_split": 1.5}), 422,
         "validation_split"),
        (c.post("/fine-tuning/setup", {"model": "chat", "labels": ["a", "b"]}), 422,
         "labels are for classifiers"),
        (c.post("/fine-tuning/query", {}), 422, "query"),
        (c.post("/fine-tuning/query", {"query": "x" * 9000}), 413, "longer than"),
        (c.post("/fine-tuning/query", {"query": "x", "max_new_tokens": 0}), 422, "max_new_tokens"),
        (c.post("/fine-tuning/query", b"good", "text/plain"), 415, "application/json"),
        (c.post("/fine-tuning/query", b"x" * (70 << 10), "application/json"), 413, "limit"),
        (c.post("/api/finetune/export", {"format": "parquet"}), 422, "unknown dataset format"),
        (c.post("/api/finetune/export", {"quality_filter": "yes"}), 422, "boolean"),
        (c.post("/api/finetune/export", {"validation_split": 2}), 422, "validation_split"),
        (c.post("/api/finetune/export", {"include_system": False, "system_prompt": "x"}), 422,
         "system prompt"),
        (c.post("/api/finetune/export", {"kind": "images"}), 422, "kind"),
        (c.post("/fine-tuning/documents", {"text": "x"}), 415, "multipart/form-data"),
        (c.post("/fine-tuning/documents", b"text", "application/octet-stream"), 422, "?name="),
        (c.upload("/fine-tuning/documents", [], fields=[("note", "x")]), 422, "no file"),
        (c.upload("/fine-tuning/documents", [("file", "empty.txt", b"")]), 422, "empty"),
        (c.upload("/fine-tuning/documents", [("file", "x.bin", bytes(range(256)) * 8)]), 422,
         "x.bin"),
        (c.upload("/fine-tuning/documents", [("file", f"{k}.txt", b"words") for k in range(5)]),
         413, "at most 4 files"),
        (c.upload("/fine-tuning/documents", [("file", "big.txt", b"a " * (200 << 10))]), 413,
         "limit"),
        (c.get("/fine-tuning/jobs/job-999"), 404, "no job"),
        (c.get("/fine-tuning/jobs/..%2F..%2Fadmin_token"), 404, "no endpoint"),
        (c.get("/fine-tuning/adapters/..%2Fadmin_token"), 404, "no endpoint"),
        (c.get("/fine-tuning/adapters/.."), 404, "no adapter"),
        (c.delete("/fine-tuning/adapters/admin_token"), 404, "no adapter"),
        (c.delete("/fine-tuning/documents/..%5C..%5Cqueue.sqlite"), 404, "no document"),
        (c.get("/fine-tuning/adapters/adapter-999"), 404, "no adapter"),
        (c.delete("/fine-tuning/documents/doc-999"), 404, "no document"),
        (c.get("/fine-tuning/events?job=job-999"), 404, "no job"),
        (c.get("/fine-tuning/nothing"), 404, "no endpoint"),
        (c.request("PUT", "/fine-tuning/status"), 405, "not allowed"),
    ]
    for k, (answer, status, words) in enumerate(cases):
        assert answer.status == status, (k, answer)
        message = answer.json()["error"]
        assert words in message and "\n" not in message, (k, message)
    assert raw(api, "POST", "/fine-tuning/setup", b"{}", {
        "Content-Type": "application/json", "Content-Length": str(10 ** 9),
        "Authorization": f"Bearer {api.token}"})[0] == 413
    status, answer = raw(api, "POST", "/fine-tuning/documents?name=big.txt",
                         [b"word " * 20000] * 8, {"Content-Type": "application/octet-stream",
                                                   "Transfer-Encoding": "chunked",
                                                   "Authorization": f"Bearer {api.token}"})
    assert status == 413 and "limit" in answer["error"]
    status, answer = raw(api, "GET", "/fine-tuning/status", b"", {"Host": "evil.example:8600"})
    assert status == 403 and "127.0.0.1" in answer["error"]
    cross_site = c.post("/fine-tuning/query", b"query=good", "application/x-www-form-urlencoded",
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status == 403 and "web pages" in cross_site.json()["error"]
    assert c.get("/fine-tuning/jobs").json() == jobs_before        # nothing was started
    # a file name is a name, never a path
    doc = upload(c, "../../../../tmp/escaped.txt", b"The harbour wall was rebuilt in stone.")
    assert doc["name"] == "escaped.txt"
    assert not (tmp_path.parents[2] / "tmp" / "escaped.txt").exists()
    assert c.delete(f"/fine-tuning/documents/{doc['id']}").json()["records_removed"] == 1
    again = upload(c, "escaped.txt", b"The harbour wall was rebuilt in stone.")
    assert int(again["id"].split("-")[1]) > int(doc["id"].split("-")[1])     # ids never reused


# --- load while training -------------------------------------------------------------------------

def test_many_status_and_query_requests_while_a_job_trains(api):
    trained(api.client)
    job = setup_job(api.client, {"model": "tiny", "options": {"epochs": 400}})
    step = wait_running(api.client, job["id"])["step"]
    report = load(api.url, api.token, [("GET", "/fine-tuning/status", None),
                                       ("POST", "/fine-tuning/query", {"query": "good film"})],
                  threads=8, each=20)
    during = api.client.get(f"/fine-tuning/jobs/{job['id']}").json()
    api.client.delete(f"/fine-tuning/jobs/{job['id']}")
    assert report["failed"] == [] and report["requests"] == 160
    assert during["state"] == "running" and during["step"] > step     # it trained meanwhile
    assert api.client.wait_job(job["id"])["state"] == "cancelled"


# --- a restart -----------------------------------------------------------------------------------

def test_a_restart_keeps_the_adapter_token_and_jobs(models, tmp_path):
    data = tmp_path / "data"
    with ApiServer(data, models, backend="numpy") as server:
        client = Client(server.url, server.token)
        upload(client, "reviews.jsonl", labelled(32, 4))
        done = client.wait_job(setup_job(client, {"model": "tiny",
                                                  "options": {"epochs": 2}})["id"])
        answer = client.post("/fine-tuning/query", {"query": "awful bad film"}).json()
        running = setup_job(client, {"model": "tiny", "options": {"epochs": 400}})
        wait_running(client, running["id"])
        waiting = setup_job(client, {"model": "broken"})      # runs after the restart, fails
        token = server.token
    with ApiServer(data, models, backend="numpy") as server:
        client = Client(server.url, server.token)
        assert server.token == token
        status = client.get("/fine-tuning/status").json()
        assert status["trained"] and status["adapter"]["id"] == done["adapter"]
        interrupted = client.get(f"/fine-tuning/jobs/{running['id']}").json()
        assert interrupted["state"] == "interrupted" and interrupted["adapter"] is None
        assert client.post("/fine-tuning/query", {"query": "awful bad film"}).json() == answer
        assert status["queue"]["total"] == 32
        waited = client.wait_job(waiting["id"])                       # waiting jobs run
        assert waited["state"] == "failed" and waited["started"] > interrupted["finished"]
    assert sorted(p.name for p in (data / "adapters").iterdir()) == [done["adapter"]]
    with ApiServer(data, {"chat": models["chat"]}, backend="numpy") as server:
        answer = Client(server.url).post("/fine-tuning/query", {"query": "good"})
        assert answer.status == 409 and "--model tiny=DIR" in answer.json()["error"]


GROUPS = {"praise": ["good", "great", "fine"], "complaint": ["bad", "awful", "not"],
          "craft": ["actor", "scene", "plot"]}


def tagged(n, seed):
    """Texts with the words of any of GROUPS (two of each group present) among fillers, labelled
    with the list of the groups present (maybe none): a multi-label dataset."""
    import random

    rng = random.Random(seed)
    filler = "the film was movie really very and a it is this that of to in".split()
    rows = []
    for _ in range(n):
        present = sorted(g for g in GROUPS if rng.random() < 0.5)
        words = rng.sample(filler, 3) + [w for g in present for w in rng.sample(GROUPS[g], 2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": present})
    return rows


def test_a_multi_label_job_learns_the_labels_that_apply(models, tmp_path):
    """problem_type multi_label_classification: records whose label is a list of names (none
    among them too) train a classifier with a sigmoid per label; a query answers the names
    over 0.5 and each label's probability, as the downloaded adapter does in TextClassifier
    (which reads it as multi-label), and again after a restart; the queue counts each name.
    Refused by name: a kind of head a job does not train, problem_type for a chat model,
    label smoothing beside it, and a single-label job on multi-label records alone."""
    data = tmp_path / "data"
    rows = tagged(64, 5)
    with ApiServer(data, {"tiny": models["tiny"], "chat": models["chat"]}, backend="numpy",
                   limits=LIMITS) as server:
        client = Client(server.url, server.token)
        doc = upload(client, "tags.jsonl", jsonl(rows))
        assert doc["records"] == 64 and doc["added"] == len({json.dumps(r) for r in rows})
        stats = client.get("/fine-tuning/status").json()["queue"]["by_label"]
        assert stats == {g: sum(g in r["label"] for r in {json.dumps(r): r for r in rows}.values())
                         for g in GROUPS}
        for body, words in (({"problem_type": "regression"}, "problem_type must be one of"),
                            ({"model": "chat", "problem_type": "multi_label_classification"},
                             "problem_type is for classifiers"),
                            ({"problem_type": "multi_label_classification",
                              "options": {"label_smoothing": 0.1}}, "label_smoothing is a single")):
            answer = client.post("/fine-tuning/setup", dict({"model": "tiny"}, **body))
            assert answer.status == 422 and words in answer.json()["error"], answer
        single = client.wait_job(setup_job(client, {"model": "tiny", "labels": ["praise", "craft"]})["id"])
        assert single["state"] == "failed" and "this classifier learns one label per text" in \
            single["error"], single
        job = client.wait_job(setup_job(client, {
            "model": "tiny", "problem_type": "multi_label_classification", "validation_split": 0.25,
            "options": {"epochs": 8, "lr": 5e-2, "batch_size": 8, "seed": 1}})["id"])
        assert job["state"] == "done" and job["problem_type"] == "multi_label_classification", job
        held = job["metrics"]["validation"]["examples"]       # a quarter, split label set by set
        assert 8 <= held <= 20 and job["metrics"]["records"] + held == doc["added"], job["metrics"]
        status = client.get("/fine-tuning/status").json()
        assert status["adapter"]["labels"] == sorted(GROUPS)
        assert status["adapter"]["problem_type"] == "multi_label_classification"
        text = "good great actor scene the film"
        answer = client.post("/fine-tuning/query", {"query": text}).json()
        probs = answer["probs"]
        assert set(probs) == set(GROUPS) and all(0 < p < 1 for p in probs.values())
        assert answer["labels"] == [g for g in sorted(GROUPS) if probs[g] > 0.5]
        assert answer["labels"] == ["craft", "praise"], answer           # it learned the groups
        assert "label" not in answer
        adapter = unzip(client.get(f"/fine-tuning/adapters/{job['adapter']}").body, tmp_path)
    from py_engine.train.classifier import TextClassifier

    clf = run_sync(TextClassifier.load(models["tiny"], str(adapter), backend="numpy"))
    assert clf.problem_type == "multi_label_classification"
    (theirs,) = run_sync(clf.predict([text]))
    assert theirs == pytest.approx(probs, rel=1e-9, abs=1e-12)
    with ApiServer(data, {"tiny": models["tiny"]}, backend="numpy") as server:
        again = Client(server.url, server.token).post("/fine-tuning/query", {"query": text}).json()
        assert again == answer


# --- the command ---------------------------------------------------------------------------------

def test_a_lost_gpu_is_opened_anew_for_the_next_query_and_job(models, tmp_path):
    """The server's GPU device goes away (Device.destroy(): what a driver reset or a GPU fault
    does; a lost device never works again): the next query opens the GPU anew and answers as
    before, and the next job trains on the new device."""
    with ApiServer(tmp_path / "data", models, backend="gpu", limits=LIMITS) as server:
        client = Client(server.url, server.token)
        upload(client, "reviews.jsonl", labelled(24, 11))
        job = client.wait_job(setup_job(client, {"model": "tiny", "options": {"epochs": 1}})["id"])
        assert job["state"] == "done", job
        before = client.post("/fine-tuning/query", {"query": "great good fine film"}).json()
        lost = server.engine.device
        lost.destroy()
        after = client.post("/fine-tuning/query", {"query": "great good fine film"})
        assert after.status == 200, after
        assert after.json()["label"] == before["label"]
        assert after.json()["probs"] == pytest.approx(before["probs"], rel=1e-4)
        assert server.engine.device is not lost and server.engine.device.lost is None
        assert server.engine.backend == "gpu"
        again = client.wait_job(setup_job(client, {"model": "tiny", "options": {"epochs": 1}})["id"])
        assert again["state"] == "done", again


def test_py_engine_serve_api_command(models, tmp_path):
    def command(*args):
        return [sys.executable, "-m", "py_engine", "serve-api", *map(str, args)]

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    refused = [(["--host", "0.0.0.0"], "loopback only"),
               (["--model", f"x={tmp_path}"], "config.json"),
               (["--data-dir", tmp_path / "taken", "--model", f"tiny={models['tiny']}"],
                "not the API's")]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for args, words in refused:
        done = subprocess.run(command(*args), capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    data = tmp_path / "data"
    server = subprocess.Popen(command("--data-dir", data, "--model", f"tiny={models['tiny']}",
                                      "--port", 0, "--backend", "numpy"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = server.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))   # any free one
        assert port != 0 and str(data / "admin_token") in line, line
        token = (data / "admin_token").read_text().strip()
        client = Client(f"http://127.0.0.1:{port}/", token)
        for _ in range(200):
            try:
                status = client.get("/fine-tuning/status")
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        assert status.status == 200 and status.json()["models"] == ["tiny"]
        assert client.post("/api/finetune/export", {}, token="wrong").status == 403
        upload(client, "reviews.jsonl", labelled(32, 5))
        done = client.wait_job(setup_job(client, {"options": {"epochs": 1}})["id"])
        running = setup_job(client, {"options": {"epochs": 400}})
        wait_running(client, running["id"])
        server.kill()                     # a crash in the middle of a job
        server.wait(30)
    finally:
        server.kill()
        server.wait(30)
    with ApiServer(data, models, backend="numpy") as api:
        client = Client(api.url, api.token)
        status = client.get("/fine-tuning/status").json()
        assert status["adapter"]["id"] == done["adapter"] and status["queue"]["total"] == 32
        assert client.get(f"/fine-tuning/jobs/{running['id']}").json()["state"] == "interrupted"
        assert client.post("/fine-tuning/query", {"query": "good"}).status == 200
