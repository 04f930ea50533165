"""One generation loop for any decoder with the async interface

    await decoder.prefill(ids) -> logits of the next token (a sequence of V floats)
    await decoder.step(token)  -> logits after appending `token`
    decoder.reset()
    decoder.max_length         -> tokens the cache holds (prompt + generated)

(NumpyDecoder on the host, GpuDecoder on WebGPU). Pure Python: it runs in Pyodide. Greedy
decoding on a decoder with greedy_on_device takes the token the GPU chose (prefill and step
with greedy=True) instead of reading the logits back and scanning them here; sampling on a
decoder with samples_on_device draws among the likeliest tokens the GPU picked (sampling=...),
and reads the whole row only when they cannot decide (sampling.sample_candidates).

    result = await generate(decoder, tokenizer, prompt_ids, max_new_tokens=64, greedy=False,
                            temperature=0.7, top_p=0.9, stop=("\\nUser:",),
                            eos_token_ids=(eos,), seed=0, on_token=print_piece)
    result.ids, result.text, result.finish_reason      # "eos", "stop" or "length"

`on_token(token_id, text_piece)` is called once per new token with the text that token
completed: "" while a multi-byte character is split across tokens or while the text might
still turn into a stop string. Pieces joined give result.text. With `stop`, generation ends
when the decoded text contains a stop string; result.text is cut before it (result.ids keep
the token that completed it). An eos token ends generation and is kept in result.ids, not in
the text (special tokens are skipped when decoding).
"""

import math
import random

from .sampling import Sampling, TextStream, greedy as argmax, sample, sample_candidates


class GenerationResult:
    __slots__ = ("ids", "text", "finish_reason")

    def __init__(self, ids, text, finish_reason):
        self.ids, self.text, self.finish_reason = ids, text, finish_reason

    def __repr__(self):
        return f"GenerationResult({len(self.ids)} tokens, {self.finish_reason!r}, {self.text!r})"


async def generate(decoder, tokenizer, prompt_ids, *, max_new_tokens=64, greedy=True,
                   temperature=1.0, top_k=0, top_p=1.0, stop=(), eos_token_ids=(), seed=0,
                   on_token=None):
    """Continue `prompt_ids`; see the module docstring. Sampling (greedy=False) draws from
    random.Random(seed), so a seed reproduces a generation."""
    prompt_ids = [int(t) for t in prompt_ids]
    if not prompt_ids:
        raise ValueError("the prompt needs at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    needed = len(prompt_ids) + max_new_tokens
    if needed > decoder.max_length:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) "
                         f"= {needed} exceeds the decoder's cache of {decoder.max_length} tokens")
    if isinstance(eos_token_ids, int):
        eos_token_ids = (eos_token_ids,)
    eos = set(int(t) for t in eos_token_ids)
    rng = random.Random(seed)
    stream = TextStream(tokenizer, stop)
    ids, reason = [], "length"
    if max_new_tokens == 0:
        return GenerationResult(ids, "", reason)
    settings = None if greedy else Sampling(temperature, top_k, top_p)
    if greedy and getattr(decoder, "greedy_on_device", False):
        ask = {"greedy": True}
    elif not greedy and getattr(decoder, "samples_on_device", False):
        ask = {"sampling": settings}
    else:
        ask = {}

    async def choose(out):
        if not ask:
            require_finite_logits(out, len(ids))
            return argmax(out) if greedy else sample(out, rng, temperature, top_k, top_p)
        chosen, problem = out
        if problem:
            raise _non_finite(problem, len(ids))
        if greedy:
            return chosen
        state = rng.getstate()
        token = sample_candidates(chosen, rng, temperature, top_k, top_p)
        if token is None:        # the candidates cannot decide: the same draw from the row
            rng.setstate(state)
            token = sample(await decoder.last_logits(), rng, temperature, top_k, top_p)
        return token

    token = await choose(await decoder.prefill(prompt_ids, **ask))
    while True:
        ids.append(token)
        piece = stream.push(token)
        done = token in eos or stream.stopped or len(ids) >= max_new_tokens
        if done:
            reason = "eos" if token in eos else "stop" if stream.stopped else "length"
            piece += stream.flush()
        if on_token is not None:
            on_token(token, piece)
        if done:
            return GenerationResult(ids, stream.text, reason)
        token = await choose(await decoder.step(token, **ask))


class RowsOnly:
    """`decoder` without its choices on the GPU: generate() then reads every row of logits
    back and chooses in Python (how the GPU's choices are checked and timed)."""

    def __init__(self, decoder):
        self.decoder, self.max_length = decoder, decoder.max_length

    async def prefill(self, ids):
        return await self.decoder.prefill(ids)

    async def step(self, token):
        return await self.decoder.step(token)


def require_finite_logits(logits, generated):
    """A NaN or +inf logit (weights or activations out of range) would make greedy decoding
    pick token 0 forever and sampling fail: say so. -inf is a masked token, and allowed."""
    total = logits.sum() if hasattr(logits, "sum") else sum(logits)    # NaN or inf if one is
    if total != total or total == math.inf:
        bad = next(float(v) for v in logits if v != v or v == math.inf)
        raise _non_finite("NaN" if bad != bad else "inf", generated)


def _non_finite(problem, generated):
    return ValueError(f"the model's logits for token {generated + 1} of the reply hold {problem}: "
                      "its weights or activations are out of range (a diverged model, or "
                      "f16/quantized weights that overflow)")
