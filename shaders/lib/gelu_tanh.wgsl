// The tanh form of GELU (GPT-2's "gelu_new", torch's approximate="tanh", Gemma's
// "gelu_pytorch_tanh"), shared by gelu.wgsl and swiglu.wgsl's GeGLU:
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2 / pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx
// tanh(u) = 1 - 2 / (exp(2u) + 1), with 2u clamped to +-30 (tanh is +-1 to f32 there) so that
// exp never overflows to inf / inf. Reference: py_engine/ops/gelu.py (gelu_tanh_with_slope).

const TANH_C: f32 = 0.79788456080286536;    // sqrt(2 / pi)
const TANH_CUBIC: f32 = 0.044715;

fn tanh_of_u(v: f32) -> f32 {
  let two_u = clamp(2.0 * TANH_C * v * fma(TANH_CUBIC * v, v, 1.0), -30.0, 30.0);
  return 1.0 - 2.0 / (exp(two_u) + 1.0);
}

// (gelu(v), gelu'(v)) in the tanh form.
fn gelu_tanh_with_slope(v: f32) -> vec2<f32> {
  let t = tanh_of_u(v);
  let du = TANH_C * fma(3.0 * TANH_CUBIC * v, v, 1.0);
  return vec2<f32>(0.5 * v * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
}
