// The next token's choice from each row of a row-major [rows, cols] f32 matrix of logits.
// Greedy generation's is the row's largest value and where it first occurs, with a flag for
// values that make it meaningless, chosen on the GPU so the host reads 8 bytes per token
// instead of the whole vocabulary (600 KB at 152k tokens) and skips a scan of it in Python;
// sampling's is drawn on the host among the row's likeliest tokens, picked here
// (bench/generation.py measures both).
//
//   argmax_rows: one workgroup per row. Each lane scans a strided slice of the row for its
//                first maximum and ORs the slice's flags; the workgroup then reduces the
//                (value, index) pairs in a tree, the lower index winning ties (torch.argmax's
//                first maximum), and the flags with OR. Writes out[2 * row] = index and
//                out[2 * row + 1] = flags: NAN_FLAG if the row holds a NaN, POS_INF_FLAG if
//                it holds +inf. -inf (a masked token) is an ordinary value; a row of -inf
//                gives index 0, as a host scan would.
//
//   sampling_candidates: one workgroup per row: a sampled token's candidates, so the host draws
//                among the row's likeliest tokens instead of reading the whole row back.
//                With d = (max - x) * inv_temperature (how far a value lies below the row's
//                largest after temperature; exp(-d) is its share before normalizing):
//                  1. the row's largest value, and the flags as argmax_rows (NaN wins);
//                  2. total = sum of exp(-d), and a histogram of d in bins of 1 / BIN_SCALE
//                     (the last bin holds everything farther);
//                  3. lane 0 lowers the cut from the last bin while the tokens past it could
//                     hold at most tail * total (a bin's tokens hold at most exp(-its lower
//                     edge) each) and the bins up to it hold at least top_k tokens;
//                  4. every token in the bins up to the cut is a candidate: (index, value bits)
//                     written at a slot taken with an atomic counter, in no particular order,
//                     up to `capacity` (the count may pass it: then the host reads the row).
//                Bins grow with d, so the candidates are every token above some value: all
//                that top-k keeps (with its ties), or all but at most `tail` of the mass.
//                Out per row: HEADER_WORDS (count, flags, cut bin, largest bits, total bits),
//                then capacity (index, bits) pairs. -inf (a masked token) is never a
//                candidate and adds nothing.
//
// The values are bound as u32 and read with bitcast: the flags come from the bits, since WGSL
// lets a compiler assume that floats are never NaN or infinite (an `x != x` test may be
// folded away).
// Reference: py_engine/ops/argmax.py; checked in tests/test_kernels_argmax.py.

override WORKGROUP: u32 = 256u;   // must be a power of two
alias Summed = f32;

const POS_INF_FLAG: u32 = 1u;
const NAN_FLAG: u32 = 2u;
const POS_INF_BITS: u32 = 0x7f800000u;
const NO_INDEX: u32 = 0xffffffffu;   // a lane that has seen no value yet

//#include "lib/grid.wgsl"
//#include "lib/workgroup_sum.wgsl"

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

const BINS: u32 = 256u;
const BIN_SCALE: f32 = 8.0;        // bins per unit of d: the last bin starts at d = 31.875
const HEADER_WORDS: u32 = 5u;
const NEG_INF_BITS: u32 = 0xff800000u;
const LOWEST_BITS: u32 = 0xff7fffffu;   // the lowest finite f32

struct SamplingParams {
  rows: u32,
  cols: u32,
  capacity: u32,
  top_k: u32,              // 0: no count asked for
  inv_temperature: f32,
  tail: f32,               // the share of the total the tokens past the cut may hold
}

// Not used by argmax_rows: an entry point binds only what it uses.
@group(0) @binding(2) var<uniform> sampling: SamplingParams;

var<workgroup> histogram: array<atomic<u32>, BINS>;
var<workgroup> problems: atomic<u32>;
var<workgroup> taken: atomic<u32>;
var<workgroup> cut_bin: u32;

// The bin of a token `distance` = (max - x) * inv_temperature below the largest. It never
// decreases as x decreases, so the bins up to a cut hold the highest values.
fn bin_of(distance: f32) -> u32 {
  return u32(min(distance * BIN_SCALE, f32(BINS - 1u)));
}

@compute @workgroup_size(WORKGROUP)
fn sampling_candidates(@builtin(local_invocation_index) lane: u32,
                       @builtin(workgroup_id) group: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
  let row = workgroup_index(group, groups);
  let cols = select(0u, sampling.cols, row < sampling.rows);   // a spare workgroup reads nothing
  let base = row * sampling.cols;
  let inv_temperature = sampling.inv_temperature;
  // Workgroup memory is not zeroed everywhere (wgpu-native may skip it): clear it first.
  for (var b = lane; b < BINS; b += WORKGROUP) {
    atomicStore(&histogram[b], 0u);
  }
  if (lane == 0u) {
    atomicStore(&problems, 0u);
    atomicStore(&taken, 0u);
  }
  workgroupBarrier();

  var largest = bitcast<f32>(LOWEST_BITS);    // a row of -inf keeps it, and has no candidate
  var seen = 0u;
  for (var j = lane; j < cols; j += WORKGROUP) {
    let bits = values[base + j];
    seen = max(seen, value_flags(bits));
    if (bits != NEG_INF_BITS) {
      largest = max(largest, bitcast<f32>(bits));
    }
  }
  atomicMax(&problems, seen);
  let row_largest = row_reduce(lane, largest, true);

  var sum = 0.0;
  for (var j = lane; j < cols; j += WORKGROUP) {
    let bits = values[base + j];
    if (bits != NEG_INF_BITS) {
      let distance = (row_largest - bitcast<f32>(bits)) * inv_temperature;
      sum += exp(-distance);
      atomicAdd(&histogram[bin_of(distance)], 1u);
    }
  }
  let total = row_reduce(lane, sum, false);   // its barriers also publish the histogram

  if (lane == 0u) {
    let allowed = sampling.tail * total;
    var within = 0u;                 // tokens in the bins up to the cut
    for (var b = 0u; b < BINS; b++) {
      within += atomicLoad(&histogram[b]);
    }
    var cut = BINS - 1u;
    var beyond = 0.0;                // the most the tokens past the cut can hold
    while (cut > 0u) {
      let n = atomicLoad(&histogram[cut]);
      let more = beyond + f32(n) * exp(-f32(cut) / BIN_SCALE);
      if (more > allowed || within - n < sampling.top_k) {
        break;
      }
      beyond = more;
      within -= n;
      cut -= 1u;
    }
    cut_bin = cut;
  }
  workgroupBarrier();
  let cut = cut_bin;

  let out_base = row * (HEADER_WORDS + 2u * sampling.capacity);
  for (var j = lane; j < cols; j += WORKGROUP) {
    let bits = values[base + j];
    if (bits != NEG_INF_BITS && bin_of((row_largest - bitcast<f32>(bits)) * inv_temperature) <= cut) {
      let slot = atomicAdd(&taken, 1u);
      if (slot < sampling.capacity) {
        let at = out_base + HEADER_WORDS + 2u * slot;
        out[at] = j;
        out[at + 1u] = bits;
      }
    }
  }
  workgroupBarrier();
  if (lane == 0u && row < sampling.rows) {
    out[out_base] = atomicLoad(&taken);
    out[out_base + 1u] = atomicLoad(&problems);
    out[out_base + 2u] = cut;
    out[out_base + 3u] = bitcast<u32>(row_largest);
    out[out_base + 4u] = bitcast<u32>(total);
  }
}
