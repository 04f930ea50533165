"""Tiny checkpoints with PEFT adapters for the export tests, and our own model's outputs to
compare the exports with.

    model, adapter = chat_with_adapter(tmp_path, "llama")        # LoRA on every projection
    model, adapter = classifier_with_adapter(tmp_path)           # tiny BERT + SEQ_CLS adapter
    logits = our_decoder_logits(model, adapter, ids)             # [T, V] float64
    probs = our_probabilities(model, adapter, texts)             # [N, labels]
"""

import json

import numpy as np
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

import peft_oracle as po
from conftest import run
from tiny_chat import tiny_chat_dir
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PHI3_PROJECTIONS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]      # fused
LABELS = ["neg", "neutral", "pos"]
# Rows of 32 and 64 inputs: every linear splits into GGUF's 32-value quantization blocks.
CHAT_SIZES = dict(intermediate_size=64)


def random_b_adapter(model, adapter_dir, task_type, targets, scale=0.2, **lora):
    """PEFT's model of `model` (a transformers model) with a LoRA adapter on `targets` (r 4,
    alpha 8 unless `lora` says otherwise), lora_B drawn from torch's generator times `scale`
    (PEFT starts it at zero, which would test nothing) and DoRA's magnitudes, if any, moved
    off their initial norms by as much, as are the biases that train (bias "lora_only" or
    "all"), saved to adapter_dir."""
    peft = get_peft_model(model, LoraConfig(task_type=task_type, target_modules=targets,
                                            **dict(dict(r=4, lora_alpha=8), **lora)))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(scale * torch.randn_like(p))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + scale * torch.randn_like(p))
            elif name.endswith(".bias") and p.requires_grad and "modules_to_save" not in name:
                p.add_(scale * torch.randn_like(p))
    peft.save_pretrained(adapter_dir)
    return peft


def merged_with_adapter(model_class, model_dir, path, targets, seed=0,
                        task_type=TaskType.CAUSAL_LM, **lora):
    """(adapter_dir, PEFT's merged model in float32): random_b_adapter on the checkpoint at
    model_dir, saved to path/adapter."""
    torch.manual_seed(seed + 1)
    peft = random_b_adapter(model_class.from_pretrained(model_dir), path / "adapter", task_type,
                            targets, **lora)
    return path / "adapter", peft.merge_and_unload().eval()


def chat_with_adapter(path, family="llama", seed=0, r=4, lora_alpha=8, use_rslora=False, **lora):
    """(model_dir, adapter_dir): a tiny chat checkpoint and a PEFT adapter on all its
    projections (seven; Phi-3's four) with lora_B drawn at random (`lora`: PEFT's other
    LoraConfig options)."""
    model_dir = tiny_chat_dir(path, family=family, seed=seed, **CHAT_SIZES)
    adapter = path / f"{family}-adapter"
    torch.manual_seed(seed + 1)
    random_b_adapter(AutoModelForCausalLM.from_pretrained(model_dir), adapter, TaskType.CAUSAL_LM, PHI3_PROJECTIONS if family == "phi3" else PROJECTIONS,
                     r=r, lora_alpha=lora_alpha, use_rslora=use_rslora, **lora)
    return model_dir, adapter


def classifier_with_adapter(path, seed=0, targets=("query", "value"), lora=None, **bert_options):
    """(model_dir, adapter_dir): a tiny BERT checkpoint (with a pooler) and a PEFT SEQ_CLS
    adapter on `targets` (PEFT's other options in `lora`) with random lora_B and head,
    labels.json beside it."""
    model_dir = po.tiny_bert_dir(path / "bert", seed=seed, **bert_options)
    peft = po.peft_model(model_dir, len(LABELS), seed=seed + 1, dtype=torch.float32,
                         target_modules=targets, **(lora or {}))
    adapter = po.save_adapter(peft, path / "bert-adapter", labels=LABELS)
    return model_dir, adapter


def our_decoder_logits(model_dir, adapter_dir, ids):
    """Our decoder's next-token logits after each of `ids` (NumPy backend), [T, V] float64."""
    chat = run(ChatModel.load(model_dir, adapter_dir, backend="numpy"))
    decoder = chat.decoder()
    rows = [run(decoder.prefill(ids[:1]))]
    rows += [run(decoder.step(token)) for token in ids[1:]]
    return np.array([np.asarray(r, np.float64) for r in rows])


def our_probabilities(model_dir, adapter_dir, texts):
    """Our classifier's probabilities (NumPy backend), [N, labels] in LABELS order."""
    clf = run(TextClassifier.load(model_dir, adapter_dir, backend="numpy"))
    return np.array([[p[label] for label in clf.labels] for p in run(clf.predict(texts))])


def labels_of(adapter_dir):
    return json.loads((adapter_dir / "labels.json").read_text())


def relative_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def check_logits_at_every_step(model_dir, adapter, ids, want, backend, device=None):
    """Our next-token logits after each of `ids` (the first as the prompt, then one decoding
    step at a time) are `want` [T, V] on `backend`; on NumPy the standalone decoder, given the
    checkpoint's and the adapter's tensors, gives them too. Returns the ChatModel."""
    from py_engine.formats.peft_adapter import load_adapter
    from py_engine.generate import NumpyDecoder
    from py_engine.models.checkpoint import DecoderCheckpoint
    from py_engine.models.lora_config import LoraConfig as OurLoraConfig

    def rows_of(decoder):
        rows = [run(decoder.prefill(ids[:1]))] + [run(decoder.step(t)) for t in ids[1:]]
        return np.array([np.asarray(r, np.float64) for r in rows])

    chat = run(ChatModel.load(model_dir, adapter, backend=backend, device=device))
    assert relative_error(rows_of(chat.decoder()), want) <= 1e-5
    if backend == "numpy":
        _, tensors, _ = load_adapter(adapter)
        checkpoint = DecoderCheckpoint.load(model_dir)
        params = {n: np.frombuffer(checkpoint.floats(n), np.float32).reshape(checkpoint.shape(n))
                  for n in checkpoint.names()}
        params.update({n: np.asarray(v, np.float64).reshape(s) for n, (s, v) in tensors.items()})
        decoder = NumpyDecoder.from_params(checkpoint.config, params,
                                           lora_scaling=OurLoraConfig.from_file(adapter).scaling)
        assert relative_error(rows_of(decoder), want) <= 1e-5
    return chat


def check_switch_to_full_keeps_outputs(chat, ids):
    """The hybrid switch to full fine-tuning (the adapter folded into the weights) leaves the
    chat model's logits of `ids` as they were."""
    before = np.asarray(run(chat.decoder().prefill(ids)), np.float64)
    run(chat.runtime.to_full())
    assert chat.runtime.model.full
    after = np.asarray(run(chat.runtime.decoder().prefill(ids)), np.float64)
    assert relative_error(after, before) <= 1e-5
