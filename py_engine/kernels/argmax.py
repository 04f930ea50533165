"""Row argmax on the GPU (shaders/argmax.wgsl); NumPy reference: py_engine/ops/argmax.py.

    am = await ArgmaxKernels.load(device)
    out = device.create_buffer(4 * am.out_words(rows))
    am.rows(program, logits, out, rows=R, cols=C)     # logits [R, C] f32
    program.read(out)
    ...
    [(index, problem), ...] = decode_choices(data)      # problem: None, "NaN" or "inf"

Greedy generation reads the 8 bytes of a row's choice instead of the row (py_engine/generate).
A row holding a NaN or +inf gets a problem: its index means nothing (the host says why).
"""

import struct

from ..gpu import require_floats, row_groups
from . import KernelFamily

SOURCE = "argmax.wgsl"
POS_INF_FLAG = 1      # the row holds +inf
NAN_FLAG = 2          # the row holds a NaN
WORDS_PER_ROW = 2     # index, flags


def problem_of(flags):
    """What makes a row's argmax meaningless: "NaN", "inf" or None."""
    return "NaN" if flags & NAN_FLAG else "inf" if flags & POS_INF_FLAG else None


def decode_choices(data):
    """[(index, problem)] per row of an output buffer read back (bytes or memoryview)."""
    words = struct.unpack(f"<{len(data) // 4}I", bytes(data))
    return [(words[i], problem_of(words[i + 1])) for i in range(0, len(words), WORDS_PER_ROW)]


class ArgmaxKernels(KernelFamily):
    SOURCE = SOURCE
    ENTRIES = ("argmax_rows",)
    WORKGROUP = 256

    @staticmethod
    def out_words(rows):
        return WORDS_PER_ROW * rows

    def rows(self, program, logits, out, *, rows, cols):
        """out[2r], out[2r + 1] = the first argmax of row r of logits, and its flags."""
        if rows < 1 or cols < 1:
            raise ValueError(f"argmax needs at least one row and one column, got {rows} x {cols}")
        require_floats(logits, rows * cols, "logits")
        require_floats(out, self.out_words(rows), "the argmax output")
        params = self.device.uniform("2I", rows, cols)
        program.dispatch(self._kernels["argmax_rows"], [logits, out, params],
                         row_groups(self.device, rows))
        return program
