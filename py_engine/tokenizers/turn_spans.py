"""The characters an assistant turn trains in a rendered conversation: its content as the
template printed it, extended over the end-of-turn token that follows (after spaces or tabs),
so the model learns to stop. Standard library only: py_engine's chat templates use it, and
`py-engine export-job` copies this file into a job folder, whose train.py finds the same spans
in what transformers renders.
"""


def add_turn_span(spans, text, start, end, end_tokens):
    """Append the span of an assistant content printed at text[start:end] to `spans` (sorted,
    disjoint (start, end) pairs), extended over the first of `end_tokens` (longest first)
    that follows it; a span that touches the previous one joins it, and an empty one is
    dropped."""
    gap = end
    while gap < len(text) and text[gap] in " \t":
        gap += 1
    for token in end_tokens:
        if text.startswith(token, gap):
            end = gap + len(token)
            break
    if end == start:                # empty content with no end-of-turn after it: nothing trains
        return
    if spans and start <= spans[-1][1]:
        spans[-1] = (spans[-1][0], max(spans[-1][1], end))
    else:
        spans.append((start, end))
