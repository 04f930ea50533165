"""The GPT-2 family's training step against code we did not write, on tiny random
GPT2LMHeadModel checkpoints (tests/gpt2_checkpoints.py), NumPy backend in float64: a LoRA step's
loss and every LoRA gradient against transformers + PEFT (Conv1D layers, fan_in_fan_out), a
full fine-tuning step's gradients against torch autograd, and adapters both ways with PEFT."""

import numpy as np
import pytest
import torch
from peft import PeftModel, TaskType
from transformers import GPT2LMHeadModel

import export_models as em
import peft_oracle as po
from conftest import run
from gpt2_checkpoints import TINY, tiny_gpt2
from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.formats.peft_adapter import load_adapter, read_adapter_config, save_adapter
from py_engine.generate import NumpyDecoder
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.gpt2 import Gpt2Model
from py_engine.models.llama import shift_labels
from py_engine.models.lora_config import LoraConfig
from py_engine.train.batch import Batch

V = TINY["vocab_size"]
ALL = ["c_attn", "c_proj", "c_fc"]
# transformers' causal-LM loss casts the logits to float32 even in a float64 model, so the
# agreement stops near float32 precision: the Llama family's bounds.
LOSS_BOUND, GRAD_BOUND = 1e-6, 1e-5


def peft_gpt2(path, targets, lora=None, **overrides):
    """The tiny checkpoint (config `overrides`) under path / "model" and a PEFT adapter (lora_B
    non-zero; PEFT's other options in `lora`) under path / "adapter"; returns the PEFT model in
    float64."""
    return peft_adapter(tiny_gpt2(path / "model", **overrides), path, targets, fan_in_fan_out=True,
                        **(lora or {}))


def peft_adapter(base, path, targets, **options):
    """PEFT's LoRA (r 4, alpha 8, `options`) on `targets` of the float64 model `base`, lora_B
    drawn non-zero, saved under path / "adapter"; returns the PEFT model in float64."""
    return em.random_b_adapter(base.float(), path / "adapter", TaskType.CAUSAL_LM, targets,
                               scale=0.1, lora_dropout=0.0, **options).double()


def adapter_decoder(path):
    """(decoder, lora, tensors): the NumPy decoder (float64 LoRA, unmerged) of the checkpoint
    under path / "model" with the PEFT adapter under path / "adapter" applied, as a standalone
    decoder reads them, and the adapter's LoraConfig and tensors."""
    config, tensors, _ = load_adapter(path / "adapter")
    lora = LoraConfig.from_peft_dict(config)
    checkpoint = DecoderCheckpoint.load(path / "model")
    params = {n: np.frombuffer(checkpoint.floats(n), np.float32).reshape(checkpoint.shape(n))
              for n in checkpoint.names()}
    params.update({n: np.asarray(v, np.float64).reshape(s) for n, (s, v) in tensors.items()})
    return NumpyDecoder.from_params(checkpoint.config, params, lora_scaling=lora.scaling), lora, tensors


def a_batch(T=10):
    rng = np.random.default_rng()
    B = 3
    ids = rng.integers(0, V, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[2, 7:] = 0                                   # a right-padded row
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100                              # the prompt does not count
    return ids, mask, labels


def engine_step(model, checkpoint, extra, ids, mask, labels, seed=0, saved_into=None):
    """Loss and gradients of one step of any decoder family on the NumPy backend in float64 (a
    head bias where the family has one), its dropout masks drawn from `seed`; what the forward saved goes into the dict `saved_into` when one is given."""
    be = NumpyBackend(np.float64)
    for name in checkpoint.names():
        be.set_param(name, np.frombuffer(checkpoint.floats(name), np.float32), checkpoint.shape(name))
    for name, (shape, values) in extra.items():
        be.set_param(name, np.asarray(values, np.float64), shape)
    for name in model.trainable:
        be.add_grad(name)
    B, T = ids.shape
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist())
    be.start_step(seed)
    hidden, saved = model.forward(be, batch)
    if saved_into is not None:
        saved_into.update(saved)
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name),
                                  np.asarray(shift_labels(labels.tolist())), dweight=model.head_grad(be),
                                  bias=model.head_bias_param(be), dbias=model.head_bias_grad(be),
                                  softcap=model.logit_softcap)
    model.backward(be, dh, saved, batch)
    return metrics["loss"], be.grads


def torch_step(model, ids, mask, labels):
    model.train()
    out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                labels=torch.as_tensor(labels))
    out.loss.backward()
    return out.loss.item()


def relative(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.mark.parametrize("targets, lora", [(["c_attn"], None), (ALL, None),
                                          (ALL, dict(use_dora=True)),     # DoRA on Conv1D layers
                                          (["c_attn"], dict(bias="all")),   # the norms' biases too
                                          (["c_proj"], dict(bias="lora_only")),
                                          (ALL, dict(lora_bias=True))])  # lora_B's biases
def test_lora_step_matches_peft(tmp_path, targets, lora):
    peft = peft_gpt2(tmp_path, targets, lora)
    ids, mask, labels = a_batch()
    want_loss = torch_step(peft, ids, mask, labels)
    want = {po.adapter_key(n).replace("base_model.model.", ""): p.grad.numpy()
            for n, p in peft.named_parameters() if p.requires_grad}

    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    assert adapter_config["fan_in_fan_out"] is True
    model = Gpt2Model(DecoderCheckpoint.load(tmp_path / "model").config,
                      LoraConfig.from_peft_dict(adapter_config))
    loss, grads = engine_step(model, DecoderCheckpoint.load(tmp_path / "model"), tensors, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    assert set(want) == set(model.trainable)
    po.check_gradients(grads, want, GRAD_BOUND)


class Multiply(torch.nn.Module):
    """A dropout module replaced by the engine's mask: x times its multiplier (0 or 1 / (1 - p))."""

    def __init__(self, multiplier, shape):
        super().__init__()
        self.multiplier = torch.as_tensor(multiplier).reshape(shape)

    def forward(self, x):
        return x * self.multiplier


def inject_masks(hf, saved, B, T, monkeypatch):
    """Put the engine's dropout masks into a GPT2LMHeadModel: its embedding and residual dropout
    modules replaced, and transformers' eager attention (GPT-2's own, with the attention
    probabilities' dropout) patched to multiply them by the engine's [B, H, T, T] mask."""
    import transformers.models.gpt2.modeling_gpt2 as gpt2_module

    h = hf.config.n_embd
    hf.transformer.drop = Multiply(saved["emb_drop"].multiplier, (B, T, h))
    for block, s in zip(hf.transformer.h, saved["layers"]):
        block.attn.resid_dropout = Multiply(s["attn_drop"].multiplier, (B, T, h))
        block.mlp.dropout = Multiply(s["mlp_drop"].multiplier, (B, T, h))
    patch_attention_dropout(hf, gpt2_module, saved, monkeypatch)


def patch_attention_dropout(hf, modeling_module, saved, monkeypatch):
    """Switch `hf` to transformers' eager attention and patch `modeling_module`'s
    eager_attention_forward (any decoder family's) to multiply the attention probabilities by
    the engine's [B, H, T, T] dropout mask of each layer, in place of its own dropout."""
    attention_masks = [torch.as_tensor(s["attn"].site.multiplier) for s in saved["layers"]]

    def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_):
        weights = torch.matmul(query, key.transpose(-1, -2)) * scaling + attention_mask
        weights = torch.softmax(weights, dim=-1) * attention_masks[module.layer_idx]
        return torch.matmul(weights, value).transpose(1, 2), weights

    hf.set_attn_implementation("eager")
    monkeypatch.setattr(modeling_module, "eager_attention_forward", eager_attention)


DROPOUT = dict(embd_pdrop=0.2, resid_pdrop=0.3, attn_pdrop=0.25)
RATES = {"emb_drop": 0.2, "attn_drop": 0.3, "mlp_drop": 0.3, "attn": 0.25}


def dropout_multipliers(saved):
    """{site name: [multiplier, ...]} of a training forward's dropout layers."""
    found = {"emb_drop": [saved["emb_drop"].multiplier]}
    for s in saved["layers"]:
        for name in ("attn_drop", "mlp_drop"):
            found.setdefault(name, []).append(s[name].multiplier)
        found.setdefault("attn", []).append(s["attn"].site.multiplier)
    return found


@pytest.mark.parametrize("targets", [["c_attn"], ALL])
def test_lora_step_with_dropout_matches_peft_with_the_same_masks(tmp_path, targets, monkeypatch):
    """Embedding, residual and attention dropout on: transformers + PEFT in train mode with the
    engine's masks in place of its dropout gives the engine's loss and LoRA gradients."""
    peft = peft_gpt2(tmp_path, targets, **DROPOUT)
    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    c = checkpoint.config
    assert (c.embd_pdrop, c.resid_pdrop, c.attn_pdrop) == (0.2, 0.3, 0.25)
    model = Gpt2Model(checkpoint.config, LoraConfig.from_peft_dict(adapter_config))
    ids, mask, labels = a_batch()
    saved = {}
    loss, grads = engine_step(model, checkpoint, tensors, ids, mask, labels, seed=5, saved_into=saved)
    masks = dropout_multipliers(saved)
    for name, rate in RATES.items():       # each mask drops about its rate and scales the rest
        for m in masks[name]:
            assert abs(np.mean(m == 0) - rate) < 0.1, name
            assert np.allclose(m[m != 0], 1 / (1 - rate)), name
    assert not np.array_equal(masks["attn"][0], masks["attn"][1])     # layers draw their own

    inject_masks(peft.base_model.model, saved, *ids.shape, monkeypatch)
    want_loss = torch_step(peft, ids, mask, labels)
    want = {n.replace("base_model.model.", "").replace(".default", ""): p.grad.numpy()
            for n, p in peft.named_parameters() if p.requires_grad}
    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    assert set(want) == set(model.trainable)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= GRAD_BOUND, name

    # The masks matter: without them (rates 0) every gradient differs by far more than the bound.
    still = Gpt2Model(DecoderCheckpoint.load(tmp_path / "model").config, model.lora, dropout=0.0)
    _, plain = engine_step(still, checkpoint, tensors, ids, mask, labels, seed=5)
    moved = min(relative(plain[name], ref) for name, ref in want.items())
    assert moved > 100 * GRAD_BOUND, moved


def test_dropout_switched_off_trains_as_peft_without_dropout(tmp_path):
    """dropout=0.0 on a checkpoint whose config has dropout: a training step draws no mask and
    its loss and LoRA gradients are transformers + PEFT's in train mode with every dropout at 0."""
    peft = peft_gpt2(tmp_path, ["c_attn"], **DROPOUT)
    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = Gpt2Model(checkpoint.config, LoraConfig.from_peft_dict(adapter_config), dropout=0.0)
    assert model.dropout == {"embedding": 0.0, "residual": 0.0, "attention": 0.0}
    ids, mask, labels = a_batch()
    saved = {}
    loss, grads = engine_step(model, checkpoint, tensors, ids, mask, labels, seed=5, saved_into=saved)
    assert saved["emb_drop"] is None or saved["emb_drop"].multiplier is None
    for module in peft.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    want_loss = torch_step(peft, ids, mask, labels)
    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    want = {n.replace("base_model.model.", "").replace(".default", ""): p.grad.numpy()
            for n, p in peft.named_parameters() if p.requires_grad}
    for name, ref in want.items():
        assert relative(grads[name], ref) <= GRAD_BOUND, name
    # the config's rates still apply without the switch: the same step's gradients move (the
    # loss alone can land near the undropped one by chance: 2e-4 apart in one draw of 20)
    drop = Gpt2Model(checkpoint.config, model.lora)
    assert drop.dropout == {"embedding": 0.2, "residual": 0.3, "attention": 0.25}
    _, dropped = engine_step(drop, checkpoint, tensors, ids, mask, labels, seed=5)
    moved = min(relative(dropped[name], grads[name]) for name in want)
    assert moved > 100 * GRAD_BOUND, moved
    # full fine-tuning after LoRA (hybrid) keeps the rates the model was made with
    assert model.to_full().dropout == model.dropout and drop.to_full().dropout == drop.dropout


def test_dropout_option_by_name_and_its_refusals():
    from py_engine.models.dropout_rates import DropoutError
    from py_engine.models.gpt2_config import Gpt2Config
    from py_engine.models.llama import LlamaModel
    from py_engine.models.llama_config import LlamaConfig

    config = Gpt2Config(vocab_size=96, n_embd=32, n_layer=1, n_head=4)      # rates 0.1
    model = Gpt2Model(config, None, dropout={"attention": 0.0, "residual": 0.05})
    assert model.dropout == {"embedding": 0.1, "residual": 0.05, "attention": 0.0}
    for bad, message in ((1.0, "dropout embedding must be in \\[0, 1\\), got 1.0"),
                         ({"hidden": 0.0}, "unknown dropout 'hidden' for the GPT-2 decoder; choose "
                                           "from \\['attention', 'embedding', 'residual'\\]"),
                         ("0", "dropout must be a probability or a dict of them, got '0'")):
        with pytest.raises(DropoutError, match=message):
            Gpt2Model(config, None, dropout=bad)
    llama = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)
    assert LlamaModel(llama, None, dropout=0.0).dropout == {}       # nothing to turn off
    with pytest.raises(DropoutError, match="the decoder has no dropout to set \\(got 0.1\\)"):
        LlamaModel(llama, None, dropout=0.1)


def test_no_dropout_outside_training(tmp_path):
    """Eval (train=False) forwards draw no mask at any rate: the hidden states equal the
    rate-0 model's."""
    tiny_gpt2(tmp_path / "drop", **DROPOUT)
    tiny_gpt2(tmp_path / "plain")
    hidden = []
    for name in ("drop", "plain"):
        checkpoint = DecoderCheckpoint.load(tmp_path / name)
        model = Gpt2Model(checkpoint.config, None)
        be = NumpyBackend(np.float64)
        for n in checkpoint.names():
            be.set_param(n, np.frombuffer(checkpoint.floats(n), np.float32), checkpoint.shape(n))
        ids = np.arange(30).reshape(3, 10) % V
        be.start_step(3, train=False)
        out, saved = model.forward(be, Batch(ids.tolist(), [[0] * 10] * 3, [[1] * 10] * 3), train=False)
        assert saved["emb_drop"] is None and saved["layers"] == []
        hidden.append(out)
    assert np.array_equal(hidden[0], hidden[1])


def test_dropout_rates_are_checked():
    from py_engine.models.bert_config import ConfigError
    from py_engine.models.gpt2_config import Gpt2Config

    fields = dict(vocab_size=96, n_embd=32, n_layer=1, n_head=4)
    assert Gpt2Config(**fields).resid_pdrop == 0.1          # transformers' default
    with pytest.raises(ConfigError, match="'resid_pdrop' must be in \\[0, 1\\), got 1.0"):
        Gpt2Config(**fields, resid_pdrop=1.0)


@pytest.mark.parametrize("dropout", [{}, DROPOUT])
def test_full_finetuning_step_matches_torch(tmp_path, dropout, monkeypatch):
    """Every weight's gradient against torch autograd; with dropout, on the engine's masks."""
    hf = tiny_gpt2(tmp_path, **dropout)
    ids, mask, labels = a_batch()
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = Gpt2Model(checkpoint.config, None)
    saved = {}
    loss, grads = engine_step(model, checkpoint, {}, ids, mask, labels, seed=7, saved_into=saved)
    if dropout:
        inject_masks(hf, saved, *ids.shape, monkeypatch)
    want_loss = torch_step(hf, ids, mask, labels)

    assert abs(loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    torch_grads = dict(hf.named_parameters())
    assert set(model.trainable) == set(torch_grads) - {"lm_head.weight"}
    for name in model.trainable:
        ref = torch_grads[name].grad.numpy()
        ref = ref.T if checkpoint.config.is_conv1d(name) else ref      # Conv1D: [in, out]
        assert relative(grads[name], ref) <= GRAD_BOUND, name


def test_peft_adapter_loads_and_ours_loads_in_peft(tmp_path):
    """A PEFT adapter applied here gives PEFT's logits; the same weights saved here as an
    adapter load in PEFT (fan_in_fan_out, Conv1D module names) and give them again."""
    ours = check_adapters_both_ways(tmp_path, peft_gpt2(tmp_path, ALL), Gpt2Model, tiny_gpt2, ALL)
    assert ours["fan_in_fan_out"] is True


def check_adapters_both_ways(tmp_path, peft, model_class, tiny, targets):
    """Any decoder family: `peft` (made by the family's peft_* helper under tmp_path) gives the
    logits the engine gives with its adapter applied; the engine's adapter saved again loads in
    PEFT over a fresh `tiny(path)` checkpoint and gives them too. Returns our adapter_config."""
    peft = peft.eval()
    ids = np.random.default_rng().integers(0, V, 12).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()

    decoder, lora, tensors = adapter_decoder(tmp_path)
    got = run(decoder.prefill(ids))
    assert relative(got, want) <= 1e-6          # PEFT's adapter file holds float32

    model = model_class(decoder.config, lora)
    save_adapter(tmp_path / "ours", model.lora.to_peft_dict(), tensors)
    ours = read_adapter_config(tmp_path / "ours")
    assert sorted(ours["target_modules"]) == sorted(targets)
    base = tiny(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base.float(), tmp_path / "ours").double().eval()
    with torch.no_grad():
        again = reloaded(input_ids=torch.as_tensor([ids])).logits[0, -1].numpy()
    assert relative(again, want) <= 1e-6
    return ours


def test_merged_export_loads_in_transformers(tmp_path):
    """A PEFT adapter merged and saved here is, to transformers, PEFT's merged model."""
    check_merged_export(tmp_path, peft_gpt2(tmp_path, ALL), GPT2LMHeadModel)


def check_merged_export(tmp_path, peft, hf_class):
    """Any decoder family: `peft`'s adapter (under tmp_path, as the peft_* helpers save it)
    merged and saved here loads as `hf_class` and gives PEFT's logits."""
    from py_engine.export.merged import load_merged, save_merged

    from tiny_chat import train_tokenizer

    peft = peft.eval()
    train_tokenizer().save(str(tmp_path / "model" / "tokenizer.json"))   # a chat model has one
    ids = np.random.default_rng().integers(0, V, 12).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids])).logits[0].numpy()
    save_merged(load_merged(tmp_path / "model", tmp_path / "adapter"), tmp_path / "merged")
    merged = hf_class.from_pretrained(tmp_path / "merged").double().eval()
    with torch.no_grad():
        got = merged(input_ids=torch.as_tensor([ids])).logits[0].numpy()
    assert relative(got, want) <= 1e-6          # the merged weights are float32


def test_fan_in_fan_out_is_refused_where_the_linears_are_not_conv1d():
    from py_engine.models.llama import LlamaModel
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.models.lora_config import LoraConfigError

    config = LlamaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=48)
    lora = LoraConfig(target_modules=["q_proj"], fan_in_fan_out=True, task_type="CAUSAL_LM")
    with pytest.raises(LoraConfigError, match="fan_in_fan_out=True is for Conv1D layers"):
        LlamaModel(config, lora)
