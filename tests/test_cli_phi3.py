"""`py-engine train | generate` on a Phi-3 family checkpoint: the family is picked from
config.json, the adapter is PEFT's (LoRA on the fused qkv_proj by default, PEFT's module name)
and generates as transformers + PEFT do."""

import torch
from peft import PeftModel
from transformers import AutoTokenizer, Phi3ForCausalLM

from test_cli_classifier import cli
from test_cli_gpt2 import train_adapter
from tiny_chat import tiny_chat_dir


def test_train_and_generate_a_phi3_adapter(tmp_path):
    model = tiny_chat_dir(tmp_path, "phi3", initializer_range=0.2)
    out, config = train_adapter(tmp_path, model)
    assert config["target_modules"] == ["qkv_proj"]

    prompt = "What is the capital of France?"
    generated = cli("generate", "--model", model, "--adapter", out, "--prompt", prompt,
                    "--max-new-tokens", 12, "--greedy")
    tok = AutoTokenizer.from_pretrained(model)
    hf = PeftModel.from_pretrained(Phi3ForCausalLM.from_pretrained(model), out).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert len(ids) > 16        # the prompt alone passes LongRoPE's switch (tiny_chat's phi3)
    reply = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert generated.stdout.rstrip("\n") == tok.decode(reply[0, len(ids):], skip_special_tokens=True)
