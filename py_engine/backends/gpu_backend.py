"""The GPU backend: the model's ops recorded as dispatches into a py_engine.gpu.Program.

Running the model code once with this backend records one step for one batch shape; every
intermediate gets its own buffer, allocated once at record time and reused by every replay.
No NumPy: this runs in the browser.
"""

import math
from array import array

from ..kernels.adamw import AdamWKernels
from ..kernels.attention import AttentionKernels
from ..kernels.cross_entropy import CrossEntropyKernels, create_metrics
from ..kernels.dropout import DropoutKernels
from ..kernels.elementwise import ElementwiseKernels
from ..kernels.embedding import EmbeddingKernels
from ..kernels.gelu import GeluKernels
from ..kernels.grad_norm import GradNormKernels
from ..kernels.layernorm import LayerNormKernels
from ..kernels.dora import DoraKernels
from ..kernels.lora_linear import LoraLinearKernels
from ..kernels.matmul import MatmulKernels
from ..kernels.pooling import PoolingKernels
from ..kernels.target_loss import TargetLossKernels
from . import Recomputing


BASE_DTYPES = ("f32", "f16", "int8", "int4")


def storage_of(shape, linear, base_dtype, quant_group=64):
    """How a frozen weight is kept on the GPU under `base_dtype`: linear weights compressed
    (int8/int4 quantized in groups of `quant_group` inputs when their inputs split into groups,
    else f16), everything else f32. The math is f32 in every case."""
    if base_dtype not in BASE_DTYPES:
        raise ValueError(f"base_dtype must be one of {BASE_DTYPES}, got {base_dtype!r}")
    if not linear or base_dtype == "f32":
        return "f32"
    if base_dtype in ("int8", "int4") and shape[1] % quant_group == 0:
        return base_dtype
    return "f16"


def planned_base_bytes(model, shapes, base_dtype, quant_group=64):
    """Bytes the frozen base weights `shapes` ({name: shape}) take on the GPU under
    `base_dtype`, by storage_of's rule (what GpuRuntime.create allocates)."""
    from ..kernels.quantized_linear import weight_bytes

    total = 0
    for name, shape in shapes.items():
        storage = storage_of(shape, model.is_linear_weight(name), base_dtype, quant_group)
        n = math.prod(shape)
        total += {"f32": 4 * n, "f16": 2 * n}.get(storage) or weight_bytes(n, storage, quant_group)
    return total


class Tensor:
    """A GPU buffer with a shape; `half` marks a weight stored as packed f16, `quant` one
    stored quantized (kernels.quantized_linear.QuantizedWeightBuffers; buffer is its packed
    values)."""

    __slots__ = ("buffer", "shape", "half", "quant")

    def __init__(self, buffer, shape, half=False, quant=None):
        self.buffer, self.shape, self.half, self.quant = buffer, tuple(shape), half, quant

    @property
    def rows(self):
        return self.shape[0]

    @property
    def cols(self):
        return math.prod(self.shape[1:])

    @property
    def size(self):
        return math.prod(self.shape)


def _buffer(tensor):
    """The tensor's buffer, or None for an absent one (a linear without bias)."""
    return None if tensor is None else tensor.buffer


class Kernels:
    """Every kernel family a training step uses, compiled once per device."""

    @classmethod
    async def load(cls, device, matmul_variant=None, decoder=False, quantized=False,
                   head_dim=None, relative=False, columns=False):
        """`decoder`: also the decoder families (RMSNorm, RoPE, SwiGLU, causal attention,
        the chunked LM-head loss, the KV cache, column block copies, generation's argmax);
        `relative`: DeBERTa's disentangled attention bias; `columns`: the column copies and
        transposes alone (an encoder's embedding LoRA);
        `quantized`: the int8/int4 weight kernels; `head_dim`: the decoder's attention head
        size, when above the causal attention's default capacity (Gemma's 256)."""
        k = cls()
        k.matmul = await MatmulKernels.load(device, variant=matmul_variant)
        k.quantized = None
        if quantized:
            from ..kernels.quantized_linear import QuantizedLinearKernels

            k.quantized = await QuantizedLinearKernels.load(device)
        k.lora = await LoraLinearKernels.load(device, matmul=k.matmul, quantized=k.quantized)
        k.dora = await DoraKernels.load(device)
        k.attention = await AttentionKernels.load(device, matmul=k.matmul)
        k.embedding = await EmbeddingKernels.load(device)
        k.layernorm = await LayerNormKernels.load(device)
        k.gelu = await GeluKernels.load(device)
        k.dropout = await DropoutKernels.load(device)
        k.pooling = await PoolingKernels.load(device)
        k.elementwise = await ElementwiseKernels.load(device)
        k.cross_entropy = await CrossEntropyKernels.load(device)
        k.target_loss = await TargetLossKernels.load(device)
        k.adamw = await AdamWKernels.load(device)
        k.grad_norm = await GradNormKernels.load(device)
        k.disentangled = None
        if relative:        # the gather and scatter (and column copies) for the relative rows
            from ..kernels.disentangled_attention import DisentangledAttentionKernels

            k.disentangled = await DisentangledAttentionKernels.load(device)
        if relative or decoder or columns:
            from ..kernels.columns import ColumnKernels

            k.columns = await ColumnKernels.load(device)
        if decoder:
            from ..kernels.argmax import ArgmaxKernels
            from ..kernels.causal_attention import DEFAULT_HEAD_DIM, CausalAttentionKernels
            from ..kernels.kv_cache import KVCacheKernels
            from ..kernels.lm_head_loss import LMHeadLossKernels
            from ..kernels.rmsnorm import RmsNormKernels
            from ..kernels.rope import RopeKernels
            from ..kernels.swiglu import SwiGLUKernels

            k.rmsnorm = await RmsNormKernels.load(device)
            k.rope = await RopeKernels.load(device)
            k.swiglu = await SwiGLUKernels.load(device)
            k.causal_attention = await CausalAttentionKernels.load(
                device, head_dim=max(head_dim or 0, DEFAULT_HEAD_DIM))
            k.lm_head = await LMHeadLossKernels.load(device, matmul=k.matmul)
            k.kv_cache = await KVCacheKernels.load(device)
            k.argmax = await ArgmaxKernels.load(device)
        return k


class DropoutSite:
    __slots__ = ("p", "base", "n")

    def __init__(self, p, base, n):
        self.p, self.base, self.n = p, base, n


class GpuBackend(Recomputing):
    name = "gpu"

    def __init__(self, device, kernels):
        self.device = device
        self.k = kernels
        self.params = {}
        self.grads = {}
        self.program = None
        self.step = kernels.dropout.step_buffer()   # dropout (seed, offset), written per replay
        self.metrics = create_metrics(device)        # what the loss and the update write
        self._counter = 0
        self._zeros = {}
        self._rope = {}
        self._dora_adapted = {}     # DoRA's scratch W + s B.A, by size in bytes
        # DoRA's scale and norm during generation: None (computed where used), "write" (the
        # prompt's program keeps them) or "read" (a one-token program takes the kept ones)
        self.dora_norms = None
        self._dora_kept = {}        # weight buffer -> its (scale, norm) Tensors
        self._pool = None      # while recording inference: {"owned", "live", "free"} buffers

    # --- recording ---

    def record(self, program, reuse=False):
        """Point the ops at `program`; dropout layers are numbered afresh, as in NumPy. Every
        tensor made until finish() is the program's (finish() lists them, for release).

        With `reuse` (inference, where no backward reads the activations) a layer's
        intermediates are handed to the next layer at end_layer(), so a program holds one
        layer's worth of activations rather than one per layer; in training, release_since()
        hands on what gradient checkpointing no longer reads. Reuse is safe because a
        program's dispatches run in order."""
        self.program = program
        self._counter = 0
        self._pool = {"owned": [], "live": [], "free": {}, "reuse": reuse}

    def finish(self):
        """End the recording; returns the buffers made for it."""
        owned = self._pool["owned"] if self._pool is not None else []
        self.program, self._pool = None, None
        return owned

    def new(self, *shape, label=None):
        size = 4 * max(1, math.prod(shape))
        pool = self._pool
        if pool is None:
            return Tensor(self.device.create_buffer(size, label=label), shape)
        free = pool["free"].get(size)        # filled by end_layer or release_since
        if free:
            t = Tensor(free.pop(), shape)
        else:
            t = Tensor(self.device.create_buffer(size, label=label), shape)
            pool["owned"].append(t.buffer)
        pool["live"].append(t)
        return t

    def end_layer(self, keep):
        """Inference: every tensor made since the last end_layer, except `keep`, may be reused."""
        pool = self._pool
        if pool is None or not pool["reuse"]:
            return
        for t in pool["live"]:
            if t.buffer is not keep.buffer:
                pool["free"].setdefault(t.buffer.size, []).append(t.buffer)
        pool["live"] = [keep]

    def scope(self):
        return len(self._pool["live"]) if self._pool is not None else None

    def release_since(self, scope, keep=(), also=()):
        pool = self._pool
        if pool is None or scope is None:
            return
        kept = {id(t.buffer) for t in keep if t is not None}
        owned = {id(b) for b in pool["owned"]}      # never a weight's, a gradient's or a table's
        freed = {}
        for t in pool["live"][scope:] + [t for t in also if t is not None]:
            if id(t.buffer) not in kept and id(t.buffer) in owned:
                freed[id(t.buffer)] = t.buffer
        # a freed buffer is no live tensor's any more, so none is handed on twice
        pool["live"] = [t for t in pool["live"] if id(t.buffer) not in freed]
        for buffer in freed.values():
            pool["free"].setdefault(buffer.size, []).append(buffer)

    def param(self, name):
        return self.params[name]

    async def upload(self, name, checkpoint, storage="f32", quant_group=64):
        """Put a checkpoint tensor (floats(name), f16_bits(name), shape(name)) on the GPU as
        `storage` (see storage_of): f32, packed f16, or int8/int4 quantized on the GPU."""
        shape, device = checkpoint.shape(name), self.device
        if storage in ("int8", "int4"):
            source = device.buffer_from(checkpoint.floats(name), label=f"{name} (f32)")
            q = self.k.quantized.allocate(*shape, storage, group_size=quant_group, label=name)
            program = device.program(f"quantize {name}")
            self.k.quantized.quantize(program, source, q)
            await program.run()
            await device.synchronize()
            source.destroy()
            self.params[name] = Tensor(q.packed, shape, quant=q)
        elif storage == "f16":
            self.params[name] = Tensor(device.buffer_from(checkpoint.f16_bits(name), label=name),
                                       shape, half=True)
        else:
            self.params[name] = Tensor(device.buffer_from(checkpoint.floats(name), label=name), shape)

    def grad(self, name):
        return self.grads[name]

    # --- ops (see py_engine/backends/__init__.py) ---

    def embedding(self, ids, type_ids, word, position, token_type, first_position=0):
        """token_type None: a family without token types (DistilBERT) adds a row of zeros."""
        B, T = ids.shape
        out = self.new(B * T, word.shape[1])
        if token_type is None:
            token_type = self._zero_row(word.shape[1])
        self.k.embedding.forward(self.program, ids.buffer, type_ids.buffer, word.buffer,
                                 position.buffer, token_type.buffer, out.buffer, batch=B, seq=T,
                                 hidden=word.shape[1], vocab=word.shape[0],
                                 positions=position.shape[0], type_vocab=token_type.shape[0],
                                 first_position=first_position)
        return out

    def constant(self, key, values, shape, ids=False):
        """A tensor of these float values (with `ids`, token ids gather_rows reads), made once
        per `key` for the backend's life (a model's fixed table)."""
        key = ("constant", key, ids)
        if key not in self._zeros:
            values = array("I" if ids else "f", values)
            self._zeros[key] = Tensor(self.device.buffer_from(values, label="constant"), shape)
        return self._zeros[key]

    def _zero_row(self, width):
        """A [1, width] tensor of zeros kept for the backend's life (buffers start zeroed)."""
        key = ("zero row", width)
        if key not in self._zeros:
            self._zeros[key] = Tensor(self.device.create_buffer(4 * width, label="zero row"),
                                      (1, width))
        return self._zeros[key]

    def layernorm(self, x, gamma, beta, eps):
        """beta None: a norm without bias (ModernBERT's)."""
        y = self.new(*x.shape)
        mean, rstd = self.new(x.rows), self.new(x.rows)
        beta = self._zero_row(x.cols) if beta is None else beta
        self.k.layernorm.forward(self.program, x.buffer, gamma.buffer, beta.buffer, y.buffer,
                                 mean.buffer, rstd.buffer, x.rows, x.cols, eps)
        return y, (x, gamma, mean, rstd)

    def layernorm_backward(self, dy, saved, dgamma=None, dbeta=None):
        """dx; the gradients of gamma and beta are added into `dgamma` and `dbeta` where given
        (full fine-tuning both, PEFT's bias="all" beta alone); None: frozen."""
        x, gamma, mean, rstd = saved
        dx = self.new(*x.shape)
        self.k.layernorm.backward_input(self.program, dy.buffer, x.buffer, gamma.buffer, mean.buffer,
                                        rstd.buffer, dx.buffer, x.rows, x.cols)
        if dbeta is not None and dgamma is None:
            # beta's gradient is dy's column sums (the kernel's pass computes gamma's beside it)
            self.bias_grad(dy, dbeta)
        elif dgamma is not None:
            self.k.layernorm.backward_params(self.program, dy.buffer, x.buffer, mean.buffer,
                                             rstd.buffer, dgamma.buffer, dbeta.buffer, x.rows,
                                             x.cols, accumulate=True)
        return dx

    def linear(self, x, w, b):
        y = self.new(x.rows, w.shape[0])
        if w.quant is not None:
            self.k.quantized.linear(self.program, x.buffer, w.quant, y.buffer, x.rows, bias=_buffer(b))
            return y
        self.k.matmul.linear(self.program, x.buffer, w.buffer, y.buffer, x.rows, w.shape[1],
                             w.shape[0], bias=_buffer(b), w_half=w.half)
        return y

    def linear_grad_input(self, dy, w):
        dx = self.new(dy.rows, w.shape[1])
        if w.quant is not None:
            self.k.quantized.linear_grad_input(self.program, dy.buffer, w.quant, dx.buffer, dy.rows)
            return dx
        self.k.matmul.linear_grad_input(self.program, dy.buffer, w.buffer, dx.buffer, dy.rows,
                                        w.shape[1], w.shape[0], w_half=w.half)
        return dx

    def linear_grad_params(self, dy, x, dw, db):
        """dw += dy^T x; db += column sums of dy (db None: no bias)."""
        out_f, in_f = dw.shape
        self.k.matmul.linear_grad_weight(self.program, dy.buffer, x.buffer, dw.buffer, dy.rows,
                                         in_f, out_f, beta=1.0)
        if db is not None:
            self.bias_grad(dy, db)

    def bias_grad(self, dy, db, scale=1.0):
        """db += scale * column sums of dy: a linear's bias gradient (scale: a LoRA's, for its
        lora_B bias)."""
        self.k.matmul.bias_grad(self.program, dy.buffer, db.buffer, dy.rows, db.size, beta=1.0,
                                alpha=scale)

    def accumulate(self, dst, src, scale=1.0):
        """dst += scale * src, in place (vectors: a gradient's share): the column sums of src
        as one row."""
        self.k.matmul.bias_grad(self.program, src.buffer, dst.buffer, 1, dst.size, beta=1.0,
                                alpha=scale)

    def lora_linear(self, x, xd, w, b, a, bm, scaling):
        out_f, in_f = w.shape
        r = a.shape[0]
        y, h = self.new(x.rows, out_f), self.new(x.rows, r)
        self.k.lora.forward(self.program, x.buffer, xd.buffer, w.buffer, _buffer(b), a.buffer,
                            bm.buffer, y.buffer, h.buffer, rows=x.rows, in_features=in_f,
                            out_features=out_f, r=r, scaling=scaling, w_half=w.half,
                            w_quant=w.quant)
        return y, h

    def lora_linear_backward(self, dy, xd, w, a, bm, h, scaling, da, dbm, separate, input_grad=True):
        out_f, in_f = w.shape
        r = a.shape[0]
        dh = self.new(dy.rows, r)
        dx = self.new(dy.rows, in_f) if input_grad else None
        dxd = self.new(dy.rows, in_f) if separate and input_grad else None
        self.k.lora.backward(self.program, dy.buffer, xd.buffer, w.buffer, a.buffer, bm.buffer,
                             h.buffer, dh.buffer, da.buffer, dbm.buffer,
                             dx.buffer if dx is not None else None, rows=dy.rows,
                             in_features=in_f, out_features=out_f, r=r, scaling=scaling,
                             dxd=dxd.buffer if dxd is not None else None, accumulate=True,
                             w_half=w.half, w_quant=w.quant)
        return dx, dxd

    def dora_scale(self, w, a, bm, scaling, magnitude):
        """(scale, norm) [out] of DoRA: each row's norm of W + scaling * B.A and magnitude /
        norm. W must be f32 (the update is added to a copy of it)."""
        if w.half or w.quant is not None:
            raise ValueError("DoRA needs the weights of the layers it wraps in f32 on the GPU "
                             "(their row norms are taken with the update added)")
        out_f, in_f = w.shape
        if self.dora_norms is not None:
            # Generation: the weights hold still for a whole reply, so the prompt's program
            # ("write") leaves each layer's scale and norm in buffers of its own, which the
            # one-token programs ("read") take instead of recomputing them every token.
            key = w.buffer          # the buffer itself: its identity cannot pass to another
            if key not in self._dora_kept:
                self._dora_kept[key] = tuple(
                    Tensor(self.device.create_buffer(4 * out_f, label=f"DoRA {what}"), (out_f,))
                    for what in ("scale", "norm"))
            scale, norm = self._dora_kept[key]
            if self.dora_norms == "read":
                return scale, norm
        else:
            norm, scale = self.new(out_f), self.new(out_f)
        # One scratch weight per shape, shared by every layer: each is read right after it is
        # written (a program's dispatches run in order), so no two layers need theirs at once.
        size = 4 * out_f * in_f
        if size not in self._dora_adapted:
            self._dora_adapted[size] = self.device.create_buffer(size, label="DoRA adapted weight")
        adapted = Tensor(self._dora_adapted[size], (out_f, in_f))
        self.k.dora.adapted_weight(self.program, self.k.matmul, w.buffer, a.buffer, bm.buffer,
                                   adapted.buffer, out_f, in_f, a.shape[0], scaling)
        self.k.dora.weight_norm(self.program, adapted.buffer, magnitude.buffer, norm.buffer,
                                scale.buffer, out_f, in_f)
        return scale, norm

    def scale_columns(self, z, scale, b=None):
        out = self.new(*z.shape)
        self.k.dora.scale_columns(self.program, z.buffer, scale.buffer, out.buffer, z.rows, z.cols,
                                  bias=_buffer(b))
        return out

    def dora_magnitude_grad(self, dy, z, norm, dmagnitude):
        self.k.dora.magnitude_grad(self.program, dy.buffer, z.buffer, norm.buffer,
                                   dmagnitude.buffer, dy.rows, dy.cols, accumulate=True)

    def dropout(self, x, p):
        if p == 0.0:
            return x, None
        site = self._dropout_site(p, x.size)
        y = self.new(*x.shape)
        self.k.dropout.forward(self.program, x.buffer, y.buffer, self.step, x.size, p, site.base)
        return y, site

    def _dropout_site(self, p, n):
        """The next dropout layer of n elements, at the step's running counter."""
        site = DropoutSite(p, self._counter, n)
        self._counter += n
        return site

    def add_noise(self, x, magnitude):
        """x + noise uniform in [-magnitude, magnitude), drawn at the step's running counter as
        a dropout layer's mask (NEFTune's; its backward is the identity)."""
        base = self._counter
        self._counter += x.size
        y = self.new(*x.shape)
        self.k.dropout.noise(self.program, x.buffer, y.buffer, self.step, x.size, magnitude, base)
        return y

    def dropout_backward(self, dy, site):
        if site is None:
            return dy
        dx = self.new(*dy.shape)
        self.k.dropout.backward(self.program, dy.buffer, dx.buffer, self.step, site.n, site.p, site.base)
        return dx

    def attention(self, q, k, v, mask, B, T, heads, p, scaling=None, bias=None, causal=False):
        """Bidirectional attention (BERT); with the keywords T5's (see the NumPy backend's):
        `scaling`, an additive `bias` [H, Tq, Tk] (or [B, H, Tq, Tk], DeBERTa's), keys of
        another length, `causal`, mask None."""
        a = self.k.attention
        keys = k.rows // B
        shape = dict(batch=B, seq=T, heads=heads, head_dim=q.cols // heads, keys=keys)
        probs = self.new(B, heads, T, keys)
        ctx = self.new(*q.shape)
        a.scores(self.program, q.buffer, k.buffer, probs.buffer, scaling=scaling, **shape)
        a.softmax(self.program, probs.buffer, None if mask is None else mask.buffer, batch=B, seq=T,
                  heads=heads, keys=keys, bias=None if bias is None else bias.buffer, causal=causal,
                  bias_per_sequence=bias is not None and len(bias.shape) == 4)
        used, site = self.dropout(probs, p)
        a.context(self.program, used.buffer, v.buffer, ctx.buffer, **shape)
        return ctx, (q, k, v, probs, used, site, shape, scaling)

    def attention_backward(self, dctx, saved, bias_grad=None, score_grad=False):
        """dq, dk, dv; with `bias_grad` (dtable, buckets) the bias table's gradient is added
        into dtable; with `score_grad` the scores' gradient comes fourth (see the NumPy
        backend's)."""
        q, k, v, probs, used, site, shape, scaling = saved
        a = self.k.attention
        dq, dk, dv = self.new(*q.shape), self.new(*k.shape), self.new(*v.shape)
        dused = self.new(*probs.shape)
        a.grad_values(self.program, used.buffer, dctx.buffer, dv.buffer, **shape)
        a.grad_probs(self.program, dctx.buffer, v.buffer, dused.buffer, **shape)
        dscores = self.dropout_backward(dused, site)
        a.softmax_backward(self.program, probs.buffer, dscores.buffer, batch=shape["batch"],
                           seq=shape["seq"], heads=shape["heads"], keys=shape["keys"])   # in place: dP -> dS
        if bias_grad is not None:
            dtable, buckets = bias_grad
            a.bias_backward(self.program, dscores.buffer, self._buckets(buckets), dtable.buffer,
                            batch=shape["batch"], seq=shape["seq"], heads=shape["heads"],
                            keys=shape["keys"], table_rows=dtable.shape[0])
        a.grad_queries(self.program, dscores.buffer, k.buffer, dq.buffer, scaling=scaling, **shape)
        a.grad_keys(self.program, dscores.buffer, q.buffer, dk.buffer, scaling=scaling, **shape)
        return (dq, dk, dv, dscores) if score_grad else (dq, dk, dv)

    def disentangled_bias(self, q, k, pq, pk, B, heads, scaling, rows):
        """DeBERTa-v2's attention bias [B, H, T, T] (see the NumPy backend's): the products of
        all B*T queries (keys) with the R relative rows' projections as one batch of the
        attention's matmul, [H, B*T, R], gathered by row."""
        T, R = rows.seq, rows.rows
        shape = dict(batch=1, seq=B * T, heads=heads, head_dim=q.cols // heads, keys=R)
        products = []
        for x, rel in ((q, pk), (k, pq)):       # c2p, p2c
            out = None
            if rel is not None:
                out = self.new(heads, B * T, R)
                self.k.attention.scores(self.program, x.buffer, rel.buffer, out.buffer,
                                        scaling=scaling, **shape)
            products.append(out)
        bias = self.new(B, heads, T, T)
        offsets, _, _ = self._relative_rows(rows)
        self.k.disentangled.gather(self.program, *(_buffer(p) for p in products), offsets,
                                   bias.buffer, batch=B, seq=T, heads=heads, rows=R)
        return bias, (q, k, pq, pk, B, heads, scaling, rows)

    def disentangled_bias_backward(self, dbias, saved, dq, dk):
        """(dq, dk with the bias's gradients added in place, dpq, dpk)."""
        q, k, pq, pk, B, heads, scaling, rows = saved
        T, R = rows.seq, rows.rows
        shape = dict(batch=1, seq=B * T, heads=heads, head_dim=q.cols // heads, keys=R)
        _, starts, distances = self._relative_rows(rows)
        a, grads = self.k.attention, []
        for keys_side, (x, dx, rel) in enumerate(((q, dq, pk), (k, dk, pq))):
            if rel is None:
                grads.append(None)
                continue
            d = self.new(heads, B * T, R)
            self.k.disentangled.scatter(self.program, dbias.buffer, starts, distances, d.buffer,
                                        batch=B, seq=T, heads=heads, rows=R, keys_side=keys_side)
            a.grad_queries(self.program, d.buffer, rel.buffer, dx.buffer, scaling=scaling,
                           beta=1.0, **shape)
            drel = self.new(*rel.shape)
            a.grad_keys(self.program, d.buffer, x.buffer, drel.buffer, scaling=scaling, **shape)
            grads.append(drel)
        dpk, dpq = grads
        return dq, dk, dpq, dpk

    def _relative_rows(self, rows):
        """A RelativeRows' u32 buffers (offsets, starts, distances), made once per value."""
        key = ("relative rows", rows)
        if key not in self._zeros:
            starts, distances = rows.distances()
            self._zeros[key] = tuple(self.device.buffer_from(array("I", values), label=label)
                                     for values, label in ((rows.offsets, "relative offsets"),
                                                           (starts, "relative starts"),
                                                           (distances, "relative distances")))
        return self._zeros[key]

    def _buckets(self, buckets):
        """The buckets (a list of ints) as a u32 buffer, made once per list of values (a
        stack's layers share theirs)."""
        key = ("buckets", tuple(buckets))
        if key not in self._zeros:
            self._zeros[key] = self.device.buffer_from(array("I", buckets), label="position buckets")
        return self._zeros[key]

    def relative_position_bias(self, table, buckets, queries, keys):
        """T5's relative position bias [H, Tq, Tk]: table [num_buckets, H] gathered, as a
        one-column table, at bucket * H + h for head h, query i, key j (buckets: a list of
        Tq * Tk ints, row-major)."""
        heads = table.shape[1]
        index = array("I", (b * heads + h for h in range(heads) for b in buckets))
        ids = Tensor(self.device.buffer_from(index, label="relative position buckets"), (1, len(index)))
        flat = self.gather_rows(Tensor(table.buffer, (table.size, 1)), ids)
        return Tensor(flat.buffer, (heads, queries, keys))

    def add(self, a, b):
        out = self.new(*a.shape)
        self.k.elementwise.add(self.program, a.buffer, b.buffer, out.buffer, a.size)
        return out

    def sub(self, a, b):
        """a - b."""
        out = self.new(*a.shape)
        self.k.elementwise.scaled_add(self.program, b.buffer, a.buffer, out.buffer, a.size, -1.0)
        return out

    def softcap_logits(self, logits, softcap):
        """softcap * tanh(logits / softcap), in place (generation's logits; Gemma 2); the
        logits themselves without a cap."""
        if softcap is not None:
            self.k.lm_head.softcap(self.program, logits.buffer, logits.size, softcap)
        return logits

    def scale(self, x, alpha):
        """alpha * x (alpha rounded to f32, as the kernel multiplies in f32)."""
        out = self.new(*x.shape)
        self.k.elementwise.scale(self.program, x.buffer, out.buffer, x.size, alpha)
        return out

    def gelu(self, x, approximate="none"):
        y = self.new(*x.shape)
        self.k.gelu.forward(self.program, x.buffer, y.buffer, x.size, approximate)
        return y

    def gelu_backward(self, dy, x, approximate="none"):
        dx = self.new(*x.shape)
        self.k.gelu.backward(self.program, dy.buffer, x.buffer, dx.buffer, x.size, approximate)
        return dx

    def tanh(self, x):
        y = self.new(*x.shape)
        self.k.pooling.tanh(self.program, x.buffer, y.buffer, x.size)
        return y

    def relu(self, x):
        y = self.new(*x.shape)
        self.k.pooling.relu(self.program, x.buffer, y.buffer, x.size)
        return y

    def relu_backward(self, y, dy):
        dx = self.new(*y.shape)
        self.k.pooling.relu_backward(self.program, y.buffer, dy.buffer, dx.buffer, y.size)
        return dx

    def tanh_backward(self, y, dy):
        dx = self.new(*y.shape)
        self.k.pooling.tanh_backward(self.program, y.buffer, dy.buffer, dx.buffer, y.size)
        return dx

    def cls_pool(self, x, B, T):
        out = self.new(B, x.cols)
        self.k.pooling.cls(self.program, x.buffer, out.buffer, batch=B, seq=T, hidden=x.cols)
        return out

    def cls_pool_backward(self, d, B, T):
        dx = self.new(B * T, d.cols)
        self.k.pooling.cls_backward(self.program, d.buffer, dx.buffer, batch=B, seq=T, hidden=d.cols)
        return dx

    def mean_pool(self, x, mask, B, T):
        out = self.new(B, x.cols)
        self.k.pooling.mean(self.program, x.buffer, mask.buffer, out.buffer, batch=B, seq=T, hidden=x.cols)
        return out

    def mean_pool_backward(self, d, mask, B, T):
        dx = self.new(B * T, d.cols)
        self.k.pooling.mean_backward(self.program, d.buffer, mask.buffer, dx.buffer, batch=B,
                                     seq=T, hidden=d.cols)
        return dx

    # --- decoder ops (Llama family) ---

    def gather_rows(self, table, ids):
        """table[ids] as [B*T, width]: the embedding kernel with all-zero position and type
        tables (a frozen embedding: no backward)."""
        B, T = ids.shape
        width = table.shape[1]
        key = (B, T, width)
        if key not in self._zeros:
            self._zeros[key] = (self.device.create_buffer(4 * B * T, label="zero type ids"),
                                self.device.create_buffer(4 * T * width, label="zero positions"),
                                self.device.create_buffer(4 * width, label="zero type table"))
        types, positions, type_table = self._zeros[key]
        out = self.new(B * T, width)
        self.k.embedding.forward(self.program, ids.buffer, types, table.buffer, positions,
                                 type_table, out.buffer, batch=B, seq=T, hidden=width,
                                 vocab=table.shape[0], positions=T, type_vocab=1)
        return out

    def gather_rows_backward(self, dy, ids, dtable, padding=None):
        """dtable[ids[i]] += dy[i]: the embedding kernel's word-table backward (deterministic:
        each table row sums its tokens in order, no atomics); the row `padding` gets nothing."""
        B, T = ids.shape
        width = dtable.shape[1]
        types, _, _ = self._zeros[(B, T, width)]
        self.k.embedding.backward(self.program, dy.buffer, ids.buffer, types, dtable.buffer, None,
                                  None, batch=B, seq=T, hidden=width, vocab=dtable.shape[0],
                                  positions=T, type_vocab=1, accumulate=True, padding=padding)

    def position_rows(self, table, B, T, position):
        """Learned positions: rows position .. position + T - 1 of `table` (position an int or
        a Variable), once per sequence, as [B*T, width]."""
        width = table.shape[1]
        out = self.new(B * T, width)
        for b in range(B):
            self.k.columns.copy_block(self.program, table.buffer, out.buffer, T, width,
                                      (width, 0, position), (width, 0, b * T))
        return out

    def position_rows_backward(self, dy, B, T, dtable):
        """dtable[t] += the sum over the batch of dy's rows at t (training starts at 0): the
        embedding backward over position ids 0 .. T-1 in every row."""
        key = ("positions", B, T)
        if key not in self._zeros:
            ids = array("I", list(range(T)) * B)
            self._zeros[key] = Tensor(self.device.buffer_from(ids, label="position ids"), (B, T))
        ids = self._zeros[key]
        self.gather_rows_backward(dy, ids, dtable)

    def split_columns(self, x, widths):
        """x [rows, sum(widths)] cut into consecutive column blocks (a fused projection's
        outputs, such as GPT-2's q, k, v)."""
        parts, start = [], 0
        for w in widths:
            part = self.new(x.rows, w)
            self.k.columns.copy_block(self.program, x.buffer, part.buffer, x.rows, w,
                                      (x.cols, start, 0), (w, 0, 0))
            parts.append(part)
            start += w
        return parts

    def transpose(self, x):
        """x^T [cols, rows] (a LoRA on an embedding gathers rows of lora_embedding_A^T)."""
        out = self.new(x.cols, x.rows)
        self.k.columns.transpose(self.program, x.buffer, out.buffer, x.rows, x.cols)
        return out

    def transpose_into(self, x, dst):
        """dst += x^T (a gradient kept transposed, added into its tensor's)."""
        self.k.columns.transpose(self.program, x.buffer, dst.buffer, x.rows, x.cols, beta=1.0)

    def zeros(self, rows, cols=None):
        """A [rows, cols] tensor of zeros (a scatter-add's target); [rows] without cols."""
        t = self.new(rows) if cols is None else self.new(rows, cols)
        self.k.embedding.clear(self.program, t.buffer, t.size)
        return t

    def concat_columns(self, parts):
        """The backward of split_columns: the blocks side by side again."""
        rows, total = parts[0].rows, sum(p.cols for p in parts)
        out, start = self.new(rows, total), 0
        for p in parts:
            self.k.columns.copy_block(self.program, p.buffer, out.buffer, rows, p.cols,
                                      (p.cols, 0, 0), (total, start, 0))
            start += p.cols
        return out

    def rmsnorm(self, x, weight, eps, offset=0.0, width=None):
        """offset=1.0: Gemma's RMSNorm, scaling by (1 + weight). width: each row's consecutive
        blocks of `width` normalised on their own (QK-norm: a block per head; weight [width])."""
        rows = Tensor(x.buffer, (x.size // width, width)) if width else x
        y, rstd = self.new(*x.shape), self.new(rows.rows)
        self.k.rmsnorm.forward(self.program, rows.buffer, weight.buffer, y.buffer, rstd.buffer,
                               rows.rows, rows.cols, eps, offset=offset)
        return y, (rows, weight, rstd, offset)

    def rmsnorm_backward(self, dy, saved, dweight=None):
        """dx; with `dweight` the weight's gradient is also added into it."""
        x, weight, rstd, offset = saved
        dx = self.new(*dy.shape)
        self.k.rmsnorm.backward_input(self.program, dy.buffer, x.buffer, weight.buffer,
                                      rstd.buffer, dx.buffer, x.rows, x.cols, offset=offset)
        if dweight is not None:
            self.k.rmsnorm.backward_weight(self.program, dy.buffer, x.buffer, rstd.buffer,
                                           dweight.buffer, x.rows, x.cols, accumulate=True)
        return dx

    def rope_tables(self, head_dim, rope_parameters, positions, seq_len=None):
        """(cos, sin, rotary_dim): buffers [positions, rotary_dim / 2] for positions 0 ..
        positions-1, made once per shape (the RoPE kernels read them), for sequences of
        `seq_len` tokens (default: positions; longrope's factors depend on it), and the rotated
        dimensions of a head (head_dim unless rope_parameters has a partial_rotary_factor)."""
        from ..kernels.rope import rotary_dim, uses_long_factor

        seq_len = positions if seq_len is None else seq_len
        key = (head_dim, repr(sorted((rope_parameters or {}).items())), positions,
               uses_long_factor(rope_parameters, seq_len))
        if key not in self._rope:
            self._rope[key] = (*self.k.rope.tables(head_dim, positions, rope_parameters, seq_len),
                               rotary_dim(head_dim, rope_parameters))
        return self._rope[key]

    def rope(self, x, tables, heads, seq, offset=0, backward=False):
        """x rotated by position offset + (row % seq); offset an int or a Variable."""
        cos, sin, rotary = tables
        out = self.new(*x.shape)
        record = self.k.rope.backward if backward else self.k.rope.forward
        record(self.program, x.buffer, cos, sin, out.buffer, x.rows, heads, x.cols // heads, seq,
               offset, rotary_dim=rotary)
        return out

    def rope_backward(self, dy, tables, heads, seq):
        return self.rope(dy, tables, heads, seq, backward=True)

    def causal_attention(self, q, k, v, mask, B, heads, kv_heads, past=0, p=0.0, window=None,
                         softcap=None):
        """With `p` > 0 (training) the attention probabilities [B, heads, Tq, Tk] are dropped
        with the counter-based mask, recomputed by the backward. `window`: a sliding window
        (None = none); `softcap`: the scores' soft cap (None = none)."""
        shape = dict(batch=B, seq=q.rows // B, heads=heads, kv_heads=kv_heads,
                     head_dim=q.cols // heads, window=window, softcap=softcap)
        if p:
            site = self._dropout_site(p, B * heads * shape["seq"] * (past + shape["seq"]))
            shape["dropout"] = (self.step, p, site.base)
        out, lse = self.new(*q.shape), self.new(B * heads * shape["seq"])
        self.k.causal_attention.forward(self.program, q.buffer, k.buffer, v.buffer, _buffer(mask),
                                        out.buffer, lse.buffer, past=past, **shape)
        return out, (q, k, v, mask, out, lse, dict(shape, past=past))

    def causal_attention_backward(self, dout, saved):
        q, k, v, mask, out, lse, shape = saved
        stats = self.new(2 * lse.size)
        dq, dk, dv = self.new(*q.shape), self.new(*k.shape), self.new(*v.shape)
        self.k.causal_attention.backward(self.program, dout.buffer, q.buffer, k.buffer, v.buffer,
                                         _buffer(mask), out.buffer, lse.buffer, stats.buffer,
                                         dq.buffer, dk.buffer, dv.buffer, **shape)
        return dq, dk, dv

    def kv_cache(self, layers, length, width):
        """Keys and values of `length` positions per layer in GPU buffers, for decoding one
        sequence."""
        make = lambda kind, n: self.device.create_buffer(4 * length * width, label=f"{kind} cache {n}")
        return KVCache([make("k", n) for n in range(layers)], [make("v", n) for n in range(layers)],
                       length, width)

    def kv_cache_append(self, cache, layer, k, v, position):
        """Record writing k, v [T, width] at rows position.. of the layer's cache (position an
        int or a Variable); returns the whole cache as the attention's keys and values."""
        for src, dst in ((k, cache.keys[layer]), (v, cache.values[layer])):
            self.k.kv_cache.append(self.program, src.buffer, dst, k.rows, cache.width, row=position)
        shape = (cache.length, cache.width)
        return Tensor(cache.keys[layer], shape), Tensor(cache.values[layer], shape)

    def swiglu(self, gate, up, activation="silu"):
        """act(gate) * up: activation "silu" (SwiGLU) or "gelu_tanh" (GeGLU)."""
        out = self.new(*gate.shape)
        self.k.swiglu.forward(self.program, gate.buffer, up.buffer, out.buffer, gate.size,
                              activation)
        return out

    def swiglu_backward(self, dout, gate, up, activation="silu"):
        dgate, dup = self.new(*gate.shape), self.new(*up.shape)
        self.k.swiglu.backward(self.program, dout.buffer, gate.buffer, up.buffer, dgate.buffer,
                               dup.buffer, gate.size, activation)
        return dgate, dup

    def argmax_rows(self, x):
        """[2 * rows] u32: the first argmax of each row of x [rows, cols] and flags for a NaN
        or +inf in it (kernels/argmax.py decodes them)."""
        rows, cols = x.shape
        out = self.new(self.k.argmax.out_words(rows))
        self.k.argmax.rows(self.program, x.buffer, out.buffer, rows=rows, cols=cols)
        return out

    def sampling_candidates(self, program, x, capacity, inv_temperature, top_k, tail):
        """Record into `program` (a copy of the one being recorded, which never reads the
        result) the sampling candidates of each row of x [rows, cols] (kernels/argmax.py;
        the settings may be Variables). Returns (out, params): buffers of the caller's own,
        to destroy with the program."""
        rows, cols = x.shape
        out = self.device.create_buffer(4 * self.k.argmax.candidate_words(rows, capacity),
                                        label="sampling candidates")
        params = self.k.argmax.candidates(program, x.buffer, out, rows=rows, cols=cols,
                                          capacity=capacity, inv_temperature=inv_temperature,
                                          top_k=top_k, tail=tail)
        return out, params

    def cross_entropy(self, logits, labels, loss_scale=1.0, weights=None, label_smoothing=0.0,
                      backward=True):
        """(metrics, dlogits): the loss, correct and counted rows land in the metrics buffer
        (read it after the run); dlogits is the gradient of loss * loss_scale (None without
        `backward`)."""
        B, C = logits.shape
        ce = self.k.cross_entropy
        weights = None if not weights else self.device.buffer_from(array("f", weights), label="class weights")
        predictions = self.device.create_buffer(4 * B, label="predictions")
        shape = dict(rows=B, classes=C, weights=weights, label_smoothing=label_smoothing)
        ce.forward(self.program, logits.buffer, labels.buffer, self.metrics, predictions, **shape)
        if not backward:
            return self.metrics, None
        dlogits = self.new(B, C)
        ce.backward(self.program, logits.buffer, labels.buffer, self.metrics, dlogits.buffer,
                    dloss=loss_scale, **shape)
        return self.metrics, dlogits

    def target_loss(self, logits, labels, kind, loss_scale=1.0, backward=True):
        """(metrics, dlogits) of a loss against a float target per logit (kind "bce": a
        multi-label head's, "mse": a regression head's; labels: [B, C] u32 words), as
        cross_entropy() gives them."""
        B, C = logits.shape
        tl = self.k.target_loss
        tl.forward(self.program, logits.buffer, labels.buffer, self.metrics, rows=B, classes=C,
                   kind=kind)
        if not backward:
            return self.metrics, None
        dlogits = self.new(B, C)
        tl.backward(self.program, logits.buffer, labels.buffer, self.metrics, dlogits.buffer,
                    rows=B, classes=C, kind=kind, dloss=loss_scale)
        return self.metrics, dlogits

    def lm_head_loss(self, h, w, labels, loss_scale=1.0, dweight=None, backward=True, chunk=256,
                     bias=None, dbias=None, softcap=None, low_rank=None, dlow_rank=None,
                     smoothing=0.0):
        """(metrics, dh): loss and counted tokens land in the metrics buffer (read it after
        the run); dh is the gradient of loss * loss_scale (None without `backward`); with
        `dweight` the head's gradient is added into it (full fine-tuning; otherwise the head
        is frozen). A head with a `bias` (Phi-2) adds it to the logits; with `dbias` its
        gradient is added into that; `softcap` caps the logits (Gemma 2's
        final_logit_softcapping). A LoRA on the head: `low_rank` (u, B, scaling) adds
        scaling * u B^T to the logits, the result is (metrics, dh, du) and dB is added into
        `dlow_rank`; `smoothing`: label smoothing."""
        N, H = h.shape
        V = w.shape[0]
        chunk = min(chunk, V)
        lm = self.k.lm_head
        scratch = self.device.create_buffer(4 * lm.scratch_floats(N, chunk), label="lm scratch")
        stats = self.device.create_buffer(4 * lm.stats_floats(N), label="lm stats")
        args = (self.program, h.buffer, w.buffer, labels.buffer, scratch, stats, self.metrics)
        shape = (N, H, V, chunk)
        bias = None if bias is None else bias.buffer
        low = None
        if low_rank is not None:
            u, b, scaling = low_rank
            low = (u.buffer, b.buffer, u.cols, scaling)
        lm.forward(*args, *shape, w_half=w.half, bias=bias, softcap=softcap, low_rank=low,
                   smoothing=smoothing)
        if not backward:
            return (self.metrics, None) if low is None else (self.metrics, None, None)
        dh = self.new(*h.shape)
        extra = {} if dweight is None else dict(dweight=dweight.buffer, dw_beta=1.0)
        if dbias is not None:
            extra.update(dbias=dbias.buffer, db_beta=1.0)
        if low is not None:
            du = self.new(N, low[2])
            extra.update(low_rank=low, du=du.buffer,
                         dlow_b=None if dlow_rank is None else dlow_rank.buffer)
        lm.backward(*args, dh.buffer, *shape, dloss=loss_scale, w_half=w.half, bias=bias,
                    softcap=softcap, smoothing=smoothing, **extra)
        return (self.metrics, dh) if low is None else (self.metrics, dh, du)


class KVCache:
    __slots__ = ("keys", "values", "length", "width")

    def __init__(self, keys, values, length, width):
        self.keys, self.values, self.length, self.width = keys, values, length, width
