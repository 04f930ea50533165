"""Batches for training: bucketed by length so padding is small and few shapes occur.

Every shape (batch size, padded length) costs the GPU backend one recorded program, so lengths
are padded up to a multiple of `multiple` and examples of similar length are grouped: shuffle,
sort within windows of `window` batches, cut into batches, shuffle the batch order. Seeded per
epoch, so a run is reproducible.
"""

import random


def padded_length(n, multiple, cap):
    return min(cap, -(-max(n, 1) // multiple) * multiple)


def plan_epoch(lengths, batch_size, seed, epoch, window=50):
    """Lists of example indices, one per batch, for one epoch."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
