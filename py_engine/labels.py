"""The two ways a label says "do not count this position", in one place.

IGNORE_INDEX is transformers' convention in user-facing labels (token labels of -100 are not
trained). IGNORE_LABEL is what the loss ops and kernels read: the u32 with every bit set, since
GPU label buffers are u32 (the NumPy ops use the same value, so both compare the same way).
"""

import math
import struct

IGNORE_INDEX = -100
IGNORE_LABEL = 0xFFFFFFFF
F32_MAX = 3.4028234663852886e38


def float_words(values):
    """The u32 words of float targets as the labels buffer holds them (a multi-label or
    regression head's, ops/target_loss.py): each value's f32 bits, IGNORE_LABEL for None (not
    counted). A value that is not finite is refused (its bits could read as IGNORE_LABEL)."""
    out = []
    for v in values:
        if v is None:
            out.append(IGNORE_LABEL)
            continue
        v = float(v)
        if not (math.isfinite(v) and abs(v) <= F32_MAX):
            raise ValueError(f"a target of {v} is not a finite 32-bit float")
        out.append(struct.unpack("<I", struct.pack("<f", v))[0])
    return out
