"""PEFT's bias option ("lora_only": the wrapped linears' biases train beside the adapter; "all":
every bias of the model does, the norms' and a head's too), against PEFT: its adapters read
here (classifier probabilities on both backends and merged, a chat model's logits at every
decoding step, the merged model's every tensor, the hybrid switch), ours read by PEFT, a fresh
adapter's biases, and what cannot hold trained biases refused by name. The training step's loss
and gradients against PEFT are in the step oracles (test_bert_oracle.py,
test_llama_lora_oracle.py, test_gpt2_lora_oracle.py, test_phi_lora_oracle.py), the GPU's
against NumPy in test_bert_gpu.py and test_gpt2_gpu.py."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import export_models as em
from conftest import run
from py_engine.export.merged import MergedModel
from py_engine.models.checkpoint import Checkpoint
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.classifier import TextClassifier
from py_engine.train.state import adapter_differences
import peft_oracle as po
from test_adapter_roundtrip import (LABELS, TEXTS, check_round_trip, our_probabilities,
                                    peft_bert_adapter, peft_probabilities)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("tiny") / "model", seed=43)


def trained_biases(values):
    """{name: array} of the biases among trainable values ({name: array}; the head's aside)."""
    return {k: np.asarray(v, np.float64) for k, v in values.items()
            if k.endswith(".bias") and not k.startswith("classifier.")}


@pytest.mark.parametrize("bias", ["lora_only", "all"])
def test_a_peft_bias_adapter_round_trips(tmp_path, tiny_dir, device, bias):
    """PEFT's adapter whose biases trained (moved off the checkpoint's): ours gives PEFT's
    probabilities on both backends and merged on the GPU (PEFT's copies of the head's bias,
    which bias="all" saves too, passed over); trained here and saved, the biases moved and PEFT
    reads the same probabilities from it."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 44, bias=bias,
                                target_modules=["query", "value"])
    keys = set(load_file(adapter / "adapter_model.safetensors"))
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.bias" in keys
    if bias == "all":
        assert {"base_model.model.bert.embeddings.LayerNorm.bias",
                "base_model.model.classifier.original_module.bias"} <= keys
    before, after, saved = check_round_trip(tiny_dir, adapter, tmp_path / "trained", device)
    assert json.loads((saved / "adapter_config.json").read_text())["bias"] == bias
    before, after = trained_biases(before), trained_biases(after)
    layers = Checkpoint.load(tiny_dir).config.num_hidden_layers
    # per layer: query's and value's; or all eight (four linears in attention, two in the
    # feed-forward, two norms), and the embeddings' norm's and the pooler's
    assert len(before) == (2 * layers if bias == "lora_only" else 8 * layers + 2)
    assert all(np.abs(after[k] - before[k]).max() > 1e-4 for k in before
               if ".key." not in k)          # a key's bias gets no gradient (softmax ignores it)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_fresh_bias_adapter_starts_from_the_checkpoint_s_biases(tmp_path, tiny_dir, device,
                                                                   backend):
    """A new adapter's trained biases are the checkpoint's (PEFT trains the base model's own),
    so it starts from the base model; saved untrained, PEFT gives our probabilities."""
    lora = LoraConfig(target_modules=["query", "dense"], bias="all")
    clf = run(TextClassifier.create(tiny_dir, LABELS, lora=lora, backend=backend, seed=3,
                                    device=device))
    ours = trained_biases({k: v for k, (_, v) in run(clf.runtime.trainable_values()).items()})
    checkpoint = Checkpoint.load(tiny_dir)
    assert len(ours) == 8 * checkpoint.config.num_hidden_layers + 2
    for name, values in ours.items():
        base = name.removeprefix("bert.").replace(".base_layer", "")
        assert np.array_equal(values, np.asarray(checkpoint.floats(base), np.float64)), name
    saved = run(clf.save(tmp_path / "fresh"))
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - our_probabilities(clf)).max() <= 1e-5


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_bias_chat_adapter_gives_peft_s_logits_and_merged_tensors(tmp_path, device, backend):
    """PEFT's bias="all" adapter on a tiny Qwen2 (q, k and v have biases): our next-token logits
    after each token (prompt, then one decoding step at a time) are PEFT's; the merged model's
    every tensor (its biases the trained ones) is merge_and_unload's; after the hybrid switch to
    full fine-tuning the model's outputs are the adapter's."""
    model_dir, adapter = em.chat_with_adapter(tmp_path, family="qwen2", seed=5, bias="all")
    keys = set(load_file(adapter / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias" in keys
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    ids = np.random.default_rng().integers(0, 90, 9).tolist()
    with torch.no_grad():
        want = peft(torch.tensor([ids])).logits[0].double().numpy()
    chat = em.check_logits_at_every_step(model_dir, adapter, ids, want, backend, device)

    merged = run(MergedModel.of(chat))
    hf = dict(peft.merge_and_unload().named_parameters())
    biases = [n for n in hf if n.endswith(".bias")]
    assert biases and set(biases) <= set(merged.names())
    for name in merged.names():
        if name in hf:
            ref = hf[name].detach().double().numpy().ravel()
            got = np.asarray(merged.floats(name), np.float64)
            assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max(), name

    em.check_switch_to_full_keeps_outputs(chat, ids)


def test_what_cannot_hold_trained_biases_refuses_them_by_name(tmp_path, capsys):
    """llama.cpp's LoRA adapters hold lora_a and lora_b only: the GGUF adapter export refuses
    an adapter with trained biases (the merged export carries them). T5's relative position
    tables are named "relative_attention_bias.weight", which PEFT 0.21's bias="all" leaves
    frozen (it trains names ending in ".bias"; T5 has none), as here. bias takes PEFT's three
    values; a state trained with other biases is not continued."""
    from py_engine.cli import main

    model_dir, adapter = em.chat_with_adapter(tmp_path, family="qwen2", seed=4, bias="lora_only")
    code = main(["export", "--model", str(model_dir), "--adapter", str(adapter), "--format",
                 "gguf-lora", "--out", str(tmp_path / "out")])
    assert code != 0 and not (tmp_path / "out").exists()
    assert "trains the base model's biases (bias='lora_only')" in capsys.readouterr().err

    from py_engine.models.t5 import T5Model
    from py_engine.models.t5_config import T5Config
    from t5_checkpoints import tiny_t5

    tiny_t5(tmp_path / "t5")
    config = T5Config.from_file(tmp_path / "t5")
    assert not T5Model(config, LoraConfig(target_modules=["q", "v"], bias="all")).bias_sources()
    from peft import LoraConfig as PeftLoraConfig, get_peft_model
    from transformers import T5ForConditionalGeneration

    peft = get_peft_model(T5ForConditionalGeneration.from_pretrained(tmp_path / "t5"),
                          PeftLoraConfig(target_modules=["q", "v"], bias="all"))
    trained = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n for n in trained)
    assert not T5Model(config, LoraConfig(target_modules=["q", "v"], bias="lora_only")).bias_sources()

    with pytest.raises(LoraConfigError, match="bias must be one of 'none', 'lora_only', 'all'"):
        LoraConfig(bias="some")
    clf_model = type("M", (), {"lora": LoraConfig(bias="all")})()
    assert adapter_differences(clf_model, dict(LoraConfig().to_peft_dict())) == ["bias"]
    assert adapter_differences(clf_model, dict(LoraConfig(bias="all").to_peft_dict())) == []
