// The dropout mask's random bits (definition: py_engine/ops/dropout.py): element `counter`
// survives under `seed` when its bits reach the host's threshold, min(round(p * 2^32), 2^32 - 1).
// Shared by dropout.wgsl and the attention kernels that drop probabilities they never store.

fn lowbias32(v: u32) -> u32 {
  var h = v;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

// lowbias32(seed ^ 0x9e3779b9): hoisted out of loops over many counters.
fn dropout_key(seed: u32) -> u32 {
  return lowbias32(seed ^ 0x9e3779b9u);
}

fn dropout_keeps(key: u32, counter: u32, threshold: u32) -> bool {
  return lowbias32(lowbias32(counter) ^ key) >= threshold;
}
