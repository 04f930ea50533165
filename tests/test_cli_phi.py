"""`py-engine train | generate` on a Phi-2 family checkpoint (phi-2-like: no chat template, no
ChatML tokens): the family is picked from config.json, text trains a PEFT adapter on PEFT's
default phi targets, which generates as transformers + PEFT do; chat data is refused with the
reason (no template, and no tokens for the ChatML fallback), as for other template-less
checkpoints."""

import json

import torch
from peft import PeftModel
from tokenizers import Tokenizer
from transformers import PhiForCausalLM

from phi_checkpoints import tiny_phi_dir
from test_cli_classifier import cli, write_jsonl

TEXTS = [{"text": "What is the capital of France? The capital of France is Paris."},
         {"text": "def add(a, b):\n    return a + b\n"},
         {"text": "Write a short poem about the sea: waves roll in, waves roll out."},
         {"text": "My name is Ada and I like tea, gardens and the number 42."}]


def test_train_on_text_and_generate_a_phi_adapter(tmp_path):
    model = tiny_phi_dir(tmp_path / "phi", initializer_range=0.2)
    data = write_jsonl(tmp_path / "text.jsonl", TEXTS)
    out = tmp_path / "adapter"
    trained = cli("train", "--model", model, "--data", data, "--out", out, "--epochs", 1,
                  "--lr", 1e-2, "--batch-size", 2)
    steps = [json.loads(line) for line in trained.stderr.splitlines() if line.startswith('{"step"')]
    assert len(steps) == 2
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["fc1", "fc2", "q_proj", "v_proj"]

    prompt = "What is the capital of"
    generated = cli("generate", "--model", model, "--adapter", out, "--prompt", prompt,
                    "--max-new-tokens", 12, "--greedy")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    hf = PeftModel.from_pretrained(PhiForCausalLM.from_pretrained(model), out).eval()
    ids = tok.encode(prompt).ids
    reply = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                        eos_token_id=eos, pad_token_id=eos)
    new = reply[0, len(ids):].tolist()
    assert new and generated.stdout.rstrip("\n") == tok.decode(new, skip_special_tokens=True)


def test_chat_data_is_refused_without_a_template_or_chatml_tokens(tmp_path):
    model = tiny_phi_dir(tmp_path / "phi")
    rows = [{"messages": [{"role": "user", "content": "Hello!"},
                          {"role": "assistant", "content": "Hello."}]}] * 2
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = cli("train", "--model", model, "--data", data, "--out", tmp_path / "x", check=False)
    assert out.returncode == 2
    assert "no chat template" in out.stderr and "ChatML tokens" in out.stderr
    assert not (tmp_path / "x" / "adapter_config.json").exists()
