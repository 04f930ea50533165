// BERT input embeddings: word + position + token type, gathered by id, and their backward.
// Reference: py_engine/ops/embedding.py (NumPy); recorder: py_engine/kernels/embedding.py;
// checks: tests/test_kernels_embedding.py.
//
//   embedding_forward:            out[p, :] = word[ids[p]] + token_type[type_ids[p]]
//                                             + position[first_position + p % T]
//                                 for p over the B*T tokens (row-major [B, T]); ids are u32.
//                                 Positions are first_position.. in every sequence (BERT's
//                                 default position_ids from 0; RoBERTa's start after its
//                                 padding token's row). An id past its table is clamped to the last
//                                 row rather than read out of bounds (torch would raise; the
//                                 tokenizer never produces one).
//   embedding_word_links:         links[p] = the next token after p with p's id (NONE: none),
//                                 links[tokens + p] = 1 when no token before p has its id.
//   embedding_backward_word:      dword[v, :] += sum of dout[p, :] over tokens p with id v,
//                                 following the links.
//   embedding_backward_position:  dposition[t, :] += sum over sequences b of dout[b*T + t, :].
//   embedding_backward_type:      dtoken_type[v, :] += sum of dout[p, :] over tokens of type v.
//   embedding_clear:              x[i] = 0, to start a gradient that is not accumulated.
//
// The backward kernels add into the tables' gradients without float atomics (WebGPU has
// none): each output element has exactly one writer. For the word table the writer of row v,
// column c is the thread of the first token p carrying id v; it follows the chain of tokens
// with that id, which embedding_word_links finds once per token rather than once per column:
// O(tokens^2) id comparisons plus O(tokens * hidden) additions, in token order, so the sum is
// the same every run. Rows no token uses are not touched: clear the gradient first
// (embedding_clear) unless accumulating.
//
// Flat grid-stride loops let a capped dispatch cover any size.

override WORKGROUP: u32 = 64u;

struct Embedding {
  tokens: u32,      // B * T
  seq: u32,         // T
  hidden: u32,
  vocab: u32,       // rows of the word table
  positions: u32,   // rows of the position table
  type_vocab: u32,  // rows of the token-type table
  padding: u32,     // the word row that gets no gradient (nn.Embedding's padding_idx); NONE: none
  first_position: u32,   // the position row of each sequence's first token
}

// --- embedding_forward ---------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> type_ids: array<u32>;
@group(0) @binding(2) var<storage, read> word: array<f32>;
@group(0) @binding(3) var<storage, read> position: array<f32>;
@group(0) @binding(4) var<storage, read> token_type: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> forward_shape: Embedding;

@compute @workgroup_size(WORKGROUP)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
  let H = forward_shape.hidden;
  for (var i = gid.x; i < forward_shape.tokens * H; i += groups.x * WORKGROUP) {
    let p = i / H;
    let c = i % H;
    let v = min(ids[p], forward_shape.vocab - 1u);
    let tt = min(type_ids[p], forward_shape.type_vocab - 1u);
    let t = min(forward_shape.first_position + p % forward_shape.seq, forward_shape.positions - 1u);
    // transformers' order: (word + token type) + position.
    out[i] = (word[v * H + c] + token_type[tt * H + c]) + position[t * H + c];
  }
}

// --- embedding_word_links ------------------------------------------------------------------

const NONE: u32 = 0xFFFFFFFFu;

@group(0) @binding(0) var<storage, read> link_ids: array<u32>;
@group(0) @binding(1) var<storage, read_write> links_out: array<u32>;   // [2 * tokens]
@group(0) @binding(2) var<uniform> link_shape: Embedding;

fn link_row(p: u32) -> u32 {
  return min(link_ids[p], link_shape.vocab - 1u);
}

@compute @workgroup_size(WORKGROUP)
fn embedding_word_links(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) groups: vec3<u32>) {
  let n = link_shape.tokens;
  for (var p = gid.x; p < n; p += groups.x * WORKGROUP) {
    let v = link_row(p);
    var first = 1u;
    for (var q = 0u; q < p; q++) {
      if (link_row(q) == v) {
        first = 0u;
        break;
      }
    }
    var next = NONE;
    for (var q = p + 1u; q < n; q++) {
      if (link_row(q) == v) {
        next = q;
        break;
      }
    }
    links_out[p] = next;
    links_out[n + p] = first;
  }
}

// --- embedding_backward_word ---------------------------------------------------------------

@group(0) @binding(0) var<storage, read> word_ids: array<u32>;
@group(0) @binding(1) var<storage, read> word_dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> dword: array<f32>;
@group(0) @binding(3) var<uniform> word_shape: Embedding;
@group(0) @binding(4) var<storage, read> word_links: array<u32>;    // embedding_word_links'

@compute @workgroup_size(WORKGROUP)
fn embedding_backward_word(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>) {
  let H = word_shape.hidden;
  let n = word_shape.tokens;
  for (var i = gid.x; i < n * H; i += groups.x * WORKGROUP) {
    let p = i / H;
    let c = i % H;
    let v = min(word_ids[p], word_shape.vocab - 1u);
    // p, the first token with id v, owns that row of the gradient
    if (v != word_shape.padding && word_links[n + p] == 1u) {
      var total = 0.0;
      for (var q = p; q != NONE; q = word_links[q]) {
        total += word_dout[q * H + c];
      }
      dword[v * H + c] += total;
    }
  }
}

// --- embedding_backward_position -----------------------------------------------------------

@group(0) @binding(0) var<storage, read> position_dout: array<f32>;
@group(0) @binding(1) var<storage, read_write> dposition: array<f32>;
@group(0) @binding(2) var<uniform> position_shape: Embedding;

@compute @workgroup_size(WORKGROUP)
fn embedding_backward_position(@builtin(global_invocation_id) gid: vec3<u32>,
                               @builtin(num_workgroups) groups: vec3<u32>) {
  let H = position_shape.hidden;
  let T = position_shape.seq;
  for (var i = gid.x; i < T * H; i += groups.x * WORKGROUP) {
    let t = i / H;
    let c = i % H;
    var total = 0.0;
    for (var p = t; p < position_shape.tokens; p += T) {
      total += position_dout[p * H + c];
    }
    let row = min(t, position_shape.positions - 1u);
    dposition[row * H + c] += total;
  }
}

// --- embedding_backward_type ---------------------------------------------------------------

@group(0) @binding(0) var<storage, read> type_rows: array<u32>;
@group(0) @binding(1) var<storage, read> type_dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> dtoken_type: array<f32>;
@group(0) @binding(3) var<uniform> type_shape: Embedding;

@compute @workgroup_size(WORKGROUP)
fn embedding_backward_type(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(num_workgroups) groups: vec3<u32>) {
  let H = type_shape.hidden;
  for (var i = gid.x; i < type_shape.type_vocab * H; i += groups.x * WORKGROUP) {
    let v = i / H;
    let c = i % H;
    var total = 0.0;
    for (var p = 0u; p < type_shape.tokens; p++) {
      if (min(type_rows[p], type_shape.type_vocab - 1u) == v) {
        total += type_dout[p * H + c];
      }
    }
    dtoken_type[i] += total;
  }
}

// --- embedding_clear -----------------------------------------------------------------------

@group(0) @binding(0) var<storage, read_write> cleared: array<f32>;
@group(0) @binding(1) var<uniform> clear_count: vec4<u32>;   // x: number of floats

@compute @workgroup_size(WORKGROUP)
fn embedding_clear(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < clear_count.x; i += groups.x * WORKGROUP) {
    cleared[i] = 0.0;
  }
}
