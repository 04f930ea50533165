// The four metrics slots a classification loss's forward fills (py_engine/kernels/
// cross_entropy.py: loss, correct, counted, denominator), shared by cross_entropy.wgsl and
// target_loss.wgsl. The including file declares `metrics` (read_write array<f32>) and
// `params.metrics_offset`, includes lib/workgroup_sum.wgsl with Summed = vec4<f32>, and calls
// this once, from uniform control flow, with each lane's (summed loss terms, share of the
// denominator, correct rows, counted rows). The loss is the terms over the denominator, 0
// where nothing was counted (torch's NaN), so a fully padded batch cannot poison the weights.
fn store_loss_metrics(lane: u32, acc: vec4<f32>) {
  let total = workgroup_sum(lane, acc);
  if (lane == 0u) {
    let denominator = total.y;
    let o = params.metrics_offset;
    metrics[o] = select(0.0, total.x / denominator, denominator != 0.0);
    metrics[o + 1u] = total.z;
    metrics[o + 2u] = total.w;
    metrics[o + 3u] = denominator;
  }
}
