"""Causal-LM head loss over the vocabulary in chunks (shaders/lm_head_loss.wgsl with the matmul
family), so only an [N, chunk] block of logits is ever resident; NumPy reference:
py_engine/ops/lm_head_loss.py.

    lm = await LMHeadLossKernels.load(device)          # or load(device, matmul=mm) to share one
    scratch = device.create_buffer(4 * lm.scratch_floats(rows, chunk))
    stats = device.create_buffer(4 * lm.stats_floats(rows))
    lm.forward(program, hidden, weight, labels, scratch, stats, metrics,
               rows=N, hidden_size=H, vocab=V, chunk=Vc)
    lm.backward(program, hidden, weight, labels, scratch, stats, metrics, dhidden,
                rows=N, hidden_size=H, vocab=V, chunk=Vc, dweight=None)

hidden [N, H] f32, weight [V, H] f32 (or packed f16 with w_half=True, from
py_engine.kernels.matmul.pack_half, e.g. a tied embedding kept in f16 for reading), labels [N]
u32 already shifted (IGNORE_LABEL marks an uncounted token), dhidden [N, H], dweight [V, H] f32
or None (a frozen head). dW = sum over rows of dlogits[row, v] * h[row] is one more gemm per
chunk over the chunk's gradient block already in the scratch; it never reads the weight, so an
f16 head gets an f32 dW (the gradient of the loss as computed, with the f16-rounded weight). The forward writes the metrics slots of py_engine/kernels/cross_entropy.py: loss,
correct (argmax == label), counted, weight_sum (= counted). The backward recomputes each chunk's
logits and reads the forward's stats and metrics, so record it after the forward of the same
batch. `dh_beta` / `dw_beta` = 1 add the gradients into dhidden / dweight (accumulation over
micro-batches, or a tied weight's embedding gradient already there); 0 overwrites them.

A head with a bias (Phi-2's lm_head: `bias=` [V] f32 to forward and backward) adds it to each
chunk's logits: the chunk's slice is copied into a small buffer the chunk's gemm adds as its
bias; `dbias=` [V] f32 gets the column sums of each chunk's gradient block (the matmul
family's bias_grad into that buffer, copied to the slice; `db_beta` as dw_beta), so no
shader of this family knows of the bias.

Label smoothing: `smoothing=e` to forward and backward (0 <= e < 1) takes each counted token's
loss as (1 - e)(lse - z[y]) + e (lse - mean z), as transformers' label_smoothing_factor.

Final logit soft-capping (Gemma 2): `softcap=c` to forward and backward caps the logits to
c * tanh(z / c) before the loss (the backward multiplies each logit's gradient by the cap's
slope); `softcap(program, logits, n, c)` caps n logits in place (generation's).

A LoRA on the output layer adds a low-rank term to the logits: `low_rank=(u, b, r, scaling)`
(u [N, r] f32, B [V, r] f32) to forward and backward gives each chunk's logits
h W_chunk^T + scaling * u B_chunk^T (one more gemm, accumulating into the chunk's block, before
the cap); the backward then writes du [N, r] = scaling * dz B (`du=`) and adds
scaling * dz^T u into dB [V, r] (`dlow_b=`, each chunk its rows), from the gradient block
already in the scratch.

Cost: the backward recomputes the forward's logits (one extra N x V x H product); the dispatch
count is about 2 + 2 * ceil(V / chunk) forward and up to 3 * ceil(V / chunk) backward.
"""

from ..gpu import require_floats
from . import KernelFamily
from .cross_entropy import IGNORE_LABEL, METRIC_LOSS
from .matmul import MatmulKernels, MatrixView

SOURCE = "lm_head_loss.wgsl"
STATS_PER_ROW = 4   # running max, running sum of exponentials, label logit, argmax

__all__ = ["IGNORE_LABEL", "LMHeadLossKernels", "STATS_PER_ROW"]


class LMHeadLossKernels(KernelFamily):
    SOURCE = SOURCE
    ENTRIES = ("lm_chunk_update", "lm_finish", "lm_chunk_grad", "lm_softcap")
    WORKGROUP = 256

    def __init__(self, device, kernels, matmul):
        super().__init__(device, kernels)
        self.matmul = matmul

    @classmethod
    async def load(cls, device, matmul=None):
        """Compile the family; `matmul` shares an already loaded MatmulKernels."""
        constants = {"WORKGROUP": cls.WORKGROUP}
        kernels = {e: await device.kernel(cls.SOURCE, e, constants) for e in cls.ENTRIES}
        return cls(device, kernels, matmul or await MatmulKernels.load(device))

    @staticmethod
    def scratch_floats(rows, chunk):
        return rows * chunk

    @staticmethod
    def stats_floats(rows):
        return rows * STATS_PER_ROW

    def _params(self, rows, cols, start, vocab, first, metrics_offset, dloss, softcap=None,
                smoothing=0.0):
        if softcap is not None and not softcap > 0:
            raise ValueError(f"softcap must be positive or None, got {softcap}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
        return self.device.uniform("IIIIIIfffIII", rows, cols, start, vocab, first,
                                   metrics_offset, dloss, softcap or 0.0, smoothing, 0, 0, 0)

    def softcap(self, program, logits, n, softcap):
        """logits[:n] = softcap * tanh(logits[:n] / softcap), in place."""
        require_floats(logits, n, "logits")
        if softcap is None:
            raise ValueError("softcap needs a cap")
        self._dispatch(program, "lm_softcap", [logits, self._params(n, 1, 0, 0, 0, 0, 1.0, softcap)], n)
        return program

    def _check(self, hidden, weight, labels, scratch, stats, metrics, rows, hidden_size, vocab,
               chunk, w_half, metrics_offset):
        if min(rows, hidden_size, vocab, chunk) < 1:
            raise ValueError(f"lm head loss needs rows, hidden_size, vocab, chunk >= 1, got "
                             f"{rows}, {hidden_size}, {vocab}, {chunk}")
        if vocab >= 1 << 24:
            raise ValueError(f"vocab {vocab} too large: argmax indices are kept as f32")
        require_floats(hidden, rows * hidden_size, "hidden")
        require_floats(weight, (vocab * hidden_size + 1) // 2 if w_half else vocab * hidden_size,
                       "weight")
        require_floats(labels, rows, "labels")
        require_floats(scratch, rows * min(chunk, vocab), "scratch")
        require_floats(stats, rows * STATS_PER_ROW, "stats")
        require_floats(metrics, metrics_offset + 4, "metrics")

    def _chunks(self, vocab, chunk):
        return [(start, min(chunk, vocab - start)) for start in range(0, vocab, chunk)]

    def _bias_slice(self, vocab, chunk, bias, what):
        """The small buffer a chunk's slice of the head bias (or its gradient) passes through."""
        if bias is None:
            return None
        require_floats(bias, vocab, what)
        return self.device.create_buffer(4 * min(chunk, vocab), label=f"lm {what} chunk")

    def _logits(self, program, hidden, weight, scratch, rows, hidden_size, start, cols, w_half,
                bias=None, bias_chunk=None, low_rank=None):
        w_chunk = MatrixView(weight, ld=hidden_size, offset=start * hidden_size)
        if bias is not None:
            program.copy(bias, bias_chunk, size=4 * cols, src_offset=4 * start)
        self.matmul.linear(program, hidden, w_chunk, scratch, rows, hidden_size, cols,
                           bias=bias_chunk, w_half=w_half)
        if low_rank is not None:
            u, b, r, scaling = low_rank
            self.matmul.linear(program, u, MatrixView(b, ld=r, offset=start * r), scratch, rows,
                               r, cols, alpha=scaling, beta=1.0)

    def _check_low_rank(self, low_rank, rows, vocab):
        if low_rank is None:
            return
        u, b, r, scaling = low_rank
        if r < 1:
            raise ValueError(f"the low-rank term needs a rank >= 1, got {r}")
        require_floats(u, rows * r, "u")
        require_floats(b, vocab * r, "low-rank B")

    def forward(self, program, hidden, weight, labels, scratch, stats, metrics, rows,
                hidden_size, vocab, chunk, w_half=False, metrics_offset=METRIC_LOSS, bias=None,
                softcap=None, low_rank=None, smoothing=0.0):
        """Loss, correct count and counted tokens (twice: counted is the denominator) into
        metrics[offset:offset+4]; per-row (max, sum, label logit, argmax) into stats."""
        self._check(hidden, weight, labels, scratch, stats, metrics, rows, hidden_size, vocab,
                    chunk, w_half, metrics_offset)
        self._check_low_rank(low_rank, rows, vocab)
        bias_chunk = self._bias_slice(vocab, chunk, bias, "bias")
        for start, cols in self._chunks(vocab, chunk):
            self._logits(program, hidden, weight, scratch, rows, hidden_size, start, cols, w_half,
                         bias, bias_chunk, low_rank)
            params = self._params(rows, cols, start, vocab, int(start == 0), metrics_offset, 1.0,
                                  softcap, smoothing)
            self._dispatch(program, "lm_chunk_update", [labels, stats, params, scratch], rows)
        params = self._params(rows, 0, 0, vocab, 0, metrics_offset, 1.0)
        program.dispatch(self._kernels["lm_finish"], [labels, stats, params, metrics], 1)
        return program

    def backward(self, program, hidden, weight, labels, scratch, stats, metrics, dhidden, rows,
                 hidden_size, vocab, chunk, dweight=None, dloss=1.0, w_half=False, dh_beta=0.0,
                 dw_beta=0.0, metrics_offset=METRIC_LOSS, bias=None, dbias=None, db_beta=0.0,
                 softcap=None, low_rank=None, du=None, dlow_b=None, smoothing=0.0):
        """dhidden = dh_beta * dhidden + d(dloss * loss)/dh and, when dweight is given,
        dweight = dw_beta * dweight + d(dloss * loss)/dW; with `dbias`, dbias = db_beta *
        dbias + d(dloss * loss)/db (the head's `bias` as in the forward). With `low_rank` as
        in the forward: du = d(dloss * loss)/du where given, dlow_b += d(dloss * loss)/dB."""
        self._check(hidden, weight, labels, scratch, stats, metrics, rows, hidden_size, vocab,
                    chunk, w_half, metrics_offset)
        self._check_low_rank(low_rank, rows, vocab)
        if (du is not None or dlow_b is not None) and low_rank is None:
            raise ValueError("du and dlow_b are the low-rank term's gradients: pass low_rank")
        if low_rank is not None:
            r = low_rank[2]
            if du is not None:
                require_floats(du, rows * r, "du")
            if dlow_b is not None:
                require_floats(dlow_b, vocab * r, "dlow_b")
            if any(g is not None and any(g is b for b in (low_rank[0], low_rank[1], scratch))
                   for g in (du, dlow_b)):
                raise ValueError("du and dlow_b must be buffers of their own")
        require_floats(dhidden, rows * hidden_size, "dhidden")
        if dweight is not None:
            if any(dweight is b for b in (weight, hidden, scratch, dhidden)):
                raise ValueError("dweight must be its own buffer: later chunks still read the "
                                 "weight, hidden states and scratch")
            require_floats(dweight, vocab * hidden_size, "dweight")
        if dbias is not None and any(dbias is b for b in (bias, scratch)):
            raise ValueError("dbias must be its own buffer")
        bias_chunk = self._bias_slice(vocab, chunk, bias, "bias")
        db_chunk = self._bias_slice(vocab, chunk, dbias, "dbias")
        mm = self.matmul
        for start, cols in self._chunks(vocab, chunk):
            self._logits(program, hidden, weight, scratch, rows, hidden_size, start, cols, w_half,
                         bias, bias_chunk, low_rank)
            params = self._params(rows, cols, start, vocab, 0, metrics_offset, dloss, softcap,
                                  smoothing)
            self._dispatch(program, "lm_chunk_grad", [labels, stats, params, scratch, metrics],
                           rows * cols)
            w_chunk = MatrixView(weight, ld=hidden_size, offset=start * hidden_size)
            mm.linear_grad_input(program, scratch, w_chunk, dhidden, rows, hidden_size, cols,
                                 beta=dh_beta if start == 0 else 1.0, w_half=w_half)
            if dweight is not None:
                dw_chunk = MatrixView(dweight, ld=hidden_size, offset=start * hidden_size)
                mm.linear_grad_weight(program, scratch, hidden, dw_chunk, rows, hidden_size, cols,
                                      beta=dw_beta)
            if dbias is not None:
                if db_beta:
                    program.copy(dbias, db_chunk, size=4 * cols, src_offset=4 * start)
                mm.bias_grad(program, scratch, db_chunk, rows, cols, beta=db_beta)
                program.copy(db_chunk, dbias, size=4 * cols, dst_offset=4 * start)
            if low_rank is not None:
                u, b, r, scaling = low_rank
                if du is not None:
                    mm.linear_grad_input(program, scratch, MatrixView(b, ld=r, offset=start * r),
                                         du, rows, r, cols, alpha=scaling,
                                         beta=0.0 if start == 0 else 1.0)
                if dlow_b is not None:
                    mm.linear_grad_weight(program, scratch, u,
                                          MatrixView(dlow_b, ld=r, offset=start * r), rows, r,
                                          cols, alpha=scaling, beta=1.0)
        return program
