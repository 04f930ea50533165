// Losses against a float target per logit (a multi-label classifier's, a regression head's):
// logits [rows, classes] f32, targets [rows, classes] u32 words (an f32 target's bits, or
// 0xffffffff where the logit is not counted: a padded row), mean over the counted logits as
// torch's BCEWithLogitsLoss() (kind 0) and MSELoss() (kind 1) define it:
//
//   bce: term = max(z, 0) - z * y + log(1 + exp(-|z|)),   dterm/dz = sigmoid(z) - y
//   mse: term = (z - y)^2,                                dterm/dz = 2 (z - y)
//   loss = sum of counted terms / D,   D = counted logits
//
//   target_loss_forward:  ONE workgroup; each thread walks a strided set of rows and the
//                         workgroup sums (term, counted logits, correct row, counted row) in a
//                         tree. Lane 0 writes metrics[offset + 0..3] = loss, correct rows,
//                         counted rows, D (the slots cross_entropy.wgsl fills for single-label
//                         heads). A bce row is correct when every counted logit is on its
//                         target's side (z > 0 exactly where y > 0.5); an mse row never is.
//   target_loss_backward: one thread per logit (grid-stride): dloss / D * dterm/dz, zero where
//                         not counted or D = 0. Reads D from metrics, so it runs after the
//                         forward of the same batch.
// Where torch returns NaN (D = 0) these give loss 0 and zero gradients, as cross-entropy does.
//
// Bindings: logits, targets, metrics, params; dlogits (backward only).
// Reference: py_engine/ops/target_loss.py; checked in tests/test_kernels_target_loss.py.

override WORKGROUP: u32 = 256u;   // a power of two

const IGNORED: u32 = 0xffffffffu;
const BCE: u32 = 0u;

struct Params {
  rows: u32,
  classes: u32,
  kind: u32,             // 0 bce, 1 mse
  metrics_offset: u32,   // first of the four metrics slots (py_engine/kernels/cross_entropy.py)
  dloss: f32,            // upstream gradient of the loss (1, or a loss scale)
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
// backward
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

alias Summed = vec4<f32>;   // (loss terms, counted logits, correct row, counted row)
//#include "lib/workgroup_sum.wgsl"
//#include "lib/loss_metrics.wgsl"
//#include "lib/log_one_plus.wgsl"

// max(z, 0) - z y + log(1 + exp(-|z|)): the softplus of -|z| kept apart so that a confident
// logit's small loss keeps its relative precision.
fn bce_term(z: f32, y: f32) -> f32 {
  return max(z, 0.0) - z * y + log_one_plus(exp(-abs(z)));
}

// sigmoid(z) - y from e = exp(-|z|), which never overflows: for z >= 0 as (1 - y) - e / (1 + e),
// so a confident logit on a target of 1 gets its small gradient -e / (1 + e) without the
// cancellation of 1 / (1 + e) - 1.
fn sigmoid_minus(z: f32, y: f32) -> f32 {
  let e = exp(-abs(z));
  let tail = e / (1.0 + e);
  return select(tail - y, (1.0 - y) - tail, z >= 0.0);
}

fn target_row_terms(row: u32) -> vec4<f32> {
  let base = row * params.classes;
  var terms = 0.0;
  var counted = 0.0;
  var right = true;
  for (var c = 0u; c < params.classes; c++) {
    let word = targets[base + c];
    if (word == IGNORED) {
      continue;
    }
    let z = logits[base + c];
    let y = bitcast<f32>(word);
    if (params.kind == BCE) {
      terms += bce_term(z, y);
      right = right && ((z > 0.0) == (y > 0.5));
    } else {
      terms += (z - y) * (z - y);
    }
    counted += 1.0;
  }
  let some = counted > 0.0;
  let correct = some && right && params.kind == BCE;
  return vec4(terms, counted, select(0.0, 1.0, correct), select(0.0, 1.0, some));
}

@compute @workgroup_size(WORKGROUP)
fn target_loss_forward(@builtin(local_invocation_index) lane: u32) {
  var acc = vec4(0.0);
  for (var row = lane; row < params.rows; row += WORKGROUP) {
    acc += target_row_terms(row);
  }
  store_loss_metrics(lane, acc);
}

@compute @workgroup_size(WORKGROUP)
fn target_loss_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) groups: vec3<u32>) {
  let denominator = metrics[params.metrics_offset + 3u];
  let n = params.rows * params.classes;
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < n; i += stride) {
    let word = targets[i];
    if (word == IGNORED || denominator == 0.0) {
      dlogits[i] = 0.0;
      continue;
    }
    let z = logits[i];
    let y = bitcast<f32>(word);
    var g = 2.0 * (z - y);
    if (params.kind == BCE) {
      g = sigmoid_minus(z, y);
    }
    dlogits[i] = g * (params.dloss / denominator);
  }
}
