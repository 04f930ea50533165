"""Gated MLP activations, act(gate) * up: SwiGLU, the Llama MLP's (LlamaMLP with hidden_act
"silu"), and GeGLU with the tanh-approximate GELU (activation="gelu_tanh": Gemma's
"gelu_pytorch_tanh", FLAN-T5's gated "gelu_new") or the exact one (activation="gelu":
ModernBERT's):

    out = silu(gate) * up,   silu(g) = g * sigmoid(g)

gate and up are the outputs of gate_proj and up_proj, same shape. Backward, with s = sigmoid(g):

    dgate = dout * up * s * (1 + g * (1 - s))
    dup   = dout * g * s

The sigmoid is evaluated from exp(-|g|), which never overflows. GeGLU: out = gelu(gate) * up,
dgate = dout * up * gelu'(gate), dup = dout * gelu(gate), with ops/gelu.py's tanh or exact form.
"""

import numpy as np

from .gelu import gelu_tanh_with_slope, gelu_with_slope

ACTIVATIONS = ("silu", "gelu_tanh", "gelu")


def _check(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


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


def swiglu_forward(gate, up, activation="silu"):
    """out = silu(gate) * up (or gelu_tanh(gate) * up, gelu(gate) * up)."""
    _check(activation)
    if activation == "gelu_tanh":
        return gelu_tanh_with_slope(gate)[0] * up
    if activation == "gelu":
        return gelu_with_slope(gate)[0] * up
    out = sigmoid(gate)
    out *= gate
    out *= up
    return out


def swiglu_backward(dout, gate, up, activation="silu"):
    """Returns (dgate, dup) for the forward above."""
    _check(activation)
    if activation in ("gelu_tanh", "gelu"):
        act, slope = (gelu_tanh_with_slope if activation == "gelu_tanh" else gelu_with_slope)(gate)
        return dout * up * slope, dout * act
    s = sigmoid(gate)
    silu = gate * s
    dup = dout * silu
    dgate = 1.0 - s                     # dout * up * (s + silu * (1 - s)), built in place
    dgate *= silu
    dgate += s
    dgate *= up
    dgate *= dout
    return dgate, dup
