"""SwiGLU reference (py_engine.ops.swiglu) against torch autograd in float64 and against the
activation transformers' LlamaMLP applies (ACT2FN["silu"], act_fn(gate) * up)."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from py_engine.ops.gelu import TANH_C, TANH_CUBIC
from py_engine.ops.swiglu import swiglu_backward, swiglu_forward


@pytest.mark.parametrize("shape, spread", [((1,), 1.0), ((7, 33), 2.0), ((3, 4, 50), 30.0)])
def test_swiglu_matches_torch(shape, spread):
    rng = np.random.default_rng()
    gate = rng.standard_normal(shape) * spread
    up = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)

    out = swiglu_forward(gate, up)
    dgate, dup = swiglu_backward(dout, gate, up)

    tg, tu = (torch.tensor(a, requires_grad=True) for a in (gate, up))
    tout = torch.nn.functional.silu(tg) * tu
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dgate, tg.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dup, tu.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_swiglu_extremes_are_finite():
    gate = np.array([-1000.0, -80.0, 0.0, 80.0, 1000.0])
    up = np.ones(5)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out = swiglu_forward(gate, up)
        dgate, dup = swiglu_backward(np.ones(5), gate, up)
    np.testing.assert_allclose(out, [0.0, -80 * np.exp(-80), 0.0, 80.0, 1000.0], rtol=1e-14)
    np.testing.assert_allclose(dgate, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-30)
    np.testing.assert_array_equal(dup, out)


@pytest.mark.parametrize("family, activation", [("llama", "silu"), ("gemma", "gelu_tanh")])
def test_swiglu_is_the_mlp_activation(family, activation):
    """LlamaMLP.forward = down_proj(act_fn(gate_proj(x)) * up_proj(x)), GemmaMLP's the same with
    hidden_act "gelu_pytorch_tanh": with the projections taken from the module, our op in
    between gives the module's output and input gradient."""
    from transformers import GemmaConfig
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    torch.manual_seed(int(np.random.default_rng().integers(1 << 31)))
    if family == "llama":
        mlp = LlamaMLP(LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2,
                                   num_key_value_heads=2, hidden_act="silu")).double()
    else:
        mlp = GemmaMLP(GemmaConfig(hidden_size=16, intermediate_size=40,
                                   hidden_act="gelu_pytorch_tanh")).double()
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    want = mlp(x)
    dwant = torch.randn_like(want)
    want.backward(dwant)

    with torch.no_grad():
        gate, up = mlp.gate_proj(x).numpy(), mlp.up_proj(x).numpy()
    h = swiglu_forward(gate, up, activation)
    got = h @ mlp.down_proj.weight.detach().numpy().T
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-13)

    dh = dwant.numpy() @ mlp.down_proj.weight.detach().numpy()
    dgate, dup = swiglu_backward(dh, gate, up, activation)
    dx = dgate @ mlp.gate_proj.weight.detach().numpy() + dup @ mlp.up_proj.weight.detach().numpy()
    np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("shape, spread", [((1,), 1.0), ((7, 33), 2.0), ((3, 4, 50), 30.0)])
def test_geglu_matches_torch(shape, spread):
    """activation="gelu_tanh": torch's gelu(approximate="tanh")(gate) * up, with autograd."""
    rng = np.random.default_rng()
    gate = rng.standard_normal(shape) * spread
    up, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    out = swiglu_forward(gate, up, "gelu_tanh")
    dgate, dup = swiglu_backward(dout, gate, up, "gelu_tanh")
    tg, tu = (torch.tensor(a, requires_grad=True) for a in (gate, up))
    tout = torch.nn.functional.gelu(tg, approximate="tanh") * tu
    tout.backward(torch.tensor(dout))
    # Both sides evaluate 0.5 g (1 + tanh(u)) and its slope, which has 1 - tanh^2, as torch
    # does: on the left tail (gate < -3, often drawn at spread 30) the sums cancel and each side
    # keeps only a few ulps of the terms' size, not of the tiny result (at gate = -5 the result
    # is ~1e-9 of its terms). So each element's absolute slack is 4 ulps of its terms (measured
    # at most 0.6), not a fixed atol, which failed 7% of the draws at spread 30 (dgate 3.4x its
    # atol of 1e-14: 0.5 |g| (1 - t^2) du reaches ~14 at g = -6).
    t = np.tanh(TANH_C * (gate + TANH_CUBIC * gate ** 3))
    act_terms = 0.5 * np.abs(gate) * (1 + np.abs(t))
    slope_terms = 0.5 * (1 + np.abs(t)) + 0.5 * np.abs(gate) * (1 + t * t) * TANH_C * (
        1 + 3 * TANH_CUBIC * gate ** 2)
    ulp = np.finfo(np.float64).eps
    for name, ours, theirs, rtol, terms in (
            ("out", out, tout.detach().numpy(), 1e-13, act_terms * np.abs(up)),
            ("dgate", dgate, tg.grad.numpy(), 1e-11, slope_terms * np.abs(dout * up)),
            ("dup", dup, tu.grad.numpy(), 1e-13, act_terms * np.abs(dout))):
        excess = np.abs(ours - theirs) - rtol * np.abs(theirs) - 4 * ulp * terms
        assert np.all(np.isfinite(ours)) and excess.max() <= 0, (name, excess.max())


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        swiglu_forward(np.ones(2), np.ones(2), "relu")
