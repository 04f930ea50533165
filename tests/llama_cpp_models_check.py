"""Our tokenizers and chat templates on the real ones of the models llama.cpp tests with: too
large (vocabularies) or not ours to copy (templates) for this repository, so this runs by hand,
on the copy of llama.cpp's models/ folder that the llama-cpp-python source package carries:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsrc
    tar -xzf /tmp/llsrc/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsrc
    .venv/bin/python tests/llama_cpp_models_check.py /tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp/models

Vocabularies: the families we train (Qwen2/2.5/3, Qwen 3.5, Llama 3, Llama 2, Phi-3, GPT-2, and Gemma's
construction on Gemma 4's vocabulary), from models/ggml-vocab-NAME.gguf, with the .inp texts
and .out ids that llama.cpp's convert_hf_to_gguf_update.py wrote from each model's own
tokenizer. Each becomes the tokenizer.json its model ships (byte-level BPE with the family's
split regex; SentencePiece-style BPE whose merges are built from the pieces' scores, as
transformers' converter builds them; or Gemma's: spaces replaced by U+2581, its merges, byte
fallback); the library must then give the .out ids (proving the file is the model's), and ours
must give them too and equal the library's on tests/test_tokenizer_bpe.py's 5,000 strings.

Chat templates: every models/templates/*.jinja (some 70 checkpoints' templates), rendered by
transformers' own render function and by ours for 13 conversations (one turn, a system
message, tool calls one or two at a time with their results and tools given, arguments as
objects or JSON text, reasoning, content as lists of parts, a developer message, template
syntax and special tokens as text), each with the options templates read (enable_thinking
either way, reasoning_effort, documents) and with and without the generation prompt: equal
text, or both refuse (with the template's own message where it raises one).
KNOWN_TEMPLATE_DIFFERENCES are reported, not failed. check_templates(folder) runs on any
folder of .jinja files.

Exits 1 on any other difference.
"""

import copy
import itertools
import json
import sys
import time
from pathlib import Path

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3 = QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
# Qwen 3.5's: combining marks (\p{M}) stay with their letters
QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}"
          r"\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# name: (pattern for byte-level BPE (None: GPT-2's own), normalizer) or "spm"
VOCABS = {"qwen2": (QWEN2, {"type": "NFC"}), "qwen35": (QWEN35, None),
          "llama-bpe": (LLAMA3, None), "gpt-2": (None, None),
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


# template: why it differs where tools are given (only there)
KNOWN_TEMPLATE_DIFFERENCES = {}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOLS2 = TOOLS + [{"type": "function", "function": {
    "name": "search_docs", "description": "Search \"docs\" for a query.\nReturns hits — ranked.",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "description": "what to find"},
        "limit": {"type": "integer", "minimum": 1, "default": 5},
        "kinds": {"type": "array", "items": {"type": "string", "enum": ["pdf", "html"]}},
        "filter": {"type": "object", "properties": {"after": {"type": "string", "format": "date"}}},
        "exact": {"type": "boolean"}, "score": {"type": "number"}, "anything": {}},
        "required": ["query"]}}}]


def _call(number, name, arguments):
    return {"id": f"call_{number:09d}", "type": "function", "function": {"name": name, "arguments": arguments}}


CONVERSATIONS = [  # (messages, tools)
    ([{"role": "user", "content": "Hello! How are you?"}], None),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."}], None),
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "call_123456789", "type": "function",
       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "call_123456789", "name": "get_weather", "content": "{\"temp\": 21}"},
      {"role": "assistant", "content": "It is 21 degrees."}], TOOLS),
    ([{"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "<think>greet</think>Hello!", "reasoning_content": "greet"},
      {"role": "user", "content": "Bye"}], None),
    ([{"role": "user", "content": [{"type": "text", "text": "in parts"}]}], None),
    # two calls in one turn, arguments as JSON text, two results, a schema of every kind
    ([{"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Weather in Paris, and docs on 'fjords'?"},
      {"role": "assistant", "content": None, "tool_calls": [
          _call(1, "get_weather", '{"city": "Paris"}'), _call(2, "search_docs", '{"query": "fjords", "limit": 3}')]},
      {"role": "tool", "tool_call_id": "call_000000001", "name": "get_weather", "content": "{\"temp\": 21}"},
      {"role": "tool", "tool_call_id": "call_000000002", "name": "search_docs", "content": "[\"a\", \"b\"]"},
      {"role": "assistant", "content": "Paris 21. Docs: a, b."}, {"role": "user", "content": "Thanks"}], TOOLS2),
    # nested dict arguments, non-ASCII, reasoning beside a call, a result without a name
    ([{"role": "user", "content": "Finde Dokumente über Ölpreise 📈"},
      {"role": "assistant", "content": "", "reasoning_content": "The user wants docs.", "tool_calls": [
          _call(3, "search_docs", {"query": "Ölpreise", "kinds": ["pdf"], "filter": {"after": "2024-01-01"},
                                   "exact": True, "score": 0.5})]},
      {"role": "tool", "tool_call_id": "call_000000003", "content": "no hits"}], TOOLS2),
    # reasoning in two turns, the conversation ending on the assistant
    ([{"role": "system", "content": "Think first."}, {"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
      {"role": "user", "content": "and 3+3?"},
      {"role": "assistant", "content": "<think>\nthree and three\n</think>\n\n6"}], None),
    # parts everywhere, an image among them
    ([{"role": "system", "content": [{"type": "text", "text": "Describe images."}]},
      {"role": "user", "content": [{"type": "image", "url": "https://x/y.png"}, {"type": "text", "text": "What is this?"}]},
      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
      {"role": "user", "content": [{"type": "text", "text": "Sure?"}]}], None),
    # template syntax, special tokens and whitespace as text, an empty answer
    ([{"role": "user", "content": "{{ not a template }} {% nor this %}\n\n  spaced  "},
      {"role": "assistant", "content": ""}, {"role": "user", "content": "<|im_end|> </s> [INST]"}], None),
    ([{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hello"}], None),
    # a call without id or type, tools given but unused
    ([{"role": "user", "content": "Weather?"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
      {"role": "tool", "content": "sunny"}, {"role": "user", "content": "ok"}], TOOLS),
    ([{"role": "system", "content": "Use tools when needed."}, {"role": "user", "content": "Hi"}], TOOLS2),
]
# the template options real templates read, each rendered with every conversation
OPTIONS = [{}, {"enable_thinking": False}, {"enable_thinking": True}, {"reasoning_effort": "high"},
           {"documents": [{"title": "Doc A", "text": "Alpha."}, {"title": "Doc B", "text": "Beta."}]}]


def check_templates(folder):
    """(renders compared, differences) over every template in `folder`."""
    from chat_template_fixtures import Refused, reference_render
    from py_engine.tokenizers.chat_template import ChatTemplate, TemplateError

    def outcome(render):
        try:
            return render()
        except (Refused, TemplateError) as e:
            return ("refused", e.message)
        except Exception:       # noqa: BLE001 - any other failure: both must fail
            return ("failed",)

    special = {"bos_token": "<s>", "eos_token": "</s>"}
    compared, differences = 0, []
    for path in sorted(folder.glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        ours = outcome(lambda: ChatTemplate(source, **special))
        for (messages, tools), options, prompt in itertools.product(CONVERSATIONS, OPTIONS, (False, True)):
            compared += 1
            # each render gets its own copies: a template may change what it is given
            want = outcome(lambda: reference_render(source, *copy.deepcopy((messages, prompt, tools)),
                                                    **special, **copy.deepcopy(options)))
            got = ours if isinstance(ours, tuple) else outcome(
                lambda: ours.render(*copy.deepcopy((messages, prompt, tools)), **copy.deepcopy(options)))
            if got != want:
                known = KNOWN_TEMPLATE_DIFFERENCES.get(path.name) if tools else None
                differences.append((path.name, known, repr(want)[:160], repr(got)[:160]))
    return compared, differences


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
    compared, differences = check_templates(models / "templates")
    for name in sorted({name for name, *_ in differences}):
        found = [d for d in differences if d[0] == name]
        unknown = [d for d in found if d[1] is None]
        print(f"template {name}: {len(found)} renders differ" +
              (f" (known: {found[0][1]})" if not unknown else ""))
        failed += len(unknown)
        for _, _, want, got in unknown[:2]:
            print(f"    transformers: {want}\n    ours:         {got}")
    print(f"chat templates: {len(list((models / 'templates').glob('*.jinja')))} templates, "
          f"{compared} renders compared, {len(differences)} differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
