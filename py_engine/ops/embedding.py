"""BERT input embeddings: word + token type + position, gathered by id, and their backward.

    out = embedding_forward(ids, type_ids, word, position, token_type)     # [B*T, hidden]
    dword, dposition, dtoken_type = embedding_backward(dout, ids, type_ids, word.shape[0],
                                                 position.shape[0], token_type.shape[0])

ids and type_ids are integer [B, T]; positions are 0..T-1 in every sequence (BERT's default
position_ids). The LayerNorm and dropout that follow in BertEmbeddings are separate ops.
"""

import numpy as np


def embedding_forward(ids, type_ids, word, position, token_type, first_position=0):
    """(word[ids] + token_type[type_ids]) + position[first_position + t], as [B*T, hidden]
    (first_position: RoBERTa's positions start after its padding token's, BERT's at 0;
    token_type None: a family without token types, DistilBERT)."""
    ids = np.asarray(ids)
    seq = ids.shape[1]
    words = word[ids] if token_type is None else word[ids] + token_type[np.asarray(type_ids)]
    out = words + position[first_position + np.arange(seq)][None]
    return out.reshape(ids.size, word.shape[1])


def embedding_backward(dout, ids, type_ids, vocab, positions, type_vocab, padding_idx=None):
    """Gradients of the three tables: each row sums dout over the tokens that gathered it;
    the word table's row padding_idx gets none (torch's nn.Embedding padding_idx)."""
    ids = np.asarray(ids)
    batch, seq = ids.shape
    hidden = dout.shape[1]
    dword = np.zeros((vocab, hidden), dout.dtype)
    np.add.at(dword, ids.ravel(), dout)
    if padding_idx is not None:
        dword[padding_idx] = 0
    dposition = np.zeros((positions, hidden), dout.dtype)
    dposition[:seq] = dout.reshape(batch, seq, hidden).sum(axis=0)
    dtoken_type = np.zeros((type_vocab, hidden), dout.dtype)
    np.add.at(dtoken_type, np.asarray(type_ids).ravel(), dout)
    return dword, dposition, dtoken_type
