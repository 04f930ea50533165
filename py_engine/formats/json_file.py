"""Reading the small JSON (and other text) files of checkpoints and adapters (config.json, tokenizer.json,
tokenizer_config.json, adapter_config.json, head_config.json, labels.json) with errors that name
the file: a missing file, bytes that are not UTF-8, text that is not JSON, nesting too deep for
the parser (json raises RecursionError there), NaN or Infinity (not JSON, though Python's json
reads them), or a value of the wrong kind. Pure Python: this runs in the browser too.

    config = read_json_object(path)              # a dict, or JsonFileError naming path
    labels = read_json(path)                     # any JSON value
    value = parse_json(text, where="data.jsonl:3")
"""

import json
from pathlib import Path


class JsonFileError(ValueError):
    """A JSON file (or line) that cannot be used; the message names it and says why."""


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def lone_surrogate(value):
    """What is wrong when a string in `value` (strings, lists, dicts) holds a lone UTF-16
    surrogate, which JSON's "\\ud800" escape makes and which is not text; else None."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"a lone surrogate \\u{ord(e.object[e.start]):04x}, half of a UTF-16 pair, is "
                "not text")
    return None


def parse_json(text, where):
    """The value of JSON `text`; `where` (a file name, or file:line) starts every error."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        wrong = lone_surrogate(value) if "\\u" in text else None   # only an escape makes one
    except json.JSONDecodeError as e:
        line = f"line {e.lineno}, " if e.lineno > 1 else ""
        raise JsonFileError(f"{where}: not valid JSON ({e.msg} at {line}column "
                            f"{e.colno})") from None
    except RecursionError:
        raise JsonFileError(f"{where}: not usable JSON (nested too deeply to read)") from None
    except ValueError as e:     # NaN/Infinity, integers too long to convert
        raise JsonFileError(f"{where}: not usable JSON ({e})") from None
    if wrong:
        raise JsonFileError(f"{where}: not usable JSON ({wrong})")
    return value


def read_json(path):
    """The JSON value in the file at `path`."""
    path = Path(path)
    if not path.is_file():
        raise JsonFileError(f"no file at {path}" if not path.exists() else
                            f"{path} is not a file")
    return parse_json(read_utf8(path), str(path))


def read_utf8(path):
    """The text of the file at `path`, which must be UTF-8 (an error naming it otherwise)."""
    with open(path, "rb") as f:
        return decode_utf8(f.read(), path)


def decode_utf8(raw, where):
    """`raw` bytes decoded as UTF-8; an error starting with `where` if they are not UTF-8."""
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonFileError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_json_object(path):
    """The JSON object (a dict) in the file at `path`."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise JsonFileError(f"{path} must hold a JSON object, got {json_kind(value)}")
    return value


def json_kind(value):
    """What a decoded JSON value is, in JSON's words (for messages)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
