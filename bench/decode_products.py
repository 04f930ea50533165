"""A decoding step's matrix products, one row times a weight: the gemv entries against the GEMM
entries the same products ran on before (MatmulKernels.load(gemv=False)), on one device, rounds
alternating. A GEMM's workgroup computes a block of rows (64 in the tiled variant GPUs run, 32
in the register one) and keeps one, so at M = 1 nearly all its arithmetic is wasted; the gemv
entries compute the one row.

The shapes are a real model's linear layers (in_features, out_features), each counted as often
as one generated token runs it, so the sum is the products' time per token:

    Qwen2.5-0.5B    24 layers of q, k, v, o (896 -> 896, 128, 128, 896), gate, up (896 -> 4864),
                    down (4864 -> 896), and the tied head (896 -> 151,936)
    "small"         the same layers at an eighth of the widths (software adapters)

Weights f32, f16, int8 and int4 (the GPU runtime's `--base-dtype`; the quantized ones in groups
of 16, which every width here divides, against shaders/quantized_linear.wgsl's blocked forward).
Each measured program replays one product REPEATS times, so that the per-run submit and
read-back do not hide it.

    python bench/decode_products.py [--size small|full] [--variant tiled]   # native adapter: JSON

bench/gpu_device.py runs it on the GPU (measure_native, in a process of its own).
"""

import time

REPEATS = 10
DTYPES = ("f32", "f16", "int8", "int4")
ROUNDS = 5
# (label, in_features, out_features, times per token)
SHAPES = {
    "full": [("q, o", 896, 896, 48), ("k, v", 896, 128, 48), ("gate, up", 896, 4864, 48),
             ("down", 4864, 896, 24), ("head", 896, 151936, 1)],
    "small": [("q, o", 112, 112, 48), ("k, v", 112, 16, 48), ("gate, up", 112, 608, 48),
              ("down", 608, 112, 24), ("head", 112, 18992, 1)],
}


async def decode_products(device, size="full", rounds=ROUNDS, repeats=REPEATS, variant=None):
    """{"shapes": {label: {dtype: {"gemv_us", "gemm_us", "gemm_vs_gemv"}}}, "per_token":
    {dtype: {"gemv_ms", "gemm_ms", "gemm_vs_gemv"}}, "variant"}: median microseconds per
    product; per token, the products of one generated token summed with their counts.
    `variant`: the matmul variant (default: the adapter's)."""
    from py_engine.kernels.matmul import MatmulKernels
    from py_engine.kernels.quantized_linear import QuantizedLinearKernels

    with_gemv = await MatmulKernels.load(device, variant)
    without = await MatmulKernels.load(device, with_gemv.variant, gemv=False)
    quantized = {"gemv": await QuantizedLinearKernels.load(device, source_formats=()),
                 "gemm": await QuantizedLinearKernels.load(device, source_formats=(), gemv=False)}
    out = {"variant": with_gemv.variant, "size": size, "repeats": repeats, "rounds": rounds,
           "shapes": {}, "per_token": {}}
    totals = {}
    for label, fin, fout, count in SHAPES[size]:
        x = device.create_buffer(4 * fin, label="x")
        y = device.create_buffer(4 * fout, label="y")
        entry = {}
        for dtype in DTYPES:
            half = dtype == "f16"
            if dtype in ("int8", "int4"):
                w = quantized["gemv"].allocate(fout, fin, dtype, group_size=16)
                record = {name: (lambda p, ql=ql: ql.linear(p, x, w, y, 1)) for name, ql in quantized.items()}
            else:
                w = device.create_buffer((2 if half else 4) * fin * fout, label="w")
                record = {name: (lambda p, mm=mm: mm.linear(p, x, w, y, 1, fin, fout, w_half=half))
                          for name, mm in (("gemv", with_gemv), ("gemm", without))}
            programs = {}
            for name, add in record.items():
                program = device.program(f"{label} {dtype} {name}")
                for _ in range(repeats):
                    add(program)
                program.read(y, size=4)
                await program.run()                  # warm-up
                programs[name] = program
            times = {name: [] for name in programs}
            for _ in range(rounds):
                for name, program in programs.items():
                    start = time.perf_counter()
                    await program.run()
                    times[name].append((time.perf_counter() - start) / repeats)
            us = {name: 1e6 * sorted(t)[len(t) // 2] for name, t in times.items()}
            entry[dtype] = {"gemv_us": round(us["gemv"], 1), "gemm_us": round(us["gemm"], 1),
                            "gemm_vs_gemv": round(us["gemm"] / us["gemv"], 2)}
            total = totals.setdefault(dtype, {"gemv": 0.0, "gemm": 0.0})
            total["gemv"] += count * us["gemv"]
            total["gemm"] += count * us["gemm"]
            for program in programs.values():
                program.release()
            for buffer in (w.packed, w.scales) if dtype in ("int8", "int4") else (w,):
                buffer.destroy()
        out["shapes"][f"{label} ({fin} -> {fout})"] = entry
        x.destroy()
        y.destroy()
    for dtype, total in totals.items():
        out["per_token"][dtype] = {"gemv_ms": round(total["gemv"] / 1000, 3),
                                   "gemm_ms": round(total["gemm"] / 1000, 3),
                                   "gemm_vs_gemv": round(total["gemm"] / total["gemv"], 2)}
    return out


def table_rows(result, where):
    """(measure, value, note) rows for a results table."""
    rows = []
    for dtype, t in result["per_token"].items():
        rows.append((f"decoding products per token, {result['size']} Qwen2.5-0.5B layers, "
                     f"{dtype} weights, {where}",
                     f"{t['gemv_ms']:.2f} ms", f"GEMM entries at M = 1: {t['gemm_ms']:.2f} ms, "
                     f"{t['gemm_vs_gemv']:.2f}x ({result['variant']} variant)"))
    return rows


def measure_native(size="full", variant=None):
    """decode_products on the native adapter (what bench/gpu_device.py calls in a process)."""
    import asyncio
    import warnings

    from py_engine.gpu import SoftwareAdapterWarning, open_device

    async def main():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SoftwareAdapterWarning)
            device = await open_device("native")
        return await decode_products(device, size, variant=variant)

    return asyncio.run(main())


if __name__ == "__main__":
    import argparse
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SHAPES), default="full")
    parser.add_argument("--variant", choices=("register", "tiled"), help="default: the adapter's")
    args = parser.parse_args()
    print(json.dumps(measure_native(args.size, args.variant), indent=2))
