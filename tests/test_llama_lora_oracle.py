"""Llama-family LoRA training step against transformers + PEFT: loss and every LoRA gradient,
NumPy backend in float64 (transformers keeps RMSNorm and the rotary tables in float32 even in
a float64 model, so agreement is near float32 precision: bounds 1e-6 loss, 1e-5 gradients)."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.formats import safetensors
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.llama import LlamaModel, shift_labels
from py_engine.models.llama_config import LlamaConfig
from py_engine.models.lora_config import LoraConfig
from py_engine.train.batch import Batch
from test_gpt2_lora_oracle import peft_adapter
import peft_oracle as po

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# ranks and alphas of their own for some modules (PEFT's rank_pattern and alpha_pattern)
PATTERNS = dict(rank_pattern={"k_proj": 2, r"layers\.1\.mlp\.down_proj": 7, "up_proj": 3},
                alpha_pattern={"^model.layers.0.self_attn.o_proj": 20, "gate_proj": 3, "k_proj": 5})


def peft_decoder(path, model_class, config, targets, seed=0, **options):
    torch.manual_seed(seed)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    return peft_adapter(base, path, targets, **options)


@pytest.mark.parametrize("model_class, hf_config, targets, options", [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["q_proj", "v_proj"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True), ALL, {}),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), ALL, {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ALL, PATTERNS),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), ALL, dict(PATTERNS, use_rslora=True)),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ALL, dict(use_dora=True)),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), ["q_proj", "v_proj", "down_proj"],
     dict(PATTERNS, use_dora=True)),
    # PEFT's bias option: Qwen2's q, k and v biases train (all), or those of the wrapped ones
    (Qwen2ForCausalLM, Qwen2Config(**TINY), ["q_proj", "o_proj"], dict(bias="all")),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), ALL, dict(bias="lora_only", use_dora=True)),
    # PEFT's lora_bias: a bias on each lora_B, on layers without a bias (Llama) and with one
    # that trains too (Qwen2's q, k and v)
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ALL, dict(PATTERNS, lora_bias=True)),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), ALL, dict(bias="lora_only", lora_bias=True)),
])
def test_decoder_lora_step_matches_peft(tmp_path, model_class, hf_config, targets, options):
    peft = peft_decoder(tmp_path, model_class, hf_config, targets, **options)
    rng = np.random.default_rng()
    B, T = 3, 10
    ids = rng.integers(0, 96, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[2, 7:] = 0                                   # a right-padded row
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100                              # the prompt does not count
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}

    config = LlamaConfig.from_file(tmp_path / "model")
    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    model = LlamaModel(config, LoraConfig.from_peft_dict(adapter_config))
    be = NumpyBackend(np.float64)
    file = safetensors.load(tmp_path / "model" / "model.safetensors")
    for name, shape in config.parameter_shapes().items():
        be.set_param(name, np.frombuffer(file.floats(name), np.float32), shape)
    for name, (shape, values) in tensors.items():
        be.set_param(name, np.asarray(values, np.float64), shape)
        be.add_grad(name)
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist())
    hidden, saved = model.forward(be, batch)
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name), np.asarray(shift_labels(labels.tolist())))
    model.backward(be, dh, saved, batch)
    loss = metrics["loss"]

    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    po.check_gradients(be.grads, want, 1e-5)


@pytest.mark.parametrize("options", [PATTERNS, dict(PATTERNS, use_dora=True),
                                     dict(PATTERNS, lora_bias=True)])
def test_decoder_lora_step_on_the_gpu_matches_numpy(tmp_path, device, options):
    """The same step recorded on the GPU backend (lavapipe) against the NumPy backend in float64:
    loss 1e-5, gradients 1e-4 (some modules with a rank and alpha of their own; LoRA, DoRA,
    and LoRA with lora_B biases)."""
    from conftest import run
    from py_engine.backends.gpu_backend import GpuBackend, Kernels, Tensor
    from py_engine.kernels.cross_entropy import decode_metrics

    peft_decoder(tmp_path, Qwen2ForCausalLM, Qwen2Config(**TINY), ALL, **options)
    config = LlamaConfig.from_file(tmp_path / "model")
    adapter_config, tensors, _ = load_adapter(tmp_path / "adapter")
    model = LlamaModel(config, LoraConfig.from_peft_dict(adapter_config))
    file = safetensors.load(tmp_path / "model" / "model.safetensors")
    rng = np.random.default_rng()
    B, T = 2, 9
    ids = rng.integers(0, 96, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :2] = -100
    shifted = shift_labels(labels.tolist())

    want, ref_grads = numpy_step(tmp_path, ids, mask, labels)

    kernels = run(Kernels.load(device, decoder=True))
    be = GpuBackend(device, kernels)
    for name, shape in config.parameter_shapes().items():
        be.params[name] = Tensor(device.buffer_from(file.floats(name)), shape)
    for name, (shape, values) in tensors.items():
        be.params[name] = Tensor(device.buffer_from(np.asarray(values, np.float32)), shape)
        be.grads[name] = be.new(*shape)
    u32 = lambda a: Tensor(device.buffer_from(np.asarray(a, np.uint32)), np.shape(a))
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist())
    batch.ids, batch.mask = u32(ids), u32(mask)
    program = device.program()
    be.record(program)
    hidden, saved = model.forward(be, batch)
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name), u32(shifted), chunk=40)
    model.backward(be, dh, saved, batch)
    program.read(metrics)
    for name in tensors:
        program.read(be.grads[name].buffer)
    values = run(program.run())
    got = decode_metrics(values[0])["loss"]
    check_against(want, ref_grads, got, {n: np.frombuffer(bytes(d), np.float32) for n, d in zip(tensors, values[1:])})


def numpy_step(path, ids, mask, labels, seed=0, noise_alpha=None, smoothing=0.0):
    """Loss and LoRA gradients of one step on the NumPy backend in float64, for the checkpoint
    and adapter under `path` (as peft_decoder wrote them); NEFTune's noise for `noise_alpha`
    drawn from `seed`; label `smoothing`."""
    config = LlamaConfig.from_file(path / "model")
    adapter_config, tensors, _ = load_adapter(path / "adapter")
    model = LlamaModel(config, LoraConfig.from_peft_dict(adapter_config))
    file = safetensors.load(path / "model" / "model.safetensors")
    ref = NumpyBackend(np.float64)
    for name, shape in config.parameter_shapes().items():
        ref.set_param(name, np.frombuffer(file.floats(name), np.float32), shape)
    for name, (shape, values) in tensors.items():
        if ".base_layer." not in name:        # PEFT's copies of the base tables it wraps
            ref.set_param(name, np.asarray(values, np.float64), shape)
            ref.add_grad(name)
    B, T = np.shape(ids)
    batch = Batch(np.asarray(ids).tolist(), [[0] * T] * B, np.asarray(mask).tolist())
    batch.noise_alpha = noise_alpha
    ref.start_step(seed)
    hidden, saved = model.forward(ref, batch)
    metrics, dh = model.head_loss(ref, hidden, np.asarray(shift_labels(np.asarray(labels).tolist())),
                                  smoothing=smoothing)
    model.backward(ref, dh, saved, batch)
    return metrics["loss"], ref.grads


def check_against(want, ref_grads, got, got_grads):
    """f32 GPU results against the float64 reference: loss 1e-5, gradients 1e-4."""
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    assert set(got_grads) == set(ref_grads)
    for name, g in got_grads.items():
        ref = ref_grads[name]
        err = np.linalg.norm(np.asarray(g, np.float64) - ref.ravel()) / np.linalg.norm(ref)
        assert err <= 1e-4, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("model_class, hf_config", [
    (LlamaForCausalLM, HFLlamaConfig(**TINY)),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True)),
    (Qwen2ForCausalLM, Qwen2Config(**TINY)),
])
def test_full_finetuning_step_matches_transformers(tmp_path, model_class, hf_config):
    """Every weight trains: the gradient of each (embeddings, tied or untied head, norms,
    projections and their biases) against transformers' autograd, NumPy float64; bounds as
    for LoRA (loss 1e-6, gradients 1e-5)."""
    torch.manual_seed(0)
    hf = model_class(hf_config)
    hf.save_pretrained(tmp_path / "model", safe_serialization=True)
    hf = hf.double().train()
    rng = np.random.default_rng()
    B, T = 2, 9
    ids = rng.integers(0, 96, (B, T))
    ids[0, 4] = ids[0, 2]                                # a repeated id: its rows add up
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :2] = -100
    out = hf(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
             labels=torch.as_tensor(labels))
    out.loss.backward()
    want = {n: p.grad.numpy() for n, p in hf.named_parameters()}

    config = LlamaConfig.from_file(tmp_path / "model")
    model = LlamaModel(config, None)
    be = NumpyBackend(np.float64)
    file = safetensors.load(tmp_path / "model" / "model.safetensors")
    for name, shape in config.parameter_shapes().items():
        be.set_param(name, np.frombuffer(file.floats(name), np.float32), shape)
        be.add_grad(name)
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist())
    hidden, saved = model.forward(be, batch)
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name),
                                  np.asarray(shift_labels(labels.tolist())), dweight=model.head_grad(be))
    model.backward(be, dh, saved, batch)
    loss = metrics["loss"]

    assert abs(loss - out.loss.item()) <= 1e-6 * abs(loss)
    assert set(model.trainable) == set(want) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    for name in model.trainable:
        ref = want[name]
        err = np.linalg.norm(be.grads[name] - ref) / np.linalg.norm(ref)
        assert err <= 1e-5, f"{name}: relative error {err:.2e}"
