// Matrix multiply family, row-major f32. Reference: py_engine/ops/matmul.py (NumPy);
// recorder: py_engine/kernels/matmul.py; checks: tests/test_kernels_matmul.py.
//
//   matmul:       the plain C[M, N] = A[M, K] . B[K, N] the self-check runs
//                 (py_engine/gpu/selfcheck.py), register-tiled, scalar loads.
//
//   General GEMM, the layouts training needs, batched over (batch, head):
//
//     C = alpha * op(A) . op(B) + bias + beta * C       op(A): [M, K], op(B): [K, N]
//
//   op(A) = A stored [M, K] (TRANS_A false) or A^T with A stored [K, M] (TRANS_A true);
//   op(B) = B stored [K, N] (TRANS_B false) or B^T with B stored [N, K] (TRANS_B true).
//   Every operand has a leading dimension (row stride, in elements) and an element offset, so
//   a head's [T, D] slice of a [B*T, H*D] activation is a view: ld = H*D, offset = h*D.
//   The dispatch's z index is one (batch, head) pair: z = batch * heads + head, and each
//   operand's base moves by batch * batch_stride + head * head_stride. The layouts used:
//
//     linear forward   Y  = X . W^T + b        NT  (W stored [out, in], as torch does)
//     input grad       dX = dY . W             NN
//     weight grad      dW = dY^T . X           TN  (beta = 1 accumulates)
//     attention        S  = Q . K^T, dP = dC . V^T            NT, batched
//                      C  = P . V,   dQ = dS . K              NN, batched
//                      dV = P^T . dC, dK = dS^T . Q           TN, batched
//
//   beta == 0 never reads C (a NaN-poisoned or uninitialised C stays harmless); the bias flag
//   adds bias[col] once, unscaled by alpha.
//
//   Two families of the same GEMM:
//   gemm_scalar, gemm_vec4, gemm_f16: register-tiled. A thread owns a 4 x 4 block of C in
//       registers and streams op(A) and op(B) from storage four k at a time. No workgroup
//       memory and no barriers: on software WebGPU (SwiftShader, lavapipe) that is 10-25x
//       faster than shared-memory tiling (shared/PLATFORM.md), and on an NVIDIA H200 (wgpu,
//       Vulkan) gemm_vec4 ran 6-17 TFLOP/s where the tiled entries' array form ran 0.34. The
//       default on every adapter (kernels/matmul.py).
//       gemm_vec4 reads 16-byte vectors along each operand's contiguous dimension and needs K,
//       that dimension, the leading dimensions, offsets and strides to be multiples of 4;
//       gemm_scalar takes any shape and stride. At 256 x 384 x 384 (MiniLM's linear layers
//       over 8 x 32 tokens), gemm_vec4 runs about 2.3 GFLOP/s on SwiftShader in Chromium
//       (the array-tiled form it replaced: 0.6) and 6-10 on lavapipe, as before.
//   gemm_tiled, gemm_tiled_f16: workgroup-memory tiled. A workgroup stages a TILE_K-deep slab
//       of op(A) and op(B) in workgroup memory with coalesced loads, then each thread
//       accumulates 4 x 4 outputs strided by the workgroup size, so that neighbouring threads
//       write neighbouring columns. Its loads coalesce where gemm_vec4's NT reads of B do not;
//       kept in the register form for a GPU run to weigh against gemm_vec4 (variant="tiled").
//   The _f16 entries read B (the frozen weight) as packed f16 pairs, array<u32> through core
//   unpack2x16float (no shader-f16 feature); element e sits in word e/2, low half first, so
//   any inner dimension, odd included, works.
//
//   gemv, gemv_f16, gemv_vec4, gemv_f16_vec4: the same product for M = 1 in the linear layout
//       (NT, one product): a decoding step's linear layers, where a GEMM's block of rows would be
//       all but one wasted. The _vec4 entries read four k at a time (x and W 16-byte aligned
//       along k, K % 4 == 0; f16 weights 8-byte aligned).
//
//   sum_columns: out[n] = alpha * sum_m X[m, n] (+ beta * out[n]): the bias gradient, column sums
//       of dY (alpha: the scale on a LoRA's lora_B bias).
//
// Each entry declares its own bindings (entries may reuse binding numbers with other types;
// naga and Tint allow that as long as one entry uses each binding once).

override TILE_M: u32 = 4u;     // rows of C per thread (the plain matmul)
override TILE_N: u32 = 4u;     // columns of C per thread (the plain matmul)
override TILE_K: u32 = 16u;    // depth of the workgroup-memory slab (tiled entries)
override WG_X: u32 = 8u;       // threads along N
override WG_Y: u32 = 8u;       // threads along M
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override WORKGROUP: u32 = 64u; // sum_columns, gemv

// --- matmul: the plain kernel of the self-check -----------------------------------------

struct Dims {
  M: u32,
  N: u32,
  K: u32,
}

@group(0) @binding(0) var<storage, read> plain_a: array<f32>;
@group(0) @binding(1) var<storage, read> plain_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> plain_c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(WG_X, WG_Y)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * TILE_M;
  let col0 = gid.x * TILE_N;
  if (row0 >= dims.M || col0 >= dims.N) {
    return;
  }
  let K = dims.K;
  let N = dims.N;
  var acc: array<f32, TILE_M * TILE_N>;
  var a_col: array<f32, TILE_M>;
  for (var k = 0u; k < K; k++) {
    for (var i = 0u; i < TILE_M; i++) {
      let r = min(row0 + i, dims.M - 1u);
      a_col[i] = plain_a[r * K + k];
    }
    for (var j = 0u; j < TILE_N; j++) {
      let b = plain_b[k * N + min(col0 + j, N - 1u)];
      for (var i = 0u; i < TILE_M; i++) {
        acc[i * TILE_N + j] = fma(a_col[i], b, acc[i * TILE_N + j]);
      }
    }
  }
  for (var i = 0u; i < TILE_M; i++) {
    let r = row0 + i;
    for (var j = 0u; j < TILE_N; j++) {
      let c = col0 + j;
      if (r < dims.M && c < N) {
        plain_c[r * N + c] = acc[i * TILE_N + j];
      }
    }
  }
}

// --- general GEMM: bindings and addressing shared by every entry below -------------------

struct Gemm {
  M: u32,
  N: u32,
  K: u32,
  lda: u32,
  ldb: u32,
  ldc: u32,
  a_offset: u32,
  b_offset: u32,
  c_offset: u32,
  heads: u32,            // z = batch * heads + head
  a_batch_stride: u32,
  a_head_stride: u32,
  b_batch_stride: u32,
  b_head_stride: u32,
  c_batch_stride: u32,
  c_head_stride: u32,
  alpha: f32,
  beta: f32,
  has_bias: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b_half: array<u32>;
@group(0) @binding(1) var<storage, read> b_half4: array<vec2<u32>>;   // four halves a read
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> gemm: Gemm;

// Element offsets of one (batch, head) pair's A, B and C.
struct Bases {
  a: u32,
  b: u32,
  c: u32,
}

fn bases_for(z: u32) -> Bases {
  let batch = z / gemm.heads;
  let head = z % gemm.heads;
  return Bases(
    gemm.a_offset + batch * gemm.a_batch_stride + head * gemm.a_head_stride,
    gemm.b_offset + batch * gemm.b_batch_stride + head * gemm.b_head_stride,
    gemm.c_offset + batch * gemm.c_batch_stride + head * gemm.c_head_stride);
}

// Storage index of op(A)[m, k] and op(B)[k, n] (TRANS_* are constants: the select folds).
fn a_index(base: u32, m: u32, k: u32) -> u32 {
  return base + select(m * gemm.lda + k, k * gemm.lda + m, TRANS_A);
}

fn b_index(base: u32, k: u32, n: u32) -> u32 {
  return base + select(k * gemm.ldb + n, n * gemm.ldb + k, TRANS_B);
}

fn half_at(e: u32) -> f32 {
  let pair = unpack2x16float(b_half[e >> 1u]);
  return select(pair.x, pair.y, (e & 1u) == 1u);
}

// The epilogue: C = alpha * acc + bias + beta * C for one element in range.
fn store(base: u32, row: u32, col: u32, value: f32) {
  let i = base + row * gemm.ldc + col;
  var v = gemm.alpha * value;
  if (gemm.has_bias != 0u) {
    v += bias[col];
  }
  if (gemm.beta != 0.0) {
    v = fma(gemm.beta, c[i], v);
  }
  c[i] = v;
}

// --- register-tiled GEMM ----------------------------------------------------------------
// Every thread computes a 4 x 4 block of C starting at (row0, col0): per step of 4 along k it
// reads a_i = op(A)[row0 + i, k..k+3] and b_j = op(B)[k..k+3, col0 + j] and adds their dot
// products. The block and the operands live in named vec4 registers (a mat4x4 for the block),
// not private arrays indexed in loops: SwiftShader's shader compiler keeps private arrays in
// memory, which made the array form 5x slower there (lavapipe's LLVM promotes either to
// registers), and on an NVIDIA H200 (wgpu, Vulkan) the array form ran at a quarter of the
// vec4 entry's forward speed, below a naive kernel. gemm_vec4 reads whole vectors (operands 16-byte
// aligned along their contiguous dimension); gemm_scalar and gemm_f16 read one element at a
// time (any alignment; f16 weights). Rows and columns past M and N are clamped on load (their
// results are never stored); k past K loads 0 in the element-wise loads (K % 4 == 0 for vec4).

// Column i of the result is row i of the 4 x 4 product of a's columns (rows of op(A)) and b's
// columns (columns of op(B)): dot(a[i], b[j]) at [i][j].
fn block(a: mat4x4<f32>, b: mat4x4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(vec4<f32>(dot(a[0], b[0]), dot(a[0], b[1]), dot(a[0], b[2]), dot(a[0], b[3])),
                     vec4<f32>(dot(a[1], b[0]), dot(a[1], b[1]), dot(a[1], b[2]), dot(a[1], b[3])),
                     vec4<f32>(dot(a[2], b[0]), dot(a[2], b[1]), dot(a[2], b[2]), dot(a[2], b[3])),
                     vec4<f32>(dot(a[3], b[0]), dot(a[3], b[1]), dot(a[3], b[2]), dot(a[3], b[3])));
}

// A thread's 4 x 4 block of C (column i of `rows`: row i), its rows `row_step` apart from
// `row`, its columns `col_step` apart from `col` (1 in the register entries; the workgroup's
// width in the tiled ones, whose threads interleave); elements past M or N are not stored.
fn store_row(base: u32, row: u32, col: u32, col_step: u32, v: vec4<f32>) {
  if (row < gemm.M) {
    for (var j = 0u; j < 4u; j++) {
      if (col + j * col_step < gemm.N) {
        store(base, row, col + j * col_step, v[j]);
      }
    }
  }
}

fn store_block(base: u32, row: u32, col: u32, row_step: u32, col_step: u32, rows: mat4x4<f32>) {
  store_row(base, row, col, col_step, rows[0]);
  store_row(base, row + row_step, col, col_step, rows[1]);
  store_row(base, row + 2u * row_step, col, col_step, rows[2]);
  store_row(base, row + 3u * row_step, col, col_step, rows[3]);
}

fn a_at(base: u32, m: u32, k: u32) -> f32 {
  let v = a[a_index(base, min(m, gemm.M - 1u), min(k, gemm.K - 1u))];
  return select(0.0, v, k < gemm.K);
}

fn b_at(base: u32, k: u32, n: u32) -> f32 {
  let v = b[b_index(base, min(k, gemm.K - 1u), min(n, gemm.N - 1u))];
  return select(0.0, v, k < gemm.K);
}

fn b_half_at(base: u32, k: u32, n: u32) -> f32 {
  let v = half_at(b_index(base, min(k, gemm.K - 1u), min(n, gemm.N - 1u)));
  return select(0.0, v, k < gemm.K);
}

// op(A)[row0..row0+3, k..k+3] and op(B)[k..k+3, col0..col0+3] (as columns), element by
// element; written out rather than looped, so that nothing is indexed at run time.
fn a_row(base: u32, m: u32, k: u32) -> vec4<f32> {
  return vec4<f32>(a_at(base, m, k), a_at(base, m, k + 1u), a_at(base, m, k + 2u), a_at(base, m, k + 3u));
}

fn b_column(base: u32, k: u32, n: u32) -> vec4<f32> {
  return vec4<f32>(b_at(base, k, n), b_at(base, k + 1u, n), b_at(base, k + 2u, n), b_at(base, k + 3u, n));
}

fn b_half_column(base: u32, k: u32, n: u32) -> vec4<f32> {
  return vec4<f32>(b_half_at(base, k, n), b_half_at(base, k + 1u, n),
                   b_half_at(base, k + 2u, n), b_half_at(base, k + 3u, n));
}

fn a_rows(base: u32, row0: u32, k: u32) -> mat4x4<f32> {
  return mat4x4<f32>(a_row(base, row0, k), a_row(base, row0 + 1u, k),
                     a_row(base, row0 + 2u, k), a_row(base, row0 + 3u, k));
}

fn b_columns(base: u32, k: u32, col0: u32) -> mat4x4<f32> {
  return mat4x4<f32>(b_column(base, k, col0), b_column(base, k, col0 + 1u),
                     b_column(base, k, col0 + 2u), b_column(base, k, col0 + 3u));
}

fn b_half_columns(base: u32, k: u32, col0: u32) -> mat4x4<f32> {
  return mat4x4<f32>(b_half_column(base, k, col0), b_half_column(base, k, col0 + 1u),
                     b_half_column(base, k, col0 + 2u), b_half_column(base, k, col0 + 3u));
}

// gemm_scalar and gemm_f16 differ in B's reads alone; one entry point cannot read both of the
// declarations bound at binding 1 (b and b_half), so each has its own few lines.
@compute @workgroup_size(WG_X, WG_Y)
fn gemm_scalar(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * 4u;
  let col0 = gid.x * 4u;
  if (row0 < gemm.M && col0 < gemm.N) {
    let base = bases_for(gid.z);
    var c = mat4x4<f32>();
    for (var k = 0u; k < gemm.K; k += 4u) {
      c += block(a_rows(base.a, row0, k), b_columns(base.b, k, col0));
    }
    store_block(base.c, row0, col0, 1u, 1u, c);
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn gemm_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * 4u;
  let col0 = gid.x * 4u;
  if (row0 < gemm.M && col0 < gemm.N) {
    let base = bases_for(gid.z);
    var c = mat4x4<f32>();
    for (var k = 0u; k < gemm.K; k += 4u) {
      c += block(a_rows(base.a, row0, k), b_half_columns(base.b, k, col0));
    }
    store_block(base.c, row0, col0, 1u, 1u, c);
  }
}

fn a_vec4(base: u32, row: u32, k: u32) -> vec4<f32> {
  return a4[a_index(base, min(row, gemm.M - 1u), k) / 4u];
}

fn b_vec4(base: u32, k: u32, col: u32) -> vec4<f32> {
  return b4[b_index(base, k, min(col, gemm.N - 1u)) / 4u];
}

@compute @workgroup_size(WG_X, WG_Y)
fn gemm_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * 4u;
  let col0 = gid.x * 4u;
  if (row0 >= gemm.M || col0 >= gemm.N) {
    return;
  }
  let base = bases_for(gid.z);
  var c = mat4x4<f32>();
  for (var k = 0u; k < gemm.K; k += 4u) {
    // a_i = op(A)[row0 + i, k..k+3], b_j = op(B)[k..k+3, col0 + j]. Transposed in storage,
    // one vector holds four rows of op(A) (columns of op(B)) at one k (M, N % 4 == 0 then).
    var a0: vec4<f32>;
    var a1: vec4<f32>;
    var a2: vec4<f32>;
    var a3: vec4<f32>;
    if (TRANS_A) {
      let r = min(row0, gemm.M - 4u);
      let t0 = a4[a_index(base.a, r, k) / 4u];
      let t1 = a4[a_index(base.a, r, k + 1u) / 4u];
      let t2 = a4[a_index(base.a, r, k + 2u) / 4u];
      let t3 = a4[a_index(base.a, r, k + 3u) / 4u];
      a0 = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
      a1 = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
      a2 = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
      a3 = vec4<f32>(t0.w, t1.w, t2.w, t3.w);
    } else {
      a0 = a_vec4(base.a, row0, k);
      a1 = a_vec4(base.a, row0 + 1u, k);
      a2 = a_vec4(base.a, row0 + 2u, k);
      a3 = a_vec4(base.a, row0 + 3u, k);
    }
    var b0: vec4<f32>;
    var b1: vec4<f32>;
    var b2: vec4<f32>;
    var b3: vec4<f32>;
    if (TRANS_B) {
      b0 = b_vec4(base.b, k, col0);
      b1 = b_vec4(base.b, k, col0 + 1u);
      b2 = b_vec4(base.b, k, col0 + 2u);
      b3 = b_vec4(base.b, k, col0 + 3u);
    } else {
      let col = min(col0, gemm.N - 4u);
      let t0 = b4[b_index(base.b, k, col) / 4u];
      let t1 = b4[b_index(base.b, k + 1u, col) / 4u];
      let t2 = b4[b_index(base.b, k + 2u, col) / 4u];
      let t3 = b4[b_index(base.b, k + 3u, col) / 4u];
      b0 = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
      b1 = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
      b2 = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
      b3 = vec4<f32>(t0.w, t1.w, t2.w, t3.w);
    }
    c += block(mat4x4<f32>(a0, a1, a2, a3), mat4x4<f32>(b0, b1, b2, b3));
  }
  store_block(base.c, row0, col0, 1u, 1u, c);
}

// --- workgroup-memory tiled GEMM --------------------------------------------------------
// The workgroup owns a (WG_Y*4) x (WG_X*4) block of C. Per TILE_K slab it stages op(A) as
// a_slab[k][m] and op(B) as b_slab[k][n]; consecutive threads load consecutive storage
// addresses (along whichever dimension is contiguous), and out-of-range elements load as 0 so
// edges need no special case. Thread (x, y) owns rows y + i*WG_Y and columns x + j*WG_X
// (i, j < 4): reads of a slab row are broadcasts or consecutive, stores coalesce. Its block
// lives in a mat4x4 (column i: row y + i*WG_Y), named registers as in the register entries,
// and each k of the slab adds the outer product of its four values of a_slab[k] and b_slab[k].

const BLOCK_M: u32 = WG_Y * 4u;
const BLOCK_N: u32 = WG_X * 4u;
const THREADS: u32 = WG_X * WG_Y;

var<workgroup> a_slab: array<f32, TILE_K * BLOCK_M>;
var<workgroup> b_slab: array<f32, TILE_K * BLOCK_N>;

fn a_or_zero(base: u32, m: u32, k: u32) -> f32 {
  if (m < gemm.M && k < gemm.K) {
    return a[a_index(base, m, k)];
  }
  return 0.0;
}

fn b_or_zero(base: u32, k: u32, n: u32) -> f32 {
  if (k < gemm.K && n < gemm.N) {
    return b[b_index(base, k, n)];
  }
  return 0.0;
}

fn b_half_or_zero(base: u32, k: u32, n: u32) -> f32 {
  if (k < gemm.K && n < gemm.N) {
    return half_at(b_index(base, k, n));
  }
  return 0.0;
}

fn stage_a(base: u32, block_row: u32, k0: u32, lane: u32) {
  for (var e = lane; e < TILE_K * BLOCK_M; e += THREADS) {
    // Walk storage order: m fastest when A is stored transposed, k fastest otherwise.
    let m = select(e / TILE_K, e % BLOCK_M, TRANS_A);
    let k = select(e % TILE_K, e / BLOCK_M, TRANS_A);
    a_slab[k * BLOCK_M + m] = a_or_zero(base, block_row + m, k0 + k);
  }
}

fn slab_k(e: u32) -> u32 {
  return select(e / BLOCK_N, e % TILE_K, TRANS_B);
}

fn slab_n(e: u32) -> u32 {
  return select(e % BLOCK_N, e / TILE_K, TRANS_B);
}

fn stage_b(base: u32, block_col: u32, k0: u32, lane: u32) {
  for (var e = lane; e < TILE_K * BLOCK_N; e += THREADS) {
    let k = slab_k(e);
    let n = slab_n(e);
    b_slab[k * BLOCK_N + n] = b_or_zero(base, k0 + k, block_col + n);
  }
}

fn stage_b_half(base: u32, block_col: u32, k0: u32, lane: u32) {
  for (var e = lane; e < TILE_K * BLOCK_N; e += THREADS) {
    let k = slab_k(e);
    let n = slab_n(e);
    b_slab[k * BLOCK_N + n] = b_half_or_zero(base, k0 + k, block_col + n);
  }
}

// The thread's four values of slab row k: op(A)[y + i*WG_Y, k] and op(B)[k, x + j*WG_X].
fn slab_a(k: u32, y: u32) -> vec4<f32> {
  let at = k * BLOCK_M + y;
  return vec4<f32>(a_slab[at], a_slab[at + WG_Y], a_slab[at + 2u * WG_Y], a_slab[at + 3u * WG_Y]);
}

fn slab_b(k: u32, x: u32) -> vec4<f32> {
  let at = k * BLOCK_N + x;
  return vec4<f32>(b_slab[at], b_slab[at + WG_X], b_slab[at + 2u * WG_X], b_slab[at + 3u * WG_X]);
}

// c plus the outer product of a (one value per row) and b (one per column).
fn add_outer(c: mat4x4<f32>, a: vec4<f32>, b: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(fma(vec4<f32>(a.x), b, c[0]), fma(vec4<f32>(a.y), b, c[1]),
                     fma(vec4<f32>(a.z), b, c[2]), fma(vec4<f32>(a.w), b, c[3]));
}

fn multiply_slabs(lid: vec3<u32>, c: mat4x4<f32>) -> mat4x4<f32> {
  var out = c;
  for (var k = 0u; k < TILE_K; k++) {
    out = add_outer(out, slab_a(k, lid.y), slab_b(k, lid.x));
  }
  return out;
}

@compute @workgroup_size(WG_X, WG_Y)
fn gemm_tiled(@builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) lane: u32,
              @builtin(workgroup_id) wid: vec3<u32>) {
  let base = bases_for(wid.z);
  let block_row = wid.y * BLOCK_M;
  let block_col = wid.x * BLOCK_N;
  var c = mat4x4<f32>();
  for (var k0 = 0u; k0 < gemm.K; k0 += TILE_K) {
    stage_a(base.a, block_row, k0, lane);
    stage_b(base.b, block_col, k0, lane);
    workgroupBarrier();
    c = multiply_slabs(lid, c);
    workgroupBarrier();
  }
  store_block(base.c, block_row + lid.y, block_col + lid.x, WG_Y, WG_X, c);
}

@compute @workgroup_size(WG_X, WG_Y)
fn gemm_tiled_f16(@builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(local_invocation_index) lane: u32,
                  @builtin(workgroup_id) wid: vec3<u32>) {
  let base = bases_for(wid.z);
  let block_row = wid.y * BLOCK_M;
  let block_col = wid.x * BLOCK_N;
  var c = mat4x4<f32>();
  for (var k0 = 0u; k0 < gemm.K; k0 += TILE_K) {
    stage_a(base.a, block_row, k0, lane);
    stage_b_half(base.b, block_col, k0, lane);
    workgroupBarrier();
    c = multiply_slabs(lid, c);
    workgroupBarrier();
  }
  store_block(base.c, block_row + lid.y, block_col + lid.x, WG_Y, WG_X, c);
}

// --- the gemv entries: one row of A times B^T (a decoding step's linear layers) ---------
// A tiled GEMM given M = 1 computes a whole block of rows and stores one (64 x the work in the
// tiled variant, 32 x in the register one). These compute y = alpha * x . W^T + bias + beta * y
// for x = op(A)[0, :] and W = B stored [N, K] (TRANS_A false, TRANS_B true; one product,
// z = 0): LANES threads per output walk its weight row k = lane, lane + LANES, ... (LANES
// neighbouring floats per step: coalesced on a GPU), then add their partial sums
// (lib/lane_sum.wgsl). WORKGROUP / LANES outputs per workgroup. LANES = 1 (a thread per
// output, no tree) suits software adapters; 32 suits GPUs.

override LANES: u32 = 1u;   // threads per output, a power of two dividing WORKGROUP

//#include "lib/lane_sum.wgsl"

// Every gemv entry's end: the LANES partial sums of output n added, and stored by the first lane
// (called by every thread: lane_sum holds barriers).
fn finish_gemv(local: u32, c_base: u32, n: u32, partial: f32) {
  let total = lane_sum(local, partial);
  if (local % LANES == 0u && n < gemm.N) {
    store(c_base, 0u, n, total);
  }
}

@compute @workgroup_size(WORKGROUP)
fn gemv(@builtin(local_invocation_index) local: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
  let base = bases_for(0u);
  let n = lane_output(local, wid, groups);
  var acc = 0.0;
  for (var k = local % LANES; n < gemm.N && k < gemm.K; k += LANES) {
    acc = fma(a[a_index(base.a, 0u, k)], b[b_index(base.b, k, n)], acc);
  }
  finish_gemv(local, base.c, n, acc);
}

@compute @workgroup_size(WORKGROUP)
fn gemv_f16(@builtin(local_invocation_index) local: u32,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
  let base = bases_for(0u);
  let n = lane_output(local, wid, groups);
  var acc = 0.0;
  for (var k = local % LANES; n < gemm.N && k < gemm.K; k += LANES) {
    acc = fma(a[a_index(base.a, 0u, k)], half_at(b_index(base.b, k, n)), acc);
  }
  finish_gemv(local, base.c, n, acc);
}

// The _vec4 entries: each lane reads 16 bytes of x and of W's row (8 of an f16 row) per step
// instead of 4, so that a GPU has four times the bytes in flight per thread: a decoding step
// reads every weight once, and its speed is the memory's (gemv on an NVIDIA H200 read some
// 140 GB/s, latency-bound). Operands aligned: x's element offset, W's offset and row stride
// multiples of 4, K % 4 == 0 (kernels/matmul.py checks before choosing them).

@compute @workgroup_size(WORKGROUP)
fn gemv_vec4(@builtin(local_invocation_index) local: u32,
             @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
  let base = bases_for(0u);
  let n = lane_output(local, wid, groups);
  let x_row = base.a / 4u;                                     // in vectors
  let w_row = (base.b + min(n, gemm.N - 1u) * gemm.ldb) / 4u;
  var acc = vec4<f32>(0.0);
  for (var k = local % LANES; n < gemm.N && k < gemm.K / 4u; k += LANES) {
    acc = fma(a4[x_row + k], b4[w_row + k], acc);
  }
  finish_gemv(local, base.c, n, (acc.x + acc.y) + (acc.z + acc.w));
}

@compute @workgroup_size(WORKGROUP)
fn gemv_f16_vec4(@builtin(local_invocation_index) local: u32,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
  let base = bases_for(0u);
  let n = lane_output(local, wid, groups);
  let x_row = base.a / 4u;
  let w_row = (base.b + min(n, gemm.N - 1u) * gemm.ldb) / 4u;
  var acc = vec4<f32>(0.0);
  for (var k = local % LANES; n < gemm.N && k < gemm.K / 4u; k += LANES) {
    let w = b_half4[w_row + k];
    acc = fma(a4[x_row + k], vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), acc);
  }
  finish_gemv(local, base.c, n, (acc.x + acc.y) + (acc.z + acc.w));
}

// --- sum_columns: the bias gradient -------------------------------------------------------
// One thread per column walks the rows; neighbouring threads read neighbouring addresses.
// Four partial sums break the dependency chain of one long accumulation.

struct Columns {
  rows: u32,
  cols: u32,
  ld: u32,
  beta: f32,
  alpha: f32,
}

@group(0) @binding(0) var<storage, read> columns_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> columns_out: array<f32>;
@group(0) @binding(2) var<uniform> columns: Columns;

@compute @workgroup_size(WORKGROUP)
fn sum_columns(@builtin(global_invocation_id) gid: vec3<u32>) {
  let col = gid.x;
  if (col >= columns.cols) {
    return;
  }
  var part = vec4<f32>(0.0);
  let ld = columns.ld;
  var r = 0u;
  for (; r + 4u <= columns.rows; r += 4u) {
    part += vec4<f32>(columns_in[r * ld + col], columns_in[(r + 1u) * ld + col],
                      columns_in[(r + 2u) * ld + col], columns_in[(r + 3u) * ld + col]);
  }
  for (; r < columns.rows; r++) {
    part.x += columns_in[r * ld + col];
  }
  var total = columns.alpha * ((part.x + part.y) + (part.z + part.w));
  if (columns.beta != 0.0) {
    total = fma(columns.beta, columns_out[col], total);
  }
  columns_out[col] = total;
}
