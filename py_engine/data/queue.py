"""The training queue: every example waiting to be learned, kept in the data store (SQLite on
the host, IndexedDB in the browser; see storage/), surviving reloads, restarts and kills.

    queue = TrainingQueue(open_store("queue.sqlite"))              # or open_store("default") in Pyodide
    await queue.put(records)          # {"added", "duplicates", "evicted", "refused", "ids"}
    lease = await queue.lease("trainer", 16, kind="causal_lm")     # None when nothing is waiting
    ...train on lease.records, commit the step...
    await queue.ack(lease.id)         # the records are gone for good
    await queue.release(lease.id)     # or: give them back (a failed step)
    await queue.stats()
    async for record in queue.records(kind="classification"): ...    # export
    await queue.replace(ids, cleaned)  # cleaning: originals out, scrubbed records in, at once

Order: priority (higher first; by source by default: corrections above chats above imports,
QueueConfig.priorities overrides a source's default), then age (older first), then arrival.
Duplicates: a record whose content hash (record.content_hash: kind, text, label, messages) is
already queued is not added again, whatever its source.
Leases: a consumer takes the first `n` records no live lease holds and acknowledges them once
the step that used them is committed. A lease not acknowledged or released before it expires
(the consumer died) gives its records back by itself; acknowledging it then is refused, since
another consumer may already hold them. Leases are timed by `clock` (time.time by default;
tests pass their own).
Capacity: when a put would leave more than `capacity` records, the lowest-priority records are
dropped, oldest first (the new ones take part: a new record that ranks below everything kept is
refused rather than added), never one under a live lease; a queue full of leased records refuses
what does not fit.
Atomicity: put, lease, ack, release and delete are each one store transaction: stored whole or
not at all, even when the process or page dies in the middle.
Ids: a new record's or lease's id lies above every one in the store and above the store's
counter, and is inserted, never put in place of a row: a counter gone wrong can neither reuse
an id nor overwrite a record.
"""

import math
import time
from dataclasses import dataclass, field

from .classification import DataError
from .record import DEFAULT_PRIORITY, KINDS, SOURCES, Record, label_names
from .storage import atomically, open_store

DEFAULT_CAPACITY = 100_000
LEASE = "lease-"      # a lease's id: this, then a number from the counter "leases"
LEASE_SECONDS = 600.0
PAGE = 500


class QueueError(DataError):
    """A queue operation that cannot be done; the message says why."""


@dataclass
class QueueConfig:
    capacity: int = DEFAULT_CAPACITY
    priorities: dict = field(default_factory=dict)   # source -> priority of its records
    lease_seconds: float = LEASE_SECONDS

    def __post_init__(self):
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int) or self.capacity < 1:
            raise QueueError(f"capacity must be a positive int, got {self.capacity!r}")
        for source, priority in self.priorities.items():
            if source not in SOURCES:
                raise QueueError(f"priorities: unknown source {source!r}; sources are {SOURCES}")
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise QueueError(f"priorities[{source!r}] must be an int, got {priority!r}")
        _check_seconds(self.lease_seconds, "lease_seconds")

    def priority(self, record):
        """A record's priority in this queue: the configured one for its source when the record
        carries its source's default (was given none), else its own."""
        if record.priority == DEFAULT_PRIORITY[record.source]:
            return self.priorities.get(record.source, record.priority)
        return record.priority


@dataclass
class Lease:
    id: str
    consumer: str
    expires: float
    records: list


def _check_seconds(seconds, name):
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
            not math.isfinite(seconds) or seconds <= 0:
        raise QueueError(f"{name} must be a positive number of seconds, got {seconds!r}")


def record_row(record, id, priority):
    """The store's row of a record (schema.py, table "records")."""
    content = {"text": record.text} if record.messages is None else {"messages": record.messages}
    return {"id": id, "hash": record.content_hash, "kind": record.kind, "source": record.source,
            "label": record.label, "priority": priority, "rank": -priority,
            "created": record.created, "leased": 0, "lease": "", "origin": record.origin,
            "content": content}


def row_record(row):
    content = row["content"]
    return Record(row["kind"], row["source"], text=content.get("text"), label=row["label"],
                  messages=content.get("messages"), priority=row["priority"],
                  created=row["created"], origin=row["origin"], id=row["id"])


def _evict_order(row):
    return (row["priority"], row["created"], row["id"])


def _take_order(row):
    return (row["rank"], row["created"], row["id"])


class TrainingQueue:
    def __init__(self, store, config=None, clock=time.time):
        self.store = open_store(store)
        self.config = config or QueueConfig()
        self.clock = clock

    async def next_ids(self, tx, name, n, above=0):
        """`n` fresh ids from the store's counter `name` (staged in `tx`), all above `above`
        (the greatest id in use): a counter reading lower than the ids it handed out (a store
        put back from an older copy, a browser that lost a write when it was killed) must not
        hand them out again."""
        row = await tx.get_one("counters", name)
        first = max(row["value"] if row else 1, above + 1)
        tx.put("counters", {"name": name, "value": first + n})
        return range(first, first + n)

    # --- writing -------------------------------------------------------------------------

    async def put(self, records):
        """Add records in one transaction: {"added", "duplicates", "evicted", "refused",
        "ids"}: ids holds, per record given, its id in the queue (the one already queued for a
        duplicate), or None when it was refused for want of room."""
        records = self._checked(records)
        return await atomically(self.store, lambda tx: self.put_in(tx, records))

    def _checked(self, records):
        records = list(records)
        for i, r in enumerate(records):
            if not isinstance(r, Record):
                raise QueueError(f"put: item {i} is a {type(r).__name__}, not a Record")
            if not math.isfinite(r.created):
                raise QueueError(f"put: record {i} has created={r.created!r}, not a time")
        return records

    async def put_in(self, tx, records, removing=frozenset()):
        """put() staged in a transaction of the caller's (records checked by the caller), in
        which the records with ids `removing` are being deleted."""
        result = {"added": 0, "duplicates": 0, "evicted": 0, "refused": 0, "ids": []}
        if not records:
            return result
        hashes = [r.content_hash for r in records]
        found = await tx.get_by("records", "hash", [[h] for h in set(hashes)])
        known = {row["hash"]: row["id"] for row in found if row and row["id"] not in removing}
        fresh = []
        for record, h in zip(records, hashes):
            if h in known:
                result["duplicates"] += 1
            else:
                fresh.append(record)
                known[h] = None          # later copies in this batch are duplicates too
        highest = await tx.last("records") or 0
        new_ids = await self.next_ids(tx, "records", len(fresh), above=highest)
        rows = [record_row(r, i, self.config.priority(r)) for r, i in zip(fresh, new_ids)]
        reclaimed = [r for r in await self._reclaim(tx) if r["id"] not in removing]
        total = await tx.count("records") - len(removing)
        over = total + len(rows) - self.config.capacity
        dropped = set()
        if over > 0:
            evictable = await tx.scan("records", "evict", prefix=[0], limit=over + len(removing),
                                      fields=("id", "priority", "created"))
            evictable = [r for r in evictable if r["id"] not in removing]
            candidates = sorted(evictable + reclaimed + rows, key=_evict_order)
            dropped = {row["id"] for row in candidates[:over]}
        for row in rows:
            if row["id"] in dropped:
                result["refused"] += 1
                known[row["hash"]] = None
            else:
                tx.insert("records", row)        # never in place of a record already queued
                known[row["hash"]] = row["id"]
                result["added"] += 1
        fresh_ids = {row["id"] for row in rows}
        for key in dropped - fresh_ids:
            tx.delete("records", key)
            result["evicted"] += 1
        result["ids"] = [known[h] for h in hashes]
        return result

    async def replace(self, ids, records=()):
        """Remove the records with these ids (leased or not) and put `records`, in one
        transaction: what cleaning does, a scrubbed record taking its original's place. Returns
        put()'s counts plus "removed" (ids not in the queue are not counted)."""
        ids = list(ids)
        if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise QueueError(f"replace: record ids are ints, got {ids!r:.80}")
        records = self._checked(records)

        async def work(tx):
            present = {row["id"] for row in await tx.get("records", ids) if row is not None}
            result = await self.put_in(tx, records, removing=present)
            for key in sorted(present):      # after put_in's ops, which may release one
                tx.delete("records", key)
            return dict(result, removed=len(present))

        return await atomically(self.store, work)

    async def delete(self, where, source=None):
        """Remove, in one transaction, every record whose origin satisfies `where(origin)` (and
        whose source is `source`, when given), leased or not; returns how many."""
        return await atomically(self.store, lambda tx: self.delete_in(tx, where, source))

    async def delete_in(self, tx, where, source=None):
        """delete() staged in a transaction of the caller's."""
        count = 0
        async for row in tx.scan_all("records", fields=("id", "source", "origin")):
            if (source is None or row["source"] == source) and where(row["origin"]):
                tx.delete("records", row["id"])
                count += 1
        return count

    # --- leasing -------------------------------------------------------------------------
    # Ops apply in the order staged, so a record released by _reclaim and then leased again or
    # evicted in the same transaction ends up as the later op leaves it.

    async def _reclaim(self, tx, leases=None):
        """Stage the release of every expired lease; returns its records' rows as released.
        `leases`: the leases table's rows, when the caller has read them already."""
        now = self.clock()
        rows = []
        for lease in await tx.scan("leases") if leases is None else leases:
            if lease["expires"] <= now:
                rows += await self._give_back(tx, lease)
        return rows

    async def _give_back(self, tx, lease):
        """Stage the end of `lease` with its records back in the queue; returns their rows."""
        rows = [dict(row, leased=0, lease="") for row in await tx.get("records", lease["records"])
                if row is not None and row["lease"] == lease["id"]]
        for row in rows:
            tx.put("records", row)
        tx.delete("leases", lease["id"])
        return rows

    async def lease(self, consumer, n, kind=None, seconds=None, exclude=()):
        """A Lease on the first `n` records (of `kind`, when given) that no live lease holds,
        for `seconds` (the config's lease_seconds by default); None when there are none.
        `exclude`: ids of records not to take (a trainer's held-out examples)."""
        exclude = frozenset(exclude)
        if not isinstance(consumer, str) or not consumer:
            raise QueueError(f"lease: the consumer must be a non-empty name, got {consumer!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise QueueError(f"lease: n must be a positive int, got {n!r}")
        if kind is not None and kind not in KINDS:
            raise QueueError(f"lease: unknown kind {kind!r}; kinds are {KINDS}")
        seconds = self.config.lease_seconds if seconds is None else seconds
        _check_seconds(seconds, "lease: seconds")

        async def work(tx):
            leases = await tx.scan("leases")
            reclaimed = [r for r in await self._reclaim(tx, leases) if kind is None or r["kind"] == kind]
            limit = n + len(exclude)
            if kind is None:
                rows = await tx.scan("records", "take", prefix=[0], limit=limit)
            else:
                rows = await tx.scan("records", "take_kind", prefix=[0, kind], limit=limit)
            chosen = sorted((r for r in rows + reclaimed if r["id"] not in exclude),
                            key=_take_order)[:n]
            if not chosen:
                return None
            now = self.clock()
            held = max((int(lease["id"][len(LEASE):]) for lease in leases), default=0)
            number = (await self.next_ids(tx, "leases", 1, above=held))[0]
            lease_id = f"{LEASE}{number}"
            tx.insert("leases", {"id": lease_id, "consumer": consumer, "created": now,
                              "expires": now + seconds, "records": [r["id"] for r in chosen]})
            for row in chosen:
                tx.put("records", dict(row, leased=1, lease=lease_id))
            return Lease(lease_id, consumer, now + seconds, [row_record(r) for r in chosen])

        return await atomically(self.store, work)

    async def _live_lease(self, tx, lease_id, verb):
        """The lease row, when it is held and not expired; an expired one is given back (staged)
        and None returned; an unknown one is an error."""
        lease = await tx.get_one("leases", lease_id)
        if lease is None:
            raise QueueError(f"{verb}: no lease {lease_id!r} is held (acknowledged, released or "
                             "expired and given back already)")
        if lease["expires"] <= self.clock():
            await self._give_back(tx, lease)
            return None
        return lease

    async def _end_lease(self, lease_id, verb, work):
        async def run(tx):
            lease = await self._live_lease(tx, lease_id, verb)
            return None if lease is None else await work(tx, lease)

        done = await atomically(self.store, run)
        if done is None:
            raise QueueError(f"{verb}: lease {lease_id!r} expired; its records are back in the "
                             "queue")
        return done

    async def ack(self, lease_id):
        """The step that used the lease is committed: its records leave the queue for good (one
        transaction). Returns how many were removed (a record deleted meanwhile, e.g. by a
        chat's opt-out, is not counted). An expired lease is refused."""
        async def work(tx, lease):
            rows = await tx.get("records", lease["records"])
            mine = [row["id"] for row in rows if row is not None and row["lease"] == lease_id]
            for key in mine:
                tx.delete("records", key)
            tx.delete("leases", lease_id)
            return len(mine)

        return await self._end_lease(lease_id, "ack", work)

    async def release(self, lease_id):
        """Give a lease's records back to the queue unused (one transaction); returns how many."""
        async def work(tx, lease):
            return len(await self._give_back(tx, lease))

        return await self._end_lease(lease_id, "release", work)

    async def renew(self, lease_id, seconds=None):
        """Extend a live lease to `seconds` from now; returns its new expiry time."""
        seconds = self.config.lease_seconds if seconds is None else seconds
        _check_seconds(seconds, "renew: seconds")

        async def work(tx, lease):
            expires = self.clock() + seconds
            tx.put("leases", dict(lease, expires=expires))
            return expires

        return await self._end_lease(lease_id, "renew", work)

    # --- reading -------------------------------------------------------------------------

    async def count(self):
        return await atomically(self.store, lambda tx: tx.count("records"))

    async def stats(self):
        """Counts of the queued records, read in one consistent view: total, available, leased
        (under a live lease), capacity, live leases, and by priority, source, label
        (classification records; a multi-label one under each of its names) and kind; with "lost" when the browser found the store
        corrupt and started it empty (its message: what was queued before is gone), until
        acknowledge_loss."""
        async def work(tx):
            now = self.clock()
            live = {lease["id"] for lease in await tx.scan("leases") if lease["expires"] > now}
            out = {"total": 0, "available": 0, "leased": 0, "capacity": self.config.capacity,
                   "leases": len(live), "by_priority": {}, "by_source": {}, "by_label": {},
                   "by_kind": {}}
            fields = ("priority", "source", "label", "kind", "lease")
            async for row in tx.scan_all("records", fields=fields):
                out["total"] += 1
                out["leased" if row["lease"] in live else "available"] += 1
                for name, value in (("by_priority", row["priority"]), ("by_source", row["source"]),
                                    ("by_kind", row["kind"])):
                    out[name][value] = out[name].get(value, 0) + 1
                for label in label_names(row["label"]):
                    out["by_label"][label] = out["by_label"].get(label, 0) + 1
            return out

        out = await atomically(self.store, work)
        if self.store.lost:
            out["lost"] = self.store.lost
        return out

    async def acknowledge_loss(self):
        """The user has read stats' "lost": it is no longer said, in this page or any other."""
        await self.store.acknowledge_loss()

    async def records(self, kind=None, source=None, label=None, page=PAGE):
        """Every queued record (leased ones too) in the order they were added, as Records with
        their ids, optionally only those of a kind, source or label (a name: the records of that
        one label, not the multi-label ones that hold it). Read page by page: a
        record added or removed meanwhile may or may not be seen."""
        after = None
        while True:
            rows = await atomically(self.store, lambda tx: tx.scan("records", after=after,
                                                                     limit=page))
            for row in rows:
                if (kind is None or row["kind"] == kind) and \
                        (source is None or row["source"] == source) and \
                        (label is None or row["label"] == label):
                    yield row_record(row)
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def close(self):
        self.store.close()
