"""The NumPy LoRA linear reference against torch autograd (float64) and PEFT's lora.Linear."""

import numpy as np
import torch
from peft import LoraConfig, get_peft_model

from py_engine.ops.lora_linear import lora_linear_backward, lora_linear_forward

ROWS, FIN, FOUT, R, ALPHA = 6, 5, 4, 3, 6


def assert_forward_close(y, want, x, xd, w, b, a, bb, scaling, rtol=1e-12):
    """y = x w^T + b + scaling (xd a^T) bb^T to rtol of the size of its terms: an element whose
    terms nearly cancel (drawn about once in 1,500 tests) keeps the rounding of the terms, not
    rtol of its own small value."""
    terms = np.abs(x) @ np.abs(w).T + np.abs(b) + scaling * (np.abs(xd) @ np.abs(a).T) @ np.abs(bb).T
    err = np.abs(y - want) / terms
    assert np.all(np.isfinite(y)) and err.max() <= rtol, err.max()


def test_forward_and_backward_match_torch_autograd(rng):
    x, xd = rng.standard_normal((ROWS, FIN)), rng.standard_normal((ROWS, FIN))
    w, b = rng.standard_normal((FOUT, FIN)), rng.standard_normal(FOUT)
    a, bb = rng.standard_normal((R, FIN)), rng.standard_normal((FOUT, R))
    dy = rng.standard_normal((ROWS, FOUT))
    scaling = ALPHA / R
    tx, txd, ta, tb = (torch.tensor(v, requires_grad=True) for v in (x, xd, a, bb))
    F = torch.nn.functional
    ty = F.linear(tx, torch.tensor(w), torch.tensor(b)) + scaling * F.linear(F.linear(txd, ta), tb)
    ty.backward(torch.tensor(dy))
    y, h = lora_linear_forward(x, xd, w, b, a, bb, scaling)
    assert_forward_close(y, ty.detach().numpy(), x, xd, w, b, a, bb, scaling)
    dx, dxd, da, db = lora_linear_backward(dy, xd, w, a, bb, h, scaling)
    for ours, t in ((dx, tx), (dxd, txd), (da, ta), (db, tb)):
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_matches_peft_lora_linear(rng):
    """PEFT's names and shapes: lora_A.weight [r, in], lora_B.weight [out, r], lora_alpha / r."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(FIN, FOUT)

    model = get_peft_model(Net().double(), LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["proj"],
                                                      lora_dropout=0.0))
    layer = model.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()      # PEFT starts B at 0; make it count
    x = rng.standard_normal((ROWS, FIN))
    dy = rng.standard_normal((ROWS, FOUT))
    tx = torch.tensor(x, requires_grad=True)
    out = layer(tx)
    out.backward(torch.tensor(dy))
    w = layer.base_layer.weight.detach().numpy()
    b = layer.base_layer.bias.detach().numpy()
    a = layer.lora_A["default"].weight.detach().numpy()
    bb = layer.lora_B["default"].weight.detach().numpy()
    scaling = layer.scaling["default"]
    assert scaling == ALPHA / R
    y, h = lora_linear_forward(x, x, w, b, a, bb, scaling)
    assert_forward_close(y, out.detach().numpy(), x, x, w, b, a, bb, scaling)
    dx, dxd, da, db = lora_linear_backward(dy, x, w, a, bb, h, scaling)
    np.testing.assert_allclose(dx + dxd, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(da, layer.lora_A["default"].weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, layer.lora_B["default"].weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert layer.base_layer.weight.grad is None                     # W is frozen
