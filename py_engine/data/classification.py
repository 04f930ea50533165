"""Labelled texts for sequence classification, read from JSONL ({"text": ..., "label": ...}).

Errors name the file and line; nothing is silently dropped.
"""

from pathlib import Path

from ..formats.json_file import JsonFileError, parse_json
from ..labels import F32_MAX, MULTI_LABEL, REGRESSION, SINGLE_LABEL, check_problem_type


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


def parse_jsonl(lines, source="<data>", require_label=True, problem_type=None):
    """Examples from an iterable of JSONL lines. Blank lines are skipped; anything else that is
    not an object with a string "text" (and, if required, a "label") is an error.
    `problem_type` (labels.PROBLEM_TYPES; None: single-label) says what a label is: a name
    (a string or an int), a multi-label text's list of names or {name: target in [0, 1]}, a
    regression text's number or {name: number} (target_label)."""
    problem_type = check_problem_type(problem_type)
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
        if require_label and label is None:
            raise DataError(f"{source}:{number}: missing \"label\"")
        if problem_type != SINGLE_LABEL:
            if label is not None:
                label = target_label(label, problem_type, f"{source}:{number}")
        elif require_label:
            if isinstance(label, list):
                raise DataError(f"{source}:{number}: \"label\" is a list: a text with several "
                                "labels is a multi-label classifier's (--problem-type "
                                "multi_label_classification)")
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise DataError(f"{source}:{number}: \"label\" must be a string or an int, got {label!r}")
            label = str(label)
            if not label.strip():
                raise DataError(f"{source}:{number}: \"label\" is empty")
        elif label is not None:
            label = str(label)
        examples.append(Example(text, label, pair))
    return examples


def target_label(label, problem_type, where):
    """A multi-label or regression example's label checked: a list of distinct label names,
    {name: number} (a multi-label target within [0, 1]) or, for regression, a number; a
    DataError naming `where` for anything else."""
    multi = problem_type == MULTI_LABEL
    if multi and isinstance(label, (list, tuple, set, frozenset)):
        label = list(label)
        if not all(isinstance(name, str) and name.strip() for name in label):
            raise DataError(f"{where}: \"label\" lists label names (non-empty strings), got "
                            f"{label!r:.80}")
        if len(set(label)) != len(label):
            raise DataError(f"{where}: \"label\" names a label twice: {label!r:.80}")
        return label
    if isinstance(label, dict) and label:
        for name, value in label.items():
            if not isinstance(name, str) or not name.strip() or not _is_number(value) or (
                    multi and not 0 <= value <= 1):
                raise DataError(f"{where}: \"label\" gives each label name a "
                                f"{'target within [0, 1]' if multi else 'number'}, got "
                                f"{name!r:.40}: {value!r:.40}")
        return {name: float(value) for name, value in label.items()}
    if not multi and _is_number(label):
        return float(label)
    wanted = ("a list of label names or {name: target}" if multi
              else "a number or {name: number}")
    raise DataError(f"{where}: a {problem_type} \"label\" is {wanted}, got {label!r:.80}")


def label_targets(label, labels, problem_type, where="the example"):
    """A multi-label or regression example's label as one float target per name of `labels`:
    a multi-label text's list of names gives 1 for those and 0 for the rest, {name: target}
    its targets (names left out are 0); a regression example's {name: value} names every
    label, a number is a head of one output's. ValueError naming `where` and the problem."""
    label = target_label(label, problem_type, where)     # its form and values
    if isinstance(label, (list, dict)):
        unknown = sorted(set(label) - set(labels))
        if unknown:
            raise ValueError(f"{where}: labels {unknown} are not among the classifier's "
                             f"labels {labels}")
    if isinstance(label, list):
        return [1.0 if name in label else 0.0 for name in labels]
    if isinstance(label, dict):
        if problem_type == REGRESSION and len(label) != len(labels):
            raise ValueError(f"{where}: a regression example gives a value for every label "
                             f"{labels}, not only {sorted(label)}")
        return [label.get(name, 0.0) for name in labels]
    if len(labels) != 1:        # a number: a regression head's of one output
        raise ValueError(f"{where}: a regression example of several outputs gives "
                         f"{{label: value}} for every label {labels}, got {label!r:.60}")
    return [label]


def _is_number(value):
    """A finite number a 32-bit float holds (the targets are f32 on the GPU and in the adapter's
    training); not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return abs(float(value)) <= F32_MAX
    except OverflowError:       # an int past any float
        return False


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


def read_jsonl(path, require_label=True, problem_type=None):
    return read_jsonl_lines(path, lambda lines, source: parse_jsonl(lines, source, require_label,
                                                                    problem_type))


# the label of a regression head of one output given as a number: transformers' name for it
SCORE_LABEL = "LABEL_0"


def label_names(examples, known=None, problem_type=None):
    """Label names in head order: `known` (from a saved adapter) as given, else sorted, so that
    a dataset always maps to the same head rows regardless of example order. A multi-label
    dataset's are every name its labels give; a regression dataset's the names of its
    {name: number} labels (the same on every line), or SCORE_LABEL where they are numbers."""
    problem_type = check_problem_type(problem_type)
    if problem_type == REGRESSION:
        return _regression_names(examples, known)
    seen = given_names(examples, problem_type)
    if known is not None:
        unknown = sorted(seen - set(known))
        if unknown:
            raise DataError(f"labels {unknown} are not among the adapter's labels {list(known)}")
        return list(known)
    fewest = 2 if problem_type == SINGLE_LABEL else 1
    if len(seen) < fewest:
        raise DataError(f"classification needs at least {'two labels' if fewest == 2 else 'one label'}, "
                        f"found {sorted(seen)}")
    return sorted(seen)


def given_names(examples, problem_type=None):
    """The set of label names a single- or multi-label classifier's `examples` give (every
    name of a multi-label example's list or {name: target}; unlabelled ones none)."""
    multi = check_problem_type(problem_type) == MULTI_LABEL
    return {name for e in examples if e.label is not None
            for name in (e.label if multi else [e.label])}


def _regression_names(examples, known):
    kinds = {tuple(sorted(e.label)) if isinstance(e.label, dict) else None
             for e in examples if e.label is not None}
    if len(kinds) > 1:
        raise DataError("regression labels must all be numbers, or all {name: number} with the "
                        f"same names; found {sorted(map(str, kinds))[:4]}")
    names = list(next(iter(kinds), None) or [SCORE_LABEL])
    if known is not None:
        if sorted(known) != names:
            raise DataError(f"the data's regression outputs {names} are not the adapter's "
                            f"{list(known)}")
        return list(known)
    return names
