"""GPU pooling and the head's activations, tanh and ReLU (shaders/pooling.wgsl); NumPy reference:
py_engine/ops/pooling.py.

    pool = await PoolingKernels.load(device)
    pool.cls(program, x, out, batch=B, seq=T, hidden=H)                 # [B*T, H] -> [B, H]
    pool.cls_backward(program, dout, dx, batch=B, seq=T, hidden=H)
    pool.mean(program, x, attention_mask, out, batch=B, seq=T, hidden=H)
    pool.mean_backward(program, dout, attention_mask, dx, batch=B, seq=T, hidden=H)
    pool.tanh(program, x, y, n); pool.tanh_backward(program, y, dy, dx, n)
    pool.relu(program, x, y, n); pool.relu_backward(program, y, dy, dx, n)

attention_mask: [B, T] u32 0/1. The backward kernels overwrite dx, or add into it with
accumulate=True.
"""

from . import KernelFamily

SOURCE = "pooling.wgsl"
WORKGROUP = 64
ENTRIES = ("cls_pool", "cls_pool_backward", "mean_pool", "mean_pool_backward", "tanh_forward",
           "tanh_backward", "relu_forward", "relu_backward")


class PoolingKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def _shape(self, batch, seq, hidden, accumulate=False):
        return self.device.uniform("4I", batch, seq, hidden, int(accumulate))

    def cls(self, program, x, out, *, batch, seq, hidden):
        """out[b] = x[b*T] (the [CLS] rows)."""
        params = self._shape(batch, seq, hidden)
        return self._dispatch(program, "cls_pool", [x, out, params], batch * hidden)

    def cls_backward(self, program, dout, dx, *, batch, seq, hidden, accumulate=False):
        params = self._shape(batch, seq, hidden, accumulate)
        return self._dispatch(program, "cls_pool_backward", [dout, dx, params], batch * seq * hidden)

    def mean(self, program, x, attention_mask, out, *, batch, seq, hidden):
        """out[b] = mean of x's unmasked rows of sequence b."""
        params = self._shape(batch, seq, hidden)
        return self._dispatch(program, "mean_pool", [x, attention_mask, out, params], batch * hidden)

    def mean_backward(self, program, dout, attention_mask, dx, *, batch, seq, hidden,
                      accumulate=False):
        params = self._shape(batch, seq, hidden, accumulate)
        buffers = [dout, attention_mask, dx, params]
        return self._dispatch(program, "mean_pool_backward", buffers, batch * seq * hidden)

    def tanh(self, program, x, y, n):
        """y = tanh(x) over n floats (y may not be x)."""
        return self._dispatch(program, "tanh_forward", [x, y, self.device.uniform("I", n)], n)

    def tanh_backward(self, program, y, dy, dx, n):
        """dx = dy * (1 - y^2) over n floats, from the saved output y."""
        params = self.device.uniform("I", n)
        return self._dispatch(program, "tanh_backward", [y, dy, dx, params], n)

    def relu(self, program, x, y, n):
        """y = max(x, 0) over n floats (y may not be x)."""
        return self._dispatch(program, "relu_forward", [x, y, self.device.uniform("I", n)], n)

    def relu_backward(self, program, y, dy, dx, n):
        """dx = dy where y > 0, else 0, over n floats, from the saved output y."""
        params = self.device.uniform("I", n)
        return self._dispatch(program, "relu_backward", [y, dy, dx, params], n)
