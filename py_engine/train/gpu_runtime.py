"""A model and a task on the GPU, natively or in the browser: training, evaluation, generation.

Per batch shape (B, T) the model is run once through the GPU backend to record a program: the
forward, the task's loss and the backward for training (with the optimizer update appended for
a fused step), the forward alone for inference. A step then writes the batch's ids, mask and
labels into that program's input buffers, replays it with one submission and reads back one
small metrics buffer. The optimizer update (global gradient norm, clipping, AdamW on every
trainable tensor, zeroing the gradients) is also a program of its own, for accumulation.
No NumPy: this runs in the browser.
"""

import math
from array import array

from ..backends.gpu_backend import BASE_DTYPES, GpuBackend, Kernels, Tensor, storage_of
from ..gpu import Variable, open_device
from ..kernels.adamw import pack_hyper
from ..kernels.cross_entropy import decode_metrics
from ..kernels.dropout import pack_step
from ..labels import IGNORE_LABEL
from .runtime import Runtime, check_foldable, check_lora_biases_fold, check_trainable

def _u32(rows):
    out = array("I")
    for row in rows:
        out.extend(row)
    return out


def _source_length(batch):
    """An encoder-decoder batch's input length (Seq2SeqBatch.S); None for other batches."""
    return getattr(batch, "S", None)


class Inputs:
    """A program's input buffers for one batch shape, as backend tensors: the task's fields
    ([B, T] u32 each; an encoder-decoder task's source_fields [B, S]) and its labels (u32,
    IGNORE_LABEL where not counted)."""

    def __init__(self, device, task, B, T, S=None):
        self.B, self.T, self.position = B, T, 0
        self.fields = task.inputs
        self.loss_scale = None     # a Variable in accumulate programs
        source = getattr(task, "source_fields", ())
        for name in self.fields:
            n = S if name in source else T
            setattr(self, name, Tensor(device.create_buffer(4 * B * n, label=name), (B, n)))
        shape = task.label_shape(B, T)
        self.labels = Tensor(device.create_buffer(4 * math.prod(shape), label="labels"), shape)

    def buffers(self):
        return [getattr(self, name).buffer for name in self.fields] + [self.labels.buffer]

    def write(self, batch):
        for name in self.fields:
            getattr(self, name).buffer.write(_u32(getattr(batch, name)))
        if batch.labels is not None:
            self.labels.buffer.write(array("I", [IGNORE_LABEL if y is None or y < 0 else y
                                                 for y in batch.labels]))


class GpuRuntime(Runtime):
    name = "gpu"

    def __init__(self, device, kernels, model, task, be):
        super().__init__(model, task)
        self.device = device
        self.k = kernels
        self.be = be
        self.metrics = be.metrics
        self.hyper = kernels.adamw.hyper_buffer()
        self.base_dtype = "f32"
        self.m, self.v = {}, {}
        self._programs = {}

    @classmethod
    async def create(cls, model, task, checkpoint, trainable, device=None, base_dtype="f32",
                     matmul_variant=None, quant_group=64, frozen=None):
        """Upload the frozen base weights and the trainable parameters; compile every kernel.

        base_dtype: "f32"; "f16" (the linear weights as packed halves); "int8" or "int4" (the
        linear weights quantized on the GPU in groups of `quant_group` inputs with one f32
        scale each, QLoRA-style; a weight whose inputs do not split into groups is kept f16).
        The math is f32 in every mode. DoRA-wrapped linears keep f32 weights in every mode (the
        norms of their rows are taken with the update added to a copy). `frozen`: {name:
        Tensor} of frozen weights already on the device, kept as this model stores them
        (rebuilt())."""
        if base_dtype not in BASE_DTYPES:
            raise ValueError(f"base_dtype must be one of {BASE_DTYPES}, got {base_dtype!r}")
        check_trainable(model, trainable)
        device = device or await open_device()
        quantized = base_dtype in ("int8", "int4")
        kernels = await Kernels.load(device, matmul_variant, decoder=model.decoder_kernels, quantized=quantized,
                                     head_dim=getattr(model.config, "head_dim", None),
                                     relative=model.relative_kernels, columns=model.embedding_adapted)
        be = GpuBackend(device, kernels)
        for name in model.frozen_names():
            if frozen and name in frozen:
                be.params[name] = frozen[name]
                continue
            await be.upload(name, checkpoint, storage_of(checkpoint.shape(name),
                                                         model.is_linear_weight(name), base_dtype,
                                                         quant_group), quant_group)
        runtime = cls(device, kernels, model, task, be)
        runtime.base_dtype, runtime.quant_group = base_dtype, quant_group
        runtime.checkpoint, runtime.matmul_variant = checkpoint, matmul_variant
        for name, (shape, values) in trainable.items():
            be.params[name] = Tensor(device.buffer_from(array("f", values), label=name), shape)
            runtime._add_optimizer_state(name, shape)
        return runtime

    async def rebuilt(self, model, trainable, task=None):
        return await type(self).create(model, task or self.task, self.checkpoint, trainable,
                                       device=self.device, base_dtype=self.base_dtype,
                                       matmul_variant=self.matmul_variant,
                                       quant_group=self.quant_group,
                                       frozen=self.shared_frozen(model))

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

    def _record_update(self, program, max_norm):
        """Global gradient norm and clip factor, AdamW on every trainable tensor, zeroed grads."""
        names = list(self.model.trainable)
        grads = [self.be.grads[n].buffer for n in names]
        self.k.grad_norm.record(program, grads, self.metrics, max_norm=max_norm)
        for n in names:
            self.k.adamw.step(program, self.be.params[n].buffer, self.be.grads[n].buffer,
                              self.m[n].buffer, self.v[n].buffer, self.hyper, scale=self.metrics)
        for n in names:
            self.k.embedding.clear(program, self.be.grads[n].buffer, self.be.grads[n].size)

    def _program(self, kind, B=0, T=0, max_norm=None, S=None):
        """The recorded program of `kind` for a batch shape (S: an encoder-decoder batch's
        input length), made on first use.
        kinds: accumulate (its loss scale a Variable set per replay: one program serves every
        micro-batch weight), step (accumulate + update), update, evaluate, outputs."""
        key = (kind, B, T, max_norm, self.model.merged, S)
        if key in self._programs:
            return self._programs[key][:2]
        program = self.device.program(f"{kind} {B}x{T}")
        self.be.record(program)
        inputs = None
        if kind != "update":
            inputs = Inputs(self.device, self.task, B, T, S)
        if kind in ("accumulate", "step", "evaluate"):
            loss_scale = 1.0
            if kind == "accumulate":
                loss_scale = inputs.loss_scale = Variable(1.0, "f", "loss scale")
            self.task.loss(self.be, self.model, inputs, kind != "evaluate", loss_scale)
        if kind in ("step", "update"):
            self._record_update(program, max_norm)
        if kind == "outputs":
            program.read(self.task.outputs(self.be, self.model, inputs).buffer)
        else:
            program.read(self.metrics)
        buffers = self.be.finish() + (inputs.buffers() if inputs is not None else [])
        self._programs[key] = (program, inputs, buffers)
        return program, inputs

    def recorded_bytes(self):
        """Bytes of the buffers the recorded programs hold: activations and their gradients,
        and the batches' inputs (what gradient checkpointing makes smaller)."""
        return sum(b.size for _, _, buffers in self._programs.values() for b in buffers)

    def forget_programs(self):
        """Release every recorded program and the buffers recorded for it."""
        for program, _, buffers in self._programs.values():
            program.release()
            for buffer in buffers:
                buffer.destroy()
        self._programs.clear()

    def _write_hyper(self, lr, weight_decay, beta1, beta2, eps):
        self.optimizer_step += 1
        self.hyper.write(pack_hyper(lr, beta1, beta2, eps, weight_decay, self.optimizer_step))

    # --- training ---

    async def accumulate(self, batch, seed=0, loss_scale=1.0):
        program, inputs = self._program("accumulate", batch.B, batch.T, S=_source_length(batch))
        inputs.write(batch)
        inputs.loss_scale.set(loss_scale)
        self.be.step.write(pack_step(seed, 0))
        (metrics,) = await program.run()
        return decode_metrics(metrics)

    async def update(self, lr, max_norm=None, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        self._write_hyper(lr, weight_decay, beta1, beta2, eps)
        program, _ = self._program("update", max_norm=max_norm)
        (metrics,) = await program.run()
        return decode_metrics(metrics)["grad_norm"]

    async def train_step(self, batch, seed, lr, max_norm=None, weight_decay=0.0, beta1=0.9,
                         beta2=0.999, eps=1e-8):
        """accumulate() then update() as one submission with one readback."""
        program, inputs = self._program("step", batch.B, batch.T, max_norm=max_norm,
                                        S=_source_length(batch))
        inputs.write(batch)
        self.be.step.write(pack_step(seed, 0))
        self._write_hyper(lr, weight_decay, beta1, beta2, eps)
        (metrics,) = await program.run()
        return decode_metrics(metrics)

    async def evaluate(self, batch):
        program, inputs = self._program("evaluate", batch.B, batch.T, S=_source_length(batch))
        inputs.write(batch)
        (metrics,) = await program.run()
        return decode_metrics(metrics)

    async def outputs(self, batch):
        program, inputs = self._program("outputs", batch.B, batch.T, S=_source_length(batch))
        inputs.write(batch)
        (data,) = await program.run()
        values = array("f", bytes(data))
        width = len(values) // batch.B
        return [list(values[i * width:(i + 1) * width]) for i in range(batch.B)]

    # --- tensors ---

    async def _read(self, tensor):
        return array("f", bytes(await self.device.read(tensor.buffer)))

    async def trainable_values(self):
        """{name: (shape, array('f'))} of the current trainable parameters."""
        return {n: (shape, await self._read(self.be.params[n]))
                for n, shape in self.model.trainable.items()}

    async def load_trainable(self, values):
        check_trainable(self.model, values)
        for name, (_, data) in values.items():
            self.be.params[name].buffer.write(array("f", data))

    async def gradients(self):
        """{name: array('f')} of the accumulated gradients (for checks)."""
        return {n: await self._read(self.be.grads[n]) for n in self.model.trainable}

    async def optimizer_state(self):
        return {"step": self.optimizer_step,
                "m": {n: await self._read(self.m[n]) for n in self.model.trainable},
                "v": {n: await self._read(self.v[n]) for n in self.model.trainable}}

    async def load_optimizer_state(self, state):
        self._check_optimizer_state(state)
        for table, key in ((self.m, "m"), (self.v, "v")):
            for name, data in state[key].items():
                table[name].buffer.write(array("f", data))
        self.optimizer_step = int(state["step"])

    async def reset_optimizer(self):
        """AdamW from scratch: zero moments, step count 0 (the weights stay)."""
        program = self.device.program("reset optimizer")
        for name in self.model.trainable:
            for table in (self.m, self.v):
                self.k.embedding.clear(program, table[name].buffer, table[name].size)
        await program.run()
        self.optimizer_step = 0

    async def _copy(self, pairs, label):
        program = self.device.program(label)
        for src, dst in pairs:
            program.copy(src.buffer, dst.buffer)
        await program.run()
        await self.device.synchronize()

    async def snapshot(self):
        """Copies, on the GPU (no readback), of every trainable tensor and its moments."""
        saved, pairs = {}, []
        for name in self.model.trainable:
            tensors = (self.be.params[name], self.m[name], self.v[name])
            copies = tuple(self.be.new(*t.shape, label=f"snapshot {name}") for t in tensors)
            saved[name] = copies
            pairs += zip(tensors, copies)
        await self._copy(pairs, "snapshot")
        return {"step": self.optimizer_step, "tensors": saved}

    async def restore(self, snapshot):
        if set(snapshot["tensors"]) != set(self.model.trainable):
            raise ValueError("the snapshot was taken with other trainable tensors")
        pairs = []
        for name, copies in snapshot["tensors"].items():
            pairs += zip(copies, (self.be.params[name], self.m[name], self.v[name]))
        await self._copy(pairs, "restore")
        program = self.device.program("zero grads")
        for name in self.model.trainable:
            self.k.embedding.clear(program, self.be.grads[name].buffer, self.be.grads[name].size)
        await program.run()
        self.optimizer_step = snapshot["step"]

    async def snapshot_values(self, snapshot):
        """{"step", "tensors": {name: (shape, weights, m, v)}} of a snapshot, read back."""
        tensors = {}
        for name, copies in snapshot["tensors"].items():
            tensors[name] = (self.model.trainable[name],) + tuple([await self._read(t) for t in copies])
        return {"step": snapshot["step"], "tensors": tensors}

    async def snapshot_from(self, values):
        """A snapshot handle holding snapshot_values()' values (put on the device)."""
        if set(values["tensors"]) != set(self.model.trainable):
            raise ValueError("the snapshot was taken with other trainable tensors")
        saved = {}
        for name, (shape, *arrays) in values["tensors"].items():
            saved[name] = tuple(Tensor(self.device.buffer_from(array("f", data),
                                                               label=f"snapshot {name}"), shape)
                                for data in arrays)
        return {"step": int(values["step"]), "tensors": saved}

    def release(self, snapshot):
        for copies in snapshot["tensors"].values():
            for t in copies:
                t.buffer.destroy()
        snapshot["tensors"].clear()

    def _require_f32_base(self, what):
        if any(self.be.params[w].half or self.be.params[w].quant is not None
               for _, w, *_ in self.model.merge_names()):
            raise ValueError(f"{what} needs f32 base weights; load with base_dtype='f32'")

    async def merge(self):
        """Fold each LoRA update into a copy of its base weight for inference:
        W + scaling * B . A, one GEMM on the GPU (the base weight is kept for training)."""
        self._require_f32_base("merging LoRA")
        program = self.device.program("merge")
        scratch = []
        for m in self.model.merge_names():
            base = self.be.params[m.weight]
            out_f, in_f = base.shape
            if m.merged not in self.be.params:
                self.be.params[m.merged] = self.be.new(out_f, in_f, label=m.merged)
            self._record_merge(program, m, self.be.params[m.merged], scratch)
        await program.run()
        await self.device.synchronize()
        for buffer in scratch:
            buffer.destroy()
        self.model.merged = True

    def _record_merge(self, program, m, target, scratch):
        """Record Merge `m`'s weight into `target` (W's own tensor: in place): W + scaling * B . A
        (a copy, then one GEMM), with DoRA each row then scaled to magnitude / its norm (the
        buffers that takes are added to `scratch`, for the caller to free after the run)."""
        p, dora = self.be.params, self.k.dora
        out_f, in_f = p[m.weight].shape
        if m.transposed:        # an embedding's: E + s A^T B^T, A^T made first
            a_t = self.device.create_buffer(4 * out_f * m.rank, label=f"{m.merged} A^T")
            scratch.append(a_t)
            self.k.columns.transpose(program, p[m.lora_a].buffer, a_t, m.rank, out_f)
            if target is not p[m.weight]:
                program.copy(p[m.weight].buffer, target.buffer)
            self.k.matmul.gemm(program, a_t, p[m.lora_b].buffer, target.buffer, out_f, in_f,
                               m.rank, trans_b=True, alpha=m.scaling, beta=1.0)
            return
        dora.adapted_weight(program, self.k.matmul, p[m.weight].buffer, p[m.lora_a].buffer,
                            p[m.lora_b].buffer, target.buffer, out_f, in_f, m.rank, m.scaling)
        if m.magnitude is not None:
            norm, scale = (self.device.create_buffer(4 * out_f, label=f"{m.merged} {what}")
                           for what in ("norms", "scale"))
            scratch += [norm, scale]
            dora.weight_norm(program, target.buffer, p[m.magnitude].buffer, norm, scale, out_f, in_f)
            dora.scale_rows(program, scale, target.buffer, out_f, in_f)

    def _record_merged_bias(self, program, m, target, scratch):
        """Record Merge `m`'s bias with lora_bias, the base bias + scaling * b_B, into `target`
        (the base bias's own tensor: in place, through a scratch buffer)."""
        p = self.be.params
        size = p[m.bias].size
        out = target.buffer
        if target is p[m.bias]:         # a kernel cannot read and write one buffer
            out = self.device.create_buffer(4 * size, label=f"{m.bias_target} merged")
            scratch.append(out)
        self.k.elementwise.scaled_add(program, p[m.lora_bias].buffer, p[m.bias].buffer, out,
                                      size, m.scaling)
        if out is not target.buffer:
            program.copy(out, target.buffer)

    async def merged_weights(self):
        """{base weight name: (shape, array('f'))} of each LoRA-wrapped linear with its update
        folded in, as merge() computes it on the GPU, read back (for exports); with lora_bias
        its bias's name too, the base bias + scaling * b_B."""
        check_lora_biases_fold(self.model, "the merged model")
        await self.merge()
        p = self.be.params
        out = {w: (p[merged].shape, await self._read(p[merged]))
               for merged, w, *_ in self.model.merge_names()}
        biased = [m for m in self.model.merge_names() + self.model.table_merge_names()
                  if m.lora_bias is not None]
        if biased:
            program, scratch = self.device.program("merge biases"), []
            merged = {m.bias_target: self.be.new(*p[m.bias].shape, label=m.bias_target)
                      for m in biased}
            for m in biased:
                self._record_merged_bias(program, m, merged[m.bias_target], scratch)
            await program.run()
            for name, tensor in merged.items():
                out[name] = (tensor.shape, await self._read(tensor))
                tensor.buffer.destroy()
            for buffer in scratch:
                buffer.destroy()
        for m in self.model.table_merge_names():      # made here alone: inference needs none
            if p[m.weight].half or p[m.weight].quant is not None:
                raise ValueError("merging a LoRA on the output layer needs its f32 weights; "
                                 "load with base_dtype='f32'")
            program, scratch = self.device.program("merge table"), []
            shape = p[m.weight].shape
            merged = self.be.new(*shape, label=m.merged)
            scratch.append(merged.buffer)
            self._record_merge(program, m, merged, scratch)
            await program.run()
            out[m.target] = (shape, await self._read(merged))
            for buffer in scratch:
                buffer.destroy()
        return out

    async def to_full(self):
        """Switch from LoRA to full fine-tuning: W += scaling * B.A in place, the LoRA tensors
        and their optimizer state dropped, every weight given a gradient and fresh moments."""
        model, be = self.model, self.be
        if model.full:
            return
        if any(t.half or t.quant is not None for t in be.params.values()):
            raise ValueError("full fine-tuning needs f32 base weights; load with base_dtype='f32'")
        check_foldable(model)
        program = self.device.program("fold LoRA")
        scratch = []
        for m in model.merge_names() + model.table_merge_names():
            self._record_merge(program, m, be.params[m.weight], scratch)    # in place
            if m.lora_bias is not None:
                self._record_merged_bias(program, m, be.params[m.bias], scratch)
        await program.run()
        await self.device.synchronize()
        for buffer in scratch:
            buffer.destroy()
        kept = model.kept_names()     # what trained beside the adapter is the model's now
        for name in list(model.trainable):
            for table in (be.grads, self.m, self.v):
                table.pop(name).buffer.destroy()
            value = be.params.pop(name)
            if name in kept:
                be.params[kept[name]] = value
            else:
                value.buffer.destroy()
        for name in [n for n in be.params if n.endswith(".merged.weight")]:
            be.params.pop(name).buffer.destroy()
        self.model = model.to_full()
        for name, shape in self.model.trainable.items():
            self._add_optimizer_state(name, shape)
        self.forget_programs()
        self.optimizer_step = 0
        self.version += 1

    # --- generation ---

    def decoder(self, max_length=None):
        from ..generate.decoder import GpuDecoder

        if getattr(self.model, "encoder_decoder", False):
            from ..generate.seq2seq import GpuSeq2SeqDecoder

            return GpuSeq2SeqDecoder(self.model, self.be, max_length)
        return GpuDecoder(self.model, self.be, max_length)
