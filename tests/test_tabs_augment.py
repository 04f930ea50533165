"""Rewritten copies of generated tabs (py_engine.tabs.augment): what each rewrite keeps and
drops, the tabs it must leave alone, and the share and seed it is drawn with."""

import random
from collections import Counter
from urllib.parse import urlsplit

import pytest

from py_engine.tabs.augment import MIN_WORDS, URL_KINDS, augmented, content_words, rewrite
from py_engine.tabs.generator import generate, registrable_domain
from py_engine.tabs.normalize import parse_tab, tab_text


@pytest.fixture(scope="module")
def rows():
    return generate(1400, seed=3, validation=0)[0]


def tab(url, title, label="Cloud", kind="regular"):
    return {"url": url, "title": title, "label": label, "kind": kind, "text": tab_text(url, title)}


def test_made_up_domain_renames_the_brand_and_keeps_the_rest():
    row = tab("https://dash.bunnycdn.com/zones/edge-rules?x=1", "Edge rules for static files | BunnyCDN")
    copy = rewrite(row, "made_up_domain", random.Random(0))
    assert copy["kind"] == "augment:made_up_domain" and copy["label"] == "Cloud"
    new, old = urlsplit(copy["url"]), urlsplit(row["url"])
    assert new.hostname.startswith("dash.") and registrable_domain(new.hostname) != "bunnycdn.com"
    assert (new.path, new.query) == (old.path, old.query)
    assert "bunnycdn" not in copy["title"].lower() and copy["title"].startswith("Edge rules for static files | ")
    assert copy["text"] == tab_text(copy["url"], copy["title"])


def test_dropping_a_part():
    row = tab("https://console.example-cloud.com/storage/buckets", "Buckets - Example Cloud")
    url_only = rewrite(row, "url_only", random.Random(1))
    assert (url_only["url"], url_only["title"], url_only["kind"]) == (row["url"], "", "augment:url_only")
    no_path = rewrite(row, "no_path", random.Random(1))
    assert no_path["url"] == "https://console.example-cloud.com/" and no_path["title"] == row["title"]
    assert parse_tab(no_path["url"], "")[1] == [] and no_path["kind"] == "augment:no_path"


def test_a_rewrite_that_does_not_apply_falls_back_or_gives_nothing():
    # a title carrying the label (a programming talk on a video site) is never dropped
    talk = tab("https://www.youtube.com/watch?v=abc", "Rust ownership explained - YouTube", "Dev", "programming_talk")
    for seed in range(20):
        assert rewrite(talk, "url_only", random.Random(seed))["kind"] != "augment:url_only"
    # nothing but a brand: no made-up domain (noise), no part to drop
    bare = tab("https://app.koyeb.com/", "Overview · Koyeb")
    assert content_words("https://app.zorbly.io/", "Overview · Zorbly", "Zorbly") < MIN_WORDS
    assert all(rewrite(bare, how, random.Random(s)) is None
               for how in ("made_up_domain", "url_only", "no_path") for s in range(10))


def test_augmented_share_seed_and_kinds(rows):
    copies = augmented(rows, 0.5, seed=0)
    assert copies == augmented(rows, 0.5, seed=0) and copies != augmented(rows, 0.5, seed=1)
    assert 0.4 * len(rows) <= len(copies) <= 0.5 * len(rows)
    kinds = Counter(c["kind"] for c in copies)
    assert set(kinds) == {"augment:made_up_domain", "augment:url_only", "augment:no_path"}
    assert min(kinds.values()) > len(copies) / 5
    sources = {(r["url"], r["title"]) for r in rows}       # a copy may equal another tab, rarely
    assert sum((c["url"], c["title"]) in sources for c in copies) < len(copies) / 50
    for c in copies:
        assert c["text"] == tab_text(c["url"], c["title"])
        host = urlsplit(c["url"]).hostname
        assert host and "localhost" not in host and not host.replace(".", "").isdigit()
        if c["kind"] == "augment:made_up_domain":
            words = parse_tab(c["url"], c["title"])
            assert len(words[1]) + len(words[2].split()) >= MIN_WORDS
    assert Counter(c["label"] for c in copies).keys() == Counter(r["label"] for r in rows).keys()
    assert augmented(rows, 0, seed=0) == []


def test_url_only_copies_come_from_tabs_whose_url_gives_the_label(rows):
    by_url = {}
    for r in rows:
        by_url.setdefault(r["url"], []).append(r)
    for c in augmented(rows, 1.0, seed=2):
        if c["kind"] == "augment:url_only":
            assert any(r["kind"] in URL_KINDS and r["title"] for r in by_url[c["url"]]), c


def test_local_and_browser_tabs_are_left_alone():
    local = [tab("http://localhost:3000/users/edit", "Edit user - My App", "Dev", "local_dev_server"),
             tab("http://192.168.1.20:8080/admin/settings", "Settings", "Dev", "local_dev_server"),
             tab("chrome://settings/privacy", "Settings - Privacy", "Work")]
    assert augmented(local, 1.0, seed=0) == []


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_bad_share(rows, share):
    with pytest.raises(ValueError, match="augment share"):
        augmented(rows, share)
