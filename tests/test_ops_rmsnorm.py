"""RMSNorm reference (py_engine.ops.rmsnorm) against torch autograd in float64 and against
transformers' LlamaRMSNorm."""

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from py_engine.ops.rmsnorm import (LLAMA_EPS, rmsnorm_backward, rmsnorm_backward_input,
                                   rmsnorm_forward)


def torch_rmsnorm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("shape, scale, eps", [
    ((1, 1), 1.0, LLAMA_EPS), ((7, 33), 1.0, LLAMA_EPS), ((2, 5, 256), 30.0, LLAMA_EPS),
    ((4, 16), 1e-3, 1e-5),
])
def test_rmsnorm_matches_torch(shape, scale, eps):
    rng = np.random.default_rng()
    cols = shape[-1]
    x = rng.standard_normal(shape) * scale
    weight = rng.standard_normal(cols)
    dy = rng.standard_normal(shape)

    y, rstd = rmsnorm_forward(x, weight, eps)
    dx, dweight = rmsnorm_backward(dy, x, weight, rstd)

    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, weight))
    ty = torch_rmsnorm(tx, tw, eps)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rstd, 1 / np.sqrt((x * x).mean(-1) + eps), rtol=1e-13)
    np.testing.assert_array_equal(rmsnorm_backward_input(dy, x, weight, rstd), dx)


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_rmsnorm_matches_llama_module(eps):
    """LlamaRMSNorm normalizes in float32 whatever the input dtype: float32 inputs, our float64
    result rounded, ~1e-6 apart. Its gradients through torch autograd agree the same way."""
    rng = np.random.default_rng()
    rows, cols = 12, 64
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    check_against_module(LlamaRMSNorm(cols, eps=eps), x, weight, dy, eps)


def check_against_module(module, x, weight, dy, eps, offset=0.0):
    """Our float64 forward and gradients against a transformers RMSNorm `module` (which
    computes in float32) given float32 x, weight and dy: ~1e-6 apart. Returns (x, weight, dy,
    y, dx, dweight, rstd) in float64."""
    with torch.no_grad():
        module.weight.copy_(torch.tensor(weight))
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    ty.backward(torch.tensor(dy))

    x64, w64, dy64 = (a.astype(np.float64) for a in (x, weight, dy))
    y, rstd = rmsnorm_forward(x64, w64, eps, offset=offset)
    dx, dweight = rmsnorm_backward(dy64, x64, w64, rstd, offset=offset)
    np.testing.assert_allclose(ty.detach().numpy(), y, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(tx.grad.numpy(), dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(module.weight.grad.numpy(), dweight, rtol=1e-5, atol=1e-5)
    return x64, w64, dy64, y, dx, dweight, rstd


def test_rmsnorm_float32_stays_float32():
    x = np.ones((2, 4), np.float32)
    y, rstd = rmsnorm_forward(x, np.ones(4, np.float32))
    dx = rmsnorm_backward_input(x, x, np.ones(4, np.float32), rstd)
    assert y.dtype == rstd.dtype == dx.dtype == np.float32


def test_gemma_rmsnorm_scales_by_one_plus_weight():
    """offset=1.0 is transformers' GemmaRMSNorm (x * rstd * (1 + weight), computed in float32),
    forward and gradients through torch autograd, near float32 precision; in float64 it is the
    torch formula exactly."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    rng = np.random.default_rng()
    rows, cols, eps = 9, 48, 1e-6
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    weight = (0.3 * rng.standard_normal(cols)).astype(np.float32)   # stored as offsets from 1
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    module = GemmaRMSNorm(cols, eps=eps)
    x64, w64, dy64, y, dx, dweight, rstd = check_against_module(module, x, weight, dy, eps, 1.0)
    assert not np.allclose(y, rmsnorm_forward(x64, w64, eps)[0], atol=1e-2)   # the offset counts

    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x64, w64))
    ty = torch_rmsnorm(tx, 1.0 + tw, eps)
    ty.backward(torch.tensor(dy64))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(rmsnorm_backward_input(dy64, x64, w64, rstd, 1.0), dx)
