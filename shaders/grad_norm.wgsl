// Global gradient norm and clip factor, as torch.nn.utils.clip_grad_norm_(max_norm) computes
// them, in two passes without float atomics:
//
//   sum_squares:      one dispatch per gradient buffer. Each workgroup sums g^2 over a
//                     grid-strided slice of the buffer, combines its threads in a tree and
//                     writes one partial sum to partials[params.offset + workgroup]; each
//                     buffer owns a disjoint range of `partials`.
//   grad_norm_finish: ONE workgroup sums the params.count partials in a tree and writes
//                       metrics[params.metrics_offset]     = norm  = sqrt(sum)
//                       metrics[params.metrics_offset + 1] = scale
//                                                          = min(1, max_norm / (norm + 1e-6))
//                     (torch's clip coefficient, eps 1e-6 added to the norm). max_norm <= 0
//                     means no clipping: scale = 1, the norm is still reported. adamw.wgsl
//                     reads the scale from there and multiplies it into every gradient.
//
// Bindings: sum_squares: partials, params, grad; grad_norm_finish: partials, params, metrics.
// Reference: py_engine/ops/grad_norm.py; checked in tests/test_kernels_grad_norm.py.

override WORKGROUP: u32 = 256u;   // a power of two

struct Params {
  count: u32,            // sum_squares: elements of grad; finish: partial sums to add
  offset: u32,           // sum_squares: first partial slot of this buffer
  metrics_offset: u32,   // finish: slot of the norm; the scale goes in the next one
  max_norm: f32,         // finish
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;
// sum_squares
@group(0) @binding(2) var<storage, read> grad: array<f32>;
// grad_norm_finish
@group(0) @binding(2) var<storage, read_write> metrics: array<f32>;

alias Summed = f32;
//#include "lib/workgroup_sum.wgsl"

@compute @workgroup_size(WORKGROUP)
fn sum_squares(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(local_invocation_index) lane: u32,
               @builtin(workgroup_id) group: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
  var acc = 0.0;
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.count; i += stride) {
    let g = grad[i];
    acc = fma(g, g, acc);
  }
  let total = workgroup_sum(lane, acc);
  if (lane == 0u) {
    partials[params.offset + group.x] = total;
  }
}

@compute @workgroup_size(WORKGROUP)
fn grad_norm_finish(@builtin(local_invocation_index) lane: u32) {
  var acc = 0.0;
  for (var i = lane; i < params.count; i += WORKGROUP) {
    acc += partials[i];
  }
  let total = workgroup_sum(lane, acc);
  if (lane == 0u) {
    let norm = sqrt(total);
    var scale = 1.0;
    if (params.max_norm > 0.0) {
      scale = min(1.0, params.max_norm / (norm + 1e-6));
    }
    metrics[params.metrics_offset] = norm;
    metrics[params.metrics_offset + 1u] = scale;
  }
}
