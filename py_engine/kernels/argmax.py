"""The next token's choice on the GPU (shaders/argmax.wgsl); NumPy reference:
py_engine/ops/argmax.py.

    am = await ArgmaxKernels.load(device)
    out = device.create_buffer(4 * am.out_words(rows))
    am.rows(program, logits, out, rows=R, cols=C)     # logits [R, C] f32
    program.read(out)
    ...
    [(index, problem), ...] = decode_choices(data)      # problem: None, "NaN" or "inf"

    out = device.create_buffer(4 * am.candidate_words(rows, capacity))
    am.candidates(program, logits, out, rows=R, cols=C, capacity=N,
                  inv_temperature=1 / 0.7, top_k=0, tail=0.05)   # each may be a Variable
    [RowCandidates, ...] = decode_candidates(data, cols=C, capacity=N)

Greedy generation reads the 8 bytes of a row's choice instead of the row, and sampling the
row's likeliest tokens (py_engine/generate; py_engine/generate/sampling.py draws among them).
A row holding a NaN or +inf gets a problem: its index or candidates mean nothing (the host
says why).
"""

import struct
from dataclasses import dataclass

from ..gpu import require_floats, row_groups
from . import KernelFamily

SOURCE = "argmax.wgsl"
POS_INF_FLAG = 1      # the row holds +inf
NAN_FLAG = 2          # the row holds a NaN
WORDS_PER_ROW = 2     # index, flags
HEADER_WORDS = 5      # a row's candidates: count, flags, cut bin, largest bits, total bits
BINS = 256            # the histogram of sampling_candidates
BIN_SCALE = 8.0       # its bins per unit of (max - x) / temperature


def problem_of(flags):
    """What makes a row's argmax meaningless: "NaN", "inf" or None."""
    return "NaN" if flags & NAN_FLAG else "inf" if flags & POS_INF_FLAG else None


def decode_choices(data):
    """[(index, problem)] per row of an output buffer read back (bytes or memoryview)."""
    words = struct.unpack(f"<{len(data) // 4}I", bytes(data))
    return [(words[i], problem_of(words[i + 1])) for i in range(0, len(words), WORDS_PER_ROW)]


@dataclass
class RowCandidates:
    """A row's likeliest tokens as sampling_candidates picked them: every token whose value is
    above some threshold, which is all that top-k keeps or all but `tail` of the mass.

    tokens: their indices, ascending; logits: their values (f32, as Python floats);
    count: how many there were (more than len(tokens) when the capacity ran out);
    size: the row's length; largest: its largest value; total: the sum over the whole row
    of exp((x - largest) * inv_temperature), in f32; cut: the last histogram bin taken;
    problem: None, "NaN" or "inf" (then nothing else means anything)."""

    tokens: list
    logits: list
    count: int
    size: int
    largest: float
    total: float
    cut: int
    problem: str = None

    @property
    def complete(self):
        """Whether every candidate came back (the capacity held them)."""
        return self.count == len(self.tokens)


def decode_candidates(data, cols, capacity):
    """[RowCandidates] per row of a sampling_candidates output read back (rows of `cols`
    values, room for `capacity` candidates each)."""
    words = struct.unpack(f"<{len(data) // 4}I", bytes(data))
    floats = struct.unpack(f"<{len(words)}f", bytes(data))
    stride = HEADER_WORDS + 2 * capacity
    rows = []
    for base in range(0, len(words) - stride + 1, stride):
        count, flags, cut = words[base:base + 3]
        n = min(count, capacity)
        pairs = sorted((words[base + HEADER_WORDS + 2 * i], floats[base + HEADER_WORDS + 2 * i + 1])
                       for i in range(n))
        rows.append(RowCandidates([t for t, _ in pairs], [v for _, v in pairs], count, cols,
                                  floats[base + 3], floats[base + 4], cut, problem_of(flags)))
    return rows


class ArgmaxKernels(KernelFamily):
    SOURCE = SOURCE
    ENTRIES = ("argmax_rows", "sampling_candidates")
    WORKGROUP = 256

    @staticmethod
    def out_words(rows):
        return WORDS_PER_ROW * rows

    @staticmethod
    def candidate_words(rows, capacity):
        return rows * (HEADER_WORDS + 2 * capacity)

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

    def candidates(self, program, logits, out, *, rows, cols, capacity, inv_temperature, top_k,
                   tail):
        """Each row's sampling candidates into out (candidate_words(rows, capacity) words):
        the tokens above the lowest cut that leaves at most `tail` of the row's mass past it
        and keeps at least `top_k` tokens. inv_temperature, top_k and tail may be Variables
        (f32, u32, f32), set between replays."""
        if rows < 1 or cols < 1 or capacity < 1:
            raise ValueError(f"sampling candidates need at least one row, one column and room "
                             f"for one candidate, got {rows} x {cols} and {capacity}")
        require_floats(logits, rows * cols, "logits")
        require_floats(out, self.candidate_words(rows, capacity), "the candidates' output")
        params = self.device.uniform("4I2f", rows, cols, capacity, top_k, inv_temperature, tail)
        program.dispatch(self._kernels["sampling_candidates"], [logits, out, params],
                         row_groups(self.device, rows))
        return params
