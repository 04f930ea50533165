"""The T5 family on the GPU runtime (wgpu-native; lavapipe here): one LoRA step's loss and
every LoRA gradient, and one full fine-tuning step's every gradient, against the NumPy runtime
in float64 (which tests/test_t5_lora_oracle.py checks against transformers + PEFT and torch
autograd), and training runs (LoRA, full) through the trainer whose losses equal the NumPy
runtime's."""

import numpy as np
import pytest

from conftest import run
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.lora_config import LoraConfig
from py_engine.models.t5 import T5Model
from py_engine.train.config import CausalTrainConfig
from py_engine.train.gpu_runtime import GpuRuntime
from py_engine.train.numpy_runtime import NumpyRuntime
from py_engine.train.seq2seq import Seq2SeqModel
from py_engine.train.tasks import Seq2SeqTask
from py_engine.train.init import merge_loaded
from test_t5_lora_oracle import ALL, peft_t5
from test_t5_reference import a_batch, relative

# f32 on the GPU against float64: the decoder families' bounds.
LOSS_BOUND, GRAD_BOUND = 1e-5, 1e-4


def runtimes(device, path, full=False):
    """NumPy (float64) and GPU runtimes of the checkpoint under path / "model", training the
    adapter under path / "adapter", or with `full` every weight."""
    checkpoint = DecoderCheckpoint.load(path / "model")
    if full:
        model = T5Model(checkpoint.config, None)
        values = {n: (s, np.frombuffer(checkpoint.floats(n), np.float32)) for n, s in model.trainable.items()}
    else:
        adapter, tensors, _ = load_adapter(path / "adapter")
        model = T5Model(checkpoint.config, LoraConfig.from_peft_dict(adapter))
        # as an adapter loads (a head's LoRA beside PEFT's copy of the head: base_layer)
        values = {n: (s, np.asarray(v, np.float32))
                  for n, (s, v) in merge_loaded(model, {}, tensors, "adapter").items()}
    task = Seq2SeqTask(checkpoint.config.pad_token_id, checkpoint.config.decoder_start_token_id)
    host = NumpyRuntime(model, task, checkpoint, values, dtype=np.float64)
    gpu = run(GpuRuntime.create(T5Model(checkpoint.config, model.lora), task, checkpoint, values,
                                device=device))
    return host, gpu, task


@pytest.mark.parametrize("targets, tied", [(["q", "v"], False), (ALL, False), (ALL, True),
                                           (["q", "v", "lm_head"], False), (None, False), (None, True)])
def test_step_matches_numpy(device, tmp_path, targets, tied):
    """targets None: full fine-tuning (the shared embedding, both bias tables, the head)."""
    if targets is None:
        from t5_checkpoints import tiny_t5
        tiny_t5(tmp_path / "model", tied=tied)
    else:
        peft_t5(tmp_path, targets, tied=tied)
    host, gpu, task = runtimes(device, tmp_path, full=targets is None)
    ids, mask, labels = a_batch()
    from py_engine.data.seq2seq import Seq2SeqIds

    examples = [Seq2SeqIds(list(i[m == 1]), [int(y) for y in l if y != -100])
                for i, m, l in zip(ids, mask, labels)]
    batch = task.batch(examples, [0, 1, 2], 8, 64)
    want = run(host.accumulate(batch))
    got = run(gpu.accumulate(batch))
    assert abs(got["loss"] - want["loss"]) <= LOSS_BOUND * want["loss"]
    want_grads, got_grads = run(host.gradients()), run(gpu.gradients())
    assert set(got_grads) == set(want_grads) and len(want_grads) > 0
    for name, ref in want_grads.items():
        assert relative(np.asarray(got_grads[name]).reshape(ref.shape), ref) <= GRAD_BOUND, name


@pytest.mark.parametrize("mode, lr", [("lora", 1e-2), ("full", 1e-3)])
def test_training_run_matches_numpy(device, tmp_path, mode, lr):
    from t5_checkpoints import tiny_t5
    from t5_tokenizer import t5_tokenizer
    from test_t5_training import PAIRS
    from py_engine.data.seq2seq import Seq2SeqExample, encode_seq2seq_examples

    tiny_t5(tmp_path)
    tok = t5_tokenizer()
    encoded, _ = encode_seq2seq_examples([Seq2SeqExample(*p) for p in PAIRS], tok)
    config = CausalTrainConfig(epochs=4, lr=lr, batch_size=2, max_length=64, mode=mode)
    losses = []
    for backend in ("numpy", "gpu"):
        model = run(Seq2SeqModel.create(tmp_path, tok, seed=5, backend=backend, device=device, mode=mode))
        losses.append([s.loss for s in run(model.fit(encoded, config))])
    assert len(losses[0]) == 8
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


@pytest.mark.parametrize("adapter, length", [(False, 9), (True, 21)])
def test_greedy_generation_matches_transformers(device, tmp_path, adapter, length):
    """32 greedy tokens from the GPU decoder (the input padded to its bucket, the decoder's
    cache read whole under a mask) equal transformers' generate, with the base model and with
    a PEFT adapter on every linear."""
    import torch

    from py_engine.generate.generation import generate
    from py_engine.generate.seq2seq import GpuSeq2SeqDecoder
    from t5_checkpoints import TINY, tiny_t5
    from test_t5_generate import _Ids

    same = dict(num_decoder_layers=TINY["num_layers"])      # see test_t5_generate
    if adapter:
        hf = peft_t5(tmp_path, ALL, **same).eval()
        model = run(Seq2SeqModel.load(tmp_path / "model", None, tmp_path / "adapter", backend="gpu",
                                      device=device))
    else:
        hf = tiny_t5(tmp_path, **same)
        model = run(Seq2SeqModel.create(tmp_path, None, backend="gpu", device=device))
    decoder = model.decoder(max_length=64)
    assert isinstance(decoder, GpuSeq2SeqDecoder)
    source = [int(t) for t in np.random.default_rng(7).integers(2, TINY["vocab_size"], length)]
    with torch.no_grad():
        out = hf.generate(input_ids=torch.as_tensor([source]), max_new_tokens=32, do_sample=False,
                          num_beams=1, eos_token_id=None, min_new_tokens=32)
    result = run(generate(decoder, _Ids(), source, max_new_tokens=32, greedy=True))
    assert result.ids == out[0, 1:].tolist()


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_the_switch_to_full_fine_tuning_folds_a_head_lora(device, tmp_path, backend):
    """Hybrid training's switch folds FLAN-T5's head LoRA into lm_head with the layers' pairs:
    the logits stay as they were."""
    from export_models import check_switch_to_full_keeps_outputs
    from py_engine.train.seq2seq import Seq2SeqModel
    from t5_tokenizer import t5_tokenizer

    peft_t5(tmp_path, ["q", "v", "lm_head"])
    model = run(Seq2SeqModel.load(tmp_path / "model", t5_tokenizer(), tmp_path / "adapter",
                                  backend=backend, device=device))
    check_switch_to_full_keeps_outputs(model, [5, 9, 11, 3, 7])
