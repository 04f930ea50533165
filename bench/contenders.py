"""What the engine's and torch's contenders share (bench/processes.py runs them).

    EngineRounds   py_engine through its public API: a round is one fit() over steps + 1
                   batches, each optimizer step timed by fit()'s on_step callback; the first
                   step carries the round's batching (and tokenization) and is not counted.
                   On the GPU backend it records per-phase timings and, asked to profile, where
                   the step's time goes (gpu_profile.py).
    TorchRounds    transformers + PEFT: forward with labels, backward, clip_grad_norm_ (1.0),
                   AdamW, zero_grad, loss.item() (which waits for the step, as the engine's
                   readback does) per batch.

A subclass builds its model and data in __init__ after calling the base's setup method.
"""

import time
import warnings

from processes import StepClock


def open_native(timings=None):
    """The native GPU device (software adapters allowed: lavapipe proves the path)."""
    from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftwareAdapterWarning)
        device = run_sync(open_device("native"))
    if timings is not None:
        timings["open_device_s"] = time.perf_counter() - t0
    return device


class EngineRounds:
    def _setup(self, backend, profile, **info):
        """Opens the device for `backend` "gpu" (and starts logging its programs when
        `profile`); returns the device (None for "numpy") to pass to create()."""
        from py_engine.gpu import run_sync

        self.run_sync, self.profile = run_sync, profile
        self.timings = {}
        self.device = open_native(self.timings) if backend == "gpu" else None
        if profile:
            from gpu_profile import ProgramLog

            self.programs = ProgramLog(self.device)
        self.clock = StepClock()
        self.info = {"backend": backend, **info, "timings": self.timings}
        if self.device is not None:
            self.info["adapter"] = self.device.info.as_dict()
        return self.device

    def _created(self, model, started, examples, config):
        self.timings["create_s"] = time.perf_counter() - started
        self.model, self.examples, self.config = model, examples, config

    def round(self):
        self.clock.start()
        history = self.run_sync(self.model.fit(self.examples, self.config, on_step=self.clock))
        self.timings.setdefault("first_step_s", self.clock.first())
        return {"seconds": self.clock.seconds(), "loss": history[-1].loss}

    def finish(self):
        out = {}
        if self.device is not None:     # the GPU buffers its recorded programs hold
            out["recorded_bytes"] = self.model.runtime.recorded_bytes()
        if self.profile:
            out.update(phases=self.timings,
                       dispatches=self.run_sync(self.programs.profile_largest()))
        return out or None


class TorchRounds:
    def _setup(self, device):
        """torch, and the device to use: "cuda" falls back to the CPU where torch sees no GPU."""
        import torch

        self.torch = torch
        if device == "cuda" and not torch.cuda.is_available():
            device = "cpu"
        torch.manual_seed(0)
        return torch, device

    def _ready(self, model, device, batches, lr, weight_decay, **info):
        torch = self.torch
        self.model = model.to(device).train()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        self.clock = StepClock()
        self.info = {"device": device, "threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None, **info}

    def round(self):
        self.clock.start()
        for batch in self.batches:
            loss = self.model(**batch).loss
            loss.backward()
            self.torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            value = loss.item()
            self.clock()
        return {"seconds": self.clock.seconds(), "loss": value}


def blas_architecture(result):
    """The kernel family OpenBLAS picked in a contender's process ("Haswell", "SkylakeX"...)."""
    pools = result["environment"].get("threadpools")
    if isinstance(pools, list):
        for pool in pools:
            if pool.get("user_api") == "blas":
                return f"{pool.get('internal_api')} {pool.get('architecture')}".replace("openblas", "OpenBLAS")
    return "BLAS unknown"


def cpu_rows(label, tokens, result):
    """Table rows of a CPU comparison from processes.alternate: torch + PEFT, then each NumPy
    contender with its BLAS kernels and its ratios to torch."""
    t = result["torch"]
    rows = [(f"{label}: torch + PEFT, CPU ({t['info']['threads']} threads)",
             f"{tokens / t['seconds']:.0f} tok/s", f"{t['seconds'] * 1e3:.0f} ms/step")]
    for name in [n for n in result if n.startswith("numpy")]:
        r = result[name]
        unset = [k for k, v in r["env_changes"].items() if v is None]
        how = blas_architecture(r) + (f"; {', '.join(k.removeprefix('OPENBLAS_') for k in unset)} unset"
                                      if unset else "")
        rows.append((f"{label}: py_engine NumPy backend ({how})",
                     f"{tokens / r['seconds']:.0f} tok/s",
                     f"{r['vs_torch']:.2f}x torch per step (paired rounds {r['vs_torch_paired']:.2f}x)"))
    return rows
