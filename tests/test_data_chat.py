"""Chat training data (py_engine/data/chat.py) against transformers.

On the tiny ChatML checkpoint of tests/tiny_chat.py, for a few hundred random conversations
(multi-turn, with and without system messages, random Unicode content with leading and
trailing spaces, newlines, accents, CJK, emoji): ids must equal AutoTokenizer's
apply_chat_template(tokenize=True), and labels must equal a reference built independently from
transformers' offset_mapping: each assistant content plus the "<|im_end|>" after it is found in
the text apply_chat_template renders, and a token is trained when its character range overlaps
one of those spans. Text examples must equal AutoTokenizer(text).input_ids. Every record format
is read, and malformed lines give errors naming file, line and field.

Run: .venv/bin/python -m pytest tests/test_data_chat.py -q
"""

import json
import random
import unicodedata

import pytest
from transformers import AutoTokenizer

from py_engine.data.chat import (IGNORE_INDEX, ChatExample, DataError, encode_chat_example,
                                 encode_chat_examples, load_chat_template, parse_chat_jsonl,
                                 read_chat_jsonl)
from py_engine.tokenizers import BPETokenizer
from tiny_chat import tiny_chat_dir

N_CONVERSATIONS = 300
PIECES = ["Hello", "the capital of France", "Paris", "waves roll in", "def add(a, b):",
          "    return a + b", "42", "2026", "café", "cafe\u0301", "Grüße", "你好，世界", "日本語",
          "😀", "👍🏽", "\n", "\n\n", " ", "  ", "\t", "...", "?!", "it's", "I'm", "x" * 30]


def random_content(rng):
    parts = []
    for _ in range(rng.randint(0, 12)):
        if rng.random() < 0.15:
            parts.append("".join(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff),
                                                 rng.randint(0x4e00, 0x9fff),
                                                 rng.randint(0x1f300, 0x1f64f)]))
                                 for _ in range(rng.randint(1, 6))))
        else:
            parts.append(rng.choice(PIECES))
    text = rng.choice(["", " ", ""]).join(parts)
    if rng.random() < 0.2:
        text = rng.choice([" ", "  ", "\n", " \n "]) + text
    if rng.random() < 0.2:
        text += rng.choice([" ", "  ", "\n"])
    return text


def random_conversation(rng):
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": random_content(rng)})
    for _ in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": random_content(rng)})
        messages.append({"role": "assistant", "content": random_content(rng)})
    if rng.random() < 0.2:      # a conversation may end on a user turn
        messages.append({"role": "user", "content": random_content(rng)})
    return messages


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def checkpoint(request, tmp_path_factory):
    """The tiny checkpoint, transformers' tokenizer for it, and ours. Ours reads the tokenizer
    JSON transformers actually runs: for model_type qwen2, transformers 5's Qwen2Tokenizer
    replaces the file's pre-tokenizer and normalizer with Qwen2's (NFC, Qwen2's regex), so
    the tiny file (GPT-2 style) is not what it tokenizes with; real Qwen2 files already hold
    Qwen2's. For "llama" the file is used as it is."""
    path = tiny_chat_dir(tmp_path_factory.mktemp("chat"), family=request.param)
    hf = AutoTokenizer.from_pretrained(path)
    return path, hf, BPETokenizer.from_json(hf.backend_tokenizer.to_str())


def reference_labels(hf, messages):
    """Labels from transformers alone: spans located in the rendered text, offsets from
    return_offsets_mapping, trained where a token overlaps a span."""
    text = hf.apply_chat_template(messages, tokenize=False)
    spans, pos = [], 0
    for m in messages:
        turn = f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>"
        at = text.index(turn, pos)
        pos = at + len(turn)
        if m["role"] == "assistant":
            spans.append((at + len(turn) - len(m["content"]) - len("<|im_end|>"), pos))
    out = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    return out.input_ids, [i if s < e and any(s < b and a < e for a, b in spans) else IGNORE_INDEX
                           for i, (s, e) in zip(out.input_ids, out.offset_mapping)]


def test_conversations_like_transformers(checkpoint):
    path, hf, tok = checkpoint
    template = load_chat_template(path, tok)
    rng = random.Random(7)
    straddling = 0
    for n in range(N_CONVERSATIONS):
        messages = random_conversation(rng)
        encoded = encode_chat_example(ChatExample(messages=messages), tok, template)
        expected = hf.apply_chat_template(messages, tokenize=True)["input_ids"]
        assert encoded.ids == expected, f"conversation {n}: ids differ"
        ids, labels = reference_labels(hf, messages)
        assert ids == expected
        assert encoded.labels == labels, f"conversation {n}: labels differ\n{messages}"
        # What is trained decodes to the assistant turns, but where a token straddles a
        # turn's start (the header's "\n" merged with leading spaces) or NFC composed.
        trained = hf.decode([i for i in encoded.labels if i != IGNORE_INDEX],
                            skip_special_tokens=False)
        answers = "".join(m["content"] + "<|im_end|>" for m in messages
                          if m["role"] == "assistant")
        assert squeeze(trained) == squeeze(answers), f"conversation {n}"
        straddling += trained != answers
    print(f"\n{N_CONVERSATIONS} conversations: ids and labels as transformers'; "
          f"{straddling} with a token straddling a turn's edge or text NFC composed")


def squeeze(text):
    """Text without whitespace, NFC-normalized: what trained tokens must decode to."""
    return "".join(unicodedata.normalize("NFC", text).split())


def test_text_examples_like_transformers(checkpoint):
    path, hf, tok = checkpoint
    rng = random.Random(11)
    for _ in range(100):
        text = random_content(rng) + " and more"   # two tokens at least: one to score
        encoded = encode_chat_example(ChatExample(text=text), tok)
        assert encoded.ids == hf(text).input_ids
        assert encoded.labels == encoded.ids


def test_truncation_keeps_the_start_and_refuses_an_untrainable_example(checkpoint):
    path, hf, tok = checkpoint
    template = load_chat_template(path, tok)
    messages = [{"role": "user", "content": "tell me " * 40},
                {"role": "assistant", "content": "Paris"}]
    full = encode_chat_example(ChatExample(messages=messages), tok, template)
    first_trained = next(k for k, label in enumerate(full.labels) if label != IGNORE_INDEX)
    cut = encode_chat_example(ChatExample(messages=messages), tok, template,
                              max_length=first_trained + 1)
    assert cut.ids == full.ids[:first_trained + 1] and cut.labels == full.labels[:len(cut)]
    with pytest.raises(DataError, match="no token to train on within max_length=20"):
        encode_chat_example(ChatExample(messages=messages), tok, template, max_length=20)
    examples = [ChatExample(messages=messages), ChatExample(text="short text here")]
    with pytest.raises(DataError, match="example 0: .*max_length=20"):
        encode_chat_examples(examples, tok, template, max_length=20)
    encoded, skipped = encode_chat_examples(examples, tok, template, max_length=20,
                                            skip_untrainable=True)
    assert skipped == 1 and encoded[0].ids == hf("short text here").input_ids


def test_fallback_template_when_the_checkpoint_has_none(checkpoint, tmp_path):
    path, hf, tok = checkpoint
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("chat_template")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    template = load_chat_template(tmp_path, tok)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text, spans = template.render_with_spans(messages)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    assert [text[a:b] for a, b in spans] == ["Hello<|im_end|>"]
    encoded = encode_chat_example(ChatExample(messages=messages), tok, template)
    assert hf.decode([i for i in encoded.labels if i != IGNORE_INDEX]) == "Hello<|im_end|>"
    plain = BPETokenizer.from_json(dict(json.loads(hf.backend_tokenizer.to_str()),
                                        added_tokens=[]))
    with pytest.raises(DataError, match=r"no chat template.*<\|im_start\|>"):
        load_chat_template(tmp_path, plain)
    with pytest.raises(DataError, match="needs a chat template"):
        encode_chat_example(ChatExample(messages=messages), tok)


# ---- reading the formats ---------------------------------------------------------------------

def test_each_format_is_read(tmp_path):
    lines = [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]},
        {"instruction": "Summarize.", "input": "A long text.", "output": "Short."},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "Say hi.", "output": "Hi!"},
        {"prompt": "2+2?", "response": "4"},
        {"prompt": "Capital of France?", "completion": "Paris"},
        {"text": "Plain text for continued pretraining."},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines[:3]) + "\n\n   \n"
                    + "\n".join(json.dumps(r) for r in lines[3:]) + "\n", encoding="utf-8")
    examples = read_chat_jsonl(path)

    def chat(user, answer):
        return ChatExample(messages=[{"role": "user", "content": user},
                                     {"role": "assistant", "content": answer}])
    assert examples == [ChatExample(messages=lines[0]["messages"]),
                        chat("Summarize.\n\nA long text.", "Short."), chat("Say hi.", "Hi!"),
                        chat("Say hi.", "Hi!"), chat("2+2?", "4"),
                        chat("Capital of France?", "Paris"),
                        ChatExample(text="Plain text for continued pretraining.")]


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user", "content": "a"}', "data.jsonl:3: not valid JSON"),
    ('[1, 2]', "data.jsonl:3: expected a JSON object, got list"),
    ('{"question": "a", "answer": "b"}', r"data.jsonl:3: not a known record format.*'answer'"),
    ('{"messages": []}', "data.jsonl:3: \"messages\" must be a non-empty list"),
    ('{"messages": [{"role": "bot", "content": "a"}]}',
     r"data.jsonl:3: messages\[0\]: \"role\" must be one of system, user, assistant, got 'bot'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]}',
     r"data.jsonl:3: messages\[1\]: \"content\" must be a string, got 5"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "data.jsonl:3: .*no assistant message"),
    ('{"instruction": "a", "input": "b"}', "data.jsonl:3: \"output\" must be a string, got None"),
    ('{"instruction": "a", "input": 3, "output": "c"}', "data.jsonl:3: \"input\" must be a string"),
    ('{"prompt": "a"}', "data.jsonl:3: \"response\" must be a string, got None"),
    ('{"prompt": "a", "response": "b", "completion": "c"}', "data.jsonl:3: .*not both"),
    ('{"text": null}', "data.jsonl:3: \"text\" must be a string"),
    ('{"text": "a", "prompt": "b", "response": "c"}',
     "data.jsonl:3: the record mixes formats \\(prompt/response and text\\)"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_chat_jsonl(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no data file"):
        read_chat_jsonl(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        read_chat_jsonl(tmp_path / "empty.jsonl")
    assert parse_chat_jsonl(['{"text": "a"}'], "x") == [ChatExample(text="a")]


def test_a_template_failing_on_a_conversation_is_a_data_error(checkpoint):
    """A template that refuses a conversation, or fails on it (here a string + None, which
    jinja2 fails on too), makes that example a DataError naming the cause, not a crash."""
    from py_engine.tokenizers.chat_template import ChatTemplate

    _, _, tok = checkpoint
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    failing = ChatTemplate("{% for m in messages %}{{ m.content + none }}{% endfor %}",
                           eos_token="<|im_end|>")
    with pytest.raises(DataError, match="failed on this conversation"):
        encode_chat_example(ChatExample(messages=messages), tok, failing)
    refusing = ChatTemplate("{{ raise_exception('Only user turns, please') }}")
    with pytest.raises(DataError, match="Only user turns, please"):
        encode_chat_example(ChatExample(messages=messages), tok, refusing)
