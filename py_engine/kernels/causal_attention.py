"""GPU causal self-attention with grouped-query attention (Llama-family decoders): the tiled
kernels of shaders/causal_attention.wgsl, which never store a T x T matrix. NumPy reference:
py_engine/ops/causal_attention.py.

Layouts (row-major f32; u32 for the mask):
  q, out, dout, dq   [B*Tq, Hq*D]    the projections' outputs after RoPE, used as they are
  k, v, dk, dv       [B*Tk, Hkv*D]   Tk = past + Tq: a KV cache's `past` rows, then the new ones
  attention_mask     [B, Tk] u32, 1 = real token (right padding), or None
  lse                [B, Hq, Tq]     saved by the forward for the backward
  stats              [B, Hq, Tq, 2]  backward scratch: (lse, rowsum(dout * out))

    att = await CausalAttentionKernels.load(device)                  # block_q=16, block_k=16
    shape = dict(batch=B, seq=Tq, heads=Hq, kv_heads=Hkv, head_dim=D)
    att.forward(program, q, k, v, attention_mask, out, lse, **shape)  # past=0, scaling=1/sqrt(D)
    att.backward(program, dout, q, k, v, attention_mask, out, lse, stats, dq, dk, dv, **shape)

Query head h reads KV head h // (Hq // Hkv); query row i (position past + i) sees key j iff
j <= past + i and key j is real. Padded query rows of a right-padded batch attend to the real
keys before them, as transformers' eager attention does (finite, deterministic; a loss ignores
them); a row that sees no key at all gets out 0 and no gradient. `past` > 0 serves decoding with
a KV cache (Tq new queries against past + Tq keys); the backward accepts it too. In the forward,
`past` may be a py_engine.gpu.Variable, set between replays (k and v are then the whole cache
buffers: keys beyond past + Tq are never read).

Attention dropout: with `dropout=(step, p, base)` (step: a dropout step buffer, see
kernels/dropout.py) the probabilities are dropped with the counter-based mask of a [B, Hq, Tq, Tk]
dropout layer at counter `base`, recomputed in the backward (pass the same triple there).

Sliding window (Mistral): `window=W` lets the query at position p see only keys p - W + 1 .. p
(forward and backward; None = no window).

Logit soft-capping (Gemma 2): `softcap=c` caps each scaled score to c * tanh(s / c) before the
softmax (forward and backward; None = no cap).

The backward's dk and dv: with few KV heads and short sequences, a workgroup per KV head
leaves a GPU mostly idle, so backward() then runs one per query head,
writing partial sums (scratch this object holds: Hq / Hkv times dk and dv, shared by every
layer) that one more kernel adds in head order (`split_heads`; splits_heads() says what it
does when not told).

A decoding step (one query row, no dropout) runs causal_attention_decode, whose 64 threads
share the row's keys and features. With few rows (batch x heads) and many keys a workgroup per
row leaves a GPU mostly idle, so the keys are then split among several workgroups per row
(flash-decoding), whose partial results causal_attention_decode_combine rescales and adds
(`decode_splits`; decode_splits() says how many when not told). On an adapter that caps a
shader invocation's loops (lavapipe: AdapterInfo.loop_limit), shapes whose loops would be cut
short are refused (loop_iterations).

Limits: head_dim <= the family's `head_dim` capacity (load(..., head_dim=256) for Gemma; 128 by
default, at most 256), block sizes <= 64 with block * head_dim <= 2048 (the workgroup tiles):
the default blocks shrink to fit (8 rows for head_dim 256).
"""

from ..gpu import Variable, buffer_limit, value_of
from .dropout import pack_step, scale, threshold

SOURCE = "causal_attention.wgsl"
DEFAULT_HEAD_DIM = 128
MAX_HEAD_DIM = 256      # each thread's private rows stay within WGSL's 8 KiB function memory
MAX_BLOCK = 64
TILE = 2048
ENTRIES = ("causal_attention_forward", "causal_attention_decode", "causal_attention_decode_combine",
           "causal_attention_stats", "causal_attention_grad_q", "causal_attention_grad_kv",
           "causal_attention_grad_kv_sum")
SUM_THREADS = 64        # causal_attention_grad_kv_sum's workgroup
DECODE_THREADS, DECODE_DIMS = 64, 4     # causal_attention_decode's workgroup, features a thread
# grad_kv runs a workgroup per query head, writing partial sums, when one per KV head would be
# fewer workgroups than this (splits_heads): too few to fill a GPU (TinyLlama's 4 KV heads at batch 4 and 256
# tokens make 256 workgroups of 16 threads, and its grad_kv took 18 ms on an H200).
SPLIT_BELOW = 2048
# A decoding step splits each row's keys (decode_splits) until the step has DECODE_WORKGROUPS
# workgroups (a few per multiprocessor of a large GPU), giving none fewer than DECODE_SPLIT_KEYS
# keys: TinyLlama's 32 heads over 2,048 cached keys make 8 splits of 256.
DECODE_WORKGROUPS, DECODE_SPLIT_KEYS, MAX_DECODE_SPLITS = 256, 256, 64


class CausalAttentionKernels:
    def __init__(self, device, kernels, block_q, block_k, head_dim=DEFAULT_HEAD_DIM):
        self.device = device
        self._kernels = kernels
        self.block_q = block_q
        self.block_k = block_k
        self.head_dim = head_dim
        self._no_mask = None
        self._no_step = None
        self._scratch = {}      # what -> buffers: partial results shared by every layer

    @classmethod
    async def load(cls, device, block_q=None, block_k=None, head_dim=DEFAULT_HEAD_DIM):
        """Compile the four entry points with BLOCK_Q query rows and BLOCK_K key rows a block
        (16 each by default, fewer when `head_dim` rows of 16 would overflow a tile), serving
        head sizes up to `head_dim`."""
        if not 1 <= head_dim <= MAX_HEAD_DIM:
            raise ValueError(f"head_dim must be in 1..{MAX_HEAD_DIM}, got {head_dim}")
        default = max(1, min(16, TILE // head_dim))
        block_q, block_k = block_q or default, block_k or default
        for name, size in (("block_q", block_q), ("block_k", block_k)):
            if not 1 <= size <= MAX_BLOCK:
                raise ValueError(f"{name} must be in 1..{MAX_BLOCK}, got {size}")
        constants = {"BLOCK_Q": block_q, "BLOCK_K": block_k, "MAX_HEAD_DIM": head_dim}
        kernels = {e: await device.kernel(SOURCE, e, constants) for e in ENTRIES}
        return cls(device, kernels, block_q, block_k, head_dim)

    def _shape(self, batch, seq, heads, kv_heads, head_dim, past, has_mask, blocks, scaling,
               dropout=None, window=None, softcap=None, split=False):
        if heads % kv_heads:
            raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
        if not 1 <= head_dim <= self.head_dim:
            raise ValueError(f"head_dim must be in 1..{self.head_dim} (load with head_dim="
                             f"{head_dim} for larger heads), got {head_dim}")
        if window is not None and window < 1:
            raise ValueError(f"window must be positive or None, got {window}")
        if softcap is not None and not softcap > 0:
            raise ValueError(f"softcap must be positive or None, got {softcap}")
        if max(self.block_q, self.block_k) * head_dim > TILE:
            raise ValueError(f"block size x head_dim must be <= {TILE}: load with smaller blocks")
        if batch < 1 or seq < 1 or value_of(past) < 0:
            raise ValueError("batch and seq must be positive, past non-negative")
        scaling = head_dim ** -0.5 if scaling is None else scaling
        _, p, base = dropout or (None, 0.0, 0)
        return self.device.uniform("IIIIIIIIfIIfIfI", batch, seq, past, heads, kv_heads, head_dim,
                                   int(has_mask), blocks, scaling, base & 0xFFFFFFFF, threshold(p),
                                   scale(p), window or 0, softcap or 0.0, int(split))

    def _step(self, dropout):
        """The dropout step buffer, or one never read (threshold 0) without dropout."""
        if dropout is not None:
            return dropout[0]
        if self._no_step is None:
            self._no_step = self.device.buffer_from(pack_step(0), "uniform", "no dropout")
        return self._no_step

    def _mask(self, attention_mask):
        if attention_mask is not None:
            return attention_mask
        if self._no_mask is None:
            self._no_mask = self.device.buffer_from(b"\x01\x00\x00\x00")   # never read
        return self._no_mask

    def _dispatch(self, program, entry, buffers, workgroups):
        limit = self.device.limits["max_compute_workgroups_per_dimension"]
        program.dispatch(self._kernels[entry], buffers,
                         (min(workgroups, limit), -(-workgroups // limit)))
        return program

    def forward(self, program, q, k, v, attention_mask, out, lse, *, batch, seq, heads, kv_heads,
                head_dim, past=0, scaling=None, dropout=None, window=None, softcap=None,
                decode_entry=None, decode_splits=None):
        """out [B*Tq, Hq*D] and lse [B, Hq, Tq] for queries at positions past..past+Tq-1.
        `decode_entry`: one query row without dropout runs causal_attention_decode (None, True),
        or the training forward (False: what bench/attention_variants.py compares it with).
        `decode_splits`: how many workgroups share a decoded row's keys (1: one per row, as
        without splits); None: as decode_splits() says for the keys k and v hold."""
        blocks = -(-seq // self.block_q)
        key_rows = min(k.size, v.size) // (4 * kv_heads * head_dim * batch)
        fits = lambda p: 0 <= p and p + seq <= key_rows
        if isinstance(past, Variable):
            past.require(fits, f"attention over {key_rows} cached keys ({seq} queries)")
        elif not fits(past):
            raise ValueError(f"past ({past}) + seq ({seq}) keys do not fit k/v of {key_rows} rows")
        # a decoding step: the row's threads share it
        decode = seq == 1 and dropout is None and decode_entry is not False
        entry = "causal_attention_decode" if decode else "causal_attention_forward"
        geometry = dict(seq=seq, head_dim=head_dim, heads=heads, kv_heads=kv_heads, window=window)
        splits = 1
        if decode:
            keys = key_rows if isinstance(past, Variable) else past + seq
            splits = (self.decode_splits(batch, heads, keys, window) if decode_splits is None
                      else decode_splits)
            if not (isinstance(splits, int) and 1 <= splits <= MAX_DECODE_SPLITS):
                raise ValueError(f"decode_splits must be a whole number in 1..{MAX_DECODE_SPLITS}, "
                                 f"got {decode_splits!r}")
            geometry["splits"] = splits
        if isinstance(past, Variable):
            past.require(lambda p: self._loops_fit(entry, past=p, **geometry),
                         f"attention over {seq:,} new position{'s' * (seq != 1)} with heads "
                         f"of {head_dim} on {self._cut_short()}")
        else:
            self._check_loops((entry,), past=past, **geometry)
        shape = self._shape(batch, seq, heads, kv_heads, head_dim, past,
                            attention_mask is not None, splits if decode else blocks, scaling,
                            dropout, window, softcap)
        if decode and splits == 1:
            return self._dispatch(program, "causal_attention_decode",
                                  [q, k, v, self._mask(attention_mask), out, lse, shape],
                                  batch * heads)
        if decode:
            parts = batch * heads * splits
            outs, stats = self._held("decode partial results", (4 * parts * head_dim, 8 * parts))
            self._dispatch(program, "causal_attention_decode",
                           [q, k, v, self._mask(attention_mask), outs, stats, shape], parts)
            return self._dispatch(program, "causal_attention_decode_combine",
                                  [outs, stats, out, lse, shape], batch * heads)
        return self._dispatch(program, "causal_attention_forward",
                              [q, k, v, self._mask(attention_mask), out, lse, shape,
                               self._step(dropout)],
                              batch * heads * blocks)

    def backward(self, program, dout, q, k, v, attention_mask, out, lse, stats, dq, dk, dv, *,
                 batch, seq, heads, kv_heads, head_dim, past=0, scaling=None, dropout=None,
                 window=None, softcap=None, split_heads=None):
        """dq [B*Tq, Hq*D], dk and dv [B*Tk, Hkv*D] (overwritten, summed over each KV head's
        query heads) from the forward's out and lse; stats [B*Hq*Tq*2] is scratch.
        `split_heads`: compute dk and dv with a workgroup per query head and sum the partial
        sums after (scratch of Hq / Hkv times dk and dv, held by this object), rather than one
        per KV head; None: as splits_heads() says."""
        if isinstance(past, Variable):
            raise TypeError("the backward is recorded for a fixed past; pass an int")
        mask = self._mask(attention_mask)
        has_mask = attention_mask is not None
        rows = batch * heads * seq
        q_blocks = -(-seq // self.block_q)
        k_blocks = -(-(past + seq) // self.block_k)
        group = heads // kv_heads if kv_heads and heads % kv_heads == 0 else 1
        values = batch * (past + seq) * kv_heads * head_dim     # of dk, and of dv
        if split_heads is None:
            split_heads = self.splits_heads(batch, seq, heads, kv_heads, head_dim, past, window)
        split_heads = bool(split_heads) and group > 1
        self._check_loops(("causal_attention_grad_q", "causal_attention_grad_kv"), seq=seq,
                          past=past, head_dim=head_dim, heads=heads, kv_heads=kv_heads,
                          window=window, split_heads=split_heads)
        shape = dict(batch=batch, seq=seq, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                     past=past, has_mask=has_mask, scaling=scaling, window=window, softcap=softcap)
        self._dispatch(program, "causal_attention_stats",
                       [out, lse, dout, stats, self._shape(blocks=0, **shape)],
                       -(-rows // self.block_q))
        step = self._step(dropout)
        self._dispatch(program, "causal_attention_grad_q",
                       [q, k, v, mask, stats, dout, dq,
                        self._shape(blocks=q_blocks, dropout=dropout, **shape), step],
                       batch * heads * q_blocks)
        kv_shape = self._shape(blocks=k_blocks, dropout=dropout, split=split_heads, **shape)
        if not split_heads:
            return self._dispatch(program, "causal_attention_grad_kv",
                                  [q, k, v, mask, stats, dout, dk, dv, kv_shape, step],
                                  batch * kv_heads * k_blocks)
        dk_parts, dv_parts = self._held("grad_kv partial sums", (4 * group * values,) * 2)
        self._dispatch(program, "causal_attention_grad_kv",
                       [q, k, v, mask, stats, dout, dk_parts, dv_parts, kv_shape, step],
                       batch * heads * k_blocks)
        return self._dispatch(program, "causal_attention_grad_kv_sum",
                              [dk_parts, dv_parts, dk, dv, kv_shape], -(-values // SUM_THREADS))

    def loop_iterations(self, entry, *, seq, past, head_dim, heads, kv_heads, window=None,
                        split_heads=False, splits=1):
        """The most loop iterations one invocation of `entry` runs on this shape: an upper
        bound counted from its loops, each loop's last test counted as an iteration, as
        llvmpipe's loop limiter counts them (checked against it in
        tests/test_kernels_causal_attention.py). llvmpipe stops an invocation's loops once
        65,535 have run in all (AdapterInfo.loop_limit), which attention over a long sequence
        passes: a query row's thread walks every key and the whole head."""
        D, bq, bk = head_dim, self.block_q, self.block_k
        keys = past + seq
        seen = keys if window is None else min(keys, window + max(bq, bk))   # one row's keys
        if entry == "causal_attention_decode":
            seen = -(-seen // splits)       # a split's share of the keys
            return (seen * 2 + -(-seen // DECODE_THREADS) * (D + 4)
                    + -(-seen // TILE) * (4 + 2 * DECODE_THREADS.bit_length()) + 2 * D + 8)
        if entry in ("causal_attention_forward", "causal_attention_grad_q"):
            # per key: the score's and the sum's loops over the head (D + 1 each) and their own
            # turn of the loops over the block; per block: its staging and the rescaling
            blocks = -(-seen // bk) + 1
            return seen * (2 * D + 6) + blocks * (6 + D + -(-bk * D // bq)) + 2 * D + 4
        if entry == "causal_attention_grad_kv":
            rows = seq if window is None else min(seq, window + bk)   # the rows one key meets
            summed = 1 if split_heads else heads // kv_heads
            blocks = -(-rows // bq) + 1
            return summed * (rows * (2 * D + 6) + blocks * (6 + -(-bq * D // bk)) + 2) + 2 * D + 4
        raise ValueError(f"unknown entry {entry!r}")

    def _loops_fit(self, entry, **shape):
        limit = self.device.info.loop_limit
        return limit is None or self.loop_iterations(entry, **shape) <= limit

    def _check_loops(self, entries, **shape):
        """Refuse a shape whose loops an adapter that caps them would cut short: its results
        would be silently wrong."""
        limit = self.device.info.loop_limit
        for entry in entries if limit else ():
            need = self.loop_iterations(entry, **shape)
            if need > limit:
                raise ValueError(
                    f"attention over {shape['past'] + shape['seq']:,} positions with heads of "
                    f"{shape['head_dim']} needs up to {need:,} loop iterations in one invocation of "
                    f"{entry}, too many for {self._cut_short()}")

    def _cut_short(self):
        info = self.device.info
        return (f"this adapter ({info.vendor} {info.device or info.architecture}), which stops a "
                f"shader invocation's loops after {info.loop_limit or 0:,} iterations, so its "
                "results would be wrong: use a GPU, the numpy backend, or shorter sequences")

    def splits_heads(self, batch, seq, heads, kv_heads, head_dim, past=0, window=None):
        """Whether backward() computes dk and dv with a workgroup per query head on this shape
        when not told: when the group has more than one query head, the partial sums fit one
        buffer, and either the KV heads alone make fewer than SPLIT_BELOW workgroups or a
        workgroup per KV head would run more loop iterations than the adapter allows (lavapipe:
        a key's thread then walks the rows of every head of its group; split, of one)."""
        group = heads // kv_heads
        values = batch * (past + seq) * kv_heads * head_dim
        if group == 1 or 4 * group * values > buffer_limit(self.device.limits):
            return False
        few = batch * kv_heads * -(-(past + seq) // self.block_k) < SPLIT_BELOW
        return few or not self._loops_fit("causal_attention_grad_kv", seq=seq, past=past,
                                          head_dim=head_dim, heads=heads, kv_heads=kv_heads,
                                          window=window)

    def decode_splits(self, batch, heads, keys, window=None):
        """How many workgroups share a decoded row's keys when forward() is not told: enough
        for DECODE_WORKGROUPS in all, none with fewer than DECODE_SPLIT_KEYS of the row's
        visible keys (`keys`: the most the step may see: the cache's rows), at most
        MAX_DECODE_SPLITS; 1 when the rows alone are enough or the keys few."""
        seen = keys if window is None else min(keys, window)
        wanted = -(-DECODE_WORKGROUPS // (batch * heads))
        return max(1, min(wanted, seen // DECODE_SPLIT_KEYS, MAX_DECODE_SPLITS))

    def _held(self, what, sizes):
        """Scratch buffers of at least `sizes` bytes for partial results (grad_kv's partial
        sums, the split decode's partial outputs). Every program recorded after shares them: a
        program's dispatches run in order, and each layer's partial results are read before the
        next layer's are written. A larger need replaces them (programs recorded before keep
        the ones they bound)."""
        held = self._scratch.get(what)
        if held is None or any(b.size < n for b, n in zip(held, sizes)):
            held = tuple(self.device.create_buffer(n, label=f"attention {what} {i}")
                         for i, n in enumerate(sizes))
            self._scratch[what] = held
        return held
