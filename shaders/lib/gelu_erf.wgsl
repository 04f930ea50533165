// The exact (erf) GELU, BERT's, shared by gelu.wgsl and swiglu.wgsl's exact GeGLU:
//   gelu(x) = x * Phi(x),  Phi(x) = 0.5 * (1 + erf(x / sqrt(2)))
//   gelu'(x) = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// WGSL has no erf: the two-piece fit and its accuracy are described in gelu.wgsl.
// Reference: py_engine/ops/gelu.py (gelu_with_slope).

const SQRT1_2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;
const ERF_SPLIT: f32 = 0.875;
const ERF_TOP: f32 = 5.0;

// erf(z) for |z| < ERF_SPLIT.
fn erf_small(z: f32) -> f32 {
  let s = z * z;
  var p = -6.199346972e-04;
  p = fma(p, s, 5.031426437e-03);
  p = fma(p, s, -2.679095045e-02);
  p = fma(p, s, 1.128244102e-01);
  p = fma(p, s, -3.761254847e-01);
  p = fma(p, s, 1.128379107e+00);
  return z * p;
}

// erfc(t) for t >= ERF_SPLIT (the caller selects; any t gives a finite value).
fn erfc_tail(t: f32) -> f32 {
  let u = clamp(t, ERF_SPLIT, ERF_TOP);
  var q = -1.034408754e-07;
  q = fma(q, u, 3.913313321e-06);
  q = fma(q, u, -6.770999607e-05);
  q = fma(q, u, 7.133617182e-04);
  q = fma(q, u, -5.149805918e-03);
  q = fma(q, u, 2.726120502e-02);
  q = fma(q, u, -1.112397015e-01);
  q = fma(q, u, -6.308391094e-01);
  q = fma(q, u, -1.130702257e+00);
  q = fma(q, u, 4.146379652e-04);
  return select(exp(q), 0.0, t >= ERF_TOP);
}

// Both pieces are evaluated and one selected: no divergent branch.
fn erf_approx(z: f32) -> f32 {
  let tail = 1.0 - erfc_tail(abs(z));
  return select(select(tail, -tail, z < 0.0), erf_small(z), abs(z) < ERF_SPLIT);
}

// Phi(v) = 0.5 * erfc(-v / sqrt(2)).
fn normal_cdf(v: f32) -> f32 {
  let z = v * SQRT1_2;
  let half_tail = 0.5 * erfc_tail(abs(z));
  return select(select(1.0 - half_tail, half_tail, z < 0.0), 0.5 * (1.0 + erf_small(z)),
                abs(z) < ERF_SPLIT);
}

// (gelu(v), gelu'(v)) in the exact form.
fn gelu_erf_with_slope(v: f32) -> vec2<f32> {
  let cdf = normal_cdf(v);
  let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
  return vec2<f32>(v * cdf, fma(v, pdf, cdf));
}
