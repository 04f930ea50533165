"""Our tokenizers on the real vocabularies of the families we train (Qwen2/2.5/3, Llama 3,
Llama 2, Phi-3, GPT-2, and Gemma's construction on Gemma 4's vocabulary), against the ids Hugging Face `tokenizers` gave for them. The
vocabularies and those ids come from llama.cpp's tokenizer tests (models/ggml-vocab-NAME.gguf,
with .inp texts and .out ids that its convert_hf_to_gguf_update.py wrote from each model's own
tokenizer). They are too large to keep in the repository, so this runs by hand, on the copy of
llama.cpp that the llama-cpp-python source package carries:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsrc
    tar -xzf /tmp/llsrc/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsrc
    .venv/bin/python tests/real_vocab_check.py /tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp/models

Each GGUF vocabulary becomes the tokenizer.json its model ships (byte-level BPE with the
family's split regex; SentencePiece-style BPE whose merges are built from the pieces' scores,
as transformers' converter builds them; or Gemma's: spaces replaced by U+2581, its merges, byte
fallback); the library must then give the .out ids
(proving the file is the model's), and ours must give them too and equal the library's on
tests/test_tokenizer_bpe.py's 5,000 varied strings. Exits 1 on any difference.
"""

import json
import sys
import time
from pathlib import Path

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3 = QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
# name: (pattern for byte-level BPE (None: GPT-2's own), normalizer) or "spm"
VOCABS = {"qwen2": (QWEN2, {"type": "NFC"}), "llama-bpe": (LLAMA3, None), "gpt-2": (None, None),
          "llama-spm": "spm", "phi-3": "spm", "gemma-4": "gemma"}
CONTROL, USER_DEFINED, NORMAL = 3, 4, 1      # llama.cpp's token types


def read_vocab(path):
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    return {k[len("tokenizer.ggml."):]: fields[k].contents() for k in fields
            if k.startswith("tokenizer.ggml.")}


def added(tokens, types, kinds, special=True):
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": special}
            for i, (t, kind) in enumerate(zip(tokens, types)) if kind in kinds]


def byte_level_json(vocab, pattern, normalizer):
    tokens = vocab["tokens"]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": pattern is None}
    pre = byte_level if pattern is None else {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        byte_level]}
    return {"version": "1.0", "added_tokens": added(tokens, vocab["token_type"], {CONTROL}),
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": None,
            "decoder": dict(byte_level, use_regex=True),
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False,
                      "byte_fallback": False, "ignore_merges": pattern == LLAMA3,
                      "vocab": {t: i for i, t in enumerate(tokens)}, "merges": vocab["merges"]}}


def spm_json(vocab):
    """Llama-2-style BPE: every split of a normal piece into two normal pieces is a merge,
    ranked by the merged piece's score (then the halves' ids)."""
    tokens, types, scores = vocab["tokens"], vocab["token_type"], vocab["scores"]
    ids = {t: i for i, t in enumerate(tokens)}
    normal = {t for t, kind in zip(tokens, types) if kind == NORMAL}
    merges = sorted((-scores[ids[t]], ids[t[:k]], ids[t[k:]], f"{t[:k]} {t[k:]}")
                    for t in normal for k in range(1, len(t)) if t[:k] in normal and t[k:] in normal)
    return {"version": "1.0",
            "added_tokens": added(tokens, types, {2, CONTROL}) + added(tokens, types, {USER_DEFINED}, False),
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
            "pre_tokenizer": None, "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True,
                      "byte_fallback": True, "ignore_merges": False, "vocab": ids,
                      "merges": [m for *_, m in merges]}}


def gemma_json(vocab):
    tokens, types = vocab["tokens"], vocab["token_type"]
    return {"version": "1.0",
            "added_tokens": added(tokens, types, {CONTROL}) + added(tokens, types, {USER_DEFINED}, False),
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            "pre_tokenizer": None, "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True,
                      "byte_fallback": True, "ignore_merges": False,
                      "vocab": {t: i for i, t in enumerate(tokens)}, "merges": vocab["merges"]}}


def tokenizer_json(vocab, how):
    if how == "spm":
        return spm_json(vocab)
    if how == "gemma":
        return gemma_json(vocab)
    return byte_level_json(vocab, *how)


def reference_cases(models, name):
    texts = (models / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = (models / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]


def main(models):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tokenizers import Tokenizer

    from py_engine.tokenizers import BPETokenizer
    from test_tokenizer_bpe import make_corpus

    models, corpus, failed = Path(models), make_corpus(), 0
    for name, how in VOCABS.items():
        vocab = read_vocab(models / f"ggml-vocab-{name}.gguf")
        text = json.dumps(tokenizer_json(vocab, how), ensure_ascii=False)
        theirs, ours = Tokenizer.from_str(text), BPETokenizer.from_json(text)
        cases = reference_cases(models, name)
        lib_wrong = sum(theirs.encode(t, add_special_tokens=False).ids != want for t, want in cases)
        our_wrong = sum(ours.encode(t, add_special_tokens=False).ids != want for t, want in cases)
        start = time.perf_counter()
        mine = [ours.encode(t, add_special_tokens=False).ids for t in corpus]
        seconds = time.perf_counter() - start
        differ = sum(m != r.ids for m, r in zip(mine, theirs.encode_batch(corpus, add_special_tokens=False)))
        failed += lib_wrong + our_wrong + differ
        print(f"{name:10s} {len(vocab['tokens']):6d} tokens: reference ids {len(cases)}, library wrong "
              f"{lib_wrong}, ours wrong {our_wrong}; {len(corpus)} strings, ours differ {differ} "
              f"({seconds:.1f} s to encode them)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
