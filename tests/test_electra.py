"""ELECTRA as a classifier, against transformers + PEFT: BERT's encoder under "electra." with
ElectraForSequenceClassification's head (a dropout, classifier.dense, GELU, a dropout,
classifier.out_proj, trained whole as PEFT's modules_to_save trains it): one LoRA step's loss
and every gradient, PEFT's adapters read here on both backends and ours read by PEFT, the GPU
step against NumPy with dropout, the merged and ONNX exports."""

import numpy as np
import pytest
import torch

import peft_oracle as po
from encoder_checks import (check_classifier_checkpoint, check_exports, check_gpu_step,
                            check_peft_step, peft_adapter)
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip
from test_bert_oracle import random_batch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_electra_dir(tmp_path_factory.mktemp("electra") / "model", seed=31)


@pytest.mark.parametrize("targets", [("query", "value"), ("query", "key", "value", "dense")])
def test_step_matches_peft(tmp_path, tiny, targets):
    adapter, peft = peft_adapter(tiny, tmp_path / "adapter", targets, dtype=torch.float64)
    ids, types, mask, labels = random_batch(np.random.default_rng(), 4, 11, 120, 3)
    check_peft_step(tiny, adapter, peft, ids, types, mask, labels, token_type_ids=types)


def test_a_peft_adapter_round_trips(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=4)
    before, after, _ = check_round_trip(tiny, adapter, tmp_path / "trained", device)
    assert np.abs(after["classifier.dense.weight"] - before["classifier.dense.weight"]).max() > 1e-4


def test_gpu_step_matches_numpy_with_dropout(tmp_path, tiny, device):
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", ("query", "value", "dense"), seed=6)
    check_gpu_step(device, tiny, adapter, *random_batch(np.random.default_rng(), 4, 12, 120, 3))


def test_merged_and_onnx_exports(tmp_path, tiny):
    """The merged classifier is ElectraForSequenceClassification; the ONNX graph's head
    applies GELU."""
    adapter, _ = peft_adapter(tiny, tmp_path / "adapter", seed=7)
    inputs = check_exports(tiny, adapter, tmp_path, "ElectraForSequenceClassification", TEXTS, LABELS)
    assert inputs == ["input_ids", "attention_mask", "token_type_ids"]


def test_a_fine_tuned_classifier_checkpoint_reads_its_encoder(tmp_path, tiny):
    """ElectraForSequenceClassification saves the encoder under "electra." (a fine-tuned
    ELECTRA as shared): read as the bare ElectraModel's tensors."""
    check_classifier_checkpoint(tiny, "ElectraForSequenceClassification", tmp_path / "fine_tuned")
