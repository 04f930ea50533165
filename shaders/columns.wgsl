// Copying a block of rows and columns between row-major f32 matrices: splitting a fused
// projection's output into its parts (GPT-2's c_attn into q, k, v), putting the parts'
// gradients back side by side, and taking the learned position embeddings of the rows a
// decoding step is at (the source row rewritten per replay); and transposing a matrix (a
// LoRA on an embedding gathers rows of lora_embedding_A^T, whose gradient goes back transposed).
//
//   copy_block:  dst[(dst_row + r) * dst_cols + dst_col + c] = src[(src_row + r) * src_cols + src_col + c]
//                for r < rows, c < width
//   transpose:   dst[c * rows + r] = src[r * cols + c] + beta * dst[c * rows + r]
//                for r < rows, c < cols (beta 0: dst is not read; 1: added into)
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

// --- transpose -----------------------------------------------------------------------------

struct TransposeParams {
  rows: u32,       // of src
  cols: u32,       // of src
  beta: f32,       // 0: overwrite dst, 1: add into it
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> t_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> t_dst: array<f32>;
@group(0) @binding(2) var<uniform> t_params: TransposeParams;

@compute @workgroup_size(WORKGROUP)
fn transpose(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  let count = t_params.rows * t_params.cols;
  // i walks dst in order: each thread writes one element, so no two threads share one
  for (var i = gid.x; i < count; i += stride) {
    let c = i / t_params.rows;
    let r = i % t_params.rows;
    var value = t_src[r * t_params.cols + c];
    if (t_params.beta != 0.0) {
      value += t_params.beta * t_dst[i];
    }
    t_dst[i] = value;
  }
}
