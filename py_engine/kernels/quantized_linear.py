"""Linear layers over quantized frozen base weights, int8 or int4 with per-group f32 scales
(shaders/quantized_linear.wgsl); NumPy reference: py_engine/ops/quantize.py.

    ql = await QuantizedLinearKernels.load(device)
    w = ql.allocate(out_features, in_features, "int4", group_size=64)   # packed + scales buffers
    ql.quantize(program, w_f32, w)                                      # or source_format="f16"/"bf16"
    ql.linear(program, x, w, y, rows, bias=b)                           # y = x . W^T + b
                                                                        # (rows = 1: quantized_gemv)
    ql.linear_grad_input(program, dy, w, dx, rows)                      # dx = dy . W

x [rows, in], y [rows, out], dy [rows, out], dx [rows, in], bias [out]: dense row-major f32.
A QuantizedWeightBuffers holds `packed` (u32 words, BITS-bit two's-complement fields,
little-endian: int8 four per word, int4 eight per word, row-major over [out, in]) and `scales`
(f32 [out, in / group_size]); see py_engine/ops/quantize.py for the quantization rule.
`linear` and `linear_grad_input` take alpha and beta as MatmulKernels' do (out = alpha * product
+ bias + beta * out; beta=1 accumulates, as the LoRA backward's dx needs).

Also here, in pure Python: the bytes a weight takes under each storage mode (`weight_bytes`;
which weights a model compresses is backends.gpu_backend.storage_of's rule). No NumPy: this runs
in the browser.
"""

from ..gpu import require_floats, row_groups
from .matmul import gemv_settings

SOURCE = "quantized_linear.wgsl"
MODES = ("int8", "int4")
STORAGE_MODES = ("f32", "f16", "int8", "int4")
BITS = {"int8": 8, "int4": 4}
SOURCE_FORMATS = {"f32": 0, "f16": 1, "bf16": 2}
DEFAULT_GROUP = 64
DEFAULTS = {"WG_X": 8, "WG_Y": 8}
# A thread's block of the output (shaders/quantized_linear.wgsl): rows x out features in the
# forward, rows x in features in the input gradient.
FORWARD_TILE = (4, 4)
GRAD_INPUT_TILE = (4, 8)
QUANTIZE_WORKGROUP = 64

_PARAMS = "8I2f"  # shaders/quantized_linear.wgsl struct Params


def check_layout(in_features, group_size):
    """Raise ValueError unless rows of `in_features` split into whole groups of whole words."""
    if not isinstance(group_size, int) or group_size < 8 or group_size % 8:
        raise ValueError(f"group_size must be a positive multiple of 8, got {group_size!r}")
    if in_features < 1 or in_features % group_size:
        raise ValueError(f"in_features {in_features} is not a multiple of group_size {group_size}")


class QuantizedWeightBuffers:
    """A quantized [out_features, in_features] weight on the GPU: `packed` and `scales`
    Buffers, `mode` ("int8" or "int4") and `group_size`."""

    __slots__ = ("packed", "scales", "shape", "mode", "group_size")

    def __init__(self, packed, scales, shape, mode, group_size=DEFAULT_GROUP):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        out_f, in_f = shape
        check_layout(in_f, group_size)
        if packed.size < packed_bytes(out_f * in_f, mode):
            raise ValueError(f"packed holds {packed.size} bytes; "
                             f"{packed_bytes(out_f * in_f, mode)} needed")
        require_floats(scales, out_f * in_f // group_size, "scales")
        self.packed, self.scales = packed, scales
        self.shape, self.mode, self.group_size = (out_f, in_f), mode, group_size

    @property
    def bits(self):
        return BITS[self.mode]

    @property
    def nbytes(self):
        return weight_bytes(self.shape[0] * self.shape[1], self.mode, self.group_size)

    def __repr__(self):
        return f"QuantizedWeightBuffers({self.shape}, {self.mode}, group_size={self.group_size})"


class QuantizedLinearKernels:
    """Compiled entry points for int8 and int4; records dispatches."""

    def __init__(self, device, constants, kernels):
        self.device = device
        self.constants = constants
        self._kernels = kernels
        self._no_bias = device.create_buffer(4, label="no bias")
        self.block_r = constants["WG_Y"] * FORWARD_TILE[0]     # both tiles have 4 rows
        self.block_o = constants["WG_X"] * FORWARD_TILE[1]
        self.block_i = constants["WG_X"] * GRAD_INPUT_TILE[1]

    @classmethod
    async def load(cls, device, constants=None, modes=MODES, source_formats=tuple(SOURCE_FORMATS),
                   gemv=True):
        """Compile the products for `modes` and quantize_weight for each of `source_formats`
        ("f32", "f16", "bf16"). `constants` overrides the workgroup sizes (DEFAULTS, and
        LANES / WORKGROUP of the one-row product: matmul.gemv_settings); without `gemv`, one row runs the
        blocked forward too (what bench/decode_products.py compares)."""
        # quantized_gemv's LANES and WORKGROUP: the matmul gemv entries' for this adapter
        gemv_constants = gemv_settings(device)
        unknown = sorted(set(constants or {}) - set(DEFAULTS) - set(gemv_constants))
        if unknown:
            raise ValueError(f"unknown constants {unknown}; the products take "
                             f"{sorted(DEFAULTS) + sorted(gemv_constants)}")
        gemv_constants = {**gemv_constants,
                          **{k: v for k, v in (constants or {}).items() if k in gemv_constants}}
        constants = {**DEFAULTS, **{k: v for k, v in (constants or {}).items() if k in DEFAULTS}}
        kernels = {}
        for mode in modes:
            specialized = {**constants, "BITS": BITS[mode]}
            for entry in ("quantized_linear_forward", "quantized_linear_grad_input"):
                kernels[entry, mode] = await device.kernel(SOURCE, entry, specialized)
            for entry in ("quantized_gemv", "quantized_gemv_vec4") if gemv else ():
                kernels[entry, mode] = await device.kernel(SOURCE, entry, {**specialized, **gemv_constants})
            for fmt in source_formats:
                kernels["quantize_weight", mode, fmt] = await device.kernel(
                    SOURCE, "quantize_weight", {"BITS": BITS[mode], "WORKGROUP": QUANTIZE_WORKGROUP,
                                                "SOURCE_FORMAT": SOURCE_FORMATS[fmt]})
        return cls(device, {**constants, **gemv_constants}, kernels)

    def allocate(self, out_features, in_features, mode, group_size=DEFAULT_GROUP, label=None):
        """Zeroed buffers for a quantized [out_features, in_features] weight."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        check_layout(in_features, group_size)
        n = out_features * in_features
        packed = self.device.create_buffer(packed_bytes(n, mode), label=label and label + " q")
        scales = self.device.create_buffer(4 * (n // group_size),
                                           label=label and label + " scales")
        return QuantizedWeightBuffers(packed, scales, (out_features, in_features), mode, group_size)

    def _kernel(self, key):
        kernel = self._kernels.get(key)
        if kernel is None:
            raise ValueError(f"{key} was not compiled; pass it to QuantizedLinearKernels.load")
        return kernel

    def _params(self, rows, w, has_bias=False, alpha=1.0, beta=0.0):
        out_f, in_f = w.shape
        groups = in_f // w.group_size
        return self.device.uniform(_PARAMS, rows, in_f, out_f, w.group_size, groups,
                                   int(has_bias), out_f * groups, 0, alpha, beta)

    def _check_shape(self, w, in_features, out_features):
        if not isinstance(w, QuantizedWeightBuffers):
            raise TypeError(f"expected QuantizedWeightBuffers, got {type(w).__name__}")
        for given, actual, name in ((in_features, w.shape[1], "in_features"),
                                    (out_features, w.shape[0], "out_features")):
            if given is not None and given != actual:
                raise ValueError(f"{name} {given} does not match the weight's shape {w.shape}")

    def quantize(self, program, source, w, source_format="f32"):
        """Record w.packed, w.scales = quantize(source): source holds the [out, in] weight as
        f32, or as packed f16 / bf16 pairs (element e in word e // 2, low half first)."""
        if source_format not in SOURCE_FORMATS:
            raise ValueError(f"source_format must be one of {tuple(SOURCE_FORMATS)}, "
                             f"got {source_format!r}")
        n = w.shape[0] * w.shape[1]
        need = 4 * n if source_format == "f32" else 2 * n
        if source.size < need:
            raise ValueError(f"source holds {source.size} bytes; {need} needed")
        if source is w.packed or source is w.scales:
            raise ValueError("quantize cannot write into its source")
        from ..gpu import grid_groups

        kernel = self._kernel(("quantize_weight", w.mode, source_format))
        total_groups = n // w.group_size
        program.dispatch(kernel, [self._params(0, w), source, w.packed, w.scales],
                         grid_groups(self.device, total_groups, QUANTIZE_WORKGROUP))
        return program

    def linear(self, program, x, w, y, rows, in_features=None, out_features=None, bias=None,
               alpha=1.0, beta=0.0):
        """y[rows, out] = alpha * x[rows, in] . W^T + bias + beta * y."""
        self._check_shape(w, in_features, out_features)
        out_f, in_f = w.shape
        _check_rows(rows)
        require_floats(x, rows * in_f, "x")
        require_floats(y, rows * out_f, "y")
        if bias is not None:
            require_floats(bias, out_f, "bias")
        if y is x or y is bias:
            raise ValueError("linear cannot write y into a buffer it also reads")
        params = self._params(rows, w, bias is not None, alpha, beta)
        groups = (-(-out_f // self.block_o), -(-rows // self.block_r))
        entry = self.entry_for(rows, w)
        if entry != "quantized_linear_forward":
            outputs = self.constants["WORKGROUP"] // self.constants["LANES"]
            groups = row_groups(self.device, -(-out_f // outputs))
        program.dispatch(self._kernel((entry, w.mode)),
                         [params, x, w.packed, w.scales,
                          self._no_bias if bias is None else bias, y], groups)
        return program

    def entry_for(self, rows, w):
        """The entry point linear() dispatches for `rows` rows of x times the weight `w`: one row
        runs a gemv entry (reading four words a step where every row of W is a whole number of
        them), more rows the blocked forward."""
        if rows == 1 and ("quantized_gemv", w.mode) in self._kernels:
            words = w.shape[1] // (32 // BITS[w.mode])
            return "quantized_gemv_vec4" if words % 4 == 0 else "quantized_gemv"
        return "quantized_linear_forward"

    def linear_grad_input(self, program, dy, w, dx, rows, in_features=None, out_features=None,
                          alpha=1.0, beta=0.0):
        """dx[rows, in] = alpha * dy[rows, out] . W + beta * dx (beta=1 accumulates)."""
        self._check_shape(w, in_features, out_features)
        out_f, in_f = w.shape
        _check_rows(rows)
        require_floats(dy, rows * out_f, "dy")
        require_floats(dx, rows * in_f, "dx")
        if dx is dy:
            raise ValueError("linear_grad_input cannot write dx into dy")
        params = self._params(rows, w, False, alpha, beta)
        groups = (-(-in_f // self.block_i), -(-rows // self.block_r))
        program.dispatch(self._kernel(("quantized_linear_grad_input", w.mode)),
                         [params, dy, w.packed, w.scales, dx], groups)
        return program


def _check_rows(rows):
    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive int, got {rows!r}")


# --- memory ------------------------------------------------------------------------------

def packed_bytes(n, mode):
    """Bytes of the packed integers of n elements (whole u32 words)."""
    per_word = 32 // BITS[mode]
    return 4 * -(-n // per_word)


def weight_bytes(n, mode, group_size=DEFAULT_GROUP):
    """Bytes n weight elements take: f32 4n, f16 2n, int8 n + 4n/G, int4 n/2 + 4n/G (the f32
    scales of groups of G)."""
    if mode == "f32":
        return 4 * n
    if mode == "f16":
        return 2 * n
    if mode in MODES:
        if n % group_size:
            raise ValueError(f"{n} elements do not split into groups of {group_size}")
        return packed_bytes(n, mode) + 4 * (n // group_size)
    raise ValueError(f"storage mode must be one of {STORAGE_MODES}, got {mode!r}")
