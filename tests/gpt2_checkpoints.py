"""Tiny random GPT2LMHeadModel checkpoints made offline with transformers, for the GPT-2 family
tests: non-trivial LayerNorms and biases, saved with save_pretrained (safetensors, tied head)."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

# No dropout unless a test asks for it: the training-mode oracles must be comparable.
TINY = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=95,
            eos_token_id=95, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def tiny_gpt2(path, seed=0, **overrides):
    """A GPT2LMHeadModel (float64, eval) saved to `path`."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**dict(TINY, **overrides)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.double().eval()


def tiny_dialogpt_dir(path, seed=0, **overrides):
    """A DialoGPT-like checkpoint directory: a tiny GPT2LMHeadModel over a byte-level BPE
    (tiny_chat's, "<|endoftext|>" as eos and pad) and a tokenizer_config.json with no chat
    template, as DialoGPT ships."""
    import json

    from tiny_chat import train_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(path / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    tiny_gpt2(path, seed, **dict(dict(vocab_size=tok.get_vocab_size(), bos_token_id=eos,
                                      eos_token_id=eos), **overrides))
    config = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "model_max_length": 64,
              "tokenizer_class": "GPT2TokenizerFast", "add_prefix_space": False}
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path
