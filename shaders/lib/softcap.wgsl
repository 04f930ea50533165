// Logit soft-capping (Gemma 2's attention scores and final logits): x -> c tanh(x / c), shared
// by causal_attention.wgsl and lm_head_loss.wgsl. Reference: np.tanh in py_engine/ops
// (causal_attention.py, lm_head_loss.py).
//
// WGSL's tanh is only as accurate as sinh / cosh, which cancel near 0 and overflow far from it,
// so tanh is written out: for |y| < 1 Lambert's continued fraction
//   tanh(y) = y / (1 + y^2 / (3 + y^2 / (5 + y^2 / (7 + y^2 / (9 + y^2 / 11)))))
// (every term positive: nothing cancels; 1.2e-7 relative at worst in f32 over [-1, 1]), and
// beyond it 1 - 2p with e = exp(2|y|), p = 1 / (e + 1), where 2p <= 0.24 cannot cancel (|y|
// clamped to 15, where tanh is 1 in f32, so exp never overflows). The slope 1 - tanh^2 is
// 1 - t^2 >= 0.42 below 1 and 4 e p^2 beyond, without cancellation either.

// (tanh(y), 1 - tanh(y)^2)
fn tanh_with_slope(y: f32) -> vec2<f32> {
  let a = abs(y);
  if (a < 1.0) {
    let y2 = y * y;
    let t = y / (1.0 + y2 / (3.0 + y2 / (5.0 + y2 / (7.0 + y2 / (9.0 + y2 / 11.0)))));
    return vec2<f32>(t, 1.0 - t * t);
  }
  let e = exp(2.0 * min(a, 15.0));
  let p = 1.0 / (e + 1.0);
  return vec2<f32>(sign(y) * (1.0 - 2.0 * p), 4.0 * e * p * p);
}

// (c tanh(x / c), 1 - tanh(x / c)^2): the capped value and its derivative in x.
fn softcap_with_slope(x: f32, cap: f32) -> vec2<f32> {
  let t = tanh_with_slope(x / cap);
  return vec2<f32>(cap * t.x, t.y);
}
