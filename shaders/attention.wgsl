// Attention's row-wise kernels, between the batched products of shaders/matmul.wgsl.
// Reference: py_engine/ops/attention.py (NumPy); recorder: py_engine/kernels/attention.py;
// checks: tests/test_kernels_attention.py.
//
// The scores S = scaling * Q . K^T come from the batched GEMM as [B, H, Tq, Tk] (one row per
// (batch, head, query); Tq = Tk for self-attention, T5's cross attention has Tq target and Tk
// input positions); these kernels work on those rows in place:
//
//   attention_softmax:          P = softmax(S + bias + causal + mask_bias) over the keys of each
//                               row. Each term is optional (flags): bias [H, Tq, Tk], shared by
//                               the batch, is added (T5's relative position bias), or one per
//                               sequence, [B, H, Tq, Tk] (DeBERTa's); causal sets
//                               the f32 minimum on the keys after the query (query i, the last
//                               Tq of Tk positions, sees keys up to Tk - Tq + i); then
//                               mask_bias is 0 for a real key (attention_mask 1) and the f32
//                               minimum for a padded one (attention_mask 0), the additive mask
//                               transformers' eager BERT attention uses. Scores are far below
//                               the minimum's ulp, so S + bias rounds to the minimum itself:
//                               a padded key gets probability exactly 0, and a row with every
//                               key padded gets the uniform distribution, as eager does.
//   attention_softmax_backward: dS = P * (dP - rowsum(dP * P)), overwriting dP.
//   attention_bias_backward:    dtable[r, h] += sum over sequences b and positions (i, j) whose
//                               bucket is r of dS[b, h, i, j]: the gradient of a bias gathered
//                               from a table [R, H] by a bucket per position (T5's relative
//                               position bias, bias[h, i, j] = table[bucket[i * Tk + j], h]).
//
// Dropout on the probabilities, when wanted, runs between the two (the caller's dropout op)
// so P stays the saved softmax output both kernels agree on.
//
// The row kernels: one thread per row, three passes over it (max, sum of exponentials,
// normalise): rows are short (T <= 512) and numerous (B*H*T), and no workgroup memory or barrier
// is needed, which software adapters favour. Rows past 65535 workgroups spill into the
// dispatch's y dimension. The bias backward instead runs one workgroup per table cell (R*H of
// them, a few hundred): its lanes scan the positions for the cell's bucket and add up the
// batch's scores there, then sum in a tree; each cell has one writer, so no atomics are needed
// and the order, hence the result, is the same on every run.

override WORKGROUP: u32 = 64u;

const MASKED: f32 = -0x1.fffffep+127f;   // the f32 minimum, transformers' finfo(dtype).min

struct Rows {
  rows: u32,            // B * H * Tq
  keys: u32,            // Tk: row length
  rows_per_batch: u32,  // H * Tq: rows sharing one attention_mask row (and the whole bias)
  queries: u32,         // Tq
  flags: u32,           // MASKED_KEYS | BIAS | CAUSAL (softmax only)
  bias_rows: u32,       // H * Tq (one bias the batch shares) or B * H * Tq (one per sequence)
}

const MASKED_KEYS: u32 = 1u;   // attention_mask [B, Tk] is read
const BIAS: u32 = 2u;          // bias [H, Tq, Tk] (or [B, H, Tq, Tk]: bias_rows) is added
const CAUSAL: u32 = 4u;

alias Summed = f32;
//#include "lib/workgroup_sum.wgsl"
//#include "lib/grid.wgsl"

// --- attention_softmax -------------------------------------------------------------------

@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read> attention_mask: array<u32>;
@group(0) @binding(2) var<uniform> shape: Rows;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

// The score of key j in a row (base: the row's start; mask_base: its mask row's; bias_base:
// its bias row's; last: the last key the row's query may see).
fn masked_score(base: u32, mask_base: u32, bias_base: u32, last: u32, j: u32) -> f32 {
  if ((shape.flags & MASKED_KEYS) != 0u && attention_mask[mask_base + j] == 0u) {
    return MASKED;
  }
  if (j > last) {
    return MASKED;
  }
  if ((shape.flags & BIAS) != 0u) {
    return scores[base + j] + bias[bias_base + j];
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
  let bias_base = (row % shape.bias_rows) * T;
  var last = T - 1u;
  if ((shape.flags & CAUSAL) != 0u) {
    last = T - shape.queries + row % shape.queries;
  }
  var top = MASKED;
  for (var j = 0u; j < T; j++) {
    top = max(top, masked_score(base, mask_base, bias_base, last, j));
  }
  var total = 0.0;
  for (var j = 0u; j < T; j++) {
    let e = exp(masked_score(base, mask_base, bias_base, last, j) - top);
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

// --- attention_bias_backward ---------------------------------------------------------------

struct BiasGrad {
  batch: u32,
  heads: u32,
  positions: u32,   // Tq * Tk
  cells: u32,       // R * H: the table's size
}

@group(0) @binding(0) var<storage, read> score_grad: array<f32>;        // dS [B, H, Tq, Tk]
@group(0) @binding(1) var<storage, read> position_bucket: array<u32>;   // [Tq * Tk]
@group(0) @binding(2) var<storage, read_write> table_grad: array<f32>;  // [R, H], added to
@group(0) @binding(3) var<uniform> bias_shape: BiasGrad;

@compute @workgroup_size(WORKGROUP)
fn attention_bias_backward(@builtin(local_invocation_index) lane: u32,
                           @builtin(workgroup_id) group: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>) {
  let cell = workgroup_index(group, groups);
  let H = bias_shape.heads;
  let P = bias_shape.positions;
  let bucket = cell / H;
  let h = cell % H;
  var acc = 0.0;
  if (cell < bias_shape.cells) {
    for (var p = lane; p < P; p += WORKGROUP) {
      if (position_bucket[p] == bucket) {
        for (var b = 0u; b < bias_shape.batch; b++) {
          acc += score_grad[(b * H + h) * P + p];
        }
      }
    }
  }
  let total = workgroup_sum(lane, acc);     // every lane takes part: uniform control flow
  if (lane == 0u && cell < bias_shape.cells) {
    table_grad[cell] += total;
  }
}
