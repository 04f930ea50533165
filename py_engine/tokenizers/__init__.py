"""Tokenizers and chat templates read from Hugging Face files (tokenizer.json,
tokenizer_config.json), in pure Python so that they run in Pyodide as well as natively, and give
what the `tokenizers` library and transformers give.

    from py_engine.tokenizers import WordPieceTokenizer, BPETokenizer, ChatTemplate
    tok = WordPieceTokenizer.from_file("tokenizer.json")       # BERT family
    tok = BPETokenizer.from_file("tokenizer.json")             # GPT-2, Llama-2/3 style
    tok = SubwordTokenizer.from_file("tokenizer.json")         # the same class: BPE or Unigram (T5)
    text, spans = ChatTemplate.from_pretrained(dir).render_with_spans(messages)
"""

from .bpe import BPETokenizer, SubwordTokenizer
from .chat_template import ChatTemplate
from .wordpiece import Encoding, WordPieceTokenizer

__all__ = ["BPETokenizer", "ChatTemplate", "Encoding", "SubwordTokenizer", "WordPieceTokenizer"]
