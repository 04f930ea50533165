// AdamW over one flat f32 parameter buffer, as torch.optim.AdamW computes it (amsgrad off):
//
//   g      = grad * scale[params.scale_index]            (the clip factor; 1 when not clipping)
//   param *= 1 - lr * weight_decay                       (decoupled weight decay, first)
//   m      = lerp(m, g, 1 - beta1)                       (torch's lerp_, from the nearer end)
//   v      = v * beta2 + (1 - beta2) * g * g
//   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// Everything that changes per step (lr from a schedule, t) sits in `hyper`, a uniform buffer the
// caller writes before each replay, so one recorded program serves every step. The host packs
// it (py_engine/kernels/adamw.py: pack_hyper) with the bias corrections and 1 - beta already
// computed in float64, as torch computes them from Python floats; the kernel only multiplies.
// `scale` is any storage buffer: normally the metrics buffer, where grad_norm.wgsl leaves the
// clip factor, so clipping needs no host round trip.
//
// Elementwise with a grid-stride loop; params.offset lets one dispatch update a slice of the
// buffer (e.g. a parameter group with its own hyper buffer, such as no weight decay).
// Bindings: param, grad, m, v, scale, params, hyper.
// Reference: py_engine/ops/adamw.py; checked in tests/test_kernels_adamw.py.

override WORKGROUP: u32 = 256u;

struct Params {
  n: u32,            // elements to update
  offset: u32,       // first element
  scale_index: u32,  // where in `scale` the gradient factor is
}

struct Hyper {
  step_size: f32,              // lr / (1 - beta1^t)
  bias_correction2_sqrt: f32,  // sqrt(1 - beta2^t)
  decay: f32,                  // 1 - lr * weight_decay
  eps: f32,
  beta1: f32,                  // 1 - (1 - beta1), as torch's lerp rounds it
  one_minus_beta1: f32,        // the lerp weight
  beta2: f32,
  one_minus_beta2: f32,
  step: u32,                   // t, counted from 1; informational
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> scale: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
@group(0) @binding(6) var<uniform> hyper: Hyper;

@compute @workgroup_size(WORKGROUP)
fn adamw_step(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
  let grad_scale = scale[params.scale_index];
  let stride = groups.x * WORKGROUP;
  for (var k = gid.x; k < params.n; k += stride) {
    let i = params.offset + k;
    let g = grad[i] * grad_scale;
    let m_old = m[i];
    // torch.lerp: start + w * (end - start) for w < 0.5, else end - (end - start) * (1 - w)
    let m_new = select(g - (g - m_old) * hyper.beta1,
                       fma(hyper.one_minus_beta1, g - m_old, m_old),
                       hyper.one_minus_beta1 < 0.5);
    let v_new = fma(hyper.one_minus_beta2, g * g, v[i] * hyper.beta2);
    let denom = sqrt(v_new) / hyper.bias_correction2_sqrt + hyper.eps;
    param[i] = param[i] * hyper.decay - hyper.step_size * (m_new / denom);
    m[i] = m_new;
    v[i] = v_new;
  }
}
