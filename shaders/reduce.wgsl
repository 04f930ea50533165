// Row reductions: out[r] = sum_j x[r * cols + j] for a row-major [rows, cols] f32 matrix.
//
//   sum_rows: one workgroup per row; each thread sums a strided slice of the row, then the
//             workgroup combines the partial sums in a tree through workgroup memory.
//
// A full sum of n values is sum_rows over [1, n]; a large one goes in two passes
// ([k, n/k], then [1, k]) so that every workgroup has work. The backward of a sum broadcasts
// dy[r] back over row r (elementwise). Pairwise (tree) summation keeps the f32 rounding error
// near log2(WORKGROUP) ulps instead of growing with cols.
// Reference: py_engine/gpu/selfcheck.py (pure Python); checked in tests/test_gpu_native.py
// (against NumPy) and by the browser self-check (tests/test_browser.py).

override WORKGROUP: u32 = 256u;   // must be a power of two

alias Summed = f32;
//#include "lib/workgroup_sum.wgsl"
//#include "lib/grid.wgsl"

struct Params {
  rows: u32,
  cols: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn sum_rows(@builtin(local_invocation_index) lane: u32,
            @builtin(workgroup_id) group: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
  // Rows beyond 65535 spill into the y dimension of the dispatch.
  let row = workgroup_index(group, groups);
  var acc = 0.0;
  if (row < params.rows) {
    let base = row * params.cols;
    for (var j = lane; j < params.cols; j += WORKGROUP) {
      acc += x[base + j];
    }
  }
  let total = workgroup_sum(lane, acc);
  if (lane == 0u && row < params.rows) {
    out[row] = total;
  }
}
