"""PEFT's lora_bias (a bias on each lora_B: the adapter adds scaling * (B.A x + b_B), the merge
adds scaling * b_B to the base layer's bias) against PEFT: its adapters read here (classifier
probabilities on both backends and merged, a chat model's logits at every decoding step, the
merged model's every tensor, the hybrid switch, the merged and ONNX exports), ours read by PEFT,
a fresh adapter's biases, the GPU step with dropout, and what cannot hold lora_B's biases
refused by name. The training step's loss and gradients against PEFT are in the step oracles
(test_bert_oracle.py, test_llama_lora_oracle.py, test_gpt2_lora_oracle.py), the GPU's decoder
step against NumPy in test_llama_lora_oracle.py, the bias gradient kernel's scale in
test_kernels_matmul.py."""

import json
import math

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, TaskType
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import export_models as em
import peft_oracle as po
from conftest import run
from encoder_checks import check_exports, check_gpu_step
from py_engine.export.merged import MergedModel
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.state import adapter_differences
from test_adapter_roundtrip import (LABELS, TEXTS, check_round_trip, our_probabilities,
                                    peft_bert_adapter, peft_probabilities)
from py_engine.train.config import CausalTrainConfig
from test_bert_oracle import random_batch
from test_chat_model import compared_run, random_examples
from tiny_chat import tiny_chat_dir

QKV = ["q_proj", "k_proj", "v_proj"]        # a tiny Qwen2's linears that have biases


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("tiny") / "model", seed=47)


def lora_b_biases(values):
    """{name: array} of the lora_B biases among trainable values ({name: array})."""
    return {k: np.asarray(v, np.float64) for k, v in values.items() if k.endswith(".lora_B.bias")}


def test_a_peft_lora_bias_adapter_round_trips(tmp_path, tiny_dir, device):
    """PEFT's adapter with lora_B biases (on the pooler too, and beside trained base biases):
    ours gives PEFT's probabilities on both backends and merged on the GPU; trained here and
    saved, its lora_B biases moved and PEFT reads the same probabilities from it; the merged
    classifier (each bias + s b_B) and the ONNX graph give our probabilities."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 48, lora_bias=True,
                                bias="lora_only", target_modules=["query", "value", "dense"])
    keys = set(load_file(adapter / "adapter_model.safetensors"))
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.bias" in keys
    before, after, saved = check_round_trip(tiny_dir, adapter, tmp_path / "trained", device)
    assert json.loads((saved / "adapter_config.json").read_text())["lora_bias"] is True
    before, after = lora_b_biases(before), lora_b_biases(after)
    assert len(before) == 11 and all(np.abs(after[k] - before[k]).max() > 1e-4 for k in before
                                     if ".key." not in k)
    check_exports(tiny_dir, saved, tmp_path / "exports", "BertForSequenceClassification",
                  TEXTS, LABELS)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
@pytest.mark.parametrize("init", [True, False])
def test_a_fresh_lora_bias_adapter_starts_as_peft_s(tmp_path, tiny_dir, device, backend, init):
    """A new adapter's lora_B biases are zeros (PEFT's default init, so it starts from the base
    model) or, with init_lora_weights false, nn.Linear's draw, U(-1/sqrt(r), 1/sqrt(r)), as
    PEFT leaves them; saved untrained, PEFT gives our probabilities."""
    lora = LoraConfig(r=4, target_modules=["query", "dense"], lora_bias=True,
                      init_lora_weights=init)
    clf = run(TextClassifier.create(tiny_dir, LABELS, lora=lora, backend=backend, seed=3,
                                    device=device))
    ours = lora_b_biases({k: v for k, (_, v) in run(clf.runtime.trainable_values()).items()})
    assert len(ours) == 9       # query and the dense layers, two per layer, the pooler too
    values = np.concatenate(list(ours.values()))
    if init:
        assert not values.any()
    else:
        assert np.abs(values).max() <= 1 / math.sqrt(4) and values.std() > 0.1
    saved = run(clf.save(tmp_path / "fresh"))
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - our_probabilities(clf)).max() <= 1e-5


def test_the_gpu_step_with_dropout_matches_numpy(tmp_path, device):
    """LoRA dropout drops the input of A, never lora_B's bias: the GPU's loss and every
    gradient (the biases' through the scaled column sums) are NumPy's, masks from one seed."""
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=49)
    peft = po.peft_model(model_dir, 3, target_modules=("query", "value", "dense"), seed=50,
                         lora_bias=True, lora_alpha=6)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    ids, types, mask, labels = random_batch(np.random.default_rng(), 4, 12, 120, 3)
    check_gpu_step(device, model_dir, adapter, ids, types, mask, labels)


def qwen2_adapter(tmp_path, targets, seed, **lora):
    """(model_dir, adapter_dir, PEFT's model): a tiny Qwen2 and PEFT's CAUSAL_LM adapter with
    lora_B biases on `targets`, lora_B drawn at random."""
    model_dir = tiny_chat_dir(tmp_path, family="qwen2", seed=seed, **em.CHAT_SIZES)
    torch.manual_seed(seed + 1)
    peft = em.random_b_adapter(AutoModelForCausalLM.from_pretrained(model_dir),
                               tmp_path / "adapter", TaskType.CAUSAL_LM, targets, lora_bias=True,
                               **lora)
    return model_dir, tmp_path / "adapter", peft.eval()


def merged_is_peft_s(chat, peft, bound=1e-6):
    """The merged model of `chat` (each lora_B bias added to its layer's): every tensor is
    PEFT's merge_and_unload's (`bound` of its largest value). Returns it."""
    merged = run(MergedModel.of(chat))
    hf = dict(peft.merge_and_unload().named_parameters())
    assert set(hf) == set(merged.names())
    for name in merged.names():
        ref = hf[name].detach().double().numpy().ravel()
        got = np.asarray(merged.floats(name), np.float64)
        assert np.abs(got - ref).max() <= bound * np.abs(ref).max(), name
    return merged


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_lora_bias_chat_adapter_gives_peft_s_logits_and_merged_tensors(tmp_path, device, backend):
    """PEFT's adapter with lora_B biases on a tiny Qwen2's q, k and v (which have biases, here
    trained too): our next-token logits after each token (prompt, then one decoding step at a
    time) are PEFT's, and the standalone decoder's; the merged model's every tensor is
    merge_and_unload's; after the hybrid switch to full fine-tuning the outputs are the
    adapter's."""
    model_dir, adapter, peft = qwen2_adapter(tmp_path, QKV, seed=5, bias="lora_only")
    ids = np.random.default_rng().integers(0, 90, 9).tolist()
    with torch.no_grad():
        want = peft(torch.tensor([ids])).logits[0].double().numpy()
    assert any(n.endswith(".lora_B.bias") for n in load_adapter(adapter)[1])
    chat = em.check_logits_at_every_step(model_dir, adapter, ids, want, backend, device)

    merged = merged_is_peft_s(chat, peft)
    base = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    moved = base["model.layers.0.self_attn.q_proj.bias"].detach().double().numpy()
    assert np.abs(np.asarray(merged.floats("model.layers.0.self_attn.q_proj.bias")) - moved).max() > 1e-3

    em.check_switch_to_full_keeps_outputs(chat, ids)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_head_s_lora_b_bias_gives_peft_s_logits_and_merged_tensors(tmp_path, device, backend):
    """PEFT's adapter with lora_B biases on a tiny Phi-2's every layer and its output layer
    (whose own bias trains too, bias="all"): the logits at every decoding step are PEFT's, and
    the standalone decoder's; the merged model's every tensor (the head's bias + s b_B among
    them) is merge_and_unload's; the switch to full fine-tuning keeps the outputs. The GPU's
    step (the loss's bias gradient shared between the head's bias and b_B) is NumPy's."""
    from phi_checkpoints import tiny_phi_dir

    model_dir = tiny_phi_dir(tmp_path / "phi", seed=8)
    torch.manual_seed(9)
    peft = em.random_b_adapter(AutoModelForCausalLM.from_pretrained(model_dir),
                               tmp_path / "adapter", TaskType.CAUSAL_LM,
                               ["q_proj", "v_proj", "dense", "fc1", "lm_head"], lora_bias=True,
                               bias="all").eval()
    adapter = tmp_path / "adapter"
    assert "base_model.model.lm_head.lora_B.bias" in load_file(adapter / "adapter_model.safetensors")
    ids = np.random.default_rng().integers(0, 90, 9).tolist()
    with torch.no_grad():
        want = peft(torch.tensor([ids])).logits[0].double().numpy()
    chat = em.check_logits_at_every_step(model_dir, adapter, ids, want, backend, device)
    merged_is_peft_s(chat, peft)
    if backend == "gpu":      # four AdamW steps on both backends (float32): the same tensors
        trained = []
        for runtime in ("numpy", "gpu"):
            model = run(ChatModel.load(model_dir, adapter, backend=runtime, device=device))
            examples = random_examples(8, model.checkpoint.config.vocab_size, seed=5)
            run(model.fit(examples, compared_run(lr=5e-3, max_grad_norm=0.5)))
            trained.append({n: np.asarray(v, np.float64)
                            for n, (_, v) in run(model.runtime.trainable_values()).items()})
        assert "lm_head.lora_B.bias" in trained[0] and "lm_head.base_layer.bias" in trained[0]
        for name, ref in trained[0].items():
            assert np.linalg.norm(trained[1][name] - ref) <= 1e-3 * np.linalg.norm(ref), name
    em.check_switch_to_full_keeps_outputs(chat, ids)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_lora_biases_on_layers_without_a_bias_run_but_do_not_merge(tmp_path, device, backend, capsys,
                                                                    monkeypatch):
    """On a Qwen2's o_proj and MLP (no bias) PEFT trains lora_B's biases and warns that they
    cannot merge: ours gives PEFT's logits, and the merged model, its exports and the switch to
    full fine-tuning (a hybrid run's, before its first step) are refused by name before
    anything is written, as merge_and_unload refuses them; the export command refuses them
    before any weight loads."""
    from py_engine.cli import main

    model_dir, adapter, peft = qwen2_adapter(tmp_path, ["q_proj", "o_proj", "down_proj"], seed=7)
    ids = np.random.default_rng().integers(0, 90, 8).tolist()
    with torch.no_grad():
        want = peft(torch.tensor([ids])).logits[0].double().numpy()
    chat = run(ChatModel.load(model_dir, adapter, backend=backend, device=device))
    got = np.asarray(run(chat.decoder().prefill(ids)), np.float64)
    assert em.relative_error(got, want[-1]) <= 1e-5
    with pytest.raises(RuntimeError, match="base layer has no bias"):
        peft.merge_and_unload()
    for refused, what in ((lambda: run(MergedModel.of(chat)), "the merged model"),
                          (lambda: run(chat.runtime.to_full()), "the switch to full fine-tuning")):
        with pytest.raises(ValueError) as caught:
            refused()
        assert str(caught.value).startswith(f"{what} adds each lora_B bias (lora_bias) to its "
                                            "layer's bias, and model.layers.0.self_attn.o_proj")
    assert not chat.runtime.model.full          # the adapter is as it was
    assert em.relative_error(np.asarray(run(chat.decoder().prefill(ids)), np.float64), want[-1]) <= 1e-5
    examples = random_examples(6, chat.checkpoint.config.vocab_size, seed=4)
    with pytest.raises(ValueError, match="the switch to full fine-tuning adds each lora_B bias"):
        run(chat.trainer(examples, CausalTrainConfig(mode="hybrid")))   # a hybrid run: before any step
    assert not chat.history
    if backend == "numpy":
        import py_engine.export.merged as merged_module

        def loaded(*_):
            raise AssertionError("the export loaded the model before refusing its adapter")

        monkeypatch.setattr(merged_module, "load_merged", loaded)
        for form in ("merged", "gguf"):
            code = main(["export", "--model", str(model_dir), "--adapter", str(adapter),
                         "--format", form, "--out", str(tmp_path / form)])
            assert code != 0 and not (tmp_path / form).exists()
            assert ("model.layers.0.mlp.down_proj, model.layers.1.self_attn.o_proj and 1 more have "
                    "none (PEFT's merge refuses it too)") in capsys.readouterr().err


def test_what_cannot_hold_lora_b_biases_refuses_them_by_name(tmp_path, capsys):
    """llama.cpp's LoRA adapters hold lora_a and lora_b only: the GGUF adapter export refuses
    lora_B's biases (the merged GGUF adds them to the layers' biases). As PEFT does, lora_bias
    is refused with DoRA, with an init other than true or false, and on an embedding; on a
    Llama's output layer it trains, and no merge can hold it. A state trained without them is
    not continued with them. `py-engine train --lora-bias` sets it."""
    from py_engine.cli import build_parser, lora_options, main
    from py_engine.models.bert import BertClassifier
    from py_engine.models.checkpoint import Checkpoint
    from py_engine.models.llama import LlamaModel

    model_dir, adapter, _ = qwen2_adapter(tmp_path, QKV, seed=4)
    code = main(["export", "--model", str(model_dir), "--adapter", str(adapter), "--format",
                 "gguf-lora", "--out", str(tmp_path / "out")])
    assert code != 0 and not (tmp_path / "out").exists()
    assert "an adapter with lora_B biases (lora_bias) cannot be a llama.cpp LoRA adapter" in \
        capsys.readouterr().err

    with pytest.raises(LoraConfigError, match=r"lora_bias \(a bias on lora_B\) with DoRA"):
        LoraConfig(lora_bias=True, use_dora=True)
    with pytest.raises(LoraConfigError, match="takes init_lora_weights true or false"):
        LoraConfig(lora_bias=True, init_lora_weights="gaussian")
    with pytest.raises(LoraConfigError, match="lora_bias must be true or false"):
        LoraConfig(lora_bias="yes")
    for wrong in (dict(use_dora=True), dict(init_lora_weights="gaussian")):   # PEFT's refusals
        with pytest.raises(ValueError, match="lora_bias=True"):
            PeftLoraConfig(lora_bias=True, **wrong)
    bert = Checkpoint.load(po.tiny_bert_dir(tmp_path / "bert", seed=1)).config
    with pytest.raises(LoraConfigError, match=r"on bert.embeddings.word_embeddings \(the token "
                                              "embedding of this BERT model\): PEFT refuses it"):
        BertClassifier(bert, LoraConfig(target_modules=["word_embeddings", "query"], lora_bias=True), 3)
    llama = DecoderCheckpoint.load(tiny_chat_dir(tmp_path, family="llama")).config
    with pytest.raises(LoraConfigError, match="on model.embed_tokens"):
        LlamaModel(llama, LoraConfig(target_modules=["embed_tokens", "q_proj"], lora_bias=True,
                                     task_type="CAUSAL_LM"))
    model = LlamaModel(llama, LoraConfig(target_modules=["lm_head", "q_proj"], lora_bias=True,
                                         task_type="CAUSAL_LM"))      # a head without a bias
    assert model.trainable["lm_head.lora_B.bias"] == (llama.vocab_size,)
    assert model.unmergeable() == ["model.layers.0.self_attn.q_proj",
                                   "model.layers.1.self_attn.q_proj", "lm_head"]

    model = type("M", (), {"lora": LoraConfig(lora_bias=True)})()
    assert adapter_differences(model, dict(LoraConfig().to_peft_dict())) == ["lora_bias"]
    assert adapter_differences(model, dict(LoraConfig(lora_bias=True).to_peft_dict())) == []

    args = build_parser().parse_args(["train", "--model", str(model_dir), "--data", "x.jsonl",
                                      "--out", "out", "--lora-bias"])
    assert lora_options(args, 2, ["q_proj"]).lora_bias is True
    args = build_parser().parse_args(["train", "--model", str(model_dir), "--data", "x.jsonl",
                                      "--out", "out", "--r", "4"])
    assert lora_options(args, 2, ["q_proj"]).lora_bias is False
