"""Label smoothing for chat models and T5 (CausalTrainConfig.label_smoothing, transformers'
label_smoothing_factor): a LoRA step's loss and every gradient against transformers'
LabelSmoother on PEFT's model (a Llama, its labels shifted; a T5, not), NumPy backend in
float64 (LabelSmoother sums the smoothed term in float32: bounds 1e-6 loss, 1e-5 gradients);
training keeps it out of scores and in its evaluation; the options that set it. The kernels'
smoothing against torch's cross_entropy: tests/test_kernels_lm_head_loss.py."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM
from transformers.trainer_pt_utils import LabelSmoother

import peft_oracle as po
from conftest import run
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.config import CausalTrainConfig, ConfigError
from test_chat_model import random_examples
from test_llama_lora_oracle import ALL, TINY, numpy_step, peft_decoder
from tiny_chat import tiny_chat_dir


def smoothed_step(peft, smoothing, shift, **inputs):
    """transformers' loss with LabelSmoother(smoothing) on PEFT's model, and every trainable
    gradient by the adapter's names."""
    peft.train()
    peft.zero_grad()
    labels = inputs.pop("labels")
    out = peft(**{k: torch.as_tensor(v) for k, v in inputs.items()})
    loss = LabelSmoother(epsilon=smoothing)(out, torch.as_tensor(labels), shift_labels=shift)
    loss.backward()
    return loss.item(), {po.adapter_key(n).replace("base_model.model.", ""): p.grad.numpy()
                         for n, p in peft.named_parameters() if p.requires_grad}


def test_a_llama_step_with_label_smoothing_matches_label_smoother(tmp_path):
    peft = peft_decoder(tmp_path, LlamaForCausalLM, HFLlamaConfig(**TINY), ALL)
    rng = np.random.default_rng()
    B, T, smoothing = 3, 10, float(rng.uniform(0.05, 0.3))
    ids = rng.integers(0, 96, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[2, 7:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100
    want_loss, want = smoothed_step(peft, smoothing, True, input_ids=ids, attention_mask=mask,
                                    labels=labels)
    loss, grads = numpy_step(tmp_path, ids, mask, labels, smoothing=smoothing)
    assert abs(loss - want_loss) <= 1e-6 * abs(want_loss)
    assert set(want) == set(grads)
    po.check_gradients(grads, want, 1e-5)
    assert abs(numpy_step(tmp_path, ids, mask, labels)[0] - loss) > 1e-5 * loss   # it matters


def test_a_t5_step_with_label_smoothing_matches_label_smoother(tmp_path):
    from test_t5_lora_oracle import ALL as T5_ALL
    from test_t5_lora_oracle import engine_step, peft_t5
    from test_t5_reference import a_batch, relative

    peft = peft_t5(tmp_path, T5_ALL)
    ids, mask, labels = a_batch()
    start = peft.base_model.model.prepare_decoder_input_ids_from_labels(torch.as_tensor(labels))
    want_loss, want = smoothed_step(peft, 0.1, False, input_ids=ids, attention_mask=mask,
                                    decoder_input_ids=start.numpy(), labels=labels)
    model, loss, grads = engine_step(tmp_path, ids, mask, labels, smoothing=0.1)
    assert abs(loss - want_loss) <= 1e-6 * abs(want_loss)
    assert set(want) == set(model.trainable)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= 1e-5, name


def test_training_smooths_its_loss_and_evaluation_but_not_scores(tmp_path, device):
    """A chat model trained with label smoothing on the GPU: its losses are NumPy's, not those
    of a run without; its evaluation loss is smoothed too (as
    transformers' eval_loss), while score_encoded afterwards is the plain loss, as the
    untrained model's scoring is."""
    model_dir = tiny_chat_dir(tmp_path / "m", family="qwen2", seed=2)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    runs = {}
    for backend, smoothing in (("numpy", 0.2), ("gpu", 0.2), ("numpy", 0.0)):
        chat = run(ChatModel.create(model_dir, lora=lora, backend=backend, device=device, seed=1))
        examples = random_examples(8, chat.checkpoint.config.vocab_size, seed=3)
        trainer = run(chat.trainer(examples, CausalTrainConfig(
            epochs=1, lr=1e-2, batch_size=4, label_smoothing=smoothing, adam_epsilon=1e-6)))
        run(trainer.fit())
        smoothed = run(chat.runtime.evaluate(chat.runtime.task.batch(examples, [0], 8, 64)))["loss"]
        scored = run(chat.score_encoded(examples[:1]))[0]["loss"]
        plain = run(chat.runtime.evaluate(chat.runtime.task.batch(examples, [0], 8, 64)))["loss"]
        runs[backend, smoothing] = ([h.loss for h in chat.history], smoothed, scored, plain)
    np.testing.assert_allclose(runs["gpu", 0.2][0], runs["numpy", 0.2][0], rtol=1e-4)
    assert np.abs(np.array(runs["numpy", 0.2][0]) - runs["numpy", 0.0][0]).max() > 1e-3
    for key in (("numpy", 0.2), ("gpu", 0.2)):
        _, smoothed, scored, plain = runs[key]
        assert abs(smoothed - scored) > 1e-4 * scored and abs(scored - plain) <= 1e-6 * plain


def test_the_options_that_set_it(tmp_path, monkeypatch):
    """CausalTrainConfig's label_smoothing in [0, 1); `py-engine train --label-smoothing` sets it
    for a chat model; the API takes it for chat and T5 jobs."""
    from py_engine.api.jobs import CONFIGS
    from test_neftune import chat_train_config

    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="label_smoothing must be"):
            CausalTrainConfig(label_smoothing=bad)
    assert chat_train_config(tmp_path, monkeypatch, "--label-smoothing", "0.1").label_smoothing == 0.1
    assert all("label_smoothing" in CONFIGS[k][1] for k in ("causal_lm", "seq2seq", "classification"))
