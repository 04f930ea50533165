"""What greedy generation spends per token beyond the model: the GPU decoder either brings the
logits back and the host checks and scans them in Python (how sampling must work), or the GPU
chooses the token and 8 bytes come back (GpuDecoder's greedy path). Both run the same recorded
program, so the difference is the host's share: the read-back of V floats, the finite check
and the argmax scan. Measured natively and inside the page (Pyodide, where Python is slower).

The model is a one-layer Llama of hidden size 64 with zero weights (the GPU work is small
and the same either way) and a vocabulary of Qwen2.5's 151,936 or Gemma 3's 262,144 tokens.
Rounds alternate between the two ways; each round times TOKENS cached steps.

Sampling (temperature 0.7, top-p 0.9) reads the logits as the host way does and then draws
from them in Python; its draw is timed apart, on rows like a trained model's (scores drawn
from N(0, 3): some 500 of 151,936 tokens hold 90% after temperature), since the zero-weight
model's logits are flat, and a flat row keeps nearly every token.

This file is pure Python with no imports outside py_engine and the standard library: the page
runs its source (bench/run.py's generation section).
"""

import math
import time

TOKENS = 24
ROUNDS = 4
VOCABS = {"qwen2.5": 151936, "gemma-3": 262144}
SAMPLING = {"temperature": 0.7, "top_p": 0.9}
DRAWS = 5


async def generation_rounds(device, vocabs=VOCABS, tokens=TOKENS, rounds=ROUNDS):
    """{name: {"vocab", "device_ms", "host_ms", "saved_ms", "sample_ms"}}: median milliseconds
    per token ("sample_ms": one draw from a row of that vocabulary)."""
    import random
    from array import array

    from py_engine.backends.gpu_backend import Tensor
    from py_engine.generate import GpuDecoder
    from py_engine.generate.generation import require_finite_logits
    from py_engine.generate.sampling import greedy, sample
    from py_engine.models.llama_config import LlamaConfig

    out = {}
    for name, vocab in vocabs.items():
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True)
        params = {n: Tensor(device.create_buffer(4 * math.prod(shape), label=n), shape)
                  for n, shape in config.parameter_shapes().items()}
        decoder = await GpuDecoder.create(device, config, params, max_length=tokens + 8)

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

        times = {"device": [], "host": []}
        await on_device()
        await on_host()                       # warm-up: both programs recorded and run
        for _ in range(rounds):
            times["device"].append(await on_device())
            times["host"].append(await on_host())
        ms = {k: 1000 * sorted(v)[len(v) // 2] / tokens for k, v in times.items()}
        rng = random.Random(0)
        row = array("f", [rng.gauss(0.0, 3.0) for _ in range(vocab)])
        draws = []
        for k in range(DRAWS):
            start = time.perf_counter()
            sample(row, random.Random(k), **SAMPLING)
            draws.append(time.perf_counter() - start)
        out[name] = {"vocab": vocab, "device_ms": round(ms["device"], 3), "host_ms": round(ms["host"], 3),
                     "saved_ms": round(ms["host"] - ms["device"], 3),
                     "sample_ms": round(1000 * sorted(draws)[len(draws) // 2], 3)}
        decoder.release()
    return out
