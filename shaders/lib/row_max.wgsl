// The largest logit of a row and where it first occurs, as torch.max / torch.argmax report it.
//
// The including file binds `logits: array<f32>` (read or read_write).

struct RowMax {
  value: f32,
  index: u32,
}

// Over logits[base .. base + count), count >= 1. The index is relative to `base`; among equal
// maxima the first wins (strict comparison), as in torch.argmax.
fn row_max(base: u32, count: u32) -> RowMax {
  var best = RowMax(logits[base], 0u);
  for (var c = 1u; c < count; c++) {
    let v = logits[base + c];
    if (v > best.value) {
      best = RowMax(v, c);
    }
  }
  return best;
}
