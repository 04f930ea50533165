"""Files of labelled tabs: JSONL lines {"url", "title", "label"} read with errors that name the
file and line, and datasets written as JSONL, JSON or CSV.

    tabs = read_tabs("data/tabs/eval.jsonl")        # [Tab(url, title, label)]
    data = tabs_bytes(rows, "csv")                  # rows: dicts with FIELDS

EVAL_FILE is the hand-checked evaluation set in a source checkout (it is not in the wheel).
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..data.classification import DataError, parse_record, read_jsonl_lines

EVAL_FILE = Path(__file__).resolve().parents[2] / "data" / "tabs" / "eval.jsonl"
FORMATS = ("jsonl", "json", "csv")
FIELDS = ("url", "title", "text", "label", "kind")


@dataclass(frozen=True)
class Tab:
    url: str
    title: str
    label: str = None


def parse_tabs(lines, source="<tabs>", require_label=True):
    """Tabs from JSONL lines: each an object with string "url" and "title" (either may be
    empty, not both) and, when required, a string "label". Blank lines are skipped."""
    tabs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        record = parse_record(line, where)
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object with url, title and label")
        url, title, label = record.get("url", ""), record.get("title", ""), record.get("label")
        for key, value in (("url", url), ("title", title)):
            if not isinstance(value, str):
                raise DataError(f"{where}: \"{key}\" must be a string, got {value!r:.60}")
        if not url.strip() and not title.strip():
            raise DataError(f"{where}: a tab needs a url or a title")
        if label is not None and (not isinstance(label, str) or not label):
            raise DataError(f"{where}: \"label\" must be a category name, got {label!r:.60}")
        if require_label and label is None:
            raise DataError(f"{where}: missing \"label\"")
        tabs.append(Tab(url, title, label))
    return tabs


def read_tabs(path, require_label=True):
    """The tabs of a JSONL file (DataError naming the file and line for anything wrong)."""
    return read_jsonl_lines(path, lambda lines, source: parse_tabs(lines, source, require_label))


def tabs_bytes(rows, fmt):
    """`rows` (dicts holding FIELDS) as a file of format `fmt`: JSONL, a JSON list, or CSV
    with a header line."""
    if fmt == "jsonl":
        text = "".join(json.dumps({k: r[k] for k in FIELDS}, ensure_ascii=False) + "\n" for r in rows)
    elif fmt == "json":
        text = json.dumps([{k: r[k] for k in FIELDS} for r in rows], ensure_ascii=False, indent=1) + "\n"
    elif fmt == "csv":
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return text.encode("utf-8")
