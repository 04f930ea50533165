"""GPU gather and scatter of DeBERTa-v2's disentangled attention bias
(shaders/disentangled_attention.wgsl); NumPy reference: py_engine/ops/disentangled_attention.py.

    dis = await DisentangledAttentionKernels.load(device)
    dis.gather(program, c2p, p2c, offsets, bias, batch=B, seq=T, heads=H, rows=R)
    dis.scatter(program, dbias, starts, distances, d, batch=B, seq=T, heads=H, rows=R,
                keys_side=False)

c2p, p2c, d: [H, B*T, R] (c2p or p2c None: that term is absent); bias, dbias [B, H, T, T];
offsets, starts, distances: u32 buffers of a RelativeRows (its offsets, and distances()).
"""

from . import KernelFamily

SOURCE = "disentangled_attention.wgsl"
WORKGROUP = 64
ENTRIES = ("disentangled_gather", "disentangled_scatter")


class DisentangledAttentionKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def gather(self, program, c2p, p2c, offsets, bias, *, batch, seq, heads, rows):
        """bias[b, h, i, j] = c2p[h, b*T + i, r] + p2c[h, b*T + j, r], r = offsets[i - j + T - 1]."""
        if c2p is None and p2c is None:
            raise ValueError("the disentangled bias needs c2p or p2c")
        terms = (c2p is not None) | (p2c is not None) << 1
        params = self.device.uniform("8I", batch, seq, heads, rows, terms, 0, 0, 0)
        present = c2p if c2p is not None else p2c       # an unread binding still needs a buffer
        buffers = [present if c2p is None else c2p, present if p2c is None else p2c, offsets,
                   bias, params]
        return self._dispatch(program, "disentangled_gather", buffers, batch * heads * seq * seq)

    def scatter(self, program, dbias, starts, distances, out, *, batch, seq, heads, rows,
                keys_side=False):
        """out [H, B*T, R]: the gradient of c2p (keys_side False) or p2c (True)."""
        params = self.device.uniform("8I", batch, seq, heads, rows, int(keys_side), 0, 0, 0)
        return self._dispatch(program, "disentangled_scatter",
                              [dbias, starts, distances, out, params], heads * batch * seq * rows)
