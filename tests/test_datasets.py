"""Dataset formats (py_engine/data/datasets.py): every format written and read back gives the
same examples (and, for json, jsonl and csv, the same records: source, priority, created,
origin, id), on random conversations and texts with awkward Unicode and whitespace; ChatML as
transformers' apply_chat_template renders it; files read_chat_jsonl and the classifier's reader
take; seeded, stratified, grouped splits; stats; bad input named by file and line; and, inside
Chromium through Pyodide, the same PII findings, cleaning report, files and split as here.

Run: .venv/bin/python -m pytest tests/test_datasets.py -q
"""

import csv
import json
import random

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

import pii_corpus
from py_engine.data.chat import CHATML_TEMPLATE, read_chat_jsonl
from py_engine.data.classification import DataError, Example, read_jsonl
from py_engine.data.cleaning import QualityConfig, clean_records
from py_engine.data.datasets import (FORMATS, ExportConfig, dataset_files, dataset_stats,
                                     dumps_dataset, export_dataset, import_dataset,
                                     loads_dataset, split_records)
from py_engine.data.dedup import DedupConfig
from py_engine.data.pii import find_pii
from py_engine.data.record import Record
from py_engine.formats.output_dir import MARKER, OutputDirError
from py_engine.harness import run_json

PIECES = ["Hello", "the capital of France", "Paris", "def add(a, b):\n    return a + b", "42",
          "café", "cafe\u0301", "Grüße", "你好，世界", "😀", "👍🏽", "\n", "\n\n", " ", "  ", "\t",
          "\"quoted\"", "a,b;c", "'single'", "\\backslash", "\r\n", "{\"json\": 1}", "<b>tag</b>",
          "|pipe|", "im_start without the bars"]
CHAT_FORMATS = ("messages", "chatml", "alpaca", "instruction", "sharegpt")


def content(rng):
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
    return rng.choice(["", " ", "\n"]) + text + rng.choice(["", " ", "\n"])


def conversation(rng, turns=None, system=None):
    messages = []
    if system if system is not None else rng.random() < 0.4:
        messages.append({"role": "system", "content": content(rng)})
    for _ in range(turns or rng.randint(1, 4)):
        messages += [{"role": "user", "content": content(rng)},
                     {"role": "assistant", "content": content(rng)}]
    return messages


def random_records(rng, n=60, kinds=("chat", "text", "classification")):
    records = []
    for k in range(n):
        kind = kinds[k % len(kinds)]
        common = dict(priority=rng.randint(-5, 500), created=rng.uniform(1.6e9, 1.9e9),
                      origin={"file": f"in{k}.txt", "line": k, "note": "ü"}, id=rng.choice([None, k, f"q{k}"]))
        source = rng.choice(["correction", "chat", "website", "image", "text", "dataset"])
        if kind == "chat":
            records.append(Record("causal_lm", source, messages=conversation(rng), **common))
        elif kind == "text":
            records.append(Record("causal_lm", source, text=content(rng) + "x", **common))
        else:
            records.append(Record("classification", source, text=content(rng) + "x",
                                  label=rng.choice(["pos", "neg", "neu tral", "ünï"]), **common))
    return records


def same_content(a, b):
    return [(r.kind, r.text, r.label, r.messages) for r in a] == \
        [(r.kind, r.text, r.label, r.messages) for r in b]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_record_formats_round_trip_everything(fmt, tmp_path):
    records = random_records(random.Random())
    back = loads_dataset(dumps_dataset(records, fmt), fmt if fmt == "csv" else None, "d")
    assert back == records                 # kind, source, content, priority, created, origin, id
    result = export_dataset(records, tmp_path / "out", ExportConfig(format=fmt))
    assert import_dataset(result.paths["data"]) == records


@pytest.mark.parametrize("fmt", CHAT_FORMATS)
def test_chat_formats_round_trip_content(fmt, tmp_path):
    rng = random.Random()
    kinds = ("chat", "text") if fmt in ("messages", "chatml") else ("chat",)
    records = random_records(rng, kinds=kinds)
    if fmt == "instruction":
        records = [Record("causal_lm", "chat", messages=conversation(rng, turns=1)) for _ in range(40)]
    result = export_dataset(records, tmp_path / "out", ExportConfig(format=fmt))
    back = import_dataset(result.paths["data"], source="text")
    assert same_content(back, records)
    assert {r.source for r in back} == {"text"}        # content only: the reader's source
    assert back[3].origin == {"file": result.paths["data"], "line": 5 if fmt in
                              ("alpaca", "sharegpt") else 4}
    again = import_dataset(result.paths["data"], fmt, source="text")      # named, not detected
    assert same_content(again, back) and [r.origin for r in again] == [r.origin for r in back]
    text = dumps_dataset(records, fmt)
    assert same_content(loads_dataset(text), records)


def test_chatml_is_what_transformers_renders():
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    rng = random.Random()
    records = [Record("causal_lm", "chat", messages=conversation(rng)) for _ in range(50)]
    lines = dumps_dataset(records, "chatml").splitlines()
    for record, line in zip(records, lines):
        expected = tokenizer.apply_chat_template(record.messages, chat_template=CHATML_TEMPLATE,
                                                 tokenize=False)
        assert json.loads(line) == {"text": expected}


def test_files_other_readers_take(tmp_path):
    rng = random.Random(4)
    chats = [Record("causal_lm", "chat", messages=conversation(rng)) for _ in range(20)]
    texts = [Record("causal_lm", "website", text=content(rng) + "x") for _ in range(5)]
    labelled = random_records(rng, 30, kinds=("classification",))
    out = export_dataset(chats + texts, tmp_path / "chat", ExportConfig(format="messages"))
    examples = read_chat_jsonl(out.paths["data"])
    assert [(e.messages, e.text) for e in examples] == [(r.messages, r.text) for r in chats + texts]
    out = export_dataset(chats + texts, tmp_path / "records", ExportConfig(format="jsonl"))
    assert [e.messages for e in read_chat_jsonl(out.paths["data"])][:20] == [r.messages for r in chats]
    out = export_dataset(labelled, tmp_path / "cls", ExportConfig(format="jsonl"))
    assert [(e.text, e.label) for e in read_jsonl(out.paths["data"])] == \
        [(r.text, r.label) for r in labelled]
    out = export_dataset(labelled, tmp_path / "csv", ExportConfig(format="csv"))
    with open(out.paths["data"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(row["text"], row["label"], int(row["priority"])) for row in rows] == \
        [(r.text, r.label, r.priority) for r in labelled]


def test_reading_what_read_chat_jsonl_reads(tmp_path):
    lines = [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
        {"instruction": "Add", "input": "2 and 2", "output": "4"},
        {"instruction": "Name a colour", "output": "red", "system": "terse",
         "history": [["hi", "hello"]]},
        {"prompt": "2+2?", "response": "4"},
        {"prompt": "Capital of France?", "completion": "Paris", "system": "geography"},
        {"text": "plain text for continued pretraining"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    expected = read_chat_jsonl(path)
    records = import_dataset(path)
    assert [(r.messages, r.text) for r in records] == [(e.messages, e.text) for e in expected]
    assert expected[2].messages[0] == {"role": "system", "content": "terse"}
    assert [m["content"] for m in expected[2].messages] == ["terse", "hi", "hello",
                                                            "Name a colour", "red"]
    assert expected[1].messages[0]["content"] == "Add\n\n2 and 2"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                                  {"from": "gpt", "value": "yo"}],
                                "system": "sys"}) + "\n")
    assert import_dataset(path)[0].messages == [{"role": "system", "content": "sys"},
                                                {"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "yo"}]


def test_export_options_system_prompt_filters_and_stats(tmp_path):
    records = [Record("causal_lm", "chat", messages=[
        {"role": "user", "content": f"question {k}: will it rain on day {k}?"},
        {"role": "assistant", "content": f"answer {k}: sunny, {k * 3} degrees"}]) for k in range(10)]
    records += [records[4], Record("causal_lm", "website", text="short")]
    config = ExportConfig(format="sharegpt", system_prompt="You are kind.",
                          quality=QualityConfig(), dedup=DedupConfig())
    result = export_dataset(records, tmp_path / "out", config)
    assert result.counts == {"data": 10}
    assert result.cleaning.removed_counts() == {"duplicate": 1, "too_short": 1}
    back = import_dataset(result.paths["data"])
    assert all(r.messages[0] == {"role": "system", "content": "You are kind."} for r in back)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["cleaning"]["removed"] == {"duplicate": 1, "too_short": 1}
    assert stats["all"]["records"] == 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "data.json", "stats.json"]


def test_export_switches_and_system_messages_left_out():
    """ExportConfig.from_options (what `py-engine data export` and the HTTP API ask with):
    quality_filter and deduplicate are the default filters, validation_split a train and
    validation split, and include_system false drops system messages (a system prompt cannot
    be added then)."""
    records = [Record("causal_lm", "chat", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"question {k}: will it rain on day {k}?"},
        {"role": "assistant", "content": f"answer {k}: sunny, {k * 3} degrees"}]) for k in range(10)]
    records += [records[4], Record("causal_lm", "website", text="short")]
    config = ExportConfig.from_options("messages", quality_filter=True, deduplicate=True,
                                       include_system=False, validation_split=0.2, seed=1)
    assert config == ExportConfig(format="messages", quality=QualityConfig(), dedup=DedupConfig(),
                                  split={"train": 0.8, "validation": 0.2}, seed=1,
                                  include_system=False)
    result = dataset_files(records, config)
    assert result.counts == {"train": 8, "validation": 2}
    back = [r for name in ("train", "validation")
            for r in loads_dataset(result.files[f"{name}.jsonl"].decode(), "messages")]
    assert len(back) == 10 and all([m["role"] for m in r.messages] == ["user", "assistant"]
                                   for r in back)
    kept = loads_dataset(dumps_dataset(records[:2], "messages"), "messages")
    assert all(r.messages[0]["role"] == "system" for r in kept)
    for bad, message in (({"validation_split": 1.0}, "validation_split"),
                         ({"validation_split": 0.1, "split": (0.5, 0.5)}, "not both"),
                         ({"include_system": False, "system_prompt": "Hi"}, "system prompt")):
        with pytest.raises(ValueError, match=message):
            ExportConfig.from_options("messages", **bad)


def test_export_writes_only_owned_directories(tmp_path):
    records = random_records(random.Random(1), 6)
    out = tmp_path / "out"
    export_dataset(records, out)
    export_dataset(records[:3], out)                         # py_engine's own: replaced
    assert len(import_dataset(out / "data.jsonl")) == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError):
        export_dataset(records, mine)
    assert (mine / "notes.txt").read_text() == "mine" and len(list(mine.iterdir())) == 1
    with pytest.raises(DataError, match="record 1 .* cannot be written as sharegpt: sharegpt "
                                        "holds only conversations, and this is a plain text"):
        export_dataset(records, tmp_path / "new", ExportConfig(format="sharegpt"))
    assert not (tmp_path / "new").exists()


def test_splits_are_seeded_stratified_and_keep_conversations_together():
    rng = random.Random(0)
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    records = [Record("classification", "dataset", text=f"t{k}", label=label)
               for k, label in enumerate(labels)]
    records += [Record("causal_lm", "chat", messages=conversation(rng),
                       origin={"conversation": f"c{k % 7}"}) for k in range(35)]
    split = split_records(records, (0.8, 0.1, 0.1), seed=3)
    assert split == split_records(records, (0.8, 0.1, 0.1), seed=3)
    assert split != split_records(records, (0.8, 0.1, 0.1), seed=4)
    assert sorted(id(r) for part in split.values() for r in part) == sorted(id(r) for r in records)
    for label, n in (("a", 60), ("b", 30), ("c", 10)):
        counts = {name: sum(r.label == label for r in part) for name, part in split.items()}
        assert counts == {"train": round(0.8 * n), "validation": round(0.1 * n),
                          "test": round(0.1 * n)}
    for name, part in split.items():
        for other, rest in split.items():
            if other != name:
                assert not {r.origin["conversation"] for r in part if r.kind == "causal_lm"} & \
                    {r.origin["conversation"] for r in rest if r.kind == "causal_lm"}
    halves = split_records(records, {"train": 0.5, "test": 0.5}, seed=1, stratify=False)
    assert abs(len(halves["train"]) - len(halves["test"])) <= 5      # conversations are 5 each
    with pytest.raises(ValueError, match="add up to 1"):
        split_records(records, (0.8, 0.3))


def test_split_export_and_stats(tmp_path):
    records = random_records(random.Random(8), 90)
    config = ExportConfig(format="jsonl", split=(0.8, 0.1, 0.1), seed=5,
                          count_tokens=lambda s: len(s.split()))
    result = export_dataset(records, tmp_path / "out", config)
    assert sorted(result.paths) == ["test", "train", "validation"]
    back = [r for name in ("train", "validation", "test") for r in import_dataset(result.paths[name])]
    assert sorted(back, key=lambda r: r.created) == sorted(records, key=lambda r: r.created)
    stats = result.stats
    assert stats["all"]["length"]["unit"] == "tokens"
    assert sum(s["records"] for s in stats["splits"].values()) == 90
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == \
        json.loads(json.dumps(stats))


def test_stats_known_answers():
    records = [Record("classification", "correction", text="x" * n, label=label)
               for n, label in [(1, "a"), (3, "a"), (4, "b"), (9, "b"), (100, "b")]]
    records.append(Record("causal_lm", "chat", messages=[{"role": "user", "content": "ab"},
                                                         {"role": "assistant", "content": "cd"}]))
    stats = dataset_stats(records)
    assert stats["records"] == 6
    assert stats["by_kind"] == {"causal_lm": 1, "classification": 5}
    assert stats["by_source"] == {"chat": 1, "correction": 5}
    assert stats["by_label"] == {"a": 2, "b": 3}
    assert stats["by_priority"] == {"300": 5, "200": 1}
    length = stats["length"]       # characters: 1, 3, 4, 9, 100 and "ab\ncd" = 5
    assert (length["unit"], length["total"], length["min"], length["max"], length["p50"]) == \
        ("characters", 122, 1, 100, 4)
    assert length["histogram"] == [
        {"from": 1, "to": 2, "count": 1}, {"from": 2, "to": 4, "count": 1},
        {"from": 4, "to": 8, "count": 2}, {"from": 8, "to": 16, "count": 1},
        {"from": 16, "to": 32, "count": 0}, {"from": 32, "to": 64, "count": 0},
        {"from": 64, "to": 128, "count": 1}]
    assert dataset_stats(records, count_tokens=lambda s: 7)["length"]["total"] == 42


BAD_FILES = [
    ("a.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
                '"content": "yo"}]}\n\n{"prompt": "x"\n', None, "a.jsonl:3: not valid JSON"),
    ("b.jsonl", '{"prompt": "x", "response": "y"}\n{"colour": "red"}\n', None,
     "b.jsonl:2: not a known record format"),
    ("c.json", '[\n{"instruction": "a", "output": "b"},\n{"instruction": 5, "output": "b"}\n]',
     None, "c.json:3: \"instruction\" must be a string"),
    ("d.json", '[\n{"conversations": [{"from": "human", "value": "hi"}]},\n'
               '{"conversations": [{"from": "robot", "value": "x"}]}\n]', None,
     "d.json:3: conversations\\[0\\]: \"from\" must be one of"),
    ("e.json", '[{"text": "a"} {"text": "b"}]', None, "e.json:1: expected ',' or ']'"),
    ("f.csv", 'text,label\nhello,pos\n"unterminated,neg\n', None, "f.csv:3: the row does not"),
    ("g.csv", 'text,label,messages\nhi,,not json\n', None, "g.csv:2: the messages cell is not JSON"),
    ("h.csv", 'body,label\nhi,pos\n', None, "h.csv:1: the header must name columns"),
    ("i.jsonl", '{"kind": "classification", "source": "nowhere", "text": "x"}\n', None,
     "i.jsonl:1: source must be one of"),
    ("j.jsonl", '{"text": "<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nyo"}\n',
     None, r"j.jsonl:1:3: a turn opened by <\|im_start\|> is never closed by <\|im_end\|>"),
    ("k.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
                '"content": "yo"}]}\n', "alpaca", "k.jsonl:1: expected a record of the alpaca format"),
    ("l.jsonl", "\n\n", None, "l.jsonl: the dataset is empty"),
    ("m.json", '[\n{"text": "a"}\n]\n]', None, "m.json:3: text after the end"),
    ("n.csv", "text,priority\nhi,high\n", None, "n.csv:2: priority must be an integer"),
]


@pytest.mark.parametrize("name, text, fmt, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_name_the_file_and_line(tmp_path, name, text, fmt, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as e:
        import_dataset(path, fmt)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_bytes_and_paths(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=f"{path}: not UTF-8 text .* at byte 13"):
        import_dataset(path)
    with pytest.raises(DataError, match="no data file at"):
        import_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unknown dataset format 'yaml'"):
        ExportConfig(format="yaml")
    assert set(FORMATS) == {"json", "jsonl", "csv", "messages", "chatml", "alpaca",
                            "instruction", "sharegpt"}


def test_a_byte_order_mark_is_not_data(tmp_path):
    """Notepad and Excel's "CSV UTF-8" begin a file with a UTF-8 byte order mark: every reader
    of user data takes such a file as the same file without it."""
    from py_engine.export.job_train import read_jsonl as read_job_jsonl
    from py_engine.tabs.tab_data import read_tabs

    rows = {"texts": '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n',
            "chats": '{"messages": [{"role": "user", "content": "hi"}, '
                     '{"role": "assistant", "content": "yo"}]}\n',
            "tabs": '{"url": "https://github.com/a/b", "title": "a/b", "label": "Dev"}\n'}
    files = {}
    for name, text in rows.items():
        plain, marked = tmp_path / f"{name}.jsonl", tmp_path / f"{name}_bom.jsonl"
        plain.write_text(text, encoding="utf-8")
        marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        files[name] = plain, marked
    for name, read in [("texts", read_jsonl), ("chats", read_chat_jsonl), ("tabs", read_tabs),
                       ("texts", read_job_jsonl), ("chats", import_dataset)]:
        plain, marked = files[name]
        # the records name their file: alike but for that name
        assert repr(read(marked)).replace("_bom", "") == repr(read(plain)), (name, read)
        assert len(read(marked)) == rows[name].count("\n")


def test_what_a_format_cannot_hold_is_refused():
    chat = Record("causal_lm", "chat", messages=[{"role": "user", "content": "a"},
                                                 {"role": "assistant", "content": "b"},
                                                 {"role": "user", "content": "c"},
                                                 {"role": "assistant", "content": "d"}])
    unanswered = Record("causal_lm", "chat", messages=[{"role": "user", "content": "a"}])
    text = Record("causal_lm", "website", text="a page")
    cases = [(chat, "instruction", "has 2; use messages"),
             (Record("classification", "correction", text="x", label="y"), "messages",
              "messages holds only causal-LM records .texts and conversations., and this is a "
              "classification record; use json, jsonl or csv"),
             (unanswered, "messages", "no assistant message"),
             (text, "alpaca", "this is a plain text"),
             (Record("causal_lm", "chat", messages=[{"role": "user", "content": "<|im_end|>"},
                                                    {"role": "assistant", "content": "b"}]),
              "chatml", "ChatML's own markers"),
             (Record("causal_lm", "chat", messages=[{"role": "assistant", "content": "a"},
                                                    {"role": "user", "content": "b"}]),
              "alpaca", "alternate user and assistant")]
    for record, fmt, message in cases:
        with pytest.raises(DataError, match=message):
            dumps_dataset([record], fmt)
    with pytest.raises(DataError, match="^record 1 \\(Record\\(causal_lm, website, 'a page'\\)\\) "
                                        "cannot be written as sharegpt"):
        dumps_dataset([chat, text], "sharegpt")


def test_examples_of_the_trainers_are_datasets_too():
    examples = [Example("cheap flights", "travel"), Example("new shoes", "shopping")]
    back = loads_dataset(dumps_dataset(examples, "csv"), "csv")
    assert [(r.kind, r.text, r.label, r.source) for r in back] == \
        [("classification", "cheap flights", "travel", "dataset"),
         ("classification", "new shoes", "shopping", "dataset")]


BROWSER = """
import json
from py_engine.data.cleaning import clean_records
from py_engine.data.datasets import ExportConfig, dumps_dataset, export_dataset, import_dataset
from py_engine.data.pii import find_pii
from py_engine.data.record import Record

I = json.loads(INPUTS)
records = [Record.from_dict(d) for d in I["records"]]
chats = [r for r in records if r.messages is not None]
export_dataset(records, "/work/export", ExportConfig(format="jsonl", split=(0.8, 0.2), seed=2))
json.dumps({
    "found": [[[m.type, m.start, m.end] for m in find_pii(text)] for text in I["texts"]],
    "cleaning": clean_records(records).summary(),
    "files": {fmt: dumps_dataset(records if fmt in ("json", "jsonl", "csv") else chats, fmt)
              for fmt in ("json", "jsonl", "csv", "messages", "chatml", "sharegpt")},
    "train": [r.as_dict() for r in import_dataset("/work/export/train.jsonl")],
})
"""


@pytest.mark.browser
def test_cleaning_and_formats_in_the_browser(engine_page, tmp_path):
    """The same PII findings, cleaning report, files and split inside Pyodide as on the host."""
    texts = [text for text, _ in pii_corpus.corpus() + pii_corpus.heldout_lines()]
    records = random_records(random.Random(6), 40)
    records += [Record("causal_lm", "chat", messages=[
        {"role": "user", "content": "mail jane@example.org, call 020 7946 0958\u00a0now"},
        {"role": "assistant", "content": "noted\u200b"}]), records[0]]
    inputs = {"texts": texts, "records": [r.as_dict() for r in records]}
    got = run_json(engine_page, BROWSER.replace("INPUTS", repr(json.dumps(inputs))))
    assert got["found"] == [[[m.type, m.start, m.end] for m in find_pii(t)] for t in texts]
    assert got["cleaning"] == json.loads(json.dumps(clean_records(records).summary()))
    chats = [r for r in records if r.messages is not None]
    for fmt, text in got["files"].items():
        assert text == dumps_dataset(records if fmt in ("json", "jsonl", "csv") else chats, fmt), fmt
    out = export_dataset(records, tmp_path / "export",
                         ExportConfig(format="jsonl", split=(0.8, 0.2), seed=2))
    assert got["train"] == [r.as_dict() for r in import_dataset(out.paths["train"])]
