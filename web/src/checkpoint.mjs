// What of a picked or dropped folder is a Hugging Face checkpoint the engine reads (the config,
// safetensors weights, or an older checkpoint's pytorch_model.bin where it has no safetensors,
// and tokenizer files at the folder's top level), and whether its weights fit the GPU, told
// from the safetensors headers before anything is loaded. Other weights (ONNX, GGUF, .bin files
// beside safetensors) and sub-folders are left unread: they can be gigabytes.

const WANTED = new Set([
  "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
  "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
  "chat_template.json", "model.safetensors.index.json", "spm.model",
]);
// PyTorch weights as transformers names them: one file, or shards and their index
const TORCH_WEIGHTS = /^pytorch_model(-\d+-of-\d+\.bin|\.bin|\.bin\.index\.json)$/;
// Pyodide keeps the files in wasm memory (at most 4 GiB, shared with everything else).
const MAX_TOTAL_BYTES = 2 * 1024 ** 3;
const F32_BYTES = 4;

// The items ({path, file}) to read; an Error whose message says what is missing.
export function checkpointFiles(items) {
  const top = items.filter((i) => !i.path.includes("/"));
  const safetensors = top.some((i) => i.path.endsWith(".safetensors"));
  const chosen = top.filter((i) => WANTED.has(i.path) || i.path.endsWith(".safetensors")
    || (!safetensors && TORCH_WEIGHTS.test(i.path)));
  const names = new Set(chosen.map((i) => i.path));
  const given = top.map((i) => i.path).slice(0, 6).join(", ") || "nothing at the top level";
  if (!names.has("config.json")) {
    throw new Error(`Not a model folder: no config.json (found ${given}). Give a Hugging Face checkpoint folder: config.json, model.safetensors, tokenizer files.`);
  }
  if (![...names].some((n) => n.endsWith(".safetensors") || /\.bin$/.test(n))) {
    const other = top.some((i) => /\.(bin|pt|pth|ckpt|gguf|onnx|h5)$/.test(i.path));
    throw new Error(other
      ? "This folder has no weights the engine reads: model.safetensors (or pytorch_model.bin), not ONNX, GGUF or other PyTorch files."
      : "This folder has no model.safetensors: the weights are missing.");
  }
  // spm.model: DeBERTa-v3's SentencePiece model, which it ships instead of tokenizer.json
  if (!names.has("tokenizer.json") && !names.has("vocab.txt") && !names.has("spm.model")) {
    throw new Error("This folder has no tokenizer (tokenizer.json, vocab.txt or DeBERTa's spm.model).");
  }
  return chosen;
}

// {name, bytes} of the largest tensor a .safetensors file declares, as f32 (the engine's), read
// from the file's header alone.
async function largestTensor(file) {
  const head = new DataView(await file.slice(0, 8).arrayBuffer());
  const length = head.byteLength === 8 ? Number(head.getBigUint64(0, true)) : -1;
  if (length < 2 || length > 100 << 20 || 8 + length > file.size) {
    throw new Error(`${file.name} is not a safetensors file (its header is cut short or too long).`);
  }
  let header;
  try {
    header = JSON.parse(new TextDecoder().decode(await file.slice(8, 8 + length).arrayBuffer()));
  } catch {
    throw new Error(`${file.name} is not a safetensors file (its header is not JSON).`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) {
    throw new Error(`${file.name} is not a safetensors file (its header is not a JSON object).`);
  }
  let best = { name: null, bytes: 0 };
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__" || !t || !Array.isArray(t.shape)) continue;
    const bytes = t.shape.reduce((n, d) => n * d, 1) * F32_BYTES;
    if (bytes > best.bytes) best = { name, bytes };
  }
  return best;
}

// An Error saying why these weights cannot go on this GPU or into this tab, or null. `limits`:
// the adapter's maxStorageBufferBindingSize and maxBufferSize (the engine keeps each weight in
// one buffer, in f32).
export async function weightsProblem(items, limits, formatBytes) {
  const total = items.filter((i) => i.path.endsWith(".safetensors") || /\.bin$/.test(i.path))
    .reduce((n, i) => n + i.file.size, 0);
  // a .bin file has no header to size its tensors up from: its total counts
  const weights = items.filter((i) => i.path.endsWith(".safetensors"));
  if (total > MAX_TOTAL_BYTES) {
    return new Error(`This model does not fit: its weights are ${formatBytes(total)}, more than the ${formatBytes(MAX_TOTAL_BYTES)} a browser tab can hold for them. Pick a smaller model.`);
  }
  if (!limits) return null;
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  for (const item of weights) {
    const { name, bytes } = await largestTensor(item.file);
    if (bytes > limit) {
      return new Error(`This model does not fit on this GPU: its tensor ${name} needs ${formatBytes(bytes)} in one buffer, and this GPU binds at most ${formatBytes(limit)}. Pick a smaller model.`);
    }
  }
  return null;
}

function parseConfig(configBytes) {
  try {
    return JSON.parse(new TextDecoder().decode(configBytes));
  } catch {
    throw new Error("config.json is not valid JSON.");
  }
}

// What to call a checkpoint given as loose files: its _name_or_path, else its architecture and
// size ("bert, 2 layers x 32").
export function configName(configBytes) {
  const c = parseConfig(configBytes);
  if (c._name_or_path) return String(c._name_or_path).split("/").slice(-2).join("/");
  const type = c.model_type || (c.architectures || ["model"])[0];
  return c.num_hidden_layers && c.hidden_size ? `${type}, ${c.num_hidden_layers} layers x ${c.hidden_size}` : type;
}
