"""Losses against a float target per logit on the GPU (shaders/target_loss.wgsl): a multi-label
classifier's binary cross-entropy with logits and a regression head's mean squared error; NumPy
reference: py_engine/ops/target_loss.py.

    tl = await TargetLossKernels.load(device)
    tl.forward(program, logits, targets, metrics, rows=B, classes=C, kind="bce")
    tl.backward(program, logits, targets, metrics, dlogits, rows=B, classes=C, kind="bce")

logits, dlogits: [B, C] f32; targets: [B, C] u32 words (labels.float_words: an f32's bits,
IGNORE_LABEL where not counted). The forward fills the metrics buffer's first four slots as the
cross-entropy does (kernels/cross_entropy.py: loss, correct rows, counted rows, denominator);
the backward reads the denominator there, so record it after the forward.
"""

from ..gpu import require_floats
from ..labels import TARGET_LOSSES
from .cross_entropy import METRIC_LOSS

KINDS = tuple(TARGET_LOSSES.values())     # "bce", "mse": the shader's kind 0 and 1

SOURCE = "target_loss.wgsl"


class TargetLossKernels:
    def __init__(self, device, forward, backward, workgroup):
        self.device = device
        self._forward = forward
        self._backward = backward
        self.workgroup = workgroup

    @classmethod
    async def load(cls, device, workgroup=256):
        """`workgroup`: threads of the forward's single workgroup (a power of two)."""
        constants = {"WORKGROUP": workgroup}
        forward = await device.kernel(SOURCE, "target_loss_forward", constants)
        backward = await device.kernel(SOURCE, "target_loss_backward", constants)
        return cls(device, forward, backward, workgroup)

    def _bindings(self, logits, targets, metrics, rows, classes, kind, dloss, metrics_offset):
        if rows < 1 or classes < 1:
            raise ValueError(f"a target loss needs rows, classes >= 1, got {rows}, {classes}")
        if kind not in KINDS:
            raise ValueError(f"unknown target loss {kind!r}; choose one of {', '.join(KINDS)}")
        require_floats(logits, rows * classes, "logits")
        require_floats(targets, rows * classes, "targets")
        require_floats(metrics, metrics_offset + 4, "metrics")
        params = self.device.uniform("IIIIf", rows, classes, KINDS.index(kind), metrics_offset,
                                     dloss)
        return [logits, targets, metrics, params]

    def forward(self, program, logits, targets, metrics, rows, classes, kind,
                metrics_offset=METRIC_LOSS):
        """Loss, correct rows, counted rows and the denominator into metrics[offset:offset+4]."""
        buffers = self._bindings(logits, targets, metrics, rows, classes, kind, 1.0,
                                 metrics_offset)
        program.dispatch(self._forward, buffers, 1)

    def backward(self, program, logits, targets, metrics, dlogits, rows, classes, kind,
                 dloss=1.0, metrics_offset=METRIC_LOSS):
        """dlogits of dloss * loss; needs the forward's metrics of the same batch."""
        require_floats(dlogits, rows * classes, "dlogits")
        buffers = self._bindings(logits, targets, metrics, rows, classes, kind, dloss,
                                 metrics_offset) + [dlogits]
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        groups = min(-(-(rows * classes) // self.workgroup), limit)
        program.dispatch(self._backward, buffers, groups)
