"""The two ways a label says "do not count this position", in one place.

IGNORE_INDEX is transformers' convention in user-facing labels (token labels of -100 are not
trained). IGNORE_LABEL is what the loss ops and kernels read: the u32 with every bit set, since
GPU label buffers are u32 (the NumPy ops use the same value, so both compare the same way).
"""

IGNORE_INDEX = -100
IGNORE_LABEL = 0xFFFFFFFF
