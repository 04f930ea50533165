"""Tiny random PhiForCausalLM checkpoints made offline with transformers, for the Phi-2 family
tests: partial rotary (rotary_dim < head_dim), non-trivial LayerNorms and biases (the head's
too), an untied head, saved with save_pretrained (safetensors)."""

import torch
from transformers import PhiConfig, PhiForCausalLM

# head_dim 8, partial_rotary_factor 0.5: 4 of each head's 8 dimensions rotate. No dropout
# unless a test asks for it: the training-mode oracles must be comparable.
TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, partial_rotary_factor=0.5,
            hidden_act="gelu_new", bos_token_id=95, eos_token_id=95, resid_pdrop=0.0,
            embd_pdrop=0.0, attention_dropout=0.0, tie_word_embeddings=False)


def tiny_phi(path, seed=0, **overrides):
    """A PhiForCausalLM (float64, eval) saved to `path`."""
    torch.manual_seed(seed)
    values = dict(TINY, **overrides)
    factor = values.pop("partial_rotary_factor")
    config = PhiConfig(**values, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "partial_rotary_factor": factor})
    model = PhiForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model.double().eval()


def tiny_phi_dir(path, seed=0, **overrides):
    """A phi-2-like checkpoint directory: a tiny PhiForCausalLM over a byte-level BPE (tiny_chat's
    corpus) whose only special token is "<|endoftext|>" (bos, eos and unk, as phi-2 ships), and a
    tokenizer_config.json with no chat template."""
    import json

    from tiny_chat import train_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(special=["<|endoftext|>"])
    tok.save(str(path / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    tiny_phi(path, seed, **dict(dict(vocab_size=tok.get_vocab_size(), bos_token_id=eos,
                                     eos_token_id=eos, max_position_embeddings=128), **overrides))
    config = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "model_max_length": 128,
              "tokenizer_class": "CodeGenTokenizer", "add_prefix_space": False}
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path
