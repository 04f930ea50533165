"""DoRA (use_dora) adapters against PEFT: PEFT's own layer with LoRA dropout, PEFT's adapters
read here (classifier probabilities, a chat model's logits at every decoding step, merged
weights and the hybrid switch), ours read by PEFT, a fresh adapter's magnitudes, the norms the
GPU keeps for a reply, and what cannot hold DoRA refused by name. The training step's loss and
gradients against PEFT are in the step oracles (test_bert_oracle.py, test_llama_lora_oracle.py,
test_gpt2_lora_oracle.py, test_t5_lora_oracle.py), the GPU's against NumPy in test_bert_gpu.py,
test_gpt2_gpu.py and test_llama_lora_oracle.py, the kernels in test_kernels_dora.py."""

import json

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.tuners.lora import Linear as PeftLoraLinear
from safetensors.torch import load_file

import export_models as em
from conftest import run
from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.models.lora import Linears
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
import peft_oracle as po
from test_adapter_roundtrip import (LABELS, TEXTS, check_round_trip, our_probabilities,
                                    peft_bert_adapter, peft_probabilities)
from test_export_merged import check_merged_weights_are_peft_s


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("tiny") / "model", seed=41)


class FixedDropout(torch.nn.Module):
    """Dropout whose mask is given (ours), so that PEFT's layer drops what we dropped."""

    def __init__(self, multiplier):
        super().__init__()
        self.multiplier = multiplier

    def forward(self, x):
        return x * self.multiplier


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_a_dora_linear_is_peft_s_with_and_without_dropout(p):
    """One DoRA-wrapped linear in training mode: output, input gradient, and the lora_A,
    lora_B and magnitude gradients equal PEFT's lora.Linear (use_dora) through torch autograd,
    its dropout replaced by the mask we drew. With dropout PEFT scales only the dropped
    input's path, which differs from scaling the whole output (checked to differ here)."""
    rng = np.random.default_rng()
    rows, out_f, in_f, r = 7, 6, 5, 3
    w, bias = rng.standard_normal((out_f, in_f)), rng.standard_normal(out_f)
    a, b = rng.standard_normal((r, in_f)), 0.3 * rng.standard_normal((out_f, r))
    x, dy = rng.standard_normal((rows, in_f)), rng.standard_normal((rows, out_f))
    lora = LoraConfig(r=r, lora_alpha=5, lora_dropout=p, target_modules=["lin"], use_dora=True)
    linears = Linears({"lin": (out_f, in_f)}, lora, "test model")
    magnitude = np.linalg.norm(w, axis=1) * rng.uniform(0.5, 1.5, out_f)
    be = NumpyBackend(np.float64)
    for name, value in (("lin.weight", w), ("lin.bias", bias), (linears.lora_a("lin"), a),
                        (linears.lora_b("lin"), b), (linears.magnitude("lin"), magnitude)):
        be.set_param(name, value, value.shape)
    for name in linears.trainable:
        be.add_grad(name)
    be.start_step(seed=5)
    saved = {}
    y = linears.forward(be, "lin", x, saved, train=True)
    dx = linears.backward(be, "lin", dy, saved)
    drop = saved["lin"][1]

    net = torch.nn.Sequential()
    net.add_module("lin", torch.nn.Linear(in_f, out_f).double())
    with torch.no_grad():
        net.lin.weight.copy_(torch.tensor(w))
        net.lin.bias.copy_(torch.tensor(bias))
    peft = get_peft_model(net, PeftLoraConfig(r=r, lora_alpha=5, lora_dropout=p, target_modules=["lin"],
                                              use_dora=True))
    layer = peft.base_model.model.lin
    assert isinstance(layer, PeftLoraLinear)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.tensor(a))
        layer.lora_B["default"].weight.copy_(torch.tensor(b))
        layer.lora_magnitude_vector["default"].weight.copy_(torch.tensor(magnitude))
    if drop is not None:
        layer.lora_dropout["default"] = FixedDropout(torch.tensor(drop.multiplier))
    layer.train()
    xt = torch.tensor(x, requires_grad=True)
    yt = layer(xt)
    yt.backward(torch.tensor(dy))
    rel = em.relative_error
    assert rel(y, yt.detach().numpy()) <= 1e-12
    assert rel(dx, xt.grad.numpy()) <= 1e-12
    for ours, theirs in ((linears.lora_a("lin"), layer.lora_A["default"].weight),
                         (linears.lora_b("lin"), layer.lora_B["default"].weight),
                         (linears.magnitude("lin"), layer.lora_magnitude_vector["default"].weight)):
        assert rel(be.grads[ours], theirs.grad.numpy()) <= 1e-12, ours
    if p:
        scale = magnitude / np.linalg.norm(w + (5 / r) * b @ a, axis=1)
        xd = x * drop.multiplier
        whole = scale * (xd @ w.T + (5 / r) * (xd @ a.T) @ b.T) + bias
        assert rel(y, whole) > 1e-3


def test_a_peft_dora_adapter_round_trips(tmp_path, tiny_dir, device):
    """PEFT's DoRA adapter (on BERT's pooler too): ours gives PEFT's probabilities on both
    backends and merged on the GPU; trained here and saved, it is still DoRA, its magnitudes
    moved, and PEFT reads the same probabilities from it."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 42, use_dora=True,
                                target_modules=["query", "value", "dense"])
    assert any(k.endswith("lora_magnitude_vector")
               for k in load_file(adapter / "adapter_model.safetensors"))
    before, after, saved = check_round_trip(tiny_dir, adapter, tmp_path / "trained", device)
    assert json.loads((saved / "adapter_config.json").read_text())["use_dora"] is True
    magnitudes = [k for k in after if k.endswith("lora_magnitude_vector")]
    assert len(magnitudes) == 11 and all(np.abs(after[k] - before[k]).max() > 1e-4 for k in magnitudes)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_fresh_dora_adapter_starts_where_peft_starts(tmp_path, tiny_dir, device, backend):
    """A new DoRA adapter's magnitudes are its base weights' row norms, as get_peft_model
    draws them, so it starts from the base model; saved untrained, PEFT gives our
    probabilities."""
    lora = LoraConfig(target_modules=["query", "key", "dense"], use_dora=True)
    clf = run(TextClassifier.create(tiny_dir, LABELS, lora=lora, backend=backend, seed=3,
                                    device=device))
    ours = {k: np.asarray(v, np.float64) for k, (_, v) in run(clf.runtime.trainable_values()).items()}
    torch.manual_seed(0)
    from transformers import BertForSequenceClassification

    peft = get_peft_model(BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=3),
                          PeftLoraConfig(task_type="SEQ_CLS", target_modules=["query", "key", "dense"],
                                         use_dora=True))
    theirs = {po.adapter_key(n).removeprefix("base_model.model."): p.detach().double().numpy()
              for n, p in peft.named_parameters() if "lora_magnitude_vector" in n}
    assert theirs and set(theirs) == {k for k in ours if k.endswith("lora_magnitude_vector")}
    for name, want in theirs.items():
        assert em.relative_error(ours[name], want) <= 1e-6, name
    saved = run(clf.save(tmp_path / "fresh"))
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - our_probabilities(clf)).max() <= 1e-5


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_dora_chat_adapter_gives_peft_s_logits_at_every_step(tmp_path, device, backend):
    """PEFT's DoRA adapter on every projection of a tiny Llama: our next-token logits after
    each token (the prompt, then one decoding step at a time, DoRA applied unmerged) are
    PEFT's, and so are the standalone decoder's."""
    from transformers import AutoModelForCausalLM
    from peft import PeftModel

    model_dir, adapter = em.chat_with_adapter(tmp_path, family="llama", seed=3, use_dora=True)
    ids = np.random.default_rng().integers(0, 90, 9).tolist()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    with torch.no_grad():
        want = peft(torch.tensor([ids])).logits[0].double().numpy()
    em.check_logits_at_every_step(model_dir, adapter, ids, want, backend, device)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_merged_weights_of_a_dora_adapter_are_peft_s(tmp_path, device, backend):
    """The weights the merged exports fold (magnitude / row norm * (W + s B.A)), on either
    backend, are PEFT's merge_and_unload's; after the hybrid switch to full fine-tuning the
    model's outputs are the adapter's."""
    model, adapter = check_merged_weights_are_peft_s(tmp_path, device, backend, use_dora=True,
                                                     rank_pattern={"k_proj": 2})
    chat = run(ChatModel.load(model, adapter, backend=backend, device=device))
    ids = [5, 17, 33, 2, 60]
    em.check_switch_to_full_keeps_outputs(chat, ids)


def test_what_cannot_hold_dora_refuses_it_by_name(tmp_path, capsys):
    """llama.cpp's LoRA adapters have no magnitudes: the GGUF adapter export refuses DoRA
    (the merged GGUF export folds it). use_dora must be true or false."""
    from py_engine.cli import main

    model_dir, adapter = em.chat_with_adapter(tmp_path, family="llama", seed=4, use_dora=True)
    code = main(["export", "--model", str(model_dir), "--adapter", str(adapter), "--format",
                 "gguf-lora", "--out", str(tmp_path / "out")])
    assert code != 0 and not (tmp_path / "out").exists()
    assert "DoRA adapter (use_dora) cannot be a llama.cpp LoRA adapter" in capsys.readouterr().err
    with pytest.raises(LoraConfigError, match="use_dora must be true or false"):
        LoraConfig(use_dora="yes")
    assert LoraConfig(use_dora=None).use_dora is False


def test_generation_keeps_dora_s_norms_for_a_reply_and_takes_them_afresh_for_the_next(tmp_path, device):
    """The prompt's pass keeps each layer's DoRA scale and the one-token passes read it (on the
    GPU and in NumPy): after the adapter changes (here its magnitudes and lora_B, as a training
    step would change them) the next reply's logits at every step are the changed adapter's,
    from the same decoders, as a fresh NumPy model computes them."""
    model_dir, adapter = em.chat_with_adapter(tmp_path, family="llama", seed=6, use_dora=True)
    ids = np.random.default_rng().integers(0, 90, 7).tolist()
    gpu = run(ChatModel.load(model_dir, adapter, backend="gpu", device=device))
    reference = run(ChatModel.load(model_dir, adapter, backend="numpy"))

    def logits(decoder):
        rows = [run(decoder.prefill(ids[:2]))] + [run(decoder.step(t)) for t in ids[2:]]
        return np.array([np.asarray(r, np.float64) for r in rows])

    decoder, reference_decoder = gpu.decoder(), reference.decoder()
    assert em.relative_error(logits(decoder), logits(reference_decoder)) <= 1e-5
    values = run(reference.runtime.trainable_values())
    rng = np.random.default_rng(1)
    changed = {n: (s, np.asarray(v, np.float32) * (1 + 0.3 * rng.standard_normal(len(v))).astype(np.float32))
               if "magnitude" in n or "lora_B" in n else (s, v) for n, (s, v) in values.items()}
    for chat in (gpu, reference):
        run(chat.runtime.load_trainable(changed))
    fresh = run(ChatModel.load(model_dir, adapter, backend="numpy"))
    run(fresh.runtime.load_trainable(changed))
    want = logits(fresh.decoder())
    assert em.relative_error(logits(decoder), want) <= 1e-5     # the same decoders, afresh
    assert em.relative_error(logits(reference_decoder), want) <= 1e-12
