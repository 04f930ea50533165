"""Copying blocks of rows and columns between row-major f32 matrices on the GPU
(shaders/columns.wgsl); NumPy reference: py_engine/ops/columns.py.

    cols = await ColumnKernels.load(device)
    cols.copy_block(program, src, dst, rows, width, src=(src_cols, src_col, src_row),
                    dst=(dst_cols, dst_col, dst_row))

A fused projection's split is one copy per part (src_col = the part's offset), its backward one
copy per part into dst_col; src_row may be a Variable (the rows of the position table a
decoding step reads). transpose(program, src, dst, rows, cols, beta) writes src^T into dst
(beta=1 adds it).
"""

from . import KernelFamily
from ..gpu import Variable, require_floats

SOURCE = "columns.wgsl"
WORKGROUP = 256
ENTRIES = ("copy_block", "transpose")


class ColumnKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def copy_block(self, program, src, dst, rows, width, src_at, dst_at):
        """dst[dst_row + r, dst_col + c] = src[src_row + r, src_col + c] for r < rows, c <
        width; src_at and dst_at are (cols, col, row) of each matrix; src_at's row may be a
        Variable."""
        (src_cols, src_col, src_row), (dst_cols, dst_col, dst_row) = src_at, dst_at
        if rows < 1 or width < 1:
            raise ValueError(f"copy_block needs rows, width >= 1; got {rows}, {width}")
        if src_col + width > src_cols or dst_col + width > dst_cols:
            raise ValueError(f"columns {src_col}..{src_col + width - 1} -> {dst_col}.. do not fit "
                             f"rows of {src_cols} -> {dst_cols}")
        src_rows = src.size // (4 * src_cols)
        fits = lambda r: 0 <= r and r + rows <= src_rows
        if isinstance(src_row, Variable):
            src_row.require(fits, f"a source of {src_rows} rows ({rows} read)")
        elif not fits(src_row):
            raise ValueError(f"rows {src_row}..{src_row + rows - 1} do not fit a source of {src_rows} rows")
        require_floats(dst, (dst_row + rows) * dst_cols, "dst")
        params = self.device.uniform("8I", rows * width, width, src_cols, src_col, src_row,
                                     dst_cols, dst_col, dst_row)
        return self._dispatch(program, "copy_block", [src, dst, params], rows * width)

    def transpose(self, program, src, dst, rows, cols, beta=0.0):
        """dst [cols, rows] = src [rows, cols]^T + beta * dst (beta 0 or 1)."""
        if rows < 1 or cols < 1:
            raise ValueError(f"transpose needs rows, cols >= 1; got {rows}, {cols}")
        if beta not in (0.0, 1.0):
            raise ValueError(f"transpose's beta is 0 or 1, got {beta}")
        if src is dst:
            raise ValueError("transpose cannot write into its source")
        require_floats(src, rows * cols, "src")
        require_floats(dst, rows * cols, "dst")
        params = self.device.uniform("IIfI", rows, cols, beta, 0)
        return self._dispatch(program, "transpose", [src, dst, params], rows * cols)
