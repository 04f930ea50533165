"""Cleaning training records before they are learned or exported: Unicode normalisation,
PII scrubbing, quality filters and duplicate removal, each configurable and each saying what it
removed or changed and why.

    report = clean_records(records, CleaningConfig())
    report.records                 # the records kept, cleaned, in input order
    report.removed_counts()        # {"too_short": 3, "near_duplicate": 2, ...}
    report.changed_counts()        # {"pii.email": 5, "unicode.whitespace": 9, ...}
    [o for o in report.outcomes if o.action == "removed"]   # one RecordOutcome per record

Steps, in order, over what a record teaches (its text, its label, its messages' contents):
  1. garbage (QualityConfig.max_garbage): the share of characters that are not text
     (replacement characters, controls, private-use and unassigned code points, box drawing,
     mojibake such as "Ã©") measured on the text as it came, before step 2 strips some of it;
  2. normalisation (NormalizeConfig): Unicode NFC, control characters removed (tab and newline
     kept, CR LF made LF), invisible characters removed (zero-width spaces, BOM, soft hyphens,
     bidirectional controls; the zero-width joiner of emoji sequences is kept), odd spaces
     (no-break, em, ideographic...) made plain spaces, line and paragraph separators made
     newlines, trailing spaces of lines and blank-line runs trimmed, the ends stripped.
     Labels are normalised the same way, and nothing else is done to them;
  3. PII (PiiConfig, see pii.py) in texts and message contents, replaced by [EMAIL], [PHONE]...;
  4. quality (QualityConfig): empty, too short, too long, repetitive (duplicate lines, repeated
     word 3-grams, long runs of one character), a conversation with no assistant answer;
  5. duplicates (DedupConfig, see dedup.py): exact (same content hash after cleaning) and near
     (MinHash), compared within the same kind and label; the record kept is the one of highest
     priority, then the first given.
A record that fails a step is removed with one reason; a record a step alters is kept with
every reason that altered it. Nothing is removed silently and no input record is modified.

Pure Python: this runs in the browser.
"""

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from .dedup import DedupConfig, find_duplicates
from .pii import PiiConfig, scrub_pii
from .record import label_key, label_names


@dataclass
class NormalizeConfig:
    enabled: bool = True
    form: str = "NFC"               # or "NFKC" (also folds compatibility forms: ﬁ -> fi, ² -> 2)
    strip_controls: bool = True
    strip_invisible: bool = True
    fix_whitespace: bool = True
    collapse_spaces: bool = False   # runs of spaces inside lines -> one (would flatten code)
    max_blank_lines: int = 2        # longer runs of empty lines are cut to this (None: keep)
    strip: bool = True              # leading and trailing whitespace of each text

    def __post_init__(self):
        if self.form not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"form must be NFC, NFKC, NFD or NFKD, got {self.form!r}")


@dataclass
class QualityConfig:
    """Lengths in characters, of a text or of a conversation's contents together."""
    enabled: bool = True
    min_chars: int = 20                 # causal-LM texts and conversations
    min_chars_classification: int = 2   # a label's text may be short ("cheap flights")
    max_chars: int = 100_000
    max_repetition: float = 0.3         # repetition_ratio() above this is removed
    max_garbage: float = 0.1            # garbage_ratio() above this is removed
    require_answer: bool = True         # a conversation needs a non-empty assistant turn


@dataclass
class CleaningConfig:
    """Each part is on unless set to None (or its `enabled`/flags say otherwise)."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class RecordOutcome:
    """What cleaning did to the record at `index` of the input (`id`: its queue id, if any):
    action "removed" (reasons holds the one reason) or "changed" (every reason); `detail`
    says more (measured values, which record it duplicates)."""
    index: int
    id: object
    action: str
    reasons: list
    detail: str = ""


@dataclass
class CleaningReport:
    records: list            # the records kept, cleaned, in input order
    kept_indices: list       # their indices in the input
    outcomes: list           # a RecordOutcome for each record removed or changed
    pii_found: Counter       # findings by PII type, over all records
    input_count: int = 0

    def removed_counts(self):
        return Counter(o.reasons[0] for o in self.outcomes if o.action == "removed")

    def changed_counts(self):
        return Counter(r for o in self.outcomes if o.action == "changed" for r in o.reasons)

    def summary(self):
        """A JSON-ready account: counts by reason, and what happened to each record."""
        return {"input": self.input_count, "kept": len(self.records),
                "removed": dict(sorted(self.removed_counts().items())),
                "changed": dict(sorted(self.changed_counts().items())),
                "pii_found": dict(sorted(self.pii_found.items())),
                "records": [{"index": o.index, "id": o.id, "action": o.action,
                             "reasons": o.reasons, "detail": o.detail} for o in self.outcomes]}


# ---- normalisation ---------------------------------------------------------------------------

# zero-width space/non-joiner, word joiner, invisible operators, BOM, soft hyphen, bidi
# embeddings, overrides and isolates, Mongolian vowel separator. The zero-width joiner (U+200D)
# stays: emoji sequences need it.
_INVISIBLE = re.compile("[\u200b\u200c\u2060-\u2064\ufeff\u00ad\u202a-\u202e\u2066-\u2069"
                        "\u200e\u200f\u061c\u180e]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ODD_SPACE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029\x85]")
_TRAILING = re.compile("[ \t]+(?=\n|$)")
_SPACE_RUN = re.compile("(?<=\\S)  +(?=\\S)")


def normalize_text(text, config=None):
    """(text, [reasons]): reasons among unicode.form, unicode.control, unicode.invisible,
    unicode.whitespace, for what changed it."""
    config = config or NormalizeConfig()
    reasons = []

    def step(reason, new):
        nonlocal text
        if new != text:
            reasons.append(reason)
            text = new

    if not config.enabled:
        return text, reasons
    if config.fix_whitespace or config.strip_controls:
        step("unicode.whitespace", _LINE_BREAKS.sub("\n", text))   # before controls: \x85, \r
    if config.strip_controls:
        step("unicode.control", _CONTROL.sub("", text))
    if config.strip_invisible:
        step("unicode.invisible", _INVISIBLE.sub("", text))
    step("unicode.form", unicodedata.normalize(config.form, text))
    if config.fix_whitespace:
        new = _TRAILING.sub("", _ODD_SPACE.sub(" ", text))
        if config.collapse_spaces:
            new = _SPACE_RUN.sub(" ", new)
        if config.max_blank_lines is not None:
            new = re.sub("\n{%d,}" % (config.max_blank_lines + 2),
                         "\n" * (config.max_blank_lines + 1), new)
        step("unicode.whitespace", new)
    if config.strip:
        step("unicode.whitespace", text.strip())
    return text, sorted(set(reasons))


# ---- quality measures ------------------------------------------------------------------------

_MOJIBAKE = re.compile("[ÂÃ][\u0080-\u00bf]|â€[\u0080-\u00bf\u2018-\u201e\u2020-\u2022\u2026"
                       "\u2030\u2039\u203a\u20ac\u2122\u0152\u0153\u0160\u0161\u0178\u017d"
                       "\u017e\u0192\u02c6\u02dc]?")
_SAME_CHAR_RUN = re.compile(r"(\w)\1{9,}")


def garbage_ratio(text):
    """The share of text's characters that are no text: U+FFFD, controls other than tab and
    newlines, private-use, unassigned and surrogate code points, box drawing and block
    elements, and the characters of mojibake (UTF-8 read as Latin-1/cp1252: "Ã©", "â€™")."""
    if not text:
        return 0.0
    bad = sum(len(m.group()) for m in _MOJIBAKE.finditer(text))
    for c in text:
        if c in "\t\n\r":
            continue
        if c == "\ufffd" or "\u2500" <= c <= "\u259f" or \
                unicodedata.category(c) in ("Cc", "Co", "Cn", "Cs"):
            bad += 1
    return min(1.0, bad / len(text))


def repetition_ratio(text):
    """The largest of: the share of characters in lines that repeat an earlier line (of 2+
    lines), the share of word 3-grams that repeat an earlier one (of 10+ words), the share of
    characters in runs of ten or more of one letter or digit."""
    ratios = [0.0]
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) >= 2:
        seen, repeated = set(), 0
        for line in lines:
            if line in seen:
                repeated += len(line)
            seen.add(line)
        ratios.append(repeated / sum(len(line) for line in lines))
    words = text.lower().split()
    if len(words) >= 10:
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        ratios.append(1 - len(set(grams)) / len(grams))
    if text:
        ratios.append(sum(len(m.group()) for m in _SAME_CHAR_RUN.finditer(text)) / len(text))
    return max(ratios)


def content_text(record):
    """What a record teaches as one text: its text, or its messages' contents one per line."""
    if record.messages is not None:
        return "\n".join(m["content"] for m in record.messages)
    return record.text


def _quality_problem(record, config):
    """(reason, detail) for the first quality test a cleaned record fails, else None."""
    content = content_text(record)
    n = len(content)
    if not content.strip():
        return "empty", "nothing left to learn"
    least = config.min_chars_classification if record.kind == "classification" else config.min_chars
    if n < least:
        return "too_short", f"{n} characters < {least}"
    if n > config.max_chars:
        return "too_long", f"{n} characters > {config.max_chars}"
    if config.require_answer and record.messages is not None and \
            not any(m["role"] == "assistant" and m["content"].strip() for m in record.messages):
        return "no_answer", "no assistant message with content"
    repetition = repetition_ratio(content)
    if repetition > config.max_repetition:
        return "repetition", f"repetition {repetition:.2f} > {config.max_repetition}"
    return None


# ---- records ---------------------------------------------------------------------------------

def _clean_text(text, config, reasons, pii_found):
    if config.normalize is not None:
        text, changed = normalize_text(text, config.normalize)
        reasons.update(changed)
    if config.pii is not None and config.pii.types:
        text, found = scrub_pii(text, config.pii)
        for m in found:
            reasons.add("pii." + m.type)
            pii_found[m.type] += 1
    return text


def _cleaned(record, config, reasons, pii_found):
    """A new Record with cleaned content (the same record when nothing changed), or None when
    a text became empty."""
    text = label = messages = None
    if record.text is not None:
        text = _clean_text(record.text, config, reasons, pii_found)
        if not text:
            return None
    if record.label is not None:
        label = record.label
        if config.normalize is not None:
            names = []
            for name in label_names(label):
                name, changed = normalize_text(name, config.normalize)
                reasons.update(r.replace("unicode.", "label.") for r in changed)
                if not name:
                    return None
                names.append(name)
            # a multi-label record whose names became one is kept with that name once
            label = names[0] if isinstance(label, str) else sorted(set(names))
    if record.messages is not None:
        messages = [{"role": m["role"],
                     "content": _clean_text(m["content"], config, reasons, pii_found)}
                    for m in record.messages]
    if not reasons:
        return record
    return record.replace(text=text, label=label, messages=messages)


def clean_records(records, config=None):
    """A CleaningReport for a list of Records (see the module docstring)."""
    config = config or CleaningConfig()
    quality = config.quality if config.quality is not None and config.quality.enabled else None
    outcomes, pii_found = {}, Counter()
    survivors = {}                      # index -> cleaned record
    for i, record in enumerate(records):
        if quality is not None:
            garbage = garbage_ratio(content_text(record))
            if garbage > quality.max_garbage:
                outcomes[i] = RecordOutcome(i, record.id, "removed", ["garbage"],
                                            f"garbage {garbage:.2f} > {quality.max_garbage}")
                continue
        reasons = set()
        cleaned = _cleaned(record, config, reasons, pii_found)
        problem = ("empty", "nothing left to learn") if cleaned is None else \
            _quality_problem(cleaned, quality) if quality is not None else None
        if problem is not None:
            outcomes[i] = RecordOutcome(i, record.id, "removed", [problem[0]], problem[1])
            continue
        if reasons:
            outcomes[i] = RecordOutcome(i, record.id, "changed", sorted(reasons))
        survivors[i] = cleaned
    dedup = config.dedup
    if dedup is not None and (dedup.exact or dedup.near) and survivors:
        indices = list(survivors)
        kept = [survivors[i] for i in indices]
        order = sorted(range(len(kept)), key=lambda k: (-kept[k].priority, k))
        duplicates = find_duplicates([_dedup_text(r) for r in kept], dedup,
                                     keys=[r.content_hash for r in kept],
                                     groups=[(r.kind, label_key(r.label)) for r in kept], order=order)
        for k, dup in duplicates.items():
            i, of = indices[k], indices[dup.of]
            reason = "duplicate" if dup.exact else "near_duplicate"
            detail = f"of record {of}" + ("" if dup.exact else f" (similarity {dup.similarity:.2f})")
            outcomes[i] = RecordOutcome(i, records[i].id, "removed", [reason], detail)
            del survivors[i]
    kept_indices = sorted(survivors)
    return CleaningReport([survivors[i] for i in kept_indices], kept_indices,
                          [outcomes[i] for i in sorted(outcomes)], pii_found, len(records))


def _dedup_text(record):
    if record.messages is not None:
        return "\n".join(f"{m['role']}: {m['content']}" for m in record.messages)
    return record.text
