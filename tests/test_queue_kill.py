"""A writer killed in the middle of a burst of puts, many times: after each SIGKILL the store
opens cleanly and every put is whole or absent, every put the writer saw return is there, and
ids are never reused."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from py_engine.data.queue import TrainingQueue
from py_engine.data.record import Record
from test_queue import run

ROOT = Path(__file__).resolve().parents[1]
KILLS = 32
BATCH = 200

WRITER = """
import asyncio, sys
from py_engine.data.queue import TrainingQueue
from py_engine.data.record import Record

path, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    global batch
    queue = TrainingQueue(path)
    while True:
        await queue.put([Record("classification", "text", text=f"batch {batch} item {i}",
                                label=f"b{batch % 7}", origin={"batch": batch, "item": i})
                         for i in range(size)])
        print(batch, flush=True)       # this put returned: it must survive
        batch += 1

asyncio.run(main())
"""


def burst_and_kill(path, first, rng):
    """Start a writer at batch `first`, kill it a random moment after its first put returned;
    returns the batches it reported done."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(first), str(BATCH)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    done = [int(child.stdout.readline())]
    time.sleep(rng.uniform(0, 0.15))        # the kill lands anywhere in the following puts
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done += [int(line) for line in child.stdout.read().split()]
    child.stdout.close()
    return done


async def survivors(path):
    queue = TrainingQueue(path)
    batches = {}
    async for r in queue.records():
        assert r.text == f"batch {r.origin['batch']} item {r.origin['item']}"
        batches.setdefault(r.origin["batch"], []).append(r)
    queue.close()
    return batches


def test_killed_writers_leave_whole_puts(tmp_path):
    path = tmp_path / "queue.sqlite"
    rng = random.Random()
    acknowledged, in_flight, first = set(), set(), 0
    for _ in range(KILLS):
        done = burst_and_kill(path, first, rng)
        assert done == list(range(first, first + len(done)))
        acknowledged.update(done)
        in_flight.add(first + len(done))    # the put under way when the kill came
        first += len(done) + 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    batches = run(survivors(path))
    assert acknowledged <= set(batches)                       # nothing that returned was lost
    assert set(batches) - acknowledged <= in_flight           # nothing else appeared
    for number, records in batches.items():
        ids = sorted(r.id for r in records)
        assert len(records) == BATCH, f"batch {number} is partial: {len(records)} records"
        assert ids == list(range(ids[0], ids[0] + BATCH))     # one put: consecutive ids
    everything = [r.id for records in batches.values() for r in records]
    assert len(set(everything)) == len(everything)
    committed_in_flight = len(set(batches) - acknowledged)
    print(f"{KILLS} kills, {len(acknowledged)} puts acknowledged, {committed_in_flight} of "
          f"{KILLS} in-flight puts committed before the kill, {len(everything)} records")

    queue = TrainingQueue(path)
    after = run(queue.put([Record("causal_lm", "text", text="after the kills")]))
    assert after["ids"][0] > max(everything)                  # ids are never reused
