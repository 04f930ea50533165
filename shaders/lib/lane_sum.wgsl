// One output per group of LANES neighbouring threads, and the sum of the group's partial
// values: the one-row products (matmul.wgsl's gemv entries, quantized_linear.wgsl's
// quantized_gemv), where LANES threads share an output's dot product.
//
// The including file declares
//   override WORKGROUP: u32 = ...;   // threads per workgroup, a power of two
//   override LANES: u32 = ...;       // threads per output, a power of two dividing WORKGROUP
// and calls lane_sum from uniform control flow (every lane of the workgroup, none returned early).

//#include "grid.wgsl"

var<workgroup> lane_partials: array<f32, WORKGROUP>;

// The output this thread works on: WORKGROUP / LANES outputs per workgroup, the workgroups
// numbered x fastest (a launch past the per-dimension limit spills into y).
fn lane_output(local: u32, group: vec3<u32>, groups: vec3<u32>) -> u32 {
  return workgroup_index(group, groups) * (WORKGROUP / LANES) + local / LANES;
}

// The sum of `value` over this thread's group of LANES, added in a tree through workgroup
// memory; meaningful in the group's first thread (local % LANES == 0), which stores it.
fn lane_sum(local: u32, value: f32) -> f32 {
  lane_partials[local] = value;
  workgroupBarrier();
  let lane = local % LANES;
  for (var width = LANES / 2u; width > 0u; width /= 2u) {
    if (lane < width) {
      lane_partials[local] += lane_partials[local + width];
    }
    workgroupBarrier();
  }
  return lane_partials[local];
}
