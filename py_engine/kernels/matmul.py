"""GPU matrix products (shaders/matmul.wgsl): the general batched GEMM and the linear layer.

    mm = await MatmulKernels.load(device)            # variant chosen from the adapter
    mm.linear(program, x, w, y, rows=M, in_features=K, out_features=N, bias=b)
    mm.linear_grad_input(program, dy, w, dx, rows=M, in_features=K, out_features=N)
    mm.linear_grad_weight(program, dy, x, dw, rows=M, in_features=K, out_features=N, beta=1.0)
    mm.bias_grad(program, dy, db, rows=M, out_features=N)
    mm.gemm(program, a, b, c, m, n, k, trans_a=..., trans_b=..., batch=B, heads=H)

Variants: "register" (register tiling, no workgroup memory) and "tiled" (workgroup-memory
tiling). `load` picks "register" on every adapter: it is what software adapters (SwiftShader,
lavapipe) run fastest, and on the one real GPU measured (an NVIDIA H200 through wgpu's Vulkan
back end, bench/matmul_variants.py) it ran a decoder's linear layers at 6,000-17,000 GFLOP/s
against 340 for the tiled variant (in its earlier form, private arrays indexed in loops),
slower there even than a naive kernel. Pass `variant=` to override. The one-row products (gemv) take their settings from the adapter: a thread per output
on a software adapter, 32 threads reading neighbouring floats on a GPU (GEMV). Within
"register", a product whose operands are all 16-byte aligned along their contiguous dimension
(see `MatrixView`) runs the vec4 entry, otherwise the scalar one. In both,
one row times a weight (M = 1 in the linear layout, a single product: a decoding step) runs
the gemv entries, which compute only that row: gemv_vec4 and gemv_f16_vec4 (four k a read)
where x's offset, W's offset and row stride and K are multiples of 4, else gemv and gemv_f16.

Operands are Buffers holding a dense row-major matrix, or MatrixViews of a strided one. Frozen
weights may be f16 (`w_half=True`, bytes from `pack_half`). No NumPy here: this runs in the
browser.
"""

import struct

from ..gpu.device import Buffer, row_groups

REGISTER = "register"
TILED = "tiled"
VARIANTS = (REGISTER, TILED)

SOURCE = "matmul.wgsl"

# (trans_a, trans_b) pairs compiled: NN (dX = dY.W), NT (Y = X.W^T), TN (dW = dY^T.X).
LAYOUTS = ((False, False), (False, True), (True, False))
# The f16 B operand is a weight: NT for the forward, NN for the input gradient.
HALF_LAYOUTS = ((False, False), (False, True))

DEFAULTS = {
    REGISTER: {"WG_X": 8, "WG_Y": 8},      # threads per workgroup
    TILED: {"TILE_K": 16, "WG_X": 16, "WG_Y": 16},
}
THREAD_TILE = 4         # every GEMM entry's thread computes a 4 x 4 block of C
# the gemv entries (M = 1, the linear layout): LANES threads per output, WORKGROUP threads. A
# thread per output on software adapters; 32 threads reading neighbouring floats on a GPU.
GEMV = {"software": {"LANES": 1, "WORKGROUP": 64}, "gpu": {"LANES": 32, "WORKGROUP": 256}}
# one row, f32 or f16 weights, read an element or four at a time (kinds and entry names alike)
GEMV_ENTRIES = ("gemv", "gemv_f16", "gemv_vec4", "gemv_f16_vec4")
ENTRIES = {
    REGISTER: {"scalar": "gemm_scalar", "vec4": "gemm_vec4", "f16": "gemm_f16"},
    TILED: {"scalar": "gemm_tiled", "f16": "gemm_tiled_f16"},
}
SUM_COLUMNS_WORKGROUP = 64

_GEMM_PARAMS = "16I2fI"  # shaders/matmul.wgsl struct Gemm


class MatrixView:
    """A row-major matrix (or a batch of them) inside a buffer, in f32 elements (f16 for a
    half-precision weight): element (r, c) of batch item (batch, head) is at
    offset + batch * batch_stride + head * head_stride + r * ld + c.

    Head h of attention over [B, T, H, D] stored as [B*T, H*D] is
    MatrixView(buf, ld=H*D, offset=h*D) for one sequence, and with batch_stride=T*H*D,
    head_stride=D for all (batch, head) pairs at once.
    """

    __slots__ = ("buffer", "ld", "offset", "batch_stride", "head_stride")

    def __init__(self, buffer, ld, offset=0, batch_stride=0, head_stride=0):
        if not isinstance(buffer, Buffer):
            raise TypeError(f"MatrixView needs a Buffer, got {type(buffer).__name__}")
        self.buffer = buffer
        self.ld = ld
        self.offset = offset
        self.batch_stride = batch_stride
        self.head_stride = head_stride

    def with_strides(self, batch_stride, head_stride):
        return MatrixView(self.buffer, self.ld, self.offset, batch_stride, head_stride)

    def aligned(self):
        """True when every stride and offset is a multiple of 4 elements (16 bytes)."""
        return all(v % 4 == 0 for v in (self.ld, self.offset, self.batch_stride, self.head_stride))

    def __repr__(self):
        return (f"MatrixView({self.buffer!r}, ld={self.ld}, offset={self.offset}, "
                f"batch_stride={self.batch_stride}, head_stride={self.head_stride})")


def as_view(x, ld):
    """`x` as a MatrixView; a plain Buffer is a dense matrix with row length `ld`."""
    return x if isinstance(x, MatrixView) else MatrixView(x, ld)


def pack_half(values):
    """f32 values as the packed f16 bytes the w_half kernels read (IEEE half, round to nearest
    even, little-endian; pure Python so the browser can convert a checkpoint too)."""
    values = list(values)
    return struct.pack(f"<{len(values)}e", *values)


def default_variant(device):
    """The variant for `device`: "register" on every adapter (see the module docstring)."""
    return REGISTER


def gemv_settings(device):
    """LANES and WORKGROUP of the one-row products on `device` (GEMV)."""
    return dict(GEMV["software" if device.info.is_software else "gpu"])


class MatmulKernels:
    """The matmul family's compiled entry points for one variant; records dispatches."""

    def __init__(self, device, variant, constants, kernels, sum_columns):
        self.device = device
        self.variant = variant
        self.constants = constants
        self._kernels = kernels
        self._sum_columns = sum_columns
        self._no_bias = device.create_buffer(4, label="no bias")
        # C rows x columns a workgroup covers (every GEMM entry's thread owns a 4 x 4 block)
        block = (constants["WG_Y"] * THREAD_TILE, constants["WG_X"] * THREAD_TILE)
        self.blocks = {"scalar": block, "f16": block, "vec4": block}
        if "LANES" in constants:
            outputs = constants["WORKGROUP"] // constants["LANES"]
            self.blocks.update((kind, (1, outputs)) for kind in GEMV_ENTRIES)

    @classmethod
    async def load(cls, device, variant=None, constants=None, gemv=True):
        """Compile the entry points of `variant` ("register", "tiled"; default from the
        adapter). `constants` overrides workgroup sizes and the tiled slab's depth (DEFAULTS) and
        the one-row products' LANES and WORKGROUP (GEMV); others are refused. Without
        `gemv`, one row runs the GEMM entries too (what bench/decode_products.py compares)."""
        variant = variant or default_variant(device)
        if variant not in VARIANTS:
            raise ValueError(f"unknown matmul variant {variant!r}; choose one of {VARIANTS}")
        unknown = sorted(set(constants or {}) - set(DEFAULTS[variant]) - set(GEMV["gpu"]))
        if unknown:
            raise ValueError(f"unknown constants {unknown} for the {variant} variant; it takes "
                             f"{sorted(DEFAULTS[variant]) + sorted(GEMV['gpu'])}")
        constants = {**DEFAULTS[variant], **(constants or {})}
        entries = dict(ENTRIES[variant])
        kernels = {}
        for kind, entry in entries.items():
            for trans_a, trans_b in HALF_LAYOUTS if kind == "f16" else LAYOUTS:
                specialized = {**constants, "TRANS_A": trans_a, "TRANS_B": trans_b}
                kernels[kind, trans_a, trans_b] = await device.kernel(SOURCE, entry, specialized)
        gemv_constants = gemv_settings(device)
        gemv_constants.update((k, v) for k, v in constants.items() if k in gemv_constants)
        for kind in GEMV_ENTRIES if gemv else ():     # each kind is its entry's name
            specialized = {**constants, **gemv_constants, "TRANS_A": False, "TRANS_B": True}
            kernels[kind, False, True] = await device.kernel(SOURCE, kind, specialized)
        sum_columns = await device.kernel(SOURCE, "sum_columns",
                                          {"WORKGROUP": SUM_COLUMNS_WORKGROUP})
        return cls(device, variant, {**constants, **gemv_constants}, kernels, sum_columns)

    # --- the general product ----------------------------------------------------------

    def gemm(self, program, a, b, c, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0,
             beta=0.0, bias=None, batch=1, heads=1, b_half=False):
        """Record C = alpha * op(A) . op(B) + bias + beta * C for `batch * heads` products.

        op(A) is [m, k]: A stored [m, k], or [k, m] when trans_a. op(B) is [k, n]: B stored
        [k, n], or [n, k] when trans_b. a, b, c are Buffers (dense, batch strides 0) or
        MatrixViews; bias is a Buffer of n floats or None; b_half reads B as packed f16.
        beta == 0 never reads C. Product z = batch_index * heads + head_index.
        """
        if min(m, n, k, batch, heads) < 1:
            raise ValueError(f"gemm needs positive sizes, got m={m} n={n} k={k} "
                             f"batch={batch} heads={heads}")
        a = as_view(a, m if trans_a else k)
        b = as_view(b, k if trans_b else n)
        c = as_view(c, n)
        if c.buffer is a.buffer or c.buffer is b.buffer or (bias is not None and bias is c.buffer):
            raise ValueError("gemm cannot write C into a buffer it also reads (WebGPU forbids "
                             "binding one buffer as writable and read-only in one dispatch)")
        kind = self._kind(a, b, m, n, k, trans_a, trans_b, b_half, batch * heads)
        kernel = self._kernels.get((kind, trans_a, trans_b))
        if kernel is None:
            raise ValueError(f"no {'f16 ' if b_half else ''}gemm compiled for trans_a={trans_a}, "
                             f"trans_b={trans_b}")
        params = self.device.uniform(
            _GEMM_PARAMS, m, n, k, a.ld, b.ld, c.ld, a.offset, b.offset, c.offset, heads,
            a.batch_stride, a.head_stride, b.batch_stride, b.head_stride,
            c.batch_stride, c.head_stride, alpha, beta, int(bias is not None))
        block_m, block_n = self.blocks[kind]
        groups = (-(-n // block_n), -(-m // block_m), batch * heads)
        if kind.startswith("gemv"):     # one row: the workgroups past the limit spill into y
            groups = row_groups(self.device, groups[0])
        bias = self._no_bias if bias is None else bias
        program.dispatch(kernel, [a.buffer, b.buffer, c.buffer, bias, params], groups)
        return program

    def entry_for(self, a, b, m, n, k, trans_a=False, trans_b=False, b_half=False, batch=1, heads=1):
        """The entry point `gemm` would dispatch for these operands (for tests and benchmarks)."""
        a = as_view(a, m if trans_a else k)
        b = as_view(b, k if trans_b else n)
        kind = self._kind(a, b, m, n, k, trans_a, trans_b, b_half, batch * heads)
        return self._kernels[kind, trans_a, trans_b].entry

    def _kind(self, a, b, m, n, k, trans_a, trans_b, b_half, products=1):
        one_row = m == 1 and trans_b and not trans_a and products == 1
        if one_row and ("gemv", False, True) in self._kernels:
            # four k a read: x and W's rows start on 16 bytes (a half row's offset counts
            # halves, and four of them are 8 bytes: the f16 entry reads them as two words)
            whole = k % 4 == 0 and a.offset % 4 == 0 and b.offset % 4 == 0 and b.ld % 4 == 0
            return ("gemv_f16" if b_half else "gemv") + ("_vec4" if whole else "")
        if b_half:
            return "f16"
        if ("vec4", trans_a, trans_b) in self._kernels:
            # Four k per step with no tail, and whole vectors along each contiguous dimension.
            a_extent = m if trans_a else k
            b_extent = k if trans_b else n
            if (k % 4 == 0 and a_extent % 4 == 0 and b_extent % 4 == 0
                    and a.aligned() and b.aligned()):
                return "vec4"
        return "scalar"

    # --- the linear layer: weights [out_features, in_features] ---------------------------

    def linear(self, program, x, w, y, rows, in_features, out_features, bias=None, alpha=1.0,
               beta=0.0, w_half=False):
        """y[rows, out] = alpha * x[rows, in] . w[out, in]^T + bias + beta * y."""
        return self.gemm(program, x, w, y, rows, out_features, in_features, trans_b=True,
                         alpha=alpha, beta=beta, bias=bias, b_half=w_half)

    def linear_grad_input(self, program, dy, w, dx, rows, in_features, out_features, alpha=1.0,
                          beta=0.0, w_half=False):
        """dx[rows, in] = alpha * dy[rows, out] . w[out, in] + beta * dx."""
        return self.gemm(program, dy, w, dx, rows, in_features, out_features, alpha=alpha,
                         beta=beta, b_half=w_half)

    def linear_grad_weight(self, program, dy, x, dw, rows, in_features, out_features, alpha=1.0,
                           beta=0.0):
        """dw[out, in] = alpha * dy[rows, out]^T . x[rows, in] + beta * dw (beta=1 accumulates)."""
        return self.gemm(program, dy, x, dw, out_features, in_features, rows, trans_a=True,
                         alpha=alpha, beta=beta)

    def bias_grad(self, program, dy, db, rows, out_features, beta=0.0, ld=None, alpha=1.0):
        """db[out] = alpha * (sum over rows of dy[rows, out]) + beta * db (beta=1 accumulates;
        alpha: a LoRA's scale, for its lora_B bias)."""
        if dy is db:
            raise ValueError("bias_grad cannot write into its input")
        params = self.device.uniform("IIIff", rows, out_features, ld or out_features, beta, alpha)
        groups = -(-out_features // SUM_COLUMNS_WORKGROUP)
        program.dispatch(self._sum_columns, [dy, db, params], groups)
        return program
