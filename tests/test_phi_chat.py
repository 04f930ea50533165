"""The Phi-2 family through ChatModel (the one trainer, runtime and generation every decoder
family uses): PEFT's default phi targets, full fine-tuning that trains the head's bias, and the
saved whole checkpoint is the trained model to transformers."""

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import PhiForCausalLM

from conftest import run
from phi_checkpoints import tiny_phi_dir
from py_engine.tokenizers.checkpoint import chat_tokenizer
from py_engine.train.chat import CausalTrainConfig, ChatModel
from test_chat_model import Example        # ids and labels, as encoded examples hold them

TEXT = "What is the capital of France? The capital of France is Paris."


def test_chat_model_fine_tunes_phi_and_saves_a_checkpoint_transformers_loads(tmp_path):
    path = tiny_phi_dir(tmp_path / "phi")
    tokenizer, template = chat_tokenizer(path)
    assert template is None                  # phi-2 ships none: text trains, prompts are text
    ids = tokenizer.encode(TEXT).ids
    examples = [Example(ids, ids)] * 4

    async def main():
        lora = await ChatModel.create(path)
        assert sorted(lora.model.lora.target_modules) == ["fc1", "fc2", "q_proj", "v_proj"]
        chat = await ChatModel.create(path, mode="full")
        log = await chat.fit(examples, CausalTrainConfig(epochs=10, lr=1e-2, batch_size=4, mode="full"))
        await chat.save(tmp_path / "full")
        logits = await chat.decoder().prefill(ids[:6])
        return log, logits

    log, logits = run(main())
    losses = [step.loss for step in log]
    assert losses[-1] < 0.7 * losses[0], losses
    before = load_file(str(path / "model.safetensors"))["lm_head.bias"]
    after = load_file(str(tmp_path / "full" / "model.safetensors"))["lm_head.bias"]
    assert np.abs(after - before).max() > 1e-3                  # the head's bias trained
    saved = PhiForCausalLM.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        want = saved(input_ids=torch.as_tensor([ids[:6]])).logits[0, -1].numpy()
    assert np.linalg.norm(np.asarray(logits) - want) <= 1e-5 * np.linalg.norm(want)
