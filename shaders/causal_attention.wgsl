// Causal self-attention with grouped-query attention (Llama-family decoders), tiled so that no
// T x T matrix is ever stored: forward with an online softmax, backward recomputing the
// probabilities block by block from the forward's saved logsumexp.
// Reference: py_engine/ops/causal_attention.py (NumPy); recorder:
// py_engine/kernels/causal_attention.py; checks: tests/test_kernels_causal_attention.py.
//
// Layouts (row-major f32 unless noted):
//   q, out, dout, dq   [B*Tq, Hq*D]    query row i of sequence b is at position past + i
//   k, v, dk, dv       [B*Tk, Hkv*D]   Tk = past + Tq (a KV cache followed by the new keys)
//   attention_mask     [B, Tk] u32, 1 = real token (ignored when shape.has_mask == 0)
//   lse                [B, Hq, Tq]     logsumexp of row i's scaled visible scores
//   stats              [B, Hq, Tq, 2]  (lse, delta = rowsum(dout * out)), backward scratch
// Query head h reads KV head h / (Hq / Hkv). Query row i sees key j iff j <= past + i and key j
// is real, and with a sliding window (shape.window > 0, Mistral) also j + window > past + i: the
// query at position p sees keys p - window + 1 .. p. A row that sees no key gets out = 0, lse = 0
// and no gradient. Every kernel skips the key (or query) blocks a window leaves out.
// With a soft cap (shape.softcap > 0, Gemma 2) every scaled score s becomes c tanh(s / c)
// (lib/softcap.wgsl) before the softmax, and dS is multiplied by the cap's slope 1 - tanh^2
// before it reaches dq and dk.
//
//   causal_attention_forward:  one workgroup per (batch, query head, block of BLOCK_Q query
//                              rows), one thread per row. Key/value blocks of BLOCK_K rows are
//                              staged in workgroup memory in turn; each thread keeps its row's
//                              running max m, running sum l and unnormalised output, rescaling
//                              them by exp(m_old - m_new) when a block raises the max. Writes
//                              out = acc / l and lse = m + log(l).
//   causal_attention_decode:   the forward of one query row (a decoding step): a workgroup per
//                              (batch, query head) whose threads share the keys and features.
//                              Split over the keys (shape.blocks = S > 1, flash-decoding): a
//                              workgroup per (batch, query head, S-th of the keys), each writing
//                              its share's unnormalised output and (m, l) as partial results.
//   causal_attention_decode_combine: one workgroup per (batch, query head): out and lse from
//                              the S partial results, rescaled to their common maximum.
//   causal_attention_stats:    one thread per (batch, query head, row): stats = (lse, delta).
//   causal_attention_grad_q:   same grid as the forward; streams key/value blocks again with
//                              P = exp(S - lse), dS = P * (dout . v - delta), dq = scaling * dS . K.
//   causal_attention_grad_kv:  one workgroup per (batch, KV head, block of BLOCK_K keys), one
//                              thread per key. Streams blocks of BLOCK_Q query rows (q and dout
//                              staged in workgroup memory) of every query head of the group, from
//                              the first row that can see the block: dv += P * dout,
//                              dk += scaling * dS * q. Each thread owns its key's dk/dv rows and
//                              sums the group's query heads itself: no atomics.
//                              Split by query head (shape.split = 1): one workgroup per (batch,
//                              query head, key block), as many as the forward has, each writing
//                              its head's share into slot h % group of dk/dv's [group, B*Tk,
//                              Hkv*D] partial sums. A GPU runs Hq / Hkv times more threads; with
//                              few KV heads and short sequences the unsplit grid is a few hundred
//                              workgroups of BLOCK_K threads, far from filling one.
//   causal_attention_grad_kv_sum: one thread per element of dk and dv: the sum of the group's
//                              partial sums, in head order.
//
// Attention dropout (GPT-2's attn_pdrop): the probabilities P are multiplied by a counter-based
// dropout mask, never stored: element (b, h, i, j) of the [B, Hq, Tq, Tk] probabilities draws
// counter offset + drop_base + ((b * Hq + h) * Tq + i) * Tk + j under the step's seed
// (lib/dropout_bits.wgsl; py_engine/ops/dropout.py), kept ones scaled by drop_scale. The softmax
// (m, l, lse) is the undropped one; out = (P * M) . V, dV = (P * M)^T . dout and
// dS = P * (M * (dout . v) - delta), where delta = rowsum(dout * out) still equals rowsum(P * dP)
// for the dropped output. drop_threshold 0 is no dropout.
//
// Limits: head_dim <= MAX_HEAD_DIM (an override: 128 for Llama, 256 for Gemma; it sizes each
// thread's private rows, at most 4 x 256 floats = 4 KiB, within WGSL's 8 KiB function-memory
// limit), BLOCK_Q and BLOCK_K <= MAX_BLOCK, and a staged block (BLOCK * head_dim floats) fits
// TILE; two tiles use 16 KiB of workgroup memory, WebGPU's default limit. Workgroups past 65535
// spill into the dispatch's y dimension.

override BLOCK_Q: u32 = 16u;   // query rows per workgroup (forward, grad_q); staged rows (grad_kv)
override BLOCK_K: u32 = 16u;   // staged key rows (forward, grad_q); keys per workgroup (grad_kv)

override MAX_HEAD_DIM: u32 = 128u;   // the largest head_dim served
const MAX_BLOCK: u32 = 64u;
const TILE: u32 = 2048u;
const MASKED: f32 = -0x1.fffffep+127f;   // below every real score: marks an invisible key

struct Shape {
  batch: u32,
  q_len: u32,       // Tq
  past: u32,        // keys before the first query: Tk = past + Tq
  q_heads: u32,
  kv_heads: u32,
  head_dim: u32,
  has_mask: u32,
  blocks: u32,      // workgroups per (batch, head): query blocks, key blocks for grad_kv, or
                    // the decode's key splits
  scaling: f32,
  drop_base: u32,       // the dropout layer's first counter
  drop_threshold: u32,  // 0: no dropout
  drop_scale: f32,      // 1 / (1 - p)
  window: u32,          // sliding window: keys a query sees; 0 = unlimited
  softcap: f32,         // logit soft cap c: scores become c tanh(s / c); 0 = none
  split: u32,           // grad_kv: 1 = a workgroup per query head, writing partial sums
}

struct Step {           // the dropout step buffer (py_engine/kernels/dropout.py)
  seed: u32,
  offset: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> attention_mask: array<u32>;

var<workgroup> tile_a: array<f32, TILE>;
var<workgroup> tile_b: array<f32, TILE>;

alias Summed = f32;     // the decode's workgroup maximum and sum (row_reduce, row_sum)
//#include "lib/grid.wgsl"
//#include "lib/dropout_bits.wgsl"
//#include "lib/softcap.wgsl"
//#include "lib/workgroup_sum.wgsl"

// The dropout factor of probability (b, h, i, j): 0 or drop_scale; 1 without dropout.
fn drop_factor(s: Shape, step: Step, key: u32, b: u32, h: u32, i: u32, j: u32) -> f32 {
  if (s.drop_threshold == 0u) {
    return 1.0;
  }
  let counter = step.offset + s.drop_base + ((b * s.q_heads + h) * s.q_len + i) * (s.past + s.q_len) + j;
  return select(0.0, s.drop_scale, dropout_keeps(key, counter, s.drop_threshold));
}

// Key j lies inside the sliding window of query row i (always, without a window).
fn in_window(s: Shape, i: u32, j: u32) -> bool {
  return s.window == 0u || j + s.window > s.past + i;
}

// The first key query row i can see under the window (0 without one).
fn window_start(s: Shape, i: u32) -> u32 {
  let p = s.past + i;
  return select(0u, p + 1u - s.window, s.window != 0u && p + 1u > s.window);
}

// A scaled score as the softmax sees it, with the cap's slope: (c tanh(s / c), 1 - tanh^2) with
// a soft cap, (s, 1) without.
fn capped(sh: Shape, score: f32) -> vec2<f32> {
  if (sh.softcap > 0.0) {
    return softcap_with_slope(score, sh.softcap);
  }
  return vec2<f32>(score, 1.0);
}

fn key_is_real(s: Shape, b: u32, j: u32) -> bool {
  return s.has_mask == 0u || attention_mask[b * (s.past + s.q_len) + j] != 0u;
}

// --- causal_attention_forward ----------------------------------------------------------------

@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> fwd: Shape;
@group(0) @binding(7) var<uniform> fwd_step: Step;

@compute @workgroup_size(BLOCK_Q)
fn causal_attention_forward(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) groups: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
  let block = workgroup_index(wid, groups);
  if (block >= fwd.batch * fwd.q_heads * fwd.blocks) {
    return;
  }
  let D = fwd.head_dim;
  let h = (block / fwd.blocks) % fwd.q_heads;
  let b = block / (fwd.blocks * fwd.q_heads);
  let kvh = h / (fwd.q_heads / fwd.kv_heads);
  let keys = fwd.past + fwd.q_len;
  let q0 = (block % fwd.blocks) * BLOCK_Q;
  let i = q0 + lid;
  let live = i < fwd.q_len;
  let q_base = (b * fwd.q_len + min(i, fwd.q_len - 1u)) * fwd.q_heads * D + h * D;
  let kv_width = fwd.kv_heads * D;

  var qs: array<f32, MAX_HEAD_DIM>;
  var acc: array<f32, MAX_HEAD_DIM>;
  for (var d = 0u; d < D; d++) {
    qs[d] = q[q_base + d] * fwd.scaling;
    acc[d] = 0.0;
  }
  var m = MASKED;
  var l = 0.0;
  var s: array<f32, MAX_BLOCK>;
  let key = dropout_key(fwd_step.seed);

  // Keys from the first one this block's first row can see (its window's start, rounded down
  // to a block) up to the last one its last live row can see.
  let key_end = fwd.past + min(q0 + BLOCK_Q, fwd.q_len);
  let key_start = window_start(fwd, q0) / BLOCK_K * BLOCK_K;
  for (var k0 = key_start; k0 < key_end; k0 += BLOCK_K) {
    let n = min(BLOCK_K, key_end - k0);
    workgroupBarrier();
    for (var t = lid; t < n * D; t += BLOCK_Q) {
      let src = (b * keys + k0 + t / D) * kv_width + kvh * D + t % D;
      tile_a[t] = k[src];
      tile_b[t] = v[src];
    }
    workgroupBarrier();
    if (live) {
      var top = MASKED;
      for (var r = 0u; r < n; r++) {
        let j = k0 + r;
        s[r] = MASKED;
        if (j <= fwd.past + i && in_window(fwd, i, j) && key_is_real(fwd, b, j)) {
          var dot = 0.0;
          for (var d = 0u; d < D; d++) {
            dot = fma(qs[d], tile_a[r * D + d], dot);
          }
          s[r] = capped(fwd, dot).x;
          top = max(top, s[r]);
        }
      }
      if (top > MASKED) {
        let m_new = max(m, top);
        let correction = select(0.0, exp(m - m_new), l > 0.0);
        l *= correction;
        for (var d = 0u; d < D; d++) {
          acc[d] *= correction;
        }
        for (var r = 0u; r < n; r++) {
          if (s[r] > MASKED) {
            let p = exp(s[r] - m_new);
            l += p;
            let kept = p * drop_factor(fwd, fwd_step, key, b, h, i, k0 + r);
            for (var d = 0u; d < D; d++) {
              acc[d] = fma(kept, tile_b[r * D + d], acc[d]);
            }
          }
        }
        m = m_new;
      }
    }
  }
  if (live) {
    let row = (b * fwd.q_heads + h) * fwd.q_len + i;
    if (l > 0.0) {
      let inv = 1.0 / l;    // l >= 1: the maximum contributes exp(0)
      for (var d = 0u; d < D; d++) {
        out[q_base + d] = acc[d] * inv;
      }
      lse[row] = m + log(l);
    } else {
      for (var d = 0u; d < D; d++) {
        out[q_base + d] = 0.0;
      }
      lse[row] = 0.0;
    }
  }
}

// --- causal_attention_decode -----------------------------------------------------------------
// One query row per sequence (Tq = 1: a decoding step against a KV cache), no dropout; the
// forward's bindings and results. The forward above gives that row one thread, which walks
// every key and the whole head alone while the workgroup's other threads idle. Here one
// workgroup of WORKGROUP threads shares the row: the threads split the keys to score them
// (chunks of up to TILE keys, the scores held in workgroup memory, q staged there once), take
// the chunk's maximum and sum together, and split the head's features for the weighted sum of
// values (thread t owns features t, t + WORKGROUP, ...: at most DECODE_DIMS of them),
// reading each value row in one coalesced run.
// A long cache and few heads leave most of a GPU idle with a workgroup per row, so the keys may
// be split S = shape.blocks ways: the workgroup of split s takes the s-th of the row's visible
// keys and writes, instead of out and lse, its unnormalised output to out[(row * S + s) * D ..]
// and its (m, l) to lse[(row * S + s) * 2 ..]; causal_attention_decode_combine finishes the row.

override WORKGROUP: u32 = 64u;   // causal_attention_decode's threads (DECODE_THREADS)
const DECODE_DIMS: u32 = 4u;      // features a thread owns: MAX_HEAD_DIM (<= 256) / WORKGROUP

@compute @workgroup_size(WORKGROUP)
fn causal_attention_decode(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
  let splits = max(fwd.blocks, 1u);
  let w = workgroup_index(wid, groups);
  let row = w / splits;                        // b * q_heads + h: lse's row too (Tq = 1)
  let split = w % splits;
  if (row >= fwd.batch * fwd.q_heads) {
    return;
  }
  let D = fwd.head_dim;
  let h = row % fwd.q_heads;
  let b = row / fwd.q_heads;
  let kvh = h / (fwd.q_heads / fwd.kv_heads);
  let keys = fwd.past + 1u;
  let q_base = row * D;                        // (b * Tq + 0) * Hq * D + h * D
  let kv_width = fwd.kv_heads * D;
  for (var d = lid; d < D; d += WORKGROUP) {
    tile_a[d] = q[q_base + d] * fwd.scaling;
  }
  var m = MASKED;
  var l = 0.0;
  var acc = vec4<f32>(0.0);    // features lid + i * WORKGROUP, i < DECODE_DIMS
  // this split's keys: the split-th of the visible ones (all of them unsplit)
  let first = window_start(fwd, 0u);
  let share = (keys - first + splits - 1u) / splits;
  let start = min(keys, first + split * share);
  let end = min(keys, start + share);
  for (var c0 = start; c0 < end; c0 += TILE) {
    let n = min(TILE, end - c0);
    workgroupBarrier();        // q staged; the last chunk's probabilities read
    var top = MASKED;
    for (var r = lid; r < n; r += WORKGROUP) {
      let j = c0 + r;
      var score = MASKED;
      if (in_window(fwd, 0u, j) && key_is_real(fwd, b, j)) {
        let k_row = (b * keys + j) * kv_width + kvh * D;
        var dot = 0.0;
        for (var d = 0u; d < D; d++) {
          dot = fma(tile_a[d], k[k_row + d], dot);
        }
        score = capped(fwd, dot).x;
      }
      tile_b[r] = score;
      top = max(top, score);
    }
    // No branch on what the reductions return: barriers must stay in uniform control flow. A
    // chunk of invisible keys leaves m, l and acc as they were (every p below is 0).
    let m_new = max(m, row_reduce(lid, top, true));
    let correction = select(0.0, exp(m - m_new), l > 0.0);
    var part = 0.0;
    for (var r = lid; r < n; r += WORKGROUP) {
      let p = select(0.0, exp(tile_b[r] - m_new), tile_b[r] > MASKED);
      tile_b[r] = p;
      part += p;
    }
    l = fma(l, correction, row_sum(lid, part));   // its barriers publish tile_b
    acc *= correction;
    for (var r = 0u; r < n; r++) {
      let p = tile_b[r];
      if (p > 0.0) {
        let v_row = (b * keys + c0 + r) * kv_width + kvh * D;
        for (var i = 0u; i < DECODE_DIMS; i++) {
          let d = lid + i * WORKGROUP;
          if (d < D) {
            acc[i] = fma(p, v[v_row + d], acc[i]);
          }
        }
      }
    }
    m = m_new;
  }
  if (splits > 1u) {           // a partial result: the combine normalises
    let part = row * splits + split;
    for (var i = 0u; i < DECODE_DIMS; i++) {
      let d = lid + i * WORKGROUP;
      if (d < D) {
        out[part * D + d] = acc[i];
      }
    }
    if (lid == 0u) {
      lse[2u * part] = m;
      lse[2u * part + 1u] = l;
    }
    return;
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);   // a row that sees no key: out 0, lse 0
  for (var i = 0u; i < DECODE_DIMS; i++) {
    let d = lid + i * WORKGROUP;
    if (d < D) {
      out[q_base + d] = acc[i] * inv;
    }
  }
  if (lid == 0u) {
    lse[row] = select(0.0, m + log(l), l > 0.0);
  }
}

// --- causal_attention_decode_combine ---------------------------------------------------------

// Its own bindings 0-4: the split decode's partial outputs and (m, l), the row's out and lse.
@group(0) @binding(0) var<storage, read> decode_parts: array<f32>;
@group(0) @binding(1) var<storage, read> decode_part_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> decode_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> decode_lse: array<f32>;
@group(0) @binding(4) var<uniform> dc: Shape;

// Each thread reads the S (m, l) pairs itself (S is small) and owns the features of the decode's
// threads: the row's output is the partial outputs rescaled to the largest m, over their l.
@compute @workgroup_size(WORKGROUP)
fn causal_attention_decode_combine(@builtin(workgroup_id) wid: vec3<u32>,
                                   @builtin(num_workgroups) groups: vec3<u32>,
                                   @builtin(local_invocation_index) lid: u32) {
  let row = workgroup_index(wid, groups);
  if (row >= dc.batch * dc.q_heads) {
    return;
  }
  let splits = dc.blocks;
  let D = dc.head_dim;
  var m = MASKED;
  for (var s = 0u; s < splits; s++) {
    let part = row * splits + s;
    if (decode_part_stats[2u * part + 1u] > 0.0) {   // a split that saw no key has l = 0
      m = max(m, decode_part_stats[2u * part]);
    }
  }
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  for (var s = 0u; s < splits; s++) {
    let part = row * splits + s;
    let part_l = decode_part_stats[2u * part + 1u];
    let rescale = select(0.0, exp(decode_part_stats[2u * part] - m), part_l > 0.0);
    l = fma(part_l, rescale, l);
    for (var i = 0u; i < DECODE_DIMS; i++) {
      let d = lid + i * WORKGROUP;
      if (d < D) {
        acc[i] = fma(decode_parts[part * D + d], rescale, acc[i]);
      }
    }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);   // a row that sees no key: out 0, lse 0
  for (var i = 0u; i < DECODE_DIMS; i++) {
    let d = lid + i * WORKGROUP;
    if (d < D) {
      decode_out[row * D + d] = acc[i] * inv;
    }
  }
  if (lid == 0u) {
    decode_lse[row] = select(0.0, m + log(l), l > 0.0);
  }
}

// --- causal_attention_stats ------------------------------------------------------------------

// Its own bindings 0-4 (it reads none of q, k, v, attention_mask).
@group(0) @binding(0) var<storage, read> fwd_out: array<f32>;
@group(0) @binding(1) var<storage, read> fwd_lse: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<uniform> st: Shape;

@compute @workgroup_size(BLOCK_Q)
fn causal_attention_stats(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
  let row = thread_index(gid, groups, BLOCK_Q);
  if (row >= st.batch * st.q_heads * st.q_len) {
    return;
  }
  let D = st.head_dim;
  let i = row % st.q_len;
  let h = (row / st.q_len) % st.q_heads;
  let b = row / (st.q_len * st.q_heads);
  let base = (b * st.q_len + i) * st.q_heads * D + h * D;
  var delta = 0.0;
  for (var d = 0u; d < D; d++) {
    delta = fma(dout[base + d], fwd_out[base + d], delta);
  }
  stats[2u * row] = fwd_lse[row];
  stats[2u * row + 1u] = delta;
}

// --- causal_attention_grad_q -----------------------------------------------------------------

@group(0) @binding(4) var<storage, read> row_stats: array<f32>;
@group(0) @binding(5) var<storage, read> grad_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<uniform> gq: Shape;
@group(0) @binding(8) var<uniform> gq_step: Step;

@compute @workgroup_size(BLOCK_Q)
fn causal_attention_grad_q(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
  let block = workgroup_index(wid, groups);
  if (block >= gq.batch * gq.q_heads * gq.blocks) {
    return;
  }
  let D = gq.head_dim;
  let h = (block / gq.blocks) % gq.q_heads;
  let b = block / (gq.blocks * gq.q_heads);
  let kvh = h / (gq.q_heads / gq.kv_heads);
  let keys = gq.past + gq.q_len;
  let q0 = (block % gq.blocks) * BLOCK_Q;
  let i = q0 + lid;
  let live = i < gq.q_len;
  let q_base = (b * gq.q_len + min(i, gq.q_len - 1u)) * gq.q_heads * D + h * D;
  let kv_width = gq.kv_heads * D;
  let row = (b * gq.q_heads + h) * gq.q_len + min(i, gq.q_len - 1u);
  let row_lse = row_stats[2u * row];
  let delta = row_stats[2u * row + 1u];
  let key = dropout_key(gq_step.seed);

  var qs: array<f32, MAX_HEAD_DIM>;
  var dos: array<f32, MAX_HEAD_DIM>;
  var acc: array<f32, MAX_HEAD_DIM>;
  for (var d = 0u; d < D; d++) {
    qs[d] = q[q_base + d] * gq.scaling;
    dos[d] = grad_out[q_base + d];
    acc[d] = 0.0;
  }

  let key_end = gq.past + min(q0 + BLOCK_Q, gq.q_len);
  let key_start = window_start(gq, q0) / BLOCK_K * BLOCK_K;
  for (var k0 = key_start; k0 < key_end; k0 += BLOCK_K) {
    let n = min(BLOCK_K, key_end - k0);
    workgroupBarrier();
    for (var t = lid; t < n * D; t += BLOCK_Q) {
      let src = (b * keys + k0 + t / D) * kv_width + kvh * D + t % D;
      tile_a[t] = k[src];
      tile_b[t] = v[src];
    }
    workgroupBarrier();
    if (live) {
      for (var r = 0u; r < n; r++) {
        let j = k0 + r;
        if (j <= gq.past + i && in_window(gq, i, j) && key_is_real(gq, b, j)) {
          var score = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < D; d++) {
            score = fma(qs[d], tile_a[r * D + d], score);
            dp = fma(dos[d], tile_b[r * D + d], dp);
          }
          let cap = capped(gq, score);
          let ds = exp(cap.x - row_lse) * (dp * drop_factor(gq, gq_step, key, b, h, i, j) - delta) * cap.y;
          for (var d = 0u; d < D; d++) {
            acc[d] = fma(ds, tile_a[r * D + d], acc[d]);
          }
        }
      }
    }
  }
  if (live) {
    for (var d = 0u; d < D; d++) {
      dq[q_base + d] = acc[d] * gq.scaling;
    }
  }
}

// --- causal_attention_grad_kv ----------------------------------------------------------------

@group(0) @binding(4) var<storage, read> kv_stats: array<f32>;
@group(0) @binding(5) var<storage, read> kv_grad_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<uniform> gkv: Shape;
@group(0) @binding(9) var<uniform> gkv_step: Step;

@compute @workgroup_size(BLOCK_K)
fn causal_attention_grad_kv(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) groups: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
  let block = workgroup_index(wid, groups);
  let split = gkv.split != 0u;
  let heads = select(gkv.kv_heads, gkv.q_heads, split);   // heads the grid spans
  if (block >= gkv.batch * heads * gkv.blocks) {
    return;
  }
  let D = gkv.head_dim;
  let group = gkv.q_heads / gkv.kv_heads;
  let head = (block / gkv.blocks) % heads;
  let b = block / (gkv.blocks * heads);
  let kvh = select(head, head / group, split);
  // the group's query heads this workgroup sums: all of them, or its own
  let g_first = select(0u, head % group, split);
  let g_end = select(group, g_first + 1u, split);
  let keys = gkv.past + gkv.q_len;
  let k0 = (block % gkv.blocks) * BLOCK_K;
  let j = k0 + lid;
  let live = j < keys && key_is_real(gkv, b, min(j, keys - 1u));
  let kv_base = (b * keys + min(j, keys - 1u)) * gkv.kv_heads * D + kvh * D;
  let q_width = gkv.q_heads * D;
  let key = dropout_key(gkv_step.seed);

  var ks: array<f32, MAX_HEAD_DIM>;
  var vs: array<f32, MAX_HEAD_DIM>;
  var dk_acc: array<f32, MAX_HEAD_DIM>;
  var dv_acc: array<f32, MAX_HEAD_DIM>;
  for (var d = 0u; d < D; d++) {
    ks[d] = k[kv_base + d] * gkv.scaling;
    vs[d] = v[kv_base + d];
    dk_acc[d] = 0.0;
    dv_acc[d] = 0.0;
  }

  // Query rows i >= k0 - past are the first that can see a key of this block; with a window,
  // rows i < k0 + BLOCK_K - 1 + window - past the last.
  let first = select(0u, k0 - gkv.past, k0 > gkv.past);
  let reach = k0 + BLOCK_K - 1u + gkv.window;
  let last = select(gkv.q_len, min(gkv.q_len, reach - gkv.past),
                    gkv.window != 0u && reach > gkv.past);
  let q_end = select(last, 0u, gkv.window != 0u && reach <= gkv.past);
  for (var g = g_first; g < g_end; g++) {
    let h = kvh * group + g;
    for (var i0 = first; i0 < q_end; i0 += BLOCK_Q) {
      let n = min(BLOCK_Q, q_end - i0);
      workgroupBarrier();
      for (var t = lid; t < n * D; t += BLOCK_K) {
        let src = (b * gkv.q_len + i0 + t / D) * q_width + h * D + t % D;
        tile_a[t] = q[src];
        tile_b[t] = kv_grad_out[src];
      }
      workgroupBarrier();
      if (live) {
        for (var r = 0u; r < n; r++) {
          let i = i0 + r;
          if (j <= gkv.past + i && in_window(gkv, i, j)) {
            let row = (b * gkv.q_heads + h) * gkv.q_len + i;
            var score = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < D; d++) {
              score = fma(ks[d], tile_a[r * D + d], score);
              dp = fma(vs[d], tile_b[r * D + d], dp);
            }
            let cap = capped(gkv, score);
            let p = exp(cap.x - kv_stats[2u * row]);
            let factor = drop_factor(gkv, gkv_step, key, b, h, i, j);
            let ds = p * (dp * factor - kv_stats[2u * row + 1u]) * cap.y;
            for (var d = 0u; d < D; d++) {
              dv_acc[d] = fma(p * factor, tile_b[r * D + d], dv_acc[d]);
              dk_acc[d] = fma(ds, tile_a[r * D + d], dk_acc[d]);
            }
          }
        }
      }
    }
  }
  if (j < keys) {
    // split: this head's slot of the partial sums (slot 0 is dk/dv themselves unsplit)
    let slot = select(0u, g_first * gkv.batch * keys * gkv.kv_heads * D, split);
    for (var d = 0u; d < D; d++) {
      dk[slot + kv_base + d] = dk_acc[d] * gkv.scaling;   // 0 for a padded key
      dv[slot + kv_base + d] = dv_acc[d];
    }
  }
}

// --- causal_attention_grad_kv_sum ------------------------------------------------------------

// Its own bindings 0-4.
@group(0) @binding(0) var<storage, read> dk_parts: array<f32>;
@group(0) @binding(1) var<storage, read> dv_parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> dk_sum: array<f32>;
@group(0) @binding(3) var<storage, read_write> dv_sum: array<f32>;
@group(0) @binding(4) var<uniform> gsum: Shape;

const SUM_THREADS: u32 = 64u;

@compute @workgroup_size(SUM_THREADS)
fn causal_attention_grad_kv_sum(@builtin(global_invocation_id) gid: vec3<u32>,
                                @builtin(num_workgroups) groups: vec3<u32>) {
  let e = thread_index(gid, groups, SUM_THREADS);
  let n = gsum.batch * (gsum.past + gsum.q_len) * gsum.kv_heads * gsum.head_dim;
  if (e >= n) {
    return;
  }
  var dk_total = 0.0;
  var dv_total = 0.0;
  for (var g = 0u; g < gsum.q_heads / gsum.kv_heads; g++) {
    dk_total += dk_parts[g * n + e];
    dv_total += dv_parts[g * n + e];
  }
  dk_sum[e] = dk_total;
  dv_sum[e] = dv_total;
}
