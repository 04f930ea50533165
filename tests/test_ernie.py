"""ERNIE as a classifier, against transformers + PEFT: BERT's encoder and head under "ernie.",
ERNIE 3.0's embeddings adding the task type table's row 0 to every token (use_task_id; read as
the token type rows with that row added, the checkpoint's tables exported as they are). One
LoRA step's loss and every gradient in float64, PEFT's adapters on both backends and ours read
by PEFT, the GPU step with dropout, the merged and ONNX exports, and an ERNIE without task
types."""

import numpy as np
import pytest
import torch

import peft_oracle as po
from encoder_checks import check_exports, check_gpu_step, check_peft_step, peft_adapter
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip
from test_bert_oracle import random_batch
from py_engine.models.checkpoint import TYPES_AND_TASK, Checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_ernie_dir(tmp_path_factory.mktemp("ernie") / "model", seed=23)


@pytest.mark.parametrize("use_task_id, bias", [(True, "none"), (True, "all"), (False, "none")])
def test_step_matches_peft(tmp_path, tiny, use_task_id, bias):
    model_dir = tiny if use_task_id else po.tiny_ernie_dir(tmp_path / "plain", seed=24,
                                                           use_task_id=False)
    adapter, peft = peft_adapter(model_dir, tmp_path / "adapter", ("query", "value", "dense"),
                                 dtype=torch.float64, bias=bias)
    if use_task_id:
        read_as_here(peft, model_dir)
    ids, types, mask, labels = random_batch(np.random.default_rng(), 4, 11, 120, 3)
    check_peft_step(model_dir, adapter, peft, ids, types, mask, labels, token_type_ids=types,
                    head=("classifier.weight",), bounds=(1e-12, 1e-10))


def read_as_here(peft, model_dir):
    """The oracle's token type rows set to the one table read here (each row plus task 0's,
    summed once in float32, as a float32 model's own sum is) and task 0's row zeroed: the
    embeddings then sum to the same numbers on both sides, and the step compares in float64
    throughout (with float32's rounding of that sum on one side only, a random batch now and
    then passed 1e-6 in a gradient). That the table is the two rows' sum is the next test's."""
    checkpoint = Checkpoint.load(model_dir)
    table = np.asarray(checkpoint.floats(TYPES_AND_TASK), np.float64)
    embeddings = peft.get_base_model().ernie.embeddings
    with torch.no_grad():
        embeddings.token_type_embeddings.weight.copy_(
            torch.from_numpy(table.reshape(checkpoint.shape(TYPES_AND_TASK))))
        embeddings.task_type_embeddings.weight[0].zero_()


def test_the_task_row_is_added_to_the_token_type_rows(tiny):
    checkpoint = Checkpoint.load(tiny)
    types = np.asarray(checkpoint.floats("embeddings.token_type_embeddings.weight")).reshape(2, 32)
    task = np.asarray(checkpoint.floats("embeddings.task_type_embeddings.weight")).reshape(3, 32)
    both = np.asarray(checkpoint.floats(TYPES_AND_TASK)).reshape(checkpoint.shape(TYPES_AND_TASK))
    assert np.allclose(both, types + task[0], rtol=0, atol=1e-7)
    assert TYPES_AND_TASK not in checkpoint.names()
    halves = np.frombuffer(np.asarray(checkpoint.f16_bits(TYPES_AND_TASK), np.uint16).tobytes(),
                           np.float16)
    assert np.array_equal(halves, both.ravel().astype(np.float16))


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=4)
    before, after, _ = check_round_trip(tiny, adapter, tmp_path / "trained", device)
    assert np.abs(after["classifier.weight"] - before["classifier.weight"]).max() > 1e-4


def test_gpu_step_matches_numpy_with_dropout(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ("query", "value", "dense"), seed=6)
    check_gpu_step(device, tiny, adapter, *random_batch(np.random.default_rng(), 4, 12, 120, 3))


def test_merged_and_onnx_exports(tmp_path, tiny):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=7)
    inputs = check_exports(tiny, adapter, tmp_path, "ErnieForSequenceClassification", TEXTS, LABELS)
    assert inputs == ["input_ids", "attention_mask", "token_type_ids"]
