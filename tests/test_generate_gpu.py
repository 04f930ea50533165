"""The WebGPU decoder (lavapipe here) against the NumPy KV-cache decoder in float64 (per-step
logits, f32 bound 1e-4 relative) and transformers (32 greedy tokens); the KV-append kernel
against plain row copies."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import floats, run
from tiny_chat import tiny_chat_dir
from py_engine.backends.gpu_backend import Kernels, Tensor
from py_engine.generate import GpuDecoder, NumpyDecoder, generate
from py_engine.generate.generation import RowsOnly
from py_engine.generate.sampling import Sampling
from py_engine.gpu import Variable
from py_engine.kernels.kv_cache import KVCacheKernels
from py_engine.models.llama_config import LlamaConfig
from llama_reference import LlamaReference
from py_engine.ops.matmul import round_to_half
from py_engine.tokenizers import BPETokenizer

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

F32_BOUND = 1e-4
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def kernels(device):
    return run(Kernels.load(device, decoder=True))


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    base = tmp_path_factory.mktemp("chat")
    dirs = {f: tiny_chat_dir(base, family=f, initializer_range=0.3) for f in ("llama", "qwen2")}
    dirs["llama-tied"] = tiny_chat_dir(base, family="llama-tied", initializer_range=0.3,
                                       rope_parameters=LLAMA3_ROPE)
    return dirs, BPETokenizer.from_file(dirs["qwen2"] / "tokenizer.json")


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return math.inf if not np.all(np.isfinite(a)) else np.linalg.norm(a - b) / np.linalg.norm(b)


def test_kv_append_writes_rows_at_the_position_set_per_replay(device, rng):
    kv = run(KVCacheKernels.load(device))
    rows, width, capacity = 2, 12, 9
    src = device.create_buffer(4 * rows * width)
    cache = device.buffer_from(np.full(capacity * width, np.nan, np.float32))
    position = Variable(0)
    program = device.program()
    kv.append(program, src, cache, rows, width, row=position)
    want = np.full((capacity, width), np.nan, np.float32)
    for at in (0, 3, 7):
        values = rng.standard_normal((rows, width)).astype(np.float32)
        src.write(values)
        position.set(at)
        run(program.run())
        want[at:at + rows] = values
    program.read(cache)
    got = floats(run(program.run())[0]).reshape(capacity, width)   # last replay again: same rows
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        position.set(capacity - 1)


def step_logits(decoder, seq, prompt):
    out = [run(decoder.prefill(seq[:prompt]))]
    out += [run(decoder.step(t)) for t in seq[prompt:]]
    return [np.asarray(o, np.float64) for o in out]


@pytest.mark.parametrize("family", ["llama", "qwen2", "llama-tied"])
def test_step_logits_match_the_numpy_decoder(device, kernels, chat, rng, family):
    """Prompts of 5 and 19 tokens (length buckets 16 and 32), then cached steps: every step's
    logits within 1e-4 relative of the float64 NumPy decoder."""
    path = chat[0][family]
    gpu = run(GpuDecoder.load(device, path, kernels=kernels, max_length=MAX_LENGTH))
    ref = NumpyDecoder.load(path, max_length=MAX_LENGTH)
    V = ref.config.vocab_size
    for prompt, steps in ((5, 6), (19, 3)):
        seq = rng.integers(0, V, prompt + steps).tolist()
        errors = [rel(g, w) for g, w in zip(step_logits(gpu, seq, prompt), step_logits(ref, seq, prompt))]
        assert max(errors) <= F32_BOUND, errors
    gpu.release()          # prefill programs are recorded again on demand
    assert rel(run(gpu.prefill(seq[:4])), run(ref.prefill(seq[:4]))) <= F32_BOUND


def test_steps_with_the_keys_split_match_the_numpy_decoder(device, kernels, chat, rng,
                                                          monkeypatch):
    """A decoding step's attention split over the cached keys (flash-decoding: here 8 splits of
    the 64-row cache, most of them empty at the first positions), every layer sharing the
    partial results' scratch: the same logits as the NumPy decoder."""
    import py_engine.kernels.causal_attention as causal

    monkeypatch.setattr(causal, "DECODE_SPLIT_KEYS", 8)
    assert kernels.causal_attention.decode_splits(1, 4, MAX_LENGTH) == 8
    path = chat[0]["llama"]
    gpu = run(GpuDecoder.load(device, path, kernels=kernels, max_length=MAX_LENGTH))
    ref = NumpyDecoder.load(path, max_length=MAX_LENGTH)
    seq = rng.integers(0, ref.config.vocab_size, 45).tolist()
    errors = [rel(g, w) for g, w in zip(step_logits(gpu, seq, 5), step_logits(ref, seq, 5))]
    assert max(errors) <= F32_BOUND, errors


@pytest.mark.parametrize("family", ["qwen2", "llama-tied"])
def test_greedy_tokens_chosen_on_the_gpu_are_the_argmax_of_its_logits(device, kernels, chat, rng, family):
    """prefill and step with greedy=True give the first argmax of the logits the same runs
    read back without it, and no problem; across the prefill buckets and cached steps."""
    path = chat[0][family]
    gpu = run(GpuDecoder.load(device, path, kernels=kernels, max_length=MAX_LENGTH))
    V = gpu.config.vocab_size
    for prompt, steps in ((3, 4), (17, 2)):
        seq = rng.integers(0, V, prompt + steps).tolist()
        want = [(int(np.argmax(g)), None) for g in step_logits(gpu, seq, prompt)]
        got = [run(gpu.prefill(seq[:prompt], greedy=True))]
        got += [run(gpu.step(t, greedy=True)) for t in seq[prompt:]]
        assert got == want
    for recorded in [*gpu._prefill.values(), *gpu._decode.values()]:
        # the logits' replica (sampling) is the choice's program without the argmax dispatch
        choice, logits = recorded.readout.choice.ops, recorded.readout.logits.ops
        assert choice[:len(logits)] == logits and len(choice) == len(logits) + 1


@pytest.mark.parametrize("family", ["qwen2", "llama-tied"])
def test_sampling_draws_among_the_gpu_candidates_as_from_its_logits(device, kernels, chat, rng,
                                                                     family):
    """prefill and step with sampling=... bring back the likeliest tokens of the logits the
    run computed (every token above the cut the kernel chose, the softmax total within 1e-5),
    and generate() draws from them the tokens it draws from the whole rows, seed by seed; the
    candidates' program is the logits' program with one more dispatch."""
    dirs, tok = chat
    gpu = run(GpuDecoder.load(device, dirs[family], kernels=kernels, max_length=MAX_LENGTH))
    V = gpu.config.vocab_size
    settings = Sampling(temperature=0.8, top_p=0.9)
    seq = rng.integers(0, V, 9).tolist()
    for k in range(5, 10):
        candidates, problem = run(gpu.prefill(seq[:5], sampling=settings) if k == 5
                                  else gpu.step(seq[k - 1], sampling=settings))
        assert gpu.rows_read == k - 5                             # only the rows asked for
        row = np.asarray(run(gpu.last_logits()), np.float32)      # this run's
        assert gpu.rows_read == k - 4
        assert problem is None and candidates.size == V and candidates.largest == row.max()
        distance = (row.max() - row) / np.float32(settings.temperature)
        total = np.exp(-distance.astype(np.float64)).sum()
        assert abs(candidates.total - total) <= 1e-5 * total
        assert candidates.complete and candidates.tokens == sorted(candidates.tokens)
        # an upper set of the row: every token left out scores below every candidate
        left_out = np.delete(row, candidates.tokens)
        assert left_out.size == 0 or left_out.max() < min(candidates.logits)
        assert candidates.logits == row[candidates.tokens].tolist()
    prompt = tok.encode("My name is", add_special_tokens=False).ids
    for kwargs in (dict(temperature=0.8, top_p=0.9), dict(temperature=1.1, top_k=20),
                   dict(temperature=0.6)):
        for seed in range(2):
            want = run(generate(RowsOnly(gpu), tok, prompt, max_new_tokens=10, greedy=False,
                                seed=seed, **kwargs))
            got = run(generate(gpu, tok, prompt, max_new_tokens=10, greedy=False, seed=seed,
                               **kwargs))
            assert got.ids == want.ids, (kwargs, seed)
    for recorded in [*gpu._prefill.values(), *gpu._decode.values()]:
        candidates, logits = recorded.readout.candidates.ops, recorded.readout.logits.ops
        assert candidates[:len(logits)] == logits and len(candidates) == len(logits) + 1


def test_nan_weights_stop_gpu_greedy_generation_with_a_message(device, kernels, chat):
    """A NaN in the final norm's weight makes every logit NaN: the GPU's choice (greedy, or
    sampling's candidates) carries the problem and generation names it, as the host check does
    for logits it reads."""
    dirs, tok = chat
    config = LlamaConfig.from_file(dirs["llama"])
    weights = LlamaReference.load(dirs["llama"]).p
    weights["model.norm.weight"] = weights["model.norm.weight"].copy()
    weights["model.norm.weight"][3] = np.nan
    params = {n: Tensor(device.buffer_from(v.astype(np.float32)), v.shape) for n, v in weights.items()}
    gpu = run(GpuDecoder.create(device, config, params, kernels=kernels, max_length=32))
    token, problem = run(gpu.prefill([1, 2, 3], greedy=True))
    assert problem == "NaN"
    assert run(gpu.prefill([1, 2, 3], sampling=Sampling(0.7)))[1] == "NaN"
    for greedy in (True, False):
        with pytest.raises(ValueError, match="logits for token 1 of the reply hold NaN"):
            run(generate(gpu, tok, [1, 2, 3], max_new_tokens=4, greedy=greedy))


def hf_greedy(path, prompt, n=32):
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=n)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_generation_matches_transformers(device, kernels, chat, family):
    dirs, tok = chat
    prompt = tok.encode("What is the capital of France?", add_special_tokens=False).ids
    want = hf_greedy(dirs[family], prompt)
    assert len(set(want)) > 1
    decoder = run(GpuDecoder.load(device, dirs[family], kernels=kernels, max_length=MAX_LENGTH))
    pieces = []
    result = run(generate(decoder, tok, prompt, max_new_tokens=32,
                          on_token=lambda t, s: pieces.append(s)))
    assert result.ids == want
    assert result.text == "".join(pieces) == tok.decode(want)
    with pytest.raises(ValueError, match="exceeds"):
        run(generate(decoder, tok, prompt, max_new_tokens=MAX_LENGTH))


def test_f16_weights_and_unmerged_lora(device, kernels, chat, rng):
    """Projections and head stored f16, LoRA (random A, B) on q, v and down_proj applied by the
    LoRA kernel: against the NumPy decoder with the same f16-rounded weights and merged LoRA,
    1e-4 relative per step."""
    path = chat[0]["llama"]
    config = LlamaConfig.from_file(path)
    base = LlamaReference.load(path).p
    r, alpha = 4, 8
    host, params = {}, {}
    for name, value in base.items():
        half = value.ndim == 2 and name != "model.embed_tokens.weight"
        value = round_to_half(value) if half else value
        host[name] = value
        data = value.astype(np.float16) if half else value.astype(np.float32)
        params[name] = Tensor(device.buffer_from(data), value.shape, half=half)
    for layer in range(config.num_hidden_layers):
        for module in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            out_f, in_f = base[f"model.layers.{layer}.{module}.weight"].shape
            for kind, shape in (("lora_A", (r, in_f)), ("lora_B", (out_f, r))):
                name = f"base_model.model.model.layers.{layer}.{module}.{kind}.weight"
                value = (0.2 * rng.standard_normal(shape)).astype(np.float32)
                host[name] = value.astype(np.float64)
                params[name] = Tensor(device.buffer_from(value), shape)
    gpu = run(GpuDecoder.create(device, config, params, kernels=kernels, lora_scaling=alpha / r,
                                max_length=32))
    ref = NumpyDecoder.from_params(config, host, lora_scaling=alpha / r, max_length=32)
    plain = NumpyDecoder.from_params(config, {n: v for n, v in host.items() if "lora" not in n}, max_length=32)
    seq = rng.integers(0, config.vocab_size, 10).tolist()
    want = step_logits(ref, seq, 6)
    assert rel(step_logits(plain, seq, 6)[0], want[0]) > 1e-2          # LoRA matters
    errors = [rel(g, w) for g, w in zip(step_logits(gpu, seq, 6), want)]
    assert max(errors) <= F32_BOUND, errors
