"""The matmul family on wgpu-native (lavapipe) against the NumPy reference, both variants.

Fresh random inputs every run; outputs NaN-poisoned before the dispatch unless the test reads
them (beta != 0); relative error ||out - ref|| / ||ref|| against float64 under BOUND.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.matmul import GEMV, MatmulKernels, MatrixView, default_variant, gemv_settings, pack_half
from py_engine.ops.matmul import gemm, linear_backward, linear_forward, round_to_half

# f32 products of K <= ~100 terms accumulate a few ulps (~1e-7) per output; 1e-5 leaves a
# wide margin yet catches any wrong element of a few hundred. f16 weights are compared with
# the reference on the same f16-rounded values, so the bound is the same.
BOUND = 1e-5
BIAS_GRAD_BOUND = 1e-5   # column sums of <= 100 rows, four partial sums

VARIANTS = ("register", "tiled")
LAYOUTS = {"nn": (False, False), "nt": (False, True), "tn": (True, False)}


@pytest.fixture(scope="module", params=VARIANTS)
def mm(request, device):
    # Small tiles in both variants so that the small shapes below span several workgroups; the
    # tiled one's one-row products run with a GPU's settings (32 threads per output).
    constants = {"register": {"WG_X": 4, "WG_Y": 4},
                 "tiled": {"TILE_K": 8, "WG_X": 4, "WG_Y": 2, **GEMV["gpu"]}}
    return run(MatmulKernels.load(device, request.param, constants[request.param]))


def test_variant_defaults_follow_the_adapter(device):
    """The register variant everywhere (bench/matmul_variants.py: on a GPU too); the one-row
    products' settings from the adapter."""
    mm = run(MatmulKernels.load(device))
    assert mm.variant == "register"
    expected = GEMV["software" if device.info.is_software else "gpu"]
    assert {k: mm.constants[k] for k in expected} == expected
    gpu = SimpleNamespace(info=SimpleNamespace(is_software=False))      # what a real GPU reports
    assert default_variant(gpu) == "register" and gemv_settings(gpu) == {"LANES": 32, "WORKGROUP": 256}
    with pytest.raises(ValueError, match="unknown matmul variant"):
        run(MatmulKernels.load(device, "fast"))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (37, 29, 19), (40, 36, 28), (5, 8, 12), (3, 70, 45)])
def test_gemm_matches_numpy(device, mm, rng, layout, m, n, k):
    trans_a, trans_b = LAYOUTS[layout]
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    c = poisoned(device, m * n)
    program = device.program()
    mm.gemm(program, device.buffer_from(a), device.buffer_from(b), c, m, n, k,
            trans_a=trans_a, trans_b=trans_b, alpha=0.75)
    (out,) = read(program, c)
    assert rel_error(out, gemm(a.astype(np.float64), b, trans_a=trans_a, trans_b=trans_b, alpha=0.75)) <= BOUND


def test_register_variant_picks_vec4_only_for_aligned_operands(device):
    mm = run(MatmulKernels.load(device, "register"))
    buf = device.create_buffer(4 * 64 * 64)
    assert mm.entry_for(buf, buf, 40, 36, 28, trans_b=True) == "gemm_vec4"
    assert mm.entry_for(buf, buf, 40, 36, 28, trans_a=True) == "gemm_vec4"
    assert mm.entry_for(buf, buf, 37, 36, 28, trans_a=True) == "gemm_scalar"   # M % 4 along A
    assert mm.entry_for(buf, buf, 40, 36, 27) == "gemm_scalar"                 # K % 4
    assert mm.entry_for(buf, buf, 40, 36, 27, trans_a=True) == "gemm_scalar"   # no K tail
    assert mm.entry_for(MatrixView(buf, 30), buf, 40, 36, 28) == "gemm_scalar"  # ld % 4
    assert mm.entry_for(buf, buf, 40, 36, 28, b_half=True) == "gemm_f16"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("k, entry", [(24, "gemm_vec4"), (23, "gemm_scalar")])
def test_tiny_workgroups_cover_c(device, rng, variant, layout, k, entry):
    """Every thread owns a 4 x 4 block of C: with 2 x 2 threads per workgroup the grid must
    still cover C (many workgroups, edges cut), in every entry of both variants."""
    mm = run(MatmulKernels.load(device, variant, {"WG_X": 2, "WG_Y": 2}))
    trans_a, trans_b = LAYOUTS[layout]
    m, n = 44, 52
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    ba, bb = device.buffer_from(a), device.buffer_from(b)
    expected = entry if variant == "register" else "gemm_tiled"
    assert mm.entry_for(ba, bb, m, n, k, trans_a=trans_a, trans_b=trans_b) == expected
    c = poisoned(device, m * n)
    program = device.program()
    mm.gemm(program, ba, bb, c, m, n, k, trans_a=trans_a, trans_b=trans_b)
    (out,) = read(program, c)
    assert rel_error(out, gemm(a.astype(np.float64), b, trans_a=trans_a, trans_b=trans_b)) <= BOUND


def test_unknown_constants_are_refused(device):
    """Per-thread tiles are fixed at 4 x 4 now: an old TILE_M is refused, not ignored."""
    with pytest.raises(ValueError, match=r"unknown constants \['TILE_M'\] for the register variant"):
        run(MatmulKernels.load(device, "register", {"TILE_M": 8}))
    with pytest.raises(ValueError, match=r"unknown constants \['TILE_N'\] for the tiled variant"):
        run(MatmulKernels.load(device, "tiled", {"TILE_N": 2, "TILE_K": 8}))


@pytest.mark.parametrize("m, n, k", [(33, 20, 16), (9, 7, 5)])
def test_gemm_bias_alpha_beta(device, mm, rng, m, n, k):
    """C = alpha * A.B^T + bias + beta * C: the LoRA update and gradient accumulation."""
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    c = device.buffer_from(c0)
    program = device.program()
    mm.gemm(program, device.buffer_from(a), device.buffer_from(b), c, m, n, k, trans_b=True,
            alpha=-1.5, beta=0.5, bias=device.buffer_from(bias))
    (out,) = read(program, c)
    ref = gemm(a.astype(np.float64), b, c0, trans_b=True, alpha=-1.5, beta=0.5, bias=bias)
    assert rel_error(out, ref) <= BOUND


def test_linear_forward_and_backward(device, mm, rng):
    rows, fin, fout = 45, 30, 22
    x = rng.standard_normal((rows, fin), dtype=np.float32)
    w = rng.standard_normal((fout, fin), dtype=np.float32)
    bias = rng.standard_normal(fout, dtype=np.float32)
    dy = rng.standard_normal((rows, fout), dtype=np.float32)
    dw0 = rng.standard_normal((fout, fin), dtype=np.float32)
    db0 = rng.standard_normal(fout, dtype=np.float32)
    bx, bw, bdy = device.buffer_from(x), device.buffer_from(w), device.buffer_from(dy)
    y, dx = poisoned(device, rows * fout), poisoned(device, rows * fin)
    dw, db = device.buffer_from(dw0), device.buffer_from(db0)       # accumulated into
    db_fresh, db_scaled = poisoned(device, fout), device.buffer_from(db0)
    program = device.program()
    mm.linear(program, bx, bw, y, rows, fin, fout, bias=device.buffer_from(bias))
    mm.linear_grad_input(program, bdy, bw, dx, rows, fin, fout)
    mm.linear_grad_weight(program, bdy, bx, dw, rows, fin, fout, beta=1.0)
    mm.bias_grad(program, bdy, db, rows, fout, beta=1.0)
    mm.bias_grad(program, bdy, db_fresh, rows, fout)
    mm.bias_grad(program, bdy, db_scaled, rows, fout, beta=1.0, alpha=-0.75)   # a lora_B bias's
    out_y, out_dx, out_dw, out_db, out_db_fresh, out_db_scaled = read(program, y, dx, dw, db,
                                                                       db_fresh, db_scaled)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    ref_dx, ref_dw, ref_db = linear_backward(dy64, x64, w64)
    assert rel_error(out_y, linear_forward(x64, w64, bias)) <= BOUND
    assert rel_error(out_dx, ref_dx) <= BOUND
    assert rel_error(out_dw, dw0 + ref_dw) <= BOUND
    assert rel_error(out_db, db0 + ref_db) <= BIAS_GRAD_BOUND
    assert rel_error(out_db_fresh, ref_db) <= BIAS_GRAD_BOUND
    assert rel_error(out_db_scaled, db0 - 0.75 * ref_db) <= BIAS_GRAD_BOUND


@pytest.mark.parametrize("rows, fin, fout", [(19, 33, 21), (16, 32, 24), (3, 1, 5)])
def test_half_weight_linear_and_input_grad(device, mm, rng, rows, fin, fout):
    """W stored as packed f16 pairs; odd in_features put rows at odd half positions."""
    x = rng.standard_normal((rows, fin), dtype=np.float32)
    w = rng.standard_normal((fout, fin), dtype=np.float32)
    dy = rng.standard_normal((rows, fout), dtype=np.float32)
    w_half = device.buffer_from(pack_half(w.ravel().tolist()))
    y, dx = poisoned(device, rows * fout), poisoned(device, rows * fin)
    program = device.program()
    mm.linear(program, device.buffer_from(x), w_half, y, rows, fin, fout, w_half=True)
    mm.linear_grad_input(program, device.buffer_from(dy), w_half, dx, rows, fin, fout, w_half=True)
    out_y, out_dx = read(program, y, dx)
    w16 = round_to_half(w)
    assert rel_error(out_y, linear_forward(x.astype(np.float64), w16)) <= BOUND
    assert rel_error(out_dx, dy.astype(np.float64) @ w16) <= BOUND


GEMV_SHAPES = [(1, 1), (29, 19), (70, 45), (300, 64), (1000, 7)]
# K % 4 == 0: with x and W's rows on 16 bytes, the entries that read four k at a time
ALIGNED_GEMV_SHAPES = [(1, 4), (29, 20), (70, 44), (300, 64), (1000, 8)]


def one_row_product(device, mm, rng, n, k, half, aligned=False):
    """y = -1.5 * x . W^T + bias + 0.5 * y for one row x read from the middle of a larger
    buffer and W [n, k] stored with a row stride of k + 3 (f32) or packed f16; against NumPy.
    `aligned`: x at offset 4 and a row stride of k + 4 (k % 4 == 0): the _vec4 entries."""
    offset, stride = (4, k + 4) if aligned else (5, k + 3)
    x = rng.standard_normal(k + offset, dtype=np.float32)
    w = rng.standard_normal((n, stride), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    y0 = rng.standard_normal(n, dtype=np.float32)
    y = device.buffer_from(y0)
    wb = device.buffer_from(pack_half(w.ravel().tolist())) if half else device.buffer_from(w)
    a, b = MatrixView(device.buffer_from(x), ld=k, offset=offset), MatrixView(wb, ld=stride)
    entry = ("gemv_f16" if half else "gemv") + ("_vec4" if aligned else "")
    assert mm.entry_for(a, b, 1, n, k, trans_b=True, b_half=half) == entry
    program = device.program()
    mm.gemm(program, a, b, y, 1, n, k, trans_b=True, alpha=-1.5, beta=0.5,
            bias=device.buffer_from(bias), b_half=half)
    (out,) = read(program, y)
    w_used = (round_to_half(w) if half else w.astype(np.float64))[:, :k]
    ref = gemm(x[offset:].astype(np.float64)[None], w_used, y0[None], trans_b=True, alpha=-1.5,
               beta=0.5, bias=bias)
    return rel_error(out, ref)


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("n, k", GEMV_SHAPES)
def test_one_row_runs_the_gemv_entry(device, mm, rng, n, k, half):
    """A decoding step's product (M = 1, linear layout): only that row is computed."""
    assert one_row_product(device, mm, rng, n, k, half) <= BOUND


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("n, k", ALIGNED_GEMV_SHAPES)
def test_aligned_one_row_reads_four_at_a_time(device, mm, rng, n, k, half):
    assert one_row_product(device, mm, rng, n, k, half, aligned=True) <= BOUND


@pytest.mark.parametrize("lanes, workgroup", [(4, 8), (2, 2), (1, 1)])
def test_gemv_lanes_per_output(device, rng, lanes, workgroup):
    """Several threads per output adding partial sums in a tree, several outputs per
    workgroup; one output per workgroup spills past 65,535 workgroups into y."""
    mm = run(MatmulKernels.load(device, "tiled", {"LANES": lanes, "WORKGROUP": workgroup}))
    for n, k in GEMV_SHAPES[1:]:
        assert one_row_product(device, mm, rng, n, k, half=lanes == 2) <= BOUND
    for n, k in ALIGNED_GEMV_SHAPES[1:]:
        assert one_row_product(device, mm, rng, n, k, half=lanes == 4, aligned=True) <= BOUND
    if workgroup == 1:
        assert one_row_product(device, mm, rng, 70001, 3, half=False) <= BOUND
        assert one_row_product(device, mm, rng, 70001, 4, half=True, aligned=True) <= BOUND


def test_gemv_only_for_one_row_of_one_product(device):
    mm = run(MatmulKernels.load(device, "register"))
    buf = device.create_buffer(4 * 64 * 64)
    assert mm.entry_for(buf, buf, 1, 36, 28, trans_b=True) == "gemv_vec4"
    assert mm.entry_for(buf, buf, 1, 36, 27, trans_b=True) == "gemv"
    assert mm.entry_for(buf, MatrixView(buf, ld=30), 1, 36, 28, trans_b=True) == "gemv"
    assert mm.entry_for(buf, buf, 2, 36, 28, trans_b=True) == "gemm_vec4"
    assert mm.entry_for(buf, buf, 1, 36, 28) == "gemm_vec4"                       # NN
    assert mm.entry_for(buf, buf, 1, 36, 28, trans_b=True, heads=2) == "gemm_vec4"


def test_pack_half_matches_numpy_float16(rng):
    values = rng.standard_normal(7).astype(np.float32) * 100
    assert pack_half(values.tolist()) == values.astype("<f2").tobytes()


@pytest.mark.parametrize("dim", [5, 8])      # 8: every view 16-byte aligned (vec4 entry)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_batched_heads_over_a_fused_qkv_buffer(device, mm, rng, layout, dim):
    """Per-(batch, head) products on [B*T, H*D] views with offsets, leading dimensions and
    batch/head strides: the attention layouts, read from one fused [B*T, 3*H*D] buffer."""
    trans_a, trans_b = LAYOUTS[layout]
    batch, seq, heads = 2, 9, 3
    width = heads * dim
    qkv = rng.standard_normal((batch * seq, 3 * width), dtype=np.float32)
    buf = device.buffer_from(qkv)
    q = split(qkv[:, :width], batch, heads)       # [B, H, T, D]
    k = split(qkv[:, width:2 * width], batch, heads)
    # op(A) [T, T or D] from Q (or Q^T), op(B) from K: shapes per layout.
    m, n, kk = {"nt": (seq, seq, dim), "nn": (seq, dim, dim), "tn": (dim, dim, seq)}[layout]
    view = lambda off: MatrixView(buf, 3 * width, off, seq * 3 * width, dim)   # noqa: E731
    if layout == "nn":   # op(A) = Q [T, D] head slices, op(B) = the first D rows of K's slice
        ref = q @ k[:, :, :dim, :]
    elif layout == "nt":
        ref = q @ np.swapaxes(k, -1, -2)
    else:
        ref = np.swapaxes(q, -1, -2) @ k
    c = poisoned(device, batch * heads * m * n)
    program = device.program()
    mm.gemm(program, view(0), view(width), MatrixView(c, n, 0, heads * m * n, m * n), m, n, kk,
            trans_a=trans_a, trans_b=trans_b, batch=batch, heads=heads)
    (out,) = read(program, c)
    assert rel_error(out, ref.astype(np.float64)) <= BOUND


def split(x, batch, heads):
    rows, width = x.shape
    return x.reshape(batch, rows // batch, heads, width // heads).transpose(0, 2, 1, 3)


def test_gemm_rejects_writing_an_input(device, mm):
    buf = device.create_buffer(64)
    with pytest.raises(ValueError, match="writable"):
        mm.gemm(device.program(), buf, device.create_buffer(64), buf, 2, 2, 2)


# --- timing (not a test): python tests/test_kernels_matmul.py [M N K] --------------------

def bench(m=512, n=384, k=384, rounds=12, reps=3):
    """GFLOP/s of the linear layer's three products per variant next to the plain `matmul`
    kernel, best of `rounds` interleaved rounds (a shared machine's load swings)."""
    import time
    import warnings

    from py_engine.gpu import SoftwareAdapterWarning, open_device

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftwareAdapterWarning)
        device = run(open_device("native"))
    rng = np.random.default_rng(0)
    buf = lambda *shape: device.buffer_from(rng.standard_normal(shape, dtype=np.float32))  # noqa: E731
    x, w, w_t, dy = buf(m, k), buf(n, k), buf(k, n), buf(m, n)
    # The same product with rows one float longer than K: unaligned, so the scalar entry runs.
    x_pad, w_pad = MatrixView(buf(m, k + 1), k + 1), MatrixView(buf(n, k + 1), k + 1)
    y, dx, dw = (device.create_buffer(4 * s) for s in (m * n, m * k, n * k))
    programs = {}
    plain = run(device.kernel("matmul.wgsl", "matmul"))
    p = device.program()
    for _ in range(reps):
        p.dispatch(plain, [x, w_t, y, device.uniform("III", m, n, k)], (-(-n // 32), -(-m // 32)))
    programs["matmul (self-check kernel, NN, 4x4 per thread)"] = p
    for variant in ("register", "tiled"):
        mm = run(MatmulKernels.load(device, variant))
        cases = {
            "linear forward  Y = X.W^T (NT)": (lambda p: mm.linear(p, x, w, y, m, k, n),
                                               mm.entry_for(x, w, m, n, k, trans_b=True)),
            "input grad     dX = dY.W  (NN)": (lambda p: mm.linear_grad_input(p, dy, w, dx, m, k, n),
                                               mm.entry_for(dy, w, m, k, n)),
            "weight grad    dW = dY^T.X (TN)": (lambda p: mm.linear_grad_weight(p, dy, x, dw, m, k, n),
                                                mm.entry_for(dy, x, n, k, m, trans_a=True)),
            "linear forward, rows padded to K+1": (lambda p: mm.linear(p, x_pad, w_pad, y, m, k, n),
                                                   mm.entry_for(x_pad, w_pad, m, n, k, trans_b=True)),
        }
        for name, (record, entry) in cases.items():
            p = device.program()
            for _ in range(reps):
                record(p)
            programs[f"{variant:8s} {name} [{entry}]"] = p
    best = dict.fromkeys(programs, 0.0)
    for _ in range(rounds):
        for name, p in programs.items():
            run(device.synchronize())
            start = time.perf_counter()
            run(p.run())
            run(device.synchronize())
            seconds = (time.perf_counter() - start) / reps
            best[name] = max(best[name], 2 * m * n * k / seconds / 1e9)
    print(f"{device.info.vendor} {device.info.architecture or device.info.device}, M={m} N={n} K={k}")
    for name, gflops in best.items():
        print(f"  {name:62s} {gflops:6.2f} GFLOP/s")


if __name__ == "__main__":
    import sys

    bench(*(int(v) for v in sys.argv[1:4]))
