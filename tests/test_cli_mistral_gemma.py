"""`py-engine train | score | generate` on Mistral (sliding window shorter than the chats),
Gemma, Qwen3, Gemma 3 and Gemma 2 chat checkpoints: the family is picked from config.json; scores are transformers + PEFT's
and greedy completions transformers' (LoRA on every projection, and Gemma and Gemma 2 fully
fine-tuned: the checkpoint written, its norms stored as offsets from 1 and its head tied, loads
in transformers)."""

import json

import pytest

from test_cli_chat import ROWS, check_train_score_generate
from test_cli_classifier import write_jsonl
from tiny_chat import tiny_chat_dir


@pytest.mark.parametrize("family, mode", [("mistral", "lora"), ("gemma", "lora"), ("gemma", "full"),
                                          ("qwen3", "lora"), ("gemma3", "lora"), ("gemma2", "full")])
def test_train_score_generate(tmp_path, family, mode):
    model = tiny_chat_dir(tmp_path, family=family, initializer_range=0.2)
    check_train_score_generate(tmp_path, model, write_jsonl(tmp_path / "chat.jsonl", ROWS * 2), mode)


def test_template_args_reach_the_chat_template(tmp_path):
    """--template-arg NAME=VALUE (JSON where it parses): Qwen3's enable_thinking=false closes an
    empty think block in the generation prompt, as transformers renders it; names generate sets
    itself, malformed ones and --raw are refused before anything loads."""
    from transformers import AutoTokenizer

    from chat_template_fixtures import model_template
    from py_engine.gpu import run_sync
    from py_engine.train.chat import ChatModel
    from test_cli_chat import cli

    model = tiny_chat_dir(tmp_path, family="qwen3", initializer_range=0.2)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(dict(config, chat_template=model_template("qwen-3"))))
    chat = run_sync(ChatModel.load(model, backend="numpy"))
    tok = AutoTokenizer.from_pretrained(model)
    messages = [{"role": "user", "content": "Hi"}]
    for args in ({}, {"enable_thinking": False}):
        want = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **args)
        assert chat.tokenizer.decode(chat.prompt_ids("Hi", template_args=args), skip_special_tokens=False) == want
    assert want.endswith("<think>\n\n</think>\n\n")
    for raw, message in ((True, "raw text is not rendered"), (False, "no chat template")):
        if not raw:
            chat.template = None
        with pytest.raises(ValueError, match=message):
            chat.prompt_ids("Hi", raw=raw, template_args={"enable_thinking": False})
    out = cli("generate", "--model", model, "--prompt", "Hi", "--max-new-tokens", 4,
              "--template-arg", "enable_thinking=false")
    assert out.returncode == 0
    for extra, match in ((["--template-arg", "messages=[]"], "messages is set by generate itself"),
                         (["--template-arg", "enable_thinking"], "expected NAME=VALUE"),
                         (["--raw", "--template-arg", "x=1"], "--raw continues the text itself"),
                         (["--template-arg", "two words=1"], "not a template variable name"),
                         (["--raw", "--prompt", ""], "the prompt is empty")):
        out = cli("generate", "--model", model, "--prompt", "Hi", *extra, check=False)
        assert out.returncode == 2 and match in out.stderr, out.stderr
        assert out.stdout == ""
