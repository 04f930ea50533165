// GELU in BERT's exact form, and in GPT-2's tanh form, over flat f32 arrays of length n:
//
//   gelu_forward:      y  = x * Phi(x),  Phi(x) = 0.5 * (1 + erf(x / sqrt(2)))
//   gelu_backward:     dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//   erf_approximation: y  = erf(x) as the two above compute it (to measure it on a device)
//   gelu_tanh_forward: y  = 0.5 x (1 + tanh(u)),  u = sqrt(2 / pi) (x + 0.044715 x^3)
//   gelu_tanh_backward: dx = dy * (0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx)
//
// WGSL has no erf. The approximation is a two-piece fit (weighted least squares on Chebyshev
// nodes in float64, coefficients rounded to f32; the same table is in py_engine/ops/gelu.py):
//   |z| < 0.875:       erf(z) = z * P(z^2)                 odd series, exact 0 at 0
//   0.875 <= |z| < 5:  erfc(|z|) = exp(Q(|z|)),            Q ~ log(erfc), fitted for relative error
//   |z| >= 5:          erfc = 0 (it is < 1.6e-12), erf = +-1
// Max |erf error| against math.erf: 1.1e-7 (2.3 ulp near 1; NumPy float32 emulation and
// lavapipe agree). Phi is taken from erfc directly on the left tail, never as 1 + erf(z) with
// erf(z) near -1 (torch's f32 GELU cancels there): relative error of Phi <= 7e-6 down to
// x = -7.07, where Phi < 8e-13 and the kernel returns 0.
//
// Elementwise with a grid-stride loop, so any launch covers any n; no workgroup memory.
//
// The tanh form: from e = exp(2u), 1 + tanh(u) = 2e / (e + 1) and 1 - tanh(u)^2 = 4e / (e + 1)^2,
// which do not cancel on the left tail (lib/gelu_tanh.wgsl); 2u clamped to +-30.
//
// Bindings: gelu_forward, gelu_tanh_forward, erf_approximation: x, out, params;
//           gelu_backward, gelu_tanh_backward: x, out (dx), params, dy.
// Reference: py_engine/ops/gelu.py; checked in tests/test_kernels_gelu.py.

override WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> dout: array<f32>;

//#include "lib/gelu_erf.wgsl"

@compute @workgroup_size(WORKGROUP)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let v = x[i];
    out[i] = v * normal_cdf(v);
  }
}

@compute @workgroup_size(WORKGROUP)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let v = x[i];
    let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
    out[i] = dout[i] * fma(v, pdf, normal_cdf(v));
  }
}

@compute @workgroup_size(WORKGROUP)
fn erf_approximation(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    out[i] = erf_approx(x[i]);
  }
}

//#include "lib/gelu_tanh.wgsl"

@compute @workgroup_size(WORKGROUP)
fn gelu_tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let v = x[i];
    out[i] = gelu_tanh(v);
  }
}

@compute @workgroup_size(WORKGROUP)
fn gelu_tanh_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    out[i] = dout[i] * gelu_tanh_with_slope(x[i]).y;
  }
}
