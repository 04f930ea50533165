"""Exact and near-duplicate texts: the same example imported twice, or a page saved again with a
date changed, teaches a model to over-weight it.

    dups = find_duplicates(["the cat sat on the mat today", "the cat sat on the mat today!",
                            "a different text entirely"], DedupConfig())
    dups[1]        # Duplicate(index=1, of=0, exact=False, similarity=1.0)

Exact duplicates share a key (by default the text itself; callers pass a content hash). Near
duplicates are found with MinHash over word shingles (lower-cased words, n at a time) and
locality-sensitive hashing: each signature of num_perm minima is cut into `bands` bands, texts
sharing a band are candidates, and a candidate whose estimated Jaccard similarity (the share
of equal minima) reaches `threshold` is a duplicate. With the defaults (3-word shingles, 126
permutations in 42 bands of 3, threshold 0.5) a pair at the threshold becomes a candidate with
probability 1 - (1 - 0.5**3)**42 = 0.996 (0.68 at similarity 0.3); a text of 30+ words with up
to three words changed, inserted or dropped scores 0.55-0.99 and is caught, while texts that
share up to a third of their sentences score under 0.35 and are not (tests/test_cleaning.py
measures both). Items are taken in `order` (by
default as given): the first of a group is kept, each later one is checked against those kept,
so near-duplicates never chain (A~B and B~C with A!~C keeps A and C).

Deterministic: shingles are hashed with crc32 and the permutations drawn from `seed`, never
from Python's per-process string hash. Pure Python: this runs in the browser.
"""

import random
import re
import zlib
from dataclasses import dataclass

_PRIME = (1 << 61) - 1     # a Mersenne prime: the permutations are (a*h + b) mod _PRIME
_WORD = re.compile(r"\w+")


@dataclass
class DedupConfig:
    """exact: drop items whose key an earlier item has. near: drop items whose estimated
    Jaccard similarity with a kept item (same group) is >= threshold."""
    exact: bool = True
    near: bool = True
    threshold: float = 0.5
    shingle_words: int = 3
    num_perm: int = 126
    bands: int = 42
    seed: int = 1

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.shingle_words < 1:
            raise ValueError(f"shingle_words must be at least 1, got {self.shingle_words}")
        if self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm})")


@dataclass(frozen=True)
class Duplicate:
    """Item `index` duplicates the kept item `of`: exactly (same key) or nearly (estimated
    Jaccard `similarity`)."""
    index: int
    of: int
    exact: bool
    similarity: float


def shingles(text, n=3):
    """The set of crc32 hashes of text's lower-cased word n-grams (the whole word list when it
    is shorter than n; the stripped text when it has no word)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        pieces = [" ".join(words)] if words else ([text.strip()] if text.strip() else [])
    else:
        pieces = (" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    return {zlib.crc32(p.encode("utf-8")) for p in pieces}


def jaccard(a, b):
    """The exact Jaccard similarity of two sets (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


class MinHash:
    """num_perm random permutations of the hash space, drawn from seed."""

    def __init__(self, num_perm=128, seed=1):
        rng = random.Random(seed)
        self.params = [(rng.randrange(1, _PRIME), rng.randrange(0, _PRIME))
                       for _ in range(num_perm)]

    def signature(self, hashes):
        """The minima of each permutation over a set of shingle hashes (a tuple of ints)."""
        if not hashes:
            return tuple(_PRIME for _ in self.params)
        hashes = list(hashes)
        return tuple(min([(a * h + b) % _PRIME for h in hashes]) for a, b in self.params)


def similarity(sig_a, sig_b):
    """Estimated Jaccard similarity: the share of permutations whose minima agree."""
    return sum(x == y for x, y in zip(sig_a, sig_b)) / len(sig_a)


class NearDuplicateIndex:
    """Signatures of kept texts in LSH buckets; query() returns the best match at or above
    the threshold."""

    def __init__(self, config=None):
        self.config = config or DedupConfig()
        self.minhash = MinHash(self.config.num_perm, self.config.seed)
        self.rows = self.config.num_perm // self.config.bands
        self.buckets = {}
        self.signatures = {}

    def signature(self, text):
        return self.minhash.signature(shingles(text, self.config.shingle_words))

    def _bands(self, sig):
        r = self.rows
        return [(k, sig[k * r:(k + 1) * r]) for k in range(self.config.bands)]

    def query(self, sig):
        """(key, similarity) of the most similar indexed text at or above the threshold, or
        None."""
        candidates = set()
        for band in self._bands(sig):
            candidates.update(self.buckets.get(band, ()))
        best = None
        for key in sorted(candidates):
            s = similarity(sig, self.signatures[key])
            if s >= self.config.threshold and (best is None or s > best[1]):
                best = (key, s)
        return best

    def add(self, key, sig):
        self.signatures[key] = sig
        for band in self._bands(sig):
            self.buckets.setdefault(band, []).append(key)


def find_duplicates(texts, config=None, keys=None, groups=None, order=None):
    """{index: Duplicate} for the items to drop. texts: list of str; keys: exact identity per
    item (default: the text); groups: items are compared only within their group (default:
    one group); order: the indices in the order items are considered, first kept (default:
    0, 1, ...)."""
    config = config or DedupConfig()
    n = len(texts)
    keys = texts if keys is None else keys
    groups = [None] * n if groups is None else groups
    order = range(n) if order is None else order
    seen, indexes, dropped = {}, {}, {}
    for i in order:
        exact_key = (groups[i], keys[i])
        if config.exact and exact_key in seen:
            dropped[i] = Duplicate(i, seen[exact_key], True, 1.0)
            continue
        if config.near:
            index = indexes.setdefault(groups[i], NearDuplicateIndex(config))
            sig = index.signature(texts[i])
            match = index.query(sig)
            if match is not None:
                dropped[i] = Duplicate(i, match[0], False, match[1])
                continue
            index.add(i, sig)
        seen[exact_key] = i
    return dropped
