// SwiGLU gating of the Llama MLP (act_fn(gate_proj(x)) * up_proj(x), act_fn = silu), over flat
// f32 arrays of length n:
//
//   swiglu_forward:   out = silu(gate) * up,  silu(g) = g * s,  s = sigmoid(g)
//   swiglu_backward:  dgate = dout * up * (s + silu(g) * (1 - s)),  dup = dout * silu(g)
//
// The sigmoid is taken from e = exp(-|g|) (1 / (1 + e) or e / (1 + e)), which never overflows:
// any finite gate gives a finite result.
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
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // out or dgate
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dup: array<f32>;

fn sigmoid(g: f32) -> f32 {
  let e = exp(-abs(g));
  return select(e, 1.0, g >= 0.0) / (1.0 + e);
}

@compute @workgroup_size(WORKGROUP)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let g = gate[i];
    out[i] = g * sigmoid(g) * up[i];
  }
}

@compute @workgroup_size(WORKGROUP)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  let stride = groups.x * WORKGROUP;
  for (var i = gid.x; i < params.n; i += stride) {
    let g = gate[i];
    let s = sigmoid(g);
    let silu = g * s;
    let d = dout[i];
    out[i] = d * up[i] * fma(silu, 1.0 - s, s);
    dup[i] = d * silu;
  }
}
