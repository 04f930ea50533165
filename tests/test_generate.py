"""Generation on the host: the sampling warpers against transformers' LogitsWarper classes, the
streamed text (split UTF-8 characters, stop strings), and the NumPy KV-cache decoder against the
float64 reference (per-step logits), transformers (32 greedy tokens) and PEFT (LoRA logits)."""

import math
import random

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper)

from conftest import run
from tiny_chat import tiny_chat_dir
from py_engine.generate import NumpyDecoder, TextStream, generate, greedy, sample, warp, warp_scores
from py_engine.generate.sampling import SAMPLE_TAIL, TOTAL_ROUNDING, Sampling, sample_candidates
from py_engine.kernels.argmax import RowCandidates
from py_engine.ops.argmax import sampling_candidates
from py_engine.models.llama_config import LlamaConfig
from llama_reference import LlamaReference
from py_engine.tokenizers import BPETokenizer

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

WARPS = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.9), (1.0, 0, 0.3),
         (1.3, 20, 0.8), (0.5, 3, 0.95), (2.0, 0, 0.5), (1.0, 1, 1.0), (1.0, 0, 0.0)]


def transformers_scores(logits, temperature, top_k, top_p):
    """The warpers in generate()'s order, on a float64 row."""
    scores = torch.as_tensor(np.asarray(logits, np.float64))[None]
    ids = torch.zeros((1, 1), dtype=torch.long)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    return scores[0].numpy()


@pytest.mark.parametrize("temperature, top_k, top_p", WARPS)
def test_warpers_match_transformers(rng, temperature, top_k, top_p):
    for _ in range(5):
        logits = rng.normal(0, 2.0, 64)
        want = transformers_scores(logits, temperature, top_k, top_p)
        got = np.asarray(warp_scores(logits.tolist(), temperature, top_k, top_p))
        kept_want, kept_got = np.isfinite(want), np.isfinite(got)
        assert (kept_want == kept_got).all()
        probs_want = torch.softmax(torch.as_tensor(want), -1).numpy()
        kept = warp(list(logits), temperature, top_k, top_p)
        assert sorted(t for t, _ in kept) == np.flatnonzero(kept_want).tolist()
        probs_got = np.zeros(64)
        for t, p in kept:
            probs_got[t] = p
        assert np.abs(probs_got - probs_want).max() <= 1e-12


def sorted_warp(logits, temperature, top_k, top_p):
    """warp() as the warpers are written: softmax over the whole row and a sort of all of it
    (what sampling.py computed before it pruned; here, the reference it must agree with)."""
    def softmax(scores):
        top = max(scores)
        exps = [math.exp(s - top) if s != -math.inf else 0.0 for s in scores]
        total = sum(exps)
        return [e / total for e in exps]

    scores = [float(x) / temperature for x in logits]
    if top_k and top_k < len(scores):
        kth = sorted(scores, reverse=True)[top_k - 1]
        scores = [s if s >= kth else -math.inf for s in scores]
    if top_p < 1.0:
        probs = softmax(scores)
        cumulative, removed = 0.0, set()
        for i in sorted(range(len(scores)), key=lambda i: scores[i])[:-1]:
            cumulative += probs[i]
            if cumulative > 1.0 - top_p:
                break
            removed.add(i)
        scores = [-math.inf if i in removed else s for i, s in enumerate(scores)]
    kept = [(i, p) for i, p in enumerate(softmax(scores)) if p > 0.0]
    return sorted(kept, key=lambda item: -item[1])


@pytest.mark.parametrize("temperature, top_k, top_p",
                         [(0.7, 0, 0.9), (1.0, 0, 0.3), (1.3, 50, 0.8), (0.6, 40, 1.0),
                          (1.0, 0, 1.0), (2.0, 0, 0.999)])
def test_a_whole_vocabulary_is_warped_and_sampled_as_sorting_it_would(rng, temperature, top_k,
                                                                      top_p):
    """Rows as wide as a vocabulary, peaked and flat, with ties (scores rounded) and masked
    tokens: the pruned warpers keep the same tokens in the same order with the same
    probabilities as the whole-row sort, and a seed draws the same token."""
    for spread, decimals in ((4.0, 6), (0.3, 1)):
        logits = np.round(rng.normal(0, spread, 32_000), decimals).astype(np.float32)
        logits[rng.choice(logits.size, 100, replace=False)] = -np.inf
        want = sorted_warp(logits, temperature, top_k, top_p)
        got = warp(logits, temperature, top_k, top_p)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert max(abs(p - q) for (_, p), (_, q) in zip(got, want)) <= 1e-15
        for seed in range(20):
            u, cumulative = random.Random(seed).random(), 0.0
            token = next((t for t, p in want if u < (cumulative := cumulative + p)), want[-1][0])
            assert sample(logits, random.Random(seed), temperature, top_k, top_p) == token


def test_top_k_keeps_ties_with_the_kth_score_and_greedy_takes_the_lowest_index():
    logits = [0.0, 3.0, 1.0, 3.0, 1.0, -2.0]
    assert greedy(logits) == 1
    assert torch.argmax(torch.tensor(logits)).item() == 1
    assert sorted(t for t, _ in warp(logits, top_k=3)) == [1, 2, 3, 4]
    want = transformers_scores(logits, 1.0, 3, 1.0)
    assert (np.isfinite(want) == np.isfinite(warp_scores(logits, top_k=3))).all()


def test_sampling_is_seeded_and_follows_the_warped_distribution(rng):
    logits = rng.normal(0, 1.5, 12).tolist()
    draws = [sample(logits, random.Random(3), 0.8, 6, 0.9) for _ in range(3)]
    assert len(set(draws)) == 1
    kept = dict(warp(logits, 0.8, 6, 0.9))
    r = random.Random(1)
    n = 20000
    counts = {}
    for _ in range(n):
        t = sample(logits, r, 0.8, 6, 0.9)
        counts[t] = counts.get(t, 0) + 1
    assert set(counts) <= set(kept)
    for t, p in kept.items():   # binomial: 5 standard deviations
        assert abs(counts.get(t, 0) / n - p) <= 5 * (p * (1 - p) / n) ** 0.5 + 1e-9


def reference_candidates(logits, settings, capacity=None):
    """The candidates shaders/argmax.wgsl picks for `settings`, from its NumPy reference, the
    total rounded to f32 as the GPU sends it; at most `capacity` of them come back."""
    row = np.asarray(logits, np.float32)
    ((index, cut, largest, total),) = sampling_candidates(row[None], 1 / settings.temperature,
                                                          settings.top_k, settings.tail)
    back = index[:capacity]
    return RowCandidates(back.tolist(), [float(v) for v in row[back]], len(index), len(row),
                         largest, float(np.float32(total)), cut)


def close_call(logits, temperature, top_p, u):
    """Whether the whole row's decision lies within twice TOTAL_ROUNDING of a boundary (the
    candidates' total comes back rounded to f32, so they cannot tell which side): top-p's cut
    among the ascending cumulative probabilities, or the draw `u` among the descending ones."""
    scaled = np.float64(logits) / temperature
    p = np.exp(scaled - scaled.max())
    p = np.sort(p / p.sum())
    near = lambda cumulative, at: np.min(np.abs(cumulative - at)) <= 2 * TOTAL_ROUNDING
    return (top_p < 1.0 and near(np.cumsum(p), 1.0 - top_p)) or near(np.cumsum(p[::-1]), u)


@pytest.mark.parametrize("temperature, top_k, top_p", WARPS)
def test_a_draw_from_the_candidates_is_the_draw_from_the_row(rng, temperature, top_k, top_p):
    """Drawing among the likeliest tokens the GPU picks gives the token sample() draws from
    the whole row. They may leave it undecided (the row is then read) only for plain
    sampling's draw past them (at most SAMPLE_TAIL of the mass), or for a decision within
    the f32 rounding of the row's total of a boundary; the test checks each such draw."""
    settings = Sampling(temperature, top_k, top_p)
    for spread in (4.0, 1.0):
        logits = rng.normal(0, spread, 32_000).astype(np.float32)
        logits[rng.choice(logits.size, 100, replace=False)] = -np.inf
        c = reference_candidates(logits, settings)
        assert c.complete and len(c.tokens) < logits.size
        exps = np.exp((np.float64(c.logits) - c.largest) / temperature)
        held = exps.sum() / (c.total)
        for seed in range(40):
            want = sample(logits, random.Random(seed), temperature, top_k, top_p)
            got = sample_candidates(c, random.Random(seed), temperature, top_k, top_p)
            if got is None:
                u = random.Random(seed).random()
                past = not top_k and top_p == 1.0 and held >= 1 - SAMPLE_TAIL and u >= held - 1e-9
                assert past or (not top_k and close_call(logits, temperature, top_p, u)), (seed, held, u)
            else:
                assert got == want, (seed, spread)


def test_candidates_that_cannot_decide_say_so(rng):
    """None, for the whole row to be read: fewer candidates than top-k, more mass left out
    than top-p removes, or candidates that did not all come back."""
    logits = rng.normal(0, 1.0, 5000).astype(np.float32)
    logits[7] = 30.0                                              # one token holds nearly all
    few = reference_candidates(logits, Sampling(1.0, 0, 0.5))
    assert few.tokens == [7]
    assert sample_candidates(few, random.Random(0), 1.0, 5, 1.0) is None
    assert sample_candidates(few, random.Random(0), 1.0, 1, 1.0) == 7
    wide = reference_candidates(rng.normal(0, 1.0, 5000), Sampling(1.0, 0, 0.5))
    assert sample_candidates(wide, random.Random(0), 1.0, 0, 0.99) is None
    cut = reference_candidates(rng.normal(0, 1.0, 5000), Sampling(1.0, 0, 0.9), capacity=10)
    assert cut.count > 10 and sample_candidates(cut, random.Random(0), 1.0, 0, 0.9) is None
    with pytest.raises(ValueError, match="temperature must be positive"):
        sample_candidates(few, random.Random(0), 0.0)


def test_bad_sampling_settings_are_refused():
    for kwargs in (dict(temperature=0.0), dict(top_k=-1), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            warp_scores([0.0, 1.0], **kwargs)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    base = tmp_path_factory.mktemp("chat")
    dirs = {f: tiny_chat_dir(base, family=f, initializer_range=0.3) for f in ("llama", "qwen2")}
    dirs["llama-tied"] = tiny_chat_dir(base, family="llama-tied", initializer_range=0.3,
                                       rope_parameters=LLAMA3_ROPE)
    return dirs, BPETokenizer.from_file(dirs["qwen2"] / "tokenizer.json")


def test_stream_emits_whole_characters_only(chat):
    _, tok = chat
    text = "Grüße aus München! 你好，世界。"
    ids = tok.encode(text, add_special_tokens=False).ids
    # The byte-level vocabulary splits some of these characters' bytes across tokens.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text == stream.text
    assert not any("\ufffd" in p for p in pieces)


def test_stream_cuts_at_a_stop_string_and_never_emits_its_start(chat):
    _, tok = chat
    text = "Hello! How are you today? I am fine, thank you."
    ids = tok.encode(text, add_special_tokens=False).ids
    stream = TextStream(tok, stop=("you today", "xyz"))
    pieces = []
    for i in ids:
        pieces.append(stream.push(i))
        if stream.stopped:
            break
    pieces.append(stream.flush())
    assert stream.stopped and stream.text == "Hello! How are "
    assert "".join(pieces) == "Hello! How are "


def test_decoder_logits_match_the_reference_at_every_step(chat, rng):
    """Prefill then 6 cached steps, against LlamaReference.logits on the whole sequence:
    float64, relative error <= 1e-10 per step."""
    dirs, _ = chat
    for path in dirs.values():
        ref = LlamaReference.load(path)
        decoder = NumpyDecoder.load(path)
        V = ref.config.vocab_size
        seq = rng.integers(0, V, 11).tolist()
        got = [run(decoder.prefill(seq[:5]))] + [run(decoder.step(t)) for t in seq[5:]]
        want = ref.logits(np.asarray([seq]))[0, 4:]
        for g, w in zip(got, want):
            assert np.linalg.norm(g - w) / np.linalg.norm(w) <= 1e-10
        # reuse after reset: a second prompt gives the same as a fresh decoder
        again = run(decoder.prefill(seq[:7]))
        assert np.linalg.norm(again - want[2]) / np.linalg.norm(want[2]) <= 1e-10


def hf_greedy(path, prompt, n=32):
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    with torch.no_grad():
        out = hf.generate(torch.as_tensor([prompt]), max_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=0, min_new_tokens=n)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_generation_matches_transformers(chat, family):
    dirs, tok = chat
    prompt = tok.encode("What is the capital of France?", add_special_tokens=False).ids
    want = hf_greedy(dirs[family], prompt)
    assert len(set(want)) > 1, "a degenerate model: raise initializer_range"
    result = run(generate(NumpyDecoder.load(dirs[family]), tok, prompt, max_new_tokens=32))
    assert result.ids == want and result.finish_reason == "length"
    assert result.text == tok.decode(want)


def test_lora_logits_match_peft(chat, rng):
    """LoRA on q, v, o and down_proj (random non-zero B), merged at construction, against the
    PEFT model's logits in float64 at every cached step: relative error <= 1e-5. transformers
    rounds RMSNorm and the rotary tables through float32, so its float64 logits carry float32
    rounding: up to 1.6e-6 over 300 draws (1e-6 failed 2% of them)."""
    from peft import LoraConfig, get_peft_model

    dirs, _ = chat
    path = dirs["qwen2"]
    torch.manual_seed(int(rng.integers(1 << 30)))
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                           target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn_like(p))
    peft.eval()
    params = dict(LlamaReference.load(path).p)
    for name, p in peft.named_parameters():
        if "lora_" in name:   # PEFT's runtime names carry ".default"; files do not
            params[name.replace(".default", "")] = p.detach().numpy()
    decoder = NumpyDecoder.from_params(LlamaConfig.from_file(path), params, lora_scaling=8 / 4)
    seq = rng.integers(0, decoder.config.vocab_size, 9).tolist()
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([seq])).logits[0, 3:].numpy()
    got = [run(decoder.prefill(seq[:4]))] + [run(decoder.step(t)) for t in seq[4:]]
    plain = run(NumpyDecoder.load(path).prefill(seq[:4]))
    assert np.linalg.norm(plain - want[0]) > 1e-3 * np.linalg.norm(want[0])   # LoRA matters
    for g, w in zip(got, want):
        assert np.linalg.norm(g - w) / np.linalg.norm(w) <= 1e-5


class FixedDecoder:
    """Replays scripted logits: a decoder stand-in to test the loop's bookkeeping."""

    def __init__(self, tokens, vocab, max_length=64):
        self.tokens, self.vocab, self.max_length = list(tokens), vocab, max_length
        self.calls = []

    def _logits(self):
        row = [0.0] * self.vocab
        row[self.tokens[len(self.calls) - 1]] = 10.0
        return row

    def reset(self):
        self.calls = []

    async def prefill(self, ids):
        self.calls = [("prefill", list(ids))]
        return self._logits()

    async def step(self, token):
        self.calls.append(("step", token))
        return self._logits()


def test_generate_stops_at_eos_stop_strings_and_length(chat):
    _, tok = chat
    eos = tok.token_to_id("<|im_end|>")
    words = tok.encode("Hello! How are you today?", add_special_tokens=False).ids
    script = words + [eos] + words
    streamed = []
    result = run(generate(FixedDecoder(script, tok.vocab_size), tok, [1, 2], max_new_tokens=40,
                          eos_token_ids=[eos], on_token=lambda t, s: streamed.append((t, s))))
    assert result.finish_reason == "eos" and result.ids == words + [eos]
    assert result.text == "Hello! How are you today?" == "".join(s for _, s in streamed)
    assert [t for t, _ in streamed] == result.ids

    result = run(generate(FixedDecoder(script, tok.vocab_size), tok, [1], max_new_tokens=40,
                          stop=["are"], eos_token_ids=[eos]))
    assert result.finish_reason == "stop" and result.text == "Hello! How "

    result = run(generate(FixedDecoder(script, tok.vocab_size), tok, [1], max_new_tokens=3))
    assert result.finish_reason == "length" and result.ids == words[:3]

    with pytest.raises(ValueError, match="exceeds"):
        run(generate(FixedDecoder(script, tok.vocab_size, max_length=10), tok, [1] * 4,
                     max_new_tokens=7))


class SpoiledDecoder(FixedDecoder):
    """FixedDecoder whose logits after `at` tokens hold `value` at a random place."""

    def __init__(self, tokens, vocab, at, value, as_array):
        super().__init__(tokens, vocab)
        self.at, self.value, self.as_array = at, value, as_array

    def _logits(self):
        row = super()._logits()
        if len(self.calls) - 1 == self.at:
            wanted = self.tokens[len(self.calls) - 1]
            row[random.choice([i for i in range(len(row)) if i != wanted])] = self.value
        return np.asarray(row, np.float32) if self.as_array else row


@pytest.mark.parametrize("as_array", [False, True])
def test_logits_holding_nan_or_inf_stop_generation_with_a_message(chat, as_array):
    _, tok = chat
    words = tok.encode("Hello! How are you today?", add_special_tokens=False).ids
    for at, value, shown in ((0, math.nan, "NaN"), (2, math.inf, "inf")):
        for greedy in (True, False):
            decoder = SpoiledDecoder(words, tok.vocab_size, at, value, as_array)
            with pytest.raises(ValueError, match=f"logits for token {at + 1} of the reply hold "
                                                 f"{shown}: its weights or activations"):
                run(generate(decoder, tok, [1], max_new_tokens=6, greedy=greedy))
    masked = SpoiledDecoder(words, tok.vocab_size, 1, -math.inf, as_array)   # a masked token
    assert run(generate(masked, tok, [1], max_new_tokens=6)).ids == words[:6]


class ChoosingDecoder(SpoiledDecoder):
    """SpoiledDecoder that chooses greedy tokens itself, as the GPU decoders do: (token,
    problem) from prefill and step with greedy=True, the logits without."""

    greedy_on_device = True

    async def prefill(self, ids, greedy=False):
        return self._choice(await super().prefill(ids), greedy)

    async def step(self, token, greedy=False):
        return self._choice(await super().step(token), greedy)

    def _choice(self, logits, greedy):
        if not greedy:
            return logits
        self.chosen += 1
        values = [float(v) for v in logits]
        problem = "NaN" if any(v != v for v in values) else "inf" if math.inf in values else None
        return values.index(max(values)), problem


def test_a_decoder_that_chooses_greedy_tokens_is_asked_for_them(chat):
    """Greedy decoding takes the decoder's own choice (no logits come back) and turns its
    problem into the message the host check gives; sampling still reads the logits."""
    _, tok = chat
    words = tok.encode("Hello! How are you today?", add_special_tokens=False).ids
    decoder = ChoosingDecoder(words, tok.vocab_size, -1, 0.0, False)
    decoder.chosen = 0
    assert run(generate(decoder, tok, [1], max_new_tokens=5)).ids == words[:5]
    assert decoder.chosen == 5
    run(generate(decoder, tok, [1], max_new_tokens=5, greedy=False, top_k=1))
    assert decoder.chosen == 5
    for at, value, shown in ((0, math.nan, "NaN"), (3, math.inf, "inf")):
        decoder = ChoosingDecoder(words, tok.vocab_size, at, value, False)
        decoder.chosen = 0
        with pytest.raises(ValueError, match=f"logits for token {at + 1} of the reply hold "
                                             f"{shown}: its weights or activations"):
            run(generate(decoder, tok, [1], max_new_tokens=6))
        assert decoder.chosen == at + 1


class CandidatesDecoder:
    """A NumPy decoder that answers sampling=... with the candidates the GPU would pick (the
    kernel's NumPy reference), at most `capacity` of them, as the GPU decoders do."""

    samples_on_device = True

    def __init__(self, decoder, capacity):
        self.decoder, self.capacity, self.max_length = decoder, capacity, decoder.max_length
        self.asked = self.undecided = 0

    async def prefill(self, ids, sampling=None):
        return self._choice(await self.decoder.prefill(ids), sampling)

    async def step(self, token, sampling=None):
        return self._choice(await self.decoder.step(token), sampling)

    def _choice(self, logits, sampling):
        self.last, self.asked = logits, self.asked + 1
        return reference_candidates(logits, sampling, self.capacity), None

    async def last_logits(self):
        self.undecided += 1
        return self.last


def test_sampled_generation_from_candidates_is_the_generation_from_the_rows(chat):
    """generate() draws among a decoder's candidates, reads the row when they cannot decide
    (a small capacity makes that happen), and gives the tokens the whole rows give."""
    dirs, tok = chat
    prompt = tok.encode("My name is", add_special_tokens=False).ids
    for capacity, kwargs in ((8, dict(temperature=0.9, top_p=0.95)),
                             (4096, dict(temperature=1.2, top_k=30)),
                             (4096, dict(temperature=0.7))):
        for seed in range(3):
            decoder = NumpyDecoder.load(dirs["llama"], dtype=np.float32)
            want = run(generate(decoder, tok, prompt, max_new_tokens=16, greedy=False, seed=seed,
                                **kwargs))
            sampler = CandidatesDecoder(NumpyDecoder.load(dirs["llama"], dtype=np.float32), capacity)
            got = run(generate(sampler, tok, prompt, max_new_tokens=16, greedy=False, seed=seed,
                               **kwargs))
            assert got.ids == want.ids and sampler.asked == len(got.ids)
            if "top_k" in kwargs:        # top-k's candidates always decide
                assert sampler.undecided == 0
            elif capacity == 8:           # too few come back: the rows are read
                assert sampler.undecided > 0


def test_sampled_generation_is_reproducible_with_a_seed(chat):
    dirs, tok = chat
    decoder = NumpyDecoder.load(dirs["llama"], dtype=np.float32)
    prompt = tok.encode("My name is", add_special_tokens=False).ids
    kwargs = dict(max_new_tokens=12, greedy=False, temperature=0.9, top_k=40, top_p=0.95)
    a = run(generate(decoder, tok, prompt, seed=5, **kwargs))
    b = run(generate(decoder, tok, prompt, seed=5, **kwargs))
    assert a.ids == b.ids and len(a.ids) == 12
    with pytest.raises(ValueError, match="cache"):
        run(generate(decoder, tok, prompt, max_new_tokens=300))
