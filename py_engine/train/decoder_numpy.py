"""Training and scoring of a Llama-family decoder on the NumPy backend (host CPU; the reference).

The same interface as decoder_gpu.DecoderGpuRuntime; coroutines only to share it."""

import numpy as np

from ..models.llama import LlamaLoRA
from ..ops import rope as rope_ops
from ..ops.lm_head_loss import IGNORE
from .numpy_runtime import NumpyRuntime


def shifted_labels(batch):
    """The batch's shifted labels as an int64 array (negative = ignored)."""
    labels = np.asarray(batch.labels, np.int64)
    return np.where(labels < 0, IGNORE, labels)


class DecoderNumpyRuntime(NumpyRuntime):
    def __init__(self, model, checkpoint, trainable, dtype=np.float32):
        super().__init__(model, checkpoint, trainable, dtype)
        self._tables = {}

    def _rope(self, T):
        if T not in self._tables:
            c = self.model.config
            inv_freq = rope_ops.rope_inv_freq(c.head_dim, c.rope_parameters)
            self._tables[T] = tuple(t.astype(self.be.dtype) for t in rope_ops.rope_tables(inv_freq, T))
        return self._tables[T]

    async def accumulate(self, batch, seed=0, loss_scale=1.0, **_):
        """Forward and backward of one (micro-)batch, gradients of loss * loss_scale added to
        the accumulated ones; returns (mean loss, counted tokens)."""
        model, be = self.model, self.be
        be.start_step(seed)
        tables = self._rope(batch.T)
        hidden, saved = model.hidden(be, batch, tables, train=True)
        labels = shifted_labels(batch)
        loss, dh = be.lm_head_loss(hidden, be.param(model.head_name), labels, loss_scale,
                                   dweight=model.head_grad(be))
        model.backward(be, dh, saved, tables)
        be.finish_step()
        return loss, int((labels != IGNORE).sum())

    async def score(self, batch):
        """(sum of token losses, counted tokens) of a batch, without training."""
        hidden, _ = self.model.hidden(self.be, batch, self._rope(batch.T), train=False)
        return self.be.lm_head_scores(hidden, self.be.param(self.model.head_name), shifted_labels(batch))

    async def to_full(self):
        """Switch from LoRA to full fine-tuning: W += scaling * B.A, the LoRA tensors and their
        optimizer state dropped, every weight given a gradient and fresh moments."""
        model, p = self.model, self.be.params
        if model.full:
            return
        for _, w, a, b in model.merge_names():
            p[w] += model.lora.scaling * (p[b] @ p[a])
        for name in model.trainable:
            for table in (p, self.be.grads, self.m, self.v):
                table.pop(name)
        for name in [n for n in p if n.endswith(".merged.weight")]:
            p.pop(name)
        self.model = LlamaLoRA(model.config, None)
        for name in self.model.trainable:
            self.be.add_grad(name)
            self.m[name] = np.zeros_like(p[name])
            self.v[name] = np.zeros_like(p[name])

    async def snapshot(self):
        return {n: self.be.params[n].copy() for n in self.model.trainable}

    async def restore(self, snapshot):
        if set(snapshot) != set(self.model.trainable):
            raise ValueError("the snapshot was taken with other trainable tensors")
        for name, values in snapshot.items():
            self.be.params[name][...] = values
