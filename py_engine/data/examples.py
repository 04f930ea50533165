"""A small embedded labelled dataset, so the demo and the benchmarks need no files: short
sentences whose sentiment word decides the label, drawn from a seeded generator."""

import random

from .classification import Example

POSITIVE = ["great", "wonderful", "excellent", "loved it", "fantastic", "superb", "amazing", "brilliant"]
NEGATIVE = ["terrible", "awful", "hated it", "boring", "bad", "worst", "disappointing", "dull"]
SUBJECTS = ["the film", "this book", "the meal", "our trip", "the concert", "that show"]
LABELS = ["neg", "pos"]


def sentiment_examples(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(LABELS)
        words = POSITIVE if label == "pos" else NEGATIVE
        out.append(Example(f"{rng.choice(SUBJECTS)} was {rng.choice(words)}, honestly {rng.choice(words)}", label))
    return out
