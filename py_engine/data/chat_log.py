"""The chat log: every message of every conversation, kept in the data store beside the
training queue, and the causal-LM examples made from it.

    log = ChatLog(queue, count_tokens=lambda text: len(tokenizer.encode(text).ids),
                  max_tokens=2048)
    await log.log("conv-1", "user", "What is the capital of France?")
    await log.log("conv-1", "assistant", "Paris.")     # this turn's example is queued with it
    await log.opt_out("conv-2")                         # none from it, and none kept
    await log.delete_conversation("conv-1")             # its messages and queued examples go

Examples: each assistant turn becomes one causal_lm Record (source "chat") holding the turn
and the context before it: a leading system message is always kept, then the turns just before
the reply, the oldest dropped first, as many as fit `max_tokens`, starting on a user turn
(when there is one before the reply). A
message's size is count_tokens(content) + `message_overhead` (the chat template's tokens around
it; ChatML spends about 4); the default count_tokens is a character estimate (4 characters a
token), so pass the model's tokenizer to trim exactly where the model will. A reply that does
not fit with the user turn before it (or alone, at the start of a conversation) makes no example.
An example's origin names the conversation, the reply's message id and every message id in it.

Logging an assistant message queues its example in the same transaction; enqueue() makes them
all again (after opt_in, or with another token budget): the queue drops those already there as
duplicates. Messages are ordered by timestamp, then by the order they were logged.
"""

import math
import time

from .queue import QueueError
from .record import ROLES, Record
from .storage import atomically

DEFAULT_MAX_TOKENS = 2048
MESSAGE_OVERHEAD = 4


def count_chars(text):
    """A tokenizer-free estimate of a text's length in tokens: 4 characters a token."""
    return (len(text) + 3) // 4


def conversation_examples(conversation_id, messages, count_tokens=count_chars,
                          max_tokens=DEFAULT_MAX_TOKENS, message_overhead=MESSAGE_OVERHEAD):
    """(records, too_long): one causal_lm Record per assistant message of `messages` (rows with
    id, role, content, timestamp, in order) that fits, and the ids of those that do not."""
    sizes = {}

    def size(m):
        if m["id"] not in sizes:
            sizes[m["id"]] = count_tokens(m["content"]) + message_overhead
        return sizes[m["id"]]

    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    records, too_long = [], []
    for i, target in enumerate(messages):
        if target["role"] != "assistant" or i < len(system) or not target["content"]:
            continue
        budget = max_tokens - sum(size(m) for m in system) - size(target)
        turns = messages[len(system):i]
        start = len(turns)
        while start > 0 and size(turns[start - 1]) <= budget:
            budget -= size(turns[start - 1])
            start -= 1
        prompted = any(m["role"] == "user" for m in turns)
        while prompted and start < len(turns) and turns[start]["role"] != "user":
            start += 1
        if budget < 0 or (prompted and start == len(turns)):
            too_long.append(target["id"])
            continue
        kept = system + turns[start:] + [target]
        records.append(Record(
            "causal_lm", "chat",
            messages=[{"role": m["role"], "content": m["content"]} for m in kept],
            created=target["timestamp"],
            origin={"conversation": conversation_id, "message": target["id"],
                    "messages": [m["id"] for m in kept],
                    "where": f"conversation {conversation_id!r}, message {target['id']!r}"}))
    return records, too_long


def _order(message):
    return (message["timestamp"], message["seq"])


def _names(conversation_id):
    return lambda origin: origin.get("conversation") == conversation_id


class ChatLog:
    def __init__(self, queue, count_tokens=count_chars, max_tokens=DEFAULT_MAX_TOKENS,
                 message_overhead=MESSAGE_OVERHEAD, clock=time.time):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise QueueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        self.queue, self.store = queue, queue.store
        self.count_tokens, self.max_tokens = count_tokens, max_tokens
        self.message_overhead, self.clock = message_overhead, clock

    def _examples(self, conversation_id, messages):
        return conversation_examples(conversation_id, messages, self.count_tokens,
                                     self.max_tokens, self.message_overhead)

    async def _messages(self, tx, conversation_id):
        rows = await tx.scan("messages", "conversation", prefix=[conversation_id])
        return sorted(rows, key=_order)

    async def log(self, conversation_id, role, content, message_id=None, timestamp=None):
        """Keep one message; returns its id (`message_id`, or a new one). Logging an assistant
        message of a conversation not opted out queues its example in the same transaction.
        Logging the same message (id, conversation, role, content) again changes nothing."""
        _check_id(conversation_id, "conversation id")
        if role not in ROLES:
            raise QueueError(f"log: role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise QueueError(f"log: content must be a string, got {type(content).__name__}")
        if message_id is not None:
            _check_id(message_id, "message id")
        if timestamp is not None and (isinstance(timestamp, bool) or
                                      not isinstance(timestamp, (int, float)) or
                                      not math.isfinite(timestamp)):
            raise QueueError(f"log: timestamp must be Unix seconds, got {timestamp!r}")

        async def work(tx):
            if message_id is not None:
                old = await tx.get_one("messages", message_id)
                if old is not None:
                    if (old["conversation"], old["role"], old["content"]) != \
                            (conversation_id, role, content):
                        raise QueueError(f"log: message {message_id!r} is already logged "
                                         f"(conversation {old['conversation']!r}) with another "
                                         "role or content")
                    return message_id
            # above the conversation's own messages even when the counter reads lower (a store
            # put back from an older copy): equal timestamps are ordered by seq
            logged = await tx.scan("messages", "conversation", prefix=[conversation_id], fields=["seq"])
            above = max((m["seq"] for m in logged), default=0)
            seq = (await self.queue.next_ids(tx, "messages", 1, above=above))[0]
            new_id = message_id or await self._fresh_id(tx, seq)
            now = self.clock()
            row = {"id": new_id, "conversation": conversation_id, "seq": seq,
                   "role": role, "content": content,
                   "timestamp": float(now if timestamp is None else timestamp)}
            conversation = await tx.get_one("conversations", conversation_id) or \
                {"id": conversation_id, "created": now, "opted_out": 0}
            tx.put("conversations", dict(conversation, updated=now))
            tx.put("messages", row)
            if role == "assistant" and not conversation["opted_out"]:
                messages = sorted(await self._messages(tx, conversation_id) + [row], key=_order)
                records, _ = self._examples(conversation_id, messages)
                mine = [r for r in records if r.origin["message"] == row["id"]]
                await self.queue.put_in(tx, mine)
            return row["id"]

        return await atomically(self.store, work)

    @staticmethod
    async def _fresh_id(tx, seq):
        """"m<seq>", or with a suffix when a caller's own id took that already."""
        candidate, n = f"m{seq}", 0
        while await tx.get_one("messages", candidate) is not None:
            n += 1
            candidate = f"m{seq}.{n}"
        return candidate

    async def messages(self, conversation_id):
        """The conversation's messages in order: {id, conversation, seq, role, content,
        timestamp}."""
        return await atomically(self.store, lambda tx: self._messages(tx, conversation_id))

    async def conversations(self):
        """Every conversation: {id, created, updated, opted_out}."""
        async def work(tx):
            return [dict(row, opted_out=bool(row["opted_out"]))
                    async for row in tx.scan_all("conversations")]

        return await atomically(self.store, work)

    async def examples(self, conversation_id):
        """The conversation's examples (Records) as they would be queued now."""
        records, _ = self._examples(conversation_id, await self.messages(conversation_id))
        return records

    async def enqueue(self, conversation_id=None):
        """Queue the examples of one conversation, or of all (opted-out ones skipped), each
        conversation in one transaction; the queue's put() counts summed, plus "too_long":
        replies that fit no example."""
        ids = [conversation_id] if conversation_id is not None else \
            [c["id"] for c in await self.conversations()]
        total = {"added": 0, "duplicates": 0, "evicted": 0, "refused": 0, "too_long": 0}

        async def work(tx, cid):
            conversation = await tx.get_one("conversations", cid)
            if conversation is None:
                raise QueueError(f"enqueue: no conversation {cid!r} in the chat log")
            if conversation["opted_out"]:
                return {"too_long": 0}
            records, too_long = self._examples(cid, await self._messages(tx, cid))
            return dict(await self.queue.put_in(tx, records), too_long=len(too_long))

        for cid in ids:
            result = await atomically(self.store, lambda tx: work(tx, cid))
            for key in total:
                total[key] += result.get(key, 0)
        return total

    async def opt_out(self, conversation_id):
        """No examples from this conversation, from now on, and none kept: its queued
        examples are removed in the same transaction. Returns how many were removed."""
        return await self._set_opt_out(conversation_id, 1)

    async def opt_in(self, conversation_id):
        """Examples from this conversation again (call enqueue() to queue its past turns)."""
        await self._set_opt_out(conversation_id, 0)

    async def _set_opt_out(self, conversation_id, flag):
        _check_id(conversation_id, "conversation id")

        async def work(tx):
            now = self.clock()
            conversation = await tx.get_one("conversations", conversation_id) or \
                {"id": conversation_id, "created": now}
            tx.put("conversations", dict(conversation, updated=now, opted_out=flag))
            return await self.queue.delete_in(tx, _names(conversation_id)) if flag else 0

        return await atomically(self.store, work)

    async def delete_conversation(self, conversation_id):
        """Remove the conversation, its messages and every queued record whose origin names it,
        in one transaction: {"messages": n, "examples": n}."""
        async def work(tx):
            if await tx.get_one("conversations", conversation_id) is None:
                raise QueueError(f"delete: no conversation {conversation_id!r} in the chat log")
            messages = await tx.scan("messages", "conversation", prefix=[conversation_id],
                                     fields=("id",))
            for m in messages:
                tx.delete("messages", m["id"])
            tx.delete("conversations", conversation_id)
            removed = await self.queue.delete_in(tx, _names(conversation_id))
            return {"messages": len(messages), "examples": removed}

        return await atomically(self.store, work)


def _check_id(value, what):
    if not isinstance(value, str) or not value:
        raise QueueError(f"a {what} must be a non-empty string, got {value!r}")
