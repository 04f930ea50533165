"""A model and a task on the NumPy backend (host CPU): training, evaluation and generation. It
is the reference the GPU runtime is checked against, and the CPU path on a desktop.

Its methods are coroutines only to share the GPU runtime's interface (py_engine/train/runtime.py);
nothing here waits.
"""

import ctypes
import sys

import numpy as np

from ..backends.numpy_backend import NumpyBackend
from ..labels import IGNORE_LABEL
from ..ops import adamw as adamw_ops
from ..ops import dora as dora_ops
from ..ops import lora_linear as lora_ops
from ..ops import grad_norm as norm_ops
from .runtime import Runtime, check_foldable, check_lora_biases_fold, check_trainable


def keep_freed_memory():
    """Have glibc keep freed memory mapped for reuse instead of returning it to the OS.

    Every training step allocates and frees the same activations (about 100 MB for MiniLM at
    16 x 32 tokens). By default glibc serves blocks over 128 KiB (a threshold it raises
    adaptively) with fresh mmaps and trims the free top of its heap, so each step faults that
    memory back in page by page, zero-filled: about a quarter of the step. Fixed thresholds
    keep the pages for the next step. Process-wide; the heap stays at its peak size. Linux only
    (macOS and Windows allocators behave differently and have no mallopt)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)      # glibc's largest: every activation from the heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30)       # and the heap is not shrunk between steps


class Inputs:
    """A batch as the backend reads it: int64 arrays, sizes, the position of its first token."""

    def __init__(self, batch, fields):
        for name in fields:
            setattr(self, name, np.asarray(getattr(batch, name), np.int64))
        labels = batch.labels
        self.labels = None if labels is None else np.asarray(
            [IGNORE_LABEL if y is None or y < 0 else y for y in labels], np.int64)
        self.B, self.T, self.position = batch.B, batch.T, 0


class NumpyRuntime(Runtime):
    name = "numpy"

    def __init__(self, model, task, checkpoint, trainable, dtype=np.float32, frozen=None):
        """`trainable`: {name: (shape, floats)} initial values of the trainable parameters;
        `checkpoint` supplies the frozen ones (floats(name), shape(name)), but those in
        `frozen` ({name: array}, rebuilt())."""
        keep_freed_memory()
        super().__init__(model, task)
        check_trainable(model, trainable)
        self.be = NumpyBackend(dtype)
        self.checkpoint = checkpoint
        for name in model.frozen_names():
            if frozen and name in frozen:
                self.be.params[name] = frozen[name]
                continue
            self.be.set_param(name, np.frombuffer(checkpoint.floats(name), np.float32),
                              checkpoint.shape(name))
        self.m, self.v = {}, {}
        for name, (shape, values) in trainable.items():
            self.be.set_param(name, np.asarray(values, np.float64), shape)
            self._add_optimizer_state(name)

    async def rebuilt(self, model, trainable, task=None):
        return type(self)(model, task or self.task, self.checkpoint, trainable, self.be.dtype,
                          frozen=self.shared_frozen(model))

    def _add_optimizer_state(self, name):
        self.be.add_grad(name)
        self.m[name] = np.zeros_like(self.be.params[name])
        self.v[name] = np.zeros_like(self.be.params[name])

    # --- training ---

    async def accumulate(self, batch, seed=0, loss_scale=1.0):
        self.be.start_step(seed)
        try:
            metrics = self.task.loss(self.be, self.model, Inputs(batch, self.task.inputs), True,
                                     loss_scale)
        finally:
            self.be.finish_step()
        return metrics

    async def update(self, lr, max_norm=None, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        names = list(self.be.grads)
        norm = norm_ops.global_grad_norm([self.be.grads[n] for n in names])
        scale = norm_ops.clip_scale(norm, max_norm)
        self.optimizer_step += 1
        for n in names:
            p, self.m[n], self.v[n] = adamw_ops.adamw_step(
                self.be.params[n], self.be.grads[n], self.m[n], self.v[n], lr, beta1, beta2, eps,
                weight_decay, self.optimizer_step, grad_scale=scale)
            self.be.params[n][...] = p
        self.be.zero_grads()
        return float(norm)

    async def evaluate(self, batch):
        return self.task.loss(self.be, self.model, Inputs(batch, self.task.inputs), False)

    async def outputs(self, batch):
        out = self.task.outputs(self.be, self.model, Inputs(batch, self.task.inputs))
        return np.asarray(out, np.float64).tolist()

    # --- tensors ---

    async def trainable_values(self):
        """{name: (shape, float32 array)} of the current trainable parameters."""
        return {n: (self.model.trainable[n], self.be.params[n].astype(np.float32).ravel())
                for n in self.model.trainable}

    async def load_trainable(self, values):
        check_trainable(self.model, values)
        for name, (shape, data) in values.items():
            self.be.params[name][...] = np.asarray(data, np.float64).reshape(shape)

    async def gradients(self):
        return {n: self.be.grads[n].copy() for n in self.model.trainable}

    async def optimizer_state(self):
        return {"step": self.optimizer_step,
                "m": {n: self.m[n].astype(np.float32).ravel() for n in self.model.trainable},
                "v": {n: self.v[n].astype(np.float32).ravel() for n in self.model.trainable}}

    async def load_optimizer_state(self, state):
        self._check_optimizer_state(state)
        for table, key in ((self.m, "m"), (self.v, "v")):
            for name, data in state[key].items():
                table[name][...] = np.asarray(data, np.float64).reshape(table[name].shape)
        self.optimizer_step = int(state["step"])

    async def reset_optimizer(self):
        """AdamW from scratch: zero moments, step count 0 (the weights stay)."""
        for table in (self.m, self.v):
            for array in table.values():
                array[...] = 0.0
        self.optimizer_step = 0

    async def snapshot(self):
        return {"step": self.optimizer_step,
                "tensors": {n: (self.be.params[n].copy(), self.m[n].copy(), self.v[n].copy())
                            for n in self.model.trainable}}

    async def restore(self, snapshot):
        if set(snapshot["tensors"]) != set(self.model.trainable):
            raise ValueError("the snapshot was taken with other trainable tensors")
        for name, (p, m, v) in snapshot["tensors"].items():
            self.be.params[name][...] = p
            self.m[name][...] = m
            self.v[name][...] = v
        self.be.zero_grads()
        self.optimizer_step = snapshot["step"]

    async def snapshot_values(self, snapshot):
        """{"step", "tensors": {name: (shape, weights, m, v)}} of a snapshot (float32)."""
        return {"step": snapshot["step"],
                "tensors": {n: (self.model.trainable[n],) + tuple(a.astype(np.float32).ravel()
                                                                  for a in arrays)
                            for n, arrays in snapshot["tensors"].items()}}

    async def snapshot_from(self, values):
        """A snapshot handle holding snapshot_values()' values."""
        if set(values["tensors"]) != set(self.model.trainable):
            raise ValueError("the snapshot was taken with other trainable tensors")
        dtype = self.be.params[next(iter(values["tensors"]))].dtype
        return {"step": int(values["step"]),
                "tensors": {n: tuple(np.asarray(a, dtype).reshape(shape) for a in arrays)
                            for n, (shape, *arrays) in values["tensors"].items()}}

    def release(self, snapshot):
        snapshot["tensors"].clear()

    def _merged(self, m):
        """A Merge's weight: W + scaling * B . A, with DoRA its rows scaled to the magnitude
        (an embedding's: W + scaling * (B . A)^T)."""
        p = self.be.params
        if m.transposed:
            return p[m.weight] + m.scaling * (p[m.lora_b] @ p[m.lora_a]).T
        if m.magnitude is None:
            return lora_ops.merged_weight(p[m.weight], p[m.lora_a], p[m.lora_b], m.scaling)
        return dora_ops.merged_weight(p[m.weight], p[m.lora_a], p[m.lora_b], m.scaling,
                                      p[m.magnitude])

    def _merged_bias(self, m):
        """A Merge's bias with lora_bias: the base bias + scaling * b_B."""
        p = self.be.params
        return p[m.bias] + m.scaling * p[m.lora_bias]

    async def merge(self):
        """Fold each LoRA update into a copy of its base weight for inference:
        W + scaling * B . A, or DoRA's merge (the base weight itself is kept for training)."""
        p = self.be.params
        for m in self.model.merge_names():
            p[m.merged] = self._merged(m)
        self.model.merged = True

    async def merged_weights(self):
        """{base weight name: (shape, float32 array)} of each LoRA-wrapped linear with its update
        folded in, as merge() computes it (for exports of the merged model); with lora_bias
        its bias's name too, the base bias + scaling * b_B."""
        check_lora_biases_fold(self.model, "the merged model")
        await self.merge()
        p = self.be.params
        out = {w: (p[merged].shape, p[merged].astype(np.float32).ravel())
               for merged, w, *_ in self.model.merge_names()}
        for m in self.model.table_merge_names():      # made here alone: inference needs none
            value = self._merged(m)
            out[m.target] = (value.shape, value.astype(np.float32).ravel())
        for m in self.model.merge_names() + self.model.table_merge_names():
            if m.lora_bias is not None:
                out[m.bias_target] = (p[m.bias].shape, self._merged_bias(m).astype(np.float32))
        return out

    async def to_full(self):
        """Switch from LoRA to full fine-tuning: W += scaling * B.A, the LoRA tensors and their
        optimizer state dropped, every weight given a gradient and fresh moments."""
        model, p = self.model, self.be.params
        if model.full:
            return
        check_foldable(model)
        for m in model.merge_names() + model.table_merge_names():
            p[m.weight][...] = self._merged(m)
            if m.lora_bias is not None:
                p[m.bias][...] = self._merged_bias(m)
        kept = model.kept_names()     # what trained beside the adapter is the model's now
        for name in model.trainable:
            for table in (self.be.grads, self.m, self.v):
                table.pop(name)
            value = p.pop(name)
            if name in kept:
                p[kept[name]] = value
        for name in [n for n in p if n.endswith(".merged.weight")]:
            p.pop(name)
        self.model = model.to_full()
        for name in self.model.trainable:
            self._add_optimizer_state(name)
        self.optimizer_step = 0
        self.version += 1

    # --- generation ---

    def decoder(self, max_length=None):
        from ..generate.decoder import NumpyDecoder
        from ..generate.seq2seq import NumpySeq2SeqDecoder

        kind = NumpySeq2SeqDecoder if getattr(self.model, "encoder_decoder", False) else NumpyDecoder
        return kind(self.model, self.be, max_length)
