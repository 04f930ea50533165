"""AdamW on the GPU (shaders/adamw.wgsl); NumPy reference: py_engine/ops/adamw.py.

    adamw = await AdamWKernels.load(device)
    hyper = adamw.hyper_buffer()
    adamw.step(program, param, grad, m, v, hyper, scale=metrics, n=N)   # recorded once
    ...
    hyper.write(pack_hyper(lr, step=t, ...))      # before each replay: schedule and step count

param, grad, m, v: flat f32 buffers (m and v start at zero); `scale` is a storage buffer whose
slot `scale_index` holds the gradient factor: the metrics buffer, where the gradient-norm
kernel leaves the clip factor (METRIC_CLIP_SCALE). scale=None uses a buffer holding 1.

Hyper buffer layout (48 bytes, uniform; pack_hyper fills it), f32 unless marked:
    0 step_size = lr / (1 - beta1^t)      4 bias_correction2_sqrt = sqrt(1 - beta2^t)
    8 decay = 1 - lr * weight_decay      12 eps
   16 beta1 (as 1 - (1 - beta1))         20 1 - beta1
   24 beta2                              28 1 - beta2
   32 t (u32, counted from 1)            36..47 zero padding
computed in float64 on the host, as torch does with Python floats.
"""

import math
import struct

from .cross_entropy import METRIC_CLIP_SCALE

SOURCE = "adamw.wgsl"
HYPER_BYTES = 48


def hyper_values(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, step=1):
    """The nine values of the hyper buffer, in order (floats, then the step count)."""
    if step < 1:
        raise ValueError(f"AdamW steps count from 1, got {step}")
    return (
        lr / (1.0 - beta1 ** step),
        math.sqrt(1.0 - beta2 ** step),
        1.0 - lr * weight_decay,
        eps,
        1.0 - (1.0 - beta1),
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        step,
    )


def pack_hyper(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, step=1):
    """The bytes of a hyper buffer for step `step` (torch.optim.AdamW's defaults)."""
    return struct.pack("<8fI12x", *hyper_values(lr, beta1, beta2, eps, weight_decay, step))


class AdamWKernels:
    def __init__(self, device, kernel, workgroup):
        self.device = device
        self._kernel = kernel
        self.workgroup = workgroup
        self._unit_scale = None

    @classmethod
    async def load(cls, device, workgroup=256):
        kernel = await device.kernel(SOURCE, "adamw_step", {"WORKGROUP": workgroup})
        return cls(device, kernel, workgroup)

    def hyper_buffer(self, **hyperparameters):
        """A uniform hyper buffer, filled by pack_hyper(**hyperparameters) (lr defaults to 0)."""
        hyperparameters.setdefault("lr", 0.0)
        return self.device.buffer_from(pack_hyper(**hyperparameters), "uniform", "adamw hyper")

    def step(self, program, param, grad, m, v, hyper, scale=None, n=None, offset=0,
             scale_index=METRIC_CLIP_SCALE):
        """Update elements [offset, offset + n) of param, m, v (n defaults to all of param)."""
        n = param.size // 4 - offset if n is None else n
        needed = 4 * (offset + n)
        for buffer, name in ((param, "param"), (grad, "grad"), (m, "m"), (v, "v")):
            if buffer.size < needed:
                raise ValueError(f"AdamW {name} holds {buffer.size} bytes; {needed} needed")
        if scale is None:
            if self._unit_scale is None:
                one = struct.pack("<f", 1.0)
                self._unit_scale = self.device.buffer_from(one, label="unit scale")
            scale, scale_index = self._unit_scale, 0
        if scale.size < 4 * (scale_index + 1):
            raise ValueError(f"scale buffer has no slot {scale_index}")
        params = self.device.uniform("III", n, offset, scale_index)
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        groups = min(max(1, -(-n // self.workgroup)), limit)
        program.dispatch(self._kernel, [param, grad, m, v, scale, params, hyper], groups)
