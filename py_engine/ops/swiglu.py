"""SwiGLU gating, the activation of the Llama MLP (LlamaMLP with hidden_act "silu"):

    out = silu(gate) * up,   silu(g) = g * sigmoid(g)

gate and up are the outputs of gate_proj and up_proj, same shape. Backward, with s = sigmoid(g):

    dgate = dout * up * s * (1 + g * (1 - s))
    dup   = dout * g * s

The sigmoid is evaluated from exp(-|g|), which never overflows.
"""

import numpy as np


def sigmoid(g):
    e = np.exp(-np.abs(g))
    return np.where(g >= 0, 1.0, e) / (1.0 + e)


def swiglu_forward(gate, up):
    """out = silu(gate) * up."""
    return gate * sigmoid(gate) * up


def swiglu_backward(dout, gate, up):
    """Returns (dgate, dup) for the forward above."""
    s = sigmoid(gate)
    silu = gate * s
    dup = dout * silu
    dgate = dout * up * (s + silu * (1.0 - s))
    return dgate, dup
