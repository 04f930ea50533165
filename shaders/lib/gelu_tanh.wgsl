// The tanh form of GELU (GPT-2's "gelu_new", torch's approximate="tanh", Gemma's
// "gelu_pytorch_tanh"), shared by gelu.wgsl and swiglu.wgsl's GeGLU:
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2 / pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx
// Written with e = exp(2u) and p = 1 / (e + 1) so that nothing cancels on either tail:
//   1 + tanh(u) = 2 e p,  1 - tanh(u) = 2 p,  1 - tanh(u)^2 = 4 e p^2
// (1 + tanh as 1 + (1 - 2p) loses all relative precision where tanh is near -1: at x = -3 the
// f32 result was off by 1.6e-5 relatively). 2u is clamped to +-30 (tanh is +-1 to f32 there)
// so that exp never overflows. Reference: py_engine/ops/gelu.py (gelu_tanh_with_slope).

const TANH_C: f32 = 0.79788456080286536;    // sqrt(2 / pi)
const TANH_CUBIC: f32 = 0.044715;

// (1 + tanh(u), 1 - tanh(u)^2) for u = sqrt(2 / pi) (v + 0.044715 v^3).
fn tanh_terms_of_u(v: f32) -> vec2<f32> {
  let two_u = clamp(2.0 * TANH_C * v * fma(TANH_CUBIC * v, v, 1.0), -30.0, 30.0);
  let e = exp(two_u);
  let p = 1.0 / (e + 1.0);
  let one_plus = 2.0 * e * p;
  return vec2<f32>(one_plus, one_plus * 2.0 * p);
}

fn gelu_tanh(v: f32) -> f32 {
  return 0.5 * v * tanh_terms_of_u(v).x;
}

// (gelu(v), gelu'(v)) in the tanh form.
fn gelu_tanh_with_slope(v: f32) -> vec2<f32> {
  let t = tanh_terms_of_u(v);
  let du = TANH_C * fma(3.0 * TANH_CUBIC * v, v, 1.0);
  return vec2<f32>(0.5 * v * t.x, 0.5 * t.x + 0.5 * v * t.y * du);
}
