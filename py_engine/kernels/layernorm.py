"""LayerNorm on the GPU (shaders/layernorm.wgsl); NumPy reference: py_engine/ops/layernorm.py.

    ln = await LayerNormKernels.load(device)
    ln.forward(program, x, gamma, beta, out, mean, rstd, rows=R, cols=C)            # eps 1e-12
    ln.backward(program, dout, x, gamma, mean, rstd, dx, dgamma, dbeta, rows=R, cols=C)

x, out, dout, dx: [rows, cols] f32; gamma, beta, dgamma, dbeta: [cols]; mean, rstd: [rows]
(written by the forward, read by the backward). backward(accumulate=True) adds into dgamma and
dbeta instead of overwriting them (gradient accumulation); dx is always overwritten.
"""

import math

from . import KernelFamily
from ..gpu import require_floats, row_groups

BERT_EPS = 1e-12
SOURCE = "layernorm.wgsl"


def chunking(rows):
    """(chunk_rows, chunks) for the two-pass column sums: ~sqrt(rows) rows per partial sum."""
    chunk_rows = math.isqrt(rows - 1) + 1
    return chunk_rows, math.ceil(rows / chunk_rows)


class LayerNormKernels(KernelFamily):
    """load(device, workgroup): `workgroup` threads share a row (a power of two)."""
    SOURCE = SOURCE
    ENTRIES = ("layernorm_forward", "layernorm_backward", "layernorm_params_partial",
               "layernorm_params_finish")
    WORKGROUP = 64

    def _params(self, rows, cols, eps=BERT_EPS, accumulate=False):
        if rows < 1 or cols < 1:
            raise ValueError(f"layernorm needs rows, cols >= 1, got {rows}, {cols}")
        chunk_rows, chunks = chunking(rows)
        return self.device.uniform("IIfIII", rows, cols, eps, int(accumulate), chunk_rows, chunks)

    def forward(self, program, x, gamma, beta, out, mean, rstd, rows, cols, eps=BERT_EPS):
        for buffer, floats, name in ((x, rows * cols, "x"), (out, rows * cols, "out"),
                                     (gamma, cols, "gamma"), (beta, cols, "beta"),
                                     (mean, rows, "mean"), (rstd, rows, "rstd")):
            require_floats(buffer, floats, name)
        params = self._params(rows, cols, eps)
        program.dispatch(self._kernels["layernorm_forward"],
                         [x, mean, rstd, params, beta, out, gamma], row_groups(self.device, rows))

    def backward(self, program, dout, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols,
                 accumulate=False):
        """dx (one workgroup per row), then dgamma and dbeta (summed over rows)."""
        self.backward_input(program, dout, x, gamma, mean, rstd, dx, rows, cols)
        self.backward_params(program, dout, x, mean, rstd, dgamma, dbeta, rows, cols, accumulate)

    def backward_input(self, program, dout, x, gamma, mean, rstd, dx, rows, cols):
        """Only dx (a frozen LayerNorm, as in LoRA training, needs no dgamma or dbeta)."""
        for buffer, floats, name in ((x, rows * cols, "x"), (dout, rows * cols, "dout"),
                                     (dx, rows * cols, "dx"), (gamma, cols, "gamma"),
                                     (mean, rows, "mean"), (rstd, rows, "rstd")):
            require_floats(buffer, floats, name)
        program.dispatch(self._kernels["layernorm_backward"],
                         [x, mean, rstd, self._params(rows, cols), dout, dx, gamma],
                         row_groups(self.device, rows))

    def backward_params(self, program, dout, x, mean, rstd, dgamma, dbeta, rows, cols,
                        accumulate=False):
        """Only dgamma and dbeta (e.g. when nothing upstream needs dx); allocates the scratch
        buffer of partial sums, which the program keeps."""
        require_floats(dgamma, cols, "dgamma")
        require_floats(dbeta, cols, "dbeta")
        params = self._params(rows, cols, accumulate=accumulate)
        _, chunks = chunking(rows)
        partials = self.device.create_buffer(8 * chunks * cols, label="layernorm partials")
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        column_groups = min(math.ceil(cols / self.WORKGROUP), limit)
        program.dispatch(self._kernels["layernorm_params_partial"],
                         [x, mean, rstd, params, dout, partials], (column_groups, chunks))
        program.dispatch(self._kernels["layernorm_params_finish"],
                         [partials, dgamma, dbeta, params], column_groups)
