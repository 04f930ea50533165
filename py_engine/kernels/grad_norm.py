"""Global gradient norm and clip factor on the GPU (shaders/grad_norm.wgsl); NumPy reference:
py_engine/ops/grad_norm.py.

    norm = await GradNormKernels.load(device)
    norm.record(program, [grad_a, (grad_b, n_b), ...], metrics, max_norm=1.0)

writes, as torch.nn.utils.clip_grad_norm_ computes them, the L2 norm of all the gradients to
metrics[METRIC_GRAD_NORM] and min(1, max_norm / (norm + 1e-6)) to metrics[METRIC_CLIP_SCALE],
where AdamW (py_engine/kernels/adamw.py) reads it. max_norm=None: no clipping (scale 1), the
norm is still computed. Each gradient is a buffer (all of it) or (buffer, element count).
"""

import math

from .cross_entropy import METRIC_GRAD_NORM

SOURCE = "grad_norm.wgsl"


class GradNormKernels:
    def __init__(self, device, sum_squares, finish, workgroup, max_partials):
        self.device = device
        self._sum_squares = sum_squares
        self._finish = finish
        self.workgroup = workgroup
        self.max_partials = max_partials

    @classmethod
    async def load(cls, device, workgroup=256, max_partials=64):
        """`max_partials`: workgroups (so partial sums) per gradient buffer at most; each
        workgroup strides over its share of the buffer."""
        constants = {"WORKGROUP": workgroup}
        sum_squares = await device.kernel(SOURCE, "sum_squares", constants)
        finish = await device.kernel(SOURCE, "grad_norm_finish", constants)
        return cls(device, sum_squares, finish, workgroup, max_partials)

    def record(self, program, grads, metrics, max_norm=None, metrics_offset=METRIC_GRAD_NORM):
        """Record one sum_squares dispatch per gradient and the finish; returns the buffer of
        partial sums it allocated (scratch, owned by the program)."""
        if metrics.size < 4 * (metrics_offset + 2):
            raise ValueError(f"metrics has no slots {metrics_offset}, {metrics_offset + 1}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be positive or None, got {max_norm}")
        layout = []
        total = 0
        for grad in grads:
            buffer, count = grad if isinstance(grad, tuple) else (grad, grad.size // 4)
            if buffer.size < 4 * count:
                raise ValueError(f"gradient {buffer!r} holds fewer than {count} floats")
            groups = min(max(1, math.ceil(count / self.workgroup)), self.max_partials)
            layout.append((buffer, count, total, groups))
            total += groups
        partials = self.device.create_buffer(4 * max(total, 1), label="grad norm partials")
        for buffer, count, offset, groups in layout:
            params = self.device.uniform("IIIf", count, offset, 0, 0.0)
            program.dispatch(self._sum_squares, [partials, params, buffer], groups)
        params = self.device.uniform("IIIf", total, 0, metrics_offset, max_norm or 0.0)
        program.dispatch(self._finish, [partials, params, metrics], 1)
        return partials
