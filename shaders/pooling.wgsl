// Sequence pooling for classification heads, and the head's activations (the pooler's tanh,
// DistilBERT's pre_classifier's ReLU), forward and backward.
// Reference: py_engine/ops/pooling.py (NumPy); recorder: py_engine/kernels/pooling.py;
// checks: tests/test_kernels_pooling.py.
//
// x is the encoder output [B*T, H] (row-major [B, T, H]); attention_mask is [B, T] u32 0/1.
//
//   cls_pool:            out[b, :] = x[b*T, :], the [CLS] row BERT's pooler reads.
//   cls_pool_backward:   dx[b*T, :] = dout[b, :], every other row 0 (with `accumulate`, adds
//                        into dx's [CLS] rows and leaves the others).
//   mean_pool:           out[b, :] = sum_t mask[b, t] * x[b*T + t, :] / max(count_b, 1e-9), with
//                        count_b = sum_t mask[b, t]: sentence-transformers' mean pooling.
//   mean_pool_backward:  dx[b*T + t, :] = mask[b, t] * dout[b, :] / max(count_b, 1e-9)
//                        (with `accumulate`, added to dx).
//   tanh_forward:        y = tanh(x), the pooler dense's activation.
//   tanh_backward:       dx = dy * (1 - y^2), from the saved output y.
//   relu_forward:        y = max(x, 0).
//   relu_backward:       dx = dy where the saved output y > 0, else 0 (torch's: none at 0).
//
// tanh is computed here rather than with the builtin: lavapipe's builtin tanh loses all
// relative precision near 0 (it comes from (e^x - e^-x) / (e^x + e^-x); tanh(1e-8) came back
// with a relative error of 2). Below |x| = 0.55 an 8-term odd Taylor series, above it
// 1 - 2 / (e^(2|x|) + 1); both within ~3 f32 ulps, and saturating to +-1 without NaN.
//
// Flat grid-stride loops let a capped dispatch cover any size.

override WORKGROUP: u32 = 64u;

struct Pool {
  batch: u32,
  seq: u32,
  hidden: u32,
  accumulate: u32,   // backward only: 1 adds into dx
}

// --- cls_pool ------------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> cls_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> cls_out: array<f32>;
@group(0) @binding(2) var<uniform> cls_shape: Pool;

@compute @workgroup_size(WORKGROUP)
fn cls_pool(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
  let H = cls_shape.hidden;
  for (var i = gid.x; i < cls_shape.batch * H; i += groups.x * WORKGROUP) {
    let b = i / H;
    cls_out[i] = cls_x[b * cls_shape.seq * H + i % H];
  }
}

// --- cls_pool_backward ---------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> cls_dout: array<f32>;
@group(0) @binding(1) var<storage, read_write> cls_dx: array<f32>;
@group(0) @binding(2) var<uniform> cls_grad_shape: Pool;

@compute @workgroup_size(WORKGROUP)
fn cls_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let H = cls_grad_shape.hidden;
  let T = cls_grad_shape.seq;
  for (var i = gid.x; i < cls_grad_shape.batch * T * H; i += groups.x * WORKGROUP) {
    let row = i / H;
    let is_cls = row % T == 0u;
    if (cls_grad_shape.accumulate == 0u) {
      cls_dx[i] = select(0.0, cls_dout[(row / T) * H + i % H], is_cls);
    } else if (is_cls) {
      cls_dx[i] += cls_dout[(row / T) * H + i % H];
    }
  }
}

// --- mean_pool -----------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> mean_x: array<f32>;
@group(0) @binding(1) var<storage, read> mean_mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(3) var<uniform> mean_shape: Pool;

@compute @workgroup_size(WORKGROUP)
fn mean_pool(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
  let H = mean_shape.hidden;
  let T = mean_shape.seq;
  for (var i = gid.x; i < mean_shape.batch * H; i += groups.x * WORKGROUP) {
    let b = i / H;
    let c = i % H;
    var total = 0.0;
    var count = 0.0;
    for (var t = 0u; t < T; t++) {
      if (mean_mask[b * T + t] != 0u) {
        total += mean_x[(b * T + t) * H + c];
        count += 1.0;
      }
    }
    mean_out[i] = total / max(count, 1e-9);
  }
}

// --- mean_pool_backward --------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> mean_dout: array<f32>;
@group(0) @binding(1) var<storage, read> mean_grad_mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> mean_dx: array<f32>;
@group(0) @binding(3) var<uniform> mean_grad_shape: Pool;

fn tokens_in(b: u32) -> f32 {
  let T = mean_grad_shape.seq;
  var count = 0.0;
  for (var t = 0u; t < T; t++) {
    count += select(0.0, 1.0, mean_grad_mask[b * T + t] != 0u);
  }
  return max(count, 1e-9);
}

@compute @workgroup_size(WORKGROUP)
fn mean_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) groups: vec3<u32>) {
  let H = mean_grad_shape.hidden;
  let T = mean_grad_shape.seq;
  for (var i = gid.x; i < mean_grad_shape.batch * T * H; i += groups.x * WORKGROUP) {
    let row = i / H;
    let b = row / T;
    var g = 0.0;
    if (mean_grad_mask[row] != 0u) {
      g = mean_dout[b * H + i % H] / tokens_in(b);
    }
    if (mean_grad_shape.accumulate != 0u) {
      g += mean_dx[i];
    }
    mean_dx[i] = g;
  }
}

// --- tanh ----------------------------------------------------------------------------------

fn tanh_accurate(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.55) {
    let s = x * x;
    var p = -929569.0 / 638512875.0;
    p = fma(p, s, 21844.0 / 6081075.0);
    p = fma(p, s, -1382.0 / 155925.0);
    p = fma(p, s, 62.0 / 2835.0);
    p = fma(p, s, -17.0 / 315.0);
    p = fma(p, s, 2.0 / 15.0);
    p = fma(p, s, -1.0 / 3.0);
    p = fma(p, s, 1.0);
    return x * p;
  }
  // exp overflows to inf past |x| ~ 44, and 2 / inf = 0 gives exactly +-1.
  return sign(x) * (1.0 - 2.0 / (exp(2.0 * a) + 1.0));
}

struct Count {
  n: u32,
}

@group(0) @binding(0) var<storage, read> tanh_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> tanh_out: array<f32>;
@group(0) @binding(2) var<uniform> tanh_count: Count;

@compute @workgroup_size(WORKGROUP)
fn tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < tanh_count.n; i += groups.x * WORKGROUP) {
    tanh_out[i] = tanh_accurate(tanh_in[i]);
  }
}

@group(0) @binding(0) var<storage, read> tanh_y: array<f32>;
@group(0) @binding(1) var<storage, read> tanh_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> tanh_dx: array<f32>;
@group(0) @binding(3) var<uniform> tanh_grad_count: Count;

@compute @workgroup_size(WORKGROUP)
fn tanh_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < tanh_grad_count.n; i += groups.x * WORKGROUP) {
    let y = tanh_y[i];
    tanh_dx[i] = tanh_dy[i] * (1.0 - y * y);
  }
}

// --- relu ----------------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> relu_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> relu_out: array<f32>;
@group(0) @binding(2) var<uniform> relu_count: Count;

@compute @workgroup_size(WORKGROUP)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < relu_count.n; i += groups.x * WORKGROUP) {
    relu_out[i] = max(relu_in[i], 0.0);
  }
}

@group(0) @binding(0) var<storage, read> relu_y: array<f32>;
@group(0) @binding(1) var<storage, read> relu_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> relu_dx: array<f32>;
@group(0) @binding(3) var<uniform> relu_grad_count: Count;

@compute @workgroup_size(WORKGROUP)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < relu_grad_count.n; i += groups.x * WORKGROUP) {
    relu_dx[i] = select(0.0, relu_dy[i], relu_y[i] > 0.0);
  }
}
