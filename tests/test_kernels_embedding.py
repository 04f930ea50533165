"""Embedding kernels on wgpu-native (lavapipe) against the NumPy reference.

Fresh random ids and tables every run; outputs NaN-poisoned (or, for gradients that are
accumulated, random) before the dispatch; relative error against float64.
"""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.embedding import EmbeddingKernels
from py_engine.ops.embedding import embedding_backward, embedding_forward

FORWARD_BOUND = 1e-6    # two f32 additions per element
BACKWARD_BOUND = 1e-5   # sums over <= B*T = 576 tokens, about 44 per row
VOCAB, POSITIONS, TYPES, HIDDEN = 13, 12, 2, 6


@pytest.fixture(scope="module")
def emb(device):
    return run(EmbeddingKernels.load(device))


def random_inputs(rng, batch, seq):
    ids = rng.integers(0, VOCAB, (batch, seq)).astype(np.uint32)
    ids.flat[: min(3, ids.size)] = 7              # repeated ids sum into one row
    type_ids = rng.integers(0, TYPES, (batch, seq)).astype(np.uint32)
    return ids, type_ids


# first: the position row of each sequence's first token (RoBERTa's start after its padding row)
@pytest.mark.parametrize("batch, seq, first", [(4, 10, 0), (1, 1, 0), (3, 12, 0), (3, 10, 2)])
def test_forward_matches_numpy(device, emb, rng, batch, seq, first):
    ids, type_ids = random_inputs(rng, batch, seq)
    word, position, token_type = (rng.standard_normal((rows, HIDDEN), dtype=np.float32)
                                  for rows in (VOCAB, POSITIONS, TYPES))
    out = poisoned(device, batch * seq * HIDDEN)
    program = device.program()
    emb.forward(program, *(device.buffer_from(x) for x in (ids, type_ids, word, position, token_type)),
                out, batch=batch, seq=seq, hidden=HIDDEN, vocab=VOCAB, positions=POSITIONS,
                type_vocab=TYPES, first_position=first)
    (got,) = read(program, out)
    expected = embedding_forward(ids, type_ids, *(x.astype(np.float64) for x in (word, position, token_type)),
                                 first_position=first)
    assert rel_error(got, expected) <= FORWARD_BOUND


@pytest.mark.parametrize("padding", [None, 7])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("batch, seq", [(4, 10), (1, 1), (48, 12)])   # 48x12: chains of ~44 tokens
def test_backward_matches_numpy(device, emb, rng, batch, seq, accumulate, padding):
    """With `padding` (nn.Embedding's padding_idx, an id the inputs repeat) that word row keeps
    its start: cleared, or the accumulated values."""
    ids, type_ids = random_inputs(rng, batch, seq)
    dout = rng.standard_normal((batch * seq, HIDDEN), dtype=np.float32)
    shapes = [(VOCAB, HIDDEN), (POSITIONS, HIDDEN), (TYPES, HIDDEN)]
    if accumulate:
        start = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
        grads = [device.buffer_from(s) for s in start]
    else:
        start = [np.zeros(s) for s in shapes]
        grads = [poisoned(device, r * c) for r, c in shapes]   # cleared by the backward
    program = device.program()
    emb.backward(program, device.buffer_from(dout), device.buffer_from(ids), device.buffer_from(type_ids),
                 *grads, batch=batch, seq=seq, hidden=HIDDEN, vocab=VOCAB, positions=POSITIONS,
                 type_vocab=TYPES, accumulate=accumulate, padding=padding)
    got = read(program, *grads)
    expected = embedding_backward(dout.astype(np.float64), ids, type_ids, VOCAB, POSITIONS, TYPES,
                                  padding_idx=padding)
    if padding is not None:
        assert np.array_equal(got[0].reshape(VOCAB, HIDDEN)[padding], start[0][padding])
    for out, s, e in zip(got, start, expected):
        assert rel_error(out, s + e) <= BACKWARD_BOUND


def test_backward_skips_tables_given_none(device, emb, rng):
    ids, type_ids = random_inputs(rng, 2, 5)
    dout = rng.standard_normal((10, HIDDEN), dtype=np.float32)
    dposition = poisoned(device, POSITIONS * HIDDEN)
    program = device.program()
    emb.backward(program, device.buffer_from(dout), device.buffer_from(ids), device.buffer_from(type_ids),
                 None, dposition, None, batch=2, seq=5, hidden=HIDDEN, vocab=VOCAB,
                 positions=POSITIONS, type_vocab=TYPES)
    (got,) = read(program, dposition)
    expected = embedding_backward(dout.astype(np.float64), ids, type_ids, VOCAB, POSITIONS, TYPES)[1]
    assert rel_error(got, expected) <= BACKWARD_BOUND


def test_sequence_longer_than_the_position_table_is_refused(device, emb):
    buf = device.create_buffer(16)
    with pytest.raises(ValueError, match="position embeddings"):
        emb.forward(device.program(), buf, buf, buf, buf, buf, device.create_buffer(16), batch=1,
                    seq=POSITIONS + 1, hidden=1, vocab=1, positions=POSITIONS, type_vocab=1)
    with pytest.raises(ValueError, match="exceeds the 10 position embeddings"):
        emb.forward(device.program(), buf, buf, buf, buf, buf, device.create_buffer(16), batch=1,
                    seq=POSITIONS - 1, hidden=1, vocab=1, positions=POSITIONS, type_vocab=1,
                    first_position=2)
