"""The records a learner trains on, taken from the training queue.

    ws = WorkingSet(epochs=3)
    arrived, validation_changed = await ws.refresh(queue, "classification", model.unusable)
    ws.start_generation()          # the records to train on next (a trainer's examples)
    ws.count_step(trainer.last_indices)    # after each optimizer step
    await ws.consume(queue)        # after the state that learned them is saved

Replay: records learned (and consumed) are remembered, the newest `memory` of them, and a
generation mixes `replay` times as many of them (a sample) as it has new records, so what was
learned earlier is not forgotten; corrections count `repeats` times in a generation (they are
few, and the user asked for them), and one the model still gets wrong after its generation is
trained on again (relearn, a few rounds at most).

Background: records the model learned before it came here (a sample of its own training
data, `background`, not from the queue, never saved) are replayed like learned ones, so that a
few corrections do not pull the rest of what it knows with them.

Held out: every `every`-th record by content hash (never a correction: the user asked for it to
be learned) is the guard's validation set, with the corrections learned (a model that forgets
what the user said is worse); a held-out record stays in the queue, never leased, never trained
on, never consumed. Held-out records that arrive once the set has some are on probation until
everything pending has been learned: the guard judges new data by the records it already
trusts (a poisoned import's own held-out records would agree with it), and a rollback rejects
them for good. The others are leased for training (the lease renewed while they are
held) and each is trained on `epochs` times (once per epoch of the generations it is in); a
lease all of whose records were trained that often is acknowledged once the state that learned
them is saved, and they leave the queue. New records start a new generation (between
optimizer steps): the records not yet trained `epochs` times, old and new together.

The whole set is JSON (as_json / from_json): a saved state keeps it, so a reload trains on
exactly the examples it was training on. Pure Python: this runs in the browser.
"""

import random

from ..data.queue import QueueError
from ..data.record import Record

HELD_OUT_EVERY = 10
MEMORY = 512
CORRECTION_REPEATS = 4
CORRECTION_ROUNDS = 4
CONSUMER = "trainer"


def held_out(record, every=HELD_OUT_EVERY):
    """Whether a record is kept for validation (every `every`-th by content hash)."""
    return record.source != "correction" and int(record.content_hash[:15], 16) % every == 0


def repeats(record):
    """How many times a record appears in a generation."""
    return CORRECTION_REPEATS if record.source == "correction" else 1


class WorkingSet:
    def __init__(self, epochs, every=HELD_OUT_EVERY, memory=MEMORY):
        """epochs: how often each record is trained on; every: one record in `every` is held
        out; memory: learned records kept for replay."""
        self.epochs, self.every, self.memory_size = epochs, every, memory
        self.memory = []        # learned Records, newest last (replayed)
        self.generations = 0
        self.records = {}       # id -> Record, leased for training
        self.uses = {}          # id -> optimizer steps that trained on it
        self.leases = {}        # lease id -> {"records": [ids], "expires": queue time}
        self.validation = []    # held-out Records, by id
        self.generation = []    # the Records of the current generation, the trainer's order
        self.unusable = {}      # id -> why the model cannot learn it
        self.orphans = set()    # ids whose lease was lost (to be leased again)
        self.tainted = set()    # ids trained on before a rollback: learned, never replayed
        self.admitted = set()   # held-out ids in the validation set
        self.probation = set()  # held-out ids waiting for what arrived with them to be learned
        self.rejected = set()   # held-out ids that arrived with data a rollback undid
        self.rounds = {}        # correction id -> times trained on again (relearn)
        self.background = []    # Records learned before (negative ids), replayed; not saved
        self.replay = 1         # learned records replayed per new one (LearnerConfig.replay)

    # --- taking records from the queue ---

    async def refresh(self, queue, kind, unusable):
        """Take what the queue holds now. unusable(record) -> None or why the model cannot
        learn it. Returns (training records arrived or left, validation changed)."""
        seen = {}
        async for record in queue.records(kind=kind):
            seen[record.id] = record
        changed = False
        for rid in [i for i in self.records if i not in seen]:     # deleted meanwhile
            self._drop(rid)
            changed = True
        held, wanted = [], []
        for rid, record in sorted(seen.items()):
            if rid not in self.unusable:
                why = unusable(record)
                if why is not None:
                    self.unusable[rid] = why
            if rid in self.unusable:
                continue
            if held_out(record, self.every):
                held.append(record)
            elif rid not in self.records or rid in self.orphans:
                wanted.append(rid)
        await self._renew(queue)
        if wanted:
            exclude = set(seen) - set(wanted)
            lease = await queue.lease(CONSUMER, len(wanted), kind=kind, exclude=exclude)
            if lease is not None:
                ids = [r.id for r in lease.records]
                self.leases[lease.id] = {"records": ids, "expires": lease.expires}
                for record in lease.records:
                    if record.id not in self.records:
                        changed = True
                    self.records[record.id] = record
                    self.uses.setdefault(record.id, 0)
                    self.orphans.discard(record.id)
        validation = self._checks(self._admit(held))
        validation_changed = [r.id for r in validation] != [r.id for r in self.validation]
        self.validation = validation
        return changed, validation_changed

    def _admit(self, held):
        """The held-out records the guard trusts: the first ones at once, later ones once
        nothing is pending (what arrived with them has been learned without a rollback)."""
        first = not self.admitted
        for record in held:
            if record.id in self.admitted or record.id in self.rejected:
                continue
            (self.admitted if first else self.probation).add(record.id)
        if self.probation and not self.pending():
            self.admitted |= self.probation
            self.probation.clear()
        return [r for r in held if r.id in self.admitted]

    def _checks(self, held):
        """The guard's validation set: the held-out records, and every correction the set
        knows (a model that forgets what the user said is worse, whatever the rest says)."""
        corrections = {r.id: r for r in list(self.records.values()) + self.memory
                       if r.source == "correction"}
        return held + [corrections[i] for i in sorted(corrections)]

    def _drop(self, rid):
        self.records.pop(rid, None)
        self.uses.pop(rid, None)
        self.rounds.pop(rid, None)
        self.orphans.discard(rid)
        for info in self.leases.values():
            if rid in info["records"]:
                info["records"].remove(rid)

    async def _renew(self, queue):
        """Renew leases past half their time; a lease lost (expired and given back) leaves
        its records to be leased again."""
        half = queue.config.lease_seconds / 2
        for lid, info in list(self.leases.items()):
            if info["expires"] - queue.clock() > half:
                continue
            try:
                info["expires"] = await queue.renew(lid)
            except QueueError:
                del self.leases[lid]
                self.orphans.update(i for i in info["records"] if i in self.records)

    # --- generations ---

    def _target(self, record):
        return self.epochs * repeats(record)

    def pending(self):
        """The records still to be trained on `epochs` times, by id."""
        return [self.records[i] for i in sorted(self.records)
                if self.uses[i] < self._target(self.records[i])]

    def start_generation(self):
        """The pending records (corrections repeated) and a sample of learned ones become the
        current generation (the trainer's examples); empty when nothing is pending."""
        pending = self.pending()
        if not pending:                  # the last generation stays the trainer's examples
            return []
        self.generations += 1
        news = [r for r in pending for _ in range(repeats(r))]
        ids = {r.id for r in pending}
        learned = [r for r in self.memory + self.background if r.id not in ids]
        count = min(len(learned), self.replay * len(news))
        replay = random.Random(self.generations).sample(learned, count) if count else []
        self.generation = news + sorted(replay, key=lambda r: r.id)
        return self.generation

    def count_step(self, indices):
        """An optimizer step trained on the generation's examples at `indices`."""
        for i in indices:
            rid = self.generation[i].id
            if rid in self.uses:
                self.uses[rid] += 1

    async def consume(self, queue):
        """Acknowledge the leases all of whose records were trained `epochs` times: they
        leave the queue and the set. Call once the state that learned them is saved. Returns
        how many records left."""
        gone = 0
        for lid, info in list(self.leases.items()):
            ids = [i for i in info["records"] if i in self.records]
            if any(self.uses[i] < self.epochs for i in ids):
                continue
            try:
                await queue.ack(lid)
            except QueueError:           # the lease expired: remove them by id all the same
                await queue.replace(ids)
            del self.leases[lid]
            for i in ids:
                self._remember(self.records[i])
                self._drop(i)
            gone += len(ids)
        return gone

    async def release(self, queue):
        """Give every lease back to the queue (its records are leased again by whoever learns
        next); the set holds no training records afterwards."""
        for lid in list(self.leases):
            try:
                await queue.release(lid)
            except QueueError:           # expired and given back already
                pass
            del self.leases[lid]
        for rid in list(self.records):
            self._drop(rid)

    def relearn(self, rid, rounds=CORRECTION_ROUNDS):
        """A record the model still gets wrong after its generation (a correction) is pending
        again, at most `rounds` times. Returns whether it is."""
        done = self.rounds.get(rid, 0)
        if rid not in self.records or done >= rounds:
            return False
        self.rounds[rid] = done + 1
        self.uses[rid] = 0
        return True

    def taint_generation(self):
        """A rollback undid training on the current generation: its new records are not
        replayed later (they may be what made the model worse)."""
        self.tainted.update(r.id for r in self.generation if r.id in self.records)
        self.rejected |= self.probation
        self.probation.clear()

    def _remember(self, record):
        if record.id in self.tainted:
            self.tainted.discard(record.id)
            return
        self.memory = [r for r in self.memory if r.content_hash != record.content_hash]
        self.memory = (self.memory + [record])[-self.memory_size:]

    def counts(self):
        return {"training": len(self.records), "pending": len(self.pending()),
                "memory": len(self.memory), "background": len(self.background),
                "generation": len(self.generation), "validation": len(self.validation),
                "probation": len(self.probation), "rejected": len(self.rejected),
                "unusable": len(self.unusable), "leases": len(self.leases)}

    # --- saved with the state ---

    def as_json(self):
        table = {}
        for record in list(self.records.values()) + self.generation + self.validation + self.memory:
            table[str(record.id)] = record.as_dict()
        return {"epochs": self.epochs, "every": self.every, "records": table,
                "memory": [r.id for r in self.memory], "generations": self.generations,
                "training": sorted(self.records), "uses": {str(k): v for k, v in self.uses.items()},
                "leases": self.leases, "validation": [r.id for r in self.validation],
                "generation": [r.id for r in self.generation],
                "unusable": {str(k): v for k, v in self.unusable.items()},
                "orphans": sorted(self.orphans), "tainted": sorted(self.tainted),
                "admitted": sorted(self.admitted), "probation": sorted(self.probation),
                "rejected": sorted(self.rejected),
                "rounds": {str(k): v for k, v in self.rounds.items()}}

    @classmethod
    def from_json(cls, data, epochs):
        ws = cls(epochs, data.get("every", HELD_OUT_EVERY))
        table = {int(k): Record.from_dict(v) for k, v in data["records"].items()}
        ws.records = {i: table[i] for i in data["training"]}
        ws.uses = {int(k): v for k, v in data["uses"].items()}
        ws.leases = {lid: dict(info) for lid, info in data["leases"].items()}
        ws.validation = [table[i] for i in data["validation"]]
        ws.generation = [table[i] for i in data["generation"]]
        ws.unusable = {int(k): v for k, v in data.get("unusable", {}).items()}
        ws.orphans = set(data.get("orphans", []))
        ws.memory = [table[i] for i in data.get("memory", [])]
        ws.tainted = set(data.get("tainted", []))
        ws.admitted = set(data.get("admitted", []))
        ws.probation = set(data.get("probation", []))
        ws.rejected = set(data.get("rejected", []))
        ws.rounds = {int(k): v for k, v in data.get("rounds", {}).items()}
        ws.generations = data.get("generations", 0)
        return ws
