// Causal-LM head loss over the vocabulary in chunks, so the [N, V] logits are never resident:
// hidden h [N, H], head weight W [V, H], labels y [N] u32 (already shifted; 0xffffffff, or any
// label >= vocab, marks a prompt or padding token that is not counted),
//
//   loss = sum over counted i of (logsumexp_j z[i, j] - z[i, y_i]) / counted,   z = h W^T.
//
// The recorder (py_engine/kernels/lm_head_loss.py) computes one chunk of logits
// z[:, start:start+cols] into a [N, cols] scratch with the matmul family, then:
//
//   lm_chunk_update: one thread per row (grid-stride). Online logsumexp: the chunk's max m_c and
//                    first argmax; running max m' = max(m, m_c) and sum of exponentials
//                    s' = s * exp(m - m') + sum_c exp(z - m'); the label's logit when y falls
//                    in the chunk. `first` = 1 on the first chunk starts the row afresh (stats
//                    may hold anything before it). stats[row] = (max, sum, label logit,
//                    argmax as f32: exact below 2^24).
//   lm_finish:       ONE workgroup after the last chunk: each thread walks a strided set of
//                    rows, the workgroup tree-sums (loss term, counted, correct, counted); lane 0
//                    writes metrics[offset + 0..3] = loss, correct, counted, counted (the loss
//                    denominator, as in py_engine/kernels/cross_entropy.py's layout), through
//                    lib/loss_metrics.wgsl as the classification losses do.
//   lm_chunk_grad:   per element of the recomputed chunk, in place (grid-stride over N*cols):
//                    dz = dloss / counted * (exp(z - max) / sum - [start + c == y]), 0 on
//                    uncounted rows and when counted = 0 (every token ignored; torch gives
//                    NaN there, this gives zero gradients). Reads the forward's stats and
//                    metrics, so it runs after lm_finish of the same batch.
//
// Label smoothing (params.smoothing = e > 0; transformers' label_smoothing_factor): the stats'
// label logit becomes the target t = (1 - e) z[y] + e mean_j z[j] (lm_chunk_update adds each
// chunk's share), so lm_finish's term lse - t is (1 - e)(lse - z[y]) + e (lse - mean z); the
// gradient is dz = dloss / counted * (p - (1 - e)[c == y] - e / vocab).
//
// Final logit soft-capping (Gemma 2's final_logit_softcapping: params.softcap = c > 0): the
// logits are z = c tanh(z_raw / c) (lib/softcap.wgsl). lm_chunk_update caps its row of the
// chunk in place before reading it; lm_chunk_grad reads the recomputed raw chunk and multiplies
// each dz by the cap's slope 1 - tanh^2. lm_softcap caps a buffer of logits in place
// (generation's, which then sample from capped logits as transformers does).
//
// Bindings: labels, stats, params, then logits (update, grad; read_write: grad overwrites the
// chunk with its gradient) or the metrics written (finish), then metrics read (grad).
// Reference: py_engine/ops/lm_head_loss.py; checked in tests/test_kernels_lm_head_loss.py.

override WORKGROUP: u32 = 256u;   // a power of two (lm_finish's tree)

struct Params {
  rows: u32,
  cols: u32,             // logits in this chunk (the last chunk may be narrower)
  start: u32,            // vocabulary index of the chunk's first column
  vocab: u32,
  first: u32,            // 1 on the first chunk of the forward
  metrics_offset: u32,
  dloss: f32,            // upstream gradient of the loss (1, or a loss scale)
  softcap: f32,          // final logit soft cap c; 0 = none
  smoothing: f32,        // label smoothing e; 0 = none
}

@group(0) @binding(0) var<storage, read> labels: array<u32>;
@group(0) @binding(1) var<storage, read_write> stats: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> params: Params;
// lm_chunk_update, lm_chunk_grad: the [rows, cols] chunk
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;
// lm_finish
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;
// lm_chunk_grad
@group(0) @binding(4) var<storage, read> metrics_in: array<f32>;

alias Summed = vec4<f32>;   // (loss term, counted, correct, counted): lib/loss_metrics.wgsl's
//#include "lib/workgroup_sum.wgsl"
//#include "lib/loss_metrics.wgsl"
//#include "lib/row_max.wgsl"
//#include "lib/softcap.wgsl"

@compute @workgroup_size(WORKGROUP)
fn lm_chunk_update(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  let cols = params.cols;
  let stride = groups.x * WORKGROUP;
  for (var row = gid.x; row < params.rows; row += stride) {
    let base = row * cols;
    if (params.softcap > 0.0) {     // this thread's own row: capped before anything reads it
      for (var c = 0u; c < cols; c++) {
        logits[base + c] = softcap_with_slope(logits[base + c], params.softcap).x;
      }
    }
    let chunk = row_max(base, cols);
    let chunk_max = chunk.value;
    var state = vec4(chunk_max, 0.0, 0.0, f32(params.start + chunk.index));
    var carried = 0.0;       // the earlier chunks' sum, rescaled to the new max
    if (params.first == 0u) {
      let old = stats[row];
      state.z = old.z;
      if (old.x >= chunk_max) {   // an earlier chunk keeps the max (and the first argmax)
        state.x = old.x;
        state.w = old.w;
        carried = old.y;
      } else {
        carried = old.y * exp(old.x - chunk_max);
      }
    }
    var sum = 0.0;
    var total = 0.0;         // the chunk's logits summed (label smoothing's mean)
    for (var c = 0u; c < cols; c++) {
      let z = logits[base + c];
      sum += exp(z - state.x);
      total += z;
    }
    state.y = carried + sum;
    if (params.smoothing > 0.0) {
      state.z += params.smoothing / f32(params.vocab) * total;
    }
    let y = labels[row];
    if (y >= params.start && y - params.start < cols) {
      state.z += (1.0 - params.smoothing) * logits[base + y - params.start];
    }
    stats[row] = state;
  }
}

@compute @workgroup_size(WORKGROUP)
fn lm_finish(@builtin(local_invocation_index) lane: u32) {
  var acc = vec4(0.0);
  for (var row = lane; row < params.rows; row += WORKGROUP) {
    let y = labels[row];
    if (y < params.vocab) {
      let s = stats[row];
      let term = s.x + log(s.y) - s.z;
      acc += vec4(term, 1.0, select(0.0, 1.0, u32(s.w) == y), 1.0);
    }
  }
  store_loss_metrics(lane, acc);
}

@compute @workgroup_size(WORKGROUP)
fn lm_chunk_grad(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
  let cols = params.cols;
  let counted = metrics_in[params.metrics_offset + 2u];
  let scale = select(0.0, params.dloss / counted, counted != 0.0);
  let total = params.rows * cols;
  let stride = groups.x * WORKGROUP;
  for (var e = gid.x; e < total; e += stride) {
    let row = e / cols;
    let c = e - row * cols;
    let y = labels[row];
    if (y >= params.vocab) {
      logits[e] = 0.0;
      continue;
    }
    let s = stats[row];
    var z = vec2<f32>(logits[e], 1.0);     // (logit, its slope in the raw logit)
    if (params.softcap > 0.0) {
      z = softcap_with_slope(z.x, params.softcap);
    }
    let p = exp(z.x - s.x) / s.y;
    let onehot = select(0.0, 1.0 - params.smoothing, params.start + c == y);
    logits[e] = (p - onehot - params.smoothing / f32(params.vocab)) * scale * z.y;
  }
}

// Its own bindings: the logits, then the params. In place over cap_params.rows *
// cap_params.cols logits: z = c tanh(z / c).
@group(0) @binding(0) var<storage, read_write> to_cap: array<f32>;
@group(0) @binding(1) var<uniform> cap_params: Params;

@compute @workgroup_size(WORKGROUP)
fn lm_softcap(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
  let total = cap_params.rows * cap_params.cols;
  let stride = groups.x * WORKGROUP;
  for (var e = gid.x; e < total; e += stride) {
    to_cap[e] = softcap_with_slope(to_cap[e], cap_params.softcap).x;
  }
}
