"""Datasets out and back in: the training queue (or any list of records) written in the formats
other tools train from, split, described by a stats file, and read back.

    result = export_dataset(records, "out", ExportConfig(format="messages",
                            split={"train": 0.9, "validation": 0.1}, dedup=DedupConfig()))
    result.paths          # {"train": out/train.jsonl, "validation": out/validation.jsonl}
    records = import_dataset("out/train.jsonl")          # format detected from the file
    text = dumps_dataset(records, "sharegpt")            # one file's text, in memory

Formats (FORMATS), what they hold, and what of a record they carry:
  json, jsonl  the records themselves (Record.as_dict(): kind, source, text or messages, label,
               priority, created, origin, id), as a JSON array / one object per line: every
               kind, everything carried. A classification jsonl file is also what `py-engine
               train --data` reads, a conversation jsonl file what read_chat_jsonl reads.
  csv          the same fields as columns (text, label, messages, kind, source, priority,
               created, origin, id; messages and origin as JSON), stdlib csv, UTF-8; a
               multi-label record's list of names is its label cell as a JSON array ([]
               where none applies), which no single label name may look like
  messages     {"messages": [{"role", "content"}, ...]} per line, as TRL's SFTTrainer and
               PEFT's examples train from; a plain text record is {"text": ...}
  chatml       {"text": "<|im_start|>user\\n...<|im_end|>\\n..."} per line (the rendering of
               chat.CHATML_TEMPLATE, as transformers' apply_chat_template writes it); a plain
               text record is its text
  alpaca       a JSON array of {"instruction", "input", "output"}, with "system" and "history"
               ([[user, assistant], ...]) for system prompts and earlier turns, as LLaMA-Factory
               reads them
  instruction  {"prompt", "response"} per line (+ "system"): one question and its answer
  sharegpt     a JSON array of {"conversations": [{"from": "system"|"human"|"gpt", "value"}]}
The chat formats (messages, chatml, alpaca, instruction, sharegpt) hold causal-LM records and
carry their content only: read back, a record's source is the one given to the reader
("dataset" by default) and its origin the file and line. Classification records go in json,
jsonl or csv; alpaca and instruction need conversations that alternate user and assistant
turns and end on an answer (instruction: exactly one of each), sharegpt conversations, and
writing a record a format cannot hold is an error naming the record, never a silent loss.

Reading: JSON arrays and JSONL are both accepted for every JSON format, detected per record
(a record object, a ShareGPT object, or any record chat.py reads: messages, Alpaca,
prompt/response, text), so a file read_chat_jsonl reads gives the same conversations here; a
file whose first record is {"text": "<|im_start|>..."} is read as ChatML (give format="messages"
to read such texts as plain text). Errors name the file and line; nothing is returned from a
file with an error in it.

Pure Python: this runs in the browser (export_dataset writes through formats.output_dir).
"""

import bisect
import csv
import io
import json
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from ..formats.json_file import JsonFileError, json_kind, read_utf8
from ..formats.output_dir import write_files
from ..tokenizers.chat_template import ChatTemplate
from .chat import CHATML_TEMPLATE, CHATML_TOKENS, ROLES, ChatExample, chat_example_from_record
from .classification import DataError, Example, parse_record
from .cleaning import CleaningConfig, QualityConfig, clean_records, content_text
from .dedup import DedupConfig
from .record import Record, RecordError, label_key, label_names

FORMATS = ("json", "jsonl", "csv", "messages", "chatml", "alpaca", "instruction", "sharegpt")
EXTENSIONS = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "messages": ".jsonl",
              "chatml": ".jsonl", "alpaca": ".json", "instruction": ".jsonl", "sharegpt": ".json"}
_JSON_ARRAY = ("json", "alpaca", "sharegpt")      # the others are written one record a line
CSV_COLUMNS = ("text", "label", "messages", "kind", "source", "priority", "created", "origin",
               "id")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant",
                  "model": "assistant", "system": "system"}
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


# ---- records in and out of each format -------------------------------------------------------

def _check_format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; the formats are {', '.join(FORMATS)}")


def _refuse(k, record, fmt, why):
    raise DataError(f"record {k} ({record!r}) cannot be written as {fmt}: {why}")


def _pairs(k, record, fmt):
    """(system or None, [(user, answer), ...]) of a conversation that alternates user and
    assistant turns after an optional first system message and ends on an answer."""
    messages = record.messages
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    roles = [m["role"] for m in messages]
    if not messages or roles != ["user", "assistant"] * (len(roles) // 2):
        _refuse(k, record, fmt, f"{fmt} holds only conversations that alternate user and "
                "assistant turns and end on an answer; use messages or sharegpt")
    return system, [(messages[i]["content"], messages[i + 1]["content"])
                    for i in range(0, len(messages), 2)]


def _to_object(k, record, fmt, template):
    """The JSON object of one record in a chat format."""
    if record.kind != "causal_lm":
        _refuse(k, record, fmt, f"{fmt} holds only causal-LM records (texts and "
                f"conversations), and this is a {record.kind} record; use json, jsonl or csv")
    if record.messages is None:
        if fmt == "messages":
            return {"text": record.text}
        if fmt == "chatml":
            if any(t in record.text for t in CHATML_TOKENS):
                _refuse(k, record, fmt, "the text holds ChatML's own markers")
            return {"text": record.text}
        _refuse(k, record, fmt, f"{fmt} holds only conversations, and this is a plain text")
    if not any(m["role"] == "assistant" for m in record.messages):
        _refuse(k, record, fmt, "the conversation has no assistant message, so nothing in it "
                "would be trained")
    if fmt == "messages":
        return {"messages": record.messages}
    if fmt == "chatml":
        if any(t in m["content"] for m in record.messages for t in CHATML_TOKENS):
            _refuse(k, record, fmt, "a message holds ChatML's own markers")
        return {"text": template.render(record.messages)}
    if fmt == "sharegpt":
        return {"conversations": [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]}
                                  for m in record.messages]}
    system, pairs = _pairs(k, record, fmt)
    out = {} if system is None else {"system": system}
    if fmt == "instruction":
        if len(pairs) != 1:
            _refuse(k, record, fmt, f"it holds one question and its answer, and this "
                    f"conversation has {len(pairs)}; use messages, sharegpt or alpaca")
        return dict(out, prompt=pairs[0][0], response=pairs[0][1])
    out.update(instruction=pairs[-1][0], input="", output=pairs[-1][1])
    if len(pairs) > 1:
        out["history"] = [list(p) for p in pairs[:-1]]
    return out


def dumps_dataset(records, fmt, system_prompt=None, include_system=True):
    """The text of one file holding `records` in format `fmt` (see the module docstring);
    `system_prompt` is put first in conversations that have no system message; without
    include_system, conversations lose their system messages."""
    _check_format(fmt)
    records = [with_system_prompt(r, system_prompt) if include_system else without_system(r)
               for r in as_records(records)]
    if fmt == "csv":
        for k, r in enumerate(records):
            if isinstance(r.label, str) and label_list(r.label) is not None:
                _refuse(k, r, fmt, f"its label {r.label!r:.60} reads as a JSON array, which a CSV "
                        "label cell holds for a multi-label record's names; use json or jsonl")
        return _dumps_csv(records)
    template = ChatTemplate(CHATML_TEMPLATE) if fmt == "chatml" else None
    objects = [r.as_dict() if fmt in ("json", "jsonl") else _to_object(k, r, fmt, template)
               for k, r in enumerate(records)]
    lines = [json.dumps(o, ensure_ascii=False) for o in objects]
    if fmt in _JSON_ARRAY:        # one element a line: readable, and errors name the line
        return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    return "".join(line + "\n" for line in lines)


def _dumps_csv(records):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        label = json.dumps(r.label, ensure_ascii=False) if isinstance(r.label, list) else r.label
        writer.writerow([
            r.text or "", label or "",
            "" if r.messages is None else json.dumps(r.messages, ensure_ascii=False),
            r.kind, r.source, r.priority, repr(r.created),
            json.dumps(r.origin, ensure_ascii=False),
            "" if r.id is None else json.dumps(r.id)])
    return out.getvalue()


def label_list(cell):
    """A CSV label cell's multi-label list of names (a JSON array: what _dumps_csv writes for
    one), or None for a label name."""
    if not cell.startswith("["):
        return None
    try:
        value = json.loads(cell)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def with_system_prompt(record, system_prompt):
    """The record with `system_prompt` as its first message, if it is a conversation without a
    system message (the same record otherwise)."""
    if not system_prompt or record.messages is None or record.messages[0]["role"] == "system":
        return record
    return record.replace(messages=[{"role": "system", "content": system_prompt}] + record.messages)


def without_system(record):
    """The record without the system messages of its conversation (the same record otherwise)."""
    if record.messages is None or not any(m["role"] == "system" for m in record.messages):
        return record
    return record.replace(messages=[m for m in record.messages if m["role"] != "system"])


def as_records(items, source="dataset"):
    """Records from Records, record dicts, classification Examples or chat ChatExamples."""
    out = []
    for k, item in enumerate(items):
        if isinstance(item, Record):
            out.append(item)
        elif isinstance(item, dict):
            try:
                out.append(Record.from_dict(item))
            except RecordError as e:
                raise DataError(f"item {k}: {e}") from None
        elif isinstance(item, Example):
            out.append(Record("classification", source, text=item.text, label=item.label))
        elif isinstance(item, ChatExample):
            out.append(Record("causal_lm", source, text=item.text, messages=item.messages))
        else:
            raise DataError(f"item {k}: cannot make a record of a {type(item).__name__}")
    return out


# ---- reading ---------------------------------------------------------------------------------

_START, _END = CHATML_TOKENS
_SEPARATORS = re.compile(r"(?:\s|<\|endoftext\|>|</s>)*")


def read_chatml(text, where, origin, source="text"):
    """Records of a ChatML text: conversations of <|im_start|>role\ncontent<|im_end|> turns,
    separated by a blank line, <|endoftext|> or </s>, or a new system turn; each needs an
    assistant turn. Errors and origins name `where` and the line."""
    line_at = line_index(text)
    conversations, current, pos = [], [], 0
    while True:
        gap_end = _SEPARATORS.match(text, pos).end()
        gap = text[pos:gap_end]
        if current and ("\n\n" in gap or "<|endoftext|>" in gap or "</s>" in gap
                        or gap_end == len(text)):
            conversations.append(current)
            current = []
        pos = gap_end
        if pos == len(text):
            break
        line = line_at(pos)
        if not text.startswith(_START, pos):
            raise DataError(f"{where}:{line}: text outside <|im_start|> ... <|im_end|> turns: "
                            f"{text[pos:pos + 40]!r}")
        role_end = text.find("\n", pos)
        end = text.find(_END, pos)
        if end < 0:
            raise DataError(f"{where}:{line}: a turn opened by <|im_start|> is never closed by "
                            "<|im_end|> (truncated?)")
        if role_end < 0 or role_end > end:
            raise DataError(f"{where}:{line}: <|im_start|> must be followed by a role and a "
                            "line break")
        role = text[pos + len(_START):role_end].strip()
        content = text[role_end + 1:end]
        if _START in content:
            raise DataError(f"{where}:{line}: a turn opened by <|im_start|> is not closed by "
                            "<|im_end|> before the next one opens")
        if role not in ROLES:
            raise DataError(f"{where}:{line}: unknown ChatML role {role!r:.40}; roles are "
                            f"{', '.join(ROLES)}")
        if role == "system" and current and current[-1][0]["role"] != "system":
            conversations.append(current)
            current = []
        current.append(({"role": role, "content": content}, line, line_at(end)))
        pos = end + len(_END)
    records = []
    for turns in conversations:
        first, last = turns[0][1], turns[-1][2]
        at = f"{where}:{first}"
        if not any(m["role"] == "assistant" for m, _, _ in turns):
            raise DataError(f"{at}: the conversation has no assistant turn, so nothing in it "
                            "would be trained")
        records.append(Record("causal_lm", source, messages=[m for m, _, _ in turns],
                              origin={**origin, "line": first, "lines": [first, last],
                                      "where": at}))
    return records


def parse_chatml(text, where):
    """The messages of one ChatML conversation (a record's text)."""
    records = read_chatml(text, where, {})
    if len(records) != 1:
        raise DataError(f"{where}: {len(records)} ChatML conversations where one was expected")
    return records[0].messages


def line_index(text):
    """A function from a character offset to its 1-based line number."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return lambda offset: bisect.bisect_right(starts, offset)


def sharegpt_messages(obj, where):
    """The messages of a ShareGPT object: {"conversations": [{"from", "value"}, ...]} (also
    "role"/"content" in a turn, any case of the speaker) with an optional top-level "system"."""
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: \"conversations\" must be a non-empty list of "
                        f"{{\"from\", \"value\"}} objects, got {turns!r:.80}")
    messages = []
    if isinstance(obj.get("system"), str) and obj["system"]:
        messages.append({"role": "system", "content": obj["system"]})
    for k, turn in enumerate(turns):
        at = f"{where}: conversations[{k}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at} must be an object with \"from\" and \"value\", got {turn!r:.80}")
        speaker = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(speaker.lower() if isinstance(speaker, str) else None)
        if role is None:
            raise DataError(f"{at}: \"from\" must be one of {', '.join(SHAREGPT_ROLES)}, got "
                            f"{speaker!r:.40}")
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            raise DataError(f"{at}: \"value\" must be a string, got {value!r:.80}")
        messages.append({"role": role, "content": value})
    return messages


def _format_of(obj):
    """The format one decoded record is in: json (a record), sharegpt, or chat (chat.py's)."""
    if isinstance(obj, dict) and "kind" in obj and "source" in obj:
        return "json"
    if isinstance(obj, dict) and "conversations" in obj:
        return "sharegpt"
    return "chat"


def _is_chatml(obj):
    """Whether a decoded record is {"text": "<|im_start|>..."}."""
    return isinstance(obj, dict) and set(obj) == {"text"} and isinstance(obj["text"], str) and \
        obj["text"].lstrip().startswith(CHATML_TOKENS[0])


_CHAT_KEYS = {"messages": ("messages", "text"), "alpaca": ("instruction",),
              "instruction": ("prompt",), "chatml": ("text",)}


def _record_from(obj, fmt, where, source, origin):
    """One Record from a decoded JSON record; fmt is the file's format or None (detect)."""
    found = _format_of(obj)
    expected = {"json": "json", "jsonl": "json", "sharegpt": "sharegpt"}.get(fmt, "chat")
    if fmt is not None and found != expected or fmt in _CHAT_KEYS and not (
            isinstance(obj, dict) and any(key in obj for key in _CHAT_KEYS[fmt])):
        keys = sorted(obj) if isinstance(obj, dict) else json_kind(obj)
        raise DataError(f"{where}: expected a record of the {fmt} format, got {keys}")
    try:
        if found == "json":
            return Record.from_dict(obj)
        if found == "sharegpt":
            return Record("causal_lm", source, messages=sharegpt_messages(obj, where),
                          origin=origin)
        if fmt == "chatml" and _is_chatml(obj):
            return Record("causal_lm", source, messages=parse_chatml(obj["text"], where),
                          origin=origin)
        example = chat_example_from_record(obj, where)
        return Record("causal_lm", source, text=example.text, messages=example.messages,
                      origin=origin)
    except RecordError as e:
        raise DataError(f"{where}: {e}") from None


def _json_values(text, where):
    """(line, value) of each element of a JSON array in text."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    pos = _skip(text, 0)
    if not text.startswith("[", pos):
        raise DataError(f"{where}: expected a JSON array")
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return
    lines = _LineCounter(text)
    while True:
        line = lines.at(pos)
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") \
                from None
        except (RecursionError, ValueError) as e:
            raise DataError(f"{where}:{line}: not usable JSON ({e})") from None
        yield line, value
        pos = _skip(text, pos)
        if text.startswith("]", pos):
            if _skip(text, pos + 1) != len(text):
                raise DataError(f"{where}:{lines.at(pos)}: text after the end of the JSON "
                                "array")
            return
        if not text.startswith(",", pos):
            raise DataError(f"{where}:{lines.at(pos)}: expected ',' or ']' between the "
                            "array's elements")
        pos = _skip(text, pos + 1)


class _LineCounter:
    """The line numbers of increasing offsets in a text, each newline counted once."""

    def __init__(self, text):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos):
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _skip(text, pos):
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def _jsonl_values(text, where):
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield number, parse_record(line, f"{where}:{number}")


def loads_dataset(text, fmt=None, where="<data>", source="dataset"):
    """Records from the text of one dataset file (`where` names it in errors and origins);
    fmt None detects the format (see the module docstring). Records of the chat formats get
    `source` and origin {"file": where, "line": n}."""
    if fmt is not None:
        _check_format(fmt)
    text = text.lstrip("\ufeff")
    if fmt == "csv":
        return _loads_csv(text, where, source)
    values = _json_values(text, where) if text.lstrip().startswith("[") else \
        _jsonl_values(text, where)
    records = []
    for line, value in values:
        if fmt is None and not records and _is_chatml(value):
            fmt = "chatml"
        records.append(_record_from(value, fmt, f"{where}:{line}", source,
                                    {"file": where, "line": line}))
    if not records:
        raise DataError(f"{where}: the dataset is empty")
    return records


def _loads_csv(text, where, source):
    reader = csv.reader(io.StringIO(text, newline=""))
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(text) + 1))   # a long text in one cell is fine
    try:
        rows = _csv_rows(reader, where)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{where}: the dataset is empty")
        line, columns = header
        unknown = sorted(set(columns) - set(CSV_COLUMNS))
        if unknown or len(set(columns)) != len(columns) or \
                not ({"text", "messages"} & set(columns)):
            raise DataError(f"{where}:{line}: the header must name columns among "
                            f"{', '.join(CSV_COLUMNS)}, with text or messages, each once; got "
                            f"{columns}")
        records = [_csv_record(dict(zip(columns, row)), len(row) == len(columns),
                               f"{where}:{n}", source, {"file": where, "line": n})
                   for n, row in rows]
    finally:
        csv.field_size_limit(old_limit)
    if not records:
        raise DataError(f"{where}: the dataset is empty")
    return records


def _csv_rows(reader, where):
    start = 1
    try:
        for row in reader:
            if row:
                yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{where}:{start}: not valid CSV ({e})") from None


def _csv_record(cells, complete, where, source, origin):
    if not complete:
        raise DataError(f"{where}: the row does not have one cell per header column")

    def cell_json(name):
        value = cells.get(name) or None
        if value is None:
            return None
        try:
            return json.loads(value, parse_constant=_no_constant)
        except ValueError:
            raise DataError(f"{where}: the {name} cell is not JSON: {value!r:.60}") from None

    carried = cell_json("origin")
    label = cells.get("label") or None
    names = None if label is None else label_list(label)
    fields = {"text": cells.get("text") or None, "label": label if names is None else names,
              "messages": cell_json("messages"), "id": cell_json("id"),
              "origin": origin if carried is None else carried}
    kind = cells.get("kind") or ("classification" if fields["label"] is not None else "causal_lm")
    try:
        priority = int(cells["priority"]) if cells.get("priority") else None
        created = float(cells["created"]) if cells.get("created") else None
    except ValueError:
        raise DataError(f"{where}: priority must be an integer and created a number, got "
                        f"{cells.get('priority')!r} and {cells.get('created')!r}") from None
    try:
        return Record(kind, cells.get("source") or source, priority=priority, created=created,
                      **fields)
    except RecordError as e:
        raise DataError(f"{where}: {e}") from None


def import_dataset(path, fmt=None, source="dataset"):
    """Records from a dataset file (loads_dataset); a .csv file is read as CSV."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no data file at {path}" if not os.path.exists(path) else
                        f"{path} is not a file")
    if fmt is None and path.lower().endswith(".csv"):
        fmt = "csv"
    try:
        text = read_utf8(path)
    except JsonFileError as e:
        raise DataError(str(e)) from None
    return loads_dataset(text, fmt, path, source)


# ---- splits and stats ------------------------------------------------------------------------

def _split_fractions(split):
    if isinstance(split, dict):
        fractions = dict(split)
    elif isinstance(split, (list, tuple)) and len(split) in (2, 3):
        names = ("train", "test") if len(split) == 2 else ("train", "validation", "test")
        fractions = dict(zip(names, split))
    else:
        raise ValueError(f"split must be a dict of name -> fraction or 2 or 3 fractions, "
                         f"got {split!r}")
    if not fractions or any(not isinstance(f, (int, float)) or f < 0 for f in fractions.values()) \
            or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"split fractions must be non-negative and add up to 1, got {fractions}")
    return fractions


def _unit_key(record, k):
    """Records of one conversation or one page stay in one split (no leak from train to test)."""
    origin = record.origin or {}
    for key in ("conversation", "url"):
        if origin.get(key) is not None:
            return (key, json.dumps(origin[key], sort_keys=True))
    return ("record", k)


def split_records(records, split, seed=0, stratify=True):
    """{name: [records]} for fractions (a dict, or (train, test) or (train, validation, test)).
    Seeded: the same records, split and seed give the same split. Records sharing an origin
    conversation or URL go together; with stratify, classification records are split label by
    label (and causal-LM records on their own), so each split keeps the label proportions. In
    each stratum units are shuffled, then each goes to the split furthest below its share."""
    fractions = _split_fractions(split)
    units = {}
    for k, record in enumerate(records):
        units.setdefault(_unit_key(record, k), []).append(k)
    strata = {}
    for key, members in units.items():
        first = records[members[0]]
        stratum = (first.kind, label_key(first.label)) if stratify else None
        strata.setdefault(stratum, []).append(members)
    rng = random.Random(seed)
    assigned = {name: [] for name in fractions}
    for stratum in sorted(strata, key=lambda s: json.dumps(s)):
        members = strata[stratum]
        rng.shuffle(members)
        total = sum(len(m) for m in members)
        counts = dict.fromkeys(fractions, 0)
        for unit in members:
            name = max(fractions, key=lambda s: fractions[s] * total - counts[s])
            counts[name] += len(unit)
            assigned[name].extend(unit)
    return {name: [records[k] for k in sorted(ks)] for name, ks in assigned.items()}


def dataset_stats(records, count_tokens=None):
    """Counts by kind, source, label (a multi-label record under each of its names) and
    priority, and the length of each record's content
    (content_text) in tokens by count_tokens(str) -> int, or in characters by default: total,
    min, mean, percentiles and a histogram of power-of-two bins [lo, hi)."""
    count = count_tokens or len
    lengths = sorted(count(content_text(r)) for r in records)
    stats = {
        "records": len(records),
        "by_kind": _counts(r.kind for r in records),
        "by_source": _counts(r.source for r in records),
        "by_label": _counts(name for r in records for name in label_names(r.label)),
        "by_priority": {str(p): n for p, n in sorted(Counter(r.priority for r in records).items(),
                                                   reverse=True)},
        "length": {"unit": "tokens" if count_tokens else "characters"},
    }
    if lengths:
        def pct(q):
            return lengths[min(len(lengths) - 1, math.ceil(q * len(lengths)) - 1)]

        stats["length"].update(total=sum(lengths), min=lengths[0], max=lengths[-1],
                               mean=round(sum(lengths) / len(lengths), 2), p50=pct(0.5),
                               p90=pct(0.9), p99=pct(0.99), histogram=_histogram(lengths))
    return stats


def _counts(values):
    return dict(sorted(Counter(values).items()))


def _histogram(lengths):
    bins = Counter(0 if n == 0 else 1 << (n.bit_length() - 1) for n in lengths)
    top = max(bins)
    edges = [0] if 0 in bins else []
    lo = 1 if not any(bins.keys() - {0}) else min(b for b in bins if b)
    while lo <= top:
        edges.append(lo)
        lo *= 2
    return [{"from": lo, "to": 1 if lo == 0 else lo * 2, "count": bins.get(lo, 0)} for lo in edges]


# ---- export ----------------------------------------------------------------------------------

@dataclass
class ExportConfig:
    """format: one of FORMATS. system_prompt: first message of conversations without one.
    include_system: False drops the conversations' system messages (no system_prompt then).
    quality / dedup: filter before writing (cleaning.QualityConfig / dedup.DedupConfig; None:
    off). split: None (one file) or fractions (see split_records), seeded, stratified by label
    when stratify. stats: write stats.json (dataset_stats per split and overall, and what the
    filters removed). count_tokens: str -> int for the stats' lengths (characters if None)."""
    format: str = "jsonl"
    system_prompt: str = None
    quality: object = None
    dedup: object = None
    split: object = None
    seed: int = 0
    stratify: bool = True
    stats: bool = True
    count_tokens: object = None
    include_system: bool = True

    def __post_init__(self):
        _check_format(self.format)
        if self.split is not None:
            _split_fractions(self.split)
        if self.system_prompt and not self.include_system:
            raise ValueError("a system prompt cannot be added to conversations whose system "
                             "messages are left out (include_system false)")

    @classmethod
    def from_options(cls, format="jsonl", quality_filter=False, deduplicate=False,
                     include_system=True, system_prompt=None, split=None,
                     validation_split=None, seed=0, count_tokens=None):
        """The config of an export asked for by switches (`py-engine data export`'s options,
        the HTTP API's fields): quality_filter and deduplicate turn on the default filters;
        validation_split v (0 < v < 1) is split {"train": 1 - v, "validation": v}."""
        if validation_split is not None:
            if split is not None:
                raise ValueError("give a split or a validation_split, not both")
            if isinstance(validation_split, bool) or \
                    not isinstance(validation_split, (int, float)) or \
                    not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be a fraction in (0, 1), got "
                                 f"{validation_split!r}")
            split = {"train": 1 - validation_split, "validation": validation_split}
        return cls(format=format, system_prompt=system_prompt,
                   quality=QualityConfig() if quality_filter else None,
                   dedup=DedupConfig() if deduplicate else None, split=split, seed=seed,
                   count_tokens=count_tokens, include_system=include_system)


@dataclass
class ExportResult:
    paths: dict                   # split name ("data" without a split) -> file path
    counts: dict                  # split name -> records written
    stats: dict = None            # what stats.json holds (also when it is not written)
    cleaning: object = None       # the CleaningReport of the quality/dedup filters, if any
    files: object = field(default_factory=list)   # file names written (dataset_files: {name: bytes})


def export_dataset(records, out_dir, config=None, protected=()):
    """Write records (Records, or anything as_records takes) into the directory out_dir: one
    file "data<ext>" or one per split ("train.jsonl", ...), and stats.json. The directory is
    written as every py_engine output is (formats.output_dir): only if new, empty or written by
    py_engine, atomically, never over a `protected` path. Nothing is written if any record does
    not fit the format."""
    config = config or ExportConfig()
    result = dataset_files(records, config)
    write_files(out_dir, result.files, protected, kind="a dataset")
    result.paths = {name: os.path.join(os.fspath(out_dir), path)
                    for name, path in result.paths.items()}
    result.files = sorted(result.files)
    return result


def dataset_files(records, config=None):
    """export_dataset()'s files in memory: an ExportResult whose `files` is {file name: bytes}
    and whose `paths` name each split's file (the browser hands them to the user)."""
    config = config or ExportConfig()
    records = as_records(records)
    report = None
    if config.quality is not None or config.dedup is not None:
        report = clean_records(records, CleaningConfig(normalize=None, pii=None,
                                                       quality=config.quality,
                                                       dedup=config.dedup))
        records = report.records
    parts = split_records(records, config.split, config.seed, config.stratify) \
        if config.split is not None else {"data": records}
    ext = EXTENSIONS[config.format]
    files = {f"{name}{ext}": dumps_dataset(part, config.format, config.system_prompt,
                                           config.include_system).encode()
             for name, part in parts.items()}
    stats = {"format": config.format, "seed": config.seed, "split": config.split,
             "all": dataset_stats(records, config.count_tokens),
             "splits": {name: dataset_stats(part, config.count_tokens)
                        for name, part in parts.items()} if config.split is not None else None,
             "cleaning": None if report is None else
             {k: v for k, v in report.summary().items() if k != "records"}}
    if config.stats:
        files["stats.json"] = (json.dumps(stats, indent=1, ensure_ascii=False) + "\n").encode()
    return ExportResult({name: f"{name}{ext}" for name in parts},
                        {name: len(part) for name, part in parts.items()}, stats, report, files)
