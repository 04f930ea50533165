"""Measurements of the compute API itself, in plain Python so that the same file runs natively
and, sent as source text, inside Pyodide in the page (no NumPy there).

Each measurement is a "round" function (one timed repetition). `side_by_side` alternates the
rounds of several contenders (py_engine and plain JS in the same page), so that background load
hits them alike, and reports medians.

    rounds = {"py": await replay_round(device), "js": plainWebGPU.replayRound(...)}
    medians = await side_by_side(rounds)
"""

import time
from array import array

from py_engine.gpu import groups_for


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


async def side_by_side(rounds, repeats=15, warmup=2):
    """{name: async () -> number or list of numbers}: alternate them; medians per name."""
    samples = {name: [] for name in rounds}
    for i in range(warmup + repeats):
        for name, round_fn in rounds.items():
            value = await round_fn()
            value = value.to_py() if hasattr(value, "to_py") else value  # a JS array
            if i >= warmup:
                samples[name].append(value)
    out = {}
    for name, values in samples.items():
        if isinstance(values[0], (list, tuple)):
            out[name] = [median([v[k] for v in values]) for k in range(len(values[0]))]
        else:
            out[name] = median(values)
    return out


async def replay_round(device, dispatches=1000, n=64):
    """A round replays a recorded program of `dispatches` tiny `add` dispatches; it returns
    [submit microseconds per dispatch (CPU encoding), total microseconds per dispatch (to GPU
    completion)]."""
    kernel = await device.kernel("elementwise.wgsl", "add", {"WORKGROUP": 64})
    a = device.buffer_from(array("f", [1.0] * n))
    b = device.buffer_from(array("f", [2.0] * n))
    out = device.create_buffer(4 * n)
    params = device.uniform("If", n, 1.0)
    program = device.program("replay-bench")
    for _ in range(dispatches):
        program.dispatch(kernel, [a, b, out, params], groups_for(n, 64))

    async def one_round():
        t0 = time.perf_counter()
        program.submit()
        t1 = time.perf_counter()
        await device.synchronize()
        t2 = time.perf_counter()
        return [(t1 - t0) * 1e6 / dispatches, (t2 - t0) * 1e6 / dispatches]

    return one_round


def transfer_data(nbytes):
    data = bytearray(nbytes)
    data[::4096] = b"\x01" * len(data[::4096])  # touch every page
    return data


async def transfer_rounds(device, nbytes=16 * 2**20):
    """(upload round, download round), each returning milliseconds: upload from a Python buffer
    until the GPU has it; download into a new Python buffer."""
    data = transfer_data(nbytes)
    buffer = device.create_buffer(nbytes)

    async def upload():
        t0 = time.perf_counter()
        buffer.write(data)
        await device.synchronize()
        return (time.perf_counter() - t0) * 1e3

    async def download():
        t0 = time.perf_counter()
        back = await device.read(buffer)
        elapsed = (time.perf_counter() - t0) * 1e3
        if bytes(back[:8192]) != bytes(data[:8192]):
            raise AssertionError("transfer benchmark read back different bytes")
        return elapsed

    return upload, download
