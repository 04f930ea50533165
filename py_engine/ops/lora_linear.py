"""A linear layer with a LoRA adapter, as PEFT's lora.Linear computes it:

    y = x . W^T + b + scaling * (xd . A^T) . B^T,      scaling = lora_alpha / r

W [out, in] and b are frozen; A = lora_A.weight [r, in], B = lora_B.weight [out, r] as PEFT
stores them; xd is x after LoRA dropout (x itself when lora_dropout is 0).

    y, h = lora_linear_forward(x, xd, w, b, lora_a, lora_b, scaling)     # h = xd . A^T, saved
    dx, dxd, da, db = lora_linear_backward(dy, xd, w, lora_a, lora_b, h, scaling)

The input gradient comes in two parts: dx through the frozen weight (dy . W) and dxd through
the adapter (scaling * (dy . B) . A), the gradient with respect to xd. With dropout the caller
routes dxd through dropout's backward and adds it to dx; without, the total is dx + dxd.
"""

from .matmul import add_into, gemm, linear_forward


def lora_linear_forward(x, xd, w, b, lora_a, lora_b, scaling):
    """Returns (y [M, out], h [M, r]); h = xd . A^T is what the backward needs."""
    h = linear_forward(xd, lora_a)
    y = add_into(linear_forward(x, w, b), gemm(h, lora_b, trans_b=True, alpha=scaling))
    return y, h


def lora_linear_backward(dy, xd, w, lora_a, lora_b, h, scaling):
    """Returns (dx through W, dxd through the adapter, d lora_A [r, in], d lora_B [out, r])."""
    d_lora_a, d_lora_b, dh = lora_weight_grads(dy, xd, lora_b, h, scaling)
    dxd = gemm(dh, lora_a)
    dx = gemm(dy, w)
    return dx, dxd, d_lora_a, d_lora_b


def merged_weight(w, lora_a, lora_b, scaling):
    """W + scaling * B.A [out, in]: the layer with its adapter folded in (PEFT's merge)."""
    return w + scaling * (lora_b @ lora_a)


def lora_weight_grads(dy, xd, lora_b, h, scaling):
    """The adapter's part of the backward: (d lora_A, d lora_B, dh = scaling * dy . B), for a
    caller that needs no input gradient."""
    d_lora_b = scaling * gemm(dy, h, trans_a=True)
    dh = scaling * gemm(dy, lora_b)
    d_lora_a = gemm(dh, xd, trans_a=True)
    return d_lora_a, d_lora_b, dh
