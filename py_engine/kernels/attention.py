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

With dropout on the probabilities, record the pieces instead: scores, softmax (probs saved),
the dropout op (probs -> dropped), context from `dropped`; backward: grad_probs and
grad_values with `dropped`, dropout backward on dprobs, softmax_backward with the saved probs,
grad_queries, grad_keys. softmax and softmax_backward work in place.
"""

from .matmul import MatmulKernels, as_view

SOURCE = "attention.wgsl"
WORKGROUP = 64


class AttentionKernels:
    def __init__(self, device, matmul, softmax, softmax_backward):
        self.device = device
        self.matmul = matmul
        self._softmax = softmax
        self._softmax_backward = softmax_backward

    @classmethod
    async def load(cls, device, matmul=None, variant=None):
        """Compile the row kernels; share an existing MatmulKernels or load one (`variant` as
        for MatmulKernels.load)."""
        matmul = matmul or await MatmulKernels.load(device, variant)
        constants = {"WORKGROUP": WORKGROUP}
        softmax = await device.kernel(SOURCE, "attention_softmax", constants)
        backward = await device.kernel(SOURCE, "attention_softmax_backward", constants)
        return cls(device, matmul, softmax, backward)

    # --- views ----------------------------------------------------------------------------

    @staticmethod
    def _heads(x, seq, heads, head_dim):
        """Per-(batch, head) view of a [B*T, H*D] activation (or of a MatrixView of one)."""
        x = as_view(x, heads * head_dim)
        return x.with_strides(seq * x.ld, head_dim)

    @staticmethod
    def _square(x, seq, heads):
        """Per-(batch, head) view of a dense [B, H, T, T] buffer."""
        return as_view(x, seq).with_strides(heads * seq * seq, seq * seq)

    def _batched(self, program, a, b, c, m, n, k, batch, heads, **kw):
        return self.matmul.gemm(program, a, b, c, m, n, k, batch=batch, heads=heads, **kw)

    # --- forward --------------------------------------------------------------------------

    def scores(self, program, q, k, scores, *, batch, seq, heads, head_dim, scaling=None):
        """scores[B, H, T, T] = scaling * Q . K^T (scaling defaults to 1/sqrt(head_dim))."""
        scaling = head_dim ** -0.5 if scaling is None else scaling
        return self._batched(
            program, self._heads(q, seq, heads, head_dim), self._heads(k, seq, heads, head_dim),
            self._square(scores, seq, heads), seq, seq, head_dim, batch, heads,
            trans_b=True, alpha=scaling)

    def softmax(self, program, scores, attention_mask, *, batch, seq, heads):
        """scores -> probs in place: masked softmax over keys."""
        return self._rows(program, self._softmax, [scores, attention_mask], batch, seq, heads)

    def context(self, program, probs, v, context, *, batch, seq, heads, head_dim):
        """context[B*T, H*D] = P . V per (batch, head)."""
        return self._batched(
            program, self._square(probs, seq, heads), self._heads(v, seq, heads, head_dim),
            self._heads(context, seq, heads, head_dim), seq, head_dim, seq, batch, heads)

    def forward(self, program, q, k, v, attention_mask, probs, context, *, batch, seq, heads,
                head_dim, scaling=None):
        """Attention without dropout; probs [B, H, T, T] is kept for the backward."""
        shape = dict(batch=batch, seq=seq, heads=heads)
        self.scores(program, q, k, probs, head_dim=head_dim, scaling=scaling, **shape)
        self.softmax(program, probs, attention_mask, **shape)
        return self.context(program, probs, v, context, head_dim=head_dim, **shape)

    # --- backward -------------------------------------------------------------------------

    def grad_probs(self, program, dcontext, v, dprobs, *, batch, seq, heads, head_dim):
        """dprobs[B, H, T, T] = dC . V^T."""
        return self._batched(
            program, self._heads(dcontext, seq, heads, head_dim), self._heads(v, seq, heads, head_dim),
            self._square(dprobs, seq, heads), seq, seq, head_dim, batch, heads, trans_b=True)

    def grad_values(self, program, probs, dcontext, dv, *, batch, seq, heads, head_dim, beta=0.0):
        """dv[B*T, H*D] = P^T . dC (P: the probabilities the context used)."""
        return self._batched(
            program, self._square(probs, seq, heads), self._heads(dcontext, seq, heads, head_dim),
            self._heads(dv, seq, heads, head_dim), seq, head_dim, seq, batch, heads,
            trans_a=True, beta=beta)

    def softmax_backward(self, program, probs, dprobs, *, batch, seq, heads):
        """dprobs -> dscores in place: dS = P * (dP - rowsum(dP * P))."""
        return self._rows(program, self._softmax_backward, [probs, dprobs], batch, seq, heads)

    def grad_queries(self, program, dscores, k, dq, *, batch, seq, heads, head_dim, scaling=None,
                     beta=0.0):
        """dq[B*T, H*D] = scaling * dS . K."""
        scaling = head_dim ** -0.5 if scaling is None else scaling
        return self._batched(
            program, self._square(dscores, seq, heads), self._heads(k, seq, heads, head_dim),
            self._heads(dq, seq, heads, head_dim), seq, head_dim, seq, batch, heads,
            alpha=scaling, beta=beta)

    def grad_keys(self, program, dscores, q, dk, *, batch, seq, heads, head_dim, scaling=None,
                  beta=0.0):
        """dk[B*T, H*D] = scaling * dS^T . Q."""
        scaling = head_dim ** -0.5 if scaling is None else scaling
        return self._batched(
            program, self._square(dscores, seq, heads), self._heads(q, seq, heads, head_dim),
            self._heads(dk, seq, heads, head_dim), seq, head_dim, seq, batch, heads,
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

    def _rows(self, program, kernel, buffers, batch, seq, heads):
        rows = batch * heads * seq
        params = self.device.uniform("III", rows, seq, heads * seq)
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        groups = -(-rows // WORKGROUP)
        program.dispatch(kernel, [*buffers, params], (min(groups, limit), -(-groups // limit)))
        return program
