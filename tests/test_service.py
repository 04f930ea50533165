"""The engine service end to end on the host (NumPy backend, the tiny BERT and tiny chat
checkpoints, an SQLite queue, a directory of states): imports land in the queue, a forced slice
trains, a poisoned import is rolled back (and says so), a chosen snapshot is restored, a new
service over the same queue and states after a "reload" carries on where the old one was, a
correction changes the next prediction after one forced slice, and a chat streams, is logged
and becomes a training record. Errors answer in one line with their kind."""

import asyncio
import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import peft_oracle as po
from service_calls import call
from t5_tokenizer import t5_dir
from tiny_chat import tiny_chat_dir
from py_engine.app.learner import LearnerConfig
from py_engine.app.scheduler import SchedulerConfig
from py_engine.app.service import EngineService
from py_engine.app.working_set import held_out
from py_engine.data.record import Record
from py_engine.gpu import SoftwareAdapterWarning, open_device
from py_engine.train.config import GuardConfig
from event_loop import run as run_async
from test_trainer import sentiment as trainer_sentiment

def sentiment(n, seed, flip=False):
    """test_trainer's sentiment texts as records to import; flip: every label the wrong one."""
    other = {"pos": "neg", "neg": "pos"}
    return [{"text": e.text, "label": other[e.label] if flip else e.label}
            for e in trainer_sentiment(n, seed)]


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def files_of(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp("service")
    return {"bert": files_of(po.tiny_bert_dir(base / "bert", seed=3)),
            "chat": files_of(tiny_chat_dir(base / "chat", family="qwen2")),
            "t5": files_of(t5_dir(base / "t5")[0])}


class Events(list):
    def of(self, kind):
        return [e for e in self if e["event"] == kind]


def service(tmp_path, events, tolerance=0.1, **learner):
    config = LearnerConfig(save_every_s=0.0, guard=GuardConfig(keep=4, tolerance=tolerance),
                           train=dict({"lr": 1e-2, "epochs": 4}, **learner))
    return EngineService(queue=str(tmp_path / "queue.sqlite"), states=str(tmp_path / "states"),
                         emit=events.append, backend="numpy", learner=config,
                         scheduler=SchedulerConfig(idle_fraction=1.0))


def trainable(svc):
    values = run_async(svc.model.runtime.trainable_values())
    return {n: np.asarray(v, np.float64) for n, (_, v) in values.items()}


def test_a_classifier_learns_rolls_back_restores_and_reloads(tmp_path, checkpoints):
    events = Events()
    svc = service(tmp_path, events, tolerance=0.05)
    summary = call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
                   labels=["neg", "pos"])
    assert summary["kind"] == "classification" and summary["labels"] == ["neg", "pos"]
    assert summary["restored"] is False and summary["trainable"] > 0
    assert [e["done"] for e in events.of("progress")] == [0, 1, 3]

    # imports land in the queue, cleaned, with what they produced
    imported = call(svc, "import_text", name="reviews.jsonl", data=jsonl(sentiment(160, 1)))
    assert imported["records"] == 160 and imported["added"] + imported["duplicates"] == 160
    assert imported["examples"][0]["kind"] == "classification"
    queued = run_async(svc.status())["queue"]
    assert queued["total"] == imported["added"] and set(queued["by_label"]) == {"neg", "pos"}

    # a forced slice advances training; a second one takes up the rest of the generation
    before = trainable(svc)
    result = call(svc, "force_slice", budget_ms=60_000)
    assert result["ran"] and result["steps"] > 0 and result["trainer"]["step"] == result["steps"]
    steps = events.of("step")
    assert len(steps) == result["steps"] and all(np.isfinite(e["loss"]) for e in steps)
    assert any(np.abs(trainable(svc)[n] - before[n]).max() > 0 for n in before)
    status = run_async(svc.status())
    assert status["trainer"]["data"]["validation"] >= 8        # one in ten, by content hash
    held = [r for r in sentiment(160, 1)
            if held_out(Record("classification", "text", text=r["text"], label=r["label"]))]
    assert held and len(status["snapshots"]) >= 2 and status["history"]
    learned = call(svc, "predict", text="good great fine")
    assert learned["label"] == "pos" and learned["probs"]["pos"] > 0.6

    # everything learned was acknowledged once saved: the queue keeps only the held-out records
    queued = run_async(svc.status())["queue"]
    assert queued["total"] == status["trainer"]["data"]["validation"] + status["trainer"]["data"]["training"]

    # a poisoned import (every label flipped) makes the held-out loss worse: rolled back
    call(svc, "import_text", name="poison.jsonl", data=jsonl(sentiment(120, 2, flip=True)))
    for _ in range(3):
        call(svc, "force_slice", budget_ms=60_000)
        if events.of("rollback"):
            break
    rollback = events.of("rollback")[0]
    assert "worse than" in rollback["reason"] and rollback["to_step"] < rollback["step"]
    assert run_async(svc.status())["rollbacks"][0]["reason"] == rollback["reason"]
    assert call(svc, "predict", text="good great fine")["label"] == "pos"

    # the rollback button: a chosen snapshot comes back, weights and all
    listed = call(svc, "snapshots")
    chosen = listed[0]
    weights = run_async(svc.learner.trainer.runtime.snapshot_values(
        svc.learner.trainer.guard.ring.find(chosen["index"]).handle))
    restored = call(svc, "restore_snapshot", index=chosen["index"])
    assert restored["index"] == chosen["index"] and events.of("restore")
    now = trainable(svc)
    for name, (_, w, _, _) in weights["tensors"].items():
        assert np.array_equal(now[name], np.asarray(w, np.float64)), name
    with pytest.raises(AssertionError, match="no snapshot 999"):
        call(svc, "restore_snapshot", index=999)

    # a reload: a new service over the same queue and states puts everything back
    saved = call(svc, "save")
    assert saved["saved"]
    state = {"weights": trainable(svc), "status": run_async(svc.status()),
             "optimizer": run_async(svc.model.runtime.optimizer_state())}
    svc.close()
    events2 = Events()
    svc2 = service(tmp_path, events2, tolerance=0.05)
    summary = call(svc2, "load_model", source="files", name="tiny", files=checkpoints["bert"],
                   labels=["neg", "pos"])
    assert summary["restored"] is True and summary["step"] == state["status"]["trainer"]["step"]
    for name, value in trainable(svc2).items():
        assert np.array_equal(value, state["weights"][name]), name
    optimizer = run_async(svc2.model.runtime.optimizer_state())
    assert optimizer["step"] == state["optimizer"]["step"]
    for name, m in optimizer["m"].items():
        assert np.array_equal(np.asarray(m), np.asarray(state["optimizer"]["m"][name])), name
    status2 = run_async(svc2.status())
    for key in ("snapshots", "rollbacks", "history"):
        assert json.dumps(status2[key], sort_keys=True) == json.dumps(state["status"][key],
                                                                       sort_keys=True), key
    assert status2["trainer"]["data"] == state["status"]["trainer"]["data"]
    assert status2["queue"]["total"] == state["status"]["queue"]["total"]
    assert call(svc2, "force_slice", budget_ms=60_000)["ran"]          # and it trains on
    svc2.close()


def test_a_correction_changes_the_next_prediction_after_one_forced_slice(tmp_path, checkpoints):
    """Texts of a pattern the imports never labelled (actors and scenes), corrected one by one
    to one label: after each correction and one forced slice, the text gets that label."""
    events = Events()
    svc = service(tmp_path, events)
    call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         labels=["neg", "pos"])
    call(svc, "import_text", name="reviews.jsonl", data=jsonl(sentiment(64, 5)))
    call(svc, "force_slice", budget_ms=60_000)
    texts = ["the actor in this scene", "a scene and an actor", "this actor is in a scene",
             "the scene of the actor", "an actor in the scene of it"]
    wanted = "neg" if call(svc, "predict", text=texts[0])["label"] == "pos" else "pos"
    for text in texts:
        before = call(svc, "predict", text=text)
        queued = call(svc, "correct", text=text, label=wanted)
        assert queued["queued"] and isinstance(queued["id"], int)
        assert call(svc, "force_slice", budget_ms=60_000)["steps"] > 0
        after = call(svc, "predict", text=text)
        assert after["label"] == wanted, (text, before, after, events.of("rollback"))
        assert after["probs"][wanted] > before["probs"][wanted] or before["label"] == wanted
    stats = run_async(svc.status())["queue"]
    assert 300 not in stats["by_priority"]               # corrections learned, then consumed
    reply = run_async(svc.call("correct", {"text": "x", "label": "maybe"}))
    assert reply["error"]["kind"] == "user" and "not among" in reply["error"]["message"]
    svc.close()


def test_chat_streams_is_logged_and_becomes_a_training_record(tmp_path, checkpoints):
    events = Events()
    svc = service(tmp_path, events)
    summary = call(svc, "load_model", source="files", name="tiny-chat", files=checkpoints["chat"])
    assert summary["kind"] == "causal_lm" and summary["thinking"] is False    # ChatML: no switch
    reply = call(svc, "chat", conversation_id="c1", message="Hello! How are you today?",
                 max_new_tokens=12)
    tokens = [e for e in events.of("token") if e["request"] == "c1"]
    assert tokens and "".join(e["text"] for e in tokens) == reply["text"]
    assert reply["finish_reason"] in ("eos", "length", "stop") and reply["logged"]
    logged = run_async(svc.chat_log.messages("c1"))
    assert [m["role"] for m in logged] == ["user", "assistant"]
    assert logged[1]["content"] == reply["text"]
    stats = run_async(svc.status())["queue"]
    assert stats["by_source"] == {"chat": 1} and stats["by_kind"] == {"causal_lm": 1}
    second = call(svc, "chat", conversation_id="c1", message="What is the capital of France?",
                  log=False, max_new_tokens=8)
    assert not second["logged"] and len(run_async(svc.chat_log.messages("c1"))) == 2
    # text imports train the chat model; the reply to the same prompt follows the weights
    corpus = ("What is the capital of France? The capital of France is Paris.\n\n" * 3).encode()
    call(svc, "import_text", name="facts.md", data=corpus)
    result = call(svc, "force_slice", budget_ms=60_000)
    assert result["ran"] and result["trainer"]["step"] > 0
    reply = run_async(svc.call("predict", {"text": "hi"}))
    assert reply["error"]["kind"] == "user" and "classifier" in reply["error"]["message"]
    svc.close()


def test_a_thinking_switch_reaches_the_chat_template(tmp_path, checkpoints):
    """A chat template with Qwen3's enable_thinking: the summary says so (the page shows its
    switch) and chat's template_args reach the template, as generate's do; names the template
    cannot take are refused as the user's error."""
    from chat_template_fixtures import model_template

    files = dict(checkpoints["chat"])
    config = json.loads(bytes(files["tokenizer_config.json"]))
    files["tokenizer_config.json"] = json.dumps(dict(config, chat_template=model_template("qwen-3"))).encode()
    svc = service(tmp_path, Events())
    assert call(svc, "load_model", source="files", name="tiny-qwen3", files=files)["thinking"] is True
    off = {"enable_thinking": False}
    replies = [call(svc, "chat", conversation_id=f"c{k}", message="Hello!", max_new_tokens=8,
                    log=False, template_args=args) for k, args in enumerate((None, off))]
    prompt = [{"role": "user", "content": "Hello!"}]
    for reply, args in zip(replies, (None, off)):
        expected = run_async(svc.model.model.generate(prompt, max_new_tokens=8, template_args=args))
        assert reply["text"] == expected.text
    model = svc.model.model
    assert model.prompt_ids(prompt, template_args=off) != model.prompt_ids(prompt)
    # a conversation longer than the model's 256 positions: the reply sees its latest turns,
    # cut before a user message, and says how many it left out; the log keeps them all
    long = "Write a short poem about the sea: waves roll in, waves roll out. " * 2
    replies = [call(svc, "chat", conversation_id="long", message=f"{k}: {long}", max_new_tokens=16,
                    template_args=off) for k in range(4)]
    assert replies[0]["dropped"] == 0 and replies[-1]["dropped"] >= 2, replies
    history = svc.conversations["long"][:-1]
    assert len(history) == 7 and history[-1]["content"].startswith("3: ")
    kept, ids = model.latest_turns(history, 16, off)
    assert ids == model.prompt_ids(kept, template_args=off)
    assert len(history) - len(kept) == replies[-1]["dropped"] and kept[0]["role"] == "user"
    assert len(model.prompt_ids(kept, template_args=off)) + 16 <= 256
    assert len(model.prompt_ids(history[len(history) - len(kept) - 2:], template_args=off)) + 16 > 256
    expected = run_async(model.generate(kept, max_new_tokens=16, template_args=off))
    assert replies[-1]["text"] == expected.text
    answer = run_async(svc.call("chat", {"conversation_id": "c9", "message": "Hi",
                                         "template_args": {"messages": []}}))
    assert answer["error"]["kind"] == "user" and "set by generate itself" in answer["error"]["message"]
    svc.close()


def test_an_encoder_decoder_chats_and_learns_its_logged_conversations(tmp_path, checkpoints):
    """FLAN-T5 in the service: a chat's prompt is the conversation as the input text (the
    mapping its training pairs use), the logged conversation is a record it learns; a plain
    text import is not (it has no target)."""
    from py_engine.data.seq2seq import conversation_input

    events = Events()
    svc = service(tmp_path, events)
    summary = call(svc, "load_model", source="files", name="tiny-t5", files=checkpoints["t5"])
    assert summary["kind"] == "seq2seq" and summary["family"] == "t5"
    first = call(svc, "chat", conversation_id="c1", message="Spell cat backwards.",
                 max_new_tokens=6)
    second = call(svc, "chat", conversation_id="c1", message="And dog?", max_new_tokens=6)
    prompt = [{"role": "user", "content": "Spell cat backwards."},
              {"role": "assistant", "content": first["text"]},
              {"role": "user", "content": "And dog?"}]
    assert conversation_input(prompt) == "user: Spell cat backwards.\nassistant: " + \
        first["text"] + "\nuser: And dog?"
    expected = run_async(svc.model.model.generate(conversation_input(prompt), max_new_tokens=6))
    assert second["text"] == expected.text and second["logged"]
    # a conversation longer than its positions: the input is its latest turns that fit
    t5 = svc.model.model
    limit = t5.checkpoint.config.max_position_embeddings
    words = "the river stone house apple green cat " * (limit // 40)
    replies = [call(svc, "chat", conversation_id="long", message=f"{k}: {words}", max_new_tokens=6, log=False)
               for k in range(4)]
    assert replies[0]["dropped"] == 0 and replies[-1]["dropped"] >= 2, replies
    history = svc.conversations["long"][:-1]
    kept = history[replies[-1]["dropped"]:]
    assert kept[0]["role"] == "user" and len(t5.prompt_ids(conversation_input(kept))) + 6 <= limit
    expected = run_async(t5.generate(conversation_input(kept), max_new_tokens=6))
    assert replies[-1]["text"] == expected.text
    stats = run_async(svc.status())["queue"]
    assert stats["by_kind"] == {"causal_lm": 2}          # an example per reply
    call(svc, "import_text", name="notes.md", data=b"Plain notes with no answer to learn.\n")
    records = run_async(_records(svc))
    (text_record,) = [r for r in records if r.text is not None]
    assert "no target" in svc.model.unusable(text_record)
    chats = [r for r in records if r.messages is not None]
    assert len(chats) == 2 and all(svc.model.unusable(r) is None for r in chats)
    # one record in ten is held out for validation by its content's hash, and the content is
    # the model's replies: on another CPU (other BLAS kernels) a tiny random model's greedy
    # replies may differ, and then every logged chat can be held out (nothing to train on)
    for turn in range(20):
        if not all(held_out(r) for r in chats):
            break
        call(svc, "chat", conversation_id="more", message=f"Spell {turn} backwards.", max_new_tokens=6)
        chats = [r for r in run_async(_records(svc)) if r.messages is not None]
    assert not all(held_out(r) for r in chats), "every logged chat is held out for validation"
    before = trainable(svc)
    result = call(svc, "force_slice", budget_ms=60_000)
    # the slice's story in the failure: its steps, the trainer's idle reason, batches, events
    story = (result, events.of("slice"), events.of("rollback"))
    assert result["ran"] and result["trainer"]["step"] > 0, story
    after = trainable(svc)
    assert any(not np.array_equal(before[n], after[n]) for n in before)
    svc.close()


async def _records(svc):
    return [r async for r in svc.queue.records()]


def test_adapters_and_datasets_go_out_and_back_in(tmp_path, checkpoints):
    events = Events()
    svc = service(tmp_path, events)
    call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         labels=["neg", "pos"])
    call(svc, "import_text", name="a.jsonl", data=jsonl(sentiment(40, 7)))
    exported = call(svc, "export_dataset", format="jsonl")
    assert sum(exported["counts"].values()) == 40
    back = call(svc, "import_dataset", format="jsonl", name="back.jsonl",
                data=exported["files"]["data.jsonl"])
    assert back["duplicates"] == 40 and back["added"] == 0
    call(svc, "force_slice", budget_ms=60_000)
    adapter = call(svc, "export_adapter")["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json",
            "head_config.json"} <= set(adapter)
    trained = trainable(svc)
    svc.close()

    (tmp_path / "other").mkdir()
    other = service(tmp_path / "other", Events())
    call(other, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         labels=["neg", "pos"])
    call(other, "import_adapter", files=adapter)
    for name, value in trainable(other).items():
        assert np.array_equal(value, trained[name]), name
    wrong = dict(adapter, **{"labels.json": b'["a", "b"]'})
    reply = run_async(other.call("import_adapter", {"files": wrong}))
    assert reply["error"]["kind"] == "user" and "labels" in reply["error"]["message"]
    for method, params, words in (("load_model", {"files": {}}, "needs the model's files"),
                                  ("import_text", {"name": "x.txt", "data": b"\x00\x01PDF"}, "x.txt"),
                                  ("configure", {"speed": 3}, "unknown option"),
                                  ("nothing", {}, "unknown method")):
        reply = run_async(other.call(method, params))
        assert reply["error"]["kind"] == "user" and words in reply["error"]["message"], reply
    # every option is checked before any is applied; times must be finite (Python's json
    # reads NaN and Infinity, so the HTTP API can pass them)
    before = call(other, "configure")
    for options, words in (({"slice_ms": 100, "save_every_s": float("nan")},
                            "save_every_s must be a finite number of seconds >= 0, got nan"),
                           ({"refresh_s": 1, "poll_s": float("inf")},
                            "poll_s must be a finite number >= 0, got inf")):
        reply = run_async(other.call("configure", options))
        assert reply["error"]["kind"] == "user" and words in reply["error"]["message"], reply
    assert call(other, "configure") == before
    other.close()


def test_an_exported_adapter_is_what_the_next_save_keeps(tmp_path, checkpoints):
    """A slice can end inside an optimizer step (between micro-batches); a save finishes it.
    The export finishes it too, so that the weights go out as they will be kept."""
    svc = service(tmp_path, Events(), grad_accum=2, batch_size=4)
    call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         labels=["neg", "pos"])
    call(svc, "import_text", name="a.jsonl", data=jsonl(sentiment(40, 7)))
    call(svc, "force_slice", budget_ms=1)
    trainer = svc.learner.trainer
    for checks in range(1, 20):               # end a slice after `checks` of its stop checks
        left = iter(range(checks))
        run_async(trainer.run(stop=lambda: next(left, None) is None))
        if trainer.mid_step:
            break
    assert trainer.mid_step and not trainer.done
    step = trainer.progress.step
    exported = call(svc, "export_adapter")["files"]
    assert trainer.progress.step == step + 1 and not trainer.mid_step and svc.learner.unsaved
    call(svc, "save")
    assert trainer.progress.step == step + 1 and not svc.learner.unsaved
    assert call(svc, "export_adapter")["files"] == exported
    svc.close()


def test_status_is_pushed_while_things_change_at_most_four_times_a_second(tmp_path, checkpoints):
    import time

    events = Events()
    times = []
    svc = service(tmp_path, events)
    svc.emit = lambda event: (events.append(event), times.append((event["event"], time.monotonic())))

    async def session():
        await svc.call("load_model", {"files": checkpoints["bert"], "labels": ["neg", "pos"]})
        for k in range(6):
            await svc.call("import_text", {"name": f"{k}.jsonl", "data": jsonl(sentiment(8, k))})
            await svc.call("idle", {"deadline_ms": 40})
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)

    run_async(session())
    pushed = [e for e in events if e["event"] == "status"]
    at = [t for kind, t in times if kind == "status"]
    assert len(pushed) >= 2 and min(b - a for a, b in zip(at, at[1:])) >= 0.25 - 1e-3
    last = pushed[-1]
    assert last["queue"]["total"] > 0 and last["scheduler"]["slices"] >= 1
    assert set(last) >= {"model", "scheduler", "trainer", "queue", "snapshots", "rollbacks",
                         "history"}
    svc.close()


def test_the_files_written_for_a_model_go_with_it(tmp_path, checkpoints, monkeypatch):
    """In the browser the checkpoint's files are held in memory: each model written for a load
    is removed when another replaces it or the service closes, the adapter's once read, and
    nothing stays behind a load that fails."""
    import tempfile

    written = tmp_path / "written"
    written.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(written))
    left = lambda: sorted(p.name for p in written.iterdir())
    svc = service(tmp_path, Events())
    call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         labels=["neg", "pos"])
    first = svc.model.directory
    assert left() == [Path(first).name] and (Path(first) / "config.json").is_file()
    adapter = call(svc, "export_adapter")["files"]
    call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         adapter=adapter)
    assert not Path(first).exists() and left() == [Path(svc.model.directory).name]
    assert call(svc, "predict", text="loved it")    # the model still reads what it needs
    for files, words in ((dict(checkpoints["bert"], **{"../x": b""}), "relative path"),
                         (checkpoints["bert"], "labels")):
        reply = run_async(svc.call("load_model", {"files": files, "labels": ["a", "b"],
                                                  "adapter": adapter}))
        assert reply["error"]["kind"] == "user" and words in reply["error"]["message"], reply
        assert left() == [], "a failed load keeps no files (the model it replaced is unloaded)"
    call(svc, "load_model", source="files", name="tiny", files=checkpoints["bert"],
         labels=["neg", "pos"])
    assert len(left()) == 1
    svc.close()
    assert left() == []


def test_a_lost_gpu_is_said_as_such_by_calls_and_by_the_training_loop(tmp_path, checkpoints):
    """The GPU device goes away under a loaded classifier (Device.destroy(): what a driver reset
    or a restarted GPU process does to WebGPU): a call then fails with kind "device_lost", not
    "user", and the scheduler's own loop, whose next slice meets it, says "loop_failed" with
    that kind, so that whoever hosts the engine can make it anew on a new device."""
    async def scenario():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftwareAdapterWarning)
            device = await open_device("native")      # its own: destroyed below
        events = Events()
        config = LearnerConfig(save_every_s=3600.0, train={"lr": 1e-2, "epochs": 4})
        svc = EngineService(queue=str(tmp_path / "queue.sqlite"), states=str(tmp_path / "states"),
                            emit=events.append, backend="gpu", device=device, learner=config,
                            scheduler=SchedulerConfig(idle_fraction=1.0, poll_s=0.01))
        replies = [await svc.call("load_model", {"source": "files", "name": "tiny",
                                                 "files": checkpoints["bert"], "labels": ["neg", "pos"]}),
                   await svc.call("import_text", {"name": "reviews.jsonl", "data": jsonl(sentiment(32, 7))}),
                   await svc.call("predict", {"text": "a fine film"})]
        device.destroy()
        replies.append(await svc.call("predict", {"text": "a fine film"}))
        await svc.call("set_idle_state", {"state": "idle"})
        replies.append(await svc.call("start_loop", {}))
        for _ in range(1000):
            if events.of("loop_failed"):
                break
            await asyncio.sleep(0.01)
        svc.close()
        return replies, events

    replies, events = run_async(scenario())
    assert all("result" in r for r in replies[:3]), replies[:3]
    lost = replies[3]["error"]
    assert lost["kind"] == "device_lost" and "GPU device was lost" in lost["message"], lost
    assert "result" in replies[4], replies[4]
    (failed,) = events.of("loop_failed")
    assert failed["kind"] == "device_lost" and "GPU device was lost" in failed["message"], failed
    assert failed["retry_s"] is None                    # no slice will ever run on that device


def test_a_training_loop_ended_by_an_error_starts_again(tmp_path, checkpoints):
    """A slice of the scheduler's own loop fails once (storage that refused a save, a bug one
    batch meets): the loop says so ("loop_failed", kind "bug") and starts again loop_retry_s
    later, and the next slices train; idle training is not over for the rest of the session."""
    async def scenario():
        events = Events()
        svc = service(tmp_path, events)
        svc.scheduler.config = replace(svc.scheduler.config, poll_s=0.01)
        svc.loop_retry_s = 0.05
        await svc.call("load_model", {"source": "files", "name": "tiny", "files": checkpoints["bert"],
                                      "labels": ["neg", "pos"]})
        await svc.call("import_text", {"name": "reviews.jsonl", "data": jsonl(sentiment(32, 7))})
        run_slice, failures = svc.scheduler.run_slice, []

        async def failing_once(*args):
            if not failures:
                failures.append(1)
                raise RuntimeError("the storage refused a save")
            return await run_slice(*args)
        svc.scheduler.run_slice = failing_once
        await svc.call("set_idle_state", {"state": "idle"})
        await svc.call("start_loop", {})
        for _ in range(2000):
            if (await svc.status())["scheduler"]["steps"] > 0:
                break
            await asyncio.sleep(0.01)
        status = await svc.status()
        svc.close()
        return events, status

    events, status = run_async(scenario())
    (failed,) = events.of("loop_failed")
    assert {k: failed[k] for k in ("message", "kind", "retry_s")} == {
        "message": "the storage refused a save", "kind": "bug", "retry_s": 0.05}, failed
    assert "in failing_once" in failed["traceback"], failed
    assert status["scheduler"]["steps"] > 0 and status["scheduler"]["scheduled"], status["scheduler"]


def _broken_json(directory):
    (directory / "training_state.json").write_text("{broken")


def _cut_snapshots(directory, name="snapshots.safetensors"):
    # snapshots are read after the weights and the optimizer: the restore is half done
    path = directory / name
    path.write_bytes(path.read_bytes()[:100])


def _nan_weight(directory):
    path = directory / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")       # the first tensor's first element
    data[start:start + 4] = np.float32("nan").tobytes()
    path.write_bytes(bytes(data))


def test_a_saved_state_that_cannot_be_put_back_is_kept_aside_and_the_model_starts_anew(tmp_path, checkpoints):
    """A saved state that cannot be put back (a file unreadable or cut short, a NaN in the
    weights) would fail every load of its model from then on: in the extension, the model
    would never come back. It is kept under another name, byte for byte, the model starts from
    what it was loaded with (as if nothing had been saved) and says so, the corrections it had
    learned are queued to be learned again, and the next load finds the fresh state saved in
    its place. A second one is kept beside the first. A store that
    cannot be read (not a state that is wrong) still fails the load, and nothing is written."""
    load = {"source": "files", "name": "tiny", "files": checkpoints["bert"], "labels": ["neg", "pos"]}
    texts = ["good great fine", "a dull and bad film"]
    trained, fresh_dir = tmp_path / "trained", tmp_path / "fresh"
    trained.mkdir(), fresh_dir.mkdir()
    svc = service(trained, Events())
    call(svc, "load_model", **load)
    call(svc, "import_text", name="reviews.jsonl", data=jsonl(sentiment(60, 1)))
    call(svc, "correct", text="a wonderful and moving film", label="pos")
    for _ in range(4):
        assert call(svc, "force_slice", budget_ms=60_000)["ran"]
    assert call(svc, "save")["saved"]
    # the correction was learned, and left the queue (the state's working set remembers it)
    assert "correction" not in run_async(svc.status())["queue"]["by_source"]
    learned = [call(svc, "predict", text=t)["probs"] for t in texts]
    svc.close()
    fresh = service(fresh_dir, Events())
    call(fresh, "load_model", **load)
    untrained = [call(fresh, "predict", text=t)["probs"] for t in texts]
    fresh.close()
    assert learned != untrained
    (key,) = [p.name for p in (trained / "states").iterdir()]

    for n, (spoil, file) in enumerate([(_broken_json, "training_state.json"),
                                      (_cut_snapshots, "snapshots.safetensors"),
                                      (_nan_weight, "adapter_model.safetensors")]):
        case = tmp_path / f"case{n}"
        shutil.copytree(trained, case)
        spoil(case / "states" / key)
        spoiled = files_of(case / "states" / key)
        events = Events()
        svc = service(case, events)
        summary = call(svc, "load_model", **load)
        assert summary["restored"] is False and summary["step"] == 0, summary
        aside = summary["set_aside"]
        assert file in aside["reason"] and aside["kept_as"] == f"{key}.unreadable-1", aside
        # the correction it had learned is queued again, for the fresh model to learn
        assert aside["corrections_requeued"] == 1, aside
        assert run_async(svc.status())["queue"]["by_source"]["correction"] == 1
        assert files_of(case / "states" / aside["kept_as"]) == spoiled      # kept as it was
        (told,) = events.of("state_set_aside")
        assert told["reason"] == aside["reason"] and told["kept_as"] == aside["kept_as"]
        for text, probs in zip(texts, untrained):
            assert call(svc, "predict", text=text)["probs"] == pytest.approx(probs, abs=1e-12), text
        assert call(svc, "force_slice", budget_ms=60_000)["ran"]      # and it learns again
        svc.close()
        again = service(case, Events())
        summary = call(again, "load_model", **load)
        assert summary["restored"] is True and "set_aside" not in summary, summary
        again.close()

    # a second unreadable state is kept beside the first, which stays as it was
    case = tmp_path / "case0"
    first = files_of(case / "states" / f"{key}.unreadable-1")
    _cut_snapshots(case / "states" / key, "adapter_model.safetensors")
    svc = service(case, Events())
    assert call(svc, "load_model", **load)["set_aside"]["kept_as"] == f"{key}.unreadable-2"
    svc.close()
    assert files_of(case / "states" / f"{key}.unreadable-1") == first

    # a store that cannot be read is not a state that is wrong: the load fails, nothing is set aside
    saves = []

    class Unreadable:
        async def load(self):
            raise OSError("Input/output error")

        async def save(self, files):
            saves.append(files)

    svc = EngineService(queue=str(tmp_path / "queue.sqlite"), states=lambda key: Unreadable(),
                        emit=Events().append, backend="numpy")
    reply = run_async(svc.call("load_model", load))
    svc.close()
    assert reply["error"]["message"] == "Input/output error" and saves == [], reply


def test_states_set_aside_are_listed_downloaded_and_removed(tmp_path, checkpoints):
    """The states set aside stay until the user removes them: set_aside_states lists them
    (whose model, why, their files and size), export_set_aside_state gives their files as they
    were kept, remove_set_aside_state deletes one and nothing else. Names that are not a state
    set aside (the model's own state, one missing, any other string) are refused, and so is a
    kept state the user added a file to (deleting it would delete that file)."""
    load = {"source": "files", "name": "tiny", "files": checkpoints["bert"], "labels": ["neg", "pos"]}
    svc = service(tmp_path, Events())
    call(svc, "load_model", **load)
    assert call(svc, "set_aside_states") == []
    call(svc, "import_text", name="reviews.jsonl", data=jsonl(sentiment(24, 1)))
    assert call(svc, "force_slice", budget_ms=60_000)["ran"]
    assert call(svc, "save")["saved"]
    svc.close()
    (key,) = [p.name for p in (tmp_path / "states").iterdir()]
    for _ in range(2):
        _cut_snapshots(tmp_path / "states" / key, "adapter_model.safetensors")
        spoiled = {name: data for name, data in files_of(tmp_path / "states" / key).items()
                   if name != ".py_engine-output"}      # who wrote it, not a file of the state
        events = Events()
        svc = service(tmp_path, events)
        aside = call(svc, "load_model", **load)["set_aside"]
        svc.close()
    names = [f"{key}.unreadable-1", f"{key}.unreadable-2"]
    events = Events()
    svc = service(tmp_path, events)
    call(svc, "load_model", **load)
    listed = call(svc, "set_aside_states")
    assert [s["name"] for s in listed] == names and aside["kept_as"] == names[1]
    assert listed[1] == {"name": names[1], "model": key, "why": "unreadable", "files": sorted(spoiled),
                         "bytes": sum(len(b) for b in spoiled.values())}
    assert call(svc, "export_set_aside_state", name=names[1])["files"] == spoiled
    for bad in (key, f"{key}.unreadable-3", "../states", None, 7):
        reply = run_async(svc.call("remove_set_aside_state", {"name": bad}))
        assert reply["error"]["kind"] == "user" and "set aside" in reply["error"]["message"], (bad, reply)
    (tmp_path / "states" / names[0] / "my notes.txt").write_text("mine")
    reply = run_async(svc.call("remove_set_aside_state", {"name": names[0]}))
    assert "my notes.txt" in reply["error"]["message"] and (tmp_path / "states" / names[0]).is_dir()
    left = call(svc, "remove_set_aside_state", name=names[1])
    assert [s["name"] for s in left] == [names[0]] and not (tmp_path / "states" / names[1]).exists()
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == sorted([key, names[0]])
    assert any("removed" in e["message"] for e in events.of("log"))
    assert call(svc, "predict", text="a fine film")["label"] in ("neg", "pos")     # untouched
    svc.close()


def test_a_chat_adapter_with_its_own_options_and_tokens_loads_learns_and_comes_back(tmp_path):
    """load_model with a chat adapter reads it as the CLI does: its own LoRA options, the
    tables it trains whole and the tokenizer saved beside it (an adapter made as TRL makes
    one: ChatML's tokens added). The chat renders with the added tokens and answers as PEFT's
    model does; a slice trains it; a new service over the same states, loading the same
    files, puts the state back; the adapter's files written for it go with the model."""
    import tempfile

    from test_saved_modules import MESSAGES, base_without_chat_tokens, chat_tokens_added, peft_logits

    written, states = tmp_path / "written", tmp_path / "a"
    written.mkdir(), states.mkdir()
    base = base_without_chat_tokens(tmp_path, tied=True)
    peft, tokenizer = chat_tokens_added(base, tmp_path / "adapter")
    load = {"source": "files", "name": "trl", "files": files_of(base),
            "adapter": files_of(tmp_path / "adapter")}
    old_tempdir, tempfile.tempdir = tempfile.tempdir, str(written)
    try:
        svc = service(states, Events())
        call(svc, "load_model", **load)
        chat = svc.model.model
        ids = chat.prompt_ids(MESSAGES)
        assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids
        logits = np.asarray(run_async(chat.decoder().prefill(ids)), np.float64)
        want = peft_logits(peft, ids)[-1]
        assert np.linalg.norm(logits - want) <= 1e-5 * np.linalg.norm(want)
        assert len(list(written.iterdir())) == 2       # the checkpoint and the adapter's tokenizer
        corpus = ("What is the capital of France? The capital of France is Paris.\n\n" * 3).encode()
        call(svc, "import_text", name="facts.md", data=corpus)
        assert call(svc, "force_slice", budget_ms=60_000)["ran"]
        call(svc, "save")
        learned = trainable(svc)
        exported = call(svc, "export_adapter")["files"]
        assert exported["tokenizer.json"] == load["adapter"]["tokenizer.json"]
        svc.close()
        assert list(written.iterdir()) == []
        again = service(states, Events())
        assert call(again, "load_model", **load)["restored"]
        for name, value in trainable(again).items():
            assert np.array_equal(value, learned[name]), name
        again.close()
        assert list(written.iterdir()) == []
    finally:
        tempfile.tempdir = old_tempdir


@pytest.mark.parametrize("family", ["mpnet", "modernbert", "deberta"])
def test_the_newer_encoders_load_learn_and_come_back(tmp_path, family):
    """An MPNet, ModernBERT or DeBERTa-v3 folder given as files is a classifier: it learns a
    correction in one forced slice, exports an adapter PEFT-style, and a new service puts its
    state back."""
    make = {"mpnet": po.tiny_mpnet_dir, "modernbert": po.tiny_modernbert_dir,
            "deberta": po.tiny_deberta_dir}[family]
    files = files_of(make(tmp_path / "model", seed=9))
    events = Events()
    svc = service(tmp_path, events)
    loaded = call(svc, "load_model", source="files", name=family, files=files, labels=["neg", "pos"])
    assert loaded["kind"] == "classification" and not loaded["restored"]
    call(svc, "import_text", name="reviews.jsonl", data=jsonl(sentiment(48, 4)))
    text = "the actor in this scene"
    wanted = "neg" if call(svc, "predict", text=text)["label"] == "pos" else "pos"
    for _ in range(3):
        call(svc, "correct", text=text, label=wanted)
        assert call(svc, "force_slice", budget_ms=60_000)["steps"] > 0
    assert call(svc, "predict", text=text)["label"] == wanted
    exported = call(svc, "export_adapter")["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json"} <= set(exported)
    call(svc, "save")
    before = call(svc, "predict", text=text)
    svc.close()
    again = service(tmp_path, Events())
    assert call(again, "load_model", source="files", name=family, files=files,
                labels=["neg", "pos"])["restored"]
    after = call(again, "predict", text=text)
    assert after["label"] == wanted and abs(after["probs"][wanted] - before["probs"][wanted]) < 1e-6
    again.close()
