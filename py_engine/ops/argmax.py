"""The largest value of each row and where it first occurs, with flags for the values that make
it meaningless, and each row's sampling candidates: the math of shaders/argmax.wgsl (the next
token's choice on the GPU).

    index, flags = argmax_rows(x)      # x [rows, cols]; index [rows]; flags [rows]
    [(candidates, cut, largest, total), ...] = sampling_candidates(x, 1 / 0.7, top_k=0, tail=0.05)

flags[r] ORs POS_INF_FLAG when row r holds +inf and NAN_FLAG when it holds a NaN; -inf is an
ordinary value (a masked token). Ties go to the first index, as torch.argmax and
py_engine.generate.sampling.greedy break them.
"""

import numpy as np

from ..kernels.argmax import NAN_FLAG, POS_INF_FLAG


def argmax_rows(x):
    x = np.asarray(x)
    index = np.argmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    flags = (np.where(np.isnan(x).any(axis=1), NAN_FLAG, 0)
             | np.where(np.isposinf(x).any(axis=1), POS_INF_FLAG, 0))
    return index, flags


def candidate_bins(row, largest, inv_temperature):
    """The histogram bin of each value of `row` as sampling_candidates computes it, in f32:
    d = (largest - x) * inv_temperature in bins of 1 / BIN_SCALE, the last holding everything
    farther."""
    from ..kernels.argmax import BIN_SCALE, BINS

    distance = (np.float32(largest) - np.asarray(row, np.float32)) * np.float32(inv_temperature)
    return np.minimum(distance * np.float32(BIN_SCALE), np.float32(BINS - 1)).astype(np.int64)


def sampling_candidates(x, inv_temperature, top_k, tail):
    """Per row of x [rows, cols]: (candidates, cut, largest, total) as sampling_candidates picks
    them: d = (largest - x) * inv_temperature in f32, bins of 1 / BIN_SCALE (the last holding
    everything farther), the lowest cut that leaves past it tokens that could hold at most
    tail * total (each at most exp(-its bin's lower edge)) and keeps at least top_k tokens,
    and the indices, ascending, of the finite tokens in the bins up to it. -inf is never a
    candidate. NaN and +inf rows are argmax_rows' flags' business, not handled here."""
    from ..kernels.argmax import BIN_SCALE, BINS

    x = np.asarray(x, dtype=np.float32)
    out = []
    for row in x:
        finite = row != -np.inf
        largest = row[finite].max() if finite.any() else np.float32(np.finfo(np.float32).min)
        distance = (largest - row) * np.float32(inv_temperature)
        bins = candidate_bins(row, largest, inv_temperature)
        total = float(np.exp(-distance[finite].astype(np.float64)).sum())
        histogram = np.bincount(bins[finite], minlength=BINS)
        cut, beyond, within = BINS - 1, 0.0, int(finite.sum())
        while cut > 0:
            more = beyond + histogram[cut] * np.exp(-cut / BIN_SCALE)
            if more > tail * total or within - histogram[cut] < top_k:
                break
            beyond, within, cut = more, within - histogram[cut], cut - 1
        out.append((np.flatnonzero(finite & (bins <= cut)), cut, float(largest), total))
    return out
