"""The merged export: a checkpoint with its LoRA adapter folded in, written as a Hugging Face
directory, loads in transformers (LlamaForCausalLM, Qwen2ForCausalLM,
BertForSequenceClassification) and gives our model's outputs."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertForSequenceClassification
from transformers import BertTokenizerFast

import export_models as em
from conftest import run
from py_engine.export.merged import ExportError, MergedModel, load_merged, save_merged
from py_engine.formats.finite import NonFiniteWeightsError
from py_engine.formats.output_dir import MARKER
from py_engine.train.chat import ChatModel

PROMPT = "Hello! How are you today? The capital of France is Paris."
TEXTS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor"]
# float32 end to end on both sides; the merged weights round W + s*B.A once more than the
# unmerged forward does.
LOGITS_BOUND = 1e-5


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_merged_decoder_gives_our_logits_in_transformers(tmp_path, family):
    model, adapter = em.chat_with_adapter(tmp_path, family)
    groups = []
    out = save_merged(load_merged(model, adapter), tmp_path / "merged", progress=groups.append)
    assert groups == ["merged: embeddings", "merged: layer 1/2", "merged: layer 2/2",
                      "merged: head"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            MARKER} <= {p.name for p in out.iterdir()}
    ids = AutoTokenizer.from_pretrained(out)(PROMPT)["input_ids"]
    ours = em.our_decoder_logits(model, adapter, ids)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].double().numpy()
    base = AutoModelForCausalLM.from_pretrained(model).eval()
    with torch.no_grad():
        unadapted = base(torch.tensor([ids])).logits[0].double().numpy()
    assert em.relative_error(unadapted, ours) > 1e-2        # the adapter changes the outputs
    assert em.relative_error(theirs, ours) <= LOGITS_BOUND


@pytest.mark.parametrize("targets, lora", [(("query", "value"), None),
                                           (("query", "value", "dense"), None),
                                           (("value",), {"bias": "all"})])
def test_merged_classifier_gives_our_probabilities_in_transformers(tmp_path, targets, lora):
    """("dense" wraps the pooler too, whose merged weight is written as well; with bias="all"
    every bias the adapter trained replaces the checkpoint's.)"""
    model, adapter = em.classifier_with_adapter(tmp_path, targets=targets, lora=lora)
    out = save_merged(load_merged(model, adapter), tmp_path / "merged")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"}
    enc = BertTokenizerFast.from_pretrained(str(out))(TEXTS, padding=True, return_tensors="pt")
    hf = BertForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = torch.softmax(hf(**enc).logits, -1).numpy()
    ours = em.our_probabilities(model, adapter, TEXTS)
    assert np.abs(theirs - ours).max() <= 1e-6, (theirs, ours)


def test_merged_on_the_gpu_equals_numpy(tmp_path, device):
    model, adapter = em.chat_with_adapter(tmp_path, "llama")
    gpu = run(MergedModel.of(run(ChatModel.load(model, adapter, backend="gpu", device=device))))
    host = load_merged(model, adapter)
    assert gpu.names() == host.names()
    for name in host.names():
        want = np.asarray(host.floats(name), np.float64)
        got = np.asarray(gpu.floats(name), np.float64)
        assert np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(want), name


def test_decoder_without_adapter_is_the_checkpoint(tmp_path):
    model, _ = em.chat_with_adapter(tmp_path, "llama")
    merged = load_merged(model)
    assert merged.replaced == {}
    out = save_merged(merged, tmp_path / "copy")
    hf_a = AutoModelForCausalLM.from_pretrained(out).state_dict()
    hf_b = AutoModelForCausalLM.from_pretrained(model).state_dict()
    assert all(torch.equal(hf_a[k], hf_b[k]) for k in hf_b)


def test_mean_pooled_classifier_is_refused(tmp_path):
    model, adapter = em.classifier_with_adapter(tmp_path)
    (adapter / "head_config.json").write_text('{"pooling": "mean"}')
    with pytest.raises(ExportError, match="--format onnx"):
        save_merged(load_merged(model, adapter), tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_non_finite_weights_are_never_written(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "llama")
    merged = load_merged(model, adapter)
    name = "model.layers.1.mlp.down_proj.weight"
    shape, data = merged.replaced[name]
    data = np.array(data)
    data[5] = np.inf
    merged.replaced[name] = (shape, data)
    (tmp_path / "merged").mkdir()
    with pytest.raises(NonFiniteWeightsError, match="down_proj"):
        save_merged(merged, tmp_path / "merged")
    assert list((tmp_path / "merged").iterdir()) == []


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_merged_weights_of_an_adapter_with_rank_and_alpha_patterns_are_peft_s(tmp_path, device, backend):
    """Modules with a rank and alpha of their own (rank_pattern, alpha_pattern, rsLoRA): the
    weights the merged export folds, on either backend, are PEFT's merge_and_unload's."""
    check_merged_weights_are_peft_s(tmp_path, device, backend,
                                    rank_pattern={"k_proj": 2, r"layers\.1\.mlp\.down_proj": 6},
                                    alpha_pattern={"^model.layers.0.self_attn.o_proj": 20,
                                                   "gate_proj": 3},
                                    use_rslora=True)


def check_merged_weights_are_peft_s(tmp_path, device, backend, **lora):
    """A tiny Llama and a PEFT adapter on its projections (`lora`: PEFT's options): the weights
    our runtime merges are merge_and_unload's. Returns (model_dir, adapter_dir)."""
    from transformers import LlamaForCausalLM

    from tiny_chat import tiny_chat_dir

    model = tiny_chat_dir(tmp_path, family="llama", **em.CHAT_SIZES)
    adapter, merged_hf = em.merged_with_adapter(LlamaForCausalLM, model, tmp_path, em.PROJECTIONS,
                                                **lora)
    chat = run(ChatModel.load(model, adapter, backend=backend, device=device))
    weights = run(chat.runtime.merged_weights())
    want = dict(merged_hf.named_parameters())
    assert len(weights) == 2 * len(em.PROJECTIONS)
    for name, (shape, values) in weights.items():
        ref = want[name].detach().double().numpy()
        got = np.asarray(values, np.float64).reshape(shape)
        assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max(), name
    return model, adapter
