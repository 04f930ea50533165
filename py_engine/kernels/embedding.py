"""GPU BERT input embeddings (shaders/embedding.wgsl); NumPy reference: py_engine/ops/embedding.py.

    emb = await EmbeddingKernels.load(device)
    shape = dict(batch=B, seq=T, hidden=H, vocab=V, positions=P, type_vocab=TV)
    emb.forward(program, ids, type_ids, word, position, token_type, out, **shape)
    emb.backward(program, dout, ids, type_ids, dword, dposition, dtoken_type, **shape)

ids, type_ids: [B, T] u32 buffers. Tables: row-major f32 [rows, H]; out, dout: [B*T, H].
Positions are 0..T-1 in every sequence (T <= P). The backward adds into the table gradients
(accumulate=True) or clears them first (the default); it uses no atomics. With `padding` (a
word row, as torch's nn.Embedding padding_idx) that row of the word table's gradient gets nothing.
"""

from . import KernelFamily

SOURCE = "embedding.wgsl"
WORKGROUP = 64
ENTRIES = ("embedding_forward", "embedding_word_links", "embedding_backward_word",
           "embedding_backward_position", "embedding_backward_type", "embedding_clear")
NO_PADDING = 0xFFFFFFFF


class EmbeddingKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def __init__(self, device, kernels):
        super().__init__(device, kernels)
        # the word backward's token chains, one buffer per token count: the dispatches of a
        # program run in order, so the calls recorded into it can share it
        self._links = {}

    def _word_links(self, program, ids, params, tokens):
        if tokens not in self._links:
            self._links[tokens] = self.device.create_buffer(8 * tokens,
                                                            label="embedding word links")
        links = self._links[tokens]
        self._dispatch(program, "embedding_word_links", [ids, links, params], tokens)
        return links

    def _params(self, batch, seq, hidden, vocab, positions, type_vocab, padding=None,
                first_position=0):
        if first_position + seq > positions:
            raise ValueError(f"sequence length {seq} exceeds the {positions - first_position} "
                             "position embeddings")
        if padding is not None and not 0 <= padding < vocab:
            raise ValueError(f"padding row {padding} is not a row of the {vocab}-row word table")
        return self.device.uniform("8I", batch * seq, seq, hidden, vocab, positions, type_vocab,
                                   NO_PADDING if padding is None else padding, first_position)

    def forward(self, program, ids, type_ids, word, position, token_type, out, *, batch, seq,
                hidden, vocab, positions, type_vocab, first_position=0):
        """out[B*T, H] = word[ids] + token_type[type_ids] + position[first_position + t]."""
        params = self._params(batch, seq, hidden, vocab, positions, type_vocab,
                              first_position=first_position)
        buffers = [ids, type_ids, word, position, token_type, out, params]
        return self._dispatch(program, "embedding_forward", buffers, batch * seq * hidden)

    def clear(self, program, buffer, count):
        """buffer[:count] = 0 (floats)."""
        params = self.device.uniform("4I", count, 0, 0, 0)
        return self._dispatch(program, "embedding_clear", [buffer, params], count)

    def backward(self, program, dout, ids, type_ids, dword, dposition, dtoken_type, *, batch, seq,
                 hidden, vocab, positions, type_vocab, accumulate=False, padding=None):
        """Table gradients from dout [B*T, H]; pass None for a table that needs none; the word
        row `padding` gets no gradient."""
        params = self._params(batch, seq, hidden, vocab, positions, type_vocab, padding)
        tokens = batch * seq
        links = self._word_links(program, ids, params, tokens) if dword is not None else None
        work = (
            (dword, vocab, "embedding_backward_word", [ids, dout, dword, params, links], tokens),
            (dposition, positions, "embedding_backward_position", [dout, dposition, params], seq),
            (dtoken_type, type_vocab, "embedding_backward_type", [type_ids, dout, dtoken_type, params],
             type_vocab),
        )
        for grad, rows, entry, buffers, items in work:
            if grad is None:
                continue
            if not accumulate:
                self.clear(program, grad, rows * hidden)
            self._dispatch(program, entry, buffers, items * hidden)
        return program
