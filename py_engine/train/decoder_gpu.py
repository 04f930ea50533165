"""Training and scoring of a Llama-family decoder on the GPU, natively or in the browser.

As for the classifier (gpu_runtime.py): per batch shape (B, T) the model is recorded once into
a program (forward, chunked LM-head loss, backward, and for a fused step the optimizer update);
a step writes ids, mask and shifted labels into the program's input buffers, replays it with
one submission and reads back the 32-byte metrics buffer (loss, correct and counted tokens,
gradient norm).

Full fine-tuning and the hybrid mode's switch from LoRA to full (`to_full`) need f32 base
weights: the LoRA update is folded into them in place with one GEMM each.
"""

from array import array

from ..backends.gpu_backend import Tensor
from ..kernels.cross_entropy import IGNORE_LABEL, decode_metrics
from ..kernels.dropout import pack_step
from ..kernels.adamw import pack_hyper
from .gpu_runtime import GpuRuntime, _u32


class DecoderInputs:
    """A program's input buffers for one (B, T): ids, attention mask, shifted labels."""

    def __init__(self, device, B, T):
        self.B, self.T = B, T
        self.ids = Tensor(device.create_buffer(4 * B * T, label="ids"), (B, T))
        self.mask = Tensor(device.create_buffer(4 * B * T, label="mask"), (B, T))
        self.labels = Tensor(device.create_buffer(4 * B * T, label="labels"), (B * T,))

    def write(self, batch):
        self.ids.buffer.write(_u32(batch.ids))
        self.mask.buffer.write(_u32(batch.mask))
        self.labels.buffer.write(array("I", [IGNORE_LABEL if y < 0 else y for y in batch.labels]))


class DecoderGpuRuntime(GpuRuntime):
    decoder = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tables = {}
        self._score = {}

    def _rope(self, T):
        if T not in self._tables:
            c = self.model.config
            cos, sin = self.k.rope.tables(c.head_dim, T, c.rope_parameters)
            self._tables[T] = (cos, sin, T)
        return self._tables[T]

    def _record_train(self, program, B, T, loss_scale, class_weights=None, label_smoothing=0.0):
        be, model = self.be, self.model
        be.record(program)
        inputs = DecoderInputs(self.device, B, T)
        tables = self._rope(T)
        hidden, saved = model.hidden(be, inputs, tables, train=True)
        _, dh = be.lm_head_loss(hidden, be.param(model.head_name), inputs.labels,
                                loss_scale=loss_scale, dweight=model.head_grad(be))
        model.backward(be, dh, saved, tables)
        return inputs

    def _score_program(self, B, T):
        key = (B, T, self.model.merged)
        if key not in self._score:
            program = self.device.program(f"score {B}x{T}")
            self.be.record(program)
            inputs = DecoderInputs(self.device, B, T)
            hidden, _ = self.model.hidden(self.be, inputs, self._rope(T), train=False)
            self.be.lm_head_scores(hidden, self.be.param(self.model.head_name), inputs.labels)
            program.read(self.metrics)
            self._score[key] = (program, inputs)
        return self._score[key]

    def _forget_programs(self):
        self._train.clear()
        self._steps.clear()
        self._update.clear()
        self._score.clear()
        self._infer.clear()

    # --- the runtime interface (shared with DecoderNumpyRuntime) ---

    async def accumulate(self, batch, seed=0, loss_scale=1.0, **_):
        """Forward and backward of one (micro-)batch; returns (mean loss, counted tokens)."""
        program, inputs = self._train_program(batch.B, batch.T, loss_scale, None, 0.0)
        inputs.write(batch)
        self.be.step.write(pack_step(seed, 0))
        (metrics,) = await program.run()
        m = decode_metrics(metrics)
        return m["loss"], int(m["counted"])

    async def train_step(self, batch, seed, lr, step, max_norm=None, weight_decay=0.0,
                         beta1=0.9, beta2=0.999, eps=1e-8, **_):
        """accumulate() and update() as one submission; (loss, counted tokens, grad norm)."""
        program, inputs = self._step_program(batch.B, batch.T, None, 0.0, max_norm)
        inputs.write(batch)
        self.be.step.write(pack_step(seed, 0))
        self.hyper.write(pack_hyper(lr, beta1, beta2, eps, weight_decay, step))
        (metrics,) = await program.run()
        m = decode_metrics(metrics)
        return m["loss"], int(m["counted"]), m["grad_norm"]

    async def score(self, batch):
        """(sum of token losses, counted tokens) of a batch, without training."""
        program, inputs = self._score_program(batch.B, batch.T)
        inputs.write(batch)
        (metrics,) = await program.run()
        m = decode_metrics(metrics)
        return m["loss"] * m["counted"], int(m["counted"])

    async def merge(self):
        """Fold the LoRA updates into f32 copies of their base weights (for inference)."""
        for _, w, _, _ in self.model.merge_names():
            if self.be.params[w].half or self.be.params[w].quant is not None:
                raise ValueError("merging LoRA needs f32 base weights; load with base_dtype='f32'")
        await super().merge()

    async def to_full(self):
        """Switch from LoRA to full fine-tuning: W += scaling * B.A in place, the LoRA tensors
        and their optimizer state dropped, every weight given a gradient and fresh moments."""
        from ..models.llama import LlamaLoRA

        model, be = self.model, self.be
        if model.full:
            return
        compressed = [n for n, t in be.params.items() if t.half or t.quant is not None]
        if compressed:
            raise ValueError("full fine-tuning needs f32 base weights; load with base_dtype='f32'")
        program = self.device.program("fold LoRA")
        for _, w, a, b in model.merge_names():
            out_f, in_f = be.params[w].shape
            self.k.matmul.gemm(program, be.params[b].buffer, be.params[a].buffer, be.params[w].buffer,
                               out_f, in_f, model.lora.r, alpha=model.lora.scaling, beta=1.0)
        await program.run()
        await self.device.synchronize()
        for name in list(model.trainable):
            for table in (be.params, be.grads, self.m, self.v):
                table.pop(name).buffer.destroy()
        for name in [n for n in be.params if n.endswith(".merged.weight")]:
            be.params.pop(name).buffer.destroy()
        self.model = LlamaLoRA(model.config, None)
        for name, shape in self.model.trainable.items():
            self._add_optimizer_state(name, shape)
        self._forget_programs()

    async def snapshot(self):
        """Copies, on the GPU, of every trainable tensor (restore() puts them back)."""
        program = self.device.program("snapshot")
        saved = {}
        for name in self.model.trainable:
            t = self.be.params[name]
            saved[name] = self.be.new(*t.shape, label=f"snapshot {name}")
            program.copy(t.buffer, saved[name].buffer)
        await program.run()
        return saved

    async def restore(self, snapshot):
        if set(snapshot) != set(self.model.trainable):
            raise ValueError("the snapshot was taken with other trainable tensors")
        program = self.device.program("restore")
        for name, copy in snapshot.items():
            program.copy(copy.buffer, self.be.params[name].buffer)
        await program.run()
        await self.device.synchronize()
