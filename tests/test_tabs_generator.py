"""The tab dataset generator (py_engine/tabs/generator.py) and `py-engine tabs generate`, and
the hand-checked evaluation set's independence from it."""

import csv
import io
import json
import re
import unicodedata
from collections import Counter

import pytest

from py_engine.cli import main
from py_engine.tabs.categories import Categories
from py_engine.tabs.generator import (BRANDS_FILE, WELL_KNOWN, generate, generator_domains,
                                      load_sites, made_up_site, registrable_domain, url_domain)
from py_engine.tabs.normalize import LOCAL_DEV, parse_tab, tab_text
from py_engine.tabs.rules import words
from py_engine.tabs.tab_data import EVAL_FILE, FIELDS, read_tabs

LABELS = Categories.default().names()


@pytest.fixture(scope="module")
def dataset():
    return generate(7000, seed=3, validation=0.2)


def test_deterministic_and_seeded():
    a, b = generate(300, seed=5)[0], generate(300, seed=5)[0]
    assert a == b and a != generate(300, seed=6)[0]


def test_balanced_split(dataset):
    train, held, stats = dataset
    per_class = Counter(r["label"] for r in train + held)
    assert set(per_class) == set(LABELS) and set(per_class.values()) == {1000}
    assert Counter(r["label"] for r in held) == Counter({label: 200 for label in LABELS})
    assert stats["classes"]["validation"] == {label: 200 for label in sorted(LABELS)}
    assert stats["examples"] == {"train": 5600, "validation": 1400}


def test_no_duplicates_and_no_unfilled_slots(dataset):
    train, held, _ = dataset
    rows = train + held
    assert len({(r["url"], r["title"]) for r in rows}) == len(rows)
    for r in rows:
        assert "{" not in r["url"] and "{" not in r["title"], r
        assert r["text"] == tab_text(r["url"], r["title"])


def test_many_domains(dataset):
    _, _, stats = dataset
    assert stats["domain_count"] >= 500
    assert len(generator_domains()) >= 500
    assert sum(stats["domains"].values()) == 7000


def test_hard_cases_follow_the_policy(dataset):
    """Each hard case is present in every class it applies to, with the label its policy names."""
    train, held, stats = dataset
    rows = train + held
    kinds = Counter((r["kind"], r["label"]) for r in rows)
    assert {label for (kind, label) in kinds if kind == "programming_talk"} == {"Dev"}
    assert {label for (kind, label) in kinds if kind == "local_dev_server"} == {"Dev"}
    assert {label for (kind, label) in kinds if kind == "job_post"} == {"Work"}
    assert {label for (kind, label) in kinds if kind == "cloud_outage_news"} == {"News"}
    for kind in ("non_english", "url_only", "unknown_site"):
        assert {label for (k, label) in kinds if k == kind} == set(LABELS), kind
    known = generator_domains()
    for r in rows:
        if r["kind"] == "local_dev_server":
            assert parse_tab(r["url"], r["title"])[0] == LOCAL_DEV, r["url"]
        if r["kind"] == "url_only":
            assert r["title"] == ""
        if r["kind"] == "programming_talk":
            assert url_domain(r["url"]) in {"youtube.com", "youtu.be", "vimeo.com", "twitch.tv",
                                            "ccc.de", "infoq.com"}
        if r["kind"] == "job_post":
            assert url_domain(r["url"]) in {"linkedin.com", "xing.com", "x.com", "twitter.com", "facebook.com"}
        if r["kind"] == "unknown_site":
            assert url_domain(r["url"]) not in known
    foreign = lambda title: any(ord(c) > 127 and unicodedata.category(c)[0] == "L" for c in title)
    share = lambda kind: sum(foreign(r["title"]) for r in rows if r["kind"] == kind) / \
        sum(r["kind"] == kind for r in rows)
    assert share("non_english") >= 0.4 and share("non_english") >= 4 * share("regular")
    assert set(stats["hard_case_policy"]) >= {"programming_talk", "job_post", "cloud_outage_news",
                                              "local_dev_server", "non_english", "url_only"}


def test_made_up_sites_are_words():
    import random

    rng = random.Random()
    for _ in range(200):
        domain, name = made_up_site(rng)
        assert re.fullmatch(r"([a-z]+\.)?[a-z]+\.[a-z.]+", domain) and name.lower() in domain


def test_registrable_domain():
    assert registrable_domain("www.bbc.co.uk") == "bbc.co.uk"
    assert registrable_domain("a.b.github.com") == "github.com"
    assert registrable_domain("localhost:3000") == "localhost"
    assert registrable_domain("192.168.1.1") == "192.168.1.1"
    assert url_domain("https://n.news.naver.com/x") == "naver.com"


def test_eval_set_is_independent_of_the_generator():
    """The evaluation set holds at least 300 tabs of every category, its domains are none of
    the generator's (local dev servers aside; the well-known sites of data/brands.json
    included), and none of its titles is one the generator writes in a large sample, nor
    shares 60% of its words with one."""
    tabs = read_tabs(EVAL_FILE)
    assert len(tabs) >= 300
    assert set(Counter(t.label for t in tabs)) == set(LABELS)
    assert min(Counter(t.label for t in tabs).values()) >= 40
    generated = generator_domains()
    remote = [t for t in tabs if parse_tab(t.url, t.title)[0] != LOCAL_DEV]
    shared = sorted({url_domain(t.url) for t in remote} & generated)
    assert not shared, shared
    assert len({url_domain(t.url) for t in remote}) >= 250
    titles = {r["title"] for rows in generate(20000, seed=11, validation=0)[:2] for r in rows}
    clashes = sorted({t.title for t in tabs if t.title} & titles)
    assert not clashes, clashes
    near = _near_copies([t.title for t in tabs], titles, threshold=0.6)
    assert not near, near


def _near_copies(titles, generated, threshold):
    """(eval title, generated title) pairs of three or more words whose word sets overlap by
    `threshold` or more (Jaccard): a template that copies an evaluation tab's phrasing."""
    sets = {frozenset(words(g)): g for g in generated if len(set(words(g))) >= 3}
    index = {}
    for s in sets:
        for w in s:
            index.setdefault(w, []).append(s)
    out = []
    for title in titles:
        e = frozenset(words(title))
        if len(e) < 3:
            continue
        for s in {s for w in e for s in index.get(w, ())}:
            if len(e & s) / len(e | s) >= threshold:
                out.append((title, sets[s]))
    return out


_HOST = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.[a-z]{2,}")


def test_well_known_sites():
    """brands.json is read: every category has 200 or more well-known sites, each a well-formed
    host name with a display name, none listed twice (in one category or two) nor one of
    sites.json's hosts; the generator draws them, each class's share, with its own label."""
    with open(BRANDS_FILE, encoding="utf-8") as f:
        raw = json.load(f)
    assert set(raw["sites"]) == set(LABELS)
    hosts = []
    for label, sets in raw["sites"].items():
        assert all(name == label or name.split()[0] == label for name in sets), sets.keys()
        entries = [entry for domains in sets.values() for entry in domains]
        assert len({registrable_domain(host) for host, _ in entries}) >= 200, label
        for host, name in entries:
            assert _HOST.fullmatch(host), host
            assert name.strip() == name and name, host
        hosts += [host for host, _ in entries]
    repeated = sorted(h for h, n in Counter(hosts).items() if n > 1)
    assert not repeated, repeated
    templated = load_sites(brands=None)
    template_hosts = {d[0] for group in (templated["categories"], templated["non_english"])
                      for sites in group.values() for site in sites for d in site["domains"]}
    assert not set(hosts) & template_hosts, sorted(set(hosts) & template_hosts)
    assert not {h for h in hosts if h == registrable_domain(h)} & generator_domains(templated)

    data = load_sites()
    assert {label: len(sites) for label, sites in data["well_known"]["sites"].items()} == \
        {label: sum(len(d) for d in sets.values()) for label, sets in raw["sites"].items()}
    train, held, stats = generate(1400, seed=4, validation=0.1, data=data)
    rows = [r for r in train + held if r["kind"] == WELL_KNOWN]
    assert Counter(r["label"] for r in rows) == {label: round(raw["share"] * 200) for label in LABELS}
    listed = {label: {registrable_domain(host) for sets in raw["sites"][label].values()
                      for host, _ in sets} for label in LABELS}
    for r in rows:
        assert url_domain(r["url"]) in listed[r["label"]], r
    assert stats["hard_case_policy"][WELL_KNOWN] == raw["policy"]
    assert sum(r["title"] == "" for r in rows) < len(rows) / 4
    assert generator_domains() >= generator_domains(well_known=False) | set(map(registrable_domain, hosts))


def test_sites_file_is_consistent():
    """Every category has sites of its own and non-English ones; every hard case's policy is
    written down."""
    data = load_sites()
    assert set(data["categories"]) == set(LABELS)
    assert all(data["non_english"][label] for label in LABELS)
    assert all(case["policy"] for case in data["hard_cases"].values())


# --- the command ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_generate_command(tmp_path, fmt, capsys):
    out = tmp_path / "tabs"
    assert main(["tabs", "generate", "--out", str(out), "--size", "140", "--seed", "2",
                 "--validation", "0.25", "--format", fmt]) == 0
    text = (out / f"train.{fmt}").read_text(encoding="utf-8")
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    elif fmt == "json":
        rows = json.loads(text)
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    expected, held, stats = generate(140, seed=2, validation=0.25)
    assert rows == [{k: r[k] for k in FIELDS} for r in expected]
    assert json.loads((out / "stats.json").read_text()) == stats
    assert (out / f"validation.{fmt}").is_file()
    assert "wrote 105 training and 35 validation tabs" in capsys.readouterr().err
    # run again: py_engine's own directory is replaced
    assert main(["tabs", "generate", "--out", str(out), "--size", "70", "--format", fmt]) == 0


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "--size: must be an integer >= 1"),
    (["--validation", "1"], "--validation: must be a number in [0, 1)"),
    (["--format", "xml"], "invalid choice: 'xml'"),
    (["--seed", "-1"], "--seed: must be an integer in"),
])
def test_generate_bad_options(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["tabs", "generate", "--out", str(tmp_path / "o"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_generate_refuses_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["tabs", "generate", "--out", str(out), "--size", "14"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to" in err and "did not write" in err
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


def test_generate_refuses_a_split_that_leaves_no_training_tabs(tmp_path, capsys):
    assert main(["tabs", "generate", "--out", str(tmp_path / "o"), "--size", "20",
                 "--validation", "0.99"]) == 2
    assert "--size 20 with --validation 0.99 leaves no training tabs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
