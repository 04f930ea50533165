// Rotary position embedding (RoPE) on q or k as the projections produce them: row-major
// [rows, heads * head_dim] f32, rows = batch * seq, in the "rotate_half" convention transformers
// uses for Llama: element j of a head pairs with element j + half (half = head_dim / 2).
//
//   rope_forward:   out[j]        = x[j] * cos - x[j + half] * sin
//                   out[j + half] = x[j + half] * cos + x[j] * sin
//   rope_backward:  the inverse rotation (the same with -sin): dx from dy.
//
// Partial rotary (Phi-2): half = rotary_dim / 2 <= head_dim / 2; only elements j < rotary_dim
// of a head rotate (j pairs with j + half) and elements rotary_dim .. head_dim - 1 are copied.
//
// cos and sin are tables [table_rows, half] of cos(p * inv_freq[j]), sin(p * inv_freq[j]) for
// positions p = 0 .. table_rows - 1, computed by the host in double precision and rounded once
// (the recorder's rope_tables). Row r of x is at position offset + r % seq: every sequence
// starts at `offset` (0 for training; the number of cached tokens when decoding with a KV
// cache). The recorder checks offset + seq <= table_rows.
//
// One thread per (row, head, j) item, j < head_dim - half: j < half reads both elements of its
// pair and writes both, so the two halves never race; j >= half copies element j + half (a
// passed-through one). A grid-stride loop covers any size. out must not alias x.
//
// Bindings, in the order the recorder passes buffers (py_engine/kernels/rope.py):
//   rope_forward, rope_backward: x (or dy), out (or dx), params, cos, sin
// Reference: py_engine/ops/rope.py; checked in tests/test_kernels_rope.py.

override WORKGROUP: u32 = 256u;

struct Params {
  items: u32,    // rows * heads * (head_dim - half)
  heads: u32,
  half: u32,     // rotary_dim / 2
  seq: u32,
  offset: u32,
  head_dim: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> cos_table: array<f32>;
@group(0) @binding(4) var<storage, read> sin_table: array<f32>;

fn rotate(i: u32, sign: f32) {
  let half = params.half;
  let per_head = params.head_dim - half;
  let j = i % per_head;
  let head = i / per_head;              // row * heads + h
  let row = head / params.heads;
  let a = head * params.head_dim + j;   // heads are contiguous within a row
  if (j >= half) {                      // past the rotated pairs: passed through
    out[a + half] = x[a + half];
    return;
  }
  let b = a + half;
  let t = (params.offset + row % params.seq) * half + j;
  let c = cos_table[t];
  let s = sign * sin_table[t];
  let x1 = x[a];
  let x2 = x[b];
  out[a] = fma(x1, c, -x2 * s);
  out[b] = fma(x2, c, x1 * s);
}

@compute @workgroup_size(WORKGROUP)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.items; i += stride) {
    rotate(i, 1.0);
  }
}

@compute @workgroup_size(WORKGROUP)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.items; i += stride) {
    rotate(i, -1.0);
  }
}
