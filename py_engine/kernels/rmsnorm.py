"""RMSNorm on the GPU (shaders/rmsnorm.wgsl); NumPy reference: py_engine/ops/rmsnorm.py.

    rms = await RmsNormKernels.load(device)
    rms.forward(program, x, weight, out, rstd, rows=R, cols=C, eps=1e-6)
    rms.backward(program, dout, x, weight, rstd, dx, dweight, rows=R, cols=C)
    rms.backward_input(program, dout, x, weight, rstd, dx, rows=R, cols=C)     # frozen weight

x, out, dout, dx: [rows, cols] f32; weight, dweight: [cols]; rstd: [rows] (written by the
forward, read by the backward). eps is the model's rms_norm_eps; offset=1.0 scales by
(1 + weight), Gemma's RMSNorm (forward and backward_input take it; the weight's gradient is the
same). backward(accumulate=True) adds
into dweight instead of overwriting it (gradient accumulation); dx is always overwritten.
"""

import math

from . import KernelFamily
from ..gpu import require_floats, row_groups
from .layernorm import chunking
from ..models.llama_config import RMS_NORM_EPS as LLAMA_EPS

SOURCE = "rmsnorm.wgsl"
WORKGROUP = 64
ENTRIES = ("rmsnorm_forward", "rmsnorm_backward", "rmsnorm_weight_partial",
           "rmsnorm_weight_finish")


class RmsNormKernels(KernelFamily):
    """load(device, workgroup): `workgroup` threads share a row (a power of two)."""
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def _params(self, rows, cols, eps=LLAMA_EPS, accumulate=False, offset=0.0):
        if rows < 1 or cols < 1:
            raise ValueError(f"rmsnorm needs rows, cols >= 1, got {rows}, {cols}")
        chunk_rows, chunks = chunking(rows)
        return self.device.uniform("IIfIIIf", rows, cols, eps, int(accumulate), chunk_rows, chunks,
                                   offset)

    def forward(self, program, x, weight, out, rstd, rows, cols, eps=LLAMA_EPS, offset=0.0):
        for buffer, floats, name in ((x, rows * cols, "x"), (out, rows * cols, "out"),
                                     (weight, cols, "weight"), (rstd, rows, "rstd")):
            require_floats(buffer, floats, name)
        params = self._params(rows, cols, eps, offset=offset)
        program.dispatch(self._kernels["rmsnorm_forward"], [x, rstd, params, weight, out],
                         row_groups(self.device, rows))
        return program

    def backward(self, program, dout, x, weight, rstd, dx, dweight, rows, cols, accumulate=False,
                 offset=0.0):
        """dx (one workgroup per row), then dweight (summed over rows)."""
        self.backward_input(program, dout, x, weight, rstd, dx, rows, cols, offset)
        return self.backward_weight(program, dout, x, rstd, dweight, rows, cols, accumulate)

    def backward_input(self, program, dout, x, weight, rstd, dx, rows, cols, offset=0.0):
        """Only dx (a frozen weight, as in LoRA training, needs no dweight)."""
        for buffer, floats, name in ((x, rows * cols, "x"), (dout, rows * cols, "dout"),
                                     (dx, rows * cols, "dx"), (weight, cols, "weight"),
                                     (rstd, rows, "rstd")):
            require_floats(buffer, floats, name)
        program.dispatch(self._kernels["rmsnorm_backward"],
                         [x, rstd, self._params(rows, cols, offset=offset), weight, dx, dout],
                         row_groups(self.device, rows))
        return program

    def backward_weight(self, program, dout, x, rstd, dweight, rows, cols, accumulate=False):
        """Only dweight; allocates the scratch buffer of partial sums, which the program keeps."""
        for buffer, floats, name in ((x, rows * cols, "x"), (dout, rows * cols, "dout"),
                                     (dweight, cols, "dweight"), (rstd, rows, "rstd")):
            require_floats(buffer, floats, name)
        params = self._params(rows, cols, accumulate=accumulate)
        _, chunks = chunking(rows)
        partials = self.device.create_buffer(4 * chunks * cols, label="rmsnorm partials")
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        column_groups = min(math.ceil(cols / self.WORKGROUP), limit)
        program.dispatch(self._kernels["rmsnorm_weight_partial"],
                         [x, rstd, params, dout, partials], (column_groups, chunks))
        program.dispatch(self._kernels["rmsnorm_weight_finish"], [partials, dweight, params],
                         column_groups)
        return program
