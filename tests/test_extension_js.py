"""The extension's JavaScript that needs no browser, run in Node: the rules port against the
Python evaluator (py_engine/tabs/rules.py) and its conformance table, the grouping decisions,
the latency budget, bytes across runtime messaging, and zip archives both ways (Python's
zipfile writes and reads the other side). A missing Node fails: nothing skips."""

import io
import json
import random
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from py_engine.tabs.categories import Categories
from py_engine.tabs.generator import generate
from py_engine.tabs.rules import (categorise, features, load_conformance, load_rules, LISTED_FILE, RULES_FILE,
                                  WEIGHTS_FILE)
from py_engine.tabs.tab_data import read_tabs

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "extension" / "src"
WEB = ROOT / "web" / "src"
EVAL = ROOT / "data" / "tabs" / "eval.jsonl"


# Node has no IndexedDB: a stand-in holding what web/src/idb.mjs asks of it (open a database of
# one store, get and put in a transaction), its databases in INDEXED_DB by name, each store a Map.
FAKE_INDEXED_DB = """
globalThis.INDEXED_DB = {};
globalThis.indexedDB = { open(name) {
  const request = {};
  setTimeout(() => {
    const fresh = !INDEXED_DB[name];
    const stores = INDEXED_DB[name] ??= {};
    request.result = {
      createObjectStore: (store) => { stores[store] = new Map(); },
      transaction: (store) => {
        const tx = { objectStore: () => ({
          get: (key) => ({ result: structuredClone(stores[store].get(key)) }),
          put: (value, key) => { stores[store].set(key, structuredClone(value)); return { result: key }; },
        }) };
        setTimeout(() => tx.oncomplete?.(), 0);
        return tx;
      },
      close: () => {},
    };
    if (fresh) request.onupgradeneeded?.({ dataLoss: "none" });
    request.onsuccess?.();
  }, 0);
  return request;
} };
"""


def node(source, data=None):
    """Run an ES module body in Node with `data` (JSON, on stdin) as DATA, and the IndexedDB
    stand-in; returns what it prints as JSON."""
    executable = shutil.which("node")
    assert executable, "Node is needed for the extension's JavaScript tests: apt-get install nodejs"
    prelude = ('import { readFileSync as __read } from "node:fs";\nconst DATA = JSON.parse(__read(0, "utf8"));\n'
               + FAKE_INDEXED_DB)
    done = subprocess.run([executable, "--input-type=module", "-e", prelude + source],
                          input=json.dumps(data), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def js_rules(tabs, guess=False):
    return node(f"""
import {{ readFileSync }} from "node:fs";
import {{ categorise, parseRules }} from "{(EXT / 'rules.mjs').as_uri()}";
const rules = parseRules(JSON.parse(readFileSync({json.dumps(str(RULES_FILE))}, "utf8")),
                        JSON.parse(readFileSync({json.dumps(str(LISTED_FILE))}, "utf8")),
                        JSON.parse(readFileSync({json.dumps(str(WEIGHTS_FILE))}, "utf8")));
console.log(JSON.stringify(DATA.map(([url, title]) => categorise(rules, url, title, {{ guess: {json.dumps(guess)} }}))));
""", tabs)


# --- rules --------------------------------------------------------------------------------

def test_the_rules_port_passes_the_conformance_table():
    cases = load_conformance()
    got = js_rules([[url, title] for url, title, _ in cases])
    wrong = [(c, g) for c, g in zip(cases, got) if g != c[2]]
    assert not wrong, wrong


def messy(url, rng):
    """A URL as tabs and files hold them: case, ports (a scheme's default too), trailing dots,
    escapes, queries, fragments; and as only files hold them: another special scheme,
    backslashes, a user name, spaces at the ends, no scheme."""
    out = url
    if rng.random() < 0.3:
        out = out.replace("://", "://" + rng.choice(["WWW.", "m.", ""]), 1).upper() if rng.random() < 0.2 else out
    if rng.random() < 0.1:
        out = rng.choice(["ws", "wss", "ftp"]) + out[out.find(":"):]
    if rng.random() < 0.2:
        scheme, _, rest = out.partition("://")
        host, slash, path = rest.partition("/")
        out = f"{scheme}://{host}{rng.choice(['.', ':8080', ':443', ':80', ':21'])}{slash}{path}"
    if rng.random() < 0.2:
        out += rng.choice(["?q=r%C3%A9sum%C3%A9", "#top", "/%E6%96%B0%E9%97%BB", "/a%ZZb", "?search=cloud+outage"])
    if rng.random() < 0.1:
        out = out.replace("/", "\\", rng.randint(1, 5))
    if rng.random() < 0.05:
        out = out.replace("://", "://user@", 1)
    if rng.random() < 0.05:
        out = out.partition("://")[2]
    if rng.random() < 0.05:
        out = f" {out}\t"
    return out


def odd_tabs(rng, n):
    """Tabs built from pieces that test the URL parsers at their edges: local and numeric
    hosts, schemes with and without their default ports, no scheme, user names, backslashes,
    punycode, titles of separators, symbols and scripts."""
    hosts = ["github.com", "www.youtube.com", "M.Facebook.com", "news.ycombinator.com", "127.0.0.1",
             "localhost", "10.0.0.5", "xn--bcher-kva.de", "docs.python.org", "amazon.co.uk", "reddit.com.",
             "a.b.c", "0x7f.1", "mail.google.com", "example.test", "printer.lan"]
    paths = ["", "/", "/a/b", "/watch?v=xyz", "/r/python/comments/1", "\\x\\y", "/search?q=python+docs",
             "/%E4%B8%AD/x", "/@user/123", "/wiki/Main_Page#x"]
    schemes = ["http://", "https://", "HTTPS://", "http:", "https:///", "file://", "chrome://", "ftp://",
               "ws://", "wss://", "foo://", ""]
    words = ["docs", "Python", "news", "video", "shop", "cart", "pull request", "Slack", "weather", "|", "-",
             "Mastodon", "", "中文", "Ünïcode", "@", "#1"]
    tabs = []
    for _ in range(n):
        host = rng.choice(hosts)
        if rng.random() < 0.3:
            host = ".".join(rng.choice(["www", "m", "en", "api", "x1", "docs", "0", "a-b"])
                            for _ in range(rng.randint(1, 2))) + "." + host
        url = (rng.choice(schemes) + rng.choice(["", "", "user@"]) + host
               + rng.choice(["", "", ":8080", ":443", ":80", ":21"]) + rng.choice(paths))
        tabs.append((f" {url}\t" if rng.random() < 0.1 else url,
                     " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))))
    return tabs


def test_the_rules_port_refuses_a_bad_listed_domains_file():
    got = node(f"""
import {{ parseRules }} from "{(EXT / 'rules.mjs').as_uri()}";
const out = [];
for (const listed of DATA) {{
  try {{ out.push(parseRules({{ version: 1, local_dev: "dev" }}, listed).listed.size); }}
  catch (e) {{ out.push(e.constructor.name + ": " + e.message); }}
}}
console.log(JSON.stringify(out));
""", [None, {"version": 1, "domains": {"social": "a.com b.org", "news": ""}},
      {"version": 2, "domains": {}}, {"version": 1, "domains": {"social": 7}},
      {"version": 1, "domains": {"social": "a.com", "news": "a.com"}}])
    assert got[:2] == [0, 2]
    assert got[2] == 'RulesError: listed domains: expected an object with "version": 1 and "domains"'
    assert got[3] == "RulesError: listed domains: the domains of social must be one string"
    assert got[4] == "RulesError: listed domains: a.com is listed twice"


def test_the_rules_port_answers_as_the_python_evaluator_on_real_and_generated_tabs():
    rng = random.Random()                      # fresh inputs every run
    tabs = [(t.url, t.title) for t in read_tabs(EVAL)]
    train, _, _ = generate(size=1500, seed=rng.randrange(10**6))
    tabs += [(t["url"], t["title"]) for t in train]
    tabs += [(messy(u, rng), t if rng.random() < 0.7 else "") for u, t in tabs[:800]]
    tabs += odd_tabs(rng, 1500)
    tabs += [("http://localhost:3000/app", ""), ("http://[::1]:8080/", "x"), ("http://10.0.0.8:8000/", ""),
             ("http://printer.lan/", "Status"), ("file:///home/me/todo.txt", ""), ("not a url", "Inbox"),
             ("ws://10.0.0.5:80/watch?v=xyz", "|"),                    # ws's default port: no port
             ("10.0.0.5/search?q=python+docs", ""), ("user@mail.google.com:443/search?q=docs", "@")]  # no scheme
    rules = load_rules()
    for guess in (False, True):     # the rules alone, and with the word weights' guess (step 7)
        expected = [categorise(rules, u, t, guess) for u, t in tabs]
        got = js_rules(tabs, guess)
        wrong = [(tab, e, g) for tab, e, g in zip(tabs, expected, got) if e != g]
        assert not wrong, f"guess {guess}: {len(wrong)} of {len(tabs)} differ, e.g. {wrong[:5]}"
        # every category was exercised, and None by the rules alone; the guess places all but the odd tab
        assert len(set(expected) - {None}) == 7
        assert (expected.count(None) < len(tabs) // 50) if guess else None in expected
    got = node(f"""
import {{ features }} from "{(EXT / 'rules.mjs').as_uri()}";
console.log(JSON.stringify(DATA.map(([url, title]) => features(url, title))));
""", tabs[:1000])
    assert [set(f) for f in got] == [set(features(u, t)) for u, t in tabs[:1000]]


def test_the_rules_port_refuses_a_bad_word_weights_file():
    got = node(f"""
import {{ parseRules }} from "{(EXT / 'rules.mjs').as_uri()}";
const out = [];
for (const weights of DATA) {{
  try {{ const w = parseRules({{ version: 1, local_dev: "dev" }}, null, weights).weights; out.push(w && w.features.size); }}
  catch (e) {{ out.push(e.constructor.name + ": " + e.message); }}
}}
console.log(JSON.stringify(out));
""", [None, {"version": 1, "categories": ["dev", "news"], "bias": [1, -1], "features": {"t:code": [5, -5]}},
      {"version": 1, "categories": ["dev", "news"], "bias": [1], "features": {}},
      {"version": 1, "categories": ["dev", "news"], "bias": [1, 0], "features": {"t:code": [0.5, 1]}},
      {"version": 2, "categories": ["dev"], "bias": [0], "features": {}},
      {"version": 1, "categories": ["dev", "dev"], "bias": [1, 0], "features": {}},
      {"version": 1, "categories": ["dev", 7], "bias": [1, 0], "features": {}},
      {"version": 1, "categories": ["dev", ""], "bias": [1, 0], "features": {}}])
    assert got[:2] == [None, 1]
    # as the Python reader (rules.WordWeights.from_dict) says
    assert got[5:] == ['RulesError: word weights: "categories" must be a list of distinct category ids'] * 3
    assert got[2].startswith("RulesError: word weights: expected an object")
    assert got[3] == "RulesError: word weights: feature t:code must hold one whole number per category"
    assert got[4].startswith("RulesError: word weights: expected an object")


# --- grouping -----------------------------------------------------------------------------

GROUPING = f'import * as g from "{(EXT / "grouping.mjs").as_uri()}";\n'


def test_limit_groups_keeps_the_commonest_categories_and_moves_the_rest_to_their_likeliest():
    results = [
        {"tabId": 1, "category": "dev", "probs": {"dev": 0.9, "news": 0.05, "work": 0.05}},
        {"tabId": 2, "category": "dev", "probs": {"dev": 0.8, "news": 0.1, "work": 0.1}},
        {"tabId": 8, "category": "dev", "probs": None},
        {"tabId": 3, "category": "news", "probs": {"dev": 0.1, "news": 0.6, "work": 0.3}},
        {"tabId": 4, "category": "work", "probs": {"dev": 0.2, "news": 0.1, "work": 0.7}},
        {"tabId": 5, "category": "work", "probs": None},
        {"tabId": 6, "category": "news", "probs": None},
        {"tabId": 7, "category": None, "probs": None},
    ]
    out = node(GROUPING + "console.log(JSON.stringify([g.limitGroups(DATA, 2, ['news', 'work', 'dev']), "
                          "g.limitGroups(DATA, 0), g.limitGroups(DATA, 1, ['work'])]))", results)
    two, unlimited, one = out
    assert unlimited == results
    # dev (3 tabs) is kept; news and work tie at 2: the earlier in the order, news, is kept;
    # work's tabs go to the kept category the model thought likelier, or none (the rules')
    assert [r["category"] for r in two] == ["dev", "dev", "dev", "news", "dev", None, "news", None]
    assert two[4]["limited"] and two[4]["confidence"] == 0.2 and two[5]["limited"]
    assert "limited" not in two[0] and "limited" not in two[3]
    assert [r["category"] for r in one] == ["dev", "dev", "dev", "dev", "dev", None, None, None]
    assert one[3]["confidence"] == 0.1


def test_plan_moves_reuses_our_group_per_window_and_leaves_sorted_tabs():
    tabs = [{"id": 1, "windowId": 10, "groupId": -1}, {"id": 2, "windowId": 10, "groupId": 5},
            {"id": 3, "windowId": 20, "groupId": -1}, {"id": 4, "windowId": 10, "groupId": 6},
            {"id": 5, "windowId": 10, "groupId": -1}]
    category = {"1": "dev", "2": "dev", "3": "dev", "4": "news", "5": None}
    ours = {"5": {"category": "dev", "windowId": 10}, "6": {"category": "dev", "windowId": 10}}
    moves = node(GROUPING + "console.log(JSON.stringify(g.planMoves(...DATA)))", [tabs, category, ours])
    assert moves == [{"windowId": 10, "category": "dev", "tabIds": [1], "groupId": 5},
                     {"windowId": 20, "category": "dev", "tabIds": [3], "groupId": None},
                     {"windowId": 10, "category": "news", "tabIds": [4], "groupId": None}]


def test_what_may_move_and_what_a_users_move_means():
    ours = {"5": {"category": "dev", "windowId": 1}, "6": {"category": "news", "windowId": 1}}
    tabs = [{"url": "https://a.com/", "groupId": -1}, {"url": "https://a.com/", "pinned": True, "groupId": -1},
            {"url": "https://a.com/", "groupId": 9}, {"url": "https://a.com/", "groupId": 5},
            {"url": "chrome://settings/", "groupId": -1}, {"url": "file:///x.txt", "groupId": -1}]
    out = node(GROUPING + """
const [tabs, ours] = DATA;
console.log(JSON.stringify({
  movable: tabs.map((t) => g.movable(t, ours)),
  asked: tabs.map((t) => g.movable(t, ours, { includeUserGroups: true })),
  changes: [g.groupChange(6, ours, { category: "dev" }), g.groupChange(5, ours, { category: "dev" }),
            g.groupChange(9, ours, { category: "dev" }), g.groupChange(-1, ours, undefined),
            g.groupChange(6, ours, undefined)],
}));""", [tabs, ours])
    assert out["movable"] == [True, False, False, True, False, True]
    assert out["asked"] == [True, False, True, True, False, True]
    assert out["changes"] == [{"kind": "correction", "category": "news"}, {"kind": "kept"},
                              {"kind": "placed"}, {"kind": "placed"},
                              {"kind": "correction", "category": "news"}]


# --- the latency budget --------------------------------------------------------------------

def test_the_latency_budget_lets_the_model_answer_only_while_it_keeps_within_it():
    out = node(f"""
import {{ LatencyBudget }} from "{(EXT / 'latency.mjs').as_uri()}";
let now = 0;
const b = new LatencyBudget({{ perTabMs: 10, minMs: 100, retryMs: 1000, smoothing: 1, now: () => now }});
const log = [];
log.push(["fresh", b.allows(50), b.deadlineMs(1), b.deadlineMs(50)]);
b.record(50, 250);                 // 5 ms per tab: within
log.push(["fast", b.allows(50), b.status().slow]);
b.record(10, 3000);                // 300 ms per tab: over its deadline
log.push(["slow", b.allows(1), b.allows(50), b.status().slow]);
now = 999; log.push(["still", b.allows(1)]);
now = 1000; log.push(["probe", b.allows(1)]);
b.record(1, 4);                    // the probe came back fast
log.push(["recovered", b.allows(50), b.status().slow]);
const before = b.epoch;
b.configure({{ perTabMs: 0.5 }});
log.push(["stricter", b.fits(50), b.allows(50)]);
b.record(1, 5000, before);         // a late answer to a call made before the change
log.push(["older call", b.allows(1), b.status().slow, b.status().estimateMs]);
b.record(1, 5000, b.epoch);        // the same, asked under the new settings
log.push(["newer call", b.allows(1), b.status().slow]);
let refused = null;
try {{ b.configure({{ perTabMs: 7, retryMs: -1 }}); }} catch (e) {{ refused = e.message; }}
log.push(["bad setting", refused, b.perTabMs, b.retryMs]);   // nothing of it applied
try {{ b.configure({{ perTabMs: Infinity }}); }} catch (e) {{ refused = e.message; }}
log.push(["endless", refused, b.perTabMs]);
b.configure({{ perTabMs: 1e9 }});   // a timer cannot wait 50e9 ms: the deadline stops at its limit
log.push(["long", b.deadlineMs(50)]);
console.log(JSON.stringify(log));""")
    assert out == [["fresh", True, 100, 500], ["fast", True, False], ["slow", False, False, True],
                   ["still", False], ["probe", True], ["recovered", True, False],
                   ["stricter", False, True], ["older call", True, False, 5000], ["newer call", False, True],
                   ["bad setting", "retryMs must be a finite number >= 0, got -1", 0.5, 1000],
                   ["endless", "perTabMs must be a finite number >= 0, got Infinity", 0.5], ["long", 2 ** 31 - 1]]


# --- bytes across messaging, zip archives --------------------------------------------------

def test_bytes_cross_runtime_messaging_as_base64_and_come_back_the_same():
    rng = random.Random()
    blobs = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 3, 70_000)]
    out = node(f"""
import {{ fromWire, toWire }} from "{(EXT / 'wire.mjs').as_uri()}";
const value = {{ files: Object.fromEntries(DATA.map((b, i) => [`f${{i}}`, Uint8Array.from(b)])), n: 3, s: "x", list: [null, true] }};
const wire = JSON.parse(JSON.stringify(toWire(value)));      // what runtime messaging carries
const back = fromWire(wire);
console.log(JSON.stringify({{ wire: Object.keys(wire.files.f1), back: Object.values(back.files).map((b) => [...b]),
                              rest: [back.n, back.s, back.list], typed: back.files.f3 instanceof Uint8Array }}));""",
               [list(b) for b in blobs])
    assert out["wire"] == ["$b64"] and out["typed"] is True
    assert [bytes(b) for b in out["back"]] == blobs and out["rest"] == [3, "x", [None, True]]


def test_zip_archives_go_both_ways_with_pythons_zipfile():
    rng = random.Random()
    files = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": rng.randbytes(50_000),
             "sub/labels.json": "[\"Dév\"]".encode()}
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("folder/", "")
    damaged = bytearray(deflated.getvalue())
    damaged[30 + len("adapter_config.json") + 2] ^= 0xFF      # inside the first entry's data
    out = node(f"""
import {{ unzip, zip }} from "{(WEB / 'zip.mjs').as_uri()}";
const decode = (files) => Object.fromEntries(Object.entries(files).map(([k, v]) => [k, [...v]]));
const ours = new Uint8Array(await zip(Object.fromEntries(Object.entries(DATA.files).map(([k, v]) => [k, Uint8Array.from(v)])),
                                      new Date(2026, 11, 5, 16, 42, 31)).arrayBuffer());
const theirs = await unzip(Uint8Array.from(DATA.deflated));
let error = null;
try {{ await unzip(Uint8Array.from(DATA.damaged)); }} catch (e) {{ error = e.message; }}
let notZip = null;
try {{ await unzip(new Uint8Array(100)); }} catch (e) {{ notZip = e.message; }}
console.log(JSON.stringify({{ ours: [...ours], back: decode(await unzip(ours)), theirs: decode(theirs), error, notZip }}));""",
               {"files": {k: list(v) for k, v in files.items()}, "deflated": list(deflated.getvalue()),
                "damaged": list(damaged)})
    with zipfile.ZipFile(io.BytesIO(bytes(out["ours"]))) as z:      # Python reads what JS wrote
        assert z.testzip() is None and {n: z.read(n) for n in z.namelist()} == files
        assert {i.date_time for i in z.infolist()} == {(2026, 12, 5, 16, 42, 30)}   # 2-second steps
    assert {k: bytes(v) for k, v in out["back"].items()} == files
    assert {k: bytes(v) for k, v in out["theirs"].items()} == files       # JS reads Python's
    assert out["error"] and "adapter_config.json" in out["error"]
    assert out["notZip"] == "not a zip archive (no end of central directory)"


def test_the_version_needed_is_read_from_its_low_byte_as_zipfile_reads_it():
    """The central directory's "version needed to extract" is one byte of version and one of
    system (Python's zipfile and Info-ZIP read it so): a high byte set reads, a version above
    6.3 is refused by both, naming the entry."""
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("a.json", b'{"k": 1}')
    at = plain.getvalue().index(b"PK\x01\x02") + 6
    cases = []
    for version in (0x0214, 0xFF14, 0x0040):
        data = bytearray(plain.getvalue())
        data[at:at + 2] = version.to_bytes(2, "little")
        try:
            with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
                theirs = {n: list(z.read(n)) for n in z.namelist()}
        except NotImplementedError as e:
            theirs = str(e)
        cases.append((list(data), theirs))
    got = node(f"""
import {{ unzip }} from "{(WEB / 'zip.mjs').as_uri()}";
const out = [];
for (const data of DATA) {{
  try {{ out.push(Object.fromEntries(Object.entries(await unzip(Uint8Array.from(data))).map(([k, v]) => [k, [...v]]))); }}
  catch (e) {{ out.push(e.message); }}
}}
console.log(JSON.stringify(out));""", [data for data, _ in cases])
    assert [theirs for _, theirs in cases] == [{"a.json": list(b'{"k": 1}')}] * 2 + ["zip file version 6.4"]
    assert got == [{"a.json": list(b'{"k": 1}')}] * 2 + ["zip: a.json needs zip version 6.4"]


def random_archive(rng):
    """A random archive as Python's zipfile writes it (stored, deflated, bzip2 or LZMA; ZIP64
    fields, comments, extra fields, data descriptors when written to a stream, repeated
    names, folders), its names sometimes in code page 437 or a stub put before it, then cut,
    bit-flipped, overwritten or spliced into, or left whole."""
    class Stream(io.RawIOBase):             # not seekable: zipfile writes data descriptors
        def __init__(self):
            self.written = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.written += b
            return len(b)

    out = Stream() if rng.random() < 0.25 else io.BytesIO()
    method = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                         zipfile.ZIP_LZMA])
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", method) as z:
        warnings.simplefilter("ignore")     # repeated names, on purpose
        z.comment = rng.randbytes(rng.randint(0, 300)) if rng.random() < 0.3 else b""
        for i in range(rng.randint(0, 5)):
            name = rng.choice(["a.json", "dir/b.bin", "\u00e9.txt", f"f{i}", "x/"])
            if name.endswith("/"):
                z.writestr(name, b"")
                continue
            info = zipfile.ZipInfo(name + (str(i) if rng.random() < 0.5 else ""))
            info.compress_type = method
            info.extra = b"\x99\x99\x04\x00abcd" if rng.random() < 0.3 else b""
            info.comment = b"c" * rng.randint(0, 20)
            with z.open(info, "w", force_zip64=rng.random() < 0.2) as f:
                f.write(rng.randbytes(rng.randint(0, 3000)) if rng.random() < 0.5 else b"abc" * rng.randint(0, 2000))
    data = bytearray(out.written if isinstance(out, Stream) else out.getvalue())
    if rng.random() < 0.2:                  # names in code page 437: the UTF-8 flag cleared
        for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            for at in range(len(data) - 4):
                if data[at:at + 4] == signature:
                    data[at + flags] &= ~0x08
    if rng.random() < 0.15:
        data[:0] = rng.randbytes(rng.randint(1, 200))
    damage = rng.choice(["none", "none", "flip", "cut", "overwrite", "splice"]) if data else "none"
    at = rng.randrange(len(data)) if data else 0
    if damage == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif damage == "cut":
        del data[at:]
    elif damage == "overwrite":
        data[at:at + 8] = bytes([rng.choice([0, 255])]) * 8
    elif damage == "splice":
        data[at:at] = rng.randbytes(rng.randint(1, 10))
    return bytes(data)


def test_random_archives_unzip_as_pythons_zipfile_reads_them():
    """Fresh random archives, whole and damaged (random_archive): wherever Python's zipfile
    reads every entry, unzip gives the same files; wherever it cannot, unzip throws an Error
    whose message says what is wrong ("zip: ..."), never an error of its own code; and it
    refuses only what Python refuses, or the bzip2 and LZMA entries it does not read."""
    seed = random.randrange(10**9)
    rng = random.Random(seed)
    archives, expected = [], []
    for _ in range(400):
        data = random_archive(rng)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                files = {i.filename: z.read(i) for i in z.infolist() if not i.filename.endswith("/")}
                methods = {i.compress_type for i in z.infolist()}
            expected.append(("read", {k: list(v) for k, v in files.items()}, methods <= {0, 8}))
        except Exception as e:              # noqa: BLE001 - whatever refuses it
            expected.append(("refused", repr(e), None))
        archives.append(list(data))
    got = node(f"""
import {{ unzip }} from "{(WEB / 'zip.mjs').as_uri()}";
const out = [];
for (const data of DATA) {{
  try {{
    const files = await unzip(Uint8Array.from(data));
    out.push(["read", Object.fromEntries(Object.entries(files).map(([k, v]) => [k, [...v]]))]);
  }} catch (e) {{ out.push(["refused", `${{e.constructor.name}}: ${{e.message}}`]); }}
}}
console.log(JSON.stringify(out));""", archives)
    for (want, files, readable), (outcome, ours) in zip(expected, got):
        if outcome == "refused":
            assert ours.startswith(("Error: zip: ", "Error: not a zip archive")), (seed, ours)
            assert want == "refused" or not readable, (seed, ours)
        else:
            assert want == "read" and ours == files, (seed, want, sorted(ours))
    outcomes = [(w, o) for (w, _, _), (o, _) in zip(expected, got)]
    assert outcomes.count(("read", "read")) > 80 and outcomes.count(("refused", "refused")) > 80, seed


def test_a_checkpoints_headers_are_sized_up_or_refused_in_one_line():
    """weightsProblem reads each .safetensors header alone: the largest tensor, in f32, against
    the GPU's largest buffer; a header that is cut short, not JSON or not a JSON object is a
    one-line Error naming the file, never an error of the page's own code."""
    def file(header):
        raw = header.encode()
        return [len(raw).to_bytes(8, "little") + raw]
    cases = [file(json.dumps({"__metadata__": {"k": "v"}, "small": {"dtype": "F16", "shape": [10, 10]},
                              "big": {"dtype": "F16", "shape": [1000, 100]}, "odd": None, "no": {"shape": 5}})),
             file("null"), file("[1, 2]"), file('"text"'), file("{nope"), [b"\x05\0\0\0\0\0\0\0{}"], [b"\x01"]]
    got = node(f"""
import {{ weightsProblem }} from "{(WEB / 'checkpoint.mjs').as_uri()}";
const out = [];
for (const parts of DATA) {{
  const file = new File(parts.map((p) => Uint8Array.from(p)), "model.safetensors");
  for (const limit of [1e9, 300000]) {{
    try {{
      const problem = await weightsProblem([{{ path: "model.safetensors", file }}], {{ maxStorageBufferBindingSize: limit, maxBufferSize: 1e12 }}, (n) => `${{n}} B`);
      out.push(problem ? `problem: ${{problem.message}}` : "fits");
    }} catch (e) {{ out.push(`${{e.constructor.name}}: ${{e.message}}`); }}
  }}
}}
console.log(JSON.stringify(out));""", [[list(p) for p in parts] for parts in cases])
    assert got[:2] == ["fits", "problem: This model does not fit on this GPU: its tensor big needs 400000 B in one "
                       "buffer, and this GPU binds at most 300000 B. Pick a smaller model."]
    not_object = "Error: model.safetensors is not a safetensors file (its header is not a JSON object)."
    assert got[2:8] == [not_object] * 6
    assert got[8:10] == ["Error: model.safetensors is not a safetensors file (its header is not JSON)."] * 2
    assert got[10:] == ["Error: model.safetensors is not a safetensors file (its header is cut short or too long)."] * 4



def test_a_sharded_checkpoint_folder_gives_the_engine_its_index_and_shards():
    """A folder picked on the page: the index and every shard go to the engine (which reads
    them as one file), with the config and tokenizer; PyTorch weights beside safetensors,
    sub-folders and other files stay behind. A folder of PyTorch weights alone gives them."""
    names = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "tokenizer.json", "generation_config.json",
             "pytorch_model.bin", "README.md", "onnx/model.safetensors"]
    older = ["config.json", "vocab.txt", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
             "pytorch_model-00002-of-00002.bin", "training_args.bin", "model.onnx"]
    bare = ["config.json", "vocab.txt", "model.onnx", "model.gguf"]
    deberta = ["config.json", "spm.model", "tokenizer_config.json", "pytorch_model.bin", "tf_model.h5"]
    untokenized = ["config.json", "model.safetensors", "README.md"]
    got = node(f"""
import {{ checkpointFiles }} from "{(WEB / 'checkpoint.mjs').as_uri()}";
const out = [];
for (const names of DATA) {{
  try {{ out.push(checkpointFiles(names.map((path) => ({{ path, file: null }}))).map((i) => i.path)); }}
  catch (e) {{ out.push(e.message); }}
}}
console.log(JSON.stringify(out));""", [names, older, bare, deberta, untokenized])
    assert sorted(got[0]) == sorted(names[:6])
    assert sorted(got[1]) == sorted(older[:5])          # no safetensors: the PyTorch weights
    assert got[2] == ("This folder has no weights the engine reads: model.safetensors (or "
                      "pytorch_model.bin), not ONNX, GGUF or other PyTorch files.")
    assert sorted(got[3]) == sorted(deberta[:4])        # DeBERTa-v3 as released: spm.model
    assert got[4] == "This folder has no tokenizer (tokenizer.json, vocab.txt or DeBERTa's spm.model)."


# --- the sorter's moves --------------------------------------------------------------------

def extension_modules(path):
    """extension/src's modules beside the web/src ones they import (as extension/dist has them)."""
    for source in (WEB, EXT):
        for module in source.glob("*.mjs"):
            shutil.copy(module, path / module.name)
    return path


def test_a_tab_put_in_the_users_group_while_it_was_categorised_stays_there(tmp_path):
    """The sorter reads tabs, the rules or the model answer, then it moves them: a tab the user
    grouped, pinned or placed meanwhile is left where it is and not recorded as sorted (it was
    taken out of the user's own group, then re-sorted as the rules' when the model came). Run
    on TabSorter.apply with a chrome stand-in whose tabs changed between the read and the move."""
    modules = extension_modules(tmp_path)
    out = node(f"""
const groupCalls = [];
const live = [
  {{ id: 1, windowId: 1, groupId: -1, url: "https://a.dev/", pinned: false }},
  {{ id: 2, windowId: 1, groupId: 9, url: "https://b.dev/", pinned: false }},   // the user's group now
  {{ id: 3, windowId: 1, groupId: -1, url: "https://c.dev/", pinned: true }},   // pinned now
  {{ id: 4, windowId: 1, groupId: -1, url: "https://d.dev/", pinned: false }},  // placed by the user
];
const store = {{ session: {{}}, local: {{}} }};
const area = (name) => ({{ get: async (k) => ({{ [k]: store[name][k] }}), set: async (o) => Object.assign(store[name], o) }});
globalThis.chrome = {{
  storage: {{ session: area("session"), local: area("local") }},
  tabs: {{ query: async () => live, group: async (o) => {{ groupCalls.push(o); return 77; }} }},
  tabGroups: {{ query: async () => [{{ id: 9 }}], update: async () => {{}} }},
  alarms: {{ clear: async () => true, get: async () => null, create: async () => {{}} }},
}};
const {{ TabSorter }} = await import("{(modules / 'sorter.mjs').as_uri()}");
const {{ useCategories }} = await import("{(modules / 'tabs_api.mjs').as_uri()}");
useCategories([{{ id: "dev", name: "Dev", colour: "blue" }}]);
const sorter = new TabSorter();
await sorter.loaded;
sorter.tabs[4] = {{ category: null, source: "user", host: "d.dev", placed: true }};
const read = live.map((t) => ({{ ...t, groupId: -1, pinned: false }}));    // as they were read
await sorter.apply(read, read.map((t) => ({{ tabId: t.id, category: "dev", source: "rules" }})));
console.log(JSON.stringify({{ groupCalls, tabs: sorter.tabs, groups: sorter.groups }}));
""")
    assert out["groupCalls"] == [{"tabIds": [1], "createProperties": {"windowId": 1}}]
    assert out["groups"] == {"77": {"category": "dev", "windowId": 1}}
    assert set(out["tabs"]) == {"1", "4"} and out["tabs"]["1"]["source"] == "rules"
    assert out["tabs"]["4"]["source"] == "user"


def test_a_sorter_woken_by_a_tab_or_group_event_keeps_what_it_knew(tmp_path):
    """MV3 stops the service worker when it is idle and wakes it for an event; the listener runs
    before the sorter has read its state back from chrome.storage.session. A tab closed, our
    group removed, or our group renamed by the user (it is theirs from then on) must act on the
    state read back, not on the empty one, and must not write the empty one over it. Run with a
    chrome stand-in whose storage answers a moment later, as Chrome's does."""
    modules = extension_modules(tmp_path)
    out = node(f"""
const before = {{
  groups: {{ "10": {{ category: "dev", windowId: 1 }}, "11": {{ category: "news", windowId: 1 }}, "12": {{ category: "dev", windowId: 2 }} }},
  tabs: {{ "1": {{ category: "dev", source: "model", host: "a.dev" }}, "2": {{ category: "news", source: "rules", host: "b.news" }} }},
  events: [],
}};
const later = () => new Promise((resolve) => setTimeout(resolve, 20));
const results = {{}};
for (const event of ["tab closed", "group removed", "group renamed"]) {{
  const store = {{ session: {{ sorter: structuredClone(before) }}, local: {{}} }};
  const area = (name) => ({{
    get: async (k) => {{ const value = structuredClone(store[name][k]); await later(); return {{ [k]: value }}; }},
    set: async (o) => {{ Object.assign(store[name], structuredClone(o)); }},
  }});
  globalThis.chrome = {{ storage: {{ session: area("session"), local: area("local") }} }};
  const {{ TabSorter }} = await import("{(modules / 'sorter.mjs').as_uri()}");
  const {{ useCategories }} = await import("{(modules / 'tabs_api.mjs').as_uri()}");
  useCategories([{{ id: "dev", name: "Dev", colour: "blue" }}, {{ id: "news", name: "News", colour: "red" }}]);
  const sorter = new TabSorter();   // the worker woke up: the listener comes at once
  if (event === "tab closed") await sorter.onTabRemoved(1);
  if (event === "group removed") await sorter.onGroupRemoved({{ id: 11 }});
  if (event === "group renamed") await sorter.onGroupUpdated({{ id: 12, title: "My stuff", color: "blue" }});
  await later(); await later();
  results[event] = {{ stored: store.session.sorter, groups: sorter.groups, tabs: sorter.tabs }};
}}
console.log(JSON.stringify(results));
""")
    for event, result in out.items():
        for where in ("stored", "memory"):
            state = result["stored"] if where == "stored" else result
            groups, tabs = set(state["groups"]), set(state["tabs"])
            expect_groups = {"10", "11", "12"} - {"group removed": {"11"}, "group renamed": {"12"}}.get(event, set())
            expect_tabs = {"1", "2"} - ({"1"} if event == "tab closed" else set())
            assert (groups, tabs) == (expect_groups, expect_tabs), (event, where, state)


def test_the_sorters_settings_refuse_a_wrong_value_and_keep_the_old_ones(tmp_path):
    """configure() takes the popup's and the JS API's settings: a wrong type or number is refused
    with a message naming the setting, and neither the settings nor chrome.storage change; a
    right one is kept in both."""
    modules = extension_modules(tmp_path)
    out = node(f"""
const store = {{ session: {{}}, local: {{}} }};
const area = (name) => ({{ get: async (k) => ({{ [k]: store[name][k] }}), set: async (o) => Object.assign(store[name], structuredClone(o)) }});
globalThis.chrome = {{ storage: {{ session: area("session"), local: area("local") }},
  alarms: {{ clear: async () => true, get: async () => null, create: async () => {{}} }} }};
const {{ TabSorter }} = await import("{(modules / 'sorter.mjs').as_uri()}");
const sorter = new TabSorter();
await sorter.loaded;
const refused = [];
let storedBefore;
for (const options of DATA) {{
  storedBefore = structuredClone(store.local.settings ?? null);   // before the last one
  try {{ await sorter.configure(options); refused.push(null); }} catch (e) {{ refused.push(e.message); }}
}}
console.log(JSON.stringify({{ refused, settings: sorter.settings, storedBefore, stored: store.local.settings ?? null }}));
""", [{"maxGroups": "3"}, {"maxGroups": -1}, {"maxGroups": 2.5}, {"autoSort": "no"},
      {"includeUserGroups": 1}, {"trainingPaused": None}, {"perTabMs": "fast"}, {"colour": "red"},
      {"maxGroups": 4, "autoSort": False}])
    assert out["refused"][:8] == [
        'maxGroups must be a whole number >= 0 (0: no limit), got "3"',
        "maxGroups must be a whole number >= 0 (0: no limit), got -1",
        "maxGroups must be a whole number >= 0 (0: no limit), got 2.5",
        'autoSort must be true or false, got "no"',
        "includeUserGroups must be true or false, got 1",
        "trainingPaused must be true or false, got null",
        'perTabMs must be a finite number >= 0, got "fast"',
        "unknown settings colour",
    ]
    assert out["refused"][8] is None
    assert out["settings"] == {"autoSort": False, "maxGroups": 4, "includeUserGroups": False, "perTabMs": 50,
                               "minMs": 400, "retryMs": 60_000, "trainingPaused": False}
    assert out["storedBefore"] is None       # nothing refused was stored
    assert out["stored"] == out["settings"]


def test_a_change_of_idle_state_brings_the_users_pause_to_the_engine(tmp_path):
    """An engine that could not ask for the user's wishes as it started counts them active and
    not paused; chrome.idle's next change is passed on after the user's pause (or resume), so
    that it never trains while the user has paused it. Run with a chrome stand-in that records
    the engine calls relayed through the service worker."""
    modules = extension_modules(tmp_path)
    out = node(f"""
const results = {{}};
for (const paused of [true, false]) {{
  const store = {{ session: {{}}, local: {{ settings: {{ trainingPaused: paused }} }} }};
  const area = (name) => ({{ get: async (k) => ({{ [k]: store[name][k] }}), set: async (o) => Object.assign(store[name], o) }});
  const seen = [];
  globalThis.chrome = {{
    storage: {{ session: area("session"), local: area("local") }},
    runtime: {{ sendMessage: async (m) => {{ seen.push([m.message.method, m.message.params]); return {{ result: {{}} }}; }} }},
  }};
  const {{ TabSorter }} = await import("{(modules / 'sorter.mjs').as_uri()}");
  const sorter = new TabSorter();
  await sorter.idleChanged("idle");
  results[paused] = seen;
}}
console.log(JSON.stringify(results));
""")
    assert out["true"] == [["pause", {}], ["set_idle_state", {"state": "idle"}]]
    assert out["false"] == [["resume", {}], ["set_idle_state", {"state": "idle"}]]


def test_a_correction_made_while_the_model_loads_is_learned_once_it_is_ready(tmp_path):
    """The engine cannot take a correction before its tab model is loaded (it answers "the tab
    model is not loaded"), and the user's move was lost. Now the sorter keeps it, in IndexedDB
    (a worker stopped meanwhile starts again with it), the tab's latest word replacing an
    earlier one for the same page, and gives it to the engine once the engine is ready; an
    engine that fails to load lets it go, saying why. Run with a chrome stand-in for storage and
    for the engine behind the service worker, whose loading ends when the test says."""
    modules = extension_modules(tmp_path)
    out = node(f"""
const results = {{}};
const waiting = () => INDEXED_DB.tab_sorter?.corrections.get("unlearned");
for (const ending of ["ready", "failed"]) {{
  delete INDEXED_DB.tab_sorter;
  const store = {{ session: {{}}, local: {{}} }};
  const area = (name) => ({{ get: async (k) => ({{ [k]: store[name][k] }}), set: async (o) => Object.assign(store[name], structuredClone(o)) }});
  const taught = [];
  let phase = "loading";
  let finish;
  const loaded = new Promise((resolve) => {{ finish = resolve; }});
  const files = {{ "model/manifest.json": {{ rules: "rules.json", listed_domains: "listed.json" }},
    "model/rules.json": {{ version: 1, local_dev: "dev", domains: [], keywords: {{}} }},
    "model/listed.json": {{ version: 1, domains: {{}} }},
    "model/categories.json": [{{ id: "dev", name: "Dev", colour: "blue" }}, {{ id: "news", name: "News", colour: "red" }}] }};
  globalThis.fetch = async (url) => ({{ ok: true, json: async () => files[url] }});
  // each worker's chrome; a stopped worker's wait for the engine never ends
  const chromeOf = (worker) => ({{
    storage: {{ session: area("session"), local: area("local") }},
    runtime: {{
      getURL: (p) => p,
      sendMessage: async ({{ message }}) => {{
        if (message.type === "state") {{
          if (message.wait) await loaded;
          if (worker === stopped) await new Promise(() => {{}});
          return {{ phase, error: phase === "failed" ? "no WebGPU adapter" : null }};
        }}
        if (phase !== "ready") return {{ error: {{ message: "the tab model is not loaded: call load_tab_model first", kind: "user" }} }};
        taught.push([message.method, message.params]);
        return {{ result: {{ text: message.params.title }} }};
      }},
    }},
  }});
  let stopped = null;
  globalThis.chrome = chromeOf(1);
  const {{ TabSorter }} = await import("{(modules / 'sorter.mjs').as_uri()}?" + ending);
  const first = new TabSorter();
  const tab = {{ id: 7, url: "https://lwn.net/Articles/1/", title: "A look at the merge window" }};
  const said = [await first.learn(tab, "dev", "a category chosen in the popup"),
                await first.learn(tab, "news", "a category chosen in the popup")];
  const kept = structuredClone(waiting());
  // the worker stops; a new one reads the sorter's state back and waits for the engine with it
  stopped = 1;
  globalThis.chrome = chromeOf(2);
  const second = new TabSorter();
  await second.loaded;
  const count = (await second.snapshot()).unlearned;
  phase = ending;
  finish();
  await second.delivering;
  results[ending] = {{ said, kept, waiting: count, taught, left: waiting(), session: Object.keys(store.session.sorter),
    events: store.session.sorter.events.map((e) => [e.kind, e.category, e.error || null]),
    record: store.session.sorter.tabs["7"] }};
}}
console.log(JSON.stringify(results));
""")
    for ending in ("ready", "failed"):
        got = out[ending]
        assert got["said"] == [{"learned": False, "waiting": True}] * 2
        # one correction kept: the second replaced the first for the same page
        assert got["kept"] == [{"tabId": 7, "url": "https://lwn.net/Articles/1/", "title": "A look at the merge window",
                                "category": "news", "where": "a category chosen in the popup"}]
        assert got["waiting"] == 1
        assert got["left"] == [] and "unlearned" not in got["session"]   # in IndexedDB only
        assert got["record"] == {"category": "news", "source": "user", "host": "lwn.net"}
    # learned once, the latest word, once the engine was ready
    assert out["ready"]["taught"] == [["correct_tab", {"url": "https://lwn.net/Articles/1/", "title": "A look at the merge window",
                                                       "category": "news", "where": "a category chosen in the popup"}]]
    assert ["correction", "news", None] in out["ready"]["events"]
    assert out["failed"]["taught"] == []
    assert ["correction-failed", "news", "the model is not available (no WebGPU adapter)"] in out["failed"]["events"]


def test_the_js_api_refuses_wrong_arguments_before_asking_anything(tmp_path):
    """categoriseTabs and benchmark are the API other extension code calls: tabs that are not an
    array of objects with text urls and titles, a maxGroups that is not a whole number >= 0, or
    rounds that are not a count are refused with a message naming them, and nothing is asked
    (no storage read, no message to the engine); right arguments are answered."""
    modules = extension_modules(tmp_path)
    out = node(f"""
import {{ readFileSync }} from "node:fs";
const asked = [];
const files = {{ "model/manifest.json": {{ rules: "rules.json", listed_domains: "listed.json" }},
  "model/rules.json": JSON.parse(readFileSync({json.dumps(str(RULES_FILE))}, "utf8")),
  "model/listed.json": JSON.parse(readFileSync({json.dumps(str(LISTED_FILE))}, "utf8")),
  "model/categories.json": [{{ id: "dev", name: "Dev", colour: "blue" }}, {{ id: "news", name: "News", colour: "red" }}] }};
globalThis.fetch = async (url) => {{ asked.push(`fetch ${{url}}`); return {{ ok: true, json: async () => files[url] }}; }};
globalThis.chrome = {{
  runtime: {{ getURL: (p) => p, sendMessage: async (m) => {{ asked.push(`message ${{m.type}}`); return {{ phase: "failed", error: "no WebGPU" }}; }} }},
  storage: {{ local: {{ get: async () => {{ asked.push("storage"); return {{}}; }}, set: async () => {{}} }} }},
}};
const {{ categoriseTabs, benchmark }} = await import("{(modules / 'tabs_api.mjs').as_uri()}");
const refused = [];
for (const [call, args] of DATA) {{
  try {{ await (call === "benchmark" ? benchmark : categoriseTabs)(...args); refused.push(null); }}
  catch (e) {{ refused.push(e.message); }}
}}
// what JSON cannot say: a BigInt (JSON.stringify throws) and NaN (it writes null)
for (const maxGroups of [3n, NaN]) {{
  try {{ await categoriseTabs([], maxGroups); refused.push(null); }} catch (e) {{ refused.push(e.message); }}
}}
const askedWhenRefused = [...asked];
const answered = await categoriseTabs([{{ id: 5, url: "https://github.com/pola-rs/polars/issues/1", title: "Issue" }}, {{ id: 6 }}], 0);
console.log(JSON.stringify({{ refused, askedWhenRefused, answered, askedAfter: asked.length }}));
""", [["categorise", []],
      ["categorise", ["https://github.com/"]],
      ["categorise", [[{"url": "https://github.com/"}, None]]],
      ["categorise", [[{"url": 7, "title": "x"}]]],
      ["categorise", [[{"url": "https://github.com/", "title": ["x"]}]]],
      ["categorise", [[], "3"]],
      ["categorise", [[], -1]],
      ["categorise", [[], 0, {"onLate": "yes"}]],
      ["benchmark", [[]]],
      ["benchmark", [[{"url": "https://github.com/"}], {"rounds": 0}]],
      ["benchmark", [[{"url": "https://github.com/"}], {"singles": 1.5}]]])
    assert out["refused"] == [
        "tabs must be an array of {id, url, title}, got undefined",
        'tabs must be an array of {id, url, title}, got "https://github.com/"',
        "tabs[1] must be an object {id, url, title}, got null",
        "tabs[0].url must be text, got 7",
        'tabs[0].title must be text, got ["x"]',
        'maxGroups must be a whole number >= 0 (0: no limit), got "3"',
        "maxGroups must be a whole number >= 0 (0: no limit), got -1",
        'onLate must be a function, got "yes"',
        "tabs must hold at least one tab",
        "rounds must be a whole number >= 1, got 0",
        "singles must be a whole number >= 1, got 1.5",
        "maxGroups must be a whole number >= 0 (0: no limit), got 3",
        "maxGroups must be a whole number >= 0 (0: no limit), got NaN",
    ]
    assert out["askedWhenRefused"] == []
    # the engine has no model here: the rules answer, and a tab without url or title has none
    assert [(r["tabId"], r["category"], r["source"]) for r in out["answered"]] == [(5, "dev", "rules"), (6, None, "rules")]
    assert out["askedAfter"] > 0


def test_a_tab_gone_to_another_site_is_forgotten_in_the_stored_state_too(tmp_path):
    """A tab the user placed (or corrected) is the user's until it goes to another site; then
    the sorter forgets it. With autoSort off nothing sorts it afterwards, so the forgetting must
    be saved at once: a worker stopped and woken again would otherwise still hold the tab as
    the user's, and "Sort all tabs" would skip it."""
    modules = extension_modules(tmp_path)
    out = node(f"""
const store = {{ session: {{ sorter: {{ groups: {{}}, events: [],
  tabs: {{ "4": {{ category: null, source: "user", host: "d.dev", placed: true }}, "5": {{ category: "dev", source: "user", host: "e.dev" }} }} }} }},
  local: {{ settings: {{ autoSort: false }} }} }};
const area = (name) => ({{ get: async (k) => ({{ [k]: structuredClone(store[name][k]) }}), set: async (o) => Object.assign(store[name], structuredClone(o)) }});
globalThis.chrome = {{ storage: {{ session: area("session"), local: area("local") }} }};
const {{ TabSorter }} = await import("{(modules / 'sorter.mjs').as_uri()}");
const sorter = new TabSorter();
await sorter.onUpdated(4, {{ url: "https://news.example.org/story" }}, {{ id: 4, url: "https://news.example.org/story", status: "loading" }});
await sorter.onUpdated(5, {{ url: "https://e.dev/other-page" }}, {{ id: 5, url: "https://e.dev/other-page", status: "loading" }});
const woken = new TabSorter();   // the worker stopped and woke again
await woken.loaded;
console.log(JSON.stringify({{ stored: Object.keys(store.session.sorter.tabs), woken: Object.keys(woken.tabs) }}));
""")
    assert out == {"stored": ["5"], "woken": ["5"]}       # the same site stays the user's


def test_without_webgpu_the_word_weights_place_the_tabs_no_rule_places(tmp_path):
    """categoriseTabs with an engine that failed (no WebGPU: no model will ever answer) guesses
    with the word weights for a tab no rule places; with an engine that is loading it leaves
    such a tab ungrouped for the model (category null), and a tab a rule places is the rule's
    either way. A deployment without word weights (an older model/) guesses nothing."""
    rules = load_rules()
    unruled = [(t.url, t.title) for t in read_tabs(EVAL) if categorise(rules, t.url, t.title) is None]
    ruled = [(t.url, t.title) for t in read_tabs(EVAL) if categorise(rules, t.url, t.title) is not None]
    tabs = [{"id": k, "url": u, "title": t} for k, (u, t) in enumerate(unruled[:20] + ruled[:5])]
    expected = [categorise(rules, t["url"], t["title"], guess=True) for t in tabs]
    assert all(expected) and len(set(expected)) > 2
    modules = extension_modules(tmp_path)
    out = node(f"""
import {{ readFileSync }} from "node:fs";
const read = (p) => JSON.parse(readFileSync(p, "utf8"));
const out = {{}};
for (const [phase, weights] of [["failed", true], ["loading", true], ["failed", false]]) {{
  const files = {{ "model/manifest.json": {{ rules: "rules.json", listed_domains: "listed.json", ...(weights ? {{ word_weights: "weights.json" }} : {{}}) }},
    "model/rules.json": read({json.dumps(str(RULES_FILE))}), "model/listed.json": read({json.dumps(str(LISTED_FILE))}),
    "model/weights.json": read({json.dumps(str(WEIGHTS_FILE))}),
    "model/categories.json": {json.dumps([{"id": c.id, "name": c.name, "colour": c.colour} for c in Categories.default().items])} }};
  globalThis.fetch = async (url) => ({{ ok: true, json: async () => files[url] }});
  globalThis.chrome = {{
    runtime: {{ getURL: (p) => p, sendMessage: async () => ({{ phase, error: phase === "failed" ? "no WebGPU adapter" : null }}) }},
    storage: {{ local: {{ get: async () => ({{}}), set: async () => {{}} }} }},
  }};
  const api = await import("{(modules / 'tabs_api.mjs').as_uri()}?" + phase + weights);
  out[phase + (weights ? "" : " without weights")] = (await api.categoriseTabs(DATA)).map((r) => [r.category, r.source]);
}}
console.log(JSON.stringify(out));
""", tabs)
    assert out["failed"] == [[e, "rules"] for e in expected]
    n = len(unruled[:20])
    assert out["loading"] == [[None, "rules"]] * n + [[e, "rules"] for e in expected[n:]]
    assert out["failed without weights"] == out["loading"]
