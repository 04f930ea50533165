"""The T5 family's training step against transformers + PEFT on tiny FLAN-T5-like checkpoints
(tests/t5_checkpoints.py), NumPy backend in float64: one step's loss and every LoRA gradient
(PEFT's default q, v and every linear), one full fine-tuning step's every gradient against
torch autograd, and adapters both ways with PEFT."""

import numpy as np
import pytest
import torch
import transformers.models.t5.modeling_t5 as t5_module
from peft import PeftModel, TaskType

import export_models as em
import peft_oracle as po
from py_engine.formats.peft_adapter import load_adapter, read_adapter_config, save_adapter
from py_engine.labels import IGNORE_INDEX, IGNORE_LABEL
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.lora_config import LoraConfig
from py_engine.train.batch import Seq2SeqBatch, seq2seq_decoder_ids
from t5_checkpoints import tiny_t5
from test_t5_reference import a_batch, engine, engine_logits, float64_layer_norm, relative

ALL = ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]


def peft_t5(path, targets, lora=None, **overrides):
    """The tiny checkpoint under path / "model" and a PEFT adapter (lora_B non-zero; PEFT's
    other options in `lora`) under path / "adapter"; returns the PEFT model in float64."""
    base = tiny_t5(path / "model", **overrides).float()
    return em.random_b_adapter(base, path / "adapter", TaskType.SEQ_2_SEQ_LM, targets, scale=0.1,
                               lora_dropout=0.0, **(lora or {})).double()


def engine_step(path, ids, mask, labels, seed=0, saved_into=None, rate=None, full=False,
                noise_alpha=None, smoothing=0.0):
    """Loss and LoRA gradients (with `full`, every weight's) of one step on the NumPy backend in
    float64, its dropout masks (and NEFTune's noise for `noise_alpha`) drawn from `seed` (at the
    config's dropout_rate, or `rate`; label `smoothing`); what the forward saved goes into the
    dict `saved_into` when one is given."""
    if full:
        model, be = engine(path / "model")
    else:
        adapter_config, tensors, _ = load_adapter(path / "adapter")
        model, be = engine(path / "model", LoraConfig.from_peft_dict(adapter_config), tensors)
    if rate is not None:
        model.dropout = {"dropout_rate": rate}       # what the dropout option sets
    for name in model.trainable:
        be.add_grad(name)
    c = model.config
    decoder_ids = seq2seq_decoder_ids(labels.tolist(), c.decoder_start_token_id, c.pad_token_id)
    batch = Seq2SeqBatch(ids, mask, np.asarray(decoder_ids))
    batch.noise_alpha = noise_alpha
    flat = [IGNORE_LABEL if y == IGNORE_INDEX else y for y in labels.ravel().tolist()]
    be.start_step(seed)
    hidden, saved = model.forward(be, batch)
    if saved_into is not None:
        saved_into.update(saved)
    metrics, dh = model.head_loss(be, hidden, np.asarray(flat), smoothing=smoothing)  # Seq2SeqTask's
    model.backward(be, dh, saved, batch)
    return model, metrics["loss"], be.grads


def peft_step(peft, ids, mask, labels):
    """Loss and the gradient of every trainable parameter (a PEFT model's adapters, or every
    weight of a plain transformers model), by the engine's names."""
    peft.train()
    out = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
               labels=torch.as_tensor(labels))
    out.loss.backward()
    return out.loss.item(), {po.adapter_key(n).replace("base_model.model.", ""): p.grad.numpy()
                             for n, p in peft.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("float64_norm, tied", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("targets", [["q", "v"], ALL, ["EncDecAttention.k", "wo"]])
def test_lora_step_matches_peft(tmp_path, monkeypatch, targets, float64_norm, tied):
    """FLAN-T5's layout, and the original T5's tied, rescaled head."""
    if float64_norm:
        float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, targets, tied=tied)
    ids, mask, labels = a_batch()
    want_loss, want = peft_step(peft, ids, mask, labels)
    model, loss, grads = engine_step(tmp_path, ids, mask, labels)

    # T5LayerNorm's float32 variance limits the agreement to float32 precision; with it in
    # float64 (measured ~1e-15 loss, ~1e-13 gradients) the engine's arithmetic is checked.
    loss_bound, grad_bound = (1e-12, 1e-10) if float64_norm else (1e-6, 1e-5)
    assert abs(loss - want_loss) <= loss_bound * abs(want_loss)
    assert set(want) == set(model.trainable) and want
    for name, ref in want.items():
        assert relative(grads[name], ref) <= grad_bound, name


@pytest.mark.parametrize("targets", [ALL, ALL + ["lm_head"]])
def test_a_lora_with_lora_b_biases_matches_peft(tmp_path, monkeypatch, targets):
    """PEFT's lora_bias on every linear of both stacks (none has a bias of its own), and on
    FLAN-T5's head (s b_B added to the logits): the loss and every gradient, lora_B's biases'
    too (a key's is zero but for rounding on both sides: softmax ignores what it adds to every
    score of a query)."""
    float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, targets, lora=dict(lora_bias=True))
    ids, mask, labels = a_batch()
    want_loss, want = peft_step(peft, ids, mask, labels)
    model, loss, grads = engine_step(tmp_path, ids, mask, labels)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    assert set(want) == set(model.trainable) and any(n.endswith(".lora_B.bias") for n in want)
    po.check_gradients(grads, want, 1e-10)


@pytest.mark.parametrize("targets", [["q", "v", "lm_head"], ["lm_head"]])
def test_a_lora_on_the_head_matches_peft(tmp_path, monkeypatch, targets):
    """FLAN-T5's head of its own wrapped as PEFT wraps it (lora.Linear on lm_head): the loss,
    the head pair's gradients and the others', alone or beside the layers' LoRA; PEFT's
    logits from the adapter, and ours read back by PEFT."""
    float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, targets)
    ids, mask, labels = a_batch()
    want_loss, want = peft_step(peft, ids, mask, labels)
    model, loss, grads = engine_step(tmp_path, ids, mask, labels)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    assert set(want) == set(model.trainable) and "lm_head.lora_B.weight" in want
    for name, ref in want.items():
        assert relative(grads[name], ref) <= 1e-10, name

    peft.eval()
    with torch.no_grad():
        logits = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                      labels=torch.as_tensor(labels)).logits.numpy()
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    got = engine_logits(*engine(tmp_path / "model", LoraConfig.from_peft_dict(config), tensors),
                        ids, mask, labels)
    assert relative(got, logits.reshape(got.shape)) <= 1e-12


def test_the_tied_head_and_the_tables_stay_refused(tmp_path):
    """The original T5's tied head (the shared table, scaled) and the embeddings: by name."""
    from py_engine.models.lora import LoraTargetError

    tiny_t5(tmp_path / "tied", tied=True)
    tiny_t5(tmp_path / "flan")
    for directory, targets, named in [("tied", ["q", "lm_head"], "lm_head"),
                                      ("flan", ["q", "shared"], "shared")]:
        with pytest.raises(LoraTargetError, match=rf"name {named}\b"):
            engine(tmp_path / directory, LoraConfig(r=4, lora_alpha=8, target_modules=targets), {})


def test_dora_step_matches_peft(tmp_path, monkeypatch):
    """DoRA on T5's attention and feed-forward linears: loss, LoRA and magnitude gradients."""
    float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, ["q", "v", "EncDecAttention.k", "wo"], lora=dict(use_dora=True))
    ids, mask, labels = a_batch()
    want_loss, want = peft_step(peft, ids, mask, labels)
    model, loss, grads = engine_step(tmp_path, ids, mask, labels)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    assert set(want) == set(model.trainable) and any(n.endswith("magnitude_vector") for n in want)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= 1e-10, name


def test_peft_adapter_loads_and_ours_loads_in_peft(tmp_path, monkeypatch):
    """A PEFT adapter applied here gives PEFT's logits; the same weights saved here as an
    adapter load in PEFT and give them again."""
    float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, ALL).eval()
    ids, mask, labels = a_batch()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    labels=torch.as_tensor(labels)).logits.numpy()
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    lora = LoraConfig.from_peft_dict(config)
    got = engine_logits(*engine(tmp_path / "model", lora, tensors), ids, mask, labels)
    assert relative(got, want.reshape(got.shape)) <= 1e-12

    save_adapter(tmp_path / "ours", lora.to_peft_dict(), tensors)
    ours = read_adapter_config(tmp_path / "ours")
    assert ours["task_type"] == "SEQ_2_SEQ_LM" and sorted(ours["target_modules"]) == sorted(ALL)
    base = tiny_t5(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base.float(), tmp_path / "ours").double().eval()
    with torch.no_grad():
        again = reloaded(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                         labels=torch.as_tensor(labels)).logits.numpy()
    assert relative(again, want) <= 1e-12


@pytest.mark.parametrize("float64_norm, tied", [(True, False), (False, False), (True, True)])
def test_full_step_matches_transformers(tmp_path, monkeypatch, float64_norm, tied):
    """Every weight trains: the loss and each parameter's gradient against torch autograd:
    the shared embedding through both stacks' inputs (and, tied, the rescaled head), each
    stack's relative position bias table through every layer of the stack, every norm and
    linear, the head."""
    if float64_norm:
        float64_layer_norm(monkeypatch)
    hf = tiny_t5(tmp_path / "model", tied=tied)
    ids, mask, labels = a_batch()
    want_loss, want = peft_step(hf, ids, mask, labels)
    model, loss, grads = engine_step(tmp_path, ids, mask, labels, full=True)
    loss_bound, grad_bound = (1e-12, 1e-10) if float64_norm else (1e-6, 1e-5)
    assert abs(loss - want_loss) <= loss_bound * abs(want_loss)
    assert set(want) == set(model.trainable) == set(DecoderCheckpoint.load(tmp_path / "model").names())
    for name, ref in want.items():
        assert np.linalg.norm(ref) > 0, name        # every gradient is there to be checked
        assert relative(grads[name], ref) <= grad_bound, name


class Masks(torch.nn.Module):
    """A dropout module replaced by the engine's masks: x times the next multiplier (0 or
    1 / (1 - p)), in call order (T5Stack's one dropout serves its embeddings and its output)."""

    def __init__(self, *sites):
        super().__init__()
        self.multipliers = [torch.as_tensor(site.multiplier) for site in sites]

    def forward(self, x):
        return x * self.multipliers.pop(0).reshape(x.shape)


def inject_masks(hf, saved, monkeypatch):
    """Put the engine's dropout masks into a T5ForConditionalGeneration: every dropout module
    replaced, and transformers' eager T5 attention patched to multiply the probabilities by the
    engine's [B, H, Tq, Tk] mask of that attention."""
    attention_masks = {}
    for stack, part in ((hf.encoder, saved["encoder"]), (hf.decoder, saved["decoder"])):
        stack.dropout = Masks(part["emb_drop"], part["final_drop"])
        for block, s in zip(stack.block, part["layers"]):
            kinds = ["SelfAttention"] + (["EncDecAttention"] if stack is hf.decoder else [])
            for layer, kind in zip(block.layer, kinds):
                layer.dropout = Masks(s[kind + "_drop"])
                attention_masks[id(getattr(layer, kind))] = torch.as_tensor(s[kind][5].multiplier)
            block.layer[-1].dropout = Masks(s["ff_drop"])
            block.layer[-1].DenseReluDense.dropout = Masks(s["act_drop"])

    def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                        position_bias=None, **_):
        weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if position_bias is not None:
            weights = weights + position_bias
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = torch.softmax(weights, dim=-1) * attention_masks[id(module)]
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    hf.set_attn_implementation("eager")
    monkeypatch.setattr(t5_module, "eager_attention_forward", eager_attention)


def test_lora_step_with_dropout_matches_peft_with_the_same_masks(tmp_path, monkeypatch):
    """dropout_rate on (FLAN-T5 trains with 0.1): transformers + PEFT in train mode with the
    engine's masks in place of its dropout gives the engine's loss and LoRA gradients; without
    the masks every gradient differs by far more than the bound."""
    float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, ALL, dropout_rate=0.3)
    ids, mask, labels = a_batch()
    saved = {}
    model, loss, grads = engine_step(tmp_path, ids, mask, labels, seed=4, saved_into=saved)
    sites = [saved["encoder"]["emb_drop"], saved["decoder"]["layers"][1]["EncDecAttention"][5],
             saved["decoder"]["layers"][2]["act_drop"]]
    for site in sites:      # each mask drops about its rate and scales the rest
        assert abs(np.mean(site.multiplier == 0) - 0.3) < 0.1
        assert np.allclose(site.multiplier[site.multiplier != 0], 1 / 0.7)
    inject_masks(peft.base_model.model, saved, monkeypatch)
    want_loss, want = peft_step(peft, ids, mask, labels)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    assert set(want) == set(model.trainable)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= 1e-10, name
    _, _, plain = engine_step(tmp_path, ids, mask, labels, seed=4, rate=0.0)
    assert min(relative(plain[name], ref) for name, ref in want.items()) > 1e-3


def test_full_step_with_dropout_matches_transformers_with_the_same_masks(tmp_path, monkeypatch):
    """Full fine-tuning with dropout on: transformers with the engine's masks gives every
    weight's gradient, the embedding's and the bias tables' included."""
    float64_layer_norm(monkeypatch)
    hf = tiny_t5(tmp_path / "model", dropout_rate=0.3)
    ids, mask, labels = a_batch()
    saved = {}
    model, loss, grads = engine_step(tmp_path, ids, mask, labels, seed=7, saved_into=saved, full=True)
    inject_masks(hf, saved, monkeypatch)
    want_loss, want = peft_step(hf, ids, mask, labels)
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    assert set(want) == set(model.trainable)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= 1e-10, name


def test_modules_to_save_names_nothing_that_trains_whole(tmp_path):
    """A T5's adapter trains its LoRA alone: a modules_to_save entry naming a module of the
    model (its head, tied or not, its norms) is refused by name instead of passed over, and
    one naming nothing (a classifier's defaults) is passed over, as PEFT passes it over."""
    from py_engine.models.lora_config import LoraConfigError
    from py_engine.models.t5 import T5Model
    from py_engine.models.t5_config import T5Config

    for tied in (False, True):
        tiny_t5(tmp_path / str(tied), tied=tied)
        config = T5Config.from_file(tmp_path / str(tied))
        model = T5Model(config, LoraConfig(target_modules=["q"], modules_to_save=["classifier", "score"]))
        assert all(".lora_" in k for k in model.trainable)
        for entry, named in (("lm_head", "lm_head,"), ("layer_norm", "decoder.block.0.layer.0.layer_norm, ")):
            with pytest.raises(LoraConfigError, match=f"modules_to_save '{entry}' names {named}.*"
                                                      "nothing of this T5 model trains whole here"):
                T5Model(config, LoraConfig(target_modules=["q"], modules_to_save=[entry]))
