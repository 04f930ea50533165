// Copying a block of rows and columns between row-major f32 matrices: splitting a fused
// projection's output into its parts (GPT-2's c_attn into q, k, v), putting the parts'
// gradients back side by side, and taking the learned position embeddings of the rows a
// decoding step is at (the source row rewritten per replay).
//
//   copy_block:  dst[(dst_row + r) * dst_cols + dst_col + c] = src[(src_row + r) * src_cols + src_col + c]
//                for r < rows, c < width
//
// count = rows * width; elementwise with a grid-stride loop, no workgroup memory.
// Bindings, in the order the recorder passes buffers (py_engine/kernels/columns.py):
//   src, dst, params
// Reference: py_engine/ops/columns.py; checked in tests/test_kernels_columns.py.

override WORKGROUP: u32 = 256u;

struct Params {
  count: u32,      // rows * width values to copy
  width: u32,      // values per row of the block
  src_cols: u32,   // row length of src
  src_col: u32,    // the block's first column in src
  src_row: u32,    // the block's first row in src: may be rewritten per replay
  dst_cols: u32,
  dst_col: u32,
  dst_row: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn copy_block(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.count; i += stride) {
    let r = i / params.width;
    let c = i % params.width;
    dst[(params.dst_row + r) * params.dst_cols + params.dst_col + c] =
        src[(params.src_row + r) * params.src_cols + params.src_col + c];
  }
}
