"""The NumPy embedding reference against torch autograd (float64) and BertEmbeddings."""

import numpy as np
import torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings

from py_engine.ops.embedding import embedding_backward, embedding_forward

VOCAB, POSITIONS, TYPES, HIDDEN = 11, 9, 2, 5


def tables(rng):
    return (rng.standard_normal((VOCAB, HIDDEN)), rng.standard_normal((POSITIONS, HIDDEN)),
            rng.standard_normal((TYPES, HIDDEN)))


def test_forward_and_backward_match_torch_autograd(rng):
    batch, seq = 3, 7
    ids = rng.integers(0, VOCAB, (batch, seq))
    ids[0, :3] = ids[1, 2] = 4                      # repeated ids must sum their gradients
    type_ids = rng.integers(0, TYPES, (batch, seq))
    word, position, token_type = tables(rng)
    dout = rng.standard_normal((batch * seq, HIDDEN))
    tw, tp, tt = (torch.tensor(x, requires_grad=True) for x in (word, position, token_type))
    F = torch.nn.functional
    out = (F.embedding(torch.tensor(ids), tw) + F.embedding(torch.tensor(type_ids), tt)
           + F.embedding(torch.arange(seq), tp)[None])
    out.reshape(batch * seq, HIDDEN).backward(torch.tensor(dout))
    ours = embedding_forward(ids, type_ids, word, position, token_type)
    np.testing.assert_allclose(ours, out.detach().reshape(batch * seq, HIDDEN).numpy(), rtol=1e-12)
    grads = embedding_backward(dout, ids, type_ids, VOCAB, POSITIONS, TYPES)
    for g, t in zip(grads, (tw, tp, tt)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_matches_bert_embeddings_before_layernorm(rng):
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, max_position_embeddings=POSITIONS,
                        type_vocab_size=TYPES, num_attention_heads=1, hidden_dropout_prob=0.0)
    module = BertEmbeddings(config).double().eval()
    module.LayerNorm = torch.nn.Identity()          # LayerNorm is a separate op here
    ids = rng.integers(0, VOCAB, (2, 6))
    type_ids = rng.integers(0, TYPES, (2, 6))
    with torch.no_grad():
        expected = module(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(type_ids))
    ours = embedding_forward(ids, type_ids, module.word_embeddings.weight.detach().numpy(),
                             module.position_embeddings.weight.detach().numpy(),
                             module.token_type_embeddings.weight.detach().numpy())
    np.testing.assert_allclose(ours, expected.reshape(12, HIDDEN).numpy(), rtol=1e-12)


def test_padding_row_gets_no_gradient_as_in_torch(rng):
    """padding_idx: torch's nn.Embedding gives that row no gradient, whatever its tokens' dout."""
    ids = rng.integers(0, VOCAB, (2, 6))
    ids[0, :2] = ids[1, 4] = 3
    dout = rng.standard_normal((12, HIDDEN))
    word = torch.tensor(tables(rng)[0], requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(ids), word, padding_idx=3).reshape(12, HIDDEN) \
        .backward(torch.tensor(dout))
    dword = embedding_backward(dout, ids, np.zeros_like(ids), VOCAB, POSITIONS, TYPES, padding_idx=3)[0]
    assert not dword[3].any()
    np.testing.assert_allclose(dword, word.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_matches_roberta_embeddings_from_the_first_position_after_padding(rng):
    """RoBERTa numbers a sequence's tokens from its padding row + 1 (padding_idx 1: rows 2..);
    our first_position gives its embeddings for every token that is not padding (a padded
    token's own row is masked out of everything it feeds)."""
    from transformers import RobertaConfig
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    config = RobertaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, max_position_embeddings=POSITIONS,
                           type_vocab_size=1, pad_token_id=1, hidden_dropout_prob=0.0)
    module = RobertaEmbeddings(config).double().eval()
    module.LayerNorm = torch.nn.Identity()
    ids = rng.integers(2, VOCAB, (2, 6))
    ids[1, 4:] = 1                                  # a right-padded row
    with torch.no_grad():
        expected = module(input_ids=torch.tensor(ids)).reshape(12, HIDDEN).numpy()
    ours = embedding_forward(ids, np.zeros_like(ids), module.word_embeddings.weight.detach().numpy(),
                             module.position_embeddings.weight.detach().numpy(),
                             module.token_type_embeddings.weight.detach().numpy(), first_position=2)
    real = (ids != 1).ravel()
    np.testing.assert_allclose(ours[real], expected[real], rtol=1e-12)
    assert np.abs(embedding_forward(ids, np.zeros_like(ids), *(
        t.weight.detach().numpy() for t in (module.word_embeddings, module.position_embeddings,
                                            module.token_type_embeddings)))[real]
        - expected[real]).max() > 1e-3          # from row 0, as BERT counts, they differ
