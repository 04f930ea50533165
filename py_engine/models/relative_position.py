"""Relative position buckets: the attention score bias of T5 (each stack's table) and MPNet (one
table the encoder's layers share) is a table row per bucket of the key's offset from the query.
transformers computes the buckets the same way for both (T5Attention._relative_position_bucket,
MPNetEncoder.relative_position_bucket)."""

import math
import struct


def _f32(x):
    """x rounded to float32, as torch's float32 arithmetic rounds each step."""
    return struct.unpack("f", struct.pack("f", x))[0]


def relative_position_bucket(relative, bidirectional, num_buckets, max_distance):
    """transformers' T5Attention._relative_position_bucket for one relative position (key
    position - query position), its logarithm taken in float32 as torch takes it, so the
    bucket boundaries fall where they fall there."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket = num_buckets if relative > 0 else 0
        relative = abs(relative)
    else:
        relative = -min(relative, 0)
    max_exact = num_buckets // 2
    if relative < max_exact:
        return bucket + relative
    scaled = _f32(math.log(_f32(_f32(relative) / max_exact)))
    scaled = _f32(_f32(scaled / _f32(math.log(max_distance / max_exact))) * (num_buckets - max_exact))
    return bucket + min(max_exact + int(scaled), num_buckets - 1)


def relative_position_buckets(queries, keys, past, bidirectional, num_buckets, max_distance):
    """Buckets [Tq * Tk] row-major of queries at positions past .. past + Tq - 1 against keys at
    0 .. Tk - 1."""
    return [relative_position_bucket(j - (past + i), bidirectional, num_buckets, max_distance)
            for i in range(queries) for j in range(keys)]
