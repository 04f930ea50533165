// Softmax cross-entropy for classification: logits [rows, classes] f32, labels [rows] u32,
// optional class weights [classes], label smoothing s, mean reduction as
// torch.nn.functional.cross_entropy(weight=w, label_smoothing=s) defines it:
//
//   loss = ((1 - s) * sum_i w[y_i] * nll_i + (s / C) * sum_i sum_c w_c * (-logp[i, c])) / D,
//   D    = sum_i w[y_i]                                (the weighted mean's denominator)
//
// over the rows whose label is < classes; a label of 0xffffffff marks a padded row, which is
// skipped (as is any label out of range: the host validates labels when it builds a batch).
//
//   cross_entropy_forward:  ONE workgroup. Each thread walks a strided set of rows: logsumexp,
//                           argmax (first maximum, as torch.argmax), the row's loss term;
//                           writes predictions[row] = argmax, and the workgroup sums
//                           (term, w[y], correct, counted) in a tree. Lane 0 writes
//                           metrics[offset + 0..3] = loss, correct count, counted rows, D.
//                           Classification batches are small; a language-model head over
//                           B*T rows x vocab would want a row-parallel first pass instead.
//   cross_entropy_backward: one thread per row (grid-stride):
//                           dlogits[i, j] = dloss / D * ((1 - s) * w[y] * (p_j - [j == y])
//                                                       + (s / C) * (W * p_j - w_j)),
//                           W = sum_c w_c; zero on skipped rows. Reads D from metrics, so it
//                           must run after the forward of the same batch.
// When D = 0 (every row skipped) torch returns NaN; these kernels give loss 0 and zero
// gradients, so a fully padded batch cannot poison the weights.
//
// Bindings: logits, labels, weights (any 4-byte buffer when has_weights = 0), metrics,
//           predictions (forward) or dlogits (backward), params.
// Reference: py_engine/ops/cross_entropy.py; checked in tests/test_kernels_cross_entropy.py.

override WORKGROUP: u32 = 256u;   // a power of two

struct Params {
  rows: u32,
  classes: u32,
  has_weights: u32,
  metrics_offset: u32,   // first of the four metrics slots (py_engine/kernels/cross_entropy.py)
  smoothing: f32,
  dloss: f32,            // upstream gradient of the loss (1, or a loss scale)
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;
// forward
@group(0) @binding(4) var<storage, read_write> predictions: array<u32>;
// backward
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

alias Summed = vec4<f32>;   // (loss term, w[y], correct, counted)
//#include "lib/workgroup_sum.wgsl"
//#include "lib/loss_metrics.wgsl"
//#include "lib/row_max.wgsl"
//#include "lib/log_one_plus.wgsl"

fn class_weight(c: u32) -> f32 {
  if (params.has_weights != 0u) {
    return weights[c];
  }
  return 1.0;
}

// sum over c != argmax of exp(logits - max): the softmax normaliser is 1 + rest. Keeping the
// argmax's exact 1 apart lets a confident row (rest << 1) get its loss log(1 + rest) and its
// gradient p - 1 = -rest / (1 + rest) to full f32 relative precision, where log(sum) and
// 1 / sum - 1 would round away all but a few digits (torch's f32 kernels lose them).
fn row_rest(base: u32, best: RowMax) -> f32 {
  var rest = 0.0;
  for (var c = 0u; c < params.classes; c++) {
    if (c != best.index) {
      rest += exp(logits[base + c] - best.value);
    }
  }
  return rest;
}

// (weighted loss term, w[y], correct, counted) for one row; zeros for a skipped row.
fn row_terms(row: u32) -> vec4<f32> {
  let classes = params.classes;
  let base = row * classes;
  let best = row_max(base, classes);
  predictions[row] = best.index;
  let y = labels[row];
  if (y >= classes) {
    return vec4(0.0);
  }
  let log_norm = log_one_plus(row_rest(base, best));   // logsumexp - max
  let wy = class_weight(y);
  let s = params.smoothing;
  var smoothed = 0.0;
  if (s > 0.0) {
    for (var c = 0u; c < classes; c++) {
      smoothed += class_weight(c) * (log_norm - (logits[base + c] - best.value));
    }
  }
  let nll = log_norm - (logits[base + y] - best.value);
  let term = (1.0 - s) * wy * nll + (s / f32(classes)) * smoothed;
  return vec4(term, wy, select(0.0, 1.0, best.index == y), 1.0);
}

@compute @workgroup_size(WORKGROUP)
fn cross_entropy_forward(@builtin(local_invocation_index) lane: u32) {
  var acc = vec4(0.0);
  for (var row = lane; row < params.rows; row += WORKGROUP) {
    acc += row_terms(row);
  }
  store_loss_metrics(lane, acc);
}

@compute @workgroup_size(WORKGROUP)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
  let classes = params.classes;
  let denominator = metrics[params.metrics_offset + 3u];
  let s = params.smoothing;
  let spread = s / f32(classes);
  var weight_total = f32(classes);
  if (params.has_weights != 0u) {
    weight_total = 0.0;
    for (var c = 0u; c < classes; c++) {
      weight_total += weights[c];
    }
  }
  let stride = groups.x * WORKGROUP;
  for (var row = gid.x; row < params.rows; row += stride) {
    let base = row * classes;
    let y = labels[row];
    if (y >= classes || denominator == 0.0) {
      for (var c = 0u; c < classes; c++) {
        dlogits[base + c] = 0.0;
      }
      continue;
    }
    let best = row_max(base, classes);
    let rest = row_rest(base, best);
    let inv_sum = 1.0 / (1.0 + rest);
    let scale = params.dloss / denominator;
    let on_label = (1.0 - s) * class_weight(y);
    for (var c = 0u; c < classes; c++) {
      let is_best = c == best.index;
      let p = select(exp(logits[base + c] - best.value), 1.0, is_best) * inv_sum;
      // p - [c == y]; on the argmax that is -rest / (1 + rest), computed without cancelling
      var p_minus_label = p;
      if (c == y) {
        p_minus_label = select(p - 1.0, -rest * inv_sum, is_best);
      }
      let g = on_label * p_minus_label + spread * (weight_total * p - class_weight(c));
      dlogits[base + c] = g * scale;
    }
  }
}
