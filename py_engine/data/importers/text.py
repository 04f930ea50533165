"""Text files into training records: chat datasets in their usual shapes, labelled tables, and
prose (markdown or plain text) for continued pretraining.

    records = import_text(data, name="chats.jsonl")          # format detected
    records = import_text(data, name="notes", kind="markdown", max_tokens=256,
                          count_tokens=lambda s: len(tokenizer.encode(s).ids))

Formats (TEXT_FORMATS) and what each becomes:
  json, jsonl  one record per object (a JSON document is a list of objects, one object, or an
               object holding one list of objects); each object says what it is:
                 {"messages": [{"role", "content"}, ...]}                 -> a conversation
                 ShareGPT {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
                 Alpaca {"instruction", "input" (optional), "output"}, or "response" for
                   "output" (and "context" for "input", as in Dolly)       -> user, assistant
                 {"prompt", "response" or "completion"}                   -> user, assistant
                 {"text", "label"} (or a TEXT_COLUMNS and a LABEL_COLUMNS key) -> classification
                   (a list of names as the label: a multi-label text's, the names that apply)
                 {"text"}                                                 -> continued pretraining
  chatml       <|im_start|>role\\ncontent<|im_end|> turns. A conversation ends at a blank line
               between turns, at <|endoftext|> or </s>, or where a system turn follows others.
  csv          a header row, then one record per row: prompt + response columns (Alpaca's
               instruction/input/output too, and an optional system column) -> conversations;
               a text column and a label column -> classification (a label cell holding a
               JSON array of names: a multi-label text's); a text column alone ->
               continued pretraining. The delimiter (, ; tab |) is the header's most frequent.
  markdown, text  split into chunks of at most max_tokens (count_tokens, by default 4
               characters a token) at paragraph boundaries; markdown keeps fenced code blocks
               whole and a heading with the text under it. A paragraph longer than a chunk is
               cut at lines, then sentences, then words.

Detection, when `kind` is not given (the first rule that holds):
  1. The text opens like JSON (`{"`, `{}`, `[{`, `["`, `[]`) or the name ends
     in .json/.jsonl/.ndjson: json when the whole text parses as one JSON value; jsonl when
     its first non-blank line does and more lines follow (or the name ends in .jsonl/.ndjson);
     otherwise json, so that a truncated document is reported where it breaks.
  2. A line starts with <|im_start|>: chatml.
  3. The name ends in .csv/.tsv, or the first line is a header: two or more short
     identifier-like cells, one of them a known column name (text, label, prompt, ...), and
     the next line has as many fields: csv.
  4. The name ends in .md/.markdown, or the text has a # heading or a ``` fence, or two of
     list items, [links](...), **emphasis** and > quotes: markdown.
  5. Otherwise plain text.

Bytes are decoded as UTF-8 (a UTF-8 or UTF-16 byte-order mark is honoured); binary data (a NUL
byte, a known binary signature) and bytes that are not UTF-8 are refused naming the byte offset
and line. Every error is a DataError naming the file and the line (or byte offset).

Origin of each record: "file", "format" (the detected one), "line" (where it starts), "lines"
([first, last]) for chunks and multi-line conversations, "item" for elements of a JSON
document, "where" ("file:line", what errors and encoders show).

Pure Python (json, csv, re): this runs in the browser.
"""

import bisect
import csv
import io
import json
import re

from ...formats.json_file import json_kind
from ..chat import ROLES, chat_example_from_record
from ..classification import DataError, parse_record
from ..chunks import approx_tokens, split_into_chunks
from ..datasets import label_list, line_index, read_chatml, sharegpt_messages
from ..record import Record, RecordError
from ..sniff import binary_kind

TEXT_FORMATS = ("json", "jsonl", "chatml", "csv", "markdown", "text")
DEFAULT_MAX_TOKENS = 512
MAX_TEXT_BYTES = 64 << 20

TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "comment", "body",
                "message", "utterance")
LABEL_COLUMNS = ("label", "labels", "class", "category", "sentiment", "intent", "target", "topic")
PROMPT_COLUMNS = ("prompt", "instruction", "question", "query", "user")
INPUT_COLUMNS = ("input", "context")
RESPONSE_COLUMNS = ("response", "output", "answer", "completion", "assistant")
SYSTEM_COLUMNS = ("system", "system_prompt")
_KNOWN_COLUMNS = set(TEXT_COLUMNS + LABEL_COLUMNS + PROMPT_COLUMNS + INPUT_COLUMNS +
                     RESPONSE_COLUMNS + SYSTEM_COLUMNS)

def import_text(data, name=None, kind=None, count_tokens=None, max_tokens=DEFAULT_MAX_TOKENS):
    """Records from a text file's bytes (or str); see the module docstring."""
    where = name or "<text>"
    if kind is not None and kind not in TEXT_FORMATS:
        raise DataError(f"{where}: unknown text format {kind!r}; formats are "
                        f"{', '.join(TEXT_FORMATS)}")
    text = decode_text_file(data, where)
    if not text.strip():
        raise DataError(f"{where}: the file is empty, nothing to import")
    fmt = kind or detect_format(text, name)
    origin = {"file": name} if name else {}
    origin["format"] = fmt
    if fmt in ("markdown", "text"):
        records = _prose_records(text, fmt, where, origin, count_tokens or approx_tokens,
                                 max_tokens)
    else:
        records = _READERS[fmt](text, where, origin)
    if not records:
        raise DataError(f"{where}: no examples in this {fmt} file")
    return records


# ---- bytes to text ---------------------------------------------------------------------------

def decode_text_file(data, where):
    """The text of a file's bytes: a UTF-8 or UTF-16 byte-order mark is honoured, otherwise
    UTF-8; line ends become \\n. Binary data and other encodings are a DataError."""
    if isinstance(data, str):
        return data.replace("\r\n", "\n").replace("\r", "\n")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"{where}: text data must be bytes or str, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_TEXT_BYTES:
        raise DataError(f"{where}: {len(raw)} bytes is over the {MAX_TEXT_BYTES}-byte limit "
                        "for a text file")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not UTF-16 text despite its byte-order mark ({e.reason} "
                            f"at byte {e.start})") from None
        return decode_text_file(text, where)
    what = binary_kind(raw)
    if what:
        raise DataError(f"{where}: {what}, not text (its signature at byte 0)")
    nul = raw.find(b"\0", 0, 1 << 16)
    if nul >= 0:
        head = raw[:1 << 12]
        if head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4:
            raise DataError(f"{where}: looks like UTF-16 text without a byte-order mark (NUL "
                            f"bytes from byte {nul}); save it as UTF-8")
        raise DataError(f"{where}: binary data, not text (a NUL byte at byte {nul}, line "
                        f"{_line_of(raw, nul)})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        raise DataError(f"{where}: not UTF-8 text ({e.reason} at byte {start}, line "
                        f"{_line_of(raw, start)}); save it as UTF-8") from None
    return decode_text_file(text, where)


def _line_of(raw, offset):
    return raw.count(b"\n", 0, offset) + 1


# ---- detection -------------------------------------------------------------------------------

_JSON_OPENING = re.compile(r'\s*(?:\{\s*["}]|\[\s*[{"\]])')
_MARKDOWN_STRONG = re.compile(r"^(?:#{1,6}\s+\S|```|~~~)", re.MULTILINE)
_MARKDOWN_HINTS = (re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE),
                   re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"), re.compile(r"\*\*[^*\n]+\*\*"),
                   re.compile(r"^>\s", re.MULTILINE))


def detect_format(text, name=None):
    """The format of `text` (one of TEXT_FORMATS) by the rules of the module docstring."""
    suffix = (name or "").lower().rsplit(".", 1)[-1] if "." in (name or "") else ""
    if _JSON_OPENING.match(text) or suffix in ("json", "jsonl", "ndjson"):
        return _json_or_jsonl(text, suffix)
    if re.search(r"^<\|im_start\|>", text, re.MULTILINE):
        return "chatml"
    if suffix in ("csv", "tsv") or _looks_like_csv_header(text):
        return "csv"
    if suffix in ("md", "markdown") or _MARKDOWN_STRONG.search(text) or \
            sum(bool(p.search(text)) for p in _MARKDOWN_HINTS) >= 2:
        return "markdown"
    return "text"


def _json_or_jsonl(text, suffix):
    try:
        json.loads(text)
        return "json"
    except (ValueError, RecursionError):
        pass
    lines = [line for line in text.split("\n") if line.strip()]
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    try:
        json.loads(lines[0])
    except (ValueError, RecursionError):
        return "json"
    return "jsonl" if len(lines) > 1 else "json"


def _looks_like_csv_header(text):
    line = text.split("\n", 1)[0]
    delimiter = _delimiter(line)
    if delimiter is None:
        return False
    cells = [c.strip().strip('"').strip() for c in line.split(delimiter)]
    return (len(cells) >= 2 and _same_columns(text, delimiter, len(cells))
            and all(re.fullmatch(r"[A-Za-z_][\w .-]{0,39}", c) for c in cells)
            and any(c.lower() in _KNOWN_COLUMNS for c in cells))


def _same_columns(text, delimiter, cells):
    """Whether the first data line has as many naive fields as the header (or there is none)."""
    rows = [line for line in text.split("\n")[1:3] if line.strip()]
    return not rows or rows[0].count(delimiter) + 1 == cells


def _delimiter(line, tab=False):
    """The header's most frequent delimiter outside quotes, or None."""
    if tab:
        return "\t"
    outside = re.sub(r'"[^"]*"', "", line)
    counts = {d: outside.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


# ---- JSON and JSONL --------------------------------------------------------------------------

def _read_jsonl(text, where, origin):
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            at = f"{where}:{number}"
            records.append(record_from_object(parse_record(line, at), at,
                                              {**origin, "line": number}))
    return records


def _read_json(text, where, origin):
    value = _parse_document(text, where)
    key = None
    if isinstance(value, dict) and not _record_shape(value):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{where}: a JSON object that is not a record (keys "
                            f"{sorted(value)[:12]}) must hold exactly one list of records")
        key = lists[0]
    if isinstance(value, dict) and key is None:
        return [record_from_object(value, f"{where}:1", {**origin, "line": 1})]
    items = value[key] if key is not None else value
    if not isinstance(items, list):
        raise DataError(f"{where}: a JSON document of records is a list or an object, got "
                        f"{json_kind(value)}")
    records = []
    for k, (item, offset) in enumerate(zip(items, _element_offsets(text, key))):
        line = text.count("\n", 0, offset) + 1
        records.append(record_from_object(item, f"{where}:{line}",
                                          {**origin, "line": line, "item": k}))
    return records


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def _parse_document(text, where):
    """The value of a whole JSON document; errors name the line and column, and say so when
    the text ends before the document does."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        cut = " (the text ends before the document does: truncated?)" \
            if e.pos >= len(text.rstrip()) else ""
        raise DataError(f"{where}:{e.lineno}: not valid JSON ({e.msg} at line {e.lineno}, "
                        f"column {e.colno}){cut}") from None
    except RecursionError:
        raise DataError(f"{where}: not usable JSON (nested too deeply to read)") from None
    except ValueError as e:
        raise DataError(f"{where}: not usable JSON ({e})") from None


def _element_offsets(text, key=None):
    """Character offsets of the elements of the (valid) JSON list at the top of `text`, or
    under `key` of the top-level object."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    pos = ws.match(text).end()
    if key is not None:                     # walk the object's members up to `key`
        pos = ws.match(text, pos + 1).end()
        while True:
            member, pos = decoder.raw_decode(text, pos)
            pos = ws.match(text, ws.match(text, pos).end() + 1).end()     # past ':'
            if member == key and text[pos] == "[":       # the first "key" holding a list
                break
            _, pos = decoder.raw_decode(text, pos)
            pos = ws.match(text, ws.match(text, pos).end() + 1).end()     # past ','
    pos = ws.match(text, pos + 1).end()                                    # past '['
    while text[pos] != "]":
        yield pos
        _, pos = decoder.raw_decode(text, pos)
        pos = ws.match(text, pos).end()
        if text[pos] == ",":
            pos = ws.match(text, pos + 1).end()


def _record_shape(obj):
    keys = set(obj)
    return bool(keys & {"messages", "conversations", "instruction", "prompt"} or
                keys & set(TEXT_COLUMNS))


def record_from_object(obj, where, origin):
    """The Record for one JSON object in any shape of the module docstring; `where`
    ("file:line") starts every error."""
    try:
        return _record_from_object(obj, where, origin)
    except RecordError as e:
        raise DataError(f"{where}: {e}") from None


def _record_from_object(obj, where, origin):
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {json_kind(obj)}")
    if "kind" in obj and "source" in obj:      # a record as py_engine writes one: kept whole
        return Record.from_dict(obj)
    origin = {**origin, "where": where}
    if isinstance(obj.get("id"), (str, int)) and not isinstance(obj.get("id"), bool):
        origin["id"] = obj["id"]
    if "conversations" in obj:
        obj = {"messages": sharegpt_messages(obj, where)}
    elif "instruction" in obj and "output" not in obj and "response" in obj:
        obj = {"instruction": obj["instruction"], "input": obj.get("input", obj.get("context")),
               "output": obj["response"]}
    text_key = next((k for k in TEXT_COLUMNS if k in obj), None)
    label_key = next((k for k in LABEL_COLUMNS if k in obj), None)
    chat_keys = {"messages", "instruction", "prompt"} & set(obj)
    if text_key and label_key and not chat_keys:
        return Record("classification", "text", text=_text_value(obj, text_key, where),
                      label=_label_value(obj[label_key], label_key, where), origin=origin)
    if text_key not in (None, "text") and not chat_keys:
        obj = {"text": obj[text_key]}
    example = chat_example_from_record(obj, where)
    if example.text is not None and not example.text.strip():
        raise DataError(f"{where}: \"text\" is empty")
    return Record("causal_lm", "text", text=example.text, messages=example.messages,
                  origin=origin)


def _text_value(obj, key, where):
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: \"{key}\" must be a non-empty string, got {value!r:.80}")
    return value


def _label_value(value, key, where):
    """A label name, or a multi-label text's list of them (the names that apply, maybe none)."""
    if isinstance(value, list):
        names = [_label_value(v, key, where) for v in value if not isinstance(v, list)]
        if len(names) != len(value) or len(set(names)) != len(names):
            raise DataError(f"{where}: \"{key}\" as a list holds the names of a multi-label "
                            f"text's labels, each once, got {value!r:.80}")
        return names
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DataError(f"{where}: \"{key}\" must be a non-empty string or an int (or a "
                        f"multi-label text's list of them), got {value!r:.80}")
    return str(value)


# ---- CSV -------------------------------------------------------------------------------------

def _read_csv(text, where, origin):
    header_line = text.split("\n", 1)[0]
    delimiter = _delimiter(header_line, tab=origin.get("file", "").lower().endswith(".tsv"))
    if delimiter is None:
        raise DataError(f"{where}:1: a CSV header needs two or more columns, got "
                        f"{header_line[:80]!r}")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    rows, line = [], 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{where}:{line}: malformed CSV ({e})") from None
    (_, header), body = rows[0], [(n, r) for n, r in rows[1:] if any(c.strip() for c in r)]
    columns = _csv_columns(header, where)
    if "prompt" in columns and "response" in columns:
        make = _csv_conversation
    elif "text" in columns and "label" in columns:
        make = _csv_classification
    elif "text" in columns:
        make = _csv_text
    else:
        raise DataError(f"{where}:1: no usable columns in the header {header}: give prompt + "
                        f"response ({'/'.join(PROMPT_COLUMNS)} + {'/'.join(RESPONSE_COLUMNS)}), "
                        f"or text + label ({'/'.join(TEXT_COLUMNS)} + {'/'.join(LABEL_COLUMNS)})")
    records = []
    for number, row in body:
        at = f"{where}:{number}"
        if len(row) != len(header):
            raise DataError(f"{at}: {len(row)} fields, the header has {len(header)}")
        records.append(make(row, columns, at, {**origin, "line": number, "where": at}))
    return records


def _csv_columns(header, where):
    """role ("text", "label", "prompt", "input", "response", "system") -> (index, name)."""
    names = [h.strip().lower() for h in header]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"{where}:1: the header repeats the column(s) {duplicated}")
    columns = {}
    for role, candidates in (("text", TEXT_COLUMNS), ("label", LABEL_COLUMNS),
                             ("prompt", PROMPT_COLUMNS), ("input", INPUT_COLUMNS),
                             ("response", RESPONSE_COLUMNS), ("system", SYSTEM_COLUMNS)):
        found = next((c for c in candidates if c in names), None)
        if found is not None:
            columns[role] = (names.index(found), header[names.index(found)].strip())
    return columns


def _cell(row, columns, role, at, required=True):
    index, name = columns[role]
    value = row[index]
    if required and not value.strip():
        raise DataError(f"{at}: the \"{name}\" field is empty")
    return value


def _csv_conversation(row, columns, at, origin):
    user = _cell(row, columns, "prompt", at)
    if "input" in columns and _cell(row, columns, "input", at, required=False).strip():
        user += "\n\n" + _cell(row, columns, "input", at)
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": _cell(row, columns, "response", at)}]
    if "system" in columns and _cell(row, columns, "system", at, required=False).strip():
        messages.insert(0, {"role": "system", "content": _cell(row, columns, "system", at)})
    return Record("causal_lm", "text", messages=messages, origin=origin)


def _csv_classification(row, columns, at, origin):
    """A text and its label; a label cell holding a JSON array of names (as `data export`
    writes a multi-label record's, in its labels column) is a multi-label text's list."""
    label = _cell(row, columns, "label", at).strip()
    names = label_list(label)
    if names is not None:
        label = _label_value(names, columns["label"][1], at)
    return Record("classification", "text", text=_cell(row, columns, "text", at), label=label,
                  origin=origin)


def _csv_text(row, columns, at, origin):
    return Record("causal_lm", "text", text=_cell(row, columns, "text", at), origin=origin)


# ---- prose -----------------------------------------------------------------------------------

def _prose_records(text, fmt, where, origin, count_tokens, max_tokens):
    line_at = line_index(text)
    records = []
    for k, (start, end, chunk) in enumerate(split_into_chunks(text, max_tokens, count_tokens,
                                                              markdown=fmt == "markdown")):
        first, last = line_at(start), line_at(max(start, end - 1))
        records.append(Record("causal_lm", "text", text=chunk,
                              origin={**origin, "line": first, "lines": [first, last],
                                      "chunk": k, "where": f"{where}:{first}"}))
    return records


_READERS = {"json": _read_json, "jsonl": _read_jsonl, "chatml": read_chatml, "csv": _read_csv}
