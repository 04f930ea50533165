"""Backends the model code runs on: the same op interface, computed eagerly in NumPy
(numpy_backend.py: the reference and CPU path) or recorded into a GPU program (gpu_backend.py).

The interface (tensors are backend handles; shapes are row-major, activations [B*T, hidden]):

    param(name), grad(name)                      named parameters and their gradient tensors
    embedding(ids, type_ids, word, position, token_type) -> x
    layernorm(x, gamma, beta, eps) -> (y, saved);  layernorm_backward(dy, saved) -> dx
    linear(x, w, b) -> y;  linear_grad_input(dy, w) -> dx;  linear_grad_params(dy, x, dw, db)
    lora_linear(x, xd, w, b, a, bm, scaling) -> (y, h)
    lora_linear_backward(dy, xd, w, a, bm, h, scaling, da, dbm, separate, input_grad=True)
        -> (dx, dxd)      (separate=False: (dx + dxd, None); input_grad=False: only da, dbm)
    dora_scale(w, a, bm, scaling, magnitude) -> (scale, norm);  scale_columns(z, scale, b=None)
    dora_magnitude_grad(dy, z, norm, dmagnitude)              (DoRA's steps: ops/dora.py)
    dropout(x, p) -> (y, site);  dropout_backward(dy, site) -> dx     (p == 0: identity)
    add_noise(x, magnitude) -> x + uniform noise    (NEFTune's, drawn as a dropout mask is)
    attention(q, k, v, mask, B, T, heads, p) -> (ctx, saved);  attention_backward(dctx, saved)
    add(a, b), sub(a, b), gelu(x), gelu_backward(dy, x), tanh(x), tanh_backward(y, dy)
    cls_pool(x, B, T), cls_pool_backward(d, B, T), mean_pool(x, mask, B, T), mean_pool_backward
Gradient outputs named by grad(...) are accumulated into (+=), so micro-batches add up.

Gradient checkpointing (models/checkpointing.py) recomputes a layer's forward in the backward:
    dropout_mark(), dropout_from(mark)           a recomputed layer draws the same masks
    scope(), release_since(scope, keep, also)    its tensors' memory handed to later ones
"""

from contextlib import contextmanager


class Recomputing:
    """The backend side of gradient checkpointing. Dropout masks are drawn from the step's
    seed at a running counter (each layer's elements numbered in order), so a layer run again
    from the counter it started at draws the masks it drew the first time. Releasing is the
    GPU's (a recording hands the buffers of released tensors to the tensors made after them);
    NumPy's arrays are freed when nothing refers to them (its backend drops what it kept for
    a released layer's backward)."""

    _counter = 0

    def dropout_mark(self):
        """Where the next dropout layer's mask starts."""
        return self._counter

    @contextmanager
    def dropout_from(self, mark):
        """Within the block dropout layers draw from `mark`; the counter is then as before."""
        kept, self._counter = self._counter, mark
        try:
            yield
        finally:
            self._counter = kept

    def scope(self):
        """A mark before the tensors made from now on (scopes do not nest)."""
        return None

    def release_since(self, scope, keep=(), also=()):
        """The tensors made since `scope`, and those in `also`, but for those in `keep` (and
        any sharing their memory), are no longer read by what is recorded after (None in
        `keep` or `also` stands for no tensor)."""
