"""Where a GPU training step's time goes, measured through py_engine.gpu's public objects.

The compute API records a step as a Program: a list of dispatches (`Program.ops`) replayed per
run. ProgramLog remembers every Program a device creates while a model trains; afterwards
`profile_largest()` takes the program with the most dispatches (the training step) and times
its dispatches one kind at a time: for each (pipeline, workgroup grid, sizes of the buffers it
binds) it replays one such dispatch in a program of its own (repeated, for the costliest kinds),
waits for the GPU, and subtracts what an empty run costs. Dispatches of one kind cost the same
whichever buffers they bind (every layer of a model has the same shapes), so one stands for all
of them. The buffer sizes are part of the kind because a grid alone does not fix the work: the
input gradient of a 384 -> 1536 layer runs the grid of a 384 -> 384 one, four times as long.

Replaying dispatches out of order changes the buffers' contents (gradients, optimizer state):
profile after the measured rounds, never between them.

    log = ProgramLog(device)                # before the model is created
    ...train...
    report = await log.profile_largest()    # {"kernels": [...by time per step...], "dispatches": n, ...}

profile_largest is a coroutine, as the compute API's waits are: natively run it with run_sync,
in the page (bench/run.py's browser_step, which sends this file's source there) await it.
"""

import time
from array import array

from py_engine.gpu import run_sync


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def on_native(measure, size, seconds):
    """measure(device, size, seconds) run to its end on the native adapter: what a side-by-side
    benchmark's measure_native is (bench/gpu_device.py calls it in a process of its own)."""
    from contenders import open_native

    return run_sync(measure(open_native(), size, seconds))


def variants_main(doc, sizes, measure_native, seconds, argv=None):
    """A side-by-side benchmark's command line: --size (one of `sizes`) and --seconds for the
    whole run; prints measure_native's result as JSON."""
    import argparse
    import json

    from py_engine.cli import POSITIVE

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(sizes), default="full")
    parser.add_argument("--seconds", type=POSITIVE, default=seconds, help="time for the whole run")
    args = parser.parse_args(argv)
    print(json.dumps(measure_native(args.size, args.seconds), indent=1))


async def time_alternating(device, programs, repeats, rounds):
    """{label: median seconds of one repeat} for `programs` ({label: a Program recorded with
    `repeats` copies of one piece of work}): one round that compiles and warms up, then
    `rounds` in which the programs take turns, so that a machine's drift touches them alike."""
    samples = {label: [] for label in programs}
    for round_index in range(rounds + 1):
        for label, program in programs.items():
            t0 = time.perf_counter()
            program.submit()
            await device.synchronize()
            if round_index:
                samples[label].append((time.perf_counter() - t0) / repeats)
    return {label: median(times) for label, times in samples.items()}


class ProgramLog:
    def __init__(self, device):
        self.device = device
        self.programs = []
        make = device.program

        def program(label=None):
            p = make(label)
            self.programs.append(p)
            p.bound_sizes = []          # per dispatch, in order: the bytes of each buffer bound
            dispatch = p.dispatch

            def dispatch_logged(kernel, buffers, groups):
                p.bound_sizes.append(tuple(b.size for b in buffers))
                return dispatch(kernel, buffers, groups)

            p.dispatch = dispatch_logged
            return p

        device.program = program          # the instance's attribute shadows the method

    def largest(self):
        dispatching = [p for p in self.programs if any(op[0] == "dispatch" for op in p.ops)]
        if not dispatching:
            raise RuntimeError("no program with dispatches was recorded on this device")
        return max(dispatching, key=lambda p: sum(op[0] == "dispatch" for op in p.ops))

    async def _run_seconds(self, ops, runs=3):
        program = self.device.program("profile")
        self.programs.pop()               # not one of the model's
        program.ops.extend(ops)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            program.submit()
            await self.device.synchronize()
            times.append(time.perf_counter() - t0)
        return median(times)

    async def profile_largest(self, target_s=0.01, max_reps=64, budget_s=60.0, program=None):
        """Per kernel and grid: dispatches per step, microseconds per dispatch, milliseconds per
        step and share of the sum, largest first; and the whole program replayed as recorded.
        The program with the most dispatches, or `program` (one of self.programs).
        Every kind is timed once; then, costliest first while `budget_s` lasts, each is timed
        again as the median of three runs of enough repeats to last `target_s` ("runs" says
        which estimate a row holds)."""
        program = program or self.largest()
        kinds = {}
        sizes = iter(program.bound_sizes)
        for op in program.ops:
            if op[0] == "dispatch":
                _, pipeline, _, groups = op
                key = (getattr(pipeline, "label", "") or "?", tuple(groups), next(sizes))
                kinds.setdefault(key, [op, 0])[1] += 1
        started = time.perf_counter()
        empty = await self._run_seconds([], runs=5)
        whole = await self._run_seconds(program.ops, runs=3) - empty
        rows = []
        for (label, groups, bound), (op, count) in kinds.items():
            once = max(await self._run_seconds([op], runs=1) - empty, 1e-7)
            rows.append({"kernel": label, "groups": list(groups), "bound_bytes": list(bound),
                         "per_step": count, "runs": 1, "us_per_dispatch": once * 1e6, "op": op})
        for r in sorted(rows, key=lambda r: -r["us_per_dispatch"] * r["per_step"]):
            if time.perf_counter() - started > budget_s:
                break
            reps = int(min(max_reps, max(1, target_s / (r["us_per_dispatch"] * 1e-6))))
            per = max(await self._run_seconds([r["op"]] * reps, runs=3) - empty, 0.0) / reps
            r.update(us_per_dispatch=per * 1e6, runs=3 * reps)
        for r in rows:
            del r["op"]
            r["ms_per_step"] = r["us_per_dispatch"] * r["per_step"] / 1e3
        total = sum(r["ms_per_step"] for r in rows)
        for r in rows:
            r["share"] = r["ms_per_step"] / total if total else 0.0
        rows.sort(key=lambda r: -r["ms_per_step"])
        by_kernel = {}
        for r in rows:
            by_kernel[r["kernel"]] = by_kernel.get(r["kernel"], 0.0) + r["ms_per_step"]
        return {"program": program.label, "dispatches": sum(c for _, c in kinds.values()),
                "copies": sum(op[0] == "copy" for op in program.ops),
                "replay_ms": whole * 1e3, "sum_of_kernels_ms": total, "empty_run_ms": empty * 1e3,
                "profile_s": time.perf_counter() - started,
                "by_kernel_ms": dict(sorted(by_kernel.items(), key=lambda kv: -kv[1])),
                "kernels": rows}


def matmul_ceiling(device, m, n, k, repeats=5):
    """GFLOP/s of the linear-forward kernel at [m, k] x [n, k]^T on `device`: the best the
    step's biggest matmuls can reach."""
    from py_engine.kernels.matmul import MatmulKernels

    mm = run_sync(MatmulKernels.load(device))
    x = device.buffer_from(array("f", [0.5] * (m * k)))
    w = device.buffer_from(array("f", [0.25] * (n * k)))
    y = device.create_buffer(4 * m * n)
    program = device.program("matmul ceiling")
    mm.linear(program, x, w, y, m, k, n)
    program.submit()
    run_sync(device.synchronize())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        program.submit()
        run_sync(device.synchronize())
        times.append(time.perf_counter() - t0)
    return 2 * m * n * k / min(times) / 1e9   # a ceiling: the best run

