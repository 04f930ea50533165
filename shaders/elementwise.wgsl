// Elementwise kernels over flat f32 arrays of length n.
//
//   add:        out[i] = a[i] + b[i]
//   scaled_add: out[i] = alpha * a[i] + b[i]        (BLAS axpy; alpha from the uniform)
//   scale:      scaled[i] = alpha * a[i]            (Gemma's embedding normalizer; its own
//                                                    bindings: a, scaled, scale_params)
//
// Their backward passes are themselves: d(add)/da = d(add)/db = 1, so the gradient flows
// through unchanged, and scaled_add's gradient for `a` is scaled_add(dy, 0) with the same alpha.
// Reference: py_engine/gpu/selfcheck.py (pure Python); checked in tests/test_gpu_native.py
// (against NumPy) and by the browser self-check (tests/test_browser.py).
//
// A grid-stride loop lets any launch cover any n, so arrays longer than
// 65535 workgroups x WORKGROUP threads need no second dispatch dimension.

override WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
  alpha: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> scaled: array<f32>;   // scale
@group(0) @binding(2) var<uniform> scale_params: Params;             // scale

@compute @workgroup_size(WORKGROUP)
fn add(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    out[i] = a[i] + b[i];
  }
}

@compute @workgroup_size(WORKGROUP)
fn scaled_add(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    out[i] = fma(params.alpha, a[i], b[i]);
  }
}

@compute @workgroup_size(WORKGROUP)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>,
         @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < scale_params.n; i += stride) {
    scaled[i] = scale_params.alpha * a[i];
  }
}
