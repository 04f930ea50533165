"""Appending rows to a KV cache on the GPU (shaders/kv_cache.wgsl), at a row changeable between
replays of one recorded program.

    kv = await KVCacheKernels.load(device)
    position = CachePosition()
    kv.append(program, k_new, k_cache, rows=1, width=Hkv*D, position=position)
    position.set(past)            # before each replay: the new rows land at past, past+1, ...

CachePosition also moves other recorded uniforms by the same position (`track`): a u32 field
at a byte offset holding the position, e.g. the attention's `past`.
"""

import struct

from . import KernelFamily
from ..gpu import require_floats

SOURCE = "kv_cache.wgsl"
WORKGROUP = 256
ENTRIES = ("kv_append",)


class CachePosition:
    """The cache row of recorded appends (and of any tracked uniform field), set per replay."""

    def __init__(self, position=0):
        self.position = position
        self._fields = []        # (uniform buffer, byte offset, highest valid position)

    def track(self, buffer, byte_offset, limit):
        """Rewrite buffer's u32 at byte_offset on set(); positions above `limit` are refused."""
        self._fields.append((buffer, byte_offset, limit))

    def set(self, position):
        for _, _, limit in self._fields:
            if not 0 <= position <= limit:
                raise ValueError(f"cache position {position} is outside 0..{limit}")
        data = struct.pack("<I", position)
        for buffer, offset, _ in self._fields:
            buffer.write(data, offset=offset)
        self.position = position


class KVCacheKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def append(self, program, src, cache, rows, width, position=None, row=0):
        """cache rows [row, row + rows) = src [rows, width]; with `position` (a CachePosition)
        the row is its current position, changeable per replay."""
        if rows < 1 or width < 1:
            raise ValueError(f"kv_append needs rows, width >= 1; got {rows}, {width}")
        if position is not None:
            row = position.position
        capacity = cache.size // (4 * width)
        if row < 0 or row + rows > capacity:
            raise ValueError(f"rows {row}..{row + rows - 1} do not fit a cache of {capacity} rows")
        require_floats(src, rows * width, "src")
        params = self.device.uniform("4I", rows * width, width, row, 0)
        if position is not None:
            position.track(params, 8, capacity - rows)
        return self._dispatch(program, "kv_append", [src, cache, params], rows * width)
