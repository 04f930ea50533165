"""The training queue and the chat log inside Chromium (Pyodide, IndexedDB): the same script
gives the same answers in the page as on the host over SQLite, across a page reload; and pages
killed in the middle of a burst of puts (renderer SIGKILLed, page closed, navigated away, the
whole browser SIGKILLed and started again on its profile) leave every put whole or absent; and
a database Chromium found corrupt, deleted and started empty is reported as lost."""

import json
import os
import random
import signal
import time
import uuid
import warnings
from pathlib import Path

import pytest

from conftest import run
from py_engine.harness import run_json, wait_for_engine
from py_engine.server import ServerThread

pytestmark = pytest.mark.browser

SCENARIO = '''
import json
from py_engine.data.chat_log import ChatLog
from py_engine.data.queue import QueueConfig, QueueError, TrainingQueue, record_row
from py_engine.data.record import Record
from py_engine.data.storage import StoreError, atomically


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


CONFIG = QueueConfig(capacity=30, priorities={"website": 150}, lease_seconds=300)


def open_queue(target, now):
    clock = Clock(now)
    queue = TrainingQueue(target, CONFIG, clock=clock)
    return queue, ChatLog(queue, max_tokens=40, clock=clock), clock


def batch(start, n, source, kind="classification"):
    if kind == "classification":
        # every fourth a multi-label record: its list of names kept and counted name by name
        return [Record(kind, source, text=f"text {i}",
                       label=[f"l{i % 3}", "all"] if i % 4 == 0 else f"l{i % 3}",
                       created=100.0 + i, origin={"n": i}) for i in range(start, start + n)]
    return [Record(kind, source, text=f"{source} passage {i} " + "word " * (i % 5),
                   created=100.0 + i % 4, origin={"n": i}) for i in range(start, start + n)]


async def part_one(target):
    queue, chat, clock = open_queue(target, 1000.0)
    out = {"puts": []}
    for records in (batch(0, 12, "dataset"), batch(0, 10, "website", "causal_lm"),
                    batch(8, 6, "correction"), batch(10, 12, "text", "causal_lm")):
        out["puts"].append(await queue.put(records))
    for k in range(4):
        await chat.log("c1", "user", f"question {k} " + "why " * k)
        clock.now += 1
        await chat.log("c1", "assistant", f"answer {k} " + "because " * k)
    await chat.log("c2", "user", "private")
    await chat.log("c2", "assistant", "reply")
    held = await queue.lease("trainer", 5)
    dying = await queue.lease("dies", 3, kind="causal_lm", seconds=30)
    out["leases"] = [[r.as_dict() for r in lease.records] for lease in (held, dying)]
    out["stats"] = await queue.stats()
    same = [record_row(Record("causal_lm", "text", text="same"), 9000 + k, 1) for k in range(2)]

    async def clash(tx):                  # two rows, one content hash: the write fails whole
        for row in same:
            tx.put("records", row)

    try:
        await atomically(queue.store, clash)
    except StoreError:
        out["clash"] = await queue.count()
    return out


async def part_two(target):
    queue, chat, clock = open_queue(target, 1100.0)      # "dies" expired meanwhile
    out = {"stats": await queue.stats()}
    try:
        await queue.ack("lease-2")
    except QueueError as e:
        out["expired"] = str(e)
    out["ack"] = await queue.ack("lease-1")
    out["opt_out"] = await chat.opt_out("c2")
    out["delete"] = await chat.delete_conversation("c1")
    again = await queue.lease("trainer", 4, kind="causal_lm")
    out["again"] = [r.id for r in again.records]
    out["release"] = await queue.release(again.id)
    out["messages"] = await chat.messages("c2")
    out["records"] = [r.as_dict() async for r in queue.records()]
    out["final"] = await queue.stats()

    async def rewind(tx):                 # a counter lower than the ids it gave out
        tx.put("counters", {"name": "records", "value": 1})

    async def taken(tx):                  # a new row under a key in use
        tx.insert("records", record_row(Record("causal_lm", "text", text="new"), out["last"], 1))

    out["last"] = await atomically(queue.store, lambda tx: tx.last("records"))
    await atomically(queue.store, rewind)
    out["after_rewind"] = (await queue.put(batch(40, 3, "text", "causal_lm")))["ids"]
    try:
        await atomically(queue.store, taken)
    except StoreError:
        out["taken"] = [r.as_dict() async for r in queue.records()]
    return out
'''


def on_host(path, part):
    space = {}
    exec(SCENARIO, space)
    return json.loads(json.dumps(run(space[part](path))))


def in_page(page, name, part):
    return run_json(page, SCENARIO + f"\njson.dumps(await {part}({name!r}))")


def test_the_queue_in_indexeddb_answers_as_on_the_host_across_a_reload(engine_page, tmp_path):
    name = f"scenario-{uuid.uuid4().hex}"
    path = tmp_path / "queue.sqlite"
    first = in_page(engine_page, name, "part_one")
    assert first == on_host(path, "part_one")
    puts = first["puts"]
    assert [p["added"] + p["duplicates"] + p["refused"] for p in puts] == [12, 10, 6, 12]
    assert puts[2]["duplicates"] == 4 and puts[3]["evicted"] + puts[3]["refused"] == 6
    assert first["stats"]["leased"] == 8 and first["stats"]["total"] == first["clash"] == 30
    assert first["stats"]["by_label"]["all"] >= 2      # multi-label records, as on the host
    engine_page.reload()
    wait_for_engine(engine_page)
    second = in_page(engine_page, name, "part_two")
    assert second == on_host(path, "part_two")
    assert second["stats"]["leased"] == 5 and "expired" in second["expired"]
    assert second["ack"] == 5 and second["delete"]["messages"] == 8
    assert not any(r["origin"].get("conversation") for r in second["records"])
    last = second["last"]
    assert last == max(r["id"] for r in second["records"])
    assert second["after_rewind"] == [last + 1, last + 2, last + 3]
    assert second["taken"][:-3] == second["records"]


BURST = '''
from py_engine.data.queue import TrainingQueue
from py_engine.data.record import Record

queue = TrainingQueue(NAME)
batch = FIRST
while True:
    await queue.put([Record("classification", "text", text=f"batch {batch} item {i}", label="k",
                            origin={"batch": batch, "item": i}) for i in range(SIZE)])
    print(f"acknowledged {batch}")
    batch += 1
'''

COUNT = '''
import json
from py_engine.data.queue import TrainingQueue

batches = {}
async for r in TrainingQueue(NAME).records():
    assert r.text == f"batch {r.origin['batch']} item {r.origin['item']}", r
    batches.setdefault(r.origin["batch"], []).append(r.id)
store = TrainingQueue(NAME).store
version, found = await store.read([{"q": "get", "table": "counters", "keys": ["records"]}])
json.dumps({"batches": batches, "counter": found[0][0], "version": version, "lost": store.lost})
'''

SIZE = 150
# How each page dies: its renderer processes SIGKILLed, the page closed, navigated away, or the
# whole browser SIGKILLed (its storage service with it) and started again on the same profile.
KILLS = ("renderer", "close", "browser", "navigate", "renderer", "browser")
ROUND = 10_000     # batch numbers each round may use


def processes():
    """{pid: (parent pid, command line)} of every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                line = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            table[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), line)
    return table


def descendants(root, table):
    def under(pid):
        while pid > 1:
            if pid == root:
                return True
            pid = table.get(pid, (0,))[0]
        return False

    return {pid for pid in table if under(pid)}


def browser_processes(profile, renderers_only=False):
    """This test's Chromium on `profile`: every process of it, or its renderers."""
    table = processes()
    mine = descendants(os.getpid(), table)
    marker = f"--user-data-dir={profile}".encode()
    main = [pid for pid in mine if marker in table[pid][1] and b"--type=" not in table[pid][1]]
    assert len(main) == 1, f"expected one browser process on {profile}, found {main}"
    tree = descendants(main[0], table)
    if renderers_only:
        return {pid for pid in tree if b"--type=renderer" in table[pid][1]}
    return tree


def alive(pid):
    """Whether `pid` runs still (a zombie has let go of its files)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_engine(context, url):
    """A new page of `context` with py_engine booted."""
    page = context.new_page()
    page.goto(url + "index.html?noselfcheck")
    wait_for_engine(page)
    return page


def launch(playwright, profile, launch_args):
    """Chromium on a profile directory of its own: IndexedDB on disk, and its processes known
    by the directory in their command lines. It logs to chrome_debug.log there, which a
    failure quotes."""
    args = [*launch_args.get("args", ()), "--enable-logging", "--v=0"]
    return playwright.chromium.launch_persistent_context(profile, **{**launch_args, "args": args})


def storage_log(profile):
    """The lines of Chromium's log on `profile` about storage (IndexedDB, LevelDB, quota)."""
    path = profile / "chrome_debug.log"
    if not path.is_file():
        return "(Chromium wrote no log)"
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if any(w in line.lower() for w in ("indexeddb", "leveldb", "quota", "corrupt",
                                                 "bucket", "storage"))]
    return "\n".join(lines[-40:]) or "(no storage lines in Chromium's log)"


def kill(page, profile, how):
    if how == "renderer":   # the page's renderer and idle spares, as the OS kills a tab
        with page.expect_event("crash"):
            for pid in browser_processes(profile, renderers_only=True):
                os.kill(pid, signal.SIGKILL)
    elif how == "browser":
        doomed = browser_processes(profile)
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        # gone before the next launch: one still dying (in an fsync) would hold the database's
        # lock, and the new browser fails to open it
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in doomed):
            assert time.monotonic() < deadline, f"killed processes still alive: {doomed}"
            time.sleep(0.05)
        return
    elif how == "navigate":
        page.goto("about:blank")
    page.close()


def start_burst(page, name, first):
    """Start puts of SIZE records, one after another, numbered from `first`; returns the list
    the numbers of those that returned are appended to, and waits for the first."""
    acknowledged = []
    page.on("console", lambda m: m.text.startswith("acknowledged ")
            and acknowledged.append(int(m.text.split()[1])))
    code = BURST.replace("NAME", repr(name)).replace("FIRST", str(first))
    with page.expect_console_message(lambda m: m.text.startswith("acknowledged")):
        page.evaluate("(code) => { window.burst = window.pyEngine.run(code); }",
                      code.replace("SIZE", str(SIZE)))
    return acknowledged


def check_survivors(page, name, rounds, profile):
    """Every surviving batch whole, with consecutive ids; in each round, the batches that
    survive are the first ones it started (puts run one after another), every acknowledged
    one among them (an acknowledgement still on its way when the browser died is not
    counted). Returns how many batches survived.

    One loss is Chromium's and allowed: a browser killed in the middle of a write can leave
    the database corrupt, which Chromium deletes and starts empty on a later open (seen once
    in some forty runs on the open right after the kill, and once a round later: the damage
    is found when a read or compaction reaches it, the database is closed when its last page
    goes, and the next open starts it empty). The store must then say so (`lost`, from the
    open's dataLoss), which the test checks, dismisses, and forgets the rounds before it with
    a warning; a loss with no browser kill before it (since the last loss), or one the store
    does not report, fails."""
    store = run_json(page, COUNT.replace("NAME", repr(name)))
    if store["lost"]:
        kills = [how for _, _, how in rounds]
        assert "browser" in kills, \
            (f"the store was started empty after the kills {kills} and no browser kill: "
             f"{store['lost']}; Chromium's log on storage:\n{storage_log(profile)}")
        assert not store["batches"], f"a store reported lost holds batches: {store}"
        warnings.warn(f"Chromium found the store corrupt after the kills {kills}, deleted it "
                      f"and started it empty ({store['lost']}); the store reported it, and the "
                      f"rounds before are not checked")
        dismissed = run_json(page, DISMISS.replace("NAME", repr(name)))
        assert dismissed["lost"] is None, dismissed
        rounds.clear()
        return 0
    found = {int(b): sorted(ids) for b, ids in store["batches"].items()}
    # what a failure needs to be understood: the id counter, and where each batch lies
    seen = (f"after the {rounds[-1][2] if rounds else 'no'} kill of round {len(rounds) - 1}; "
            f"counter {store['counter']}, store version {store['version']}, batches "
            f"{ {b: (ids[0], len(ids)) for b, ids in sorted(found.items())} }")
    if rounds and not found:
        seen += f"; Chromium's log on storage:\n{storage_log(profile)}"
    highest = max((ids[-1] for ids in found.values()), default=0)
    if highest and (store["counter"] or {"value": 0})["value"] <= highest:
        # The queue steps over such a counter (TrainingQueue.next_ids); the browser lost a
        # write it had committed, which the run's warnings should show.
        warnings.warn(f"the id counter reads below the highest id in use ({highest}); {seen}")
    for number, ids in found.items():
        assert len(ids) == SIZE, f"batch {number} is partial: {len(ids)} of {SIZE}; {seen}"
        assert ids == list(range(ids[0], ids[0] + SIZE)), seen
    for first, acknowledged, _ in rounds:
        mine = sorted(b for b in found if first <= b < first + ROUND)
        assert mine == list(range(first, first + len(mine))), seen
        assert set(acknowledged) <= set(mine) and acknowledged, \
            f"round {first // ROUND}: acknowledged {acknowledged}, found {mine}; {seen}"
    return len(found)


def test_pages_killed_mid_burst_leave_whole_puts(playwright, built_dist, tmp_path,
                                                 browser_type_launch_args):
    name, rng, rounds = "kills", random.Random(), []
    profile = tmp_path / "profile"
    with ServerThread(built_dist) as url:
        context = launch(playwright, profile, browser_type_launch_args)
        try:
            for k, how in enumerate(KILLS):
                page = open_engine(context, url)
                check_survivors(page, name, rounds, profile)
                acknowledged = start_burst(page, name, k * ROUND)
                time.sleep(rng.uniform(0, 0.4))   # the kill lands anywhere in the next puts
                kill(page, profile, how)
                rounds.append((k * ROUND, list(acknowledged), how))
                if how == "browser":
                    context = launch(playwright, profile, browser_type_launch_args)
            found = check_survivors(open_engine(context, url), name, rounds, profile)
        finally:
            context.close()
    print(f"{len(KILLS)} kills ({', '.join(KILLS)}): {sum(len(a) for _, a, _ in rounds)} puts "
          f"acknowledged, {found} whole puts found")


STATS = '''
import json
from py_engine.data.queue import TrainingQueue
from py_engine.data.record import Record
from py_engine.train.state import IndexedDBStateStore, StateError

try:          # the training state's database is opened first: the loss is told to it
    state = (await IndexedDBStateStore(NAME).load())["weights"].decode()
except StateError as e:
    state = str(e)
await IndexedDBStateStore(NAME).save({"weights": b"saved"})
queue = TrainingQueue(NAME)
before = await queue.stats()
added = (await queue.put([Record("classification", "text", text=f"after {i}", label="k")
                          for i in range(3)]))["added"]
json.dumps({"before": before, "added": added, "after": await queue.stats(), "lost": queue.store.lost,
            "state": state})
'''


DISMISS = '''
import json
from py_engine.data.queue import TrainingQueue

queue = TrainingQueue(NAME)
await queue.stats()
await queue.acknowledge_loss()
json.dumps({"lost": queue.store.lost, "stats": (await queue.stats()).get("lost")})
'''

DISMISSED = '''
import json
from py_engine.data.queue import TrainingQueue

queue = TrainingQueue(NAME)
json.dumps({"stats": (await queue.stats()).get("lost"), "lost": queue.store.lost})
'''


def test_a_store_the_browser_found_corrupt_says_it_was_started_empty(playwright, built_dist,
                                                                     tmp_path,
                                                                     browser_type_launch_args):
    """Chromium deletes an origin's IndexedDB databases when their files fail their checksums
    and opens them empty, telling only the first open; the training state and the queue both
    say so (StateError's message; stats' "lost", the store's `lost`) rather than look as if
    nothing had ever been saved, and work on. Pages opened later say it too, until the user
    dismisses it in any page (TrainingQueue.acknowledge_loss); then none does, open or new."""
    profile, name = tmp_path / "profile", "corrupt"
    stats = STATS.replace("NAME", repr(name))
    with ServerThread(built_dist) as url:
        context = launch(playwright, profile, browser_type_launch_args)
        try:
            first = run_json(open_engine(context, url), stats)
            assert first["lost"] is None and "lost" not in first["after"]
            assert first["after"]["total"] == 3 and first["state"] == f"no training state {name!r} in IndexedDB"
            context.close()
            (manifest,) = profile.glob("Default/IndexedDB/*.leveldb/MANIFEST-*")
            data = bytearray(manifest.read_bytes())
            for i in range(len(data) // 3, len(data) // 3 + 8):   # inside a record: its CRC fails
                data[i] ^= 0x5A
            manifest.write_bytes(bytes(data))
            context = launch(playwright, profile, browser_type_launch_args)
            page = open_engine(context, url)
            messages = []
            page.on("console", lambda m: messages.append(m.text))
            second = run_json(page, stats)
            later = open_engine(context, url)
            third = run_json(later, stats)
            dismissed = run_json(later, DISMISS.replace("NAME", repr(name)))
            # the page that heard the loss first hears of the dismissal too
            still_open = run_json(page, DISMISSED.replace("NAME", repr(name)))
            log = storage_log(profile)          # before the next launch starts a new log
            context.close()
            context = launch(playwright, profile, browser_type_launch_args)
            fourth = run_json(open_engine(context, url), stats)
        finally:
            context.close()
    assert "corrupt" in second["lost"] and second["before"]["lost"] == second["lost"]
    assert second["state"] == (f"no training state {name!r} in IndexedDB: the browser found its "
                               f"databases corrupt, deleted them and started them empty "
                               f"({second['lost']})")
    assert second["before"]["total"] == 0 and second["after"]["total"] == 3
    assert any("started empty" in m for m in messages), messages
    # another page's connection opens the database as it now is: the new records are there
    # (the same texts again are duplicates), and the loss is still said, not yet dismissed
    assert third["lost"] == second["lost"] and third["after"]["lost"] == second["lost"]
    assert third["before"]["total"] == 3 and third["added"] == 0 and third["state"] == "saved"
    assert dismissed == {"lost": None, "stats": None}, dismissed
    assert still_open == {"lost": None, "stats": None}, still_open
    # after a restart: nothing said, the data kept
    assert fourth["lost"] is None and "lost" not in fourth["before"] and fourth["state"] == "saved"
    assert fourth["before"]["total"] == 3 and fourth["added"] == 0
    assert "corrupt" in log
