"""A tiny T5-style Unigram tokenizer (Metaspace pieces, "<pad>" 0, "</s>" 1 appended to every
text, "<unk>" 2) trained offline with Hugging Face tokenizers, within the tiny checkpoints'
vocabulary of 96; and a tiny checkpoint directory that carries it."""

import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = ["translate to german: hello world", "hallo welt", "summarize: the cat sat on the mat",
          "a cat on a mat", "question: what is two plus two? answer", "four", "the quick brown fox",
          "jumps over the lazy dog", "hello there, general kenobi", "good morning to you"] * 4


def t5_tokenizer(vocab_size=96):
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    assert tok.get_vocab_size() <= vocab_size and tok.token_to_id("</s>") == 1
    return tok


def t5_dir(path):
    """A tiny FLAN-T5-like checkpoint directory (t5_checkpoints.tiny_t5) with this Unigram
    tokenizer as its tokenizer.json and T5's tokenizer_config.json; (the directory, the Hugging
    Face tokenizer written there)."""
    from t5_checkpoints import tiny_t5

    tiny_t5(path)
    tok = t5_tokenizer()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}), encoding="utf-8")
    return path, tok
