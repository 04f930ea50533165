// Tree sums (or maxima) over one workgroup through workgroup memory: every lane stores its value, then
// log2(WORKGROUP) halving steps add the upper half of the array onto the lower half, one barrier
// each. Pairwise summation keeps the f32 rounding error near log2(WORKGROUP) ulps instead of
// growing with the number of lanes.
//
// The including file declares
//   override WORKGROUP: u32 = ...;   // threads per workgroup, a power of two
//   alias Summed = f32;              // what is summed: f32, vec2<f32>, vec4<f32>
// and calls these from uniform control flow (every lane of the workgroup, none returned early).

var<workgroup> sums: array<Summed, WORKGROUP>;

// The workgroup's sum of `value` (its maximum with take_max), in every lane. Lanes may still be
// reading it from `sums` when this returns, so a kernel calls it at most once; a kernel that
// reduces again uses row_reduce.
fn workgroup_reduce(lane: u32, value: Summed, take_max: bool) -> Summed {
  sums[lane] = value;
  workgroupBarrier();
  for (var width = WORKGROUP / 2u; width > 0u; width /= 2u) {
    if (lane < width) {
      let other = sums[lane + width];
      sums[lane] = select(sums[lane] + other, max(sums[lane], other), take_max);
    }
    workgroupBarrier();
  }
  return sums[0];
}

fn workgroup_sum(lane: u32, value: Summed) -> Summed {
  return workgroup_reduce(lane, value, false);
}

// workgroup_reduce, then one more barrier: every lane has read the result before a later call
// overwrites sums[0], so a row kernel may reduce several times.
fn row_reduce(lane: u32, value: Summed, take_max: bool) -> Summed {
  let result = workgroup_reduce(lane, value, take_max);
  workgroupBarrier();
  return result;
}

fn row_sum(lane: u32, value: Summed) -> Summed {
  return row_reduce(lane, value, false);
}
