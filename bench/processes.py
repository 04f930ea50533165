"""Contenders timed in separate processes, round by round, with the environment that matters.

Two libraries with their own thread pools (NumPy's OpenBLAS, torch's OpenMP/MKL) in one process
disturb each other: threads of the idle one spin or sleep on the same cores while the other
works. So each contender here is its own worker process that builds its model once, then runs a
"round" (a few training steps) whenever the driver asks. The driver starts the workers one
after the other (no setup overlaps another's), then alternates rounds A, B, A, B, ... with a
short pause between them so that the previous worker's threads have gone to sleep, drops the
warm-up rounds and reports per contender the median step time and its ratio to a baseline.

A contender is a class in a bench module, named "module:Class" and built in the worker from
JSON arguments; it has

    info       a dict recorded as is (what was built, setup timings)
    round()    -> {"seconds": [step seconds, ...], "loss": float}
    finish()   -> a dict (optional): measurements taken after the rounds (profiles)

Each worker also records its environment: the BLAS NumPy and torch were built with and the
threads they use, OPENBLAS_* / OMP_* / MKL_* variables, the CPU. A contender may run with some
variables unset (`unset`), which is recorded beside its results.

    results = alternate({"torch": Spec("bert_step:TorchClassifier", {...}),
                         "numpy": Spec("bert_step:EngineClassifier", {...})}, baseline="torch")
"""

import importlib
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# Variables that change how the BLAS and OpenMP runtimes pick kernels and threads.
ENV_PREFIXES = ("OPENBLAS_", "GOTO", "OMP_", "GOMP_", "KMP_", "MKL_", "BLIS_", "VECLIB_",
                "NUMEXPR_", "TORCH_", "CUDA_VISIBLE_DEVICES", "VK_", "WGPU_", "PYTHONPATH")
# The OpenBLAS overrides a benchmark may drop for the NumPy process (recorded when it does).
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def export_revision(rev, into, paths=("py_engine",)):
    """REV's `paths` (py_engine/, say, or with shaders/) under `into`, taken with git archive,
    for a contender to import as its engine_root; returns the full commit."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, *paths], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# --- what the environment is ---------------------------------------------------------------

def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    """What the whole run shares: the CPU, the cores this process may use, the OS, Python."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": cores,
            "platform": platform.platform(), "python": platform.python_version()}


def relevant_env(environ=None):
    environ = os.environ if environ is None else environ
    return {k: v for k, v in sorted(environ.items()) if k.startswith(ENV_PREFIXES)}


def _numpy_info():
    import numpy

    info = {"version": numpy.__version__}
    try:
        config = numpy.show_config(mode="dicts")
        deps = config.get("Build Dependencies", {})
        info["blas"] = deps.get("blas")
        info["lapack"] = deps.get("lapack")
        info["simd"] = config.get("SIMD Extensions")
    except (TypeError, ValueError):   # NumPy < 1.26 prints only
        pass
    return info


def _torch_info():
    import torch

    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "config": torch.__config__.show(), "parallel_info": torch.__config__.parallel_info()}
    if torch.cuda.is_available():
        info["cuda"] = {"device": torch.cuda.get_device_name(0), "version": torch.version.cuda,
                        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    return info


def process_environment():
    """This process's view: the variables, the thread pools loaded, NumPy's and torch's builds
    (only those this process imported: a NumPy worker never loads torch)."""
    env = {"pid": os.getpid(), "env": relevant_env()}
    try:
        from threadpoolctl import threadpool_info

        env["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                                      "num_threads", "threading_layer", "architecture")}
                              for p in threadpool_info()]
    except ImportError:
        env["threadpools"] = "threadpoolctl not installed"
    if "numpy" in sys.modules:
        env["numpy"] = _numpy_info()
    if "torch" in sys.modules:
        env["torch"] = _torch_info()
    return env


# --- the driver ------------------------------------------------------------------------------

@dataclass
class Spec:
    """A contender: its class ("module:Class" under bench/), JSON arguments, the environment
    variables its process runs without (`unset`) or with (`set`), and where its py_engine is
    imported from (`engine_root`: another checkout, say an older revision; default this one)."""

    factory: str
    args: dict = field(default_factory=dict)
    unset: tuple = ()
    set: dict = field(default_factory=dict)
    engine_root: str = ""

    def env_changes(self):
        changes = {k: None for k in self.unset if k in os.environ}
        changes.update(self.set)
        return changes


class WorkerError(RuntimeError):
    pass


class Worker:
    """One contender's process, spoken to in JSON lines over its stdin and stdout (the worker
    moves everything else it prints to stderr, which goes to a log file)."""

    def __init__(self, name, spec, log_dir):
        self.name, self.spec = name, spec
        env = dict(os.environ)
        for key, value in spec.env_changes().items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "processes.py"), "worker", spec.factory, json.dumps(spec.args),
             spec.engine_root],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=ROOT,
            text=True, bufsize=1)

    def receive(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s{self.log_tail()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise WorkerError(f"{self.name}: the worker exited with {self.proc.returncode}"
                                  f"{self.log_tail()}")
            message = json.loads(line)
            if "error" in message:
                raise WorkerError(f"{self.name}: {message['error']}")
            return message

    def ask(self, op, timeout):
        self.proc.stdin.write(json.dumps({"op": op}) + "\n")
        self.proc.stdin.flush()
        return self.receive(timeout)

    def log_tail(self, lines=15):
        self._log.flush()
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return ("\n  " + "\n  ".join(tail)) if tail else ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def alternate(specs, baseline=None, rounds=5, warmup=1, settle_s=0.3, budget_s=None,
              min_rounds=2, setup_timeout=900, round_timeout=600, log_dir=None):
    """Run each contender in its own process, alternating rounds; returns
    {"method": ..., "machine": ..., name: {seconds (median step), steps, loss, info,
    environment, env_changes, vs_<baseline>}}.

    `rounds` measured rounds follow `warmup` rounds that are dropped. With `budget_s`, rounds
    stop early (after `min_rounds`) once the measured rounds have taken that long."""
    if baseline is not None and baseline not in specs:
        raise ValueError(f"baseline {baseline!r} is not among the contenders {sorted(specs)}")
    own_dir = log_dir is None
    log_dir = Path(tempfile.mkdtemp(prefix="bench-")) if own_dir else Path(log_dir)
    workers, out = {}, {}
    try:
        for name, spec in specs.items():   # one at a time: no setup overlaps another's
            worker = workers[name] = Worker(name, spec, log_dir)
            ready = worker.receive(setup_timeout)
            out[name] = {"info": ready["info"], "environment": ready["environment"],
                         "env_changes": spec.env_changes(), "steps": [], "round_medians": [],
                         "losses": []}
        load_before = os.getloadavg()
        started = time.monotonic()
        done = 0
        for i in range(warmup + rounds):
            for name, worker in workers.items():
                time.sleep(settle_s)       # the last worker's threads stop spinning meanwhile
                r = worker.ask("round", round_timeout)
                if i >= warmup:
                    out[name]["steps"] += r["seconds"]
                    out[name]["round_medians"].append(median(r["seconds"]))
                    out[name]["losses"].append(r["loss"])
            if i >= warmup:
                done += 1
                if budget_s is not None and done >= min_rounds and time.monotonic() - started > budget_s:
                    break
        for name, worker in workers.items():
            finish = worker.ask("finish", round_timeout)
            if finish.get("finish"):
                out[name]["finish"] = finish["finish"]
    except BaseException:       # a failure, a timeout, SIGTERM: no worker outlives the driver
        for worker in workers.values():
            worker.kill()
        raise
    finally:
        for worker in workers.values():
            worker.close()
        if own_dir:
            for p in log_dir.iterdir():
                p.unlink()
            log_dir.rmdir()
    for name, r in out.items():
        r["seconds"] = median(r["steps"])
        r["loss"] = r["losses"][-1]
    if baseline is not None:
        base = out[baseline]
        for name, r in out.items():
            if name != baseline:
                r[f"vs_{baseline}"] = base["seconds"] / r["seconds"]
                # Neighbouring rounds share the machine's load: their ratios, then the median.
                r[f"vs_{baseline}_paired"] = median([b / c for b, c in zip(base["round_medians"],
                                                                           r["round_medians"])])
    return {"method": {"processes": "one per contender", "order": list(specs), "warmup_rounds": warmup,
                       "rounds": done, "settle_s": settle_s,
                       "statistic": "seconds: median step time over the measured rounds' steps; "
                                    "vs_<baseline> = baseline seconds / contender seconds; "
                                    "vs_<baseline>_paired = median over rounds of the same ratio "
                                    "between a round and the baseline's round next to it",
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
            "machine": machine(), **out}


def call(ref, **args):
    """Run the function "module:name" (under bench/) in a fresh process and return its JSON
    result: for setup work that would otherwise load torch's thread pools into the driver."""
    done = subprocess.run([sys.executable, str(BENCH / "processes.py"), "call", ref, json.dumps(args)],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise WorkerError(f"{ref} failed (exit {done.returncode}); its error is printed above")
    return json.loads(done.stdout.splitlines()[-1])


class StepClock:
    """Marks the end of each training step; usable as fit()'s on_step callback.

        clock.start(); ...steps, each calling clock()...; clock.seconds()

    seconds() drops the first interval, which carries what a round does once before its
    first step (fit()'s tokenization and batching of the whole round)."""

    def start(self):
        self.marks = [time.perf_counter()]

    def __call__(self, _step=None):
        self.marks.append(time.perf_counter())

    def first(self):
        """The first interval: for a round that starts a model, recording and compiling too."""
        return self.marks[1] - self.marks[0]

    def seconds(self):
        return [b - a for a, b in zip(self.marks, self.marks[1:])][1:]


def openblas_variants(spec):
    """{"": spec} plus, when OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set here, a second
    contender without them (suffix " (OpenBLAS defaults)"): both ways are measured."""
    present = [k for k in OPENBLAS_OVERRIDES if k in os.environ]
    variants = {"": spec}
    if present:
        variants[" (OpenBLAS defaults)"] = Spec(spec.factory, spec.args, unset=tuple(present), set=spec.set)
    return variants


# --- the worker ------------------------------------------------------------------------------

def _load(ref, engine_root=""):
    module, _, name = ref.partition(":")
    sys.path[:0] = [str(ROOT), str(BENCH)]
    factory = getattr(importlib.import_module(module), name)
    if engine_root:
        # Bench modules put this checkout first on the path as they load; py_engine itself is
        # imported only when the contender is built, so the other tree goes in front now.
        if "py_engine" in sys.modules:
            raise RuntimeError(f"{module} imported py_engine on load: engine_root cannot apply")
        sys.path.insert(0, engine_root)
    return factory


def worker_main(ref, args, engine_root=""):
    # The protocol keeps the real stdout; anything else printed (C libraries included) goes to
    # stderr, the worker's log.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(message):
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        contender = _load(ref, engine_root)(**json.loads(args))
        if engine_root:
            import py_engine

            contender.info["engine"] = str(Path(py_engine.__file__).parent)
        send({"info": contender.info, "environment": process_environment()})
        for line in sys.stdin:
            op = json.loads(line)["op"]
            if op == "round":
                send(contender.round())
            elif op == "finish":
                send({"finish": contender.finish() if hasattr(contender, "finish") else None})
            elif op == "quit":
                break
    except Exception:
        send({"error": traceback.format_exc()})
        sys.exit(1)


def call_main(ref, args):
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = _load(ref)(**json.loads(args))
    channel.write(json.dumps(result) + "\n")
    channel.flush()


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("worker", "call"):
        sys.exit("usage: processes.py worker|call module:name JSON_ARGS [ENGINE_ROOT] "
                 "(see alternate() and call())")
    (worker_main if sys.argv[1] == "worker" else call_main)(*sys.argv[2:])
