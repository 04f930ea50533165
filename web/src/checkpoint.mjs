// What of a picked or dropped folder is a Hugging Face checkpoint the engine reads: the config,
// safetensors weights and tokenizer files at the folder's top level. Other weights (PyTorch
// .bin, ONNX, GGUF) and sub-folders are left unread: they can be gigabytes.

const WANTED = new Set([
  "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
  "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
  "chat_template.json", "model.safetensors.index.json",
]);
const ENCODERS = new Set(["bert", "roberta", "distilbert", "electra", "xlm-roberta", "camembert", "mpnet"]);
const DECODERS = new Set(["llama", "qwen2", "qwen3", "mistral", "smollm", "smollm2", "gemma", "phi3"]);

// The items ({path, file}) to read; an Error whose message says what is missing.
export function checkpointFiles(items) {
  const top = items.filter((i) => !i.path.includes("/"));
  const chosen = top.filter((i) => WANTED.has(i.path) || i.path.endsWith(".safetensors"));
  const names = new Set(chosen.map((i) => i.path));
  const given = top.map((i) => i.path).slice(0, 6).join(", ") || "nothing at the top level";
  if (!names.has("config.json")) {
    throw new Error(`Not a model folder: no config.json (found ${given}). Give a Hugging Face checkpoint folder: config.json, model.safetensors, tokenizer files.`);
  }
  if (![...names].some((n) => n.endsWith(".safetensors"))) {
    const bin = top.some((i) => /\.(bin|pt|pth|ckpt|gguf|onnx|h5)$/.test(i.path));
    throw new Error(bin
      ? "This folder has no .safetensors weights: the engine reads model.safetensors, not PyTorch .bin, ONNX or GGUF files."
      : "This folder has no model.safetensors: the weights are missing.");
  }
  if (!names.has("tokenizer.json") && !names.has("vocab.txt")) {
    throw new Error("This folder has no tokenizer (tokenizer.json or vocab.txt).");
  }
  return chosen;
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

// "classification" for a BERT-family encoder, "causal_lm" for a Llama-family decoder, or
// undefined (the engine decides, and says so if it cannot).
export function modelKind(configBytes) {
  const config = parseConfig(configBytes);
  const type = String(config.model_type || "").toLowerCase();
  if (ENCODERS.has(type)) return "classification";
  if (DECODERS.has(type)) return "causal_lm";
  return undefined;
}
