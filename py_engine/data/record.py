"""One training example as the data layer keeps it, whatever produced it: a correction, a chat,
an imported web page, image or text, a dataset file. The queue stores records, importers and
chat logging make them, cleaning filters them, dataset formats write and read them, and the
trainer's encoders turn them into token ids (to_example()).

    Record(kind="classification", source="correction", text="cheap flights to Rome", label="travel")
    Record(kind="causal_lm", source="chat", messages=[{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "hello"}])
    Record(kind="causal_lm", source="website", text="...", origin={"url": "https://..."})

kind: the model family it fits: "classification" (text + label) or "causal_lm" (a conversation
  in `messages`, or plain `text` for continued pretraining; exactly one of the two).
label: a classification record's label name, or a multi-label text's list of the names that
  apply (distinct, kept sorted: the same set is the same record; empty where none applies).
source: what produced it (SOURCES); priority: an int, higher first (the source's default
  when not given: corrections above chats above imports); created: Unix seconds; origin: where
  it came from, JSON-ready (file and line, URL, byte offsets, conversation id, ...); id: the
  queue's, once stored. content_hash: sha256 of what is learned (kind, text, label,
  messages): two records with the same content are duplicates whatever their source.

Pure Python: this runs in the browser.
"""

import hashlib
import json
import time

from ..formats.json_file import lone_surrogate

SOURCES = ("correction", "chat", "website", "image", "text", "dataset")
KINDS = ("classification", "causal_lm")
ROLES = ("system", "user", "assistant")
DEFAULT_PRIORITY = {"correction": 300, "chat": 200, "website": 100, "image": 100, "text": 100,
                    "dataset": 100}


class RecordError(ValueError):
    """A record that cannot be kept; the message says which field and why."""


class Record:
    __slots__ = ("kind", "source", "text", "label", "messages", "priority", "created", "origin",
                 "id")

    def __init__(self, kind, source, text=None, label=None, messages=None, priority=None,
                 created=None, origin=None, id=None):
        if kind not in KINDS:
            raise RecordError(f"kind must be one of {KINDS}, got {kind!r}")
        if source not in SOURCES:
            raise RecordError(f"source must be one of {SOURCES}, got {source!r}")
        if kind == "classification":
            if not isinstance(text, str) or not text:
                raise RecordError("a classification record needs a non-empty text")
            if isinstance(label, (list, tuple)):
                label = multi_label(label)
            elif label is not None and (not isinstance(label, str) or not label):
                raise RecordError(f"label must be a non-empty string (or a multi-label text's "
                                  f"list of them), got {label!r:.80}")
            if messages is not None:
                raise RecordError("a classification record has a text, not messages")
        else:
            if (text is None) == (messages is None):
                raise RecordError("a causal_lm record has either messages or a text")
            if text is not None and (not isinstance(text, str) or not text):
                raise RecordError("a causal_lm text must be a non-empty string")
            if messages is not None:
                messages = check_messages(messages)
            if label is not None:
                raise RecordError("a causal_lm record has no label")
        if priority is None:
            priority = DEFAULT_PRIORITY[source]
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise RecordError(f"priority must be an int, got {priority!r}")
        created = time.time() if created is None else created
        if isinstance(created, bool) or not isinstance(created, (int, float)) or created != created:
            raise RecordError(f"created must be Unix seconds, got {created!r}")
        origin = {} if origin is None else origin
        if not isinstance(origin, dict):
            raise RecordError(f"origin must be a dict, got {type(origin).__name__}")
        wrong = lone_surrogate([text, label, messages])
        if wrong:
            raise RecordError(wrong)
        self.kind, self.source, self.text, self.label = kind, source, text, label
        self.messages, self.priority, self.created = messages, priority, float(created)
        self.origin, self.id = origin, id

    @property
    def content_hash(self):
        """sha256 (hex) of what is learned: kind, text, label, messages."""
        content = json.dumps([self.kind, self.text, self.label, self.messages], ensure_ascii=False,
                             separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(content.encode("utf-8")).hexdigest()

    def replace(self, **changes):
        """A new record with `changes` (text, label, messages...) and everything else kept:
        source, priority, created, origin, id."""
        return Record(**{**{name: getattr(self, name) for name in self.__slots__}, **changes})

    def as_dict(self):
        """JSON-ready fields (None ones left out)."""
        return {name: getattr(self, name) for name in self.__slots__
                if getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise RecordError(f"a record is a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__slots__))
        if unknown:
            raise RecordError(f"unknown record fields {unknown}")
        missing = [k for k in ("kind", "source") if k not in data]
        if missing:
            raise RecordError(f"a record needs {', '.join(missing)}")
        return cls(**data)

    def to_example(self):
        """What the trainers' encoders take: data.classification.Example for classification,
        data.chat.ChatExample for causal LM."""
        if self.kind == "classification":
            from .classification import Example

            return Example(self.text, self.label)
        from .chat import ChatExample

        return ChatExample(messages=self.messages, text=self.text, source=self.origin.get("where"))

    def __eq__(self, other):
        return isinstance(other, Record) and self.as_dict() == other.as_dict()

    def __repr__(self):
        what = f"{len(self.messages)} messages" if self.messages is not None else repr(self.text[:40])
        label = f", label={self.label!r}" if self.label is not None else ""
        return f"Record({self.kind}, {self.source}, {what}{label})"


def multi_label(names):
    """A multi-label record's label: its distinct non-empty names, sorted (RecordError for
    anything else)."""
    if not all(isinstance(name, str) and name for name in names):
        raise RecordError(f"a multi-label record's label is a list of non-empty strings, got "
                          f"{list(names)!r:.80}")
    if len(set(names)) != len(names):
        raise RecordError(f"a multi-label record's label names each label once, got "
                          f"{list(names)!r:.80}")
    return sorted(names)


def label_names(label):
    """The label names a record's label gives: none for None, one for a name, a multi-label
    record's list."""
    return [] if label is None else [label] if isinstance(label, str) else list(label)


def label_key(label):
    """A record's label as a dict key or set member (a multi-label list as a tuple)."""
    return tuple(label) if isinstance(label, list) else label


def check_messages(messages):
    """A conversation: a non-empty list of {"role": system|user|assistant, "content": str}."""
    if not isinstance(messages, list) or not messages:
        raise RecordError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise RecordError(f"message {i} must be {{\"role\", \"content\"}}, got {m!r:.80}")
        if m["role"] not in ROLES:
            raise RecordError(f"message {i} has role {m['role']!r}; roles are {ROLES}")
        if not isinstance(m["content"], str):
            raise RecordError(f"message {i}'s content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out
