"""Tokenizers read from Hugging Face tokenizer.json files, in pure Python so that they run in
Pyodide as well as natively, and give the ids the `tokenizers` library gives.

    from py_engine.tokenizers import WordPieceTokenizer
    tok = WordPieceTokenizer.from_file("tokenizer.json")
"""

from .wordpiece import Encoding, WordPieceTokenizer

__all__ = ["Encoding", "WordPieceTokenizer"]
from .bpe import BPETokenizer  # noqa: E402
__all__ += ["BPETokenizer"]
