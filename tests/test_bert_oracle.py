"""BERT + LoRA sequence classification against transformers + PEFT (torch autograd).

Same weights (PEFT's adapter loaded into py_engine), same batch, dropout off: the loss and the
gradient of every LoRA matrix and of the head after one step must match, and over 20 AdamW
steps with clipping the losses must track PEFT's. NumPy backend in float64 here (bounds near
machine precision); the GPU backend is checked against this one in test_bert_gpu.py.
"""

import numpy as np
import pytest
import torch

import peft_oracle as po
from py_engine.formats.peft_adapter import load_adapter
from py_engine.gpu import run_sync
from py_engine.models.bert import BertClassifier
from py_engine.models.checkpoint import Checkpoint
from py_engine.models.lora_config import LoraConfig
from py_engine.train.init import initial_trainable, merge_loaded
from py_engine.train.batch import Batch
from py_engine.train.numpy_runtime import NumpyRuntime
from py_engine.train.tasks import ClassificationTask

ALL_LINEARS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


def random_batch(rng, B, T, vocab, labels, type_vocab=2):
    ids = rng.integers(1, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):                       # every row but the first is padded somewhat
        mask[b, rng.integers(2, T):] = 0
    ids[mask == 0] = 0
    types = rng.integers(0, type_vocab, (B, T)) * mask
    return ids, types, mask, rng.integers(0, labels, B)


def engine_from_peft(model_dir, adapter_dir, num_labels, dtype=np.float64):
    checkpoint = Checkpoint.load(model_dir)
    config, tensors, _ = load_adapter(adapter_dir)
    model = BertClassifier(checkpoint.config, LoraConfig.from_peft_dict(config), num_labels, dropout=0.0,
                           train_pooler=checkpoint.config.trains_pooler(tensors))
    values = merge_loaded(model, initial_trainable(model, 0), tensors, adapter_dir)
    return NumpyRuntime(model, ClassificationTask(num_labels), checkpoint, values, dtype=dtype)


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


def check_step(tmp_path, model_dir, targets, B, T, num_labels, seed, bound_loss, bound_grad, **lora):
    peft = po.peft_model(model_dir, num_labels, target_modules=targets, seed=seed, **lora)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    rng = np.random.default_rng(seed)
    vocab = peft.config.vocab_size if hasattr(peft, "config") else 100
    ids, types, mask, labels = random_batch(rng, B, T, vocab, num_labels)
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels, token_type_ids=types)

    engine = engine_from_peft(model_dir, adapter, num_labels)
    ours = run_sync(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))["loss"]
    assert abs(ours - loss) <= bound_loss * abs(loss), (ours, loss)
    got = run_sync(engine.gradients())
    assert set(got) == {k.removeprefix("base_model.model.") for k in grads}
    po.check_gradients(got, {k.removeprefix("base_model.model."): g for k, g in grads.items()},
                       bound_grad)
    return engine, peft, (ids, types, mask, labels)


# "dense" names BERT's pooler too (bert.pooler.dense), as PEFT matches it; the pooler alone
# leaves every layer without an adapter.
@pytest.mark.parametrize("targets", [("query", "value"), ALL_LINEARS, ("query", "value", "dense"),
                                     ("pooler.dense",)])
def test_tiny_bert_step_matches_peft(tmp_path, targets):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=1)
    check_step(tmp_path, model_dir, targets, B=4, T=11, num_labels=3, seed=2,
               bound_loss=1e-12, bound_grad=1e-10)


# DoRA: the magnitudes' gradients too; "dense" wraps the pooler (cls pooling) as well
@pytest.mark.parametrize("targets", [("query", "value"), ("query", "value", "dense")])
def test_tiny_bert_dora_step_matches_peft(tmp_path, targets):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=1)
    check_step(tmp_path, model_dir, targets, B=4, T=11, num_labels=3, seed=2,
               bound_loss=1e-12, bound_grad=1e-10, use_dora=True)


# PEFT's bias option: the wrapped linears' biases, or every bias (the norms', the pooler's)
# train beside the adapter; "all" takes the backward down to the embeddings' norm.
@pytest.mark.parametrize("bias,targets", [("lora_only", ("query", "value")),
                                          ("all", ("query", "value")),
                                          ("all", ("value", "dense")),
                                          ("lora_only", ("query", "value", "dense"))])
def test_tiny_bert_step_with_trained_biases_matches_peft(tmp_path, bias, targets):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=1)
    engine, peft, _ = check_step(tmp_path, model_dir, targets, B=4, T=11, num_labels=3, seed=2,
                                 bound_loss=1e-12, bound_grad=1e-10, bias=bias)
    trained = {k for k in engine.model.trainable if k.endswith(".bias") and k != "classifier.bias"}
    assert trained and all(".lora_" not in k for k in trained)
    if bias == "all":
        assert "bert.embeddings.LayerNorm.bias" in trained


# PEFT's lora_bias: each lora_B has a bias of its own, scaled as B.A x is; beside the bias
# option's trained base biases too, and on the pooler ("dense")
@pytest.mark.parametrize("options,targets", [(dict(lora_bias=True), ("query", "value")),
                                             (dict(lora_bias=True, bias="lora_only"), ALL_LINEARS),
                                             (dict(lora_bias=True, lora_alpha=3), ("dense",))])
def test_tiny_bert_lora_bias_step_matches_peft(tmp_path, options, targets):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=1)
    engine, _, _ = check_step(tmp_path, model_dir, targets, B=4, T=11, num_labels=3, seed=2,
                              bound_loss=1e-12, bound_grad=1e-10, **options)
    wrapped = [k for k in engine.model.trainable if k.endswith(".lora_A.weight")]
    assert wrapped and [k for k in engine.model.trainable if k.endswith(".lora_B.bias")] == \
        [k.replace("lora_A.weight", "lora_B.bias") for k in wrapped]


# modules_to_save naming BERT's pooler: it trains whole (PEFT's ModulesToSaveWrapper), from the
# checkpoint's values, beside the classifier
@pytest.mark.parametrize("saved", [["classifier", "pooler"], ["classifier", "bert.pooler.dense"]])
def test_tiny_bert_step_with_the_pooler_trained_whole_matches_peft(tmp_path, saved):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=1)
    engine, _, _ = check_step(tmp_path, model_dir, ("query", "value"), B=4, T=11, num_labels=3,
                              seed=2, bound_loss=1e-12, bound_grad=1e-10, modules_to_save=saved)
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(engine.model.trainable)


def test_minilm_step_matches_peft(tmp_path):
    check_step(tmp_path, po.MINILM_DIR, ("query", "value"), B=3, T=16, num_labels=2, seed=3,
               bound_loss=1e-12, bound_grad=1e-9)


@pytest.mark.parametrize("options", [{}, {"use_dora": True}, {"bias": "all"}, {"lora_bias": True}])
def test_twenty_adamw_steps_track_peft(tmp_path, options):
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=4)
    peft = po.peft_model(model_dir, 3, seed=5, **options)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    engine = engine_from_peft(model_dir, adapter, 3)
    params = [p for p in peft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.01)
    rng = np.random.default_rng(6)
    ours, theirs = [], []
    for step in range(1, 21):
        ids, types, mask, labels = random_batch(rng, 4, 10, 120, 3)
        loss, _, _ = po.step_gradients(peft, ids, mask, labels, token_type_ids=types)
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        theirs.append(loss)
        l = run_sync(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))["loss"]
        run_sync(engine.update(lr=5e-3, max_norm=0.5, weight_decay=0.01))
        ours.append(l)
    assert rel(ours, np.array(theirs)) <= 1e-9, (ours, theirs)
    assert theirs[-1] < theirs[0]      # it learns: the comparison is not of two flat lines
