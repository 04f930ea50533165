"""Generation for the encoder-decoder family (T5) with the decoders' interface (see
generate/decoder.py), so generation.generate drives it unchanged:

    logits = await decoder.prefill(input_ids)   # encode the input once; start the decoder
    logits = await decoder.step(token)          # append one token to the decoder

The encoder runs once per input, each decoder layer's cross-attention keys and values are
computed once from its output, and the decoder runs one token at a time against its
self-attention KV cache, from decoder_start_token_id. max_length bounds the decoder's tokens
(the input is the encoder's and is not cached).
"""

from .decoder import NumpyDecoder


class NumpySeq2SeqDecoder(NumpyDecoder):
    """Encoder-decoder generation on the NumPy backend (host only)."""

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
