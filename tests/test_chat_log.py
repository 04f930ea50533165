"""The chat log: messages kept in the data store, each assistant turn made into a causal-LM
example trimmed to a token budget (counted with a byte-level BPE tokenizer and checked with
Hugging Face tokenizers), per-conversation opt-out, and deletion that takes the conversation's
queued examples with it, in one transaction."""

import json
import random
import sqlite3

import pytest

from py_engine.data.chat_log import MESSAGE_OVERHEAD, ChatLog, conversation_examples, count_chars
from py_engine.data.queue import QueueError, TrainingQueue
from py_engine.data.record import Record
from py_engine.data.storage import StoreError, atomically
from py_engine.data.storage.sqlite_store import SQLiteStore
from py_engine.tokenizers.bpe import BPETokenizer
from test_queue import run
from tiny_chat import CORPUS, train_tokenizer


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 1
        return self.now


@pytest.fixture
def chat(tmp_path):
    queue = TrainingQueue(tmp_path / "data.sqlite")
    return ChatLog(queue, clock=Clock())


async def queued(queue):
    return [r async for r in queue.records()]


def test_each_reply_is_an_example_trimmed_from_the_oldest_turns():
    hf = train_tokenizer()
    bpe = BPETokenizer.from_json(hf.to_str())
    count = lambda text: len(bpe.encode(text, add_special_tokens=False).ids)    # noqa: E731
    rng = random.Random()
    messages = [{"id": "s", "role": "system", "content": "You are a helpful assistant."}]
    for turn in range(12):
        for role in ("user", "assistant"):
            words = " ".join(rng.choice(CORPUS) for _ in range(rng.randint(1, 4)))
            messages.append({"id": f"{role[0]}{turn}", "role": role, "content": words})
    for m, t in zip(messages, range(len(messages))):
        m["timestamp"] = 100.0 + t

    def size(m):       # Hugging Face's count, not ours
        return len(hf.encode(m["content"], add_special_tokens=False).ids) + MESSAGE_OVERHEAD

    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    # A reply is too long when it cannot fit with the system prompt and its own question.
    least = {messages[i]["id"]: size(messages[0]) + size(messages[i - 1]) + size(messages[i])
             for i in replies}
    _, too_long = conversation_examples("c1", messages, count, 200)
    assert too_long == [i for i, need in least.items() if need > 200]
    # A budget every reply fits in but the whole conversation does not: each is trimmed.
    budget = max(max(least.values()), sum(size(m) for m in messages) // 2)
    records, too_long = conversation_examples("c1", messages, count, budget)
    assert len(records) == len(replies) and too_long == []
    by_id = {m["id"]: i for i, m in enumerate(messages)}
    assert by_id[records[-1].origin["messages"][1]] > 1        # the last one lost turns
    for r in records:
        ids = r.origin["messages"]
        kept = [messages[by_id[i]] for i in ids]
        target = by_id[r.origin["message"]]
        assert ids[0] == "s" and ids[-1] == r.origin["message"] and kept[1]["role"] == "user"
        assert ids[1:] == [m["id"] for m in messages[by_id[ids[1]]:target + 1]]   # contiguous
        assert r.messages == [{"role": m["role"], "content": m["content"]} for m in kept]
        assert (r.kind, r.source, r.created) == ("causal_lm", "chat", messages[target]["timestamp"])
        total = sum(size(m) for m in kept)
        assert total <= budget
        start = by_id[ids[1]]
        if start > 2:                    # the turns dropped before it would not have fitted
            assert total + size(messages[start - 1]) + size(messages[start - 2]) > budget
    whole, _ = conversation_examples("c1", messages, count, 10_000)
    assert [len(r.messages) for r in whole] == list(range(3, len(messages) + 1, 2))


def test_replies_that_cannot_fit_make_no_example():
    messages = [{"id": "u", "role": "user", "content": "q" * 480, "timestamp": 1.0},
                {"id": "a", "role": "assistant", "content": "short", "timestamp": 2.0},
                {"id": "a2", "role": "assistant", "content": "x" * 900, "timestamp": 3.0},
                {"id": "u2", "role": "user", "content": "ok", "timestamp": 4.0},
                {"id": "a3", "role": "assistant", "content": "fine", "timestamp": 5.0}]
    records, too_long = conversation_examples("c", messages, count_chars, 120)
    assert too_long == ["a", "a2"]                   # its question does not fit; alone too long
    assert [r.origin["messages"] for r in records] == [["u2", "a3"]]
    greeting = [{"id": "g", "role": "assistant", "content": "Hello!", "timestamp": 1.0}]
    assert [r.messages for r in conversation_examples("c", greeting)[0]] == \
        [[{"role": "assistant", "content": "Hello!"}]]


def test_logging_queues_each_reply_and_survives_a_reopen(chat, tmp_path):
    run(chat.log("c1", "system", "Be brief."))
    run(chat.log("c1", "user", "Capital of France?", message_id="q1"))
    assert run(chat.log("c1", "assistant", "Paris.", message_id="r1")) == "r1"
    run(chat.log("c2", "user", "hi", timestamp=50.0))
    run(chat.log("c2", "assistant", "hello", timestamp=60.0))
    run(chat.log("c2", "user", "earlier", timestamp=55.0))     # ordered by its timestamp
    assert run(chat.log("c1", "assistant", "Paris.", message_id="r1")) == "r1"   # again: no-op
    chat.queue.close()

    queue = TrainingQueue(tmp_path / "data.sqlite")
    log = ChatLog(queue)
    assert [m["content"] for m in run(log.messages("c2"))] == ["hi", "earlier", "hello"]
    records = run(queued(queue))
    assert [r.messages for r in records] == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
         {"role": "assistant", "content": "Paris."}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    assert records[0].origin["conversation"] == "c1" and records[0].origin["message"] == "r1"
    assert records[0].origin["messages"][1:] == ["q1", "r1"]
    # enqueue() makes them all again: c2's reply now has "earlier" in its context
    assert run(log.enqueue()) == {"added": 1, "duplicates": 1, "evicted": 0, "refused": 0,
                                  "too_long": 0}
    assert [c["id"] for c in run(log.conversations())] == ["c1", "c2"]


def test_opt_out_removes_and_stops_examples(chat):
    queue = chat.queue
    run(chat.log("c1", "user", "a"))
    run(chat.log("c1", "assistant", "b"))
    run(chat.log("c2", "user", "c"))
    run(chat.log("c2", "assistant", "d"))
    run(queue.put([Record("classification", "correction", text="fix", label="y",
                          origin={"conversation": "c1", "message": "m2"})]))
    lease = run(queue.lease("trainer", 10))
    assert run(chat.opt_out("c1")) == 2                        # leased or not, both removed
    run(chat.log("c1", "user", "e"))
    run(chat.log("c1", "assistant", "f"))
    assert [r.origin["conversation"] for r in run(queued(queue))] == ["c2"]
    assert run(chat.enqueue("c1"))["added"] == 0
    assert run(queue.ack(lease.id)) == 1                       # only c2's example was left
    assert [c["opted_out"] for c in run(chat.conversations())] == [True, False]
    run(chat.opt_in("c1"))
    assert run(chat.enqueue("c1"))["added"] == 2
    assert run(chat.opt_out("private")) == 0                   # before its first message
    run(chat.log("private", "user", "secret"))
    run(chat.log("private", "assistant", "kept out"))
    assert all(r.origin["conversation"] == "c1" for r in run(queued(queue)))


def test_deleting_a_conversation_deletes_its_examples(chat):
    queue = chat.queue
    for cid in ("c1", "c2"):
        for k in range(3):
            run(chat.log(cid, "user", f"{cid} question {k}"))
            run(chat.log(cid, "assistant", f"{cid} answer {k}"))
    lease = run(queue.lease("trainer", 2))
    assert run(chat.delete_conversation("c1")) == {"messages": 6, "examples": 3}
    assert run(chat.messages("c1")) == []
    assert {r.origin["conversation"] for r in run(queued(queue))} == {"c2"}
    assert len(run(queued(queue))) == 3
    assert run(queue.ack(lease.id)) == 0
    with pytest.raises(QueueError, match="no conversation 'c1'"):
        run(chat.delete_conversation("c1"))


def test_a_failed_log_keeps_neither_message_nor_example(chat, monkeypatch):
    run(chat.log("c1", "user", "question"))
    real = SQLiteStore._apply

    def failing(self, op):
        if op["table"] == "records":
            raise sqlite3.OperationalError("database or disk is full")
        real(self, op)

    monkeypatch.setattr(SQLiteStore, "_apply", failing)
    with pytest.raises(StoreError, match="nothing was written .database or disk is full"):
        run(chat.log("c1", "assistant", "answer"))
    monkeypatch.undo()
    assert [m["content"] for m in run(chat.messages("c1"))] == ["question"]
    assert run(queued(chat.queue)) == []


def test_a_counter_reading_low_keeps_a_conversations_order(tmp_path):
    """Messages logged at one timestamp keep the order they were logged in, even when the
    store's counter reads below the seq numbers already given (a store put back from an older
    copy, a browser that lost a write): a new message still gets a seq above its
    conversation's, and an id of its own."""
    queue = TrainingQueue(tmp_path / "data.sqlite")
    chat = ChatLog(queue, clock=lambda: 5000.0)
    for n in range(4):
        run(chat.log("c", "user" if n % 2 == 0 else "assistant", f"turn {n}"))

    async def rewind(tx):
        tx.put("counters", {"name": "messages", "value": 1})

    run(atomically(queue.store, rewind))
    new_id = run(chat.log("c", "user", "turn 4"))
    messages = run(chat.messages("c"))
    assert [m["content"] for m in messages] == [f"turn {n}" for n in range(5)]
    assert messages[-1]["id"] == new_id and len({m["id"] for m in messages}) == 5
    assert messages[-1]["seq"] > messages[-2]["seq"]


def test_bad_messages_are_refused(chat):
    with pytest.raises(QueueError, match="role must be one of"):
        run(chat.log("c", "bot", "x"))
    with pytest.raises(QueueError, match="conversation id must be a non-empty string"):
        run(chat.log("", "user", "x"))
    with pytest.raises(QueueError, match="content must be a string, got bytes"):
        run(chat.log("c", "user", b"x"))
    with pytest.raises(QueueError, match="timestamp must be Unix seconds"):
        run(chat.log("c", "user", "x", timestamp=float("nan")))
    run(chat.log("c", "user", "x", message_id="m1"))
    with pytest.raises(QueueError, match="message 'm1' is already logged .conversation 'c'. "
                                         "with another role or content"):
        run(chat.log("c", "user", "changed", message_id="m1"))
    assert run(chat.log("c", "user", "y")) != "m1"             # generated ids avoid taken ones
    assert json.dumps(run(chat.messages("c")))
