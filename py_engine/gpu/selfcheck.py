"""Kernel checks that run unchanged on every backend, the browser included.

Each check draws fresh random inputs, fills the output buffer with NaN before the dispatch (so
an element the kernel never writes fails), runs the kernel and compares with a reference by
relative error ||out - ref|| / ||ref||. The references here are plain Python in double
precision, because the browser runtime has no NumPy; tests/test_kernels.py checks the same
kernels against NumPy on the host, and tests/test_selfcheck.py checks these references against
NumPy.

    report = await run_selfcheck(device)     # {"checks": [...], "max_rel_error": ..., "ok": ...}
"""

import math
import os
import random
import struct
from array import array

from .device import groups_for

NAN_BYTES = struct.pack("<f", float("nan"))

# Bounds on ||out - ref|| / ||ref|| with f32 arithmetic against a float64 reference.
BOUNDS = {
    "add": 1e-6,          # one rounding per element
    "scaled_add": 1e-6,   # fma: one rounding per element
    "sum_rows": 1e-5,     # tree sum: ~log2(workgroup) roundings; inputs in [0, 1) avoid cancellation
    "matmul": 1e-5,       # K-term dot products accumulated in f32
}


def random_floats(rng, n, low=-1.0, high=1.0):
    return array("f", (rng.uniform(low, high) for _ in range(n)))


def relative_error(out, ref):
    """||out - ref|| / ||ref||, or inf when out holds a NaN or inf."""
    diff = norm = 0.0
    for o, r in zip(out, ref, strict=True):
        if not math.isfinite(o):
            return math.inf
        diff += (o - r) ** 2
        norm += r * r
    return math.sqrt(diff) / math.sqrt(norm) if norm else math.sqrt(diff)


def as_floats(view):
    return array("f", bytes(view))


def poisoned(device, n):
    """A storage buffer of n f32 NaNs."""
    return device.buffer_from(NAN_BYTES * n)


# --- pure-Python references (float64) ------------------------------------------------

def ref_add(a, b):
    return [x + y for x, y in zip(a, b)]


def ref_scaled_add(alpha, a, b):
    return [alpha * x + y for x, y in zip(a, b)]


def ref_sum_rows(x, rows, cols):
    return [math.fsum(x[r * cols:(r + 1) * cols]) for r in range(rows)]


def ref_matmul(a, b, m, n, k):
    out = []
    for i in range(m):
        row = a[i * k:(i + 1) * k]
        for j in range(n):
            out.append(math.fsum(row[t] * b[t * n + j] for t in range(k)))
    return out


# --- dispatch helpers (shared with the host tests and the benchmarks) ------------------

async def elementwise(device, entry, a, b, alpha=1.0, max_groups=None):
    """Run elementwise.wgsl's `entry` on f32 arrays a, b; returns the output bytes."""
    n = len(a)
    kernel = await device.kernel("elementwise.wgsl", entry)
    out = poisoned(device, n)
    params = device.uniform("If", n, alpha)
    groups = groups_for(n, 256)
    if max_groups:
        groups = min(groups, max_groups)
    program = device.program().dispatch(
        kernel, [device.buffer_from(a), device.buffer_from(b), out, params], groups
    )
    program.read(out)
    (result,) = await program.run()
    return result


async def sum_rows(device, x, rows, cols, workgroup=256):
    kernel = await device.kernel("reduce.wgsl", "sum_rows", {"WORKGROUP": workgroup})
    out = poisoned(device, rows)
    params = device.uniform("II", rows, cols)
    limit = device.limits["max_compute_workgroups_per_dimension"]
    groups = (min(rows, limit), groups_for(rows, limit))
    program = device.program().dispatch(kernel, [device.buffer_from(x), out, params], groups)
    program.read(out)
    (result,) = await program.run()
    return result


async def matmul(device, a, b, m, n, k, tile=(4, 4), workgroup=(8, 8)):
    constants = {"TILE_M": tile[0], "TILE_N": tile[1], "WG_X": workgroup[0], "WG_Y": workgroup[1]}
    kernel = await device.kernel("matmul.wgsl", "matmul", constants)
    out = poisoned(device, m * n)
    params = device.uniform("III", m, n, k)
    groups = (groups_for(n, workgroup[0] * tile[1]), groups_for(m, workgroup[1] * tile[0]))
    program = device.program().dispatch(
        kernel, [device.buffer_from(a), device.buffer_from(b), out, params], groups
    )
    program.read(out)
    (result,) = await program.run()
    return result


# --- the checks --------------------------------------------------------------------

async def check_add(device, rng):
    n = 10007
    a, b = random_floats(rng, n), random_floats(rng, n)
    # Capped at 8 workgroups so the grid-stride loop runs several rounds.
    out = await elementwise(device, "add", a, b, max_groups=8)
    return "add", f"n={n}", relative_error(as_floats(out), ref_add(a, b))


async def check_scaled_add(device, rng):
    n = 4099
    alpha = rng.uniform(-3.0, 3.0)
    a, b = random_floats(rng, n), random_floats(rng, n)
    out = await elementwise(device, "scaled_add", a, b, alpha=alpha)
    alpha32 = struct.unpack("<f", struct.pack("<f", alpha))[0]
    return "scaled_add", f"n={n}", relative_error(as_floats(out), ref_scaled_add(alpha32, a, b))


async def check_sum_rows(device, rng):
    rows, cols = 37, 1000
    x = random_floats(rng, rows * cols, 0.0, 1.0)
    out = await sum_rows(device, x, rows, cols)
    return "sum_rows", f"{rows}x{cols}", relative_error(as_floats(out), ref_sum_rows(x, rows, cols))


async def check_matmul(device, rng):
    m, n, k = 67, 45, 33
    a, b = random_floats(rng, m * k), random_floats(rng, k * n)
    out = await matmul(device, a, b, m, n, k)
    return "matmul", f"{m}x{k} . {k}x{n}", relative_error(as_floats(out), ref_matmul(a, b, m, n, k))


CHECKS = (check_add, check_scaled_add, check_sum_rows, check_matmul)


async def run_selfcheck(device, seed=None):
    """Run every check once; returns a JSON-ready report."""
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    rng = random.Random(seed)
    checks = []
    for check in CHECKS:
        name, shape, err = await check(device, rng)
        bound = BOUNDS[name]
        checks.append({
            "kernel": name,
            "shape": shape,
            "rel_error": err if math.isfinite(err) else "nan-or-inf",
            "bound": bound,
            "ok": err <= bound,
        })
    errors = [c["rel_error"] for c in checks]
    worst = math.inf if "nan-or-inf" in errors else max(errors)
    return {
        "seed": seed,
        "adapter": device.info.as_dict(),
        "checks": checks,
        "max_rel_error": worst if math.isfinite(worst) else "nan-or-inf",
        "ok": all(c["ok"] for c in checks),
    }
