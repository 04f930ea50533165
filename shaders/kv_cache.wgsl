// Appending rows to a KV cache for decoding with a recorded program: the destination row is
// read from a uniform the host rewrites between replays, so one recorded dispatch writes each
// new token's keys (or values) after the ones cached before it.
//
//   kv_append:  cache[(row + r) * width + c] = src[r * width + c]  for r < rows, c < width
//
// count = rows * width; elementwise with a grid-stride loop, no workgroup memory.
// Bindings, in the order the recorder passes buffers (py_engine/kernels/kv_cache.py):
//   src, cache, params
// Checked in tests/test_generate_gpu.py (against plain copies, and through the decoder).

override WORKGROUP: u32 = 256u;

struct Params {
  count: u32,    // rows * width values to copy
  width: u32,    // values per row
  row: u32,      // first destination row: rewritten per replay
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> cache: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn kv_append(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  let base = params.row * params.width;
  for (var i = gid.x; i < params.count; i += stride) {
    cache[base + i] = src[i];
  }
}
