"""Cleaning (py_engine/data/cleaning.py, dedup.py): normalisation with known answers and against
unicodedata, quality measures on texts with known ratios, what clean_records removes and
changes and why, and near-duplicate detection measured on a constructed set: documents, copies
with a few words changed, inserted or dropped (must be caught), and unrelated documents,
including ones that share up to a third of their sentences (must not be), at the default
threshold (estimated Jaccard 0.5 of word 3-shingles). MinHash estimates are checked against the
exact Jaccard similarity of the same shingle sets.

Run: .venv/bin/python -m pytest tests/test_cleaning.py -q -s    (-s prints the measurements)
"""

import json
import os
import random
import subprocess
import sys
import unicodedata

import pytest

from py_engine.data.cleaning import (CleaningConfig, NormalizeConfig, QualityConfig,
                                     clean_records, garbage_ratio, normalize_text,
                                     repetition_ratio)
from py_engine.data.dedup import (DedupConfig, MinHash, find_duplicates, jaccard, shingles,
                                  similarity)
from py_engine.data.pii import PiiConfig
from py_engine.data.record import Record

# ---- normalisation ---------------------------------------------------------------------------

NORMALIZE_CASES = [
    ("cafe\u0301", "café", ["unicode.form"]),
    ("a\u200bb\ufeffc\u00add\u202ee", "abcde", ["unicode.invisible"]),
    ("bell\x07 and nul\x00 and esc\x1b", "bell and nul and esc", ["unicode.control"]),
    ("no\u00a0break\u2003em\u3000wide", "no break em wide", ["unicode.whitespace"]),
    ("dos\r\nmac\rline\u2028para\u2029end", "dos\nmac\nline\npara\nend", ["unicode.whitespace"]),
    ("  trailing   \nspaces\t\n", "trailing\nspaces", ["unicode.whitespace"]),
    ("a\n\n\n\n\n\nb", "a\n\n\nb", ["unicode.whitespace"]),
    ("family 👨\u200d👩\u200d👧 stays", "family 👨\u200d👩\u200d👧 stays", []),
    ("def f():\n    return  1", "def f():\n    return  1", []),     # indentation kept
    ("ﬁne ²", "ﬁne ²", []),                                          # NFC keeps compatibility forms
]


@pytest.mark.parametrize("text, expected, reasons", NORMALIZE_CASES)
def test_normalize_known_answers(text, expected, reasons):
    assert normalize_text(text) == (expected, reasons)


def test_normalize_options():
    assert normalize_text("ﬁne ²", NormalizeConfig(form="NFKC")) == ("fine 2", ["unicode.form"])
    assert normalize_text("a  b   c", NormalizeConfig(collapse_spaces=True))[0] == "a b c"
    assert normalize_text(" x\u200b ", NormalizeConfig(enabled=False)) == (" x\u200b ", [])
    assert normalize_text("a\n\n\n\nb", NormalizeConfig(max_blank_lines=None))[0] == "a\n\n\n\nb"
    assert normalize_text(" x ", NormalizeConfig(strip=False))[0] == " x"
    with pytest.raises(ValueError, match="form must be"):
        NormalizeConfig(form="NFX")


def test_normalize_is_idempotent_and_nfc_on_random_text():
    rng = random.Random()
    pools = ["abc xyz ", "\u0301\u0308\u0327", "\u00a0\u2003\u3000\t\n\r\u2028", "\u200b\ufeff\u00ad",
             "\x00\x07\x1b\x85", "éüçñßÅ", "日本語한국어", "😀👍🏽\u200d", "ﬁ²"]
    for _ in range(500):
        text = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 40)))
        once, _ = normalize_text(text)
        assert normalize_text(once) == (once, [])
        assert unicodedata.is_normalized("NFC", once)
        assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n" for c in once)
        assert once == once.strip()


# ---- quality measures ------------------------------------------------------------------------

def test_garbage_and_repetition_ratios_known_answers():
    assert garbage_ratio("abc\ufffd") == 0.25
    assert garbage_ratio("CafÃ© au lait") == 2 / 13            # "Ã©" is é read as Latin-1
    assert garbage_ratio("it\u00e2\u20ac\u2122s") == 3 / 6       # â€™ is ’ read as cp1252
    assert garbage_ratio("╔══╗\nab") == 4 / 7                   # box drawing; the newline is text
    assert garbage_ratio("São Paulo, NÃO, 5 €, naïve, 東京 😀") == 0.0
    assert garbage_ratio("x\ue000y") == 1 / 3                   # private use
    assert repetition_ratio("one line\none line\nanother") == pytest.approx(8 / 23)
    words = "the quick brown fox jumps over the lazy dog near the river bank".split()
    assert repetition_ratio(" ".join(words)) == 0.0
    assert repetition_ratio(" ".join(words * 3)) == pytest.approx(1 - 13 / 37)   # 13 words, thrice
    assert repetition_ratio("hello aaaaaaaaaaaaaaaaaaaa") == pytest.approx(20 / 26)
    assert repetition_ratio("a rule ---------- and ========== lines") == 0.0


# ---- clean_records ---------------------------------------------------------------------------

def chat(user, answer, source="chat", priority=None):
    return Record("causal_lm", source, messages=[{"role": "user", "content": user},
                                                  {"role": "assistant", "content": answer}],
                  priority=priority)


def test_clean_records_says_what_it_removed_and_changed():
    prose = "The river rose after a week of rain, and the town moved its market uphill."
    records = [
        Record("causal_lm", "website", text=prose, id=10),                      # 0 kept as is
        Record("causal_lm", "website", text="Too short.", id=11),               # 1 too_short
        Record("causal_lm", "website", text="x" * 100_001, id=12),              # 2 too_long
        Record("causal_lm", "website", text="buy now! " * 30, id=13),           # 3 repetition
        Record("causal_lm", "website", text="\ufffd\ufffd data \ufffd\ufffd\ufffd", id=14),   # 4 garbage
        Record("causal_lm", "chat", messages=[{"role": "user", "content": "is anyone there at all?"},
                                              {"role": "assistant", "content": "  "}]),   # 5 no_answer
        Record("causal_lm", "text", text="\u200b\u200b"),                        # 6 empty
        chat("Mail me at jane@example.org or call 020 7946 0958",
             "Done,\u00a0I wrote it down."),                                      # 7 changed
        Record("classification", "correction", text="cheap flights\u200b", label=" travel"),  # 8
        Record("classification", "dataset", text="cheap flights", label="travel"),  # 9 duplicate of 8
        Record("classification", "dataset", text="cheap flights", label="shopping"),   # 10 kept
        Record("causal_lm", "website", text=prose.replace("week", "fortnight")),  # 11 near dup of 0
    ]
    before = [r.as_dict() for r in records]
    report = clean_records(records)
    assert [r.as_dict() for r in records] == before          # the input is not modified
    assert report.kept_indices == [0, 7, 8, 10]
    assert report.records[0] is records[0]
    assert report.removed_counts() == {"too_short": 1, "too_long": 1, "repetition": 1,
                                       "garbage": 1, "no_answer": 1, "empty": 1, "duplicate": 1,
                                       "near_duplicate": 1}
    assert report.changed_counts() == {"pii.email": 1, "pii.phone": 1, "unicode.whitespace": 1,
                                       "unicode.invisible": 1, "label.whitespace": 1}
    assert report.pii_found == {"email": 1, "phone": 1}
    by_index = {o.index: o for o in report.outcomes}
    assert by_index[1].detail == "10 characters < 20" and by_index[1].id == 11
    assert by_index[9].reasons == ["duplicate"] and by_index[9].detail == "of record 8"
    assert by_index[11].reasons == ["near_duplicate"] and by_index[11].detail.startswith("of record 0")
    assert by_index[8].reasons == ["label.whitespace", "unicode.invisible"]
    cleaned = report.records[1]
    assert cleaned.messages[0]["content"] == "Mail me at [EMAIL] or call [PHONE]"
    assert cleaned.messages[1]["content"] == "Done, I wrote it down."
    assert (cleaned.source, cleaned.priority, cleaned.created) == \
        (records[7].source, records[7].priority, records[7].created)
    assert report.records[2].label == "travel" and report.records[2].source == "correction"
    summary = json.loads(json.dumps(report.summary()))
    assert summary["input"] == 12 and summary["kept"] == 4
    assert {r["index"] for r in summary["records"]} == set(range(1, 12)) - {10}


def test_each_part_can_be_configured_or_turned_off():
    records = [chat("call 020 7946 0958 now", "ok, calling you right away"),
               chat("call 020 7946 0958 now", "ok, calling you right away")]
    report = clean_records(records, CleaningConfig(pii=None, dedup=None))
    assert len(report.records) == 2 and report.outcomes == []
    report = clean_records(records, CleaningConfig(pii=PiiConfig(types=("email",))))
    assert len(report.records) == 1 and "020 7946" in report.records[0].messages[0]["content"]
    strict = CleaningConfig(quality=QualityConfig(min_chars=100))
    assert clean_records(records, strict).removed_counts() == {"too_short": 2}
    loose = CleaningConfig(quality=QualityConfig(enabled=False), dedup=DedupConfig(exact=False, near=False))
    assert len(clean_records(records + [Record("causal_lm", "text", text="x")], loose).records) == 3
    with pytest.raises(ValueError, match="threshold must be"):
        DedupConfig(threshold=1.5)
    with pytest.raises(ValueError, match="must divide num_perm"):
        DedupConfig(bands=30)


def test_duplicates_keep_the_highest_priority_record():
    imported = chat("what is the capital of France?", "Paris.", source="dataset")
    corrected = chat("what is the capital of France?", "Paris.", source="correction")
    report = clean_records([imported, corrected])
    assert report.kept_indices == [1]
    assert report.outcomes[0].detail == "of record 1"


# ---- near duplicates on a constructed set ----------------------------------------------------

SUBJECTS = ["the old bakery", "our new neighbour", "a quiet student", "the city council",
            "my grandmother", "the night train", "a stray cat", "the football club",
            "the village school", "an engineer from Lyon", "the museum guide", "a young doctor"]
VERBS = ["repaired", "painted", "sold", "described", "visited", "photographed", "cleaned",
         "measured", "borrowed", "studied", "opened", "closed", "moved", "praised"]
OBJECTS = ["the wooden bridge", "a red bicycle", "the harbour wall", "an ancient map",
           "the garden shed", "a broken clock", "the parish records", "a copper kettle",
           "the north tower", "a box of letters", "the tram depot", "a mountain hut"]
TAILS = ["before the storm arrived", "on a cold Tuesday morning", "with great care",
         "for the spring festival", "while the children watched", "after years of neglect",
         "under a grey sky", "to everyone's surprise", "in less than an hour",
         "despite the heavy rain", "as the bells rang", "near the end of summer"]
FILLER = ["river", "window", "letter", "garden", "yellow", "slowly", "mirror", "forest",
          "candle", "silver", "market", "quietly", "harbour", "pencil", "orange", "bridge"]


def sentence(rng):
    return (f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
            f"{rng.choice(TAILS)}.")


def near_copy(rng, text):
    """text with 1-3 edits: a word replaced, inserted or dropped; sometimes case and
    punctuation changed too."""
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(words))
        edit = rng.choice(["replace", "insert", "drop"])
        if edit == "replace":
            words[k] = rng.choice(FILLER)
        elif edit == "insert":
            words.insert(k, rng.choice(FILLER))
        elif len(words) > 1:
            del words[k]
    copy = " ".join(words)
    if rng.random() < 0.3:
        copy = copy.upper().replace(".", "!")
    return copy


def constructed_set(seed=5, n=200):
    """(texts, near_pairs, related_pairs): n documents of 3-12 sentences (30-140 words);
    for each, a near copy; and n documents that reuse some sentences of another (one, or up to
    a third of them)."""
    rng = random.Random(seed)
    docs = [[sentence(rng) for _ in range(rng.randint(3, 12))] for _ in range(n)]
    texts = [" ".join(d) for d in docs]
    near_pairs, related_pairs = [], []
    for i in range(n):
        texts.append(near_copy(rng, texts[i]))
        near_pairs.append((i, len(texts) - 1))
    for i in range(n):
        shared = rng.sample(docs[i], rng.randint(1, max(1, len(docs[i]) // 3)))
        fresh = [sentence(rng) for _ in range(len(docs[i]) - len(shared))]
        mixed = shared + fresh
        rng.shuffle(mixed)
        texts.append(" ".join(mixed))
        related_pairs.append((i, len(texts) - 1))
    return texts, near_pairs, related_pairs


def test_near_duplicates_are_caught_and_unrelated_texts_are_not():
    texts, near_pairs, related_pairs = constructed_set()
    config = DedupConfig()                   # threshold 0.5, 3-word shingles, 126 perms / 42 bands
    dropped = find_duplicates(texts, config)
    n = len(near_pairs)
    caught = sum(1 for i, j in near_pairs if j in dropped and dropped[j].of == i)
    false = [k for k in dropped if k not in {j for _, j in near_pairs}]
    exact = [jaccard(shingles(texts[i]), shingles(texts[j])) for i, j in near_pairs]
    related = [jaccard(shingles(texts[i]), shingles(texts[j])) for i, j in related_pairs]
    print(f"\nnear copies caught {caught}/{n} (exact Jaccard {min(exact):.2f}-{max(exact):.2f}); "
          f"unrelated or sentence-sharing texts removed {len(false)}/{len(texts) - n} "
          f"(related pairs' Jaccard up to {max(related):.2f})")
    assert caught >= 0.97 * n
    assert false == []


def test_minhash_estimates_agree_with_exact_jaccard():
    texts, near_pairs, related_pairs = constructed_set(seed=11, n=60)
    minhash = MinHash(128, seed=1)
    errors = []
    for i, j in near_pairs + related_pairs + [(k, k + 1) for k in range(59)]:
        a, b = shingles(texts[i]), shingles(texts[j])
        errors.append(abs(similarity(minhash.signature(a), minhash.signature(b)) - jaccard(a, b)))
    mean = sum(errors) / len(errors)
    print(f"\nMinHash |estimate - exact Jaccard| over {len(errors)} pairs: mean {mean:.3f}, "
          f"max {max(errors):.3f}")
    assert mean < 0.03 and max(errors) < 0.15     # the estimate's sd is <= 0.5/sqrt(128) = 0.044


def test_near_duplicates_compare_within_kind_and_label_and_do_not_chain():
    words = [f"w{k}" for k in range(30)]
    a = " ".join(words)
    b = a.replace("w10 ", "x10 ")             # 3 of 28 shingles changed: Jaccard 0.79 with a
    c = b.replace("w20 ", "x20 ")             # 0.79 with b, 0.65 with a
    assert jaccard(shingles(a), shingles(c)) < 0.7 < jaccard(shingles(b), shingles(c))
    dropped = find_duplicates([a, b, c], DedupConfig(threshold=0.72))
    assert dropped[1].of == 0 and 2 not in dropped           # c is compared with kept a only
    assert find_duplicates([a, b], groups=["pos", "neg"]) == {}


def test_dedup_is_deterministic_across_processes():
    code = ("import json; from py_engine.data.dedup import MinHash, shingles;"
            "print(json.dumps(MinHash(16, seed=3).signature(shingles('a b c d e f g h'))))")
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                   capture_output=True, text=True).stdout)
    assert len(outputs) == 1
