// DeBERTa-v2's disentangled attention bias: the gather of the content-to-position and
// position-to-content products into the scores' bias, and its backward scatter.
// Reference: py_engine/ops/disentangled_attention.py (NumPy); recorder:
// py_engine/kernels/disentangled_attention.py; checks: tests/test_kernels_disentangled_attention.py.
//
// The products come from the attention family's batched matmul, over all B*T queries (or keys)
// at once against the R relative embedding rows the sequence reads: c2p[h, b*T + i, r] =
// scaling * q_i . pk_r and p2c[h, b*T + j, r] = scaling * k_j . pq_r, each [H, B*T, R].
// offsets[i - j + T - 1] is the row r of query i and key j (DeBERTa's log buckets: several
// distances may share one).
//
//   disentangled_gather:   bias[b, h, i, j] = c2p[h, b*T + i, r] + p2c[h, b*T + j, r]
//                          (terms: bit 0 c2p, bit 1 p2c; an absent term's binding is unread).
//   disentangled_scatter:  the gradient of one product from the bias gradient dbias [B, H, T, T]:
//                          side 0 (c2p, rows are queries i): d[h, b*T + i, r] = the sum of
//                          dbias[b, h, i, i - d] over the distances d that read row r;
//                          side 1 (p2c, rows are keys j): d[h, b*T + j, r] = the sum of
//                          dbias[b, h, j + d, j] over them. The distances of each row are
//                          listed (starts [R + 1], then d + T - 1 each), so every output sums
//                          its own terms in a fixed order: no atomics, the same sum every run.
//
// Flat grid-stride loops let a capped dispatch cover any size.

override WORKGROUP: u32 = 64u;

struct Shape {
  batch: u32,
  seq: u32,
  heads: u32,
  rows: u32,
  flags: u32,   // gather: the terms present; scatter: the side
  pad0: u32,
  pad1: u32,
  pad2: u32,
}

// --- disentangled_gather ---------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> gather_c2p: array<f32>;
@group(0) @binding(1) var<storage, read> gather_p2c: array<f32>;
@group(0) @binding(2) var<storage, read> gather_offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> gather_bias: array<f32>;
@group(0) @binding(4) var<uniform> gather_shape: Shape;

@compute @workgroup_size(WORKGROUP)
fn disentangled_gather(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
  let B = gather_shape.batch;
  let T = gather_shape.seq;
  let H = gather_shape.heads;
  let R = gather_shape.rows;
  for (var n = gid.x; n < B * H * T * T; n += groups.x * WORKGROUP) {
    let j = n % T;
    let i = (n / T) % T;
    let h = (n / (T * T)) % H;
    let b = n / (T * T * H);
    let r = gather_offsets[i + T - 1u - j];
    var value = 0.0;
    if ((gather_shape.flags & 1u) != 0u) {
      value += gather_c2p[((h * B + b) * T + i) * R + r];
    }
    if ((gather_shape.flags & 2u) != 0u) {
      value += gather_p2c[((h * B + b) * T + j) * R + r];
    }
    gather_bias[n] = value;
  }
}

// --- disentangled_scatter --------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> scatter_dbias: array<f32>;
@group(0) @binding(1) var<storage, read> scatter_starts: array<u32>;
@group(0) @binding(2) var<storage, read> scatter_distances: array<u32>;
@group(0) @binding(3) var<storage, read_write> scatter_out: array<f32>;
@group(0) @binding(4) var<uniform> scatter_shape: Shape;

@compute @workgroup_size(WORKGROUP)
fn disentangled_scatter(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) groups: vec3<u32>) {
  let B = scatter_shape.batch;
  let T = scatter_shape.seq;
  let H = scatter_shape.heads;
  let R = scatter_shape.rows;
  let keys_side = scatter_shape.flags == 1u;
  for (var n = gid.x; n < H * B * T * R; n += groups.x * WORKGROUP) {
    let r = n % R;
    let row = (n / R) % T;          // query i (c2p) or key j (p2c)
    let b = (n / (R * T)) % B;
    let h = n / (R * T * B);
    let base = (b * H + h) * T * T;
    var sum = 0.0;
    for (var m = scatter_starts[r]; m < scatter_starts[r + 1u]; m++) {
      let e = scatter_distances[m];   // d + T - 1, d = i - j
      if (keys_side) {                // i = j + d
        if (row + e >= T - 1u && row + e < 2u * T - 1u) {
          sum += scatter_dbias[base + (row + e - (T - 1u)) * T + row];
        }
      } else {                        // j = i - d
        if (row + T - 1u >= e && row + T - 1u - e < T) {
          sum += scatter_dbias[base + row * T + (row + T - 1u - e)];
        }
      }
    }
    scatter_out[n] = sum;
  }
}
