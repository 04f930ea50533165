"""A checkpoint's tokenizer as GGUF metadata (tokenizer.ggml.*), read from its tokenizer.json
and tokenizer_config.json the way llama.cpp's convert_hf_to_gguf.py writes it:

- byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM): model "gpt2", the tokens in their byte-level
  spelling, the merges, and "pre" naming the pre-tokenizer's split so llama.cpp splits text the
  same way (recognized from tokenizer.json's own pre_tokenizer);
- SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral): model "llama", the
  tokens with scores that order the merges as the merges list does (llama.cpp merges the
  highest-scoring pair first), <0xNN> tokens typed BYTE;
- Unigram (T5, FLAN-T5): model "t5", the pieces with their own log-probability scores, the
  normalizer's precompiled charsmap and whether it squeezes runs of spaces, as the converter
  reads them from spiece.model (here from tokenizer.json, which carries the same).

Token types are llama.cpp's: NORMAL 1, UNKNOWN 2, CONTROL 3 (special added tokens),
USER_DEFINED 4 (other added tokens), UNUSED 5 (ids the vocabulary does not fill), BYTE 6.

    entries = tokenizer_metadata(model_dir, vocab_size)   # [(key, type, value)]
"""

import base64
import re
from pathlib import Path

from ..formats.json_file import read_json_object, read_utf8
from ..tokenizers.tokenizer_file import read_tokenizer_json
from . import gguf

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The pre-tokenizer splits llama.cpp knows, by the regex tokenizer.json splits with.
GPT2_SPLIT = None       # ByteLevel(use_regex=True): GPT-2's own regex
LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}"
                "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
               "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class VocabError(ValueError):
    """A tokenizer GGUF cannot describe; the message names the file."""


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value


def pre_tokenizer_name(spec):
    """llama.cpp's name for a tokenizer.json pre_tokenizer (byte-level BPE), or None when it
    is not one llama.cpp implements."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "ByteLevel":
        return "gpt-2" if spec.get("use_regex", True) else None
    if kind != "Sequence":
        return None
    members = spec.get("pretokenizers") or []
    kinds = [m.get("type") for m in members]
    if kinds == ["Digits", "ByteLevel"] and members[0].get("individual_digits") \
            and members[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not members[1].get("use_regex", True):
        pattern = (members[0].get("pattern") or {}).get("Regex")
        return {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}.get(pattern)
    return None


def _adds(processor, position):
    """Whether tokenizer.json's post_processor puts a special token before (position 0) or
    after (-1) the text of a single sequence."""
    if processor is None:
        return False
    for p in processor.get("processors", [processor]):
        if p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            return bool(single) and "SpecialToken" in single[position]
    return False


def tokenizer_metadata(model_dir, vocab_size, warn=None, config_dir=None):
    """[(key, value type, value)] describing the checkpoint's tokenizer for llama.cpp.
    `vocab_size`: the embedding's rows (ids past the tokenizer's are UNUSED placeholders).
    warn(message) is told when llama.cpp may split text differently from the tokenizer.
    config_dir: the folder of the model's config.json, where not the tokenizer's (an
    adapter's own tokenizer, tokens added)."""
    model_dir = Path(model_dir)
    config_dir = Path(config_dir or model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise VocabError(f"{model_dir} has no tokenizer.json, which GGUF's tokenizer is made from")
    spec = read_tokenizer_json(path)
    config_path = model_dir / "tokenizer_config.json"
    config = read_json_object(config_path) if config_path.is_file() else {}
    model = spec["model"]
    if model.get("type") == "Unigram":
        entries, tokens = _unigram_entries(path, spec, vocab_size)
        return entries + _special_ids(config_dir, spec, config, tokens)
    if model.get("type") != "BPE":
        raise VocabError(f"{path}: a {model.get('type')} tokenizer; GGUF export reads BPE "
                         "tokenizers (byte-level or SentencePiece-style) and Unigram ones (T5)")
    added = {t["id"]: t for t in spec.get("added_tokens") or []}
    names = {i: token for token, i in model["vocab"].items()}
    names.update({i: t["content"] for i, t in added.items()})
    if max(names, default=-1) >= vocab_size:
        raise VocabError(f"{path} has token ids up to {max(names)}, past the model's "
                         f"{vocab_size} embedding rows")
    spm = bool(model.get("byte_fallback"))
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in names:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(names[i])
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif spm and _BYTE_TOKEN.fullmatch(names[i]):
            tokens.append(names[i])
            types.append(BYTE)
        else:
            tokens.append(names[i])
            types.append(UNKNOWN if names[i] == model.get("unk_token") else NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    nul = [i for i, t in enumerate(tokens) if "\0" in t]
    if nul and warn is not None:
        warn(f"{path}: {len(nul)} tokens (id {nul[0]} first) hold a NUL character, which "
             "llama.cpp reads as the end of the token (it refuses such a vocabulary)")
    entries = [("tokenizer.ggml.model", gguf.STRING, "llama" if spm else "gpt2")]
    if spm:
        entries += [("tokenizer.ggml.pre", gguf.STRING, "default"),
                    ("tokenizer.ggml.tokens", gguf.ARRAY, (gguf.STRING, tokens)),
                    ("tokenizer.ggml.scores", gguf.ARRAY,
                     (gguf.FLOAT32, _merge_scores(tokens, types, merges))),
                    ("tokenizer.ggml.token_type", gguf.ARRAY, (gguf.INT32, types)),
                    ("tokenizer.ggml.add_space_prefix", gguf.BOOL, _adds_space_prefix(spec))]
    else:
        pre = pre_tokenizer_name(spec.get("pre_tokenizer"))
        if pre is None and warn is not None:
            warn(f"{path}: llama.cpp has no pre-tokenizer known to match this one; written as "
                 "\"default\", so llama.cpp may split some text differently")
        entries += [("tokenizer.ggml.pre", gguf.STRING, pre or "default"),
                    ("tokenizer.ggml.tokens", gguf.ARRAY, (gguf.STRING, tokens)),
                    ("tokenizer.ggml.token_type", gguf.ARRAY, (gguf.INT32, types)),
                    ("tokenizer.ggml.merges", gguf.ARRAY, (gguf.STRING, merges))]
    entries += _special_ids(config_dir, spec, config, tokens)
    template = chat_template_text(model_dir, config)
    if template is not None:
        entries.append(("tokenizer.chat_template", gguf.STRING, template))
    return entries


def _unigram_entries(path, spec, vocab_size):
    """A Unigram tokenizer (T5's SentencePiece model) as llama.cpp's "t5" tokenizer reads it:
    each piece with its score; ids the tokenizer does not fill are "[PAD<id>]", UNUSED, scoring
    -10000 as the converter writes them (transformers' GGUF loader names the first 100 of those
    back to T5's <extra_id_N>; pieces the tokenizer names keep their names). (entries, tokens)"""
    model = spec["model"]
    pieces = model.get("vocab") or []
    added = {t["id"]: t for t in spec.get("added_tokens") or []}
    top = max([len(pieces) - 1, *added], default=-1)
    if top >= vocab_size:
        raise VocabError(f"{path} has token ids up to {top}, past the model's {vocab_size} "
                         "embedding rows")
    unk = model.get("unk_id")
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        if i < len(pieces):
            token, score = pieces[i][0], float(pieces[i][1])
        elif i in added:
            token, score = added[i]["content"], -1000.0     # the converter's added-token score
        else:
            tokens.append(f"[PAD{i}]")
            scores.append(-10000.0)
            types.append(UNUSED)
            continue
        if i in added and added[i]["content"] != token:
            token = added[i]["content"]
        tokens.append(token)
        scores.append(score)
        if i == unk:                    # SentencePiece's order: unknown, control, byte
            types.append(UNKNOWN)
        elif i in added:
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif model.get("byte_fallback") and _BYTE_TOKEN.fullmatch(token):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    charsmap, squeezes = _spm_normalizer(spec.get("normalizer"))
    entries = [("tokenizer.ggml.model", gguf.STRING, "t5"),
               ("tokenizer.ggml.pre", gguf.STRING, "default"),
               ("tokenizer.ggml.tokens", gguf.ARRAY, (gguf.STRING, tokens)),
               ("tokenizer.ggml.scores", gguf.ARRAY, (gguf.FLOAT32, scores)),
               ("tokenizer.ggml.token_type", gguf.ARRAY, (gguf.INT32, types)),
               ("tokenizer.ggml.add_space_prefix", gguf.BOOL, _adds_space_prefix(spec)),
               ("tokenizer.ggml.remove_extra_whitespaces", gguf.BOOL, squeezes)]
    if charsmap:
        entries.append(("tokenizer.ggml.precompiled_charsmap", gguf.ARRAY, (gguf.UINT8, charsmap)))
    return entries, tokens


def _spm_normalizer(normalizer):
    """(the precompiled charsmap's bytes or b"", whether runs of spaces become one) of a
    SentencePiece model's normalizer as transformers writes it to tokenizer.json: a Precompiled
    normalizer carries the charsmap, and Replace(" {2,}") is remove_extra_whitespaces."""
    charsmap, squeezes = b"", False
    normalizer = normalizer or {}
    for n in normalizer.get("normalizers", [normalizer]):
        if n.get("type") == "Precompiled" and n.get("precompiled_charsmap"):
            charsmap = base64.b64decode(n["precompiled_charsmap"])
        if n.get("type") == "Replace" and (n.get("pattern") or {}).get("Regex") == " {2,}":
            squeezes = True
    return charsmap, squeezes


def _merge_scores(tokens, types, merges):
    """SentencePiece-style scores: a token made by a merge scores minus the rank of the first
    merge making it, so llama.cpp (highest score first) merges in the merges list's order;
    every other token scores 0 as SentencePiece's byte and control pieces do."""
    rank = {}
    for k, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", "", 1), k)
    return [-float(rank[t]) if kind == NORMAL and t in rank else 0.0
            for t, kind in zip(tokens, types)]


def _adds_space_prefix(spec):
    """Whether the tokenizer puts "▁" before the text (Llama 2's Prepend normalizer, or a
    Metaspace pre-tokenizer that prepends)."""
    normalizer = spec.get("normalizer") or {}
    for n in normalizer.get("normalizers", [normalizer]):
        if n.get("type") == "Prepend":
            return True
    pre = spec.get("pre_tokenizer") or {}
    for p in pre.get("pretokenizers", [pre]):
        if p.get("type") == "Metaspace":
            return p.get("prepend_scheme", "always") != "never" and p.get("add_prefix_space", True)
    return False


def _special_ids(config_dir, spec, config, tokens):
    ids = {token: i for i, token in enumerate(tokens)}
    model_config = read_json_object(config_dir / "config.json")
    found = {}
    for key, name in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"),
                      ("unk_token", "unknown")):
        token = _token_text(config.get(key))
        if token is not None and token in ids:
            found[name] = ids[token]
    if "eos" not in found:
        eos = model_config.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and eos else eos
        if isinstance(eos, int) and 0 <= eos < len(tokens):
            found["eos"] = eos
    if "bos" not in found and isinstance(model_config.get("bos_token_id"), int):
        found["bos"] = model_config["bos_token_id"]
    unk = spec["model"].get("unk_token")
    if "unknown" not in found and unk in ids:
        found["unknown"] = ids[unk]
    entries = [(f"tokenizer.ggml.{name}_token_id", gguf.UINT32, i) for name, i in found.items()]
    processor = spec.get("post_processor")
    add_bos = config.get("add_bos_token", _adds(processor, 0))
    add_eos = config.get("add_eos_token", _adds(processor, -1))
    return entries + [("tokenizer.ggml.add_bos_token", gguf.BOOL, bool(add_bos)),
                      ("tokenizer.ggml.add_eos_token", gguf.BOOL, bool(add_eos))]


def chat_template_text(model_dir, config=None):
    """The checkpoint's chat template (chat_template.jinja, else tokenizer_config.json's
    default one), or None."""
    model_dir = Path(model_dir)
    if (model_dir / "chat_template.jinja").is_file():
        return read_utf8(model_dir / "chat_template.jinja")
    if config is None:
        path = model_dir / "tokenizer_config.json"
        config = read_json_object(path) if path.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None
