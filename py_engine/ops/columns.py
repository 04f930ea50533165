"""Blocks of columns of a row-major matrix: a fused projection's output split into its parts
(GPT-2's c_attn into q, k, v) and the parts' gradients put back side by side (the split's
backward), and the block copy the GPU kernel does (shaders/columns.wgsl)."""

import numpy as np


def split_columns(x, widths):
    """x [rows, sum(widths)] -> the consecutive column blocks, each contiguous."""
    ends = np.cumsum(widths)[:-1]
    return [np.ascontiguousarray(part) for part in np.split(x, ends, axis=1)]


def concat_columns(parts):
    """The backward of split_columns: the blocks side by side."""
    return np.concatenate(parts, axis=1)


def copy_block(src, dst, rows, width, src_at, dst_at):
    """dst[dst_row + r, dst_col + c] = src[src_row + r, src_col + c] (flat row-major arrays;
    src_at, dst_at = (cols, col, row)), in place; returns dst."""
    (sc, scol, srow), (dc, dcol, drow) = src_at, dst_at
    s = src.reshape(-1, sc)
    d = dst.reshape(-1, dc)
    d[drow:drow + rows, dcol:dcol + width] = s[srow:srow + rows, scol:scol + width]
    return dst
