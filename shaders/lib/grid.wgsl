// Positions in a dispatch grid. WebGPU allows at most 65535 workgroups per dimension, so a
// launch with more spills into the y dimension (py_engine/gpu/device.py's row_groups); these
// flatten (x, y) back into one index.

// This workgroup's index, x fastest: the row of a kernel that runs one workgroup per row.
fn workgroup_index(group: vec3<u32>, groups: vec3<u32>) -> u32 {
  return group.x + group.y * groups.x;
}

// This thread's index, x fastest, in a grid of workgroups `workgroup_size` threads wide along x:
// the row of a kernel that runs one thread per row.
fn thread_index(gid: vec3<u32>, groups: vec3<u32>, workgroup_size: u32) -> u32 {
  return gid.x + gid.y * groups.x * workgroup_size;
}
