"""Training and inference of a BertClassifier on the NumPy backend (host CPU; the reference).

Its methods are coroutines only to share the GPU runtime's interface; nothing here waits."""

import ctypes
import sys

import numpy as np

from ..backends.numpy_backend import NumpyBackend
from ..ops import adamw as adamw_ops
from ..ops import cross_entropy as ce_ops
from ..ops import grad_norm as norm_ops
from .batch import Batch


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


class NumpyRuntime:
    name = "numpy"

    def __init__(self, model, checkpoint, trainable, dtype=np.float32):
        """`trainable`: {name: (shape, floats)} initial values of the trainable parameters."""
        keep_freed_memory()
        self.model = model
        self.be = NumpyBackend(dtype)
        for name in model.frozen_names():
            self.be.set_param(name, np.frombuffer(checkpoint.floats(name), np.float32),
                              checkpoint.shape(name))
        self.m, self.v = {}, {}
        for name, (shape, values) in trainable.items():
            self.be.set_param(name, np.asarray(values, np.float64), shape)
            self.be.add_grad(name)
            self.m[name] = np.zeros_like(self.be.params[name])
            self.v[name] = np.zeros_like(self.be.params[name])

    def _batch(self, batch):
        return Batch(np.asarray(batch.ids, np.int64), np.asarray(batch.type_ids, np.int64),
                     np.asarray(batch.mask, np.int64),
                     None if batch.labels is None else np.asarray(batch.labels, np.int64))

    async def accumulate(self, batch, seed=0, loss_scale=1.0, class_weights=None, label_smoothing=0.0):
        """Forward and backward of one (micro-)batch; gradients of loss * loss_scale are added
        to the accumulated ones. Returns (loss, correct count)."""
        b = self._batch(batch)
        self.be.start_step(seed)
        logits, saved = self.model.forward(self.be, b, train=True)
        weights = None if class_weights is None else np.asarray(class_weights, logits.dtype)
        loss, correct, wsum = ce_ops.cross_entropy_forward(logits, b.labels, weights, label_smoothing)
        dlogits = ce_ops.cross_entropy_backward(logits, b.labels, wsum, weights, label_smoothing,
                                                dloss=loss_scale)
        self.model.backward(self.be, dlogits, saved, b)
        self.be.finish_step()
        return float(loss), int(correct.sum())

    async def update(self, lr, step, max_norm=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        """Clip the accumulated gradients, take one AdamW step, zero them; returns the norm."""
        names = list(self.be.grads)
        norm = norm_ops.global_grad_norm([self.be.grads[n] for n in names])
        scale = norm_ops.clip_scale(norm, max_norm)
        for n in names:
            p, self.m[n], self.v[n] = adamw_ops.adamw_step(
                self.be.params[n], self.be.grads[n], self.m[n], self.v[n], lr, beta1, beta2, eps,
                weight_decay, step, grad_scale=scale)
            self.be.params[n][...] = p
        self.be.zero_grads()
        return norm

    def logits(self, batch):
        b = self._batch(batch)
        logits, _ = self.model.forward(self.be, b, train=False)
        return logits

    async def probabilities(self, batch):
        z = self.logits(batch).astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).tolist()

    async def merge(self):
        """Fold each LoRA update into a copy of its base weight for inference:
        W + scaling * B . A (the base weight itself is kept for training)."""
        for merged, w, a, b in self.model.merge_names():
            p = self.be.params
            p[merged] = p[w] + self.model.lora.scaling * (p[b] @ p[a])
        self.model.merged = True

    async def trainable_values(self):
        """{name: (shape, float list)} of the current trainable parameters."""
        return {n: (self.model.trainable[n], self.be.params[n].astype(np.float32).ravel())
                for n in self.model.trainable}

    def gradients(self):
        return {n: self.be.grads[n].copy() for n in self.model.trainable}

