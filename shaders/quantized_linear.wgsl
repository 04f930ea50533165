// Linear layers over quantized frozen weights (QLoRA-style base weights), int8 or int4 with
// one f32 scale per group of GROUP input features. Reference: py_engine/ops/quantize.py
// (NumPy); recorder: py_engine/kernels/quantized_linear.py; checks:
// tests/test_kernels_quantized_linear.py.
//
//   W [out, in] is stored as q (array<u32>) and scales (array<f32>, [out, in / group]):
//     element e = o * in + i of W is the BITS-bit two's-complement field at bits
//     BITS * (e % PER_WORD) of word e / PER_WORD (little-endian; PER_WORD = 32 / BITS), and
//     W[o, i] = f32(field) * scales[o * groups + i / group], one f32 product, as the reference.
//   group % 8 == 0 and in % group == 0, so every row and every group starts a new word.
//
//   quantized_linear_forward     y[rows, out] = alpha * x[rows, in] . W^T + bias + beta * y
//   quantized_gemv(_vec4)        the forward for one row (a decoding step), computing only it
//   quantized_linear_grad_input  dx[rows, in] = alpha * dy[rows, out] . W + beta * dx
//       (the base is frozen: there is no weight gradient). beta == 0 never reads the output,
//       so a NaN-poisoned or uninitialised output stays harmless.
//   quantize_weight              W (f32, or f16 / bf16 pairs) -> q + scales on the device, so
//       a browser never quantizes a checkpoint in Python. One thread per group:
//         scale = amax * fl32(1 / QMAX)     (a correctly rounded product: the same bits as NumPy)
//         q     = the integer nearest the exact quotient w / scale, ties to even, in
//                 [-QMAX, QMAX]: f32 division is only accurate to 2.5 ulp in WGSL, so the
//                 estimate round(w * (1 / scale)) is corrected by an exact test of which side of
//                 (k +- 1/2) * scale w lies on. Bit for bit the NumPy reference (subnormal
//                 scales aside, which a device may flush to zero).
//
// The two products are register-tiled like matmul.wgsl's gemm_vec4: a thread owns a 4 x 4
// (forward: rows x out features) or 4 x 8 (input gradient: rows x in features) block of the
// output in named vec4 registers and streams x / dy and the packed weight from storage,
// decoding each u32 word once per thread with shifts (sign extension by an arithmetic right
// shift); no workgroup memory, which software adapters run fastest (shared/PLATFORM.md), and
// no private arrays, which SwiftShader's compiler keeps in memory. x rows are read as vec4 (in
// is a multiple of 8). Rows and out features past the edge are clamped on load and never
// stored; a block of 8 in features never crosses a row's end or a group (both multiples of 8).

override BITS: u32 = 8u;           // 8 (int8) or 4 (int4)
override WG_X: u32 = 8u;           // threads along the output's columns
override WG_Y: u32 = 8u;           // threads along rows
override WORKGROUP: u32 = 64u;     // quantize_weight, quantized_gemv
override LANES: u32 = 1u;          // quantized_gemv: threads per output, a power of two
override SOURCE_FORMAT: u32 = 0u;  // quantize_weight's input: 0 f32, 1 f16 pairs, 2 bf16 pairs

const PER_WORD: u32 = 32u / BITS;
const QMAX: f32 = select(7.0, 127.0, BITS == 8u);
// fl32(1 / 127) and fl32(1 / 7) as bits, so no compiler's constant folding can differ.
const INV_QMAX_BITS: u32 = select(0x3e124925u, 0x3c010204u, BITS == 8u);
const FIELD_MASK: u32 = (1u << BITS) - 1u;

struct Params {
  rows: u32,
  in_features: u32,
  out_features: u32,
  group_size: u32,
  groups: u32,         // per row of W: in_features / group_size
  has_bias: u32,
  total_groups: u32,   // quantize_weight: out_features * groups
  pad: u32,
  alpha: f32,
  beta: f32,
}

// Each entry uses bindings 0..n-1 once; entries reuse numbers with other types.
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;        // forward: x [rows, in]
@group(0) @binding(1) var<storage, read> dy: array<f32>;              // grad input: dy [rows, out]
@group(0) @binding(1) var<storage, read> source: array<u32>;          // quantize: W
@group(0) @binding(2) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> q4: array<vec4<u32>>;        // one row: four words a read
@group(0) @binding(2) var<storage, read_write> q_out: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> scales_out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;            // forward
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;        // grad input
@group(0) @binding(5) var<storage, read_write> y: array<f32>;         // forward

// Field n of a word as a signed integer in f32: shift it to the top, then arithmetic-shift
// it back down, which sign-extends.
fn field(word: u32, n: u32) -> f32 {
  return f32(bitcast<i32>(word << (32u - BITS - BITS * n)) >> (32u - BITS));
}

// Fields first..first+3 of a word, dequantized.
fn dequant4(word: u32, first: u32, scale: f32) -> vec4<f32> {
  return vec4<f32>(field(word, first), field(word, first + 1u), field(word, first + 2u),
                   field(word, first + 3u)) * scale;
}

// The epilogue shared by both products: out = alpha * value (+ bias) + beta * out.
fn epilogue(old: f32, value: f32, b: f32) -> f32 {
  var v = params.alpha * value + b;
  if (params.beta != 0.0) {
    v = fma(params.beta, old, v);
  }
  return v;
}

// --- forward: y = x . W^T ---------------------------------------------------------------
// acc_i = y[row0 + i, col0..col0+3]; per four in features, a_i = x[row0 + i, k..k+3] and
// b_j = W[col0 + j, k..k+3] dequantized from word j.

fn x_base(row: u32) -> u32 {
  return min(row, params.rows - 1u) * (params.in_features / 4u);
}

fn store_y(row: u32, col0: u32, v: vec4<f32>) {
  if (row >= params.rows) {
    return;
  }
  let N = params.out_features;
  for (var j = 0u; j < 4u; j++) {
    let c = col0 + j;
    if (c < N) {
      var b = 0.0;
      if (params.has_bias != 0u) {
        b = bias[c];
      }
      y[row * N + c] = epilogue(y[row * N + c], v[j], b);
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn quantized_linear_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * 4u;
  let col0 = gid.x * 4u;
  let N = params.out_features;
  if (row0 >= params.rows || col0 >= N) {
    return;
  }
  let x0 = x_base(row0);
  let x1 = x_base(row0 + 1u);
  let x2 = x_base(row0 + 2u);
  let x3 = x_base(row0 + 3u);
  let o0 = min(col0, N - 1u);
  let o1 = min(col0 + 1u, N - 1u);
  let o2 = min(col0 + 2u, N - 1u);
  let o3 = min(col0 + 3u, N - 1u);
  let words_per_row = params.in_features / PER_WORD;
  let words_per_group = params.group_size / PER_WORD;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var g = 0u; g < params.groups; g++) {
    let s0 = scales[o0 * params.groups + g];
    let s1 = scales[o1 * params.groups + g];
    let s2 = scales[o2 * params.groups + g];
    let s3 = scales[o3 * params.groups + g];
    for (var wd = g * words_per_group; wd < (g + 1u) * words_per_group; wd++) {
      let w0 = q[o0 * words_per_row + wd];
      let w1 = q[o1 * words_per_row + wd];
      let w2 = q[o2 * words_per_row + wd];
      let w3 = q[o3 * words_per_row + wd];
      for (var part = 0u; part < PER_WORD; part += 4u) {
        let k4 = (wd * PER_WORD + part) / 4u;
        let b0 = dequant4(w0, part, s0);
        let b1 = dequant4(w1, part, s1);
        let b2 = dequant4(w2, part, s2);
        let b3 = dequant4(w3, part, s3);
        let a0 = x4[x0 + k4];
        let a1 = x4[x1 + k4];
        let a2 = x4[x2 + k4];
        let a3 = x4[x3 + k4];
        acc0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        acc1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        acc2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        acc3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
      }
    }
  }
  store_y(row0, col0, acc0);
  store_y(row0 + 1u, col0, acc1);
  store_y(row0 + 2u, col0, acc2);
  store_y(row0 + 3u, col0, acc3);
}

// --- forward for one row: y = x . W^T (a decoding step) ---------------------------------
// The forward above computes a 32-row block per workgroup and would keep one. Here LANES
// threads per output feature o walk its row's words wd = lane, lane + LANES, ... (neighbouring
// words: coalesced on a GPU), each word's fields dequantized with its group's scale and dotted
// with x, then add their partial sums (lib/lane_sum.wgsl). WORKGROUP / LANES outputs per
// workgroup.

//#include "lib/lane_sum.wgsl"

// Word wd of W's row o (its PER_WORD fields dequantized with their group's scale) dotted with
// x's matching features.
fn word_dot(o: u32, wd: u32, word: u32) -> f32 {
  let scale = scales[o * params.groups + wd / (params.group_size / PER_WORD)];
  var sum = 0.0;
  for (var part = 0u; part < PER_WORD; part += 4u) {
    sum += dot(x4[(wd * PER_WORD + part) / 4u], dequant4(word, part, scale));
  }
  return sum;
}

// Every quantized_gemv entry's end: the LANES partial sums added, the epilogue by the first lane.
fn finish_quantized_gemv(local: u32, o: u32, partial: f32) {
  let total = lane_sum(local, partial);
  if (local % LANES == 0u && o < params.out_features) {
    var b = 0.0;
    if (params.has_bias != 0u) {
      b = bias[o];
    }
    y[o] = epilogue(y[o], total, b);
  }
}

@compute @workgroup_size(WORKGROUP)
fn quantized_gemv(@builtin(local_invocation_index) local: u32,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
  let o = lane_output(local, wid, groups);
  var acc = 0.0;
  if (o < params.out_features) {
    let words_per_row = params.in_features / PER_WORD;
    for (var wd = local % LANES; wd < words_per_row; wd += LANES) {
      acc += word_dot(o, wd, q[o * words_per_row + wd]);
    }
  }
  finish_quantized_gemv(local, o, acc);
}

// Four neighbouring words (16 bytes) a lane a step rather than one, so that a GPU has four
// times the bytes in flight per thread (a decoding step's speed is the memory's). Rows of a
// multiple of four words (in_features % (4 * PER_WORD) == 0; kernels/quantized_linear.py
// checks before choosing it).
@compute @workgroup_size(WORKGROUP)
fn quantized_gemv_vec4(@builtin(local_invocation_index) local: u32,
                       @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
  let o = lane_output(local, wid, groups);
  var acc = 0.0;
  if (o < params.out_features) {
    let vectors_per_row = params.in_features / PER_WORD / 4u;
    for (var v = local % LANES; v < vectors_per_row; v += LANES) {
      let words = q4[o * vectors_per_row + v];
      let wd = 4u * v;
      acc += (word_dot(o, wd, words.x) + word_dot(o, wd + 1u, words.y))
           + (word_dot(o, wd + 2u, words.z) + word_dot(o, wd + 3u, words.w));
    }
  }
  finish_quantized_gemv(local, o, acc);
}

// --- input gradient: dx = dy . W ----------------------------------------------------------
// lo_i, hi_i = dx[row0 + i, col0..col0+3], dx[row0 + i, col0+4..col0+7]. Per out feature o,
// row o of W over those 8 columns (one group: one scale; two int8 words or one int4 word)
// is added times dy[row0 + i, o]: rows of W, so nothing is transposed.

fn dy_base(row: u32) -> u32 {
  return min(row, params.rows - 1u) * params.out_features;
}

fn store_dx(row: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
  if (row >= params.rows) {
    return;
  }
  let i = row * params.in_features + col0;
  for (var c = 0u; c < 4u; c++) {
    dx[i + c] = epilogue(dx[i + c], lo[c], 0.0);
    dx[i + 4u + c] = epilogue(dx[i + 4u + c], hi[c], 0.0);
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn quantized_linear_grad_input(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * 4u;
  let col0 = gid.x * 8u;
  let N = params.out_features;
  if (row0 >= params.rows || col0 >= params.in_features) {
    return;
  }
  let words_per_row = params.in_features / PER_WORD;
  let word0 = col0 / PER_WORD;
  let group = col0 / params.group_size;
  let d0 = dy_base(row0);
  let d1 = dy_base(row0 + 1u);
  let d2 = dy_base(row0 + 2u);
  let d3 = dy_base(row0 + 3u);
  var lo0 = vec4<f32>(0.0);
  var lo1 = vec4<f32>(0.0);
  var lo2 = vec4<f32>(0.0);
  var lo3 = vec4<f32>(0.0);
  var hi0 = vec4<f32>(0.0);
  var hi1 = vec4<f32>(0.0);
  var hi2 = vec4<f32>(0.0);
  var hi3 = vec4<f32>(0.0);
  for (var o = 0u; o < N; o++) {
    let s = scales[o * params.groups + group];
    let first = q[o * words_per_row + word0];
    let w_lo = dequant4(first, 0u, s);
    var w_hi: vec4<f32>;
    if (PER_WORD == 4u) {
      w_hi = dequant4(q[o * words_per_row + word0 + 1u], 0u, s);
    } else {
      w_hi = dequant4(first, 4u, s);
    }
    let g0 = dy[d0 + o];
    let g1 = dy[d1 + o];
    let g2 = dy[d2 + o];
    let g3 = dy[d3 + o];
    lo0 = fma(vec4<f32>(g0), w_lo, lo0);
    hi0 = fma(vec4<f32>(g0), w_hi, hi0);
    lo1 = fma(vec4<f32>(g1), w_lo, lo1);
    hi1 = fma(vec4<f32>(g1), w_hi, hi1);
    lo2 = fma(vec4<f32>(g2), w_lo, lo2);
    hi2 = fma(vec4<f32>(g2), w_hi, hi2);
    lo3 = fma(vec4<f32>(g3), w_lo, lo3);
    hi3 = fma(vec4<f32>(g3), w_hi, hi3);
  }
  store_dx(row0, col0, lo0, hi0);
  store_dx(row0 + 1u, col0, lo1, hi1);
  store_dx(row0 + 2u, col0, lo2, hi2);
  store_dx(row0 + 3u, col0, lo3, hi3);
}

// --- quantize_weight: W -> q + scales ----------------------------------------------------

fn source_at(e: u32) -> f32 {
  if (SOURCE_FORMAT == 0u) {
    return bitcast<f32>(source[e]);
  }
  let word = source[e >> 1u];
  let odd = (e & 1u) == 1u;
  if (SOURCE_FORMAT == 1u) {
    let pair = unpack2x16float(word);
    return select(pair.x, pair.y, odd);
  }
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, odd));   // bf16
}

// The sign of w - m * scale, exactly, for m a multiple of 1/2 with |m| < 256 (8 significant
// bits). scale = hi + lo splits its 24-bit significand in two 12-bit halves, so m * hi and
// m * lo are exact; near the boundary w - m * hi is exact (Sterbenz), and far from it its
// rounding cannot flip the comparison with the tiny m * lo.
fn side(w: f32, m: f32, scale: f32) -> i32 {
  let hi = bitcast<f32>(bitcast<u32>(scale) & 0xfffff000u);
  let lo = scale - hi;
  let d = w - m * hi;
  let e = m * lo;
  return select(select(0, -1, d < e), 1, d > e);
}

fn quantize_value(w: f32, scale: f32, inv: f32) -> i32 {
  if (scale == 0.0) {
    return 0;
  }
  // The estimate is within a few ulp of w / scale (|.| <= 127.5), so at most one off.
  var k = clamp(round(w * inv), -QMAX, QMAX);
  let odd = (i32(k) & 1) != 0;
  let up = side(w, k + 0.5, scale);
  if (up > 0 || (up == 0 && odd)) {
    k += 1.0;
  } else {
    let down = side(w, k - 0.5, scale);
    if (down < 0 || (down == 0 && odd)) {
      k -= 1.0;
    }
  }
  return i32(clamp(k, -QMAX, QMAX));
}

@compute @workgroup_size(WORKGROUP)
fn quantize_weight(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) grid: vec3<u32>) {
  let G = params.group_size;
  let stride = grid.x * WORKGROUP;
  for (var gi = gid.x; gi < params.total_groups; gi += stride) {
    let start = gi * G;        // rows hold whole groups: group gi starts at element gi * G
    var amax = 0.0;
    for (var e = 0u; e < G; e++) {
      amax = max(amax, abs(source_at(start + e)));
    }
    let scale = amax * bitcast<f32>(INV_QMAX_BITS);
    scales_out[gi] = scale;
    let inv = select(0.0, 1.0 / scale, scale > 0.0);
    for (var wd = 0u; wd < G / PER_WORD; wd++) {
      var word = 0u;
      for (var n = 0u; n < PER_WORD; n++) {
        let v = quantize_value(source_at(start + wd * PER_WORD + n), scale, inv);
        word |= (bitcast<u32>(v) & FIELD_MASK) << (BITS * n);
      }
      q_out[start / PER_WORD + wd] = word;
    }
  }
}
