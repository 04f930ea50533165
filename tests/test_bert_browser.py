"""The BERT LoRA step inside the browser (Pyodide + WebGPU): the tiny config's loss and
gradients match the host's NumPy float64 reference, which matches transformers + PEFT."""

import json

import numpy as np
import pytest

import peft_oracle as po
from conftest import run
from test_bert_gpu import LOSS_BOUND, check_gradients, tiny_batch
from test_bert_oracle import engine_from_peft, rel
from py_engine.harness import put_files, run_json
from py_engine.train.batch import Batch

pytestmark = pytest.mark.browser

STEP = """
import json
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import Checkpoint
from py_engine.models.classifiers import classifier_model
from py_engine.models.lora_config import LoraConfig
from py_engine.train.gpu_runtime import GpuRuntime
from py_engine.train.init import initial_trainable, merge_loaded
from py_engine.train.batch import Batch
from py_engine.train.tasks import ClassificationTask

checkpoint = Checkpoint.load("/work/model")
config, tensors, _ = load_adapter("/work/adapter")
model = classifier_model(checkpoint.config, LoraConfig.from_peft_dict(config), 3, dropout=DROPOUT,
                         train_pooler=checkpoint.config.trains_pooler(tensors))
values = merge_loaded(model, initial_trainable(model, 0), tensors, "/work/adapter")
runtime = await GpuRuntime.create(model, ClassificationTask(3), checkpoint, values)
runtime.set_gradient_checkpointing(CHECKPOINTING)
batch = Batch(**BATCH)
metrics = await runtime.accumulate(batch, seed=SEED)
grads = {name: list(values) for name, values in (await runtime.gradients()).items()}
# a fresh DoRA adapter's magnitudes: its base weights' row norms, computed here in Python
fresh = classifier_model(checkpoint.config, LoraConfig(target_modules=["query"], use_dora=True), 3)
magnitudes = {n: list(v) for n, (_, v) in initial_trainable(fresh, 0, checkpoint).items()
              if n.endswith("lora_magnitude_vector")}
json.dumps({"loss": metrics["loss"], "correct": metrics["correct"], "grads": grads,
            "adapter": runtime.device.info.as_dict(), "magnitudes": magnitudes})
"""


def step_code(step, batch, seed, checkpointing=False):
    """`step` with dropout 0.1, the dropout seed, gradient checkpointing or not and the batch
    filled in."""
    return (step.replace("DROPOUT", "0.1").replace("SEED", str(seed))
            .replace("CHECKPOINTING", str(checkpointing))
            .replace("BATCH", json.dumps({"ids": batch.ids, "type_ids": batch.type_ids,
                                          "mask": batch.mask, "labels": batch.labels})))


@pytest.mark.parametrize("options", [{}, {"use_dora": True}, {"bias": "all", "lora_bias": True},
                                     {"target_modules": ("word_embeddings", "query", "value")}])
def test_tiny_bert_step_in_the_browser(engine_page, tmp_path, options):
    """LoRA, DoRA (on the pooler too: "dense"), LoRA with every bias trained beside it
    (PEFT's bias="all", the norms' too) and lora_B's own biases (PEFT's lora_bias), or LoRA on
    the word embedding too, with dropout; a fresh DoRA adapter's magnitudes are the host's
    row norms."""
    model_dir = po.tiny_bert_dir(tmp_path / "model", seed=51)
    options = dict(options)
    use_dora = options.get("use_dora", False)
    targets = options.pop("target_modules", ("query", "value", "dense") if use_dora else ("query", "value"))
    adapter = po.save_adapter(po.peft_model(model_dir, 3, seed=52, target_modules=targets,
                                            **options), tmp_path / "adapter")
    files = {f"/work/model/{p.name}": p.read_bytes() for p in model_dir.iterdir()}
    files.update({f"/work/adapter/{p.name}": p.read_bytes() for p in adapter.iterdir()})
    put_files(engine_page, files)
    batch = tiny_batch(53)
    reference = engine_from_peft(model_dir, adapter, 3)
    # With dropout on: the browser's masks must be the host's masks too.
    reference.model.dropout = dict.fromkeys(reference.model.dropout, 0.1)
    want_metrics = run(reference.accumulate(batch, seed=77))
    want, want_correct = want_metrics["loss"], want_metrics["correct"]
    code = step_code(STEP, batch, 77)
    got = run_json(engine_page, code)
    assert got["adapter"]["backend"] == "browser-webgpu"
    assert abs(got["loss"] - want) <= LOSS_BOUND * abs(want), (got["loss"], want)
    assert got["correct"] == want_correct
    theirs = run(reference.gradients())
    check_gradients(got["grads"], theirs)
    assert any(n.endswith("lora_magnitude_vector") for n in theirs) is use_dora
    assert ("bert.embeddings.LayerNorm.bias" in theirs) is ("bias" in options)
    assert ("bert.embeddings.word_embeddings.lora_embedding_A" in theirs) is ("word_embeddings" in targets)
    assert ("bert.encoder.layer.0.attention.self.query.lora_B.bias" in theirs) is ("lora_bias" in options)
    assert len(got["magnitudes"]) == 2
    for i in range(2):
        weight = reference.be.params[f"encoder.layer.{i}.attention.self.query.weight"]
        norms = np.linalg.norm(np.asarray(weight, np.float64), axis=1)
        mags = got["magnitudes"][f"bert.encoder.layer.{i}.attention.self.query.lora_magnitude_vector"]
        assert rel(np.asarray(mags), norms) <= 1e-6


@pytest.mark.parametrize("family", ["mpnet", "modernbert", "deberta", "albert"])
def test_tiny_encoder_step_in_the_browser(engine_page, tmp_path, family):
    """MPNet (its relative position bias on every layer's scores, RoBERTa's head), ModernBERT
    (RoPE, sliding-window layers, the exact GeGLU, norms without bias, its head), DeBERTa-v3
    (the disentangled attention's gather and scatter, its pooler trained whole) and ALBERT (its
    embeddings' projection, one layer read at every depth, gelu_new) in Pyodide + WebGPU, with
    dropout: the host's loss and gradients. DeBERTa's and ALBERT's steps recompute each layer in
    the backward (gradient checkpointing: the relative rows' gradients summed over the layers
    outlive the buffers handed on)."""
    from functools import partial

    from test_bert_gpu import runtimes
    from test_deberta import deberta_batch
    from test_modernbert import modernbert_batch
    from test_mpnet import mpnet_batch

    lora = {}
    if family == "mpnet":
        model_dir, targets, draw = po.tiny_mpnet_dir(tmp_path / "model", seed=54), ("q", "v", "o"), mpnet_batch
    elif family == "modernbert":
        model_dir, targets, draw = (po.tiny_modernbert_dir(tmp_path / "model", seed=54),
                                    ("Wqkv", "Wi"), modernbert_batch)
    elif family == "albert":
        from test_bert_oracle import random_batch

        model_dir = po.tiny_albert_dir(tmp_path / "model", seed=54)
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        targets = ("query", "value", "ffn", "embedding_hidden_mapping_in")
        draw = lambda rng, B, T: random_batch(rng, B, T, vocab, 3)      # noqa: E731
    else:
        model_dir = po.tiny_deberta_dir(tmp_path / "model", seed=54)
        targets, draw = ("query_proj", "key_proj", "dense"), partial(deberta_batch, model_dir)
        lora = dict(modules_to_save=["pooler"], bias="all")
    adapter = po.save_adapter(po.peft_model(model_dir, 3, seed=55, target_modules=targets, **lora),
                              tmp_path / "adapter")
    files = {f"/work/model/{p.name}": p.read_bytes() for p in model_dir.iterdir()}
    files.update({f"/work/adapter/{p.name}": p.read_bytes() for p in adapter.iterdir()})
    put_files(engine_page, files)
    ids, types, mask, labels = draw(np.random.default_rng(56), 4, 24)
    batch = Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())
    reference = runtimes(None, model_dir, adapter, 3, dropout=0.1, gpu=False)
    want = run(reference.accumulate(batch, seed=78))["loss"]
    step = STEP.split("# a fresh DoRA")[0] + (
        'json.dumps({"loss": metrics["loss"], "grads": grads, '
        '"adapter": runtime.device.info.as_dict()})\n')
    got = run_json(engine_page, step_code(step, batch, 78,
                                          checkpointing=family in ("deberta", "albert")))
    assert got["adapter"]["backend"] == "browser-webgpu"
    assert abs(got["loss"] - want) <= LOSS_BOUND * abs(want), (got["loss"], want)
    theirs = run(reference.gradients())
    assert {"mpnet": "classifier.dense.weight", "modernbert": "classifier.weight",
            "deberta": "pooler.dense.weight",
            "albert": "albert.encoder.embedding_hidden_mapping_in.lora_A.weight"}[family] in theirs
    check_gradients(got["grads"], theirs)
