"""The NumPy backend: the model's ops computed eagerly with the reference ops (host only).

It is the reference the GPU path is checked against, and the CPU training path on a desktop.
`dtype` float32 trains; float64 checks gradients against torch. Everything stays in `dtype`:
the ops keep their inputs' dtype, so no step widens to float64 or converts back.

Two things computed in the forward are kept for the backward of a training step instead of
being recomputed: each dropout layer's mask (as factors 0 or 1 / (1 - p)), and each GELU's
slope, which shares its erf with the forward.
"""

import numpy as np

from ..labels import IGNORE_LABEL
from . import Recomputing
from ..ops import attention as attn_ops
from ..ops import columns as columns_ops
from ..ops import cross_entropy as ce_ops
from ..ops import disentangled_attention as dis_ops
from ..ops import dropout as dropout_ops
from ..ops import embedding as emb_ops
from ..ops import gelu as gelu_ops
from ..ops import layernorm as ln_ops
from ..ops import dora as dora_ops
from ..ops import lora_linear as lora_ops
from ..ops import matmul as mm_ops
from ..ops import causal_attention as causal_ops
from ..ops import lm_head_loss as lm_ops
from ..ops import pooling as pool_ops
from ..ops import rmsnorm as rms_ops
from ..kernels.rope import rope_attention_scaling, uses_long_factor
from ..ops import rope as rope_ops
from ..ops import swiglu as swiglu_ops
from ..ops import target_loss as target_ops


class DropoutSite:
    """One dropout layer of a step: its mask as factors (0 or 1 / (1 - p)), drawn from the
    step's (seed, offset) at the layer's counter base, for the forward and the backward."""

    __slots__ = ("multiplier",)

    def __init__(self, multiplier):
        self.multiplier = multiplier


class CausalAttentionSaved:
    """What causal_attention_backward needs; `site` is the attention dropout's (or None)."""

    __slots__ = ("q", "k", "v", "out", "lse", "shape", "site")

    def __init__(self, q, k, v, out, lse, shape, site):
        self.q, self.k, self.v, self.out, self.lse, self.shape, self.site = q, k, v, out, lse, shape, site


class NumpyBackend(Recomputing):
    name = "numpy"

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.params = {}
        self.grads = {}
        self.seed = 0
        self.offset = 0
        self._counter = 0
        self._train = False
        self._gelu_slopes = {}      # id(x) -> (x, gelu'(x)) from this step's forward
        self._rope = {}
        self._constants = {}
        self.dora_norms = None      # DoRA's norms in generation: None, "write" or "read"
        self._dora_kept = {}        # id(weight) -> (weight, (scale, norm))

    # --- parameters ---

    def set_param(self, name, values, shape):
        self.params[name] = np.asarray(values, dtype=self.dtype).reshape(shape)

    def add_grad(self, name):
        self.grads[name] = np.zeros_like(self.params[name])

    def zero_grads(self):
        for g in self.grads.values():
            g[...] = 0.0

    def param(self, name):
        return self.params[name]

    def grad(self, name):
        return self.grads[name]

    def start_step(self, seed, offset=0, train=True):
        """Dropout masks of the coming forward/backward draw from (seed, offset). With `train`
        the forward keeps what the backward reuses, until finish_step()."""
        self.seed, self.offset, self._counter = seed, offset, 0
        self._train = train
        self._gelu_slopes.clear()

    def finish_step(self):
        """Drop what the forward kept for the backward."""
        self._train = False
        self._gelu_slopes.clear()

    def tensor(self, values, shape=None, dtype=None):
        arr = np.asarray(values, dtype=dtype or self.dtype)
        return arr.reshape(shape) if shape is not None else arr

    def constant(self, key, values, shape, ids=False):
        """A tensor of these float values (with `ids`, token ids gather_rows reads), made once
        per `key` (a model's fixed table)."""
        key = (key, ids)
        if key not in self._constants:
            self._constants[key] = self.tensor(values, shape, np.int64 if ids else None)
        return self._constants[key]

    # --- ops ---

    def embedding(self, ids, type_ids, word, position, token_type, first_position=0):
        return emb_ops.embedding_forward(ids, type_ids, word, position, token_type, first_position)

    def layernorm(self, x, gamma, beta, eps):
        """beta None: a norm without bias (ModernBERT's)."""
        y, mean, rstd = ln_ops.layernorm_forward(x, gamma, 0.0 if beta is None else beta, eps)
        return y, (x, gamma, mean, rstd)

    def layernorm_backward(self, dy, saved, dgamma=None, dbeta=None):
        """dx; the gradients of gamma and beta are added into `dgamma` and `dbeta` where given
        (full fine-tuning both, PEFT's bias="all" beta alone); None: frozen."""
        if dgamma is None and dbeta is None:
            return ln_ops.layernorm_backward_input(dy, *saved)
        dx, dg, db = ln_ops.layernorm_backward(dy, *saved)
        if dgamma is not None:
            dgamma += dg
        if dbeta is not None:
            dbeta += db
        return dx

    def linear(self, x, w, b):
        return mm_ops.linear_forward(x, w, b)

    def softcap_logits(self, logits, softcap):
        """softcap * tanh(logits / softcap) (generation's logits; Gemma 2)."""
        return lm_ops.softcap_logits(logits, softcap)

    def linear_grad_input(self, dy, w):
        return mm_ops.gemm(dy, w)

    def linear_grad_params(self, dy, x, dw, db):
        """dw += dy^T x; db += column sums of dy (db None: no bias)."""
        dw += mm_ops.gemm(dy, x, trans_a=True)
        if db is not None:
            self.bias_grad(dy, db)

    def bias_grad(self, dy, db, scale=1.0):
        """db += scale * column sums of dy: a linear's bias gradient (scale: a LoRA's, for its
        lora_B bias)."""
        db += scale * dy.sum(axis=0)

    def accumulate(self, dst, src, scale=1.0):
        """dst += scale * src, in place (vectors: a gradient's share)."""
        dst += scale * src

    def lora_linear(self, x, xd, w, b, a, bm, scaling):
        return lora_ops.lora_linear_forward(x, xd, w, b, a, bm, scaling)

    def lora_linear_backward(self, dy, xd, w, a, bm, h, scaling, da, dbm, separate, input_grad=True):
        if not input_grad:
            ga, gb, _ = lora_ops.lora_weight_grads(dy, xd, bm, h, scaling)
            da += ga
            dbm += gb
            return None, None
        dx, dxd, ga, gb = lora_ops.lora_linear_backward(dy, xd, w, a, bm, h, scaling)
        da += ga
        dbm += gb
        if separate:
            return dx, dxd
        dx += dxd
        return dx, None

    def dora_scale(self, w, a, bm, scaling, magnitude):
        """(scale, norm) of DoRA (ops/dora.py); in generation, kept by the prompt's pass
        ("write") and taken by the one-token passes ("read"), as on the GPU."""
        if self.dora_norms == "read":
            kept_w, kept = self._dora_kept.get(id(w), (None, None))
            if kept_w is w:
                return kept
        result = dora_ops.weight_norm_scale(w, a, bm, scaling, magnitude)
        if self.dora_norms is not None:
            self._dora_kept[id(w)] = (w, result)      # w held: its id cannot pass to another
        return result

    def scale_columns(self, z, scale, b=None):
        return dora_ops.scale_columns(z, scale, b)

    def dora_magnitude_grad(self, dy, z, norm, dmagnitude):
        dmagnitude += dora_ops.magnitude_grad(dy, z, norm)

    def dropout(self, x, p):
        if p == 0.0:
            return x, None
        site = self._dropout_site(x.shape, p, x.dtype)
        return x * site.multiplier, site

    def _dropout_site(self, shape, p, dtype):
        """The next dropout layer's mask, of `shape`, at the step's running counter."""
        n = int(np.prod(shape))
        base = self._counter
        self._counter += n
        return DropoutSite(dropout_ops.dropout_multiplier(n, p, self.seed, self.offset, base,
                                                          dtype).reshape(shape))

    def add_noise(self, x, magnitude):
        """x + noise uniform in [-magnitude, magnitude), drawn at the step's running counter as
        a dropout layer's mask (NEFTune's; its backward is the identity)."""
        base = self._counter
        self._counter += x.size
        noise = dropout_ops.uniform_noise(x.size, magnitude, self.seed, self.offset, base, x.dtype)
        return x + noise.reshape(x.shape)

    def dropout_backward(self, dy, site):
        if site is None:
            return dy
        return dy * site.multiplier

    def attention(self, q, k, v, mask, B, T, heads, p, scaling=None, bias=None, causal=False):
        """Bidirectional attention (BERT): q, k, v [B*T, H*D], mask [B, T]. With the keywords
        (T5, see ops/attention.py): `scaling` instead of 1/sqrt(D), an additive `bias` [H, Tq,
        Tk] (or one per sequence, [B, H, Tq, Tk]: DeBERTa's), keys of another length than the
        queries (T is then the queries'; mask [B, Tk] or None), and `causal`."""
        scaling = attn_ops.default_scaling(q, heads) if scaling is None else scaling
        scores = attn_ops.add_score_bias(attn_ops.attention_scores(q, k, B, heads, scaling), bias, causal)
        probs = attn_ops.masked_softmax(scores, mask)
        used, site = self.dropout(probs, p)
        ctx = attn_ops.attention_context(used, v, heads)
        return ctx, (q, k, v, probs, used, site, heads, scaling)

    def attention_backward(self, dctx, saved, bias_grad=None, score_grad=False):
        """dq, dk, dv; with `bias_grad` (dtable, buckets), the gradient of the table [R, H]
        the forward's bias was gathered from by bucket (relative_position_bias's) is added
        into dtable; with `score_grad`, the scores' gradient [B, H, T, T] (a bias's) too."""
        q, k, v, probs, used, site, heads, scaling = saved
        B = probs.shape[0]
        dv = attn_ops.grad_values(used, dctx, heads)
        dused = attn_ops.grad_probs(dctx, v, B, heads)
        dprobs = self.dropout_backward(dused, site)
        dscores = attn_ops.masked_softmax_backward(probs, dprobs)
        if bias_grad is not None:
            dtable, buckets = bias_grad
            dtable += attn_ops.bucketed_bias_backward(dscores, buckets, dtable.shape[0])
        grads = (attn_ops.grad_queries(dscores, k, heads, scaling),
                 attn_ops.grad_keys(dscores, q, heads, scaling), dv)
        return grads + (dscores,) if score_grad else grads

    def disentangled_bias(self, q, k, pq, pk, B, heads, scaling, rows):
        """DeBERTa-v2's attention bias [B, H, T, T] (ops/disentangled_attention.py) and what
        its backward needs."""
        return (dis_ops.disentangled_bias(q, k, pq, pk, B, heads, scaling, rows),
                (q, k, pq, pk, heads, scaling, rows))

    def disentangled_bias_backward(self, dbias, saved, dq, dk):
        """(dq, dk with the bias's gradients added, dpq, dpk)."""
        gq, gk, dpq, dpk = dis_ops.disentangled_bias_backward(dbias, *saved)
        return (dq if gq is None else dq + gq), (dk if gk is None else dk + gk), dpq, dpk

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def scale(self, x, alpha):
        """alpha * x."""
        return x * x.dtype.type(alpha)

    def scope(self):
        return set(self._gelu_slopes)

    def release_since(self, scope, keep=(), also=()):
        """The GELU slopes kept since `scope` go (a recomputed layer's, or the first forward's
        of a layer that will be recomputed): their arrays are then freed with the rest of the
        layer's, as nothing else holds them."""
        for key in set(self._gelu_slopes) - scope:
            del self._gelu_slopes[key]

    def gelu(self, x, approximate="none"):
        """GELU, exact (BERT) or approximate="tanh" (GPT-2)."""
        if not self._train:
            return gelu_ops.gelu_forward(x, approximate)
        y, slope = gelu_ops.gelu_with_slope(x, approximate)
        self._gelu_slopes[id(x)] = (x, slope)    # x is held, so its id stays unique
        return y

    def gelu_backward(self, dy, x, approximate="none"):
        kept = self._gelu_slopes.pop(id(x), None)
        if kept is None:
            return gelu_ops.gelu_backward(dy, x, approximate)
        return dy * kept[1]

    def tanh(self, x):
        return pool_ops.tanh_forward(x)

    def tanh_backward(self, y, dy):
        return pool_ops.tanh_backward(y, dy)

    def relu(self, x):
        return pool_ops.relu_forward(x)

    def relu_backward(self, y, dy):
        return pool_ops.relu_backward(y, dy)

    def cls_pool(self, x, B, T):
        return pool_ops.cls_pool(x, B)

    def cls_pool_backward(self, d, B, T):
        return pool_ops.cls_pool_backward(d, T)

    def mean_pool(self, x, mask, B, T):
        return pool_ops.mean_pool(x, mask)

    def mean_pool_backward(self, d, mask, B, T):
        return pool_ops.mean_pool_backward(d, mask)

    # --- decoder ops (Llama family) ---

    def gather_rows(self, table, ids):
        """table[ids] as [B*T, width] (a frozen embedding: no backward)."""
        return table[np.asarray(ids).ravel()]

    def gather_rows_backward(self, dy, ids, dtable, padding=None):
        """dtable[ids[i]] += dy[i] (repeated ids add up), except for the row `padding` (torch's
        nn.Embedding padding_idx: its tokens give the table no gradient)."""
        ids = np.asarray(ids).ravel()
        if padding is not None:
            keep = ids != padding
            ids, dy = ids[keep], dy[keep]
        np.add.at(dtable, ids, dy)

    def rmsnorm(self, x, weight, eps, offset=0.0, width=None):
        """offset=1.0: Gemma's RMSNorm, scaling by (1 + weight). width: each row's consecutive
        blocks of `width` normalised on their own (QK-norm: a block per head; weight [width])."""
        rows = x.reshape(-1, width) if width else x
        y, rstd = rms_ops.rmsnorm_forward(rows, weight, eps, offset)
        return y.reshape(x.shape), (rows, weight, rstd, offset)

    def rmsnorm_backward(self, dy, saved, dweight=None):
        """dx; with `dweight` the weight's gradient is also added into it."""
        rows = dy.reshape(saved[0].shape)
        if dweight is None:
            return rms_ops.rmsnorm_backward_input(rows, *saved).reshape(dy.shape)
        dx, dw = rms_ops.rmsnorm_backward(rows, *saved)
        dweight += dw
        return dx.reshape(dy.shape)

    def rope_tables(self, head_dim, rope_parameters, positions, seq_len=None):
        """(cos, sin) [positions, rotary_dim / 2] for positions 0 .. positions-1, made once, for
        sequences of `seq_len` tokens (default: positions; longrope's factors depend on it).
        rotary_dim: head_dim, or less with rope_parameters' partial_rotary_factor; the rope ops
        rotate that many dimensions of each head and pass the rest through."""
        seq_len = positions if seq_len is None else seq_len
        key = (head_dim, repr(sorted((rope_parameters or {}).items())), positions,
               uses_long_factor(rope_parameters, seq_len))
        if key not in self._rope:
            inv_freq = rope_ops.rope_inv_freq(head_dim, rope_parameters, seq_len)
            tables = rope_ops.rope_tables(inv_freq, positions, scaling=rope_attention_scaling(rope_parameters))
            self._rope[key] = tuple(t.astype(self.dtype) for t in tables)
        return self._rope[key]

    def rope(self, x, tables, heads, seq, offset=0):
        """x rotated by position offset + (row % seq)."""
        cos, sin = tables
        return rope_ops.rope_forward(x, cos[offset:offset + seq], sin[offset:offset + seq], heads)

    def rope_backward(self, dy, tables, heads, seq):
        cos, sin = tables
        return rope_ops.rope_backward(dy, cos[:seq], sin[:seq], heads)

    def causal_attention(self, q, k, v, mask, B, heads, kv_heads, past=0, p=0.0, window=None,
                         softcap=None):
        """With `p` > 0 the attention probabilities [B, heads, Tq, Tk] are dropped (training);
        the mask is the saved state's `site`. `window`: a sliding window (None = none);
        `softcap`: the scores' soft cap (None = none)."""
        T = q.shape[0] // B
        site = self._dropout_site((B, heads, T, past + T), p, q.dtype) if p else None
        shape = dict(batch=B, heads=heads, kv_heads=kv_heads, attention_mask=mask, past=past,
                     dropout=site and site.multiplier, window=window, softcap=softcap)
        out, lse = causal_ops.causal_attention_forward(q, k, v, **shape)
        return out, CausalAttentionSaved(q, k, v, out, lse, shape, site)

    def causal_attention_backward(self, dout, saved):
        s = saved
        return causal_ops.causal_attention_backward(dout, s.q, s.k, s.v, s.out, s.lse, **s.shape)

    def relative_position_bias(self, table, buckets, queries, keys):
        """T5's relative position bias [H, Tq, Tk]: row buckets[i * Tk + j] of the table
        [num_buckets, H] for query i and key j (buckets: a list of Tq * Tk ints)."""
        rows = table[np.asarray(buckets, np.int64)]
        return np.ascontiguousarray(rows.reshape(queries, keys, -1).transpose(2, 0, 1))

    def kv_cache(self, layers, length, width):
        """Keys and values of `length` positions per layer, for decoding one sequence."""
        return KVCache([np.zeros((length, width), self.dtype) for _ in range(layers)],
                       [np.zeros((length, width), self.dtype) for _ in range(layers)], length)

    def kv_cache_append(self, cache, layer, k, v, position):
        """Write k, v [T, width] at rows position.. of the layer's cache; returns every key and
        value up to and including them."""
        end = position + k.shape[0]
        if end > cache.length:
            raise ValueError(f"positions up to {end - 1} do not fit the cache of {cache.length}")
        cache.keys[layer][position:end] = k
        cache.values[layer][position:end] = v
        return cache.keys[layer][:end], cache.values[layer][:end]

    def position_rows(self, table, B, T, position):
        """Learned positions: rows position .. position + T - 1 of `table`, once per sequence,
        as [B*T, width]."""
        return np.tile(table[position:position + T], (B, 1))

    def position_rows_backward(self, dy, B, T, dtable):
        """dtable[t] += the sum over the batch of dy's rows at t (training starts at 0)."""
        dtable[:T] += dy.reshape(B, T, -1).sum(axis=0)

    def split_columns(self, x, widths):
        """x [rows, sum(widths)] cut into consecutive column blocks (a fused projection's
        outputs, such as GPT-2's q, k, v)."""
        return columns_ops.split_columns(x, widths)

    def transpose(self, x):
        """x^T [cols, rows] (a LoRA on an embedding gathers rows of lora_embedding_A^T)."""
        return np.ascontiguousarray(x.T)

    def transpose_into(self, x, dst):
        """dst += x^T (a gradient kept transposed, added into its tensor's)."""
        dst += x.T

    def zeros(self, rows, cols=None):
        """A [rows, cols] array of zeros (a scatter-add's target); [rows] without cols."""
        return np.zeros((rows,) if cols is None else (rows, cols), self.dtype)

    def concat_columns(self, parts):
        """The backward of split_columns: the blocks side by side again."""
        return columns_ops.concat_columns(parts)

    def end_layer(self, x):
        """The GPU backend reuses buffers here during inference; NumPy has nothing to do."""

    def swiglu(self, gate, up, activation="silu"):
        """act(gate) * up: activation "silu" (SwiGLU) or "gelu_tanh" (GeGLU)."""
        return swiglu_ops.swiglu_forward(gate, up, activation)

    def swiglu_backward(self, dout, gate, up, activation="silu"):
        return swiglu_ops.swiglu_backward(dout, gate, up, activation)

    def cross_entropy(self, logits, labels, loss_scale=1.0, weights=None, label_smoothing=0.0,
                      backward=True):
        """(metrics, dlogits): softmax cross-entropy over [B, C] logits (label IGNORE_LABEL =
        not counted), with class weights and label smoothing as torch computes them; metrics
        {"loss", "correct", "counted"}; dlogits the gradient of loss * loss_scale (None
        without `backward`)."""
        weights = None if weights is None else np.asarray(weights, logits.dtype)
        loss, correct, wsum = ce_ops.cross_entropy_forward(logits, labels, weights, label_smoothing)
        metrics = {"loss": float(loss), "correct": int(correct.sum()),
                   "counted": int((np.asarray(labels) != IGNORE_LABEL).sum())}
        if not backward:
            return metrics, None
        return metrics, ce_ops.cross_entropy_backward(logits, labels, wsum, weights, label_smoothing,
                                                      dloss=loss_scale)

    def target_loss(self, logits, labels, kind, loss_scale=1.0, backward=True):
        """(metrics, dlogits): a loss against a float target per logit (kind "bce": a
        multi-label head's, "mse": a regression head's; labels: [B * C] u32 words, see
        ops/target_loss.py), with cross_entropy()'s metrics ("correct": rows predicted whole,
        "counted": rows counted)."""
        labels = np.asarray(labels).reshape(logits.shape)
        loss, correct, rows, denominator = target_ops.target_loss_forward(logits, labels, kind)
        metrics = {"loss": float(loss), "correct": int(correct.sum()), "counted": int(rows.sum())}
        if not backward:
            return metrics, None
        return metrics, target_ops.target_loss_backward(logits, labels, denominator, kind,
                                                        dloss=loss_scale)

    def lm_head_loss(self, h, w, labels, loss_scale=1.0, dweight=None, backward=True,
                     bias=None, dbias=None, softcap=None, low_rank=None, dlow_rank=None,
                     smoothing=0.0):
        """(metrics, dh): the causal-LM loss over shifted labels (IGNORE_LABEL = not counted)
        as metrics {"loss", "counted"}, and the gradient of loss * loss_scale with respect to
        h (None without `backward`); with `dweight` the head's gradient is added into it (full
        fine-tuning; otherwise the head is frozen). A head with a `bias` (Phi-2) adds it to the
        logits; with `dbias` its gradient is added into that; `softcap` caps the logits (Gemma
        2's final_logit_softcapping). A LoRA on the head: `low_rank` (u, B, scaling) adds
        scaling * u B^T to the logits, the result is (metrics, dh, du) and dB is added into
        `dlow_rank`; `smoothing`: label smoothing (ops/lm_head_loss.py). One pass over blocks of rows:
        each block's logits are made once and never all at once."""
        out = lm_ops.lm_head_loss_fused(
            h, w, np.asarray(labels), dloss=loss_scale, grad_input=backward,
            grad_weight=backward and dweight is not None, bias=bias,
            dbias=dbias if backward else None, softcap=softcap, low_rank=low_rank,
            dlow_rank=dlow_rank if backward else None, smoothing=smoothing)
        loss, counted, dh, dw = out[:4]
        if dw is not None:
            dweight += dw
        metrics = {"loss": float(loss), "counted": counted}
        return (metrics, dh) if low_rank is None else (metrics, dh, out[4])


class KVCache:
    __slots__ = ("keys", "values", "length")

    def __init__(self, keys, values, length):
        self.keys, self.values, self.length = keys, values, length
