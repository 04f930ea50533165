"""Softmax cross-entropy on the GPU (shaders/cross_entropy.wgsl), and the per-step metrics
buffer; NumPy reference: py_engine/ops/cross_entropy.py.

    ce = await CrossEntropyKernels.load(device)
    metrics = create_metrics(device)
    ce.forward(program, logits, labels, metrics, predictions, rows=B, classes=C,
               weights=None, label_smoothing=0.0)
    ce.backward(program, logits, labels, metrics, dlogits, rows=B, classes=C,
                weights=None, label_smoothing=0.0)
    program.read(metrics)                  # loss, accuracy and grad norm in one read
    ...
    values = decode_metrics(result)        # {"loss": ..., "correct": ..., ...}

logits, dlogits: [B, C] f32; labels, predictions: [B] u32 (IGNORE_LABEL marks a padded row);
weights: [C] f32 or None. The backward reads the loss denominator the forward left in the
metrics buffer, so record it after the forward.

The metrics buffer: 8 f32 slots at fixed offsets, written on the GPU during the step:

    slot  name         written by                what
    0     loss         cross_entropy_forward     mean loss (torch's weighted mean)
    1     correct      cross_entropy_forward     counted rows whose argmax equals the label
    2     counted      cross_entropy_forward     rows not ignored
    3     weight_sum   cross_entropy_forward     the loss denominator D (= counted unweighted)
    4     grad_norm    grad_norm_finish          global L2 norm of the gradients, unclipped
    5     clip_scale   grad_norm_finish          min(1, max_norm / (norm + 1e-6)); AdamW reads it
    6, 7  reserved     -                         0

create_metrics() starts clip_scale at 1, so AdamW runs unclipped when no norm is recorded.
Counts are stored as f32 (exact below 2^24).
"""

import struct

from ..gpu import require_floats
from ..labels import IGNORE_LABEL

SOURCE = "cross_entropy.wgsl"

METRIC_LOSS = 0
METRIC_CORRECT = 1
METRIC_COUNTED = 2
METRIC_WEIGHT_SUM = 3
METRIC_GRAD_NORM = 4
METRIC_CLIP_SCALE = 5
METRIC_SLOTS = 8
METRICS_BYTES = 4 * METRIC_SLOTS
METRIC_NAMES = ("loss", "correct", "counted", "weight_sum", "grad_norm", "clip_scale")


def create_metrics(device, label="metrics"):
    """A metrics buffer: zeros, with clip_scale 1."""
    initial = [0.0] * METRIC_SLOTS
    initial[METRIC_CLIP_SCALE] = 1.0
    return device.buffer_from(struct.pack(f"<{METRIC_SLOTS}f", *initial), label=label)


def decode_metrics(data):
    """The named values of a metrics buffer read back (bytes or memoryview)."""
    values = struct.unpack_from(f"<{len(METRIC_NAMES)}f", bytes(data))
    out = dict(zip(METRIC_NAMES, values))
    out["accuracy"] = out["correct"] / out["counted"] if out["counted"] else 0.0
    return out


class CrossEntropyKernels:
    def __init__(self, device, forward, backward, workgroup):
        self.device = device
        self._forward = forward
        self._backward = backward
        self.workgroup = workgroup
        self._no_weights = None

    @classmethod
    async def load(cls, device, workgroup=256):
        """`workgroup`: threads of the forward's single workgroup (a power of two)."""
        constants = {"WORKGROUP": workgroup}
        forward = await device.kernel(SOURCE, "cross_entropy_forward", constants)
        backward = await device.kernel(SOURCE, "cross_entropy_backward", constants)
        return cls(device, forward, backward, workgroup)

    def _bindings(self, logits, labels, weights, metrics, out, rows, classes, smoothing, dloss,
                  metrics_offset):
        if rows < 1 or classes < 1:
            raise ValueError(f"cross-entropy needs rows, classes >= 1, got {rows}, {classes}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {smoothing}")
        require_floats(logits, rows * classes, "logits")
        require_floats(labels, rows, "labels")
        require_floats(metrics, metrics_offset + 4, "metrics")
        if weights is not None:
            require_floats(weights, classes, "weights")
        elif self._no_weights is None:
            self._no_weights = self.device.create_buffer(4, label="no class weights")
        params = self.device.uniform("IIIIff", rows, classes, int(weights is not None),
                                     metrics_offset, smoothing, dloss)
        return [logits, labels, weights or self._no_weights, metrics, out, params]

    def forward(self, program, logits, labels, metrics, predictions, rows, classes, weights=None,
                label_smoothing=0.0, metrics_offset=METRIC_LOSS):
        """Loss, correct count, counted rows and the denominator into metrics[offset:offset+4];
        each row's argmax into predictions."""
        require_floats(predictions, rows, "predictions")
        buffers = self._bindings(logits, labels, weights, metrics, predictions, rows, classes,
                                 label_smoothing, 1.0, metrics_offset)
        program.dispatch(self._forward, buffers, 1)

    def backward(self, program, logits, labels, metrics, dlogits, rows, classes, weights=None,
                 label_smoothing=0.0, dloss=1.0, metrics_offset=METRIC_LOSS):
        """dlogits of dloss * loss; needs the forward's metrics of the same batch."""
        require_floats(dlogits, rows * classes, "dlogits")
        buffers = self._bindings(logits, labels, weights, metrics, dlogits, rows, classes,
                                 label_smoothing, dloss, metrics_offset)
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        groups = min(-(-rows // self.workgroup), limit)
        program.dispatch(self._backward, buffers, groups)
