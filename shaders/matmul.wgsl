// Matrix multiply, row-major f32: C[M, N] = A[M, K] . B[K, N].
//
//   matmul: register-tiled. Each thread accumulates a TILE_M x TILE_N block of C in registers,
//           reading a column strip of A and a row strip of B straight from storage; a
//           workgroup of WG_X x WG_Y threads covers (WG_Y*TILE_M) x (WG_X*TILE_N) of C.
//           No workgroup memory or barriers: on software WebGPU (SwiftShader, lavapipe) that
//           is 10-25x faster than shared-memory tiling (PLATFORM.md). Edge threads clamp their
//           reads and skip their out-of-range writes, so any M, N, K works.
//
// Backward (for training): dA = dC . B^T and dB = A^T . dC, the transposed layouts come with
// the training kernels. Reference: py_engine/gpu/selfcheck.py (pure Python),
// tests/test_kernels.py (NumPy, float64).

override TILE_M: u32 = 4u;
override TILE_N: u32 = 4u;
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

struct Params {
  M: u32,
  N: u32,
  K: u32,
}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG_X, WG_Y)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * TILE_M;
  let col0 = gid.x * TILE_N;
  if (row0 >= params.M || col0 >= params.N) {
    return;
  }
  let K = params.K;
  let N = params.N;
  var acc: array<f32, TILE_M * TILE_N>;
  var a_col: array<f32, TILE_M>;
  for (var k = 0u; k < K; k++) {
    for (var i = 0u; i < TILE_M; i++) {
      let r = min(row0 + i, params.M - 1u);
      a_col[i] = A[r * K + k];
    }
    for (var j = 0u; j < TILE_N; j++) {
      let b = B[k * N + min(col0 + j, N - 1u)];
      for (var i = 0u; i < TILE_M; i++) {
        acc[i * TILE_N + j] = fma(a_col[i], b, acc[i * TILE_N + j]);
      }
    }
  }
  for (var i = 0u; i < TILE_M; i++) {
    let r = row0 + i;
    for (var j = 0u; j < TILE_N; j++) {
      let c = col0 + j;
      if (r < params.M && c < N) {
        C[r * N + c] = acc[i * TILE_N + j];
      }
    }
  }
}
