"""`py-engine train | score | generate` on Mistral (sliding window shorter than the chats) and
Gemma chat checkpoints: the family is picked from config.json; scores are transformers + PEFT's
and greedy completions transformers' (LoRA on every projection, and Gemma fully fine-tuned:
the checkpoint written, its norms stored as offsets from 1 and its head tied, loads in
transformers)."""

import pytest

from test_cli_chat import ROWS, check_train_score_generate
from test_cli_classifier import write_jsonl
from tiny_chat import tiny_chat_dir


@pytest.mark.parametrize("family, mode", [("mistral", "lora"), ("gemma", "lora"), ("gemma", "full")])
def test_train_score_generate(tmp_path, family, mode):
    model = tiny_chat_dir(tmp_path, family=family, initializer_range=0.2)
    check_train_score_generate(tmp_path, model, write_jsonl(tmp_path / "chat.jsonl", ROWS * 2), mode)
