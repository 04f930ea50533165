// Attention's row-wise kernels, between the batched products of shaders/matmul.wgsl.
// Reference: py_engine/ops/attention.py (NumPy); recorder: py_engine/kernels/attention.py;
// checks: tests/test_kernels_attention.py.
//
// The scores S = scaling * Q . K^T come from the batched GEMM as [B, H, T, T] (one row per
// (batch, head, query)); these kernels work on those rows in place:
//
//   attention_softmax:          P = softmax(S + mask_bias) over the keys of each row.
//                               mask_bias is 0 for a real key (attention_mask 1) and the f32
//                               minimum for a padded one (attention_mask 0), the additive mask
//                               transformers' eager BERT attention uses. Scores are far below
//                               the minimum's ulp, so S + bias rounds to the minimum itself:
//                               a padded key gets probability exactly 0, and a row with every
//                               key padded gets the uniform distribution, as eager does.
//   attention_softmax_backward: dS = P * (dP - rowsum(dP * P)), overwriting dP.
//
// Dropout on the probabilities, when wanted, runs between the two (the caller's dropout op)
// so P stays the saved softmax output both kernels agree on.
//
// One thread per row, three passes over it (max, sum of exponentials, normalise): rows are
// short (T <= 512) and numerous (B*H*T), and no workgroup memory or barrier is needed, which
// software adapters favour. Rows past 65535 workgroups spill into the dispatch's y dimension.

override WORKGROUP: u32 = 64u;

const MASKED: f32 = -0x1.fffffep+127f;   // the f32 minimum, transformers' finfo(dtype).min

struct Rows {
  rows: u32,            // B * H * T
  keys: u32,            // T: row length
  rows_per_batch: u32,  // H * T: rows sharing one attention_mask row
}

//#include "lib/grid.wgsl"

// --- attention_softmax -------------------------------------------------------------------

@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read> attention_mask: array<u32>;
@group(0) @binding(2) var<uniform> shape: Rows;

fn masked_score(base: u32, mask_base: u32, j: u32) -> f32 {
  if (attention_mask[mask_base + j] == 0u) {
    return MASKED;
  }
  return scores[base + j];
}

@compute @workgroup_size(WORKGROUP)
fn attention_softmax(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let row = thread_index(gid, groups, WORKGROUP);
  if (row >= shape.rows) {
    return;
  }
  let T = shape.keys;
  let base = row * T;
  let mask_base = (row / shape.rows_per_batch) * T;
  var top = MASKED;
  for (var j = 0u; j < T; j++) {
    top = max(top, masked_score(base, mask_base, j));
  }
  var total = 0.0;
  for (var j = 0u; j < T; j++) {
    let e = exp(masked_score(base, mask_base, j) - top);
    scores[base + j] = e;
    total += e;
  }
  let inv = 1.0 / total;    // total >= 1: the maximum contributes exp(0)
  for (var j = 0u; j < T; j++) {
    scores[base + j] *= inv;
  }
}

// --- attention_softmax_backward ------------------------------------------------------------

@group(0) @binding(0) var<storage, read> probs: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<uniform> grad_shape: Rows;

@compute @workgroup_size(WORKGROUP)
fn attention_softmax_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                              @builtin(num_workgroups) groups: vec3<u32>) {
  let row = thread_index(gid, groups, WORKGROUP);
  if (row >= grad_shape.rows) {
    return;
  }
  let T = grad_shape.keys;
  let base = row * T;
  var inner = 0.0;
  for (var j = 0u; j < T; j++) {
    inner = fma(grad[base + j], probs[base + j], inner);
  }
  for (var j = 0u; j < T; j++) {
    grad[base + j] = probs[base + j] * (grad[base + j] - inner);
  }
}
