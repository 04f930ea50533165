"""SwiGLU gating, the activation of the Llama MLP (LlamaMLP with hidden_act "silu"):

    out = silu(gate) * up,   silu(g) = g * sigmoid(g)

gate and up are the outputs of gate_proj and up_proj, same shape. Backward, with s = sigmoid(g):

    dgate = dout * up * s * (1 + g * (1 - s))
    dup   = dout * g * s

The sigmoid is evaluated from exp(-|g|), which never overflows.

The gate's activation is a parameter: activation="gelu_tanh" gives T5's gated GELU
(T5DenseGatedActDense with "gated-gelu": gelu_new(wi_0 x) * wi_1 x), with gelu_tanh from the
gelu op family:

    out = act(gate) * up,   dgate = dout * up * act'(gate),   dup = dout * act(gate)
"""

import numpy as np

from .gelu import gelu_tanh_with_slope

ACTIVATIONS = ("silu", "gelu_tanh")


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


def _check(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"swiglu activation {activation!r} is not one of {ACTIVATIONS}")


def swiglu_forward(gate, up, activation="silu"):
    """out = act(gate) * up (act: silu unless `activation` says otherwise)."""
    _check(activation)
    if activation == "gelu_tanh":
        out = gelu_tanh_with_slope(gate)[0]
        out *= up
        return out
    out = sigmoid(gate)
    out *= gate
    out *= up
    return out


def swiglu_backward(dout, gate, up, activation="silu"):
    """Returns (dgate, dup) for the forward above."""
    _check(activation)
    if activation == "gelu_tanh":
        act, slope = gelu_tanh_with_slope(gate)
        act *= dout
        slope *= up
        slope *= dout
        return slope, act
    s = sigmoid(gate)
    silu = gate * s
    dup = dout * silu
    dgate = 1.0 - s                     # dout * up * (s + silu * (1 - s)), built in place
    dgate *= silu
    dgate += s
    dgate *= up
    dgate *= dout
    return dgate, dup
