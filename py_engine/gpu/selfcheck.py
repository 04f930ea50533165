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

from .device import groups_for, row_groups

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
    program = device.program().dispatch(kernel, [device.buffer_from(x), out, params],
                                        row_groups(device, rows))
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


# --- API behaviour, observed the same way on every backend ---------------------------

BAD_WGSL = """\
@group(0) @binding(0) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  x[gid.x] = 1.0 + not_declared;
}
"""
BAD_WGSL_LINE = 5


async def _raised(coro_or_call):
    """The exception a call raises as {"type", "message", ...}, or None if it returns."""
    try:
        result = coro_or_call()
        if hasattr(result, "__await__"):
            await result
    except Exception as e:  # observed, not handled: the caller asserts on it
        return {"type": type(e).__name__, "message": str(e), "line": getattr(e, "line", None)}
    return None


async def replay_count(device, dispatches=1000, runs=2):
    """Ping-pong `add` between two buffers `dispatches` times per run, recorded once and
    replayed `runs` times; every element should end at dispatches * runs."""
    n = 256
    kernel = await device.kernel("elementwise.wgsl", "add")
    ones = device.buffer_from(array("f", [1.0] * n))
    ping = device.buffer_from(array("f", [0.0] * n))
    pong = device.create_buffer(4 * n)
    params = device.uniform("If", n, 1.0)
    program = device.program("replay")
    for i in range(dispatches):
        src, dst = (ping, pong) if i % 2 == 0 else (pong, ping)
        program.dispatch(kernel, [src, ones, dst, params], 1)
    if dispatches % 2:
        program.copy(pong, ping)
    program.read(ping)
    values = None
    for _ in range(runs):
        (values,) = await program.run()
    return sorted(set(as_floats(values)))


async def api_observations(device):
    """What the API does on the paths that matter to users, as a JSON-ready dict:
    replay of a recorded program, round trips, and each documented error."""
    obs = {}
    obs["replay_values"] = await replay_count(device)

    payload = bytes(range(256)) * 64 + b"\x01\x02\x03"     # not a multiple of 4 bytes
    buffer = device.buffer_from(payload)
    back = await device.read(buffer)
    obs["round_trip_exact"] = bytes(back[: len(payload)]) == payload
    obs["round_trip_padding"] = bytes(back[len(payload):]).hex()

    program = device.program()
    src = device.buffer_from(array("f", range(64)))
    dst = device.buffer_from(array("f", [0.0] * 64))
    program.copy(src, dst, size=128, src_offset=0, dst_offset=128)
    program.read(dst, offset=128, size=128)
    program.read(dst, offset=0, size=16)
    tail, head = await program.run()
    obs["copy_tail"] = list(as_floats(tail))
    obs["copy_head"] = list(as_floats(head))

    obs["bad_wgsl"] = await _raised(lambda: device.kernel_from_source(BAD_WGSL, "main", "bad.wgsl"))
    obs["missing_entry"] = await _raised(lambda: device.kernel("elementwise.wgsl", "no_such_entry"))
    obs["unknown_constant"] = await _raised(lambda: device.kernel("elementwise.wgsl", "add", {"NOPE": 1}))
    too_big = device.limits["max_buffer_size"] + 4
    obs["oversize_buffer"] = await _raised(lambda: device.create_buffer(too_big))
    obs["write_out_of_range"] = await _raised(lambda: buffer.write(b"\0" * 8, offset=buffer.size - 4))
    add = await device.kernel("elementwise.wgsl", "add")
    obs["too_many_workgroups"] = await _raised(lambda: device.program().dispatch(add, [src], 70000))
    return obs


async def lost_observations(device):
    """Destroy `device` and report what later calls raise (the device is unusable after)."""
    device.destroy()
    return {
        "lost": device.lost,
        "create_buffer": await _raised(lambda: device.create_buffer(16)),
        "kernel": await _raised(lambda: device.kernel("elementwise.wgsl", "add")),
    }
