"""Matrix-product kernels side by side on one adapter: each variant of shaders/matmul.wgsl (and
tile settings of the tiled one) against a naive GEMM written inline (a thread per output, one
loop over k), on a decoder's linear-layer shapes and the products a training step runs on them
(PRODUCTS). GFLOP/s per kernel, rounds alternating, so that a slow entry point is told apart
from a slow toolchain: where even the naive kernel is far below the adapter's peak, the loss
lies in how the shader is compiled, not in the tiling.

    python bench/matmul_variants.py [--size small|full] [--seconds 150]   # native adapter: JSON

"full" is TinyLlama's q projection at batch 4 x 256 (M 1024, N 2048, K 2048) and its MLP's
up projection (N 5632); "small" is an eighth of each (software adapters).
"""

import sys
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from gpu_profile import on_native, time_alternating, variants_main  # noqa: E402

SHAPES = {"full": [("q", 1024, 2048, 2048), ("up", 1024, 5632, 2048)],
          "small": [("q", 128, 256, 256), ("up", 128, 704, 256)]}
# The products a training step runs on a shape (M, N, K): the forward Y = X.W^T (NT), the input
# gradient dX = dY.W (NN: M x K from M x N and N x K), the weight gradient dW = dY^T.X (TN: N x K
# from M x N and M x K), the forward with f16 weights (a frozen base), and the forward with K one
# less (operands not 16-byte aligned: the register variant's scalar entry).
PRODUCTS = ("forward", "grad_input", "grad_weight", "forward_f16", "forward_unaligned")
# (label, variant, constants): the engine's default first
CONFIGS = [("register (engine default)", "register", None),
           ("tiled", "tiled", None),
           ("tiled, TILE_K 8, 8x8 threads", "tiled", {"TILE_K": 8, "WG_X": 8, "WG_Y": 8})]

NAIVE = """
struct Dims { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

// C = A . B^T, A [m, k], B [n, k]: a thread per output, one loop over k.
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.y;
  let col = gid.x;
  if (row >= dims.m || col >= dims.n) {
    return;
  }
  var acc = 0.0;
  for (var k = 0u; k < dims.k; k++) {
    acc = fma(a[row * dims.k + k], b[col * dims.k + k], acc);
  }
  c[row * dims.n + col] = acc;
}
"""


def _operands(device, rng, product, m, n, k):
    """(a, b, c, gemm dimensions and flags) of `product` on the shape (m, n, k)."""
    from py_engine.kernels.matmul import pack_half

    def buffer(count, half=False):
        values = [rng.uniform(-1, 1) for _ in range(count)]
        return device.buffer_from(pack_half(values) if half else array("f", values))
    if product == "grad_input":        # dY [m, n] . W [n, k]
        return buffer(m * n), buffer(n * k), device.create_buffer(4 * m * k), (m, k, n), {}
    if product == "grad_weight":       # dY^T [n, m] . X [m, k]
        return buffer(m * n), buffer(m * k), device.create_buffer(4 * n * k), (n, k, m), {"trans_a": True}
    k = k - 1 if product == "forward_unaligned" else k
    half = product == "forward_f16"
    return (buffer(m * k), buffer(n * k, half), device.create_buffer(4 * m * n), (m, n, k),
            {"trans_b": True, "b_half": half})


async def measure(device, size="full", seconds=150.0, repeats=3, rounds=3):
    """{"shapes": {shape: {product: {config: {"ms", "gflops", "entry"}}}}}: median time per
    product over `rounds` (after one that compiles and warms up), configs alternating."""
    import random

    from py_engine.kernels.matmul import MatmulKernels

    started = time.perf_counter()
    rng = random.Random(0)
    # "refused": configs the adapter would not compile ("failed" would be the whole run's)
    out = {"adapter": device.info.as_dict(), "repeats": repeats, "shapes": {}, "refused": {}}
    kernels = {}
    for label, variant, constants in CONFIGS:
        try:
            kernels[label] = await MatmulKernels.load(device, variant, constants, gemv=False)
        except Exception as e:          # a setting the adapter refuses is a row, not a crash
            out["refused"][label] = f"{type(e).__name__}: {e}"
    naive = await device.kernel_from_source(NAIVE, "main", "naive gemm")
    for name, m, n, k in SHAPES[size]:
        shape = out["shapes"][f"{name} {m}x{n}x{k}"] = {}
        for product in PRODUCTS:
            if time.perf_counter() - started > seconds:
                out["stopped"] = f"out of time before {name} {product}"
                return out
            a, b, c, (pm, pn, pk), flags = _operands(device, rng, product, m, n, k)
            programs, entries = {}, {}
            for label, mm in kernels.items():
                program = device.program(label)
                for _ in range(repeats):
                    mm.gemm(program, a, b, c, pm, pn, pk, **flags)
                programs[label] = program
                entries[label] = mm.entry_for(a, b, pm, pn, pk, **flags)
            if product in ("forward", "forward_unaligned"):      # the naive kernel reads f32, NT
                program = device.program("naive")
                dims = device.uniform("4I", pm, pn, pk, 0)
                for _ in range(repeats):
                    program.dispatch(naive, [a, b, c, dims], (-(-pn // 16), -(-pm // 16), 1))
                programs["naive (a thread per output)"] = program
                entries["naive (a thread per output)"] = "inline"
            seconds_each = await time_alternating(device, programs, repeats, rounds)
            flops = 2 * pm * pn * pk
            shape[product] = {label: {"ms": 1e3 * t, "gflops": flops / t / 1e9, "entry": entries[label]}
                              for label, t in seconds_each.items()}
            print(f"[matmul_variants] {name} {product}: " + ", ".join(
                f"{label} {r['gflops']:.0f}" for label, r in shape[product].items()) + " GFLOP/s", flush=True)
    out["seconds"] = time.perf_counter() - started
    return out


def measure_native(size="full", seconds=150.0):
    """measure() on the native adapter (what bench/gpu_device.py calls in a process)."""
    return on_native(measure, size, seconds)


def table_rows(result):
    """Rows (measure, value, note) for bench/gpu_device.py's table: each shape's products,
    the engine's default against the best other kernel."""
    default_label = CONFIGS[0][0]
    rows = [(f"matrix products, {label}", "refused", why[:200]) for label, why in result.get("refused", {}).items()]
    for shape, products in result["shapes"].items():
        for product, kernels in products.items():
            others = {k: v for k, v in kernels.items() if k != default_label}
            if default_label not in kernels or not others:
                continue
            default = kernels[default_label]
            best = max(others, key=lambda k: others[k]["gflops"])
            rows.append((f"matrix product {shape}, {product} ({default['entry']})",
                         f"{default['gflops']:.0f} GFLOP/s",
                         f"{best} {others[best]['gflops']:.0f} GFLOP/s ({default['gflops'] / others[best]['gflops']:.1f}x)"))
    return rows


def main(argv=None):
    variants_main(__doc__, SHAPES, measure_native, 150.0, argv)


if __name__ == "__main__":
    main()
