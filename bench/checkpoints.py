"""Random checkpoints of a given shape, built offline by transformers, for step timing where the
real weights are not at hand (a GPU machine with no network and no room to carry MiniLM's 90 MB).
Timing does not depend on the weights' values, only on the shapes.

    bert_dir(path, MINILM_SHAPE)    config.json + model.safetensors + vocab.txt (WordPiece)
    llama_dir(path, TINY_LLAMA)     config.json + model.safetensors + tokenizer files (tests/tiny_chat.py)
    decoder_dir(path, family, cfg)  the same for "llama", "gpt2" (tests/gpt2_checkpoints.py's DialoGPT
                                    directory) or "phi3" (Phi3ForCausalLM, tiny_chat's tokenizer)
    sentences(n, words, seed)       texts of `words` whole-word tokens from WORDS

They run in a process of their own (processes.call), so that the driver never loads torch.
"""

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Words that are single WordPiece tokens in bert-base-uncased's vocabulary (MiniLM's) and in
# the vocab.txt written here, so a text of n words is n tokens under both.
WORDS = ("the film was great good bad awful fine movie plot actor scene really not very and a "
         "it is this that of to in").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentences(n, words, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def bert_dir(path, config, seed=0):
    """A random BertModel (the encoder and pooler, as sentence-transformers checkpoints ship)
    with a vocab.txt of config["vocab_size"] tokens: specials, WORDS, then unused slots."""
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    BertModel(BertConfig(**config)).save_pretrained(path, safe_serialization=True)
    tokens = SPECIALS + WORDS
    tokens += [f"[unused{i}]" for i in range(config["vocab_size"] - len(tokens))]
    (path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return str(path)


def llama_dir(path, config, seed=0, device=None):
    """A random LlamaForCausalLM (untied head) with a small byte-level BPE tokenizer; token ids
    of the benchmarks' batches are drawn directly, up to config["vocab_size"]. `device` "cuda"
    draws the weights on the GPU where there is one (seconds instead of a minute for 1.1B)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_chat import tiny_chat_dir

    if device == "cuda" and not torch.cuda.is_available():
        device = None
    with torch.device(device or "cpu"):
        return str(tiny_chat_dir(Path(path), family="llama", seed=seed, **config))


def gpt2_dir(path, config, seed=0, device=None):
    """A random GPT2LMHeadModel (tied head, non-trivial LayerNorms and biases) with DialoGPT's
    tokenizer files (tests/gpt2_checkpoints.py); `config` in GPT2Config's names (n_embd...)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from gpt2_checkpoints import tiny_dialogpt_dir

    if device == "cuda" and not torch.cuda.is_available():
        device = None
    with torch.device(device or "cpu"):
        return str(tiny_dialogpt_dir(Path(path) / "gpt2", seed=seed, **config))


def phi3_dir(path, config, seed=0, device=None):
    """A random Phi3ForCausalLM (fused qkv_proj and gate_up_proj) beside tiny_chat's tokenizer
    files: llama_dir's directory with its model replaced (save_pretrained rewrites config.json
    and model.safetensors), the special-token ids kept."""
    import json

    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    out = Path(llama_dir(path, dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                    num_attention_heads=1, num_key_value_heads=1)))
    ids = {k: v for k, v in json.loads((out / "config.json").read_text()).items()
           if k in ("eos_token_id", "pad_token_id", "bos_token_id")}
    if device == "cuda" and not torch.cuda.is_available():
        device = None
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        Phi3ForCausalLM(Phi3Config(**dict(ids, **config))).save_pretrained(out, safe_serialization=True)
    return str(out)


DECODER_DIRS = {"llama": llama_dir, "gpt2": gpt2_dir, "phi3": phi3_dir}


def decoder_dir(path, family, config, seed=0, device=None):
    """The random checkpoint directory of `family` ("llama", "gpt2" or "phi3")."""
    return DECODER_DIRS[family](path, config, seed=seed, device=device)
