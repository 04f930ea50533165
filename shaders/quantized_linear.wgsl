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
// The two products are register-tiled like matmul.wgsl's gemm_* entries: a thread owns a
// TILE_R x TILE_O (forward) or TILE_R x TILE_I (input gradient) block of the output in
// registers and streams x / dy and the packed weight from storage, decoding each u32 word once
// per thread with shifts (sign extension by an arithmetic right shift); no workgroup memory,
// which software adapters run fastest (shared/PLATFORM.md). x rows are read as vec4 (in is a
// multiple of 8). Rows and columns past the edge are clamped on load and never stored.

override BITS: u32 = 8u;           // 8 (int8) or 4 (int4)
override TILE_R: u32 = 4u;         // rows of the output per thread
override TILE_O: u32 = 4u;         // out features per thread (forward)
override TILE_I: u32 = 8u;         // in features per thread (input gradient), a multiple of 8
override WG_X: u32 = 8u;           // threads along the output's columns
override WG_Y: u32 = 8u;           // threads along rows
override WORKGROUP: u32 = 64u;     // quantize_weight
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

var<private> x_tile: array<vec4<f32>, TILE_R>;
var<private> w_tile: array<vec4<f32>, TILE_O>;
var<private> words: array<u32, TILE_O>;
var<private> row_scales: array<f32, TILE_O>;
var<private> acc_y: array<f32, TILE_R * TILE_O>;

@compute @workgroup_size(WG_X, WG_Y)
fn quantized_linear_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * TILE_R;
  let col0 = gid.x * TILE_O;
  let rows = params.rows;
  let N = params.out_features;
  if (row0 >= rows || col0 >= N) {
    return;
  }
  let K4 = params.in_features / 4u;               // vec4s per row of x
  let words_per_row = params.in_features / PER_WORD;
  let words_per_group = params.group_size / PER_WORD;
  for (var g = 0u; g < params.groups; g++) {
    for (var j = 0u; j < TILE_O; j++) {
      row_scales[j] = scales[min(col0 + j, N - 1u) * params.groups + g];
    }
    for (var wd = g * words_per_group; wd < (g + 1u) * words_per_group; wd++) {
      for (var j = 0u; j < TILE_O; j++) {
        words[j] = q[min(col0 + j, N - 1u) * words_per_row + wd];
      }
      for (var part = 0u; part < PER_WORD; part += 4u) {
        let k4 = (wd * PER_WORD + part) / 4u;
        for (var i = 0u; i < TILE_R; i++) {
          x_tile[i] = x4[min(row0 + i, rows - 1u) * K4 + k4];
        }
        for (var j = 0u; j < TILE_O; j++) {
          w_tile[j] = dequant4(words[j], part, row_scales[j]);
        }
        for (var i = 0u; i < TILE_R; i++) {
          for (var j = 0u; j < TILE_O; j++) {
            acc_y[i * TILE_O + j] += dot(x_tile[i], w_tile[j]);
          }
        }
      }
    }
  }
  for (var i = 0u; i < TILE_R; i++) {
    let r = row0 + i;
    for (var j = 0u; j < TILE_O; j++) {
      let c = col0 + j;
      if (r < rows && c < N) {
        var b = 0.0;
        if (params.has_bias != 0u) {
          b = bias[c];
        }
        y[r * N + c] = epilogue(y[r * N + c], acc_y[i * TILE_O + j], b);
      }
    }
  }
}

// --- input gradient: dx = dy . W ----------------------------------------------------------
// Four out features per step: dy_tile[i] = dy[row0 + i, o..o+3] and wt_tile[c] =
// W[o..o+3, col0 + c]; out features past the end load dy = 0 (their weights are clamped).

var<private> dy_tile: array<vec4<f32>, TILE_R>;
var<private> wt_tile: array<vec4<f32>, TILE_I>;
var<private> acc_dx: array<f32, TILE_R * TILE_I>;
var<private> word_cols: array<u32, TILE_I / PER_WORD>;
var<private> group_cols: array<u32, TILE_I / PER_WORD>;

fn dy_at(r: u32, o: u32) -> f32 {
  let N = params.out_features;
  return select(0.0, dy[r * N + min(o, N - 1u)], o < N);
}

@compute @workgroup_size(WG_X, WG_Y)
fn quantized_linear_grad_input(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * TILE_R;
  let col0 = gid.x * TILE_I;
  let rows = params.rows;
  let K = params.in_features;
  let N = params.out_features;
  if (row0 >= rows || col0 >= K) {
    return;
  }
  let words_per_row = K / PER_WORD;
  // The thread's words and groups within a row; words past the row's end are clamped to its
  // last word (those columns are not stored).
  for (var c = 0u; c < TILE_I; c += PER_WORD) {
    let col = min(col0 + c, K - PER_WORD);
    word_cols[c / PER_WORD] = col / PER_WORD;
    group_cols[c / PER_WORD] = col / params.group_size;
  }
  for (var o = 0u; o < N; o += 4u) {
    for (var i = 0u; i < TILE_R; i++) {
      let r = min(row0 + i, rows - 1u);
      dy_tile[i] = vec4<f32>(dy_at(r, o), dy_at(r, o + 1u), dy_at(r, o + 2u), dy_at(r, o + 3u));
    }
    for (var t = 0u; t < 4u; t++) {
      let oo = min(o + t, N - 1u);
      for (var c = 0u; c < TILE_I; c += PER_WORD) {
        let word = q[oo * words_per_row + word_cols[c / PER_WORD]];
        let s = scales[oo * params.groups + group_cols[c / PER_WORD]];
        for (var n = 0u; n < PER_WORD; n++) {
          wt_tile[c + n][t] = field(word, n) * s;
        }
      }
    }
    for (var i = 0u; i < TILE_R; i++) {
      for (var c = 0u; c < TILE_I; c++) {
        acc_dx[i * TILE_I + c] += dot(dy_tile[i], wt_tile[c]);
      }
    }
  }
  for (var i = 0u; i < TILE_R; i++) {
    let r = row0 + i;
    for (var c = 0u; c < TILE_I; c++) {
      let col = col0 + c;
      if (r < rows && col < K) {
        dx[r * K + col] = epilogue(dx[r * K + col], acc_dx[i * TILE_I + c], 0.0);
      }
    }
  }
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
