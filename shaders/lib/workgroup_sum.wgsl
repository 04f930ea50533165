// Tree sums over one workgroup through workgroup memory: every lane stores its value, then
// log2(WORKGROUP) halving steps add the upper half of the array onto the lower half, one barrier
// each. Pairwise summation keeps the f32 rounding error near log2(WORKGROUP) ulps instead of
// growing with the number of lanes.
//
// The including file declares
//   override WORKGROUP: u32 = ...;   // threads per workgroup, a power of two
//   alias Summed = f32;              // what is summed: f32, vec2<f32>, vec4<f32>
// and calls these from uniform control flow (every lane of the workgroup, none returned early).

var<workgroup> sums: array<Summed, WORKGROUP>;

// The workgroup's sum of `value`, in every lane. Lanes may still be reading it from `sums` when
// this returns, so a kernel calls it at most once; a kernel that reduces again uses row_sum.
fn workgroup_sum(lane: u32, value: Summed) -> Summed {
  sums[lane] = value;
  workgroupBarrier();
  for (var width = WORKGROUP / 2u; width > 0u; width /= 2u) {
    if (lane < width) {
      sums[lane] += sums[lane + width];
    }
    workgroupBarrier();
  }
  return sums[0];
}

// workgroup_sum, then one more barrier: every lane has read the total before a later call
// overwrites sums[0], so a row kernel may reduce several times.
fn row_sum(lane: u32, value: Summed) -> Summed {
  let total = workgroup_sum(lane, value);
  workgroupBarrier();
  return total;
}
