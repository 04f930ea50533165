"""Choosing the next token from a row of logits, and the text bookkeeping of a generation, in pure
Python (no NumPy: this runs in Pyodide).

Logits are any sequence of floats (a list, array("f"), a NumPy row on the host). The warpers
follow transformers' LogitsWarper classes and their order in `generate`:

    TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper -> softmax -> multinomial

    greedy(logits)                                   # argmax, lowest index on ties (torch's)
    warp(logits, temperature=0.7, top_k=50, top_p=0.9)
        # [(token, probability)] of the tokens kept, renormalized, highest first
    sample(logits, rng, temperature=0.7, top_k=50, top_p=0.9)   # rng: random.Random(seed)

top_k: keep the k highest scores and every score tied with the k-th (transformers compares
with the k-th value); 0 disables it. top_p: sort ascending, drop the tokens whose cumulative
probability is <= 1 - top_p, i.e. keep the smallest head of the descending order whose
probability reaches top_p, and always the most likely token; 1.0 disables it.

TextStream turns generated ids into text pieces for a streaming callback: only complete
characters are emitted (a multi-byte UTF-8 character split across tokens decodes to U+FFFD until
its last byte arrives), stop strings end the text before them, and text that might still become a
stop string is held back until it cannot.
"""

import math

REPLACEMENT = "\ufffd"


def greedy(logits):
    """Index of the largest logit; the lowest such index on ties."""
    best, best_value = 0, -math.inf
    for i, value in enumerate(logits):
        if value > best_value:
            best, best_value = i, value
    return best


def _softmax(scores):
    """Probabilities of finite scores (-inf -> 0)."""
    top = max(scores)
    exps = [math.exp(s - top) if s != -math.inf else 0.0 for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def warp_scores(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The scores after temperature, top-k and top-p, as transformers' warpers leave them:
    a list of floats with -inf on removed tokens."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature} (use greedy decoding)")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    scores = [float(x) for x in logits]
    if temperature != 1.0:
        scores = [s / temperature for s in scores]
    if top_k and top_k < len(scores):
        kth = sorted(scores, reverse=True)[top_k - 1]
        scores = [s if s >= kth else -math.inf for s in scores]
    if top_p < 1.0:
        probs = _softmax(scores)
        order = sorted(range(len(scores)), key=lambda i: scores[i])   # ascending, stable
        cumulative = 0.0
        removed = set()
        for i in order[:-1]:                  # the most likely token always stays
            cumulative += probs[i]
            if cumulative <= 1.0 - top_p:
                removed.add(i)
            else:
                break
        scores = [-math.inf if i in removed else s for i, s in enumerate(scores)]
    return scores


def warp(logits, temperature=1.0, top_k=0, top_p=1.0):
    """[(token, probability)] of the tokens left after the warpers, renormalized, in order of
    decreasing probability (ties: lower index first)."""
    probs = _softmax(warp_scores(logits, temperature, top_k, top_p))
    kept = [(i, p) for i, p in enumerate(probs) if p > 0.0]
    kept.sort(key=lambda item: -item[1])
    return kept


def sample(logits, rng, temperature=1.0, top_k=0, top_p=1.0):
    """One token drawn from the warped distribution with `rng` (a random.Random)."""
    kept = warp(logits, temperature, top_k, top_p)
    u = rng.random()
    cumulative = 0.0
    for token, p in kept:
        cumulative += p
        if u < cumulative:
            return token
    return kept[-1][0]          # u within rounding of 1


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
