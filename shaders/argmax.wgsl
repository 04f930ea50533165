// The largest value of each row of a row-major [rows, cols] f32 matrix and where it first
// occurs, with a flag for values that make it meaningless: greedy generation's next token,
// chosen on the GPU so the host reads 8 bytes per token instead of the whole vocabulary
// (600 KB at 152k tokens) and skips a scan of it in Python (bench/generation.py measures it).
//
//   argmax_rows: one workgroup per row. Each lane scans a strided slice of the row for its
//                first maximum and ORs the slice's flags; the workgroup then reduces the
//                (value, index) pairs in a tree, the lower index winning ties (torch.argmax's
//                first maximum), and the flags with OR. Writes out[2 * row] = index and
//                out[2 * row + 1] = flags: NAN_FLAG if the row holds a NaN, POS_INF_FLAG if
//                it holds +inf. -inf (a masked token) is an ordinary value; a row of -inf
//                gives index 0, as a host scan would.
//
// The values are bound as u32 and read with bitcast: the flags come from the bits, since WGSL
// lets a compiler assume that floats are never NaN or infinite (an `x != x` test may be
// folded away).
// Reference: py_engine/ops/argmax.py; checked in tests/test_kernels_argmax.py.

override WORKGROUP: u32 = 256u;   // must be a power of two

const POS_INF_FLAG: u32 = 1u;
const NAN_FLAG: u32 = 2u;
const POS_INF_BITS: u32 = 0x7f800000u;
const NO_INDEX: u32 = 0xffffffffu;   // a lane that has seen no value yet

//#include "lib/grid.wgsl"

struct Params {
  rows: u32,
  cols: u32,
}

@group(0) @binding(0) var<storage, read> values: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> best_values: array<f32, WORKGROUP>;
var<workgroup> best_indices: array<u32, WORKGROUP>;
var<workgroup> flags: array<u32, WORKGROUP>;

fn value_flags(bits: u32) -> u32 {
  let magnitude = bits & 0x7fffffffu;
  return select(0u, NAN_FLAG, magnitude > POS_INF_BITS) | select(0u, POS_INF_FLAG, bits == POS_INF_BITS);
}

// Whether (value, index) comes before the best so far: larger, or equal and earlier. A lane
// with no value yet (NO_INDEX) takes anything.
fn better(value: f32, index: u32, best_value: f32, best_index: u32) -> bool {
  return best_index == NO_INDEX || value > best_value || (value == best_value && index < best_index);
}

@compute @workgroup_size(WORKGROUP)
fn argmax_rows(@builtin(local_invocation_index) lane: u32,
               @builtin(workgroup_id) group: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
  // Rows beyond 65535 spill into the y dimension of the dispatch.
  let row = workgroup_index(group, groups);
  var best_value = 0.0;           // unread while best_index is NO_INDEX (Tint refuses a
  var best_index = NO_INDEX;      // constant -inf)
  var seen = 0u;
  if (row < params.rows) {
    let base = row * params.cols;
    for (var j = lane; j < params.cols; j += WORKGROUP) {
      let bits = values[base + j];
      seen |= value_flags(bits);
      let value = bitcast<f32>(bits);
      if (best_index == NO_INDEX || value > best_value) {   // this lane's indices only grow
        best_value = value;
        best_index = j;
      }
    }
  }
  best_values[lane] = best_value;
  best_indices[lane] = best_index;
  flags[lane] = seen;
  workgroupBarrier();
  for (var width = WORKGROUP / 2u; width > 0u; width /= 2u) {
    if (lane < width) {
      let other = lane + width;
      if (best_indices[other] != NO_INDEX &&
          better(best_values[other], best_indices[other], best_values[lane], best_indices[lane])) {
        best_values[lane] = best_values[other];
        best_indices[lane] = best_indices[other];
      }
      flags[lane] |= flags[other];
    }
    workgroupBarrier();
  }
  if (lane == 0u && row < params.rows) {
    out[2u * row] = best_indices[0];
    out[2u * row + 1u] = flags[0];
  }
}
