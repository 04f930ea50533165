"""Text files into training records: each format detected and converted with known answers,
ChatML checked against transformers' own rendering of conversations, CSV against rows
Python's csv writer wrote, prose chunks against a word-counting tokenizer, and broken inputs
(wrong encoding, binary, truncated JSON, malformed lines) refused with the file and the line
or byte offset; cut and corrupted files raise DataError and nothing else."""

import csv
import io
import json
import random
import re

import pytest

from py_engine.data.chat import CHATML_TEMPLATE
from py_engine.data.classification import DataError
from py_engine.data.chunks import split_into_chunks
from py_engine.data.importers.text import TEXT_FORMATS, decode_text_file, detect_format, import_text

HI = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def words(text):
    return len(text.split())


def conversations(records):
    return [r.messages for r in records]


# ---- each format -----------------------------------------------------------------------------

def test_jsonl_lines_each_say_what_they_are():
    lines = [
        {"messages": HI},
        {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "2+2?"},
                           {"from": "gpt", "value": "4"}], "id": "sg-7"},
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Name a colour", "context": "", "response": "red", "category": "open_qa"},
        {"prompt": "Capital of France?", "completion": "Paris"},
        {"text": "loved every minute", "label": "pos"},
        {"sentence": "dreadful", "label": 0},
        {"text": "Plain text for continued pretraining."},
    ]
    data = "\n".join(json.dumps(x) for x in lines[:3]) + "\n\n" + \
        "\n".join(json.dumps(x) for x in lines[3:]) + "\n"
    records = import_text(data.encode(), "mixed.jsonl")
    assert [r.origin["line"] for r in records] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert all(r.origin["format"] == "jsonl" and r.origin["file"] == "mixed.jsonl" for r in records)
    assert records[0].messages == HI
    assert records[1].messages == [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "2+2?"},
                                   {"role": "assistant", "content": "4"}]
    assert records[1].origin["id"] == "sg-7"
    assert records[2].messages[0]["content"] == "Translate\n\nbonjour"
    assert records[3].messages == [{"role": "user", "content": "Name a colour"},
                                   {"role": "assistant", "content": "red"}]
    assert records[4].messages[1] == {"role": "assistant", "content": "Paris"}
    assert [(r.kind, r.text, r.label) for r in records[5:7]] == [
        ("classification", "loved every minute", "pos"), ("classification", "dreadful", "0")]
    assert records[7].kind == "causal_lm" and records[7].text.startswith("Plain text")
    assert records[6].origin["where"] == "mixed.jsonl:8"
    assert records[0].to_example().source == "mixed.jsonl:1"


def test_json_documents_list_their_items_with_line_numbers():
    items = [{"messages": HI}, {"text": "short", "label": "a"}, {"prompt": "p", "response": "r"}]
    pretty = json.dumps(items, indent=2)
    records = import_text(pretty.encode(), "data.json")
    lines = pretty.split("\n")
    starts = [k + 1 for k, line in enumerate(lines) if line == "  {"]
    assert [r.origin["line"] for r in records] == starts
    assert [r.origin["item"] for r in records] == [0, 1, 2]
    assert records[1].label == "a" and records[2].messages[0]["content"] == "p"
    wrapped = json.dumps({"version": 2, "data": items}, indent=1)
    again = import_text(wrapped.encode(), "wrapped.json")
    assert [r.content_hash for r in again] == [r.content_hash for r in records]
    assert again[0].origin["line"] == wrapped.split("\n").index('  {') + 1
    single = import_text(json.dumps({"conversations": [{"from": "human", "value": "q"},
                                                       {"from": "gpt", "value": "a"}]}).encode())
    assert single[0].messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def render_chatml(conversation):
    """transformers' own rendering of a conversation with the ChatML template."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    return tok.apply_chat_template(conversation, chat_template=CHATML_TEMPLATE, tokenize=False)


def test_chatml_reads_back_what_transformers_renders():
    rng = random.Random(3)
    convs = []
    for k in range(6):
        conv = [{"role": "system", "content": f"You are helper {k}."}] if k % 2 == 0 else []
        for turn in range(rng.randint(1, 3)):
            conv.append({"role": "user", "content": f"question {k}.{turn}\n\nwith a blank line"})
            conv.append({"role": "assistant", "content": f" answer {k}.{turn} <b>ok</b>\n"})
        convs.append(conv)
    # conversations apart: by a blank line, by <|endoftext|>, or by a system turn alone
    r = [render_chatml(c) for c in convs]        # each ends with "<|im_end|>\n"
    text = r[0] + "\n" + r[1] + "<|endoftext|>" + r[2] + "\n" + r[3] + r[4] + "\n\n" + r[5]
    records = import_text(text.encode(), "dump.txt")
    assert records[0].origin["format"] == "chatml"
    assert conversations(records) == convs
    assert records[0].origin["lines"][0] == 1
    second = text.index("<|im_start|>", len(r[0]))
    assert records[1].origin["line"] == text.count("\n", 0, second) + 1


def test_csv_rows_are_the_rows_pythons_csv_writer_wrote():
    rng = random.Random(11)
    rows = []
    for k in range(40):
        text = "".join(rng.choice('ab, ;"\n\'é|') for _ in range(rng.randint(1, 30))).strip() or "x"
        rows.append([text, rng.choice(["pos", "neg", "neutral"])])
    for delimiter, name in ((",", "reviews.csv"), (";", "reviews.csv"), ("\t", "reviews.tsv")):
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow(["Text", "Label"])
        writer.writerows(rows)
        records = import_text(out.getvalue().encode(), name)
        assert [(r.kind, r.text, r.label) for r in records] == \
            [("classification", t, label) for t, label in rows]
        physical = out.getvalue().split("\n")
        for r in records:                       # each origin line is where its row starts
            assert physical[r.origin["line"] - 1].startswith(
                csv_first_cell_prefix(r.text, delimiter))


def csv_first_cell_prefix(text, delimiter):
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow([text])
    return out.getvalue().split("\n")[0]


def test_csv_conversations_and_plain_text_columns():
    alpaca = 'instruction,input,output\nTranslate,bonjour,hello\n"Sum 2 and 2",,4\n'
    records = import_text(alpaca.encode())
    assert records[0].origin["format"] == "csv"
    assert conversations(records) == [
        [{"role": "user", "content": "Translate\n\nbonjour"}, {"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "Sum 2 and 2"}, {"role": "assistant", "content": "4"}]]
    chat = 'system|question|answer\nBe terse.|Why?|Because.\n|What?|That.\n'
    records = import_text(chat.encode(), "qa.csv")
    assert records[0].messages[0] == {"role": "system", "content": "Be terse."}
    assert len(records[1].messages) == 2
    records = import_text(b"id,content\n1,First document.\n2,Second one.\n", "docs.csv")
    assert [(r.kind, r.text) for r in records] == [("causal_lm", "First document."),
                                                   ("causal_lm", "Second one.")]


MARKDOWN = """# Field notes

Birds seen at the estuary this morning, in order of appearance.

- curlew
- redshank
- little egret

## Method

```python
def count(birds):

    return len(birds)
```

Counts were taken every **ten minutes** from the [hide](https://example.org/hide).
""" + "\n\n".join(f"Paragraph {k}: " + " ".join(f"word{k}x{j}" for j in range(40)) for k in range(6))


def test_markdown_is_chunked_at_paragraphs_within_the_token_budget():
    records = import_text(MARKDOWN.encode(), "notes", count_tokens=words, max_tokens=60)
    assert {r.origin["format"] for r in records} == {"markdown"}
    chunks = [r.text for r in records]
    assert all(words(c) <= 60 for c in chunks)
    assert " ".join(chunks).split() == MARKDOWN.split()          # nothing lost or repeated
    fence = next(c for c in chunks if "```python" in c)
    assert "return len(birds)\n```" in fence                     # the code block stays whole
    assert all(not re.search(r"(^|\n)#+ [^\n]*$", c) for c in chunks)    # no chunk ends on a heading
    lines = MARKDOWN.split("\n")
    for r in records:
        first, last = r.origin["lines"]
        assert lines[first - 1].strip() and r.text.startswith(lines[first - 1].strip()[:10])
        assert r.text.rstrip().endswith(lines[last - 1].rstrip()[-10:])
    assert [r.origin["chunk"] for r in records] == list(range(len(records)))


def test_plain_text_splits_long_paragraphs_at_lines_then_sentences_then_words():
    rng = random.Random(5)
    sentences = [" ".join(rng.choice(["tide", "sand", "gull", "wind", "salt"]) for _ in range(rng.randint(3, 30))) + "."
                 for _ in range(80)]
    text = " ".join(sentences) + "\n\n" + "\n".join(sentences[:10]) + "\n\n" + "x" * 500
    for max_tokens in (7, 25, 100):
        chunks = split_into_chunks(text, max_tokens, count_tokens=words)
        assert all(words(c) <= max_tokens for _, _, c in chunks)
        assert " ".join(c for _, _, c in chunks).split() == text.split()
        assert all(text[s:e] == c for s, e, c in chunks if "\n\n" not in c)
    by_chars = split_into_chunks(text, 50)            # the default: 4 characters a token
    assert all(len(c) <= 200 for _, _, c in by_chars)
    assert "".join(c for _, _, c in by_chars).replace(" ", "").replace("\n", "") == \
        text.replace(" ", "").replace("\n", "")
    records = import_text(text.encode(), "beach.txt", max_tokens=100)
    assert records[0].origin == {"file": "beach.txt", "format": "text", "line": 1, "lines": [1, 1],
                                 "chunk": 0, "where": "beach.txt:1"}


# ---- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, name, want", [
    ('{"text": "a"}\n{"text": "b"}\n', None, "jsonl"),
    ('{"text": "a"}\n{"text": "b"}\n', "data.json", "jsonl"),       # .json written as lines
    ('[{"text": "a"}]', "data.jsonl", "json"),                        # one document after all
    ('{\n  "text": "a"\n}\n', None, "json"),
    ('[{"text": "a"}, {"te', None, "json"),                          # truncated: still JSON
    ("<|im_start|>user\nhi<|im_end|>\n", "chat.txt", "chatml"),
    ("We write <|im_start|> in prose sometimes.", None, "text"),
    ("text,label\nfine,pos\n", None, "csv"),
    ("prompt\tresponse\nq\ta\n", None, "csv"),
    ("Hello, world\nThis is, a test.", None, "text"),                # commas but no header
    ("name,age\nann,3\n", None, "text"),                              # no column we know
    ("anything", "table.csv", "csv"),
    ("# Title\n\nBody.", None, "markdown"),
    ("- one\n- two\n\nSee [the docs](https://x.org).", None, "markdown"),
    ("- just a list item", None, "text"),
    ("[1] Introduction\n\nThis is text.", None, "text"),
    ("[link](https://x.org) first", None, "text"),
    ("notes", "readme.md", "markdown"),
    ("Just a line of text.", None, "text"),
])
def test_detection(text, name, want):
    assert detect_format(text, name) == want


def test_a_format_can_be_named_instead_of_detected():
    records = import_text(b"# not a heading here", "x", kind="text")
    assert records[0].origin["format"] == "text"
    with pytest.raises(DataError, match=r"x: unknown text format 'yaml'; formats are json"):
        import_text(b"a: 1", "x", kind="yaml")
    assert set(TEXT_FORMATS) == {"json", "jsonl", "chatml", "csv", "markdown", "text"}


def test_encodings_line_ends_and_byte_order_marks():
    assert decode_text_file(b"\xef\xbb\xbfa\r\nb\rc", "f") == "a\nb\nc"
    assert decode_text_file("héllo\n".encode("utf-16"), "f") == "héllo\n"
    records = import_text('{"text":"a","label":"b"}\r\n{"text":"c","label":"d"}\r\n'.encode("utf-16"), "w.jsonl")
    assert [(r.text, r.label, r.origin["line"]) for r in records] == [("a", "b", 1), ("c", "d", 2)]


# ---- broken inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, name, message", [
    (b"caf\xe9 au lait\nsecond line \xff", "menu.txt",
     r"^menu\.txt: not UTF-8 text \(invalid continuation byte at byte 3, line 1\); save it as UTF-8$"),
    (b"line one\nline two \xc3", "cut.txt", r"^cut\.txt: not UTF-8 text \(unexpected end of data at byte 18, line 2\)"),
    (b"text\nmore\x00\x01\x02", "blob.bin", r"^blob\.bin: binary data, not text \(a NUL byte at byte 9, line 2\)$"),
    (b"%PDF-1.7\n...", "paper.txt", r"^paper\.txt: a PDF document, not text \(its signature at byte 0\)$"),
    ("plain words".encode("utf-16-le"), "w.txt", r"^w\.txt: looks like UTF-16 text without a byte-order mark"),
    (b"", "empty.txt", r"^empty\.txt: the file is empty"),
    (b'[{"messages": [{"role": "user", "content": "hi"}', "cut.json",
     r"^cut\.json:1: not valid JSON \(.* at line 1, column \d+\) \(the text ends before the document does: truncated\?\)$"),
    (b'[\n  {"text": "a"},\n  {"text": "b",,}\n]', "bad.json", r"^bad\.json:3: not valid JSON \(.* at line 3, column 16\)$"),
    (b'{"text": "a"}\n{"text": "b"}\n{"text": oops}\n', "bad.jsonl", r"^bad\.jsonl:3: not valid JSON"),
    (b'{"text": "a"}\n["a list"]\n', "bad.jsonl", r"^bad\.jsonl:2: expected a JSON object, got a list$"),
    (b'{"text": "a"}\n{"title": "b"}\n', "bad.jsonl", r"^bad\.jsonl:2: not a known record format"),
    (b'{"text": "a", "label": true}\n{"text": "b"}\n', "bad.jsonl", r"^bad\.jsonl:1: \"label\" must be a non-empty string or an int"),
    (b'{"conversations": [{"from": "robot", "value": "x"}]}', "sg.json", r"^sg\.json:1: conversations\[0\]: \"from\" must be one of"),
    (b'[{"messages": [{"role": "user", "content": "only a question"}]}]', "m.json", r"^m\.json:1: the conversation has no assistant message"),
    (b'{"data": [], "more": []}', "d.json", r"^d\.json: a JSON object that is not a record"),
    (b'[]', "none.json", r"^none\.json: no examples in this json file$"),
    (b"text,label\nfine,pos\nbroken\n", "t.csv", r"^t\.csv:3: 1 fields, the header has 2$"),
    (b'text,label\nfine,pos\n"never closed,neg\n', "t.csv", r"^t\.csv:3: malformed CSV \(unexpected end of data\)$"),
    (b"text,label\nfine,\n", "t.csv", r"^t\.csv:2: the \"label\" field is empty$"),
    (b"name,age\nann,3\n", "t.csv", r"^t\.csv:1: no usable columns in the header \['name', 'age'\]"),
    (b"text,Text\na,b\n", "t.csv", r"^t\.csv:1: the header repeats the column\(s\) \['text'\]$"),
    (b"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhel", "c.txt",
     r"^c\.txt:3: a turn opened by <\|im_start\|> is never closed by <\|im_end\|> \(truncated\?\)$"),
    (b"<|im_start|>user\nhi<|im_end|>\nstray words\n<|im_start|>assistant\nyo<|im_end|>", "c.txt",
     r"^c\.txt:3: text outside <\|im_start\|> \.\.\. <\|im_end\|> turns: 'stray words"),
    (b"<|im_start|>user\nhi<|im_end|>\n<|im_start|>wizard\nyo<|im_end|>", "c.txt", r"^c\.txt:3: unknown ChatML role 'wizard'"),
    (b"<|im_start|>user\nhi<|im_end|>\n\n<|im_start|>assistant\nyo<|im_end|>", "c.txt",
     r"^c\.txt:1: the conversation has no assistant turn"),
])
def test_broken_inputs_name_the_file_and_the_line_or_byte(data, name, message):
    with pytest.raises(DataError, match=message):
        import_text(data, name)


def test_cut_and_corrupted_files_raise_data_error_and_nothing_else():
    rng = random.Random(99)
    items = [{"messages": HI}, {"text": "a, b", "label": "x"}, {"prompt": "é", "response": "ü"}]
    out = io.StringIO()
    csv.writer(out).writerows([["text", "label"]] + [["some, text", "pos"], ['say "hi"\nthere', "neg"]] * 5)
    bases = [json.dumps(items * 4, indent=2).encode(), "\n".join(json.dumps(x) for x in items * 4).encode(),
             out.getvalue().encode(), render_chatml(HI * 3).encode() * 3, MARKDOWN.encode()]
    outcomes = {"records": 0, "refused": 0}
    for k in range(300):
        b = bytearray(bases[k % len(bases)])
        if rng.random() < 0.5:
            del b[rng.randrange(len(b)):]
        else:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        name = f"fuzz{k}.dat"
        try:
            import_text(bytes(b), name)
            outcomes["records"] += 1
        except DataError as e:
            assert str(e).startswith(name) and "\n" not in str(e), str(e)
            outcomes["refused"] += 1
    assert min(outcomes.values()) >= 30, outcomes


def test_records_py_engine_wrote_are_kept_whole():
    from py_engine.data.record import Record

    records = [Record("classification", "correction", text="cheap flights", label="travel",
                      priority=9, origin={"tab": 3}),
               Record("causal_lm", "chat", messages=HI, origin={"conversation": "c1"})]
    data = "\n".join(json.dumps(r.as_dict()) for r in records) + "\n"
    assert import_text(data.encode(), "queue.jsonl") == records
    with pytest.raises(DataError, match=r"queue.jsonl:1: source must be one of"):
        import_text(b'{"kind": "causal_lm", "source": "fax", "text": "x"}\n', "queue.jsonl")
