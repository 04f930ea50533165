// RMS normalization over the last dimension of a row-major [rows, cols] f32 matrix, as Llama
// (LlamaRMSNorm) uses it, eps from the config (rms_norm_eps); with params.offset = 1 as Gemma's
// (GemmaRMSNorm), which scales by (1 + weight): below, weight stands for offset + weight.
//
//   rmsnorm_forward:         y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps);
//                            also saves rstd[row] for the backward.
//   rmsnorm_backward:        dx = rstd * (g - xhat * mean(g * xhat)), g = dy * weight,
//                            xhat = x * rstd from the saved rstd. This is all a frozen weight
//                            (LoRA training) needs.
//   rmsnorm_weight_partial:  dweight, pass 1: thread (column c, chunk k) sums dy * x * rstd down
//                            rows [k * chunk_rows, (k + 1) * chunk_rows) of column c into
//                            partials[k, c]. Neighbouring threads read neighbouring addresses.
//   rmsnorm_weight_finish:   pass 2: thread c sums partials[:, c] into dweight[c]. With
//                            params.accumulate != 0 it adds to what dweight holds (gradient
//                            accumulation over micro-batches); otherwise it overwrites it.
// The recorder picks chunk_rows ~ sqrt(rows), so each f32 sum runs over ~sqrt(rows) terms
// instead of one serial sum down every row. No atomics.
//
// The row kernels run one workgroup per row: threads stride along the row and combine partial
// sums in a tree through workgroup memory. Rows beyond 65535 spill into the dispatch's y
// dimension; columns beyond the grid in the weight kernels are covered by a grid-stride loop.
//
// Bindings, in the order the recorder passes buffers (py_engine/kernels/rmsnorm.py):
//   rmsnorm_forward:        x,        rstd,    params, weight, y
//   rmsnorm_backward:       x,        rstd,    params, weight, dx, dy
//   rmsnorm_weight_partial: x,        rstd,    params, dy,     partials
//   rmsnorm_weight_finish:  partials, dweight, params
// (partials: [chunks, cols] f32.)
// Reference: py_engine/ops/rmsnorm.py; checked in tests/test_kernels_rmsnorm.py.

override WORKGROUP: u32 = 64u;   // threads per row in the row kernels; a power of two

struct Params {
  rows: u32,
  cols: u32,
  eps: f32,
  accumulate: u32,   // weight_finish: add to dweight instead of overwriting
  chunk_rows: u32,   // weight kernels: rows per partial sum
  chunks: u32,       // weight kernels: ceil(rows / chunk_rows)
  offset: f32,       // added to the weight: 0 (Llama), 1 (Gemma)
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> weight: array<f32>;       // forward, backward
@group(0) @binding(3) var<storage, read> dy_rows: array<f32>;      // weight_partial
@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // y, dx or partials
@group(0) @binding(5) var<storage, read> dout: array<f32>;         // backward
// weight_finish
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>;

alias Summed = f32;
//#include "lib/workgroup_sum.wgsl"
//#include "lib/grid.wgsl"

@compute @workgroup_size(WORKGROUP)
fn rmsnorm_forward(@builtin(local_invocation_index) lane: u32,
                   @builtin(workgroup_id) group: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  let row = workgroup_index(group, groups);
  if (row >= params.rows) {
    return;   // uniform across the workgroup: the barriers below stay in uniform control flow
  }
  let cols = params.cols;
  let base = row * cols;
  var squares = 0.0;
  for (var j = lane; j < cols; j += WORKGROUP) {
    let v = x[base + j];
    squares = fma(v, v, squares);
  }
  let r = inverseSqrt(row_sum(lane, squares) / f32(cols) + params.eps);
  for (var j = lane; j < cols; j += WORKGROUP) {
    out[base + j] = x[base + j] * r * (params.offset + weight[j]);
  }
  if (lane == 0u) {
    rstd[row] = r;
  }
}

@compute @workgroup_size(WORKGROUP)
fn rmsnorm_backward(@builtin(local_invocation_index) lane: u32,
                    @builtin(workgroup_id) group: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
  let row = workgroup_index(group, groups);
  if (row >= params.rows) {
    return;
  }
  let cols = params.cols;
  let base = row * cols;
  let r = rstd[row];
  var acc = 0.0;
  for (var j = lane; j < cols; j += WORKGROUP) {
    acc = fma(dout[base + j] * (params.offset + weight[j]), x[base + j] * r, acc);
  }
  let mean_g_xhat = row_sum(lane, acc) / f32(cols);
  for (var j = lane; j < cols; j += WORKGROUP) {
    let g = dout[base + j] * (params.offset + weight[j]);
    out[base + j] = r * (g - x[base + j] * r * mean_g_xhat);
  }
}

@compute @workgroup_size(WORKGROUP)
fn rmsnorm_weight_partial(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(workgroup_id) group: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
  let cols = params.cols;
  let first = group.y * params.chunk_rows;
  let last = min(first + params.chunk_rows, params.rows);
  let stride = groups.x * WORKGROUP;
  for (var c = gid.x; c < cols; c += stride) {
    var acc = 0.0;
    for (var r = first; r < last; r++) {
      let i = r * cols + c;
      acc = fma(dy_rows[i], x[i] * rstd[r], acc);
    }
    out[group.y * cols + c] = acc;
  }
}

@compute @workgroup_size(WORKGROUP)
fn rmsnorm_weight_finish(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) groups: vec3<u32>) {
  let cols = params.cols;
  let stride = groups.x * WORKGROUP;
  for (var c = gid.x; c < cols; c += stride) {
    var acc = 0.0;
    for (var k = 0u; k < params.chunks; k++) {
      acc += partials[k * cols + c];
    }
    // The old value is read only when accumulating, so a fresh buffer's contents never leak in.
    if (params.accumulate != 0u) {
      acc += dweight[c];
    }
    dweight[c] = acc;
  }
}
