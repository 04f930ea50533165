"""The data layer's record: validation, content hashes that ignore the source, JSON round
trips, and the examples the trainers' encoders take."""

import pytest

from py_engine.data.chat import ChatExample
from py_engine.data.classification import Example
from py_engine.data.record import Record, RecordError


def test_records_round_trip_and_hash_what_is_learned():
    chat = Record("causal_lm", "chat", messages=[{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}],
                  origin={"conversation": "c1"})
    imported = Record("causal_lm", "dataset", messages=chat.messages, priority=5)
    assert chat.content_hash == imported.content_hash          # same content, other source
    assert chat.priority == 200 and imported.priority == 5
    assert Record.from_dict(chat.as_dict()) == chat
    label = Record("classification", "correction", text="cheap flights", label="travel")
    assert label.content_hash != Record("classification", "correction", text="cheap flights",
                                        label="shopping").content_hash
    assert label.priority > chat.priority > Record("causal_lm", "website", text="x").priority
    example = label.to_example()
    assert isinstance(example, Example) and (example.text, example.label) == ("cheap flights", "travel")
    assert chat.to_example() == ChatExample(messages=chat.messages)


@pytest.mark.parametrize("fields, message", [
    (dict(kind="regression", source="chat", text="x"), "kind must be"),
    (dict(kind="causal_lm", source="email", text="x"), "source must be"),
    (dict(kind="classification", source="text", text=""), "non-empty text"),
    (dict(kind="causal_lm", source="text"), "either messages or a text"),
    (dict(kind="causal_lm", source="text", text="x", messages=[{"role": "user", "content": "y"}]),
     "either messages or a text"),
    (dict(kind="causal_lm", source="chat", messages=[{"role": "robot", "content": "y"}]), "roles are"),
    (dict(kind="causal_lm", source="chat", messages=[]), "non-empty list"),
    (dict(kind="causal_lm", source="text", text="x", label="a"), "no label"),
    (dict(kind="causal_lm", source="text", text="x", priority=1.5), "priority must be an int"),
    (dict(kind="causal_lm", source="text", text="x", origin="file.txt"), "origin must be a dict"),
])
def test_bad_records_are_refused(fields, message):
    with pytest.raises(RecordError, match=message):
        Record(**fields)
    with pytest.raises(RecordError, match="unknown record fields"):
        Record.from_dict({"kind": "causal_lm", "source": "text", "text": "x", "colour": "red"})


def test_replace_keeps_the_metadata():
    r = Record("classification", "correction", text="a", label="x", priority=7, created=5.0,
               origin={"file": "f"}, id=3)
    changed = r.replace(text="b")
    assert (changed.text, changed.label, changed.priority, changed.created, changed.origin,
            changed.id, changed.source) == ("b", "x", 7, 5.0, {"file": "f"}, 3, "correction")
    assert r.text == "a" and changed.content_hash != r.content_hash
    with pytest.raises(RecordError):
        r.replace(label="")
