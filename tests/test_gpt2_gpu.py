"""The GPT-2 family on the GPU backend (wgpu-native; lavapipe here): one LoRA step and one full
fine-tuning step recorded on the GPU against the NumPy backend in float64 (which
tests/test_gpt2_lora_oracle.py checks against transformers + PEFT), and 32 greedy tokens from
the GPU decoder equal to transformers'."""

import numpy as np
import pytest
import torch

from conftest import run
from gpt2_checkpoints import TINY, tiny_dialogpt_dir, tiny_gpt2
from py_engine.backends.gpu_backend import GpuBackend, Kernels, Tensor
from py_engine.formats.peft_adapter import load_adapter
from py_engine.generate import GpuDecoder
from py_engine.kernels.cross_entropy import decode_metrics
from py_engine.kernels.dropout import pack_step
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.gpt2 import Gpt2Model
from py_engine.models.llama import shift_labels
from py_engine.models.lora_config import LoraConfig
from py_engine.train.batch import Batch
from test_chat_model import check_gpu_run
from test_gpt2_lora_oracle import ALL, DROPOUT, a_batch, engine_step, peft_gpt2, relative
from test_gpt2_reference import hf_greedy

# f32 on the GPU against float64: the Llama family's bounds (lavapipe measured: loss 1e-7,
# gradients 6e-7 LoRA, 3e-7 full).
LOSS_BOUND, GRAD_BOUND = 1e-5, 1e-4


def gpu_step(device, model, checkpoint, extra, ids, mask, labels, seed=0):
    """Loss and gradients of one step of any decoder family recorded on the GPU backend."""
    be = GpuBackend(device, run(Kernels.load(device, decoder=True,
                                             head_dim=getattr(model.config, "head_dim", None))))
    be.step.write(pack_step(seed, 0))          # the dropout masks' seed
    for name in checkpoint.names():
        be.params[name] = Tensor(device.buffer_from(checkpoint.floats(name)), checkpoint.shape(name))
    for name, (shape, values) in extra.items():
        be.params[name] = Tensor(device.buffer_from(np.asarray(values, np.float32)), shape)
    for name, shape in model.trainable.items():
        be.grads[name] = be.new(*shape)
    u32 = lambda a: Tensor(device.buffer_from(np.asarray(a, np.uint32)), np.shape(a))
    B, T = ids.shape
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist())
    batch.ids, batch.mask = u32(ids), u32(mask)
    program = device.program()
    be.record(program)
    hidden, saved = model.forward(be, batch)
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name), u32(shift_labels(labels.tolist())),
                                  dweight=model.head_grad(be), chunk=40,
                                  bias=model.head_bias_param(be), dbias=model.head_bias_grad(be),
                                  softcap=model.logit_softcap)
    model.backward(be, dh, saved, batch)
    program.read(metrics)
    names = list(model.trainable)
    for name in names:
        program.read(be.grads[name].buffer)
    values = run(program.run())
    grads = {n: np.frombuffer(bytes(v), np.float32).reshape(model.trainable[n])
             for n, v in zip(names, values[1:])}
    return decode_metrics(values[0])["loss"], grads


# f32 rounding in a backward pass is relative to what flows through it: any one tensor's
# gradient error was at most ~1.2e-7 of the whole step's gradient norm (Phi-2, full fine-tuning).
# A tensor whose own gradient is a tiny part of the whole (Phi-2's key projection in the last
# layer, 1e-6 of it, its bias exactly zero on the dimensions without rotary) is judged against
# this share of the whole instead of its own size (it failed 1 run in 100 on its own size).
GRAD_FLOOR = 1e-5


def check(got_loss, got, want_loss, want):
    assert abs(got_loss - want_loss) <= LOSS_BOUND * abs(want_loss)
    whole = np.sqrt(sum(np.sum(np.asarray(ref, np.float64) ** 2) for ref in want.values()))
    for name, ref in want.items():
        diff = np.asarray(got[name], np.float64) - ref
        err = np.linalg.norm(diff) / max(np.linalg.norm(ref), GRAD_FLOOR * whole)
        assert np.all(np.isfinite(got[name])) and err <= GRAD_BOUND, (name, err)


@pytest.mark.parametrize("lora", [None, dict(use_dora=True),       # DoRA on Conv1D layers
                                  dict(bias="all")])       # every bias trains, the norms' too
def test_lora_step_on_the_gpu_matches_numpy(tmp_path, device, lora):
    peft_gpt2(tmp_path, ALL, lora)
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = Gpt2Model(checkpoint.config, LoraConfig.from_peft_dict(config))
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, tensors, ids, mask, labels)
    got_loss, got = gpu_step(device, model, checkpoint, tensors, ids, mask, labels)
    check(got_loss, got, want_loss, want)


def test_lora_step_with_dropout_on_the_gpu_matches_numpy(tmp_path, device):
    """Embedding, residual and attention dropout on: the GPU draws the NumPy backend's masks from the same
    seed (which tests/test_gpt2_lora_oracle.py checks against PEFT with those masks), so the
    step's loss and gradients agree; another seed draws other masks: other gradients."""
    peft_gpt2(tmp_path, ALL, **DROPOUT)
    config, tensors, _ = load_adapter(tmp_path / "adapter")
    checkpoint = DecoderCheckpoint.load(tmp_path / "model")
    model = Gpt2Model(checkpoint.config, LoraConfig.from_peft_dict(config))
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, tensors, ids, mask, labels, seed=11)
    got_loss, got = gpu_step(device, model, checkpoint, tensors, ids, mask, labels, seed=11)
    check(got_loss, got, want_loss, want)
    _, other = gpu_step(device, model, checkpoint, tensors, ids, mask, labels, seed=12)
    moved = min(relative(other[name], ref) for name, ref in want.items())
    assert moved > 100 * GRAD_BOUND, moved


@pytest.mark.parametrize("dropout", [{}, DROPOUT])
def test_full_finetuning_step_on_the_gpu_matches_numpy(tmp_path, device, dropout):
    tiny_gpt2(tmp_path, **dropout)
    checkpoint = DecoderCheckpoint.load(tmp_path)
    model = Gpt2Model(checkpoint.config, None)
    ids, mask, labels = a_batch()
    want_loss, want = engine_step(model, checkpoint, {}, ids, mask, labels, seed=3)
    got_loss, got = gpu_step(device, model, checkpoint, {}, ids, mask, labels, seed=3)
    check(got_loss, got, want_loss, {n: g for n, g in want.items()})


def f16_rounded(hf, tables):
    """transformers on the f16-rounded linear weights the GPU decoder holds with half=True
    (every matrix but the named embedding tables)."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() == 2 and not any(t in name for t in tables):
                p.copy_(p.half().double())


def gpu_greedy(device, path, prompt, half, n=32):
    """The GPU decoder's n greedy tokens after `prompt` (a cache of 64)."""
    decoder = run(GpuDecoder.load(device, path, half=half, max_length=64))
    tokens, logits = [], run(decoder.prefill(prompt))
    for _ in range(n):
        tokens.append(int(np.argmax(logits)))
        logits = run(decoder.step(tokens[-1]))
    return tokens


@pytest.mark.parametrize("half", [False, True])
def test_gpu_greedy_generation_matches_transformers(tmp_path, device, half):
    hf = tiny_gpt2(tmp_path, initializer_range=0.2)
    if half:
        f16_rounded(hf, ("wte", "wpe"))
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, TINY["vocab_size"], 5)]
    assert gpu_greedy(device, tmp_path, prompt, half) == hf_greedy(hf, prompt)


def test_gpt2_chat_model_on_the_native_gpu_matches_numpy(tmp_path):
    """ChatModel's LoRA training run (dropout on, as DialoGPT's config has it) and greedy reply
    on the GPU backend equal the NumPy backend's (tests/test_gpt2_browser.py runs it in
    Chromium)."""
    check_gpu_run(tiny_dialogpt_dir(tmp_path / "dialogpt", initializer_range=0.2, **DROPOUT), ALL)
