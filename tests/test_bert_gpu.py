"""The BERT LoRA step on the GPU backend (wgpu-native; lavapipe on CI) against the NumPy
backend in float64, which test_bert_oracle.py holds to transformers + PEFT.

Bounds are relative errors of f32 GPU arithmetic against float64: loss 1e-5, gradients 1e-4.
"""

import numpy as np
import pytest

import peft_oracle as po
from conftest import run
from test_bert_oracle import ALL_LINEARS, random_batch, rel

POOLER_TOO = ("query", "value", "dense")     # "dense" names the pooler too, as PEFT matches it
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.classifiers import classifier_model
from py_engine.models.checkpoint import Checkpoint
from py_engine.models.lora_config import LoraConfig
from py_engine.train.gpu_runtime import GpuRuntime
from py_engine.train.init import initial_trainable, merge_loaded
from py_engine.train.batch import Batch
from py_engine.train.numpy_runtime import NumpyRuntime
from py_engine.train.tasks import ClassificationTask

LOSS_BOUND = 1e-5
GRAD_BOUND = 1e-4


def runtimes(device, model_dir, adapter_dir, num_labels, dropout=0.0, base_dtype="f32",
             lora_dropout=None, gpu=True, **task_options):
    """(NumPy float64 runtime, GPU runtime) of the adapter on the checkpoint's classifier;
    gpu=False: the NumPy one alone."""
    checkpoint = Checkpoint.load(model_dir)
    config, tensors, _ = load_adapter(adapter_dir)
    if lora_dropout is not None:
        config["lora_dropout"] = lora_dropout
    model = classifier_model(checkpoint.config, LoraConfig.from_peft_dict(config), num_labels,
                             dropout=dropout, train_pooler=checkpoint.config.trains_pooler(tensors))
    values = merge_loaded(model, initial_trainable(model, 0), tensors, adapter_dir)
    task = ClassificationTask(num_labels, **task_options)
    reference = NumpyRuntime(model, task, checkpoint, values, dtype=np.float64)
    if not gpu:
        return reference
    gpu = run(GpuRuntime.create(model, task, checkpoint, values, device=device, base_dtype=base_dtype))
    return reference, gpu


def compare_step(reference, gpu, batch, seed=0, loss_bound=LOSS_BOUND, grad_bound=GRAD_BOUND):
    want = run(reference.accumulate(batch, seed=seed))
    got = run(gpu.accumulate(batch, seed=seed))
    assert abs(got["loss"] - want["loss"]) <= loss_bound * abs(want["loss"]), (got, want)
    assert got["correct"] == want["correct"] and got["counted"] == want["counted"] == batch.B
    check_gradients(run(gpu.gradients()), run(reference.gradients()), grad_bound)


def check_gradients(got, want, bound=GRAD_BOUND):
    """Each of `got`'s f32 gradients (flat) within `bound` of the float64 reference's, by
    relative error; one that is zero in exact arithmetic (a key projection's bias, when biases
    train) is judged against a small share of the whole step's gradient instead of its own."""
    assert set(got) == set(want)
    whole = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in want.values()))
    for name, values in got.items():
        ref = np.asarray(want[name], np.float64).ravel()
        diff = np.asarray(values, np.float64) - ref
        err = np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-5 * whole)
        assert err <= bound, f"{name}: relative error {err:.2e} > {bound}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model_dir = po.tiny_bert_dir(path / "model", seed=11)
    adapters = {}
    for targets in (("query", "value"), ALL_LINEARS, POOLER_TOO):
        peft = po.peft_model(model_dir, 3, target_modules=targets, seed=12)
        adapters[targets] = po.save_adapter(peft, path / ("adapter-" + "-".join(targets)))
    peft = po.peft_model(model_dir, 3, target_modules=POOLER_TOO, seed=13, use_dora=True)
    adapters["dora"] = po.save_adapter(peft, path / "adapter-dora")
    peft = po.peft_model(model_dir, 3, target_modules=("value",), seed=14, bias="all")
    adapters["bias"] = po.save_adapter(peft, path / "adapter-bias")
    return model_dir, adapters


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def tiny_batch(seed, B=4, T=12):
    ids, types, mask, labels = random_batch(np.random.default_rng(seed), B, T, 120, 3)
    return Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())


# "bias": PEFT's bias="all", every bias trains beside the adapter (the norms' down to the
# embeddings')
@pytest.mark.parametrize("targets", [("query", "value"), ALL_LINEARS, POOLER_TOO, "dora", "bias"])
def test_gpu_step_matches_reference(device, tiny, targets):
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters[targets], 3)
    compare_step(reference, gpu, tiny_batch(1))


def test_gpu_dropout_draws_the_reference_masks(device, tiny):
    """Counter-based dropout: with the same seed the GPU drops exactly what NumPy drops."""
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters["query", "value"], 3, dropout=0.1,
                              lora_dropout=0.1)
    compare_step(reference, gpu, tiny_batch(2), seed=1234)
    # A different seed gives a different loss: dropout is really on.
    no_drop, _ = runtimes(device, model_dir, adapters["query", "value"], 3)
    assert abs(run(no_drop.accumulate(tiny_batch(2)))["loss"] - run(reference.accumulate(tiny_batch(2), seed=99))["loss"]) > 1e-4


def test_gpu_dora_with_dropout_matches_reference(device, tiny):
    """DoRA's dropout path (PEFT scales the dropped input's part only) draws the same masks
    and gives the same step on the GPU; a different seed drops otherwise."""
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters["dora"], 3, lora_dropout=0.2)
    compare_step(reference, gpu, tiny_batch(2), seed=77)
    assert abs(run(reference.accumulate(tiny_batch(2), seed=78))["loss"]
               - run(reference.accumulate(tiny_batch(2), seed=77))["loss"]) > 1e-6


@pytest.mark.parametrize("base_dtype", ["f16", "int8"])
def test_gpu_dora_keeps_its_linears_f32(device, tiny, base_dtype):
    """With compressed base weights the DoRA-wrapped linears stay f32 (their row norms need
    W + s B.A): the step matches the f32 reference to f16's rounding of the other linears,
    and merging (which needs f32 wrapped weights) works."""
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters["dora"], 3, base_dtype=base_dtype)
    wrapped = {m.weight for m in gpu.model.merge_names()}
    assert all(not gpu.be.params[w].half and gpu.be.params[w].quant is None for w in wrapped)
    others = [n for n in gpu.model.frozen_names()
              if gpu.model.is_linear_weight(n) and n not in wrapped]
    assert others and all(gpu.be.params[n].half or gpu.be.params[n].quant is not None for n in others)
    from py_engine.backends.gpu_backend import planned_base_bytes

    shapes = {n: gpu.be.params[n].shape for n in gpu.model.frozen_names()}
    assert planned_base_bytes(gpu.model, shapes, base_dtype) == gpu.base_weight_bytes()
    compare_step(reference, gpu, tiny_batch(4), loss_bound=2e-2, grad_bound=5e-2)


def test_gpu_dora_merged_outputs(device, tiny):
    """DoRA's merged weights (magnitude / row norm * (W + s B.A)) give the unmerged outputs,
    on the GPU as in NumPy."""
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters["dora"], 3)
    batch = tiny_batch(6)
    want = np.array(run(reference.outputs(batch)))
    unmerged = np.array(run(gpu.outputs(batch)))
    run(reference.merge())
    run(gpu.merge())
    gpu.forget_programs()
    assert rel(np.array(run(reference.outputs(batch))), want) <= 1e-12
    assert rel(np.array(run(gpu.outputs(batch))), want) <= 1e-5
    assert rel(unmerged, want) <= 1e-5


def test_gpu_f16_base_weights(device, tiny):
    """Base linears stored as f16: the same math on f16-rounded weights; the loss moves by
    little against f32 storage (reported in the assertion message)."""
    model_dir, adapters = tiny
    _, gpu32 = runtimes(device, model_dir, adapters["query", "value"], 3)
    _, gpu16 = runtimes(device, model_dir, adapters["query", "value"], 3, base_dtype="f16")
    batch = tiny_batch(3)
    l32 = run(gpu32.accumulate(batch))["loss"]
    l16 = run(gpu16.accumulate(batch))["loss"]
    assert 0 < abs(l16 - l32) <= 1e-3 * abs(l32), f"f16 storage moved the loss by {abs(l16 - l32):.2e}"


def test_gpu_training_tracks_reference(device, tiny):
    model_dir, adapters = tiny
    reference, gpu = runtimes(device, model_dir, adapters["query", "value"], 3)
    ours, theirs = [], []
    for step in range(1, 11):
        batch = tiny_batch(100 + step)
        theirs.append(run(reference.accumulate(batch))["loss"])
        run(reference.update(lr=5e-3, max_norm=0.5, weight_decay=0.01))
        ours.append(run(gpu.accumulate(batch))["loss"])
        run(gpu.update(lr=5e-3, max_norm=0.5, weight_decay=0.01))
    assert rel(ours, np.array(theirs)) <= 1e-4, (ours, theirs)
    logits_ref = np.array(run(reference.outputs(tiny_batch(5))))
    logits_gpu = np.array(run(gpu.outputs(tiny_batch(5))))
    assert np.abs(softmax(logits_ref) - softmax(logits_gpu)).max() <= 1e-5


def test_minilm_gpu_step_matches_peft(device, tmp_path):
    peft = po.peft_model(po.MINILM_DIR, 2, seed=21)
    adapter = po.save_adapter(peft, tmp_path / "adapter")
    ids, types, mask, labels = random_batch(np.random.default_rng(22), 2, 16, 30522, 2)
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels, token_type_ids=types)
    _, gpu = runtimes(device, po.MINILM_DIR, adapter, 2)
    got = run(gpu.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))["loss"]
    assert abs(got - loss) <= LOSS_BOUND * abs(loss), (got, loss)
    ours = run(gpu.gradients())
    for key, ref in grads.items():
        err = rel(np.asarray(ours[key.removeprefix("base_model.model.")], np.float64), ref.ravel())
        assert err <= GRAD_BOUND, f"{key}: relative error {err:.2e}"
