"""The training queue over the SQLite store: order, deduplication, capacity and eviction,
leases that expire on an injected clock, stats, export and deletion, persistence, atomic
writes, concurrent writers, and bad input. A model of the stated policies, written here apart
from the queue, is run beside it on random operations and must agree at every step."""

import asyncio
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from py_engine.data.queue import QueueConfig, QueueError, TrainingQueue, record_row
from py_engine.data.record import Record
from py_engine.data.storage import StoreError, atomically, open_store
from py_engine.data.storage.sqlite_store import SQLiteStore


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def run(coro):
    """Run a coroutine on an event loop of its own, in a thread of its own: the store's
    coroutines may truly wait (the interleaving test's do), and Playwright's sync API may hold
    this thread's loop when browser tests share the session."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def collect(aiter):
    return [x async for x in aiter]


def text(i, source="text", priority=None, created=None, label=None, kind="classification"):
    if kind == "classification":
        return Record(kind, source, text=f"example {i}", label=label or "x", priority=priority,
                      created=created if created is not None else 100.0 + i)
    return Record(kind, source, text=f"passage {i}", priority=priority,
                  created=created if created is not None else 100.0 + i)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "queue.sqlite"


def test_order_dedup_lease_ack_and_persistence(path):
    clock = Clock()
    q = TrainingQueue(path, clock=clock)
    records = [text(1, "website"), text(2, "correction"), text(3, "chat", kind="causal_lm"),
               text(4, "correction", created=50.0), text(5, "dataset", priority=7)]
    got = run(q.put(records))
    assert got == {"added": 5, "duplicates": 0, "evicted": 0, "refused": 0, "ids": [1, 2, 3, 4, 5]}
    again = Record("classification", "chat", text="example 2", label="x")   # same content
    got = run(q.put([again, text(6), again]))
    assert (got["added"], got["duplicates"], got["ids"]) == (1, 2, [2, 6, 2])
    assert run(q.count()) == 6
    lease = run(q.lease("trainer", 3))
    # corrections first (the older one first), then the chat, then imports
    assert [r.id for r in lease.records] == [4, 2, 3]
    assert lease.records[1] == Record("classification", "correction", text="example 2",
                                      label="x", created=102.0, id=2)
    q.close()

    q = TrainingQueue(path, clock=clock)                       # reopened: the lease is still held
    s = run(q.stats())
    assert (s["total"], s["leased"], s["available"], s["leases"]) == (6, 3, 3, 1)
    assert [r.id for r in run(q.lease("other", 10, kind="classification")).records] == [1, 6, 5]
    assert run(q.lease("third", 1)) is None
    assert run(q.ack(lease.id)) == 3
    assert sorted(r.id for r in run(collect(q.records()))) == [1, 5, 6]
    with pytest.raises(QueueError, match="no lease 'lease-1' is held"):
        run(q.ack(lease.id))


def test_expired_leases_come_back_and_cannot_be_acknowledged(path):
    clock = Clock()
    q = TrainingQueue(path, QueueConfig(lease_seconds=60), clock=clock)
    run(q.put([text(i) for i in range(4)]))
    first = run(q.lease("dies", 2))
    assert first.expires == clock.now + 60
    clock.now += 59.5
    assert [r.id for r in run(q.lease("second", 4)).records] == [3, 4]
    clock.now += 1                                             # the first consumer's lease ran out
    assert run(q.stats())["available"] == 2
    with pytest.raises(QueueError, match="lease 'lease-1' expired; its records are back"):
        run(q.ack(first.id))
    renewed = run(q.lease("third", 4, seconds=10))
    assert [r.id for r in renewed.records] == [1, 2]
    clock.now += 9
    assert run(q.renew(renewed.id, 100)) == clock.now + 100
    clock.now += 50
    assert run(q.release(renewed.id)) == 2                     # renewed: still live
    with pytest.raises(QueueError, match="no lease"):
        run(q.release(renewed.id))


def test_configured_priorities_apply_to_records_given_none(path):
    q = TrainingQueue(path, QueueConfig(priorities={"website": 500}))
    run(q.put([text(1, "correction"), text(2, "website"), text(3, "website", priority=1)]))
    assert [(r.id, r.priority) for r in run(q.lease("t", 3)).records] == [(2, 500), (1, 300), (3, 1)]
    with pytest.raises(QueueError, match="unknown source 'email'"):
        QueueConfig(priorities={"email": 1})
    with pytest.raises(QueueError, match="capacity must be a positive int"):
        QueueConfig(capacity=0)


def test_capacity_drops_the_lowest_oldest_never_a_leased_one(path):
    q = TrainingQueue(path, QueueConfig(capacity=4))
    run(q.put([text(1, priority=5), text(2, priority=5), text(3, priority=9), text(4, priority=1)]))
    lease = run(q.lease("t", 4, kind="classification"))
    run(q.release(lease.id))
    held = run(q.lease("t", 1))                                # id 3, the highest
    assert [r.id for r in held.records] == [3]
    got = run(q.put([text(5, priority=5, created=0.0), text(6, priority=0)]))
    # room for 2 more: drop id 4 (priority 1), then the lowest of the rest: the new id 6 (0)
    assert got == {"added": 1, "duplicates": 0, "evicted": 1, "refused": 1, "ids": [5, None]}
    got = run(q.put([text(7, priority=100), text(8, priority=100), text(9, priority=100),
                     text(10, priority=100)]))
    # 3 is leased: never evicted; of the four new ones (same priority) the oldest is refused
    assert (got["evicted"], got["refused"], got["ids"]) == (3, 1, [None, 8, 9, 10])
    assert sorted(r.id for r in run(collect(q.records()))) == [3, 8, 9, 10]
    stats = run(q.stats())
    assert stats["by_priority"] == {9: 1, 100: 3} and stats["leased"] == 1


def test_stats_export_and_delete_by_origin(path):
    q = TrainingQueue(path)
    run(q.put([
        Record("classification", "correction", text="a", label="travel", origin={"tab": 1}),
        Record("classification", "dataset", text="b", label="travel", origin={"file": "x"}),
        Record("classification", "dataset", text="c", label="food", origin={"file": "x"}),
        Record("causal_lm", "chat", messages=[{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "yo"}],
               origin={"conversation": "c1"}),
    ]))
    run(q.lease("t", 1))
    assert run(q.stats()) == {
        "total": 4, "available": 3, "leased": 1, "capacity": 100_000, "leases": 1,
        "by_priority": {300: 1, 100: 2, 200: 1},
        "by_source": {"correction": 1, "dataset": 2, "chat": 1},
        "by_label": {"travel": 2, "food": 1}, "by_kind": {"classification": 3, "causal_lm": 1}}
    assert [r.text for r in run(collect(q.records(label="travel")))] == ["a", "b"]
    assert [r.text for r in run(collect(q.records(source="dataset", page=1)))] == ["b", "c"]
    assert run(q.delete(lambda origin: origin.get("file") == "x", source="correction")) == 0
    assert run(q.delete(lambda origin: origin.get("file") == "x")) == 2
    assert run(q.delete(lambda origin: "tab" in origin)) == 1  # leased: removed all the same
    assert [r.kind for r in run(collect(q.records()))] == ["causal_lm"]


def test_stats_and_deletion_read_past_a_page(path):
    q = TrainingQueue(path)
    run(q.put([text(i, label=f"l{i % 3}", created=float(i)) for i in range(2345)]))
    stats = run(q.stats())
    assert stats["total"] == 2345 and stats["by_label"] == {"l0": 782, "l1": 782, "l2": 781}
    assert run(q.delete(lambda origin: True)) == 2345


def test_replace_swaps_cleaned_records_for_their_originals_at_once(path):
    clock = Clock()
    q = TrainingQueue(path, QueueConfig(capacity=4, lease_seconds=10), clock=clock)
    run(q.put([text(i, priority=5) for i in range(4)]))
    lease = run(q.lease("t", 1))                               # id 1, then it expires
    clock.now += 11
    scrubbed = Record("classification", "text", text="example [EMAIL]", label="x", priority=5)
    got = run(q.replace([1, 2, 77], [scrubbed, text(3), text(9, priority=1)]))
    # 1 and 2 go; text(3) is still there (a duplicate); the queue has room for 2 of the new
    assert got == {"added": 2, "duplicates": 1, "evicted": 0, "refused": 0, "ids": [5, 4, 6],
                   "removed": 2}
    assert sorted(r.id for r in run(collect(q.records()))) == [3, 4, 5, 6]
    assert run(q.replace([3], [text(20, priority=0), text(21, priority=0)]))["refused"] == 1
    with pytest.raises(QueueError, match="no lease"):
        run(q.ack(lease.id))
    with pytest.raises(QueueError, match="record ids are ints"):
        run(q.replace(["1"]))


def test_a_failed_write_leaves_nothing(path, monkeypatch):
    q = TrainingQueue(path)
    run(q.put([text(i) for i in range(3)]))
    applied = []
    real = SQLiteStore._apply

    def failing(self, op):
        applied.append(op)
        if len(applied) == 5:
            raise sqlite3.OperationalError("disk I/O error")
        real(self, op)

    monkeypatch.setattr(SQLiteStore, "_apply", failing)
    with pytest.raises(StoreError, match="writing failed, nothing was written .disk I/O error"):
        run(q.put([text(i) for i in range(10, 20)]))
    monkeypatch.undo()
    assert len(applied) == 5
    assert [r.id for r in run(collect(q.records()))] == [1, 2, 3]
    assert run(q.put([text(10)]))["ids"] == [4]                # the counter did not move either


def test_a_write_breaking_the_unique_hash_fails_whole(path):
    q = TrainingQueue(path)
    run(q.put([text(1)]))
    same = [record_row(text(2), 100 + k, 1) for k in range(2)]

    async def clash(tx):
        tx.put("records", record_row(text(3), 99, 1))
        for row in same:
            tx.put("records", row)

    with pytest.raises(StoreError, match="nothing was written .UNIQUE constraint failed"):
        run(atomically(q.store, clash))
    assert [r.id for r in run(collect(q.records()))] == [1]


def test_a_counter_reading_low_never_hands_out_an_id_in_use(path):
    """A store put back from an older copy, or a browser that lost a write, may hold a counter
    lower than the ids already given: new records and leases still get ids above every one in
    the store, and a row staged under a taken key fails the write rather than replace it."""
    q = TrainingQueue(path)
    run(q.put([text(i) for i in range(5)]))
    assert run(atomically(q.store, lambda tx: tx.last("records"))) == 5

    async def rewind(tx):
        tx.put("counters", {"name": "records", "value": 2})

    async def forget(tx):
        tx.delete("counters", "records")

    run(atomically(q.store, rewind))
    assert run(q.put([text(10), text(11)]))["ids"] == [6, 7]
    run(atomically(q.store, forget))
    assert run(q.put([text(12)]))["ids"] == [8]                # no counter at all
    lease = run(q.lease("trainer", 10))
    assert run(q.ack(lease.id)) == 8                           # the queue is empty again
    assert run(atomically(q.store, lambda tx: tx.last("records"))) is None
    assert run(q.put([text(20)]))["ids"] == [9]                # the counter, when it is ahead

    async def rewind_leases(tx):
        tx.put("counters", {"name": "leases", "value": 2})     # lease-2 is held

    held = run(q.lease("trainer", 1))                          # lease-2: lease-1 was acked
    run(atomically(q.store, rewind_leases))
    run(q.put([text(21)]))
    other = run(q.lease("other", 1))
    assert (held.id, other.id) == ("lease-2", "lease-3")
    assert run(q.release(held.id)) == 1 and run(q.release(other.id)) == 1

    async def taken(tx):
        tx.insert("records", record_row(text(30), 11, 1))
        tx.insert("records", record_row(text(31), 9, 1))       # 9 is queued

    with pytest.raises(StoreError, match="nothing was written .UNIQUE constraint failed"):
        run(atomically(q.store, taken))
    assert [(r.id, r.text) for r in run(collect(q.records()))] == [(9, "example 20"),
                                                                   (10, "example 21")]


class Interleaving:
    """A store that yields to the event loop in the middle of every read, so that two writers'
    transactions interleave."""

    def __init__(self, store):
        self.store, self.name, self.lost = store, store.name, store.lost

    async def read(self, queries):
        await asyncio.sleep(0)
        found = await self.store.read(queries)
        await asyncio.sleep(0)
        return found

    async def write(self, ops, version):
        await asyncio.sleep(0)
        return await self.store.write(ops, version)

    def close(self):
        self.store.close()


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(path):
    async def main():
        queues = [TrainingQueue(Interleaving(open_store(path))) for _ in range(3)]
        rng = random.Random()
        batches = [[text(rng.randrange(120)) for _ in range(8)] for _ in range(30)]
        results = await asyncio.gather(*(queues[k % 3].put(b) for k, b in enumerate(batches)),
                                       *(queues[k % 3].lease(f"c{k}", 5) for k in range(6)))
        wanted = {r.content_hash for b in batches for r in b}
        kept = await collect(queues[0].records())
        leases = [r for r in results[30:] if r is not None]
        return wanted, kept, results[:30], leases

    wanted, kept, puts, leases = run(main())
    assert sorted(r.content_hash for r in kept) == sorted(wanted)
    assert sum(p["added"] for p in puts) == len(wanted)
    assert len({r.id for r in kept}) == len(kept)
    leased = [r.id for lease in leases for r in lease.records]
    assert len(leased) == len(set(leased))                     # no record in two leases


# --- the policies, modelled apart from the queue and run beside it ------------------------

class Model:
    def __init__(self, capacity, clock):
        self.capacity, self.clock = capacity, clock
        self.rows, self.leases, self.next_id, self.next_lease = {}, {}, 1, 1

    def reclaim(self):
        for lid, (expires, ids) in list(self.leases.items()):
            if expires <= self.clock():
                self.give_back(lid)

    def give_back(self, lid):
        for i in self.leases.pop(lid)[1]:
            if i in self.rows:
                self.rows[i]["lease"] = None

    def put(self, records):
        known = {row["hash"]: i for i, row in self.rows.items()}
        out = {"added": 0, "duplicates": 0, "evicted": 0, "refused": 0, "ids": []}
        new = []
        for r in records:
            h = r.content_hash
            if h in known or h in [n["hash"] for n in new]:
                out["duplicates"] += 1
            else:
                new.append({"id": self.next_id, "hash": h, "priority": r.priority,
                            "created": r.created, "kind": r.kind, "lease": None})
                self.next_id += 1
        self.reclaim()
        over = len(self.rows) + len(new) - self.capacity
        free = [row for row in self.rows.values() if row["lease"] is None] + new
        drop = {row["id"] for row in sorted(free, key=lambda row: (row["priority"], row["created"],
                                                                    row["id"]))[:max(over, 0)]}
        for row in new:
            if row["id"] in drop:
                out["refused"] += 1
            else:
                self.rows[row["id"]] = row
                known[row["hash"]] = row["id"]
                out["added"] += 1
        for i in drop:
            if self.rows.pop(i, None) is not None:
                out["evicted"] += 1
        out["ids"] = [known.get(r.content_hash) for r in records]
        return out

    def lease(self, n, kind, seconds):
        self.reclaim()
        free = sorted((row for row in self.rows.values() if row["lease"] is None and
                       kind in (None, row["kind"])),
                      key=lambda row: (-row["priority"], row["created"], row["id"]))[:n]
        if not free:
            return None
        lid = f"lease-{self.next_lease}"
        self.next_lease += 1
        self.leases[lid] = (self.clock() + seconds, [row["id"] for row in free])
        for row in free:
            row["lease"] = lid
        return lid, [row["id"] for row in free]

    def end(self, lid, ack):
        if lid not in self.leases:
            return "missing"
        if self.leases[lid][0] <= self.clock():
            self.give_back(lid)
            return "expired"
        ids = [i for i in self.leases[lid][1] if i in self.rows]
        if ack:
            for i in ids:
                del self.rows[i]
            del self.leases[lid]
        else:
            self.give_back(lid)
        return len(ids)


def test_random_operations_agree_with_the_model(path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    clock = Clock()
    capacity = rng.randint(5, 25)
    q = TrainingQueue(path, QueueConfig(capacity=capacity), clock=clock)
    model = Model(capacity, clock)
    leases = []

    def record():
        kind = rng.choice(["classification", "causal_lm"])
        return text(rng.randrange(60), priority=rng.choice([1, 2, 3]), kind=kind,
                    created=float(rng.randrange(5)))

    async def end(lid, ack):
        try:
            return await (q.ack(lid) if ack else q.release(lid))
        except QueueError as e:
            return "expired" if "are back in the queue" in str(e) else "missing"

    async def main():
        for step in range(250):
            op = rng.random()
            at = f"seed {seed}, step {step}"
            if op < 0.45:
                batch = [record() for _ in range(rng.randint(1, 8))]
                assert await q.put(batch) == model.put(batch), at
            elif op < 0.7:
                n, kind, seconds = rng.randint(1, 6), rng.choice([None, "classification",
                                                                  "causal_lm"]), rng.choice([5, 50])
                got = await q.lease("c", n, kind=kind, seconds=seconds)
                want = model.lease(n, kind, seconds)
                assert (None if got is None else (got.id, [r.id for r in got.records])) == want, at
                if got:
                    leases.append(got.id)
            elif op < 0.85 and leases:
                lid = rng.choice(leases)
                ack = rng.random() < 0.6
                assert await end(lid, ack) == model.end(lid, ack), at
            else:
                clock.now += rng.choice([1, 10, 30])
            stats = await q.stats()
            assert stats["total"] == len(model.rows) <= capacity, at
            live = {lid for lid, (expires, _) in model.leases.items() if expires > clock.now}
            assert stats["leased"] == sum(row["lease"] in live for row in model.rows.values()), at
        assert sorted(r.id for r in await collect(q.records())) == sorted(model.rows)

    run(main())


# --- bad input ------------------------------------------------------------------------------

def test_bad_calls_are_refused_with_a_message(path):
    q = TrainingQueue(path)
    with pytest.raises(QueueError, match="put: item 1 is a dict, not a Record"):
        run(q.put([text(1), {"text": "x"}]))
    with pytest.raises(QueueError, match="created=inf"):
        run(q.put([Record("causal_lm", "text", text="x", created=float("inf"))]))
    with pytest.raises(QueueError, match="n must be a positive int"):
        run(q.lease("t", 0))
    with pytest.raises(QueueError, match="unknown kind 'regression'"):
        run(q.lease("t", 1, kind="regression"))
    with pytest.raises(QueueError, match="seconds must be a positive number"):
        run(q.lease("t", 1, seconds=float("nan")))
    with pytest.raises(QueueError, match="consumer must be a non-empty name"):
        run(q.lease("", 1))
    assert run(q.count()) == 0


def test_bad_store_files_are_refused_and_left_alone(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"my notes, not a database\n" * 200)
    with pytest.raises(StoreError, match="notes.txt: not a py_engine data store"):
        open_store(junk)
    assert junk.read_bytes() == b"my notes, not a database\n" * 200
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="an SQLite file of another program"):
        open_store(other)
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path)
    with pytest.raises(StoreError, match="no directory"):
        open_store(tmp_path / "missing" / "q.sqlite")
    newer = tmp_path / "newer.sqlite"
    open_store(newer).close()
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="a newer py_engine .layout 99"):
        open_store(newer)
