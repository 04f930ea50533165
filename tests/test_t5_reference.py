"""The T5 family (models/t5.py on the NumPy backend) against transformers'
T5ForConditionalGeneration on tiny FLAN-T5-like checkpoints (tests/t5_checkpoints.py): logits in
float64, relative position buckets, the checkpoint and config checks."""

import json

import numpy as np
import pytest
import torch
import transformers.models.t5.modeling_t5 as t5_module

from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.models.bert_config import ConfigError
from py_engine.models.checkpoint import CheckpointError, DecoderCheckpoint
from py_engine.models.relative_position import relative_position_bucket
from py_engine.models.t5 import T5Model
from py_engine.models.t5_config import T5Config
from py_engine.train.batch import Seq2SeqBatch, seq2seq_decoder_ids
from t5_checkpoints import TINY, tiny_t5

V = TINY["vocab_size"]


def float64_layer_norm(monkeypatch):
    """T5LayerNorm takes the variance in float32 even in a float64 model; this makes it
    float64, so the rest of the computation can be compared at float64 precision."""
    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
    monkeypatch.setattr(t5_module.T5LayerNorm, "forward", forward)


def engine(path, lora=None, extra=None):
    """The model over a float64 NumPy backend holding the checkpoint (and `extra` tensors)."""
    checkpoint = DecoderCheckpoint.load(path)
    be = NumpyBackend(np.float64)
    for name in checkpoint.names():
        be.set_param(name, np.frombuffer(checkpoint.floats(name), np.float32), checkpoint.shape(name))
    for name, (shape, values) in (extra or {}).items():
        be.set_param(name, np.asarray(values, np.float64), shape)
    return T5Model(checkpoint.config, lora), be


def a_batch(B=3, S=30, T=25, seed=None):
    """Inputs long enough to reach the saturated buckets (max_distance 20), one row padded; the
    targets' padding is IGNORE_INDEX, as a collator writes it."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, V, (B, S))
    mask = np.ones((B, S), np.int64)
    mask[1, 19:] = 0
    ids[mask == 0] = 0
    labels = rng.integers(2, V, (B, T))
    labels[2, 17:] = -100
    return ids, mask, labels


def relative(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def engine_logits(model, be, ids, mask, labels):
    c = model.config
    batch = Seq2SeqBatch(ids, mask, np.asarray(seq2seq_decoder_ids(labels.tolist(), c.decoder_start_token_id,
                                                                   c.pad_token_id)))
    be.start_step(0, train=False)
    hidden, _ = model.forward(be, batch, train=False)
    return model.head_logits(be, hidden)      # as generation reads them (a head LoRA's term too)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("float64_norm", [True, False])
def test_logits_match_transformers(tmp_path, monkeypatch, float64_norm, tied):
    """FLAN-T5's separate head, and the original T5's tied, rescaled one."""
    hf = tiny_t5(tmp_path, tied=tied)
    assert (hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()) == tied
    assert hf.config.scale_decoder_outputs == tied
    if float64_norm:
        float64_layer_norm(monkeypatch)
    ids, mask, labels = a_batch()
    got = engine_logits(*engine(tmp_path), ids, mask, labels)
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                  labels=torch.as_tensor(labels)).logits.numpy().reshape(got.shape)
    # measured 7e-16 with the float64 norm; 1.4e-7 with transformers' float32 variance
    assert relative(got, want) <= (1e-12 if float64_norm else 1e-6)


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (33, 7), (6, 1000)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_match_transformers(num_buckets, max_distance, bidirectional):
    positions = torch.arange(-3000, 3001)
    want = t5_module.T5Attention._relative_position_bucket(positions, bidirectional, num_buckets,
                                                           max_distance).tolist()
    got = [relative_position_bucket(r, bidirectional, num_buckets, max_distance) for r in positions.tolist()]
    assert got == want


def test_decoder_ids_are_transformers_shift_right(tmp_path):
    hf = tiny_t5(tmp_path, decoder_start_token_id=5, pad_token_id=3)
    labels = a_batch()[2]
    want = hf._shift_right(torch.as_tensor(labels)).tolist()
    assert seq2seq_decoder_ids(labels.tolist(), 5, 3) == want


def test_config_reads_flan_t5_fields_and_refuses_what_it_does_not_run():
    fields = dict(TINY, tie_word_embeddings=False)
    c = T5Config(**fields)
    assert (c.hidden_size, c.head_dim, c.num_encoder_layers, c.num_hidden_layers) == (32, 12, 2, 3)
    assert c.activation == "gelu_tanh" and c.decoder_start_token_id == 0
    assert (c.head_name, c.output_scale) == ("lm_head.weight", 1.0)
    tied = T5Config(**dict(fields, tie_word_embeddings=True))
    assert (tied.head_name, tied.output_scale) == ("shared.weight", 32 ** -0.5)
    assert "lm_head.weight" not in tied.parameter_shapes()
    with pytest.raises(ConfigError, match="feed_forward_proj 'relu' is not supported"):
        T5Config(**dict(fields, feed_forward_proj="relu"))
    with pytest.raises(ConfigError, match="'dropout_rate' must be in"):
        T5Config(**dict(fields, dropout_rate=1.5))


def test_checkpoint_without_lm_head_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_t5(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="tensor 'lm_head.weight' is missing"):
        DecoderCheckpoint.load(tmp_path)


def test_unsupported_model_type_names_t5(tmp_path):
    tiny_t5(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "mt5"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'mt5' is not a supported decoder; supported: .*T5 \(t5\)"):
        DecoderCheckpoint.load(tmp_path)
