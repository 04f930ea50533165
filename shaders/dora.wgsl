// DoRA (weight-decomposed LoRA): the per-output-feature scale m / ||W + s B.A|| around a LoRA
// linear layer, as PEFT's DoraLinearLayer computes it. The products themselves are the matmul
// family's (py_engine/kernels/dora.py records them); these are the row and column steps.
//
//   dora_weight_norm:     one workgroup per row of the adapted weight V = W + s B.A [rows, cols]:
//                         norm[row] = ||V[row, :]||, scale[row] = magnitude[row] / norm[row].
//   dora_scale_columns:   out[r, c] = z[r, c] * scale[c] (+ bias[c] when has_bias): the forward's
//                         output, and the output gradient the LoRA weights' backward takes.
//   dora_magnitude_grad:  thread c: dmagnitude[c] = sum_r dy[r, c] * z[r, c] / norm[c]
//                         (+ what it held when accumulate != 0). The norm is a constant of the
//                         step (PEFT detaches it), so this is the magnitude's whole gradient.
//   dora_scale_rows:      V[row, :] *= scale[row] in place: the merged weight scale * V.
//
// Rows beyond 65535 spill into the dispatch's y dimension (one workgroup per row); the
// elementwise and column kernels use grid-stride loops.
//
// Bindings, in the order the recorder passes buffers (py_engine/kernels/dora.py):
//   dora_weight_norm:    adapted, magnitude, params, norm, scale
//   dora_scale_columns:  z,       scale,     params, bias, out
//   dora_magnitude_grad: dy,      norm,      params, z,    dmagnitude
//   dora_scale_rows:     scale,   merged,    params
// Reference: py_engine/ops/dora.py; checked in tests/test_kernels_dora.py.

override WORKGROUP: u32 = 64u;   // a power of two

struct Params {
  rows: u32,
  cols: u32,
  flag: u32,   // scale_columns: has_bias; magnitude_grad: accumulate
}

@group(0) @binding(0) var<storage, read> src: array<f32>;            // adapted, z or dy
@group(0) @binding(1) var<storage, read> vec_in: array<f32>;         // magnitude, scale or norm
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read_write> norm_out: array<f32>;  // weight_norm
@group(0) @binding(4) var<storage, read_write> scale_out: array<f32>; // weight_norm
@group(0) @binding(3) var<storage, read> other: array<f32>;          // bias (scale_columns), z (magnitude_grad)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // scale_columns, magnitude_grad
@group(0) @binding(1) var<storage, read_write> merged: array<f32>;   // scale_rows (scale: src)

alias Summed = f32;
//#include "lib/workgroup_sum.wgsl"
//#include "lib/grid.wgsl"

@compute @workgroup_size(WORKGROUP)
fn dora_weight_norm(@builtin(local_invocation_index) lane: u32,
                    @builtin(workgroup_id) group: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
  let row = workgroup_index(group, groups);
  if (row >= params.rows) {
    return;   // uniform across the workgroup
  }
  let base = row * params.cols;
  var squares = 0.0;
  for (var j = lane; j < params.cols; j += WORKGROUP) {
    let v = src[base + j];
    squares = fma(v, v, squares);
  }
  let n = sqrt(workgroup_sum(lane, squares));
  if (lane == 0u) {
    norm_out[row] = n;
    scale_out[row] = vec_in[row] / n;
  }
}

@compute @workgroup_size(WORKGROUP)
fn dora_scale_columns(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  let n = params.rows * params.cols;
  for (var i = gid.x; i < n; i += stride) {
    let c = i % params.cols;
    var y = src[i] * vec_in[c];
    if (params.flag != 0u) {
      y += other[c];
    }
    out[i] = y;
  }
}

@compute @workgroup_size(WORKGROUP)
fn dora_magnitude_grad(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var c = gid.x; c < params.cols; c += stride) {
    var acc = 0.0;
    for (var r = 0u; r < params.rows; r++) {
      let i = r * params.cols + c;   // neighbouring threads read neighbouring addresses
      acc = fma(src[i], other[i], acc);
    }
    var g = acc / vec_in[c];
    if (params.flag != 0u) {
      g += out[c];
    }
    out[c] = g;
  }
}

@compute @workgroup_size(WORKGROUP)
fn dora_scale_rows(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  let n = params.rows * params.cols;
  for (var i = gid.x; i < n; i += stride) {
    merged[i] *= src[i / params.cols];
  }
}
