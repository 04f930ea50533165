"""`py-engine train | generate` on a GPT-2 family checkpoint (DialoGPT-like): the family is
picked from config.json, the adapter is PEFT's (fan_in_fan_out, c_attn) and generates as
transformers + PEFT do on DialoGPT's format; --dropout 0 trains without the checkpoint's
dropout; a decoder of another family is refused with the supported ones named."""

import json

import torch
from peft import PeftModel
from transformers import AutoTokenizer, GPT2LMHeadModel

from gpt2_checkpoints import tiny_dialogpt_dir
from test_cli_classifier import cli, write_jsonl

ROWS = [{"messages": [{"role": "user", "content": "Hello! How are you today?"},
                      {"role": "assistant", "content": "I am fine, thank you. And you?"}]},
        {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."}]


def train_adapter(tmp_path, model):
    """`py-engine train` of `model` on ROWS twice, one epoch of two steps, into tmp_path /
    "adapter"; (that directory, its adapter_config.json)."""
    data = write_jsonl(tmp_path / "chat.jsonl", ROWS * 2)
    out = tmp_path / "adapter"
    trained = cli("train", "--model", model, "--data", data, "--out", out, "--epochs", 1,
                  "--lr", 1e-2, "--batch-size", 2)
    steps = [json.loads(line) for line in trained.stderr.splitlines() if line.startswith('{"step"')]
    assert len(steps) == 2
    return out, json.loads((out / "adapter_config.json").read_text())


def test_train_and_generate_a_dialogpt_adapter(tmp_path):
    model = tiny_dialogpt_dir(tmp_path / "dialogpt")
    out, config = train_adapter(tmp_path, model)
    assert config["fan_in_fan_out"] is True and config["target_modules"] == ["c_attn"]

    prompt = "What is the capital of France?"
    generated = cli("generate", "--model", model, "--adapter", out, "--prompt", prompt,
                    "--max-new-tokens", 12, "--greedy")
    tok = AutoTokenizer.from_pretrained(model)
    hf = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(model), out).eval()
    ids = tok.encode(prompt + tok.eos_token)          # DialoGPT's model card
    reply = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    assert len(reply[0]) - len(ids) == 12             # a full reply, no early end-of-text
    assert generated.stdout.rstrip("\n") == tok.decode(reply[0, len(ids):], skip_special_tokens=True)


def test_dropout_zero_trains_as_a_checkpoint_without_dropout(tmp_path):
    """The same weights with dropout 0.1 in config.json: `--dropout 0` gives every step's loss of
    the checkpoint whose rates are 0, without it the losses differ (masks were drawn)."""
    rates = dict(embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1)
    models = {"drop": tiny_dialogpt_dir(tmp_path / "drop", **rates), "plain": tiny_dialogpt_dir(tmp_path / "plain")}
    data = write_jsonl(tmp_path / "chat.jsonl", ROWS * 2)

    def losses(name, *options):
        out = cli("train", "--model", models[name], "--data", data, "--out", tmp_path / f"{name}{len(options)}",
                  "--epochs", 1, "--lr", 1e-2, "--batch-size", 1, *options)
        return [json.loads(line)["loss"] for line in out.stderr.splitlines() if line.startswith('{"step"')]

    plain = losses("plain")
    assert len(plain) == 4
    assert losses("drop", "--dropout", 0) == plain
    assert losses("drop") != plain


def test_a_decoder_of_another_family_is_refused_naming_the_supported(tmp_path):
    model = tiny_dialogpt_dir(tmp_path / "neo")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="gpt_neo", architectures=["GPTNeoForCausalLM"])
    (model / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "chat.jsonl", ROWS)
    out = cli("train", "--model", model, "--data", data, "--out", tmp_path / "x", check=False)
    assert out.returncode == 2
    assert "model_type 'gpt_neo' is a decoder py_engine does not run; supported decoders: " \
           "Llama (llama, qwen2, qwen3, mistral, smollm3), " in out.stderr and "GPT-2 (gpt2)" in out.stderr
