"""PEFT's init_lora_weights "pissa" and "olora" (train/base_init.py): the adapter's first values
are taken out of the base weights, which the model then holds less them, as PEFT does whenever
it makes or loads such an adapter. Held to PEFT itself: a fresh adapter's first values and the
residual weights, an adapter trained here read by PEFT, PEFT's read here (both backends), the
merged model, the switch to full fine-tuning; and what is refused by name."""

import sys

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import export_models as em
import peft_oracle as po
from conftest import run
from gpt2_checkpoints import tiny_dialogpt_dir
from py_engine.data.classification import Example
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.base_init import residual_base
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import CausalTrainConfig, TrainConfig
from test_adapter_roundtrip import LABELS, TEXTS, our_probabilities, peft_probabilities
from test_chat_model import random_examples
from test_lora_b_bias import merged_is_peft_s
from tiny_chat import tiny_chat_dir

# per-module ranks and scales, rsLoRA: each module's own s in s B0.A0
PATTERNS = dict(r=4, lora_alpha=8, rank_pattern={"v_proj": 2, "c_attn": 3},
                alpha_pattern={"q_proj": 3}, use_rslora=True)


def products_and_residuals(peft, prefix=""):
    """{weight name: (s B.A, the base weight as PEFT holds it)} of each LoRA-wrapped linear of
    a PEFT model, in [out, in] (GPT-2's Conv1D transposed), float64."""
    out = {}
    for name, module in peft.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            s = module.scaling["default"]
            ba = s * (module.lora_B["default"].weight @ module.lora_A["default"].weight)
            w = module.get_base_layer().weight
            w = w.T if getattr(module, "fan_in_fan_out", False) else w
            key = name.split("base_model.model.", 1)[-1][len(prefix):] + ".weight"
            out[key] = (ba.detach().double().numpy(), w.detach().double().numpy())
    return out


def check_first_values(model, values, checkpoint, peft, prefix=""):
    """Our fresh adapter's s B0.A0 and residual weights are PEFT's (1e-4 of each's scale: PEFT
    decomposes in float32, we in float64), and add up to the base weight."""
    theirs = products_and_residuals(peft, prefix)
    merges = model.merge_names()
    assert sorted(m.weight for m in merges) == sorted(theirs)
    for m in merges:
        shape_a, a = values[m.lora_a]
        shape_b, b = values[m.lora_b]
        ba = m.scaling * (np.asarray(b, np.float64).reshape(shape_b) @ np.asarray(a, np.float64).reshape(shape_a))
        residual = np.asarray(checkpoint.floats(m.weight), np.float64).reshape(ba.shape)
        want_ba, want_residual = theirs[m.weight]
        assert em.relative_error(ba, want_ba) <= 1e-4, m.weight
        assert np.abs(residual - want_residual).max() <= 1e-4 * np.abs(want_residual).max(), m.weight
        base = np.asarray(checkpoint.base.floats(m.weight), np.float64).reshape(ba.shape)
        assert em.relative_error(residual + ba, base) <= 1e-6


def chat_rows(chat, ids):
    """Next-token logits after each of `ids` (the prompt, then one step at a time), [T, V]."""
    decoder = chat.decoder()
    rows = [run(decoder.prefill(ids[:1]))] + [run(decoder.step(t)) for t in ids[1:]]
    return np.array([np.asarray(r, np.float64) for r in rows])


@pytest.mark.parametrize("init", ["pissa", "olora"])
@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_peft_s_adapter_gives_its_logits_merged_tensors_and_switch(tmp_path, device, backend, init):
    """PEFT's PiSSA and OLoRA adapters (per-module ranks and scales, rsLoRA) on a tiny Qwen2,
    trained away from their start and saved as they are: our next-token logits at every step
    are PEFT's, on both backends (the residual weights uploaded as the base); the merged
    model's every tensor is merge_and_unload's; the switch to full fine-tuning keeps them. On
    the GPU an f16 base holds the residual too."""
    model_dir = tiny_chat_dir(tmp_path / "qwen2", family="qwen2", seed=3)
    torch.manual_seed(4)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM, target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=init, **PATTERNS))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn_like(p))          # "trained"
    peft.save_pretrained(tmp_path / "adapter")
    ids = np.random.default_rng().integers(0, 90, 8).tolist()
    with torch.no_grad():
        want = peft(torch.tensor([ids])).logits[0].double().numpy()
    chat = run(ChatModel.load(model_dir, tmp_path / "adapter", backend=backend, device=device))
    assert em.relative_error(chat_rows(chat, ids), want) <= 1e-5
    if backend == "gpu":        # the residual weights as f16 (their rounding: 1e-2)
        half = run(ChatModel.load(model_dir, tmp_path / "adapter", backend=backend, device=device,
                                  base_dtype="f16"))
        assert em.relative_error(chat_rows(half, ids), want) <= 1e-2
    plain = run(ChatModel.load(model_dir, backend="numpy"))
    plain_rows = chat_rows(plain, ids)
    assert em.relative_error(plain_rows, want) > 1e-3      # the adapter (and residual) matter
    merged_is_peft_s(chat, peft, bound=1e-4)    # (PEFT's residual: torch's float32 decomposition)
    em.check_switch_to_full_keeps_outputs(chat, ids)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_fresh_classifier_adapter_starts_as_peft_s_and_peft_reads_it_trained(tmp_path, init):
    """A new BERT classifier adapter: its s B0.A0 and the residual weights are PEFT's
    get_peft_model's (the sum the base weight); trained here and saved, PEFT reads it (its
    config's init_lora_weights rebuilds the residual) and gives our probabilities."""
    model_dir = po.tiny_bert_dir(tmp_path / "bert", seed=9)
    targets = ["query", "value", "dense"]
    options = dict(r=4, lora_alpha=6, rank_pattern={"value": 2}, init_lora_weights=init)
    clf = run(TextClassifier.create(model_dir, LABELS, seed=2, lora=LoraConfig(
        target_modules=targets, **options)))
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(LABELS))
    peft = get_peft_model(base, PeftLoraConfig(task_type=TaskType.SEQ_CLS, target_modules=targets,
                                               **options))
    values = run(clf.runtime.trainable_values())
    check_first_values(clf.model, values, clf.checkpoint, peft, prefix="bert.")
    examples = [Example(t, label) for t, label in zip(TEXTS * 4, LABELS * 8)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    saved = run(clf.save(tmp_path / "trained"))
    ours = our_probabilities(clf)
    assert np.abs(peft_probabilities(model_dir, saved, TEXTS) - ours).max() <= 1e-5
    again = run(TextClassifier.load(model_dir, saved))
    assert np.abs(our_probabilities(again) - ours).max() <= 1e-6


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_fresh_pissa_chat_adapter_on_conv1d_trains_and_peft_reads_it(tmp_path, device, backend):
    """PiSSA on GPT-2's Conv1D c_attn (PEFT decomposes it transposed, as [out, in]): the first
    values are PEFT's; trained here on each backend and saved, PEFT's logits of it are ours."""
    model_dir = tiny_dialogpt_dir(tmp_path / "gpt2", seed=5)
    lora = LoraConfig(target_modules=["c_attn", "c_fc"], init_lora_weights="pissa",
                      task_type="CAUSAL_LM", **PATTERNS)
    chat = run(ChatModel.create(model_dir, lora=lora, backend=backend, device=device, seed=1))
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM, target_modules=["c_attn", "c_fc"], init_lora_weights="pissa",
        fan_in_fan_out=True, **PATTERNS))
    check_first_values(chat.model, run(chat.runtime.trainable_values()), chat.checkpoint, peft)
    examples = random_examples(8, chat.checkpoint.config.vocab_size, seed=6)
    run(chat.fit(examples, CausalTrainConfig(epochs=2, lr=1e-2, batch_size=4)))
    saved = run(chat.save(tmp_path / "trained"))
    from peft import PeftModel

    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), saved).eval()
    ids = np.random.default_rng().integers(0, 90, 7).tolist()
    with torch.no_grad():
        want = theirs(torch.tensor([ids])).logits[0].double().numpy()
    assert em.relative_error(chat_rows(chat, ids), want) <= 1e-5
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        assert em.relative_error(plain(torch.tensor([ids])).logits[0].double().numpy(), want) > 1e-3


def test_what_cannot_be_rebuilt_is_refused_by_name(tmp_path, monkeypatch, capsys):
    """PiSSA over a random subspace (no load rebuilds it, PEFT's neither), with DoRA, OLoRA on
    Conv1D (PEFT gives lora_A the wrong shape), a LoRA on an embedding, a rank above a layer's
    smaller side, the browser (no NumPy), an adapter with another base taken by a model made
    without it (and the other way), and llama.cpp's adapter export (applied to the base as it
    is): each refused by name, before anything is written."""
    from py_engine.cli import main
    from py_engine.models.decoders import decoder_model
    from py_engine.models.checkpoint import DecoderCheckpoint

    with pytest.raises(LoraConfigError, match="'pissa_niter_4': PiSSA over a random subspace"):
        LoraConfig(init_lora_weights="pissa_niter_4")
    with pytest.raises(LoraConfigError, match="init_lora_weights 'OLoRA' with DoRA"):
        LoraConfig(init_lora_weights="OLoRA", use_dora=True)
    gpt2 = tiny_dialogpt_dir(tmp_path / "gpt2", seed=5)
    with pytest.raises(ValueError, match="'olora' on Conv1D layers"):
        run(ChatModel.create(gpt2, lora=LoraConfig(target_modules=["c_attn"], init_lora_weights="olora",
                                                   task_type="CAUSAL_LM")))
    qwen = tiny_chat_dir(tmp_path / "qwen2", family="qwen2", seed=3)
    for options, words in ((dict(target_modules=["q_proj", "embed_tokens"]),
                            "model.embed_tokens is an embedding or output layer under LoRA"),
                           (dict(target_modules=["k_proj"], r=40), "r 40 is more than "
                            "model.layers.0.self_attn.k_proj.weight's 16 singular values")):
        with pytest.raises(ValueError, match=words):
            run(ChatModel.create(qwen, lora=LoraConfig(init_lora_weights="pissa", task_type="CAUSAL_LM",
                                                       **options)))
    checkpoint = DecoderCheckpoint.load(qwen)
    model = decoder_model(checkpoint.config, LoraConfig(init_lora_weights="pissa", task_type="CAUSAL_LM",
                                                        target_modules=["q_proj"]))
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ValueError, match="decomposes the base weights with NumPy, which this "
                                         "runtime \\(the browser's\\) has not"):
        residual_base(model, checkpoint)
    monkeypatch.undo()

    pissa = run(ChatModel.create(qwen, lora=LoraConfig(init_lora_weights="pissa", r=4,
                                                       task_type="CAUSAL_LM", target_modules=["q_proj"])))
    pissa_files = run(pissa.adapter_files())
    plain = run(ChatModel.create(qwen, lora=LoraConfig(r=4, task_type="CAUSAL_LM", target_modules=["q_proj"])))
    for model, files in ((plain, pissa_files), (pissa, run(plain.adapter_files()))):
        with pytest.raises(ValueError, match="init_lora_weights 'pissa' changes the base weights the "
                                             "model holds"):
            run(model.load_adapter_files(files))
    run(pissa.save(tmp_path / "pissa"))
    code = main(["export", "--model", str(qwen), "--adapter", str(tmp_path / "pissa"), "--format",
                 "gguf-lora", "--out", str(tmp_path / "out")])
    assert code != 0 and not (tmp_path / "out").exists()
    assert "was trained with init_lora_weights 'pissa', over base weights less its first values" \
        in capsys.readouterr().err


def test_a_t5_pissa_adapter_gives_peft_s_loss(tmp_path):
    """T5 (both stacks' q and v, and wo): PEFT's PiSSA adapter, trained away from its start,
    gives here the loss PEFT gives (1e-5), not the base's."""
    from py_engine.train.seq2seq import Seq2SeqModel
    from t5_checkpoints import tiny_t5
    from test_t5_reference import a_batch

    torch.manual_seed(1)
    peft = get_peft_model(tiny_t5(tmp_path / "model").float(), PeftLoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, target_modules=["q", "v", "wo"],
        init_lora_weights="pissa"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn_like(p))
    peft.save_pretrained(tmp_path / "adapter")
    ids, mask, labels = a_batch()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    labels=torch.as_tensor(labels)).loss.item()
    pairs = [type("Pair", (), {"ids": [int(t) for t in ids[i][mask[i] == 1]],
                               "labels": [int(y) for y in labels[i] if y != -100]})()
             for i in range(len(ids))]

    def loss(adapter):
        model = run(Seq2SeqModel.load(tmp_path / "model", None, adapter))
        batch = model.runtime.task.batch(pairs, list(range(len(pairs))), 1, 512)
        return run(model.runtime.evaluate(batch))["loss"]

    assert abs(loss(tmp_path / "adapter") - want) <= 1e-5 * want
    assert abs(loss(None) - want) > 1e-3 * want
