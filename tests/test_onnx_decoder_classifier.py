"""ONNX export of a decoder read as a sequence classifier (export/onnx_decoder.py), run by ONNX
Runtime: for every decoder family (Qwen2, Llama, Mistral's window, Gemma, Qwen3's QK-norm,
Gemma 2's soft caps and Gemma 3's sliding layers, SmolLM3's NoPE layer, Phi-3's LongRoPE past
its switch, GPT-2, Phi-2's partial rotary) the graph of the merged adapter gives the
probabilities of transformers' *ForSequenceClassification + PEFT with that adapter, over texts
padded on the right, one long enough to pass the windows and LongRoPE's switch; mean pooling
(which transformers' decoder classifiers cannot express) gives ours; int8; the command line."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoConfig

import peft_oracle as po
from conftest import run
from py_engine.export.merged import MergedModel, load_merged
from py_engine.export.onnx_export import save_onnx
from py_engine.train.classifier import TextClassifier

LABELS = ["neg", "neutral", "pos"]
TEXTS = ["the film was great", "an awful plot and a worse ending", "it",
         "the film was great but the plot was an awful and worse ending, really"]
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGETS = {"phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
           "gpt2": ("c_attn", "c_proj", "c_fc"),
           "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")}
FAMILIES = ["qwen2", "llama", "mistral", "gemma", "qwen3", "gemma2", "gemma3", "smollm3", "phi3",
            "gpt2", "phi"]
# float32 on our side (transformers in float64): measured 3e-8 to 6e-8 over these families.
F32_BOUND = 1e-6


def model_dir(tmp_path, family):
    if family == "gpt2":
        from gpt2_checkpoints import tiny_dialogpt_dir

        return tiny_dialogpt_dir(tmp_path / "gpt2")
    if family == "phi":
        from phi_checkpoints import tiny_phi_dir

        return tiny_phi_dir(tmp_path / "phi")
    from tiny_chat import tiny_chat_dir

    return tiny_chat_dir(tmp_path, family=family)


def encoded(directory, texts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None:     # GPT-2's, Phi-2's: the end of text
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def onnx_probabilities(path, ids, mask):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    return session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_runtime_gives_the_probabilities_of_transformers_and_peft(tmp_path, family):
    directory = model_dir(tmp_path, family)
    peft = po.peft_model(directory, len(LABELS), target_modules=TARGETS.get(family, LLAMA_LINEARS),
                         seed=5)
    if peft.config.pad_token_id is None:        # transformers needs one to batch
        peft.config.pad_token_id = peft.config.eos_token_id
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    out = save_onnx(load_merged(directory, adapter), tmp_path / "onnx")
    assert json.loads((out / "labels.json").read_text()) == LABELS
    config = AutoConfig.from_pretrained(out)          # what ONNX Runtime's wrappers read
    assert config.id2label == dict(enumerate(LABELS)) and config.pad_token_id is not None
    ids, mask = encoded(out, TEXTS)     # the tokenizer the export carries
    assert mask[:, -1].tolist() == [0, 0, 0, 1] and 16 < ids.shape[1] < 64
    # transformers' eager attention in float64 gives NaN where a window or a soft cap meets the
    # padding (Mistral, Gemma 2 and 3): their oracle runs in float32
    windowed = family in ("mistral", "gemma2", "gemma3")
    dtype = torch.float32 if windowed else torch.float64
    with torch.no_grad():
        logits = peft.to(dtype).eval()(input_ids=torch.as_tensor(ids),
                                       attention_mask=torch.as_tensor(mask)).logits
    theirs = torch.softmax(logits, -1).double().numpy()
    ours = onnx_probabilities(out / "model.onnx", ids, mask)
    assert np.abs(ours - theirs).max() <= (1e-5 if windowed else F32_BOUND), family


def test_mean_pooling_int8_and_the_command_line(tmp_path, capsys):
    """A mean-pooled decoder classifier (no transformers class holds it) gives our
    probabilities; int8 stays near f32; `py-engine export --format onnx` takes a SEQ_CLS
    adapter, and mean pooling's merged refusal points to it."""
    from py_engine.cli import main

    directory = model_dir(tmp_path, "qwen2")
    clf = run(TextClassifier.create(directory, LABELS, pooling="mean", seed=3, backend="numpy"))
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    merged = run(MergedModel.of(clf))
    ids, mask = encoded(directory, TEXTS)
    f32 = onnx_probabilities(save_onnx(merged, tmp_path / "f32") / "model.onnx", ids, mask)
    assert np.abs(f32 - ours).max() <= F32_BOUND
    int8 = onnx_probabilities(save_onnx(merged, tmp_path / "int8", quant="int8") / "model.onnx",
                              ids, mask)
    assert np.abs(int8 - f32).max() <= 0.05

    peft = po.peft_model(directory, len(LABELS), target_modules=("q_proj", "v_proj"), seed=2)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    (adapter / "head_config.json").write_text(json.dumps({"pooling": "mean"}))
    capsys.readouterr()
    assert main(["export", "--format", "merged", "--model", str(directory), "--adapter",
                 str(adapter), "--out", str(tmp_path / "merged")]) == 2
    assert "export it with --format onnx" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "--model", str(directory), "--adapter",
                 str(adapter), "--out", str(tmp_path / "cli"), "--quant", "int8"]) == 0
    assert "onnx: weights quantized to int8" in capsys.readouterr().err
    clf = run(TextClassifier.load(directory, adapter, backend="numpy"))
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    assert np.abs(onnx_probabilities(tmp_path / "cli" / "model.onnx", ids, mask) - ours).max() <= 0.05
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        ".py_engine-output", "config.json", "labels.json", "model.onnx", "tokenizer.json",
        "tokenizer_config.json"]
