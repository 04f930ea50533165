"""Choosing the next token from a row of logits, and the text bookkeeping of a generation, in pure
Python (no NumPy: this runs in Pyodide).

Logits are any sequence of floats (a list, array("f"), a NumPy row on the host). The warpers
follow transformers' LogitsWarper classes and their order in `generate`:

    TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper -> softmax -> multinomial

    greedy(logits)                                   # argmax, lowest index on ties (torch's)
    warp(logits, temperature=0.7, top_k=50, top_p=0.9)
        # [(token, probability)] of the tokens kept, renormalized, highest first
    sample(logits, rng, temperature=0.7, top_k=50, top_p=0.9)   # rng: random.Random(seed)
    sample_candidates(candidates, rng, temperature=0.7, top_p=0.9)  # the same draw, or None

A GPU decoder sends back a row's likeliest tokens instead of the row (kernels/argmax.py's
RowCandidates: every token above some value, and the whole row's softmax total), picked by
Sampling(...).tail: all that top-k keeps, or all but half of what top-p removes, or all but
SAMPLE_TAIL of the mass. sample_candidates draws from them as sample() draws from the row, up
to the rounding of the GPU's f32 total, or answers None when they cannot decide (the draw
fell past them, or too few came back): the caller then draws from the whole row with the
rng as it was.

top_k: keep the k highest scores and every score tied with the k-th (transformers compares
with the k-th value); 0 disables it. top_p: sort ascending, drop the tokens whose cumulative
probability is <= 1 - top_p, i.e. keep the smallest head of the descending order whose
probability reaches top_p, and always the most likely token; 1.0 disables it.

TextStream turns generated ids into text pieces for a streaming callback: only complete
characters are emitted (a multi-byte UTF-8 character split across tokens decodes to U+FFFD until
its last byte arrives), stop strings end the text before them, and text that might still become a
stop string is held back until it cannot.
"""

import heapq
import math
from dataclasses import dataclass

REPLACEMENT = "\ufffd"
SAMPLE_TAIL = 1e-4      # the mass plain sampling leaves past its candidates: a draw reaches it
                        # (and the whole row is read) at most this often
NO_TAIL_LIMIT = 1e30    # times the row's total (at most 262,144): finite in f32
TOTAL_ROUNDING = 2.0 ** -22  # the row's total comes back rounded to f32 (half a unit in 2^24):
                        # a candidates' decision this close to a boundary, relative to the
                        # total, could go the other way on the whole row, and is left to it
_UNDECIDED = object()


@dataclass(frozen=True)
class Sampling:
    """The warpers' settings for a sampled token, checked when made."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        _check_temperature(self.temperature)
        _check(self.top_k, self.top_p)

    @property
    def tail(self):
        """The share of the row's mass the GPU's candidates may leave out: with top-k no
        limit (the candidates need only hold its k and their ties; the kernel's bound on the
        mass left out runs up to 13% over it, so even 1 could keep more than needed), with
        top-p half of what it removes (the rest is then removed whatever it holds), else
        SAMPLE_TAIL."""
        if self.top_k:
            return NO_TAIL_LIMIT
        return 0.5 * (1.0 - self.top_p) if self.top_p < 1.0 else SAMPLE_TAIL


def greedy(logits):
    """Index of the largest logit; the lowest such index on ties."""
    best, best_value = 0, -math.inf
    for i, value in enumerate(logits):
        if value > best_value:
            best, best_value = i, value
    return best


def _scaled(logits, temperature):
    """The row as a list of Python floats, divided by `temperature` (the warpers' first step)."""
    _check_temperature(temperature)
    scores = logits.tolist() if hasattr(logits, "tolist") else [float(x) for x in logits]
    return scores if temperature == 1.0 else [s / temperature for s in scores]


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature} (use greedy decoding)")


def _check(top_k, top_p):
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")


def _kept(scores, top_k, top_p, rest=0.0, size=None, margin=0.0):
    """Indices, ascending, of the tokens top-k and then top-p keep of `scores`; None when they
    keep every token. `scores` may be the highest of a row of `size` tokens, the others
    together holding `rest` (in exp(score - max) units, as _exps) and each scoring below all
    of them: top-k then takes its k among them (the caller checks there are k), and top-p
    removes the others (the caller checks rest is within what it removes).

    A row is a whole vocabulary (150,000 tokens and more), so the work is kept linear: top-k
    finds its k-th score with a heap, and top-p sorts only the tokens that could stay. Those
    are the tokens more likely than (1 - top_p) / n: a token at most that likely sits, in
    ascending order, after only tokens as unlikely, which together hold at most 1 - top_p,
    so top-p removes it whatever the rest (halved, against rounding). Their mass starts the
    cumulative sum that the others continue in ascending order, as in TopPLogitsWarper.

    `margin`: how far `rest` may be off, as a share of the total; a cumulative sum within it
    of top-p's cut could fall on the other side of it: _UNDECIDED then."""
    kept = None
    if top_k and top_k < len(scores):
        kth = heapq.nlargest(top_k, scores)[-1]
        kept = [i for i, s in enumerate(scores) if s >= kth]        # ties with the k-th stay
    if top_p >= 1.0:
        return kept
    exps = _exps(scores if kept is None else [scores[i] for i in kept])
    whole = kept is None and not top_k
    total = sum(exps) + (rest if whole else 0.0)
    cut = 0.5 * (1.0 - top_p) / (size if whole and size else len(exps)) * total
    candidates = [k for k, e in enumerate(exps) if e > cut]
    cumulative = max(0.0, total - sum(exps[k] for k in candidates)) / total
    index = (lambda k: k) if kept is None else kept.__getitem__
    removed = set()
    # ascending, stable (ties: lower index first); the most likely token always stays
    for k in sorted(candidates, key=lambda k: scores[index(k)])[:-1]:
        cumulative += exps[k] / total
        if margin and abs(cumulative - (1.0 - top_p)) <= margin:
            return _UNDECIDED
        if cumulative <= 1.0 - top_p:
            removed.add(k)
        else:
            break
    return [index(k) for k in candidates if k not in removed]


def _exps(scores):
    """exp(score - max) of each score (0 for -inf)."""
    top = max(scores)
    return list(map(math.exp, [s - top for s in scores]))


def _warped(logits, temperature, top_k, top_p):
    """(scores, kept): the row after temperature, and the indices top-k and top-p keep of it
    (None: every token)."""
    scores = _scaled(logits, temperature)
    _check(top_k, top_p)
    return scores, _kept(scores, top_k, top_p)


def warp_scores(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The scores after temperature, top-k and top-p, as transformers' warpers leave them:
    a list of floats with -inf on removed tokens."""
    scores, kept = _warped(logits, temperature, top_k, top_p)
    if kept is None:
        return scores
    kept = set(kept)
    return [s if i in kept else -math.inf for i, s in enumerate(scores)]


def _kept_probabilities(logits, temperature, top_k, top_p):
    """(tokens, probabilities): the kept tokens in index order and the softmax of their scores
    (0 where it underflows)."""
    scores, kept = _warped(logits, temperature, top_k, top_p)
    return _probabilities(scores, kept)


def _probabilities(scores, kept, rest=0.0):
    """(tokens, probabilities) of the `kept` indices of `scores` (None: all), `rest` being the
    mass of the row's tokens not given when they all stay (sampling without top-k or top-p)."""
    exps = _exps(scores if kept is None else [scores[i] for i in kept])
    total = sum(exps) + (rest if kept is None else 0.0)
    return range(len(scores)) if kept is None else kept, [e / total for e in exps]


def warp(logits, temperature=1.0, top_k=0, top_p=1.0):
    """[(token, probability)] of the tokens left after the warpers, renormalized, in order of
    decreasing probability (ties: lower index first)."""
    kept = [(t, p) for t, p in zip(*_kept_probabilities(logits, temperature, top_k, top_p)) if p > 0.0]
    kept.sort(key=lambda item: -item[1])
    return kept


def sample(logits, rng, temperature=1.0, top_k=0, top_p=1.0):
    """One token drawn from the warped distribution with `rng` (a random.Random): the first
    token of warp()'s order at which the cumulative probability passes a uniform draw. Only the
    tokens likelier than 1/1000 of an even share are sorted first; together they hold at least
    99.9% of the probability, so the rest is sorted only for a draw that reaches it."""
    tokens, probs = _kept_probabilities(logits, temperature, top_k, top_p)
    return _draw(tokens, probs, rng.random(), len(probs))


def _draw(tokens, probs, u, size, past=False, margin=0.0):
    """The first token in order of decreasing probability at which the cumulative probability
    passes u; with `past` (tokens of the row were left out, holding the rest), None when u
    lies beyond the tokens given, or within `margin` of a step (probabilities that may be off
    by that much could put it on the other side). The tokens likelier than 1/1000 of an even
    share of `size` are sorted first: they hold at least 99.9% of the probability."""
    cut = 1e-3 / size
    cumulative, last = 0.0, None
    for share in ([k for k, p in enumerate(probs) if p > cut],
                  [k for k, p in enumerate(probs) if 0.0 < p <= cut]):
        for k in sorted(share, key=lambda k: -probs[k]):     # stable: lower index first on ties
            cumulative += probs[k]
            if margin and abs(u - cumulative) <= margin:
                return None
            if u < cumulative:
                return tokens[k]
            last = k
    if past:
        return None
    return tokens[last]         # u within rounding of 1: the least likely token


def sample_candidates(candidates, rng, temperature=1.0, top_k=0, top_p=1.0):
    """sample()'s draw from a row's likeliest tokens as the GPU picked them with
    Sampling(temperature, top_k, top_p).tail (kernels/argmax.py's RowCandidates), or None when
    they cannot decide: fewer than top-k of them, more than top-p may remove left out, some
    that did not come back, or a draw past them or too close to call (within the f32 rounding
    of the row's total, TOTAL_ROUNDING). rng then has drawn; the caller draws from the whole
    row with it as it was."""
    c = candidates
    Sampling(temperature, top_k, top_p)              # checked as the whole row's draw checks
    if not c.tokens or not c.complete or top_k > len(c.tokens):
        return None
    scores = _scaled(c.logits, temperature)
    rest = max(0.0, c.total - sum(_exps(scores)))    # the row's mass outside the candidates
    if top_k:
        rest = 0.0                                   # every other token scores below the k-th
    elif top_p < 1.0 and rest > 0.75 * (1.0 - top_p) * c.total:
        return None                                  # top-p might keep some of the rest
    # the rest is the f32 total less the candidates: decisions that close to it are the row's
    margin = TOTAL_ROUNDING if rest > 0.0 else 0.0
    kept = _kept(scores, top_k, top_p, rest, c.size, margin)
    if kept is _UNDECIDED:
        return None
    tokens, probs = _probabilities(scores, kept, rest if kept is None else 0.0)
    token = _draw(tokens, probs, rng.random(), c.size, past=rest > 0.0 and kept is None,
                  margin=margin if kept is None else 0.0)
    return None if token is None else c.tokens[token]


class TextStream:
    """The text of the tokens generated so far, emitted in complete pieces.

        stream = TextStream(tokenizer, stop=("\\nUser:",))
        piece = stream.push(token_id)     # new complete text ("" while held back)
        stream.stopped                    # a stop string appeared: stream.text ends before it
        piece = stream.flush()            # the held-back rest, at the end of the generation
    """

    def __init__(self, tokenizer, stop=()):
        if isinstance(stop, str):
            stop = (stop,)
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids = []
        self.text = ""           # complete text, cut before a stop string once one appears
        self.emitted = 0         # characters of self.text already handed out
        self.stopped = False

    def push(self, token):
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        while text.endswith(REPLACEMENT):     # an incomplete character: wait for its bytes
            text = text[:-1]
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text = text[:cut]
        self.text = text
        end = len(text) if self.stopped else len(text) - self._held(text)
        return self._emit(max(end, self.emitted))

    def _held(self, text):
        """Length of the longest end of `text` that begins some stop string."""
        held = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:n]):
                    held = n
                    break
        return held

    def _emit(self, end):
        piece = self.text[self.emitted:end]
        self.emitted = end
        return piece

    def flush(self):
        """Everything not yet emitted, including trailing text that never became a stop string
        (and the U+FFFD of bytes that never completed a character)."""
        if not self.stopped and self.ids:
            full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if len(full) > len(self.text):
                self.text = full
        return self._emit(len(self.text))
