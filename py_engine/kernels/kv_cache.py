"""Appending rows to a KV cache on the GPU (shaders/kv_cache.wgsl), at a row changeable between
replays of one recorded program.

    kv = await KVCacheKernels.load(device)
    position = Variable(0)                                    # py_engine.gpu.Variable
    kv.append(program, k_new, k_cache, rows=1, width=Hkv*D, row=position)
    position.set(past)            # before each replay: the new rows land at past, past+1, ...
"""

from . import KernelFamily
from ..gpu import Variable, require_floats, value_of

SOURCE = "kv_cache.wgsl"
WORKGROUP = 256
ENTRIES = ("kv_append",)


class KVCacheKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def append(self, program, src, cache, rows, width, row=0):
        """cache rows [row, row + rows) = src [rows, width]; `row` is an int or a Variable
        (changeable per replay)."""
        if rows < 1 or width < 1:
            raise ValueError(f"kv_append needs rows, width >= 1; got {rows}, {width}")
        capacity = cache.size // (4 * width)
        fits = lambda r: 0 <= r and r + rows <= capacity
        if isinstance(row, Variable):
            row.require(fits, f"a cache of {capacity} rows ({rows} appended)")
        elif not fits(row):
            raise ValueError(f"rows {row}..{row + rows - 1} do not fit a cache of {capacity} rows")
        require_floats(src, rows * width, "src")
        params = self.device.uniform("4I", rows * width, width, row, 0)
        return self._dispatch(program, "kv_append", [src, cache, params], rows * width)
