// Dropout over a flat f32 array of length n, with a counter-based mask: nothing is stored
// between forward and backward, both recompute the same keep bit per element.
//
//   dropout_forward:  y  = keep(i) ? x  * scale : 0
//   dropout_backward: dx = keep(i) ? dy * scale : 0          (the same mask and scale)
//
//   keep(i) = bits(per_step.seed, per_step.offset + params.base + i) >= params.threshold
//   bits(seed, c) = lowbias32(lowbias32(c) ^ lowbias32(seed ^ 0x9e3779b9))
//
// in wrapping u32 arithmetic; lowbias32 is Chris Wellons' 32-bit integer hash. The host sets
// threshold = min(round(p * 2^32), 2^32 - 1) and scale = 1 / (1 - p) (f32), so a value survives
// with probability 1 - p; p = 0 gives threshold 0, scale 1: the identity.
// py_engine/ops/dropout.py reproduces the bits exactly.
//
// `per_step` is a small uniform buffer the caller writes before each replay of a recorded
// program (a new seed per step, optionally a running offset), so one recording draws a fresh
// mask every step. `params.base` is fixed per dropout layer: disjoint counter ranges per layer
// keep layers that share one step buffer independent.
//
// add_uniform_noise: out = inp + scale * (2 u - 1), u = (bits >> 8) * 2^-24 (the same bits at
// the same counters): NEFTune's noise on the input embeddings, uniform in [-scale, scale); the
// backward is the identity. (threshold unused.)
//
// Elementwise with a grid-stride loop; no workgroup memory.
// Bindings: x (or dy), out (y or dx), params, per_step.
// Reference: py_engine/ops/dropout.py; checked in tests/test_kernels_dropout.py.

override WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
  base: u32,
  threshold: u32,
  scale: f32,
}

struct Step {
  seed: u32,
  offset: u32,
}

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<uniform> per_step: Step;

//#include "lib/dropout_bits.wgsl"

fn apply_mask(gid: vec3<u32>, groups: vec3<u32>) {
  let key = dropout_key(per_step.seed);
  let start = per_step.offset + params.base;   // wraps mod 2^32, as the reference does
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let keep = dropout_keeps(key, start + i, params.threshold);
    out[i] = select(0.0, inp[i] * params.scale, keep);
  }
}

@compute @workgroup_size(WORKGROUP)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  apply_mask(gid, groups);
}

@compute @workgroup_size(WORKGROUP)
fn add_uniform_noise(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let key = dropout_key(per_step.seed);
  let start = per_step.offset + params.base;
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let bits = lowbias32(lowbias32(start + i) ^ key) >> 8u;
    // 2 u - 1 = (2 bits - 2^24) * 2^-24, exact in f32 (|2 bits - 2^24| <= 2^24)
    let unit = (f32(bits) * 2.0 - 16777216.0) * 5.9604644775390625e-8;
    out[i] = inp[i] + params.scale * unit;
  }
}

@compute @workgroup_size(WORKGROUP)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
  apply_mask(gid, groups);
}
