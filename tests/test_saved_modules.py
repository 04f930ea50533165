"""PEFT's modules_to_save on a chat model: the embedding and the output layer trained whole
beside the LoRA, as adapters trained after adding tokens carry them (TRL's setup_chat_format
resizes the vocabulary; the adapter saves both tables and the tokenizer beside them).

Against transformers + PEFT: one step's loss and every gradient (the tables' included) on the
NumPy backend in float64 (bounds as test_llama_lora_oracle's: 1e-6 loss, 1e-5 gradients), for
an untied and a tied checkpoint (PEFT trains a copy of each: the tied head becomes a tensor of
its own), with the vocabulary resized or not.
"""

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.decoders import decoder_model
from py_engine.models.llama import shift_labels
from py_engine.models.bert_config import ConfigError
from py_engine.models.llama_config import LlamaConfig
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.batch import Batch
from py_engine.train.chat import saved_vocabulary
import peft_oracle as po

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64)
BOTH = ["embed_tokens", "lm_head"]


def saved_modules_adapter(path, model_class, config, saved, vocab=None, seed=0, **options):
    """A float64 PEFT model of a fresh checkpoint (saved under path / "model") with a LoRA on
    q_proj and v_proj and `saved` in modules_to_save, the vocabulary resized to `vocab` rows
    first where given; lora_B and the saved tables moved off their starting values; the
    adapter saved under path / "adapter"."""
    torch.manual_seed(seed)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    if vocab is not None:
        base.resize_token_embeddings(vocab)
    peft = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              modules_to_save=saved, **options))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if p.requires_grad and ("lora_B" in name or "modules_to_save" in name):
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(path / "adapter")
    return peft.double()


def our_step(path, ids, mask, labels):
    """(loss, gradients, model) of one step of the adapter under path on the NumPy backend in
    float64, the model built as ChatModel builds it (decoder_model with the adapter's
    vocabulary)."""
    checkpoint = DecoderCheckpoint.load(path / "model")
    adapter_config, tensors, _ = load_adapter(path / "adapter")
    lora = LoraConfig.from_language_model_dict(adapter_config, checkpoint.config.lora_targets,
                                               checkpoint.config.whole_modules)
    model = decoder_model(checkpoint.config, lora,
                          vocab_size=saved_vocabulary(checkpoint.config, tensors))
    be = NumpyBackend(np.float64)
    for name in model.frozen_names():
        be.set_param(name, np.frombuffer(checkpoint.floats(name), np.float32), checkpoint.shape(name))
    for name, (shape, values) in tensors.items():
        be.set_param(name, np.asarray(values, np.float64), shape)
        be.add_grad(name)
    B, T = ids.shape
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist())
    hidden, saved = model.forward(be, batch)
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name),
                                  np.asarray(shift_labels(labels.tolist())),
                                  dweight=model.head_grad(be))
    model.backward(be, dh, saved, batch)
    return metrics["loss"], be.grads, model


def a_batch(vocab):
    rng = np.random.default_rng()
    B, T = 3, 10
    ids = rng.integers(0, vocab, (B, T))
    ids[0, 4] = vocab - 1                  # an added token (the resized rows) in the input
    mask = np.ones((B, T), np.int64)
    mask[2, 7:] = 0                        # a right-padded row
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100
    labels[1, 5] = vocab - 2               # and as a target
    return ids, mask, labels


@pytest.mark.parametrize("model_class, hf_config, saved, vocab", [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), BOTH, 100),             # tokens added
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["lm_head"], None),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["model.embed_tokens"], None),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True), BOTH, 100),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["lm_head"], None),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), BOTH, None),
])
def test_saved_modules_step_matches_peft(tmp_path, model_class, hf_config, saved, vocab):
    peft = saved_modules_adapter(tmp_path, model_class, hf_config, saved, vocab)
    ids, mask, labels = a_batch(vocab or 96)
    peft.train()
    out = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
               labels=torch.as_tensor(labels))
    out.loss.backward()
    want = {po.adapter_key(n).replace("base_model.model.", ""): p.grad.double().numpy()
            for n, p in peft.named_parameters() if p.requires_grad}

    loss, grads, model = our_step(tmp_path, ids, mask, labels)
    assert abs(loss - out.loss.item()) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    po.check_gradients(grads, want, 1e-5)


def test_what_modules_to_save_may_name(tmp_path):
    """Only the embedding and the output layer train whole in a chat model; a tied pair
    split (the embedding trained, the head the checkpoint's) and a resized vocabulary missing
    one of its tables are refused by name."""
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM",
                  peft_type="LORA")
    whole = ("model.embed_tokens", "lm_head")
    with pytest.raises(LoraConfigError, match=r"modules_to_save \['norm'\] trains those modules "
                                              r"in full .* only model.embed_tokens, lm_head"):
        LoraConfig.from_language_model_dict(dict(config, modules_to_save=["norm"]), (), whole)
    with pytest.raises(LoraConfigError, match=r"modules_to_save \['lm_head'\] .* only the LoRA "
                                              "tensors of this model's adapters are read here"):
        LoraConfig.from_language_model_dict(dict(config, modules_to_save=["lm_head"]), ())
    lora = LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    untied, tied = LlamaConfig(**TINY), LlamaConfig(**TINY, tie_word_embeddings=True)
    lora.modules_to_save = ["embed_tokens"]
    with pytest.raises(ConfigError, match="trains the embedding whole while the output layer, "
                                          "tied to it, stays the checkpoint's"):
        decoder_model(tied, lora)
    with pytest.raises(ConfigError, match="the adapter's vocabulary has 100 tokens and the "
                                          "checkpoint's 96: a resized vocabulary needs both"):
        decoder_model(untied, lora, vocab_size=100)
    lora.modules_to_save = ["lm_head", "norm"]
    with pytest.raises(LoraConfigError, match=r"modules_to_save \['norm'\]"):
        decoder_model(untied, lora)
    lora.modules_to_save = ["lm_head"]
    model = decoder_model(tied, lora)
    assert model.config.tie_word_embeddings is False and tied.tie_word_embeddings is True
    assert model.head_sources() == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "model.embed_tokens.weight" in model.frozen_names() and not model.saves_vocabulary
