"""Labelled texts for sequence classification, read from JSONL ({"text": ..., "label": ...}).

Errors name the file and line; nothing is silently dropped.
"""

from pathlib import Path

from ..formats.json_file import JsonFileError, parse_json


class DataError(ValueError):
    """Malformed or unusable training data; the message names the file and line."""


class Example:
    __slots__ = ("text", "label", "pair")

    def __init__(self, text, label=None, pair=None):
        self.text = text
        self.label = label
        self.pair = pair

    def __repr__(self):
        return f"Example({self.text[:40]!r}, label={self.label!r})"


def parse_jsonl(lines, source="<data>", require_label=True):
    """Examples from an iterable of JSONL lines. Blank lines are skipped; anything else that is
    not an object with a string "text" (and, if required, a "label") is an error."""
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = parse_record(line, f"{source}:{number}")
        if not isinstance(record, dict):
            raise DataError(f"{source}:{number}: expected a JSON object, got {type(record).__name__}")
        text = record.get("text")
        if "text" not in record:
            raise DataError(f"{source}:{number}: missing \"text\" (the line has "
                            f"{', '.join(sorted(record)) or 'no keys'})")
        if not isinstance(text, str):
            raise DataError(f"{source}:{number}: \"text\" must be a string, got {text!r}")
        pair = record.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise DataError(f"{source}:{number}: \"text_pair\" must be a string, got {pair!r}")
        label = record.get("label")
        if require_label:
            if label is None:
                raise DataError(f"{source}:{number}: missing \"label\"")
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise DataError(f"{source}:{number}: \"label\" must be a string or an int, got {label!r}")
            label = str(label)
            if not label.strip():
                raise DataError(f"{source}:{number}: \"label\" is empty")
        elif label is not None:
            label = str(label)
        examples.append(Example(text, label, pair))
    return examples


def parse_record(line, where):
    """The JSON value of one JSONL line; a DataError starting with `where` (file:line) if the
    line is not JSON (or nests too deeply to read)."""
    try:
        return parse_json(line, where)
    except JsonFileError as e:
        raise DataError(str(e)) from None


def parse_records(lines, source, make):
    """make(record, where) for the JSON record of each line that is not blank, `where` being
    "source:line"; a line that is not JSON is a DataError naming it."""
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        examples.append(make(parse_record(line, where), where))
    return examples


def read_jsonl_lines(path, parse):
    """parse(lines, source) over the lines of the UTF-8 text file at `path`, with errors that
    name it: no such file, not a file, not UTF-8, no examples."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}" if not path.exists() else
                        f"{path} is not a file (give a JSONL file)")
    with path.open(encoding="utf-8-sig") as f:     # a byte order mark, as Notepad writes, is not data
        try:
            examples = parse(f, str(path))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a "
                            "read block)") from None
    if not examples:
        raise DataError(f"{path}: the dataset is empty")
    return examples


def read_jsonl(path, require_label=True):
    return read_jsonl_lines(path, lambda lines, source: parse_jsonl(lines, source, require_label))


def label_names(examples, known=None):
    """Label names in head order: `known` (from a saved adapter) as given, else sorted, so that
    a dataset always maps to the same head rows regardless of example order."""
    seen = {e.label for e in examples if e.label is not None}
    if known is not None:
        unknown = sorted(seen - set(known))
        if unknown:
            raise DataError(f"labels {unknown} are not among the adapter's labels {list(known)}")
        return list(known)
    if len(seen) < 2:
        raise DataError(f"classification needs at least two labels, found {sorted(seen)}")
    return sorted(seen)
