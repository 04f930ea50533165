// Layer normalization over the last dimension of a row-major [rows, cols] f32 matrix, as BERT
// uses it (eps 1e-12):
//
//   layernorm_forward:         y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps);
//                              also saves mean[row] and rstd[row] for the backward.
//   layernorm_backward:        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma,
//                              with xhat = (x - mean) * rstd recomputed from the saved stats.
//   layernorm_params_partial:  dgamma and dbeta, pass 1: thread (column c, chunk k) sums
//                              dy * xhat and dy down rows [k * chunk_rows, (k + 1) * chunk_rows)
//                              of column c into partials[k, c]. Neighbouring threads read
//                              neighbouring addresses.
//   layernorm_params_finish:   pass 2: thread c sums partials[:, c] into dgamma[c], dbeta[c]. With
//                              params.accumulate != 0 it adds to what they hold (gradient
//                              accumulation over micro-batches); otherwise it overwrites them.
// The recorder picks chunk_rows ~ sqrt(rows), so each f32 sum runs over ~sqrt(rows) terms:
// one serial sum down 65k rows loses ~3 digits, the two passes ~1. No atomics.
//
// The row kernels run one workgroup per row: threads stride along the row and combine partial
// sums in a tree through workgroup memory. Rows beyond 65535 spill into the dispatch's y
// dimension; columns beyond the grid in the params kernels are covered by a grid-stride loop.
// The variance is the mean of squared deviations (a second pass over the row), not
// E[x^2] - mean^2, which cancels badly when a row's mean is large against its spread.
//
// Bindings, in the order the recorder passes buffers (py_engine/kernels/layernorm.py):
//   layernorm_forward:        x,        mean,   rstd,  params, beta, y,        gamma
//   layernorm_backward:       x,        mean,   rstd,  params, dy,   dx,       gamma
//   layernorm_params_partial: x,        mean,   rstd,  params, dy,   partials
//   layernorm_params_finish:  partials, dgamma, dbeta, params
// (partials: [chunks, cols] pairs (dgamma, dbeta), interleaved f32.)
// Reference: py_engine/ops/layernorm.py; checked in tests/test_kernels_layernorm.py.

override WORKGROUP: u32 = 64u;   // threads per row in the row kernels; a power of two

struct Params {
  rows: u32,
  cols: u32,
  eps: f32,
  accumulate: u32,   // params_finish: add to dgamma, dbeta instead of overwriting
  chunk_rows: u32,   // params kernels: rows per partial sum
  chunks: u32,       // params kernels: ceil(rows / chunk_rows)
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var<storage, read> beta: array<f32>;   // forward
@group(0) @binding(4) var<storage, read> dout: array<f32>;   // backward, params_partial
@group(0) @binding(5) var<storage, read_write> out: array<f32>;   // y, dx or partials
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
// params_finish
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;

alias Summed = vec2<f32>;   // the backward sums (g, g * xhat) in one tree
//#include "lib/workgroup_sum.wgsl"
//#include "lib/grid.wgsl"

@compute @workgroup_size(WORKGROUP)
fn layernorm_forward(@builtin(local_invocation_index) lane: u32,
                     @builtin(workgroup_id) group: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let row = workgroup_index(group, groups);
  if (row >= params.rows) {
    return;   // uniform across the workgroup: the barriers below stay in uniform control flow
  }
  let cols = params.cols;
  let base = row * cols;
  var sum = 0.0;
  for (var j = lane; j < cols; j += WORKGROUP) {
    sum += x[base + j];
  }
  let mu = row_sum(lane, vec2(sum, 0.0)).x / f32(cols);
  var squares = 0.0;
  for (var j = lane; j < cols; j += WORKGROUP) {
    let d = x[base + j] - mu;
    squares = fma(d, d, squares);
  }
  let r = inverseSqrt(row_sum(lane, vec2(squares, 0.0)).x / f32(cols) + params.eps);
  for (var j = lane; j < cols; j += WORKGROUP) {
    out[base + j] = fma((x[base + j] - mu) * r, gamma[j], beta[j]);
  }
  if (lane == 0u) {
    mean[row] = mu;
    rstd[row] = r;
  }
}

@compute @workgroup_size(WORKGROUP)
fn layernorm_backward(@builtin(local_invocation_index) lane: u32,
                      @builtin(workgroup_id) group: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
  let row = workgroup_index(group, groups);
  if (row >= params.rows) {
    return;
  }
  let cols = params.cols;
  let base = row * cols;
  let mu = mean[row];
  let r = rstd[row];
  // One tree pass for both row means: mean(g) and mean(g * xhat).
  var acc = vec2(0.0);
  for (var j = lane; j < cols; j += WORKGROUP) {
    let xhat = (x[base + j] - mu) * r;
    let g = dout[base + j] * gamma[j];
    acc += vec2(g, g * xhat);
  }
  let means = row_sum(lane, acc) / f32(cols);
  for (var j = lane; j < cols; j += WORKGROUP) {
    let xhat = (x[base + j] - mu) * r;
    let g = dout[base + j] * gamma[j];
    out[base + j] = r * (g - means.x - xhat * means.y);
  }
}

@compute @workgroup_size(WORKGROUP)
fn layernorm_params_partial(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(workgroup_id) group: vec3<u32>,
                            @builtin(num_workgroups) groups: vec3<u32>) {
  let cols = params.cols;
  let first = group.y * params.chunk_rows;
  let last = min(first + params.chunk_rows, params.rows);
  let stride = groups.x * WORKGROUP;
  for (var c = gid.x; c < cols; c += stride) {
    var acc = vec2(0.0);   // (dgamma, dbeta)
    for (var r = first; r < last; r++) {
      let i = r * cols + c;
      let dy = dout[i];
      acc += vec2(dy * (x[i] - mean[r]) * rstd[r], dy);
    }
    let k = 2u * (group.y * cols + c);
    out[k] = acc.x;
    out[k + 1u] = acc.y;
  }
}

@compute @workgroup_size(WORKGROUP)
fn layernorm_params_finish(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>) {
  let cols = params.cols;
  let stride = groups.x * WORKGROUP;
  for (var c = gid.x; c < cols; c += stride) {
    var acc = vec2(0.0);
    for (var k = 0u; k < params.chunks; k++) {
      let i = 2u * (k * cols + c);
      acc += vec2(partials[i], partials[i + 1u]);
    }
    // Old values are read only when accumulating, so a fresh buffer's contents never leak in.
    if (params.accumulate != 0u) {
      acc += vec2(dgamma[c], dbeta[c]);
    }
    dgamma[c] = acc.x;
    dbeta[c] = acc.y;
  }
}
