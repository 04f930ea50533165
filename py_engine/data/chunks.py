"""Cutting text into pieces that fit a token budget, for every importer: blocks (paragraphs, a
page's blocks) packed greedily into chunks of at most max_tokens, a block too long for a chunk
cut at its lines, then sentences, then words, then anywhere; a chunk never ends on a heading
that can open the next one instead. Chunks are spans of the original text, so every record
can say which characters (and lines) it came from.

    chunks = split_into_chunks(text, max_tokens=512, count_tokens=None, markdown=False)
    # [(start, end, text[start:end]), ...]

count_tokens: any callable from a string to its token count (the model's tokenizer, e.g.
lambda s: len(tokenizer.encode(s).ids)); the default, approx_tokens, is one token per 4
characters, English text under common BPE vocabularies. Pure Python: this runs in the browser.
"""

import re

SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+|(?<=[\u3002\uff01\uff1f])\s*")


def approx_tokens(text):
    """About one token per 4 characters: the default measure when no tokenizer is given."""
    return (len(text) + 3) // 4


def split_into_chunks(text, max_tokens=512, count_tokens=None, markdown=False):
    """[(start, end, chunk)]: `text` in spans of at most max_tokens, cut at paragraph
    boundaries (blank lines); with markdown a fenced code block is one paragraph and a heading
    never ends a chunk."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    units = [(s, e, markdown and re.match(r"#{1,6}\s", text[s:e]) is not None)
             for s, e in paragraphs(text, markdown)]
    return [(s, e, text[s:e]) for s, e in fit_chunks(text, units, count_tokens or approx_tokens,
                                                      max_tokens)]


def paragraphs(text, markdown=False):
    """(start, end) of each paragraph: lines between blank lines, trailing space trimmed;
    with markdown a ``` or ~~~ fence runs to its closing fence whatever lies inside."""
    spans, start, end, fence, pos = [], None, 0, None, 0
    for line in text.split("\n"):
        stripped = line.strip()
        opens = markdown and fence is None and re.match(r"(```+|~~~+)", stripped)
        if opens:
            fence = opens.group(1)
        elif fence is not None and stripped.startswith(fence) and not stripped.strip(fence[0]):
            fence = None
        if stripped or fence is not None:
            if start is None:
                start = pos
            end = pos + len(line.rstrip())
        elif start is not None:
            spans.append((start, end))
            start = None
        pos += len(line) + 1
    if start is not None:
        spans.append((start, end))
    return spans


def fit_chunks(text, units, count_tokens, max_tokens):
    """(start, end) spans of `text` that each fit max_tokens, from `units`: ordered
    (start, end, is_heading) spans, split further where one alone does not fit. A chunk never
    ends with headings when they can open the next chunk instead."""
    def fits(start, end):
        return count_tokens(text[start:end]) <= max_tokens

    chunks, current = [], []
    for unit in units:
        for piece in split_to_fit(text, unit, fits):
            if not current or fits(current[0][0], piece[1]):
                current.append(piece)
                continue
            cut = len(current)                # trailing headings move on with the piece
            while cut > 0 and current[cut - 1][2]:
                cut -= 1
            cut = next((k for k in range(max(cut, 1), len(current))
                        if fits(current[k][0], piece[1])), len(current))
            chunks.append((current[0][0], current[cut - 1][1]))
            current = current[cut:] + [piece]
    if current:
        chunks.append((current[0][0], current[-1][1]))
    return chunks


def split_to_fit(text, unit, fits):
    """`unit` as it is if it fits, else as pieces that do: its lines, sentences, words, and at
    last characters."""
    start, end, heading = unit
    if fits(start, end):
        return [unit]
    for pattern in (r"\n+", SENTENCE_END, r"\s+"):
        parts = spans_between(text, start, end, pattern)
        if len(parts) > 1:
            return [p for s, e in parts for p in split_to_fit(text, (s, e, heading), fits)]
    pieces = []
    while start < end:                    # one "word" too long: the longest prefixes that fit
        low, high = start + 1, end
        if not fits(start, low):
            raise ValueError(f"max_tokens is too small for even one character "
                             f"({text[start]!r} at {start})")
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(start, mid) else (low, mid - 1)
        pieces.append((start, low, heading))
        start = low
    return pieces


def spans_between(text, start, end, separator):
    """The spans of text[start:end] between matches of `separator`, without the matches."""
    spans, at = [], start
    for match in re.compile(separator).finditer(text, start, end):
        if match.start() > at:
            spans.append((at, match.start()))
        at = max(at, match.end())
    if at < end:
        spans.append((at, end))
    return spans
