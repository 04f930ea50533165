"""DoRA's row and column steps on the GPU (shaders/dora.wgsl); NumPy reference:
py_engine/ops/dora.py. The products are the matmul family's.

    dora = await DoraKernels.load(device)
    dora.adapted_weight(program, matmul, w, lora_a, lora_b, adapted, out_features=N,
                        in_features=K, r=R, scaling=s)                  # V = W + s B.A
    dora.weight_norm(program, adapted, magnitude, norm, scale, rows=N, cols=K)
    dora.scale_columns(program, z, scale, out, rows=M, cols=N, bias=b)  # z * scale (+ b)
    dora.magnitude_grad(program, dy, z, norm, dmagnitude, rows=M, cols=N, accumulate=True)
    dora.scale_rows(program, scale, merged, rows=N, cols=K)            # merged = scale * V

W, V, merged: [out, in] f32 (DoRA needs the base weight in f32: its row norms are taken
with the adapter's update added); magnitude, norm, scale, b, dmagnitude: [out]; z, dy, out:
[rows, out].
"""

from . import KernelFamily
from ..gpu import require_floats, row_groups

SOURCE = "dora.wgsl"
WORKGROUP = 64
ENTRIES = ("dora_weight_norm", "dora_scale_columns", "dora_magnitude_grad", "dora_scale_rows")


class DoraKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def _params(self, rows, cols, flag=False):
        if rows < 1 or cols < 1:
            raise ValueError(f"DoRA kernels need rows, cols >= 1, got {rows}, {cols}")
        return self.device.uniform("III", rows, cols, int(flag))

    @staticmethod
    def adapted_weight(program, matmul, w, lora_a, lora_b, adapted, out_features, in_features,
                       r, scaling):
        """adapted = W + scaling * B.A (a copy of W, then one GEMM into it; in place when
        adapted is w)."""
        require_floats(adapted, out_features * in_features, "adapted")
        if adapted is not w:
            program.copy(w, adapted)
        return matmul.gemm(program, lora_b, lora_a, adapted, out_features, in_features, r,
                           alpha=scaling, beta=1.0)

    def weight_norm(self, program, adapted, magnitude, norm, scale, rows, cols):
        for buffer, floats, name in ((adapted, rows * cols, "adapted"), (magnitude, rows, "magnitude"),
                                     (norm, rows, "norm"), (scale, rows, "scale")):
            require_floats(buffer, floats, name)
        program.dispatch(self._kernels["dora_weight_norm"],
                         [adapted, magnitude, self._params(rows, cols), norm, scale],
                         row_groups(self.device, rows))
        return program

    def scale_columns(self, program, z, scale, out, rows, cols, bias=None):
        for buffer, floats, name in ((z, rows * cols, "z"), (out, rows * cols, "out"),
                                     (scale, cols, "scale")):
            require_floats(buffer, floats, name)
        if bias is not None:
            require_floats(bias, cols, "bias")
        params = self._params(rows, cols, bias is not None)
        # Without a bias the shader does not read binding 3; scale stands in for it.
        return self._dispatch(program, "dora_scale_columns",
                              [z, scale, params, scale if bias is None else bias, out], rows * cols)

    def magnitude_grad(self, program, dy, z, norm, dmagnitude, rows, cols, accumulate=False):
        for buffer, floats, name in ((dy, rows * cols, "dy"), (z, rows * cols, "z"),
                                     (norm, cols, "norm"), (dmagnitude, cols, "dmagnitude")):
            require_floats(buffer, floats, name)
        return self._dispatch(program, "dora_magnitude_grad",
                              [dy, norm, self._params(rows, cols, accumulate), z, dmagnitude], cols)

    def scale_rows(self, program, scale, merged, rows, cols):
        require_floats(merged, rows * cols, "merged")
        require_floats(scale, rows, "scale")
        return self._dispatch(program, "dora_scale_rows", [scale, merged, self._params(rows, cols)],
                              rows * cols)
