"""GPU bidirectional multi-head attention: batched products from the matmul family around the
row kernels of shaders/attention.wgsl. NumPy reference: py_engine/ops/attention.py.

Layouts (row-major f32):
  q, k, v, context, dq, dk, dv   [B*T, H*D]: the Q/K/V linears' outputs used as they are; head h
                                 of sequence b is rows b*T.., columns h*D... A MatrixView with
                                 its own `ld` and `offset` (e.g. one third of a fused [B*T, 3*H*D]
                                 QKV buffer) works too.
  probs, dprobs                  [B, H, T, T], one softmax row per (batch, head, query).
  attention_mask                 [B, T] u32, 1 for a real token, 0 for padding.

    att = await AttentionKernels.load(device)
    shape = dict(batch=B, seq=T, heads=H, head_dim=D)
    att.forward(program, q, k, v, attention_mask, probs, context, **shape)
    att.backward(program, dcontext, q, k, v, probs, dprobs, dq, dk, dv, **shape)

T5's attention passes more (each optional, the defaults being BERT's): `keys` (Tk, when the keys
and values have another length than the `seq` queries: cross attention, or the cached keys of
a decoder), `scaling` (T5: 1), and to softmax a `bias` buffer [H, Tq, Tk] added to every
sequence's scores and `causal`; attention_mask may be None (no padding). probs and dprobs are
then [B, H, Tq, Tk].

With dropout on the probabilities, record the pieces instead: scores, softmax (probs saved),
the dropout op (probs -> dropped), context from `dropped`; backward: grad_probs and
grad_values with `dropped`, dropout backward on dprobs, softmax_backward with the saved probs,
grad_queries, grad_keys. softmax and softmax_backward work in place.

A bias gathered from a table by bucket (T5's relative position bias) gets its table's gradient
from the score gradient: bias_backward(program, dscores, buckets, dtable, ...) adds into
dtable [R, H] after softmax_backward (buckets: u32 [Tq*Tk], the bucket of each position).
"""

from .matmul import MatmulKernels, as_view

SOURCE = "attention.wgsl"
WORKGROUP = 64


class AttentionKernels:
    def __init__(self, device, matmul, softmax, softmax_backward, bias_backward):
        self.device = device
        self.matmul = matmul
        self._softmax = softmax
        self._softmax_backward = softmax_backward
        self._bias_backward = bias_backward

    @classmethod
    async def load(cls, device, matmul=None, variant=None):
        """Compile the row kernels; share an existing MatmulKernels or load one (`variant` as
        for MatmulKernels.load)."""
        matmul = matmul or await MatmulKernels.load(device, variant)
        constants = {"WORKGROUP": WORKGROUP}
        softmax = await device.kernel(SOURCE, "attention_softmax", constants)
        backward = await device.kernel(SOURCE, "attention_softmax_backward", constants)
        bias_backward = await device.kernel(SOURCE, "attention_bias_backward", constants)
        return cls(device, matmul, softmax, backward, bias_backward)

    # --- views ----------------------------------------------------------------------------

    @staticmethod
    def _heads(x, seq, heads, head_dim):
        """Per-(batch, head) view of a [B*T, H*D] activation (or of a MatrixView of one)."""
        x = as_view(x, heads * head_dim)
        return x.with_strides(seq * x.ld, head_dim)

    @staticmethod
    def _square(x, seq, heads, keys=None):
        """Per-(batch, head) view of a dense [B, H, Tq, Tk] buffer (Tk = Tq unless `keys`)."""
        keys = seq if keys is None else keys
        return as_view(x, keys).with_strides(heads * seq * keys, seq * keys)

    def _batched(self, program, a, b, c, m, n, k, batch, heads, **kw):
        return self.matmul.gemm(program, a, b, c, m, n, k, batch=batch, heads=heads, **kw)

    # --- forward --------------------------------------------------------------------------

    def scores(self, program, q, k, scores, *, batch, seq, heads, head_dim, scaling=None, keys=None):
        """scores[B, H, Tq, Tk] = scaling * Q . K^T (scaling defaults to 1/sqrt(head_dim))."""
        scaling = head_dim ** -0.5 if scaling is None else scaling
        keys = seq if keys is None else keys
        return self._batched(
            program, self._heads(q, seq, heads, head_dim), self._heads(k, keys, heads, head_dim),
            self._square(scores, seq, heads, keys), seq, keys, head_dim, batch, heads,
            trans_b=True, alpha=scaling)

    def softmax(self, program, scores, attention_mask, *, batch, seq, heads, keys=None, bias=None,
                causal=False, bias_per_sequence=False):
        """scores -> probs in place: softmax over keys, after the bias ([H, Tq, Tk] the batch
        shares, or [B, H, Tq, Tk] with bias_per_sequence), the causal limit and the padding
        mask (each where given)."""
        flags = (attention_mask is not None) | (bias is not None) << 1 | bool(causal) << 2
        unused = self._unused()
        buffers = [scores, unused if attention_mask is None else attention_mask, None,
                   unused if bias is None else bias]
        bias_rows = heads * seq * (batch if bias_per_sequence else 1)
        return self._rows(program, self._softmax, buffers, batch, seq, heads, keys, flags,
                          bias_rows)

    def _unused(self):
        """A placeholder for a binding the flags say is not read."""
        if getattr(self, "_placeholder", None) is None:
            self._placeholder = self.device.create_buffer(16, label="unused attention input")
        return self._placeholder

    def context(self, program, probs, v, context, *, batch, seq, heads, head_dim, keys=None):
        """context[B*Tq, H*D] = P . V per (batch, head)."""
        keys = seq if keys is None else keys
        return self._batched(
            program, self._square(probs, seq, heads, keys), self._heads(v, keys, heads, head_dim),
            self._heads(context, seq, heads, head_dim), seq, head_dim, keys, batch, heads)

    def forward(self, program, q, k, v, attention_mask, probs, context, *, batch, seq, heads,
                head_dim, scaling=None):
        """Attention without dropout; probs [B, H, T, T] is kept for the backward."""
        shape = dict(batch=batch, seq=seq, heads=heads)
        self.scores(program, q, k, probs, head_dim=head_dim, scaling=scaling, **shape)
        self.softmax(program, probs, attention_mask, **shape)
        return self.context(program, probs, v, context, head_dim=head_dim, **shape)

    # --- backward -------------------------------------------------------------------------

    def grad_probs(self, program, dcontext, v, dprobs, *, batch, seq, heads, head_dim, keys=None):
        """dprobs[B, H, Tq, Tk] = dC . V^T."""
        keys = seq if keys is None else keys
        return self._batched(
            program, self._heads(dcontext, seq, heads, head_dim), self._heads(v, keys, heads, head_dim),
            self._square(dprobs, seq, heads, keys), seq, keys, head_dim, batch, heads, trans_b=True)

    def grad_values(self, program, probs, dcontext, dv, *, batch, seq, heads, head_dim, beta=0.0,
                    keys=None):
        """dv[B*Tk, H*D] = P^T . dC (P: the probabilities the context used)."""
        keys = seq if keys is None else keys
        return self._batched(
            program, self._square(probs, seq, heads, keys), self._heads(dcontext, seq, heads, head_dim),
            self._heads(dv, keys, heads, head_dim), keys, head_dim, seq, batch, heads,
            trans_a=True, beta=beta)

    def softmax_backward(self, program, probs, dprobs, *, batch, seq, heads, keys=None):
        """dprobs -> dscores in place: dS = P * (dP - rowsum(dP * P))."""
        return self._rows(program, self._softmax_backward, [probs, dprobs, None], batch, seq, heads,
                          keys)

    def bias_backward(self, program, dscores, buckets, dtable, *, batch, seq, heads, table_rows,
                      keys=None):
        """dtable[r, h] += the sum of dscores[b, h, i, j] over the batch and the positions whose
        bucket (buckets[i * Tk + j], u32) is r: the gradient of the table [table_rows, H] that
        the softmax's bias [H, Tq, Tk] was gathered from."""
        keys = seq if keys is None else keys
        cells = table_rows * heads
        params = self.device.uniform("IIII", batch, heads, seq * keys, cells)
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        program.dispatch(self._bias_backward, [dscores, buckets, dtable, params],
                         (min(cells, limit), -(-cells // limit)))
        return program

    def grad_queries(self, program, dscores, k, dq, *, batch, seq, heads, head_dim, scaling=None,
                     beta=0.0, keys=None):
        """dq[B*Tq, H*D] = scaling * dS . K."""
        scaling = head_dim ** -0.5 if scaling is None else scaling
        keys = seq if keys is None else keys
        return self._batched(
            program, self._square(dscores, seq, heads, keys), self._heads(k, keys, heads, head_dim),
            self._heads(dq, seq, heads, head_dim), seq, head_dim, keys, batch, heads,
            alpha=scaling, beta=beta)

    def grad_keys(self, program, dscores, q, dk, *, batch, seq, heads, head_dim, scaling=None,
                  beta=0.0, keys=None):
        """dk[B*Tk, H*D] = scaling * dS^T . Q."""
        scaling = head_dim ** -0.5 if scaling is None else scaling
        keys = seq if keys is None else keys
        return self._batched(
            program, self._square(dscores, seq, heads, keys), self._heads(q, seq, heads, head_dim),
            self._heads(dk, keys, heads, head_dim), keys, head_dim, seq, batch, heads,
            trans_a=True, alpha=scaling, beta=beta)

    def backward(self, program, dcontext, q, k, v, probs, dprobs, dq, dk, dv, *, batch, seq,
                 heads, head_dim, scaling=None):
        """Gradients of `forward` from its saved probs; dprobs [B, H, T, T] is scratch."""
        shape = dict(batch=batch, seq=seq, heads=heads)
        self.grad_values(program, probs, dcontext, dv, head_dim=head_dim, **shape)
        self.grad_probs(program, dcontext, v, dprobs, head_dim=head_dim, **shape)
        self.softmax_backward(program, probs, dprobs, **shape)
        self.grad_queries(program, dprobs, k, dq, head_dim=head_dim, scaling=scaling, **shape)
        return self.grad_keys(program, dprobs, q, dk, head_dim=head_dim, scaling=scaling, **shape)

    def _rows(self, program, kernel, buffers, batch, seq, heads, keys=None, flags=1,
              bias_rows=None):
        """One thread per (batch, head, query) row of Tk keys; the `None` in `buffers` is where
        the shape's uniform goes; bias_rows: the rows of the softmax's bias (H * Tq unless
        it has one per sequence)."""
        keys = seq if keys is None else keys
        rows = batch * heads * seq
        bias_rows = heads * seq if bias_rows is None else bias_rows
        params = self.device.uniform("IIIIIIII", rows, keys, heads * seq, seq, flags, bias_rows, 0, 0)
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        groups = -(-rows // WORKGROUP)
        buffers = [params if b is None else b for b in buffers]
        program.dispatch(kernel, buffers, (min(groups, limit), -(-groups // limit)))
        return program
