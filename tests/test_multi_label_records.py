"""Multi-label classification records through the data layer: a record's label may be the list
of label names that apply to its text (py_engine/data/record.py), read from JSON and JSONL
files, cleaned and deduplicated, written and read back as json, jsonl and CSV (a JSON
array in the label cell), split and counted, queued, and learned by a classifier of that kind
(app/models.py: a single-label one refuses them by name). The HTTP API's jobs train on them
(tests/test_api.py); the loss and gradients of the multi-label head are held to transformers
in tests/test_problem_types.py."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from py_engine.data.classification import DataError, Example
from py_engine.data.cleaning import CleaningConfig, clean_records
from py_engine.data.datasets import dataset_stats, dumps_dataset, loads_dataset, split_records
from py_engine.data.dedup import DedupConfig
from py_engine.data.importers.text import import_text
from py_engine.data.queue import TrainingQueue
from py_engine.data.record import Record, RecordError


def run(coro):
    """asyncio.run in a thread of its own (browser tests may hold this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def tagged(text, labels, **fields):
    return Record("classification", "dataset", text=text, label=labels, **fields)


def test_a_label_list_is_a_set_of_names():
    record = tagged("goal in the final", ["sport", "news"])
    assert record.label == ["news", "sport"]                       # kept sorted
    assert record.content_hash == tagged("goal in the final", ["sport", "news"]).content_hash
    assert record.content_hash == tagged("goal in the final", ("news", "sport")).content_hash
    hashes = {tagged("goal in the final", labels).content_hash
              for labels in (["sport"], [], ["news", "sport"])}
    hashes.add(Record("classification", "dataset", text="goal in the final", label="sport").content_hash)
    assert len(hashes) == 4          # one name alone, as a list, none: each another record
    assert Record.from_dict(json.loads(json.dumps(record.as_dict()))) == record
    example = record.to_example()
    assert isinstance(example, Example) and example.label == ["news", "sport"]
    assert tagged("nothing applies", []).label == []
    for labels, message in ((["a", "a"], "names each label once"), (["a", ""], "non-empty strings"),
                            (["a", 3], "non-empty strings"), ([["a"]], "non-empty strings")):
        with pytest.raises(RecordError, match=message):
            tagged("x", labels)


def test_files_give_label_lists_and_name_what_is_wrong():
    data = (b'{"text": "goal in the final", "label": ["sport", "news"]}\n'
            b'{"text": "a quiet day", "labels": []}\n'
            b'{"text": "rates rise", "category": ["finance", 7]}\n')
    records = import_text(data, "tags.jsonl")
    assert [(r.kind, r.text, r.label) for r in records] == [
        ("classification", "goal in the final", ["news", "sport"]),
        ("classification", "a quiet day", []), ("classification", "rates rise", ["7", "finance"])]
    for line, message in (('{"text": "x", "label": ["a", "a"]}', "each once"),
                          ('{"text": "x", "label": ["a", ["b"]]}', "each once"),
                          ('{"text": "x", "label": ["a", ""]}', "must be a non-empty string"),
                          ('{"text": "x", "label": [true]}', "must be a non-empty string")):
        with pytest.raises(DataError, match=f"tags.jsonl:1: .*{message}"):
            import_text((line + "\n").encode(), "tags.jsonl")


def test_cleaning_dedup_formats_splits_and_stats():
    records = [tagged(f"text number {i}", labels) for i, labels in
               enumerate([["a", "b"], ["a"], [], ["b", "c"], ["a", "b"], ["c"]] * 4)]
    records.append(tagged("text number 0", ["b", "a"]))          # the first one again
    records.append(tagged("Cafe\u0301 text", ["Cafe\u0301", "b"]))
    report = clean_records(records, CleaningConfig(dedup=DedupConfig(exact=True, near=False)))
    kept = report.records
    assert len(kept) == len(records) - 1 and [r.label for r in kept[:2]] == [["a", "b"], ["a"]]
    assert kept[-1].label == ["Café", "b"] and kept[-1].text == "Café text"   # names normalized
    for fmt in ("json", "jsonl", "csv"):
        assert loads_dataset(dumps_dataset(kept, fmt), fmt) == kept
    stats = dataset_stats(kept)
    assert stats["by_label"] == {"Café": 1, "a": 12, "b": 13, "c": 8}   # each name of each record
    parts = split_records(kept, {"train": 0.75, "validation": 0.25}, seed=3)
    assert sorted(map(repr, parts["train"] + parts["validation"])) == sorted(map(repr, kept))
    for labels in (["a", "b"], ["a"], [], ["b", "c"], ["c"]):        # each label set split alike
        assert sum(r.label == labels for r in parts["validation"]) in (1, 2), (labels, parts)


def test_csv_holds_them_as_json_arrays_in_the_label_cell():
    """A CSV file's label cell holds a multi-label record's names as a JSON array ([] where none
    applies; the columns as before); read back by the dataset reader and by `data import`'s
    (importers/text.py), the same records. A single name that would read as an array is
    refused by name when written; one that only opens with a bracket stays a name. An array
    that is not a list of names is an error naming the line."""
    records = [tagged("goal in the final", ["sport", "news"]), tagged("a calm day", []),
               Record("classification", "dataset", text="rates rise", label="finance"),
               Record("classification", "dataset", text="a draft", label="[draft"),
               Record("causal_lm", "dataset", text="plain text")]
    text = dumps_dataset(records, "csv")
    header, *rows = text.splitlines()
    assert header.split(",") == ["text", "label", "messages", "kind", "source", "priority",
                                 "created", "origin", "id"]
    assert rows[0].startswith('goal in the final,"[""news"", ""sport""]",') and \
        rows[1].startswith("a calm day,[],")
    assert loads_dataset(text, "csv") == records
    imported = import_text(dumps_dataset(records[:4], "csv").encode(), "tags.csv")
    assert [(r.kind, r.text, r.label) for r in imported] == \
        [(r.kind, r.text, r.label) for r in records[:4]]
    hand = 'text,labels\n"goal, at last","[""sport"", ""news""]"\nnothing here,[]\n'
    assert [(r.kind, r.text, r.label) for r in import_text(hand.encode(), "hand.csv")] == [
        ("classification", "goal, at last", ["news", "sport"]), ("classification", "nothing here", [])]
    with pytest.raises(DataError, match=r"record 0 .*its label '\[\"a\"\]' reads as a JSON array"):
        dumps_dataset([Record("classification", "dataset", text="x", label='["a"]')], "csv")
    for row, message in (('x,"[""b"", 3]"', "a multi-label record's label is a list of non-empty strings"),
                         ('x,"[""b"", ""b""]"', "a multi-label record's label names each label once")):
        with pytest.raises(DataError, match=f"tags.csv:2: {message}"):
            loads_dataset("text,label\n" + row + "\n", "csv", "tags.csv")
    with pytest.raises(DataError, match="hand.csv:2: \"labels\" as a list holds the names"):
        import_text(b'text,labels\nx,"[""a"", [""b""]]"\n', "hand.csv")


def test_the_queue_keeps_and_counts_them(tmp_path):
    async def work():
        queue = TrainingQueue(str(tmp_path / "queue.sqlite"))
        await queue.put([tagged("goal", ["sport", "news"]), tagged("rates", ["finance"]),
                         tagged("calm", []),
                         Record("classification", "correction", text="match", label="sport")])
        stats = await queue.stats()
        records = [r async for r in queue.records()]
        alone = [r async for r in queue.records(label="sport")]
        queue.close()
        return stats, records, alone

    stats, records, alone = run(work())
    assert stats["by_label"] == {"finance": 1, "news": 1, "sport": 2} and stats["total"] == 4
    assert [r.label for r in records] == [["news", "sport"], ["finance"], [], "sport"]
    assert [r.text for r in alone] == ["match"]          # a name: the records of that one label


def test_classifiers_learn_them_by_kind(tmp_path):
    """A multi-label classifier learns a record of one label as that label alone; a
    single-label one refuses a list by name; unknown names are named."""
    import peft_oracle as po
    from py_engine.app.models import load_model_dir
    from py_engine.labels import MULTI_LABEL

    bert = po.tiny_bert_dir(tmp_path / "bert")
    multi = run(load_model_dir(bert, "tiny", labels=["a", "b"], backend="numpy",
                                       problem_type=MULTI_LABEL))
    single = run(load_model_dir(bert, "tiny", labels=["a", "b"], backend="numpy"))
    assert multi.key != single.key and multi.summary()["problem_type"] == MULTI_LABEL
    both, one, none, odd = (tagged("x y", ["a", "b"]), Record("classification", "text", text="x",
                            label="a"), tagged("z", []), tagged("w", ["a", "q", "r"]))
    assert [multi.unusable(r) for r in (both, one, none)] == [None, None, None]
    assert [e.label for e in multi.examples([both, one, none])] == [["a", "b"], ["a"], []]
    assert "labels 'q', 'r' are not among the classifier's ['a', 'b']" in multi.unusable(odd)
    assert "this classifier learns one label per text" in single.unusable(both)
    assert single.unusable(one) is None
    (answer,) = run(multi.predict_many(["x y"]))
    assert set(answer) == {"labels", "probs"}
    assert answer["labels"] == [n for n in ("a", "b") if answer["probs"][n] > 0.5]
    (answer,) = run(single.predict_many(["x y"]))
    assert set(answer) == {"label", "probs"} and abs(sum(answer["probs"].values()) - 1) < 1e-9
