"""Tiny checkpoints of RoBERTa's kind, trained offline: a RoBERTa (byte-level BPE tokenizer with
RobertaProcessing: <s> 0, <pad> 1, </s> 2) and an XLM-RoBERTa (SentencePiece-style Unigram
with Metaspace and TemplateProcessing, as XLM-R's tokenizer.json), each with its tokenizer.json
and tokenizer_config.json, the model saved by transformers (random weights, a pooler as the
pretrained checkpoints carry one, which RobertaForSequenceClassification does not read)."""

import json

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor",
          "the scene", "it is this that", "ein sehr guter Film", "un film vraiment mauvais",
          "la scène finale", "wunderbar gespielt"] * 4
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=66, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def roberta_tokenizer(kind, vocab_size=160):
    if kind == "roberta":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>"))
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", 0), ("</s>", 2)])
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3, 4]
    return tok


def tiny_roberta_dir(path, kind="roberta", seed=0):
    """A tiny `kind` ("roberta" or "xlm-roberta") checkpoint directory with its tokenizer."""
    import transformers

    tok = roberta_tokenizer(kind)
    config_class = transformers.RobertaConfig if kind == "roberta" else transformers.XLMRobertaConfig
    model_class = transformers.RobertaModel if kind == "roberta" else transformers.XLMRobertaModel
    torch.manual_seed(seed)
    model = model_class(config_class(vocab_size=tok.get_vocab_size(), pad_token_id=1,
                                     bos_token_id=0, eos_token_id=2, **SIZES))
    with torch.no_grad():           # biases and norms that matter (they start at 0 and 1)
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
         "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>",
         "model_max_length": 64}), encoding="utf-8")
    return path
