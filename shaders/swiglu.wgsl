// Gated MLP activations act(gate_proj(x)) * up_proj(x) over flat f32 arrays of length n: SwiGLU
// (Llama, act = silu, params.activation 0), GeGLU (Gemma, act = tanh-approximate GELU,
// params.activation 1) or GeGLU with the exact GELU (ModernBERT, params.activation 2):
//
//   swiglu_forward:   out = act(gate) * up
//   swiglu_backward:  dgate = dout * up * act'(gate),  dup = dout * act(gate)
//
// silu(g) = g * s, s = sigmoid(g), silu'(g) = s + silu(g) * (1 - s). The sigmoid is taken from
// e = exp(-|g|) (1 / (1 + e) or e / (1 + e)), which never overflows: any finite gate gives a
// finite result. The GELUs are shaders/gelu.wgsl's (lib/gelu_tanh.wgsl, lib/gelu_erf.wgsl).
//
// Elementwise with a grid-stride loop, so any launch covers any n; no workgroup memory.
//
// Bindings, in the order the recorder passes buffers (py_engine/kernels/swiglu.py):
//   swiglu_forward:  gate, up, out,   params
//   swiglu_backward: gate, up, dgate, params, dout, dup
// Reference: py_engine/ops/swiglu.py; checked in tests/test_kernels_swiglu.py.

override WORKGROUP: u32 = 256u;

struct Params {
  n: u32,
  activation: u32,   // 0: silu, 1: tanh-approximate GELU, 2: exact GELU
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // out or dgate
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dup: array<f32>;

//#include "lib/gelu_tanh.wgsl"
//#include "lib/gelu_erf.wgsl"

fn sigmoid(g: f32) -> f32 {
  let e = exp(-abs(g));
  return select(e, 1.0, g >= 0.0) / (1.0 + e);
}

// (act(g), act'(g)) of params.activation.
fn activation(g: f32) -> vec2<f32> {
  if (params.activation == 1u) {
    return gelu_tanh_with_slope(g);
  }
  if (params.activation == 2u) {
    return gelu_erf_with_slope(g);
  }
  let s = sigmoid(g);
  let silu = g * s;
  return vec2<f32>(silu, fma(silu, 1.0 - s, s));
}

@compute @workgroup_size(WORKGROUP)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    out[i] = activation(gate[i]).x * up[i];
  }
}

@compute @workgroup_size(WORKGROUP)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let act = activation(gate[i]);
    let d = dout[i];
    out[i] = d * up[i] * act.y;
    dup[i] = d * act.x;
  }
}
