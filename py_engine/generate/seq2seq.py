"""Generation for the encoder-decoder family (T5) with the decoders' interface (see
generate/decoder.py), so generation.generate drives it unchanged:

    logits = await decoder.prefill(input_ids)   # encode the input once; start the decoder
    logits = await decoder.step(token)          # append one token to the decoder

The encoder runs once per input, each decoder layer's cross-attention keys and values are
computed once from its output, and the decoder runs one token at a time against its
self-attention KV cache, from decoder_start_token_id. max_length bounds the decoder's tokens
(the input is the encoder's and is not cached). NumpySeq2SeqDecoder runs on the host,
GpuSeq2SeqDecoder on WebGPU.
"""

from array import array

from .decoder import MIN_BUCKET, NumpyDecoder, Readout


class NumpySeq2SeqDecoder(NumpyDecoder):
    """Encoder-decoder generation on the NumPy backend (host only)."""

    encoder_decoder = True
    cross = None

    async def prefill(self, ids):
        """Encode `ids`, empty the cache, run the decoder start token; returns the first
        target token's logits [V]."""
        import numpy as np

        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("the input needs at least one token")
        self.reset()
        enc, _ = self.model.encode(self.be, np.asarray([ids], np.int64), None, 1, len(ids), train=False)
        self.cross = self.model.cross_keys_values(self.be, enc)
        return self._run([self.config.decoder_start_token_id])

    def _hidden(self, inputs):
        return self.model.decode(self.be, inputs.ids, 1, inputs.T, self.cross, None, train=False,
                                 cache=self.cache, position=inputs.position)[0]


class _Programs:
    """The recorded programs for inputs padded to one length: the encoder with the cross keys
    and values, and the one-token decoder reading them."""

    __slots__ = ("encode", "decode", "readout", "ids", "mask", "token", "cache_mask", "bias_index",
                 "position", "buffers")


class GpuSeq2SeqDecoder:
    """Encoder-decoder generation on WebGPU (natively or in the browser); no NumPy.

    The input is right-padded to a bucket (powers of two from 16; the padding masked), whose
    programs are recorded on first use: the encoder and every layer's cross keys and values,
    run once per input; and the decoder for one token, replayed per token at a cache position
    set per run. Its self-attention reads the whole cache with a mask over the rows written so
    far and the relative position bias of its position, both written per run."""

    greedy_on_device = True
    samples_on_device = True

    def __init__(self, model, be, max_length=None):
        from .decoder import cache_length

        c = model.config
        self.model, self.be, self.config, self.device = model, be, c, be.device
        self.max_length = cache_length(c, max_length)
        self.cache = be.kv_cache(c.num_hidden_layers, self.max_length, c.num_attention_heads * c.head_dim)
        self.length = 0
        self._programs = {}
        self._current = None

    def reset(self):
        self.length = 0

    def bucket(self, n):
        b = MIN_BUCKET
        while b < n:
            b *= 2
        return b

    def _record(self, S):
        from ..backends.gpu_backend import Tensor
        from ..gpu import Variable

        be, device, model, c = self.be, self.device, self.model, self.config
        L, H = self.max_length, c.num_attention_heads
        r = _Programs()
        r.ids = Tensor(device.create_buffer(4 * S, label="input ids"), (1, S))
        r.mask = Tensor(device.create_buffer(4 * S, label="input mask"), (1, S))
        r.encode = device.program(f"encode {S}")
        be.record(r.encode)
        enc, _ = model.encode(be, r.ids, r.mask, 1, S, train=False)
        cross = model.cross_keys_values(be, enc)
        buffers = be.finish()

        r.token = Tensor(device.create_buffer(4, label="token"), (1, 1))
        r.cache_mask = Tensor(device.create_buffer(4 * L, label="cache mask"), (1, L))
        r.bias_index = Tensor(device.create_buffer(4 * H * L, label="bias index"), (1, H * L))
        r.decode = device.program(f"decode after {S}")
        be.record(r.decode)
        table = be.param(model.bias_table("decoder"))
        bias = be.gather_rows(Tensor(table.buffer, (table.size, 1)), r.bias_index)
        r.position = Variable(0, name="cache position")
        hidden, _ = model.decode(be, r.token, 1, 1, cross, r.mask, train=False, cache=self.cache,
                                 position=r.position, cached=(r.cache_mask, Tensor(bias.buffer, (H, 1, L))))
        r.readout = Readout(be, r.decode, model.head_logits(be, hidden))
        r.buffers = [r.ids.buffer, r.mask.buffer, r.token.buffer, r.cache_mask.buffer,
                     r.bias_index.buffer] + buffers + be.finish()
        return r

    async def prefill(self, ids, greedy=False, sampling=None):
        """Encode `ids`, empty the cache, run the decoder start token; returns the first target
        token's logits (or, with `greedy` or `sampling`, what GpuDecoder.prefill returns)."""
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("the input needs at least one token")
        S = self.bucket(len(ids))
        if S not in self._programs:
            self._programs[S] = self._record(S)
        r = self._current = self._programs[S]
        r.ids.buffer.write(array("I", ids + [0] * (S - len(ids))))
        r.mask.buffer.write(array("I", [1] * len(ids) + [0] * (S - len(ids))))
        await r.encode.run()
        self.reset()
        return await self._run(self.config.decoder_start_token_id, greedy, sampling)

    async def _run(self, token, greedy, sampling):
        r, L, H = self._current, self.max_length, self.config.num_attention_heads
        if self.length >= L:
            raise ValueError(f"the cache of {L} tokens is full")
        p = self.length
        buckets = self.model.buckets("decoder", 1, p + 1, p) + [0] * (L - p - 1)
        r.token.buffer.write(array("I", [int(token)]))
        r.cache_mask.buffer.write(array("I", [1] * (p + 1) + [0] * (L - p - 1)))
        r.bias_index.buffer.write(array("I", (b * H + h for h in range(H) for b in buckets)))
        r.position.set(p)
        out = await r.readout.run(greedy, sampling)
        self.length += 1
        return out

    async def step(self, token, greedy=False, sampling=None):
        """Append one token to the decoder; returns the logits after it (or, with `greedy` or
        `sampling`, what prefill returns with them)."""
        if self.length == 0:
            raise ValueError("step needs a prefilled input")
        return await self._run(token, greedy, sampling)

    async def last_logits(self):
        """The logits of the last prefill or step, whatever it read back."""
        if self._current is None or self.length == 0:
            raise ValueError("nothing has run yet")
        return await self._current.readout.last_logits()

    def release(self):
        """Free the recorded programs and their buffers."""
        for r in self._programs.values():
            r.encode.release()
            r.readout.release()
            for b in r.buffers:
                b.destroy()
        self._programs = {}
