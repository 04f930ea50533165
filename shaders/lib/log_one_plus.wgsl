// log(1 + r) to full f32 relative precision for small r, shared by cross_entropy.wgsl (a
// confident row's loss) and target_loss.wgsl (log(1 + exp(-|z|)) of a confident logit).
// Reference: np.log1p.

// log(1 + r) for r >= 0 (WGSL has no log1p): the series below 0.1, where its truncation error
// r^9 / 9 is under 1e-9 r; above, log(1 + r) rounds to ~1e-6 relative at worst (r = 0.1).
fn log_one_plus(r: f32) -> f32 {
  if (r < 0.1) {
    var series = -1.0 / 8.0;
    series = fma(series, r, 1.0 / 7.0);
    series = fma(series, r, -1.0 / 6.0);
    series = fma(series, r, 1.0 / 5.0);
    series = fma(series, r, -1.0 / 4.0);
    series = fma(series, r, 1.0 / 3.0);
    series = fma(series, r, -1.0 / 2.0);
    series = fma(series, r, 1.0);
    return r * series;
  }
  return log(1.0 + r);
}
