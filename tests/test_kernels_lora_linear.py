"""The LoRA linear layer on wgpu-native (lavapipe) against the NumPy reference, both matmul
variants, f32 and f16 base weights.

Fresh random inputs every run; outputs NaN-poisoned before the dispatch (random when
accumulated into); relative error against float64.
"""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.lora_linear import LoraLinearKernels
from py_engine.kernels.matmul import pack_half
from py_engine.ops.lora_linear import lora_linear_backward, lora_linear_forward
from py_engine.ops.matmul import round_to_half

# Chains of two or three f32 products of <= 40 terms each; f16 weights are compared with the
# reference on the same rounded values.
BOUND = 1e-5


@pytest.fixture(scope="module", params=["register", "tiled"])
def lora(request, device):
    return run(LoraLinearKernels.load(device, variant=request.param))


@pytest.mark.parametrize("w_half", [False, True])
@pytest.mark.parametrize("rows, fin, fout, r, separate_dxd", [
    (20, 24, 16, 4, False),      # aligned: the vec4 entry where it applies
    (13, 19, 11, 3, True),       # odd everywhere; dxd returned separately (LoRA dropout)
])
def test_forward_and_backward_match_numpy(device, lora, rng, w_half, rows, fin, fout, r, separate_dxd):
    scaling = 16 / r
    x = rng.standard_normal((rows, fin), dtype=np.float32)
    xd = (x * (rng.random(x.shape) > 0.3) / 0.7).astype(np.float32) if separate_dxd else x
    w = rng.standard_normal((fout, fin), dtype=np.float32)
    bias = rng.standard_normal(fout, dtype=np.float32)
    a = rng.standard_normal((r, fin), dtype=np.float32)
    b = rng.standard_normal((fout, r), dtype=np.float32)
    dy = rng.standard_normal((rows, fout), dtype=np.float32)
    da0 = rng.standard_normal((r, fin), dtype=np.float32)      # accumulated into
    db0 = rng.standard_normal((fout, r), dtype=np.float32)
    bx = device.buffer_from(x)
    bxd = device.buffer_from(xd) if separate_dxd else bx
    bw = device.buffer_from(pack_half(w.ravel().tolist())) if w_half else device.buffer_from(w)
    ba, bb = device.buffer_from(a), device.buffer_from(b)
    y, h, dh = poisoned(device, rows * fout), poisoned(device, rows * r), poisoned(device, rows * r)
    dx = poisoned(device, rows * fin)
    dxd = poisoned(device, rows * fin) if separate_dxd else None
    da, db = device.buffer_from(da0), device.buffer_from(db0)
    shape = dict(rows=rows, in_features=fin, out_features=fout, r=r, scaling=scaling, w_half=w_half)
    program = device.program()
    lora.forward(program, bx, bxd, bw, device.buffer_from(bias), ba, bb, y, h, **shape)
    lora.backward(program, device.buffer_from(dy), bxd, bw, ba, bb, h, dh, da, db, dx, dxd=dxd,
                  accumulate=True, **shape)
    outs = read(program, y, da, db, dx, *([dxd] if separate_dxd else []))

    w64 = round_to_half(w) if w_half else w.astype(np.float64)
    x64, xd64, a64, b64 = (v.astype(np.float64) for v in (x, xd, a, b))
    ref_y, ref_h = lora_linear_forward(x64, xd64, w64, bias, a64, b64, scaling)
    ref_dx, ref_dxd, ref_da, ref_db = lora_linear_backward(dy.astype(np.float64), xd64, w64, a64, b64,
                                                           ref_h, scaling)
    assert rel_error(outs[0], ref_y) <= BOUND
    assert rel_error(outs[1], da0 + ref_da) <= BOUND
    assert rel_error(outs[2], db0 + ref_db) <= BOUND
    if separate_dxd:
        assert rel_error(outs[3], ref_dx) <= BOUND
        assert rel_error(outs[4], ref_dxd) <= BOUND
    else:
        assert rel_error(outs[3], ref_dx + ref_dxd) <= BOUND
