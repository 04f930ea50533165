"""The two ways a label says "do not count this position", in one place; the kinds of
classifier head (transformers' problem_type) and how their float targets travel.

IGNORE_INDEX is transformers' convention in user-facing labels (token labels of -100 are not
trained). IGNORE_LABEL is what the loss ops and kernels read: the u32 with every bit set, since
GPU label buffers are u32 (the NumPy ops use the same value, so both compare the same way).
"""

import math
import struct

IGNORE_INDEX = -100
IGNORE_LABEL = 0xFFFFFFFF
F32_MAX = 3.4028234663852886e38

# transformers' config.json problem_type: what a sequence classifier's head predicts
SINGLE_LABEL = "single_label_classification"     # one label per text, a softmax over them
MULTI_LABEL = "multi_label_classification"       # any number of labels, a sigmoid each
REGRESSION = "regression"                        # a value per label
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
# the loss of a head with a float target per logit (ops/target_loss.py, kernels/target_loss.py)
TARGET_LOSSES = {MULTI_LABEL: "bce", REGRESSION: "mse"}


def check_problem_type(problem_type):
    """`problem_type` (None: single-label), or ValueError naming the known ones."""
    problem_type = problem_type or SINGLE_LABEL
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r:.60}; choose one of "
                         f"{', '.join(PROBLEM_TYPES)}")
    return problem_type


def head_problem_type(problem_type, num_labels):
    """The kind of a fine-tuned classifier's head as transformers reads it: config.json's
    problem_type, or where it has none, regression for a head of one output and single-label
    otherwise (ValueError for a problem_type transformers does not know)."""
    if problem_type is None and num_labels == 1:
        return REGRESSION
    return check_problem_type(problem_type)


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
