"""Matrix products, row-major: the linear layer's forward and backward, and the general GEMM
the kernels in shaders/matmul.wgsl implement.

    y = linear_forward(x, w, b)             # y[M, N] = x[M, K] . w[N, K]^T + b[N]
    dx, dw, db = linear_backward(dy, x, w)  # dy . w,  dy^T . x,  column sums of dy

Weights are stored [out_features, in_features] as torch.nn.Linear stores them.
"""

import numpy as np


def gemm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None):
    """alpha * op(a) . op(b) + bias + beta * c, with op(x) = x.T when trans_x.

    a, b may carry leading batch dimensions (matched by broadcasting). beta == 0 ignores c,
    even when it holds NaN, as the kernels do. The transposes are views (BLAS reads them as
    they lie) and the terms are added into the product in place: no copies of a or b, no
    temporaries of the output's size.
    """
    op_a = np.swapaxes(a, -1, -2) if trans_a else a
    op_b = np.swapaxes(b, -1, -2) if trans_b else b
    out = op_a @ op_b
    if alpha != 1.0:
        out = scale_into(out, alpha)
    if bias is not None:
        out = add_into(out, bias)
    if beta != 0.0:
        out = add_into(out, beta * c)
    return out


def _fits(out, term):
    """Whether out (op) term can be written into `out`: same dtype and shape as the result."""
    return (isinstance(out, np.ndarray) and np.result_type(out, term) == out.dtype
            and np.broadcast_shapes(out.shape, np.shape(term)) == out.shape)


def add_into(out, term):
    """out + term, written into `out` (a fresh array the caller owns) where the result fits."""
    if not _fits(out, term):
        return out + term
    out += term
    return out


def scale_into(out, factor):
    """factor * out, written into `out` (a fresh array the caller owns) where the result fits."""
    if not _fits(out, factor):
        return factor * out
    out *= factor
    return out


def linear_forward(x, w, b=None):
    """y = x . w^T + b for x [M, K], w [N, K], b [N] or None."""
    return gemm(x, w, trans_b=True, bias=b)


def linear_backward(dy, x, w):
    """Gradients of linear_forward: (dx [M, K], dw [N, K], db [N])."""
    dx = gemm(dy, w)
    dw = gemm(dy, x, trans_a=True)
    db = dy.sum(axis=0)
    return dx, dw, db


def round_to_half(w):
    """The weight as the f16 kernels see it: rounded to float16, computed in wider precision."""
    return np.asarray(w).astype(np.float16).astype(np.float64)
