"""`py-engine train | score | generate` on Mistral (sliding window shorter than the chats) and
Gemma chat checkpoints: the family is picked from config.json; scores are transformers + PEFT's
and greedy completions transformers' (LoRA on every projection, and Gemma fully fine-tuned:
the checkpoint written, its norms stored as offsets from 1 and its head tied, loads in
transformers)."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from test_cli_chat import ROWS, peft_scores
from test_cli_classifier import cli, write_jsonl
from tiny_chat import tiny_chat_dir

ALL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@pytest.mark.parametrize("family, mode", [("mistral", "lora"), ("gemma", "lora"), ("gemma", "full")])
def test_train_score_generate(tmp_path, family, mode):
    model = tiny_chat_dir(tmp_path, family=family, initializer_range=0.2)
    data = write_jsonl(tmp_path / "chat.jsonl", ROWS * 2)
    out = tmp_path / "out"
    lora = ("--target-modules", ALL) if mode == "lora" else ()
    trained = cli("train", "--model", model, "--data", data, "--out", out, "--mode", mode,
                  "--epochs", 2, "--lr", 1e-2 if mode == "lora" else 1e-3, "--batch-size", 4, *lora)
    steps = [json.loads(line) for line in trained.stderr.splitlines() if line.startswith('{"step"')]
    assert len(steps) == 6 and all(s["tokens"] > 0 for s in steps)
    adapter_args = ("--adapter", out) if mode == "lora" else ()
    scored_model = model if mode == "lora" else out
    scored = cli("score", "--model", scored_model, *adapter_args, "--data", data)
    lines = [json.loads(line) for line in scored.stdout.splitlines()]
    want = peft_scores(scored_model, out if mode == "lora" else None, ROWS * 2)
    assert len(lines) == len(want)
    for got, (loss, tokens) in zip(lines, want):
        assert got["tokens"] == tokens
        assert abs(got["loss"] - loss) <= 1e-5 * loss

    prompt = "What is the capital of France?"
    generated = cli("generate", "--model", scored_model, *adapter_args, "--prompt", prompt,
                    "--max-new-tokens", 16, "--greedy")
    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(scored_model)
    if mode == "lora":
        hf = PeftModel.from_pretrained(hf, out)
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert len(ids) > 8 or family != "mistral"          # the prompt alone outruns the window
    reply = hf.eval().generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert generated.stdout.rstrip("\n") == tok.decode(reply[0, len(ids):], skip_special_tokens=True)
