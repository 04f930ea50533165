"""DialoGPT's conversation format in the chat data path, and the GPT-2 family through ChatModel
(the one trainer, runtime and generation the Llama family uses)."""

import re

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from conftest import run
from gpt2_checkpoints import tiny_dialogpt_dir
from py_engine.data.chat import ChatExample, encode_chat_example, load_chat_template
from py_engine.tokenizers.checkpoint import chat_tokenizer
from py_engine.train.chat import CausalTrainConfig, ChatModel

TURNS = ["Hello! How are you today?", "I am fine, thank you. And you?", "What is the capital of France?",
         "The capital of France is Paris."]


def test_dialogpt_turns_are_joined_by_the_end_of_text_token(tmp_path):
    """As DialoGPT's model card builds a conversation: each turn tokenized as turn + eos_token by
    transformers' tokenizer, concatenated; the assistant's turns and their eos are trained."""
    path = tiny_dialogpt_dir(tmp_path / "dialogpt")
    hf = AutoTokenizer.from_pretrained(path)
    tokenizer, _ = chat_tokenizer(path)
    messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(TURNS)]
    encoded = encode_chat_example(ChatExample(messages), tokenizer, load_chat_template(path, tokenizer))
    pieces = [hf.encode(t + hf.eos_token) for t in TURNS]
    assert encoded.ids == sum(pieces, [])
    want = sum((p if i % 2 else [-100] * len(p) for i, p in enumerate(pieces)), [])
    assert encoded.labels == want


def test_chat_model_fine_tunes_gpt2_and_generates(tmp_path):
    """Full fine-tuning (a random tiny model learns little through a rank-8 c_attn adapter in
    a few steps) through ChatModel's trainer; the default adapter is PEFT's for GPT-2."""
    path = tiny_dialogpt_dir(tmp_path / "dialogpt")
    tokenizer, _ = chat_tokenizer(path)
    template = load_chat_template(path, tokenizer)
    messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(TURNS)]
    examples = [encode_chat_example(ChatExample(messages), tokenizer, template)] * 4

    async def main():
        lora = await ChatModel.create(path)
        assert lora.model.lora.target_modules == ["c_attn"]      # PEFT's default for GPT-2
        chat = await ChatModel.create(path, mode="full")
        log = await chat.fit(examples, CausalTrainConfig(epochs=10, lr=1e-2, batch_size=4, mode="full"))
        await chat.save(tmp_path / "full")
        ids = tokenizer.encode(TURNS[0], add_special_tokens=False).ids
        logits = await chat.decoder().prefill(ids)
        return log, await chat.generate("Hello! How are you today?", max_new_tokens=8), ids, logits

    log, result, ids, logits = run(main())
    # the saved checkpoint (Conv1D weights back in [in, out]) is the trained model to transformers
    saved = GPT2LMHeadModel.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        want = saved(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()
    assert np.linalg.norm(np.asarray(logits) - want) <= 1e-5 * np.linalg.norm(want)
    losses = [step.loss for step in log]
    assert losses[-1] < 0.7 * losses[0], losses
    assert len(result.ids) <= 8 and result.finish_reason in ("eos", "length")
    assert np.isfinite(losses).all()


def test_dropout_option_reaches_the_model_and_survives_a_saved_state(tmp_path):
    """ChatModel.create(dropout=0.0) on a checkpoint with dropout: the model trains without it,
    a run resumed from its saved state keeps the rates it was made with, and restoring the state
    into a model of other rates is refused."""
    path = tiny_dialogpt_dir(tmp_path / "dialogpt", embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1)
    tokenizer, _ = chat_tokenizer(path)
    template = load_chat_template(path, tokenizer)
    messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(TURNS)]
    examples = [encode_chat_example(ChatExample(messages), tokenizer, template)] * 4
    config = CausalTrainConfig(epochs=2, lr=1e-2, batch_size=2)

    async def main():
        chat = await ChatModel.create(path, dropout=0.0)
        default = await ChatModel.create(path)
        trainer = await chat.trainer(examples, config)
        await trainer.run(max_steps=1)
        await chat.save_state(trainer, tmp_path / "state")
        resumed, _ = await ChatModel.resume(path, tmp_path / "state", examples)
        with pytest.raises(ValueError, match=re.escape(
                "the training state was trained with dropout {'attention': 0.0, 'embedding': 0.0, "
                "'residual': 0.0}; this model has {'embedding': 0.1")):
            await default.restore_state(tmp_path / "state", examples)
        await (await ChatModel.create(path, dropout=0.0)).restore_state(tmp_path / "state", examples)
        return chat.model.dropout, default.model.dropout, resumed.model.dropout

    off, default, resumed = run(main())
    assert off == resumed == {"embedding": 0.0, "residual": 0.0, "attention": 0.0}
    assert default == {"embedding": 0.1, "residual": 0.1, "attention": 0.1}
