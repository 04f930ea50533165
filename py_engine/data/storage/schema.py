"""The data store's layout: its tables, their keys and indexes. One layout, two back ends: an
SQLite file on the host (sqlite_store.py) and an IndexedDB database in the browser
(web/src/queue_store.mjs); both build themselves from this description.

A row is a JSON-ready dict holding its key field. An index orders rows by its fields, then by
the row's key; its fields are always numbers or strings (IndexedDB cannot index null or
booleans), so the tables below keep flags as 0/1 and absent values as "".

    records        the training queue (queue.py): one row per example
                   {id, hash, kind, source, label, priority, rank (= -priority), created,
                    leased (0/1), lease ("" or a lease id), origin, content}
    leases         batches handed to consumers: {id, consumer, created, expires, records: [ids]}
    counters       named counters the queue and chat log draw ids from: {name, value}
    messages       the chat log (chat_log.py): {id, conversation, seq, role, content, timestamp}
    conversations  {id, created, updated, opted_out (0/1)}
"""

VERSION = 1


class Index:
    __slots__ = ("fields", "unique")

    def __init__(self, *fields, unique=False):
        self.fields, self.unique = fields, unique


class Table:
    __slots__ = ("key", "indexes")

    def __init__(self, key, **indexes):
        self.key, self.indexes = key, indexes

    def columns(self):
        """The key, then every indexed field once."""
        out = [self.key]
        for index in self.indexes.values():
            out += [f for f in index.fields if f not in out]
        return out


TABLES = {
    "records": Table(
        "id",
        hash=Index("hash", unique=True),
        take=Index("leased", "rank", "created"),               # highest priority, then oldest
        take_kind=Index("leased", "kind", "rank", "created"),
        evict=Index("leased", "priority", "created"),           # lowest priority, then oldest
    ),
    "leases": Table("id"),
    "counters": Table("name"),
    "messages": Table("id", conversation=Index("conversation", "seq")),
    "conversations": Table("id"),
}


def as_json():
    """The layout as the IndexedDB store takes it."""
    return {"version": VERSION, "tables": {
        name: {"key": t.key, "indexes": {i: {"fields": list(ix.fields), "unique": ix.unique}
                                         for i, ix in t.indexes.items()}}
        for name, t in TABLES.items()}}
