"""A tiny chat checkpoint built offline, as a Hugging Face directory a user would download:
config.json + model.safetensors (random weights from transformers), tokenizer.json (a byte-level
BPE that the tokenizers library trains here on a small corpus, ChatML special tokens) and
tokenizer_config.json with a ChatML chat template (Qwen2's, minus the tools branch).

    path = tiny_chat_dir(tmp_path, family="qwen2")      # or "llama" (untied) / "llama-tied",
                                                        # "mistral" (window 8) / "gemma" /
                                                        # "gemma2" / "gemma3" / "qwen3" / "smollm3" /
                                                        # "phi3" (LongRoPE, switch at 16 tokens)
    tok = transformers.AutoTokenizer.from_pretrained(path)   # loads as any chat model does
"""

import json

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "You are a helpful assistant.", "system", "user", "assistant",
    "Hello! How are you today?", "I am fine, thank you. And you?",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea: waves roll in, waves roll out, the tide keeps time.",
    "My name is Ada and I like tea, gardens and the number 42.",
    "def add(a, b):\n    return a + b\n", "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2026.",
    "Les élèves apprennent le français. Grüße aus München! 你好，世界。",
    "Instruction: summarize the text. Input: the quick brown fox jumps over the lazy dog.",
]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, max_position_embeddings=256)


def train_tokenizer(vocab_size=320, special=SPECIAL):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def tiny_chat_dir(path, family="qwen2", seed=0, **overrides):
    """Write the checkpoint under path / family; returns that directory."""
    out = path / family
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    eos, pad = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    settings = dict(TINY, vocab_size=vocab, eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    settings.update(overrides)
    torch.manual_seed(seed)
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**settings, tie_word_embeddings=True))
    elif family in ("llama", "llama-tied"):
        model = LlamaForCausalLM(LlamaConfig(**settings, tie_word_embeddings=family == "llama-tied"))
    elif family == "mistral":     # a window shorter than most training sequences and replies
        from transformers import MistralConfig, MistralForCausalLM

        model = MistralForCausalLM(MistralConfig(**dict(dict(sliding_window=8), **settings)))
    elif family == "gemma":       # one KV head of 256, tied head, GeGLU
        from transformers import GemmaConfig, GemmaForCausalLM

        model = GemmaForCausalLM(GemmaConfig(**dict(settings, num_attention_heads=2,
                                                    num_key_value_heads=1, head_dim=256)))
    elif family == "qwen3":       # QK-norm; heads of 128 (its default) on a hidden size of 32
        from transformers import Qwen3Config, Qwen3ForCausalLM

        model = Qwen3ForCausalLM(Qwen3Config(**settings, tie_word_embeddings=True))
        with torch.no_grad():         # QK-norm weights that matter (they start at 1)
            for name, p in model.named_parameters():
                if name.endswith(("q_norm.weight", "k_norm.weight")):
                    p.add_(0.3 * torch.randn_like(p))
    elif family == "gemma3":      # QK-norm, sandwich norms; five sliding layers, then a full one
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        model = Gemma3ForCausalLM(Gemma3TextConfig(**dict(
            settings, num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1,
            head_dim=64, query_pre_attn_scalar=64, sliding_window=8)))
        with torch.no_grad():         # norms that matter (Gemma's start at 0: a scale of 1)
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(0.3 * torch.randn_like(p))
    elif family == "gemma2":      # sandwich norms, soft caps that bend; sliding layers 0 and 2
        from transformers import Gemma2Config, Gemma2ForCausalLM

        model = Gemma2ForCausalLM(Gemma2Config(**dict(
            settings, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
            head_dim=64, query_pre_attn_scalar=64, sliding_window=8, attn_logit_softcapping=1.0,
            final_logit_softcapping=2.0)))
        with torch.no_grad():         # norms that matter (Gemma's start at 0: a scale of 1)
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(0.3 * torch.randn_like(p))
    elif family == "smollm3":     # four layers, the last without rotary embedding (its default
        from transformers import SmolLM3Config, SmolLM3ForCausalLM     # every 4th, as llama.cpp's)

        model = SmolLM3ForCausalLM(SmolLM3Config(**dict(settings, num_hidden_layers=4)))
    elif family == "phi3":
        from phi3_checkpoints import longrope

        model = Phi3ForCausalLM(Phi3Config(**dict(longrope(), original_max_position_embeddings=16,
                                                  **settings)))
    else:
        raise ValueError(family)
    model.save_pretrained(out, safe_serialization=True)
    config = {"chat_template": CHATML, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "bos_token": None, "unk_token": None, "model_max_length": 256,
              "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "added_tokens_decoder": {str(tok.token_to_id(t)): {
                  "content": t, "special": True, "lstrip": False, "rstrip": False,
                  "normalized": False, "single_word": False} for t in SPECIAL}}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out
