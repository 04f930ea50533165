"""What generation spends per token beyond the model. Greedy: the GPU decoder either brings the
logits back and the host checks and scans them in Python, or the GPU chooses the token and 8
bytes come back (GpuDecoder's greedy path). Sampling (temperature 0.7, top-p 0.9): generate()
either reads the logits and draws from the whole row in Python, or draws among the likeliest
tokens the GPU picked (shaders/argmax.wgsl's sampling_candidates; the row is read only when
they cannot decide). Each pair runs the same recorded model, so the difference is the host's
share: the read-back and the Python over it. Measured natively and inside the page (Pyodide,
where Python is slower).

The model is a one-layer Llama of hidden size 64 with a vocabulary of Qwen2.5's 151,936 or
Gemma 3's 262,144 tokens; its layers' weights are zero (the GPU work is small and the same
every way) and its tied embedding random, so the logits are rows like a trained model's
(scores of spread 3: some 500 of 151,936 tokens hold 90% after temperature; the embedding
repeats every POOL tokens, which only makes ties). Rounds alternate between the ways; each
round times TOKENS tokens.

This file is pure Python with no imports outside py_engine and the standard library: the page
runs its source (bench/run.py's generation section).
"""

import math
import time

TOKENS = 24
ROUNDS = 4
VOCABS = {"qwen2.5": 151936, "gemma-3": 262144}
SAMPLING = {"temperature": 0.7, "top_p": 0.9}
POOL = 16384          # distinct embedding rows
SPREAD = 3.0          # the logits' standard deviation


class Silent:
    """A tokenizer whose text is empty: generate()'s streaming costs nothing here."""

    def decode(self, ids, skip_special_tokens=True):
        return ""


async def generation_rounds(device, vocabs=VOCABS, tokens=TOKENS, rounds=ROUNDS):
    """{name: {"vocab", "device_ms", "host_ms", "saved_ms", "sampled_host_ms",
    "sampled_device_ms", "sampled_saved_ms", "rows_read"}}: median milliseconds per token
    (rows_read: sampled tokens whose candidates could not decide, over all device rounds)."""
    import random
    from array import array

    from py_engine.backends.gpu_backend import Tensor
    from py_engine.generate import GpuDecoder, generate
    from py_engine.generate.generation import RowsOnly, require_finite_logits
    from py_engine.generate.sampling import greedy
    from py_engine.models.llama_config import LlamaConfig

    out = {}
    rng = random.Random(0)
    hidden = 64
    # the final norm makes the hidden state's size sqrt(hidden): rows of spread SPREAD
    pool = array("f", [rng.gauss(0.0, SPREAD / math.sqrt(hidden)) for _ in range(POOL * hidden)])
    for name, vocab in vocabs.items():
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=128,
                             num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True)
        params = {n: Tensor(device.create_buffer(4 * math.prod(shape), label=n), shape)
                  for n, shape in config.parameter_shapes().items()}
        table = (pool * (vocab // POOL + 1))[:vocab * hidden]
        params["model.embed_tokens.weight"].buffer.write(table)
        params["model.norm.weight"].buffer.write(array("f", [1.0] * hidden))
        decoder = await GpuDecoder.create(device, config, params, max_length=tokens + 8)
        host_sampling = RowsOnly(decoder)

        async def on_device():
            token, _ = await decoder.prefill([1, 2, 3], greedy=True)
            start = time.perf_counter()
            for _ in range(tokens):
                token, problem = await decoder.step(token, greedy=True)
            return time.perf_counter() - start

        async def on_host():
            logits = await decoder.prefill([1, 2, 3])
            start = time.perf_counter()
            for k in range(tokens):
                require_finite_logits(logits, k)
                logits = await decoder.step(greedy(logits))
            return time.perf_counter() - start

        def sampled(target):
            async def timed(seed):
                start = time.perf_counter()
                result = await generate(target, Silent(), [1, 2, 3], max_new_tokens=tokens,
                                        greedy=False, seed=seed, **SAMPLING)
                assert len(result.ids) == tokens
                return time.perf_counter() - start, result.ids
            return timed

        ways = {"device": on_device, "host": on_host}
        times = {k: [] for k in (*ways, "sampled_device", "sampled_host")}
        for way in ways.values():
            await way()                       # warm-up: both programs recorded and run
        await sampled(decoder)(0)
        await sampled(host_sampling)(0)
        rows_before = decoder.rows_read       # the rows sampling on the device read back
        for r in range(rounds):
            for key, way in ways.items():
                times[key].append(await way())
            seconds, on_gpu = await sampled(decoder)(r + 1)
            times["sampled_device"].append(seconds)
            seconds, from_rows = await sampled(host_sampling)(r + 1)
            times["sampled_host"].append(seconds)
            assert on_gpu == from_rows, "the GPU's candidates drew other tokens than the rows"
        ms = {k: 1000 * sorted(v)[len(v) // 2] / tokens for k, v in times.items()}
        out[name] = {"vocab": vocab, "device_ms": round(ms["device"], 3), "host_ms": round(ms["host"], 3),
                     "saved_ms": round(ms["host"] - ms["device"], 3),
                     "sampled_device_ms": round(ms["sampled_device"], 3),
                     "sampled_host_ms": round(ms["sampled_host"], 3),
                     "sampled_saved_ms": round(ms["sampled_host"] - ms["sampled_device"], 3),
                     "rows_read": decoder.rows_read - rows_before}
        decoder.release()
    return out
