"""Relative position buckets: the attention score bias of T5 (each stack's table) and MPNet (one
table the encoder's layers share) is a table row per bucket of the key's offset from the query.
transformers computes the buckets the same way for both (T5Attention._relative_position_bucket,
MPNetEncoder.relative_position_bucket). DeBERTa-v2's disentangled attention reads its relative
embeddings at a row per query-key distance, bucketed logarithmically beyond half its buckets
(deberta_relative_rows)."""

import math
import struct
from dataclasses import dataclass


def f32(x):
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
    scaled = f32(math.log(f32(f32(relative) / max_exact)))
    scaled = f32(f32(scaled / f32(math.log(max_distance / max_exact))) * (num_buckets - max_exact))
    return bucket + min(max_exact + int(scaled), num_buckets - 1)


def relative_position_buckets(queries, keys, past, bidirectional, num_buckets, max_distance):
    """Buckets [Tq * Tk] row-major of queries at positions past .. past + Tq - 1 against keys at
    0 .. Tk - 1."""
    return [relative_position_bucket(j - (past + i), bidirectional, num_buckets, max_distance)
            for i in range(queries) for j in range(keys)]


def deberta_log_bucket(relative, bucket_size, max_position):
    """transformers' DeBERTa-v2 make_log_bucket_position for one relative position (query
    position - key position): exact within half the buckets, logarithmic beyond, in float32 as
    torch computes it."""
    mid = bucket_size // 2
    if abs(relative) <= mid:
        return relative
    scaled = f32(math.log(f32(f32(abs(relative)) / mid)))
    scaled = f32(f32(scaled / f32(math.log(f32((max_position - 1) / mid)))) * (mid - 1))
    return int(math.copysign(math.ceil(scaled) + mid, relative))


def deberta_relative_rows(seq, span, bucket_size, max_position):
    """The rows of DeBERTa-v2's relative embeddings that queries and keys `seq` long read, for
    each distance d = i - j from -(seq - 1) to seq - 1: clamp(bucket(d) + span, 0, 2 span - 1)
    (DisentangledSelfAttention's c2p_pos; p2c_pos is the same row for the same pair), with
    bucket(d) = d where bucket_size or max_position is not positive."""
    def bucket(d):
        return deberta_log_bucket(d, bucket_size, max_position) \
            if bucket_size > 0 and max_position > 0 else d
    return [min(max(bucket(d) + span, 0), 2 * span - 1) for d in range(1 - seq, seq)]


@dataclass(frozen=True)
class RelativeRows:
    """Which relative embedding rows a sequence of `seq` tokens reads: rows first ..
    first + rows - 1 of the table, and offsets[i - j + seq - 1] the row (within that range) of
    query i and key j."""
    seq: int
    first: int
    rows: int
    offsets: tuple

    @classmethod
    def of(cls, table_rows):
        """From the table row of each distance -(seq - 1) .. seq - 1."""
        first = min(table_rows)
        return cls((len(table_rows) + 1) // 2, first, max(table_rows) - first + 1,
                   tuple(r - first for r in table_rows))

    def distances(self):
        """For each row 0 .. rows - 1, the distances d = i - j that read it (the backward's
        scatter lists): (starts [rows + 1], d + seq - 1 of each, grouped by row)."""
        by_row = [[] for _ in range(self.rows)]
        for n, r in enumerate(self.offsets):
            by_row[r].append(n)
        starts = [0]
        for found in by_row:
            starts.append(starts[-1] + len(found))
        return starts, [n for found in by_row for n in found]
