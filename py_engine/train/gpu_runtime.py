"""Training and inference of a BertClassifier on the GPU, natively or in the browser.

Per batch shape (B, T) the model is run once through the GPU backend to record a program: the
forward, the loss and the backward for training, the forward alone for inference. A step then
writes the batch's ids, mask and labels into that program's input buffers, replays it with one
submission and reads back one small metrics buffer. The optimizer update (global gradient norm,
clipping, AdamW on every trainable tensor, zeroing the gradients) is one more program.
"""

import math
from array import array

from ..backends.gpu_backend import GpuBackend, Kernels, Tensor
from ..gpu import open_device
from ..kernels.adamw import AdamWKernels, pack_hyper
from ..kernels.cross_entropy import IGNORE_LABEL, create_metrics, decode_metrics
from ..kernels.dropout import pack_step
from ..kernels.grad_norm import GradNormKernels

BASE_DTYPES = ("f32", "f16", "int8", "int4")


def planned_base_bytes(model, shapes, base_dtype, quant_group=64):
    """Bytes the frozen base weights `shapes` ({name: shape}) take on the GPU under
    `base_dtype`, by the rule create() applies (linear weights compressed, the rest f32)."""
    from ..kernels.quantized_linear import weight_bytes

    total = 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        linear = model.is_linear_weight(name)
        if base_dtype in ("int8", "int4") and linear and shape[1] % quant_group == 0:
            total += weight_bytes(n, base_dtype, quant_group)
        elif base_dtype != "f32" and linear:
            total += 2 * n
        else:
            total += 4 * n
    return total


class _Inputs:
    """A program's input buffers for one batch shape, as backend tensors."""

    def __init__(self, be, B, T, labels):
        self.B, self.T = B, T
        self.ids = Tensor(be.device.create_buffer(4 * B * T, label="ids"), (B, T))
        self.type_ids = Tensor(be.device.create_buffer(4 * B * T, label="type ids"), (B, T))
        self.mask = Tensor(be.device.create_buffer(4 * B * T, label="mask"), (B, T))
        self.labels = Tensor(be.device.create_buffer(4 * B, label="labels"), (B,)) if labels else None

    def write(self, batch):
        self.ids.buffer.write(_u32(batch.ids))
        self.type_ids.buffer.write(_u32(batch.type_ids))
        self.mask.buffer.write(_u32(batch.mask))
        if self.labels is not None:
            self.labels.buffer.write(array("I", [IGNORE_LABEL if y is None else y for y in batch.labels]))


def _u32(rows):
    out = array("I")
    for row in rows:
        out.extend(row)
    return out


class GpuRuntime:
    name = "gpu"
    decoder = False     # whether the decoder kernels (RMSNorm, RoPE, causal attention...) load

    def __init__(self, device, kernels, model, be, adamw, grad_norm):
        self.device = device
        self.model = model
        self.be = be
        self.k = kernels
        self.adamw = adamw
        self.grad_norm = grad_norm
        self.metrics = create_metrics(device)
        be.metrics = self.metrics       # the loss kernels and the update share one readback
        self.hyper = adamw.hyper_buffer()
        self.m, self.v = {}, {}
        self._train = {}
        self._infer = {}
        self._update = {}
        self._steps = {}

    @classmethod
    async def create(cls, model, checkpoint, trainable, device=None, base_dtype="f32",
                     matmul_variant=None, quant_group=64):
        """Upload the frozen base weights and the trainable parameters; compile every kernel.

        base_dtype: "f32"; "f16" (the linear weights as packed halves); "int8" or "int4" (the
        linear weights quantized on the GPU in groups of `quant_group` inputs with one f32
        scale each, QLoRA-style; a weight whose inputs do not split into groups is kept f16).
        The math is f32 in every mode."""
        if base_dtype not in BASE_DTYPES:
            raise ValueError(f"base_dtype must be one of {BASE_DTYPES}, got {base_dtype!r}")
        device = device or await open_device()
        quantized = base_dtype in ("int8", "int4")
        kernels = await Kernels.load(device, matmul_variant, decoder=cls.decoder, quantized=quantized)
        be = GpuBackend(device, kernels)
        for name in model.frozen_names():
            shape = checkpoint.shape(name)
            linear = model.is_linear_weight(name)
            if quantized and linear and shape[1] % quant_group == 0:
                source = device.buffer_from(checkpoint.floats(name), label=f"{name} (f32)")
                q = kernels.quantized.allocate(*shape, base_dtype, group_size=quant_group, label=name)
                program = device.program(f"quantize {name}")
                kernels.quantized.quantize(program, source, q)
                await program.run()
                await device.synchronize()
                source.destroy()
                be.params[name] = Tensor(q.packed, shape, quant=q)
            elif base_dtype != "f32" and linear:
                be.params[name] = Tensor(device.buffer_from(checkpoint.f16_bits(name), label=name),
                                         shape, half=True)
            else:
                be.params[name] = Tensor(device.buffer_from(checkpoint.floats(name), label=name), shape)
        runtime = cls(device, kernels, model, be, await AdamWKernels.load(device),
                      await GradNormKernels.load(device))
        runtime.base_dtype = base_dtype
        for name, (shape, values) in trainable.items():
            be.params[name] = Tensor(device.buffer_from(array("f", values), label=name), shape)
            runtime._add_optimizer_state(name, shape)
        return runtime

    def base_weight_bytes(self):
        """GPU bytes of the frozen base weights as stored (packed values and scales)."""
        total = 0
        for name in self.model.frozen_names():
            t = self.be.params[name]
            total += t.quant.nbytes if t.quant is not None else t.buffer.size
        return total

    def _add_optimizer_state(self, name, shape):
        """A gradient and AdamW's two moments, zeroed, for a parameter that trains."""
        be = self.be
        be.grads[name] = be.new(*shape, label=f"grad {name}")
        self.m[name] = be.new(*shape, label=f"m {name}")
        self.v[name] = be.new(*shape, label=f"v {name}")

    # --- programs ---

    def _record_train(self, program, B, T, loss_scale, class_weights, label_smoothing):
        """Forward, loss and backward of a (B, T) batch into `program`; returns its inputs."""
        be, model = self.be, self.model
        be.record(program)
        inputs = _Inputs(be, B, T, labels=True)
        logits, saved = model.forward(be, inputs, train=True)
        weights = None if not class_weights else self.device.buffer_from(array("f", class_weights))
        ce = self.k.cross_entropy
        predictions = self.device.create_buffer(4 * B, label="predictions")
        shape = dict(rows=B, classes=model.num_labels, weights=weights, label_smoothing=label_smoothing)
        ce.forward(program, logits.buffer, inputs.labels.buffer, self.metrics, predictions, **shape)
        dlogits = be.new(B, model.num_labels)
        ce.backward(program, logits.buffer, inputs.labels.buffer, self.metrics, dlogits.buffer,
                    dloss=loss_scale, **shape)
        model.backward(be, dlogits, saved, inputs)
        return inputs

    def _record_update(self, program, max_norm):
        """Global gradient norm and clip factor, AdamW on every trainable tensor, zeroed grads."""
        names = list(self.model.trainable)
        self.grad_norm.record(program, [self.be.grads[n].buffer for n in names], self.metrics,
                              max_norm=max_norm)
        for n in names:
            self.adamw.step(program, self.be.params[n].buffer, self.be.grads[n].buffer,
                            self.m[n].buffer, self.v[n].buffer, self.hyper, scale=self.metrics)
        for n in names:
            self.k.embedding.clear(program, self.be.grads[n].buffer, self.be.grads[n].size)

    def _train_program(self, B, T, loss_scale, class_weights, label_smoothing):
        key = (B, T, loss_scale, tuple(class_weights or ()), label_smoothing)
        if key not in self._train:
            program = self.device.program(f"train {B}x{T}")
            inputs = self._record_train(program, *key[:2], loss_scale, class_weights, label_smoothing)
            program.read(self.metrics)
            self._train[key] = (program, inputs)
        return self._train[key]

    def _step_program(self, B, T, class_weights, label_smoothing, max_norm):
        """A whole optimizer step (grad_accum 1): one submission, one read of the metrics."""
        key = (B, T, tuple(class_weights or ()), label_smoothing, max_norm)
        if key not in self._steps:
            program = self.device.program(f"step {B}x{T}")
            inputs = self._record_train(program, B, T, 1.0, class_weights, label_smoothing)
            self._record_update(program, max_norm)
            program.read(self.metrics)
            self._steps[key] = (program, inputs)
        return self._steps[key]

    def _infer_program(self, B, T):
        key = (B, T, self.model.merged)
        if key not in self._infer:
            program = self.device.program(f"infer {B}x{T}")
            self.be.record(program)
            inputs = _Inputs(self.be, B, T, labels=False)
            logits, _ = self.model.forward(self.be, inputs, train=False)
            program.read(logits.buffer)
            self._infer[key] = (program, inputs)
        return self._infer[key]

    def _update_program(self, max_norm):
        if max_norm not in self._update:
            program = self.device.program("update")
            self._record_update(program, max_norm)
            program.read(self.metrics)
            self._update[max_norm] = program
        return self._update[max_norm]

    # --- the runtime interface (shared with NumpyRuntime) ---

    async def accumulate(self, batch, seed=0, loss_scale=1.0, class_weights=None, label_smoothing=0.0):
        program, inputs = self._train_program(batch.B, batch.T, loss_scale, class_weights, label_smoothing)
        inputs.write(batch)
        self.be.step.write(pack_step(seed, 0))
        (metrics,) = await program.run()
        m = decode_metrics(metrics)
        return m["loss"], int(m["correct"])

    async def update(self, lr, step, max_norm=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.hyper.write(pack_hyper(lr, beta1, beta2, eps, weight_decay, step))
        (metrics,) = await self._update_program(max_norm).run()
        return decode_metrics(metrics)["grad_norm"]

    async def train_step(self, batch, seed, lr, step, max_norm=None, weight_decay=0.0,
                         class_weights=None, label_smoothing=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        """accumulate() then update() as one submission with one readback; returns
        (loss, correct, grad_norm)."""
        program, inputs = self._step_program(batch.B, batch.T, class_weights, label_smoothing, max_norm)
        inputs.write(batch)
        self.be.step.write(pack_step(seed, 0))
        self.hyper.write(pack_hyper(lr, beta1, beta2, eps, weight_decay, step))
        (metrics,) = await program.run()
        m = decode_metrics(metrics)
        return m["loss"], int(m["correct"]), m["grad_norm"]

    async def logits(self, batch):
        program, inputs = self._infer_program(batch.B, batch.T)
        inputs.write(batch)
        (data,) = await program.run()
        values = array("f", bytes(data))
        C = self.model.num_labels
        return [list(values[i * C:(i + 1) * C]) for i in range(batch.B)]

    async def probabilities(self, batch):
        out = []
        for row in await self.logits(batch):
            top = max(row)
            e = [math.exp(z - top) for z in row]
            total = sum(e)
            out.append([x / total for x in e])
        return out

    async def merge(self):
        """Fold each LoRA update into a copy of its base weight for inference:
        W + scaling * B . A, one GEMM on the GPU (the base weight is kept for training)."""
        program = self.device.program("merge")
        for merged, w, a, b in self.model.merge_names():
            base = self.be.params[w]
            if base.half:
                raise ValueError("merging LoRA needs f32 base weights; load with base_dtype='f32'")
            out_f, in_f = base.shape
            if merged not in self.be.params:
                self.be.params[merged] = self.be.new(out_f, in_f, label=merged)
            target = self.be.params[merged]
            program.copy(base.buffer, target.buffer)
            self.k.matmul.gemm(program, self.be.params[b].buffer, self.be.params[a].buffer,
                               target.buffer, out_f, in_f, self.model.lora.r,
                               alpha=self.model.lora.scaling, beta=1.0)
        await program.run()
        await self.device.synchronize()
        self.model.merged = True

    async def trainable_values(self):
        """{name: (shape, array('f'))} of the current trainable parameters."""
        return {n: (shape, array("f", bytes(await self.device.read(self.be.params[n].buffer))))
                for n, shape in self.model.trainable.items()}

    async def gradients(self):
        """{name: array('f')} of the accumulated gradients (for checks)."""
        return {n: array("f", bytes(await self.device.read(self.be.grads[n].buffer)))
                for n in self.model.trainable}
