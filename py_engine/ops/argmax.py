"""The largest value of each row and where it first occurs, with flags for the values that make
it meaningless: the math of shaders/argmax.wgsl (greedy generation's next token on the GPU).

    index, flags = argmax_rows(x)      # x [rows, cols]; index [rows]; flags [rows]

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
