"""`py-engine export-job` on a Phi-3 checkpoint: the job folder's script (transformers' Trainer +
PEFT, one CPU process) trains what py_engine trains, LoRA on PEFT's names for the fused
projections, with LongRoPE past its switch: each step's loss and gradient norm equal py_engine's,
and the adapter it writes loads back into py_engine with PEFT's logits (an engine-trained Phi-3
adapter and a job's are one format)."""

import json

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoTokenizer, Phi3ForCausalLM

import export_models as em
from conftest import run
from py_engine.data.chat import encode_chat_examples, read_chat_jsonl
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import CausalTrainConfig, ChatModel
from test_cli_classifier import write_jsonl
from test_export_job import (CHATS, adapter_weights, assert_same_adapter, assert_same_steps,
                             export_job, launch)
from tiny_chat import tiny_chat_dir

TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj"


def test_phi3_chat_job_trains_what_py_engine_trains(tmp_path, capsys):
    model = tiny_chat_dir(tmp_path, "phi3", initializer_range=0.2)
    chats = write_jsonl(tmp_path / "chats.jsonl", CHATS)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", model, "--data", chats, "--out", job,
                           "--batch-size", 2, "--grad-accum", 2, "--epochs", 2, "--lr", 5e-3,
                           "--seed", 3, "--r", 4, "--target-modules", TARGETS)
    assert code == 0, err
    assert "py_engine does not run it" not in (job / "README.md").read_text()

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS.split(","), task_type="CAUSAL_LM")
    chat = run(ChatModel.create(model, lora=lora, seed=3))
    examples, _ = encode_chat_examples(read_chat_jsonl(chats), chat.tokenizer, chat.template,
                                       max_length=chat.max_length)
    assert max(len(e.ids) for e in examples) > 16       # batches past LongRoPE's switch
    run(run(chat.trainer(examples, CausalTrainConfig(epochs=2, lr=5e-3, batch_size=2, grad_accum=2,
                                                     seed=3))).run())
    _, log = launch(job, "--cpu", output=tmp_path / "one")
    assert_same_steps(log, chat.history)

    adapter = tmp_path / "one" / "adapter"
    assert sorted(json.loads((adapter / "adapter_config.json").read_text())["target_modules"]) == \
        sorted(TARGETS.split(","))
    ours = {f"base_model.model.{name}": np.frombuffer(bytes(data), np.float32)
            for name, (_, data) in run(chat.runtime.trainable_values()).items()}
    theirs = adapter_weights(adapter)
    assert set(theirs) == set(ours)
    for name in ours:
        assert_same_adapter(theirs[name], ours[name], name, lr=5e-3, steps=len(chat.history))

    ids = AutoTokenizer.from_pretrained(model).apply_chat_template(
        CHATS[0]["messages"], tokenize=True, return_dict=False)
    with torch.no_grad():
        peft = PeftModel.from_pretrained(Phi3ForCausalLM.from_pretrained(model), adapter).eval()
        want = peft(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()
    # (earlier rows differ: a decoder's step sees its prefix, short factors up to the switch,
    # where one forward of the whole sequence uses the long ones everywhere)
    assert em.relative_error(em.our_decoder_logits(model, adapter, ids)[-1], want) < 1e-5
