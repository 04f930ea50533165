"""`py-engine data`: the training queue from the command line (host side).

    py-engine data import FILE_OR_URL... [--queue FILE] [--tokenizer MODEL] [--max-tokens N] [--qa]
    py-engine data clean [--queue FILE] [--no-pii] [--no-quality] [--no-dedup] [--dry-run]
    py-engine data export --format FMT --out DIR [--split 0.8,0.1,0.1 | --validation-split 0.1]
                          [--system-prompt TEXT | --no-system] [--quality] [--dedup] ...
    py-engine data stats [--queue FILE] [--json] [--tokenizer MODEL]

The queue is an SQLite file: --queue names it, else $PY_ENGINE_DATA/queue.sqlite, else the
user's data directory ($XDG_DATA_HOME or ~/.local/share on Linux, ~/Library/Application
Support on macOS, %APPDATA% on Windows) under py-engine/. import takes files, directories (every
file under them, in name order) and http(s) URLs: web pages (main text; with --qa also
question/answer pairs from headed sections), images (the text known about them: metadata,
caption, name), and text files (format detected: markdown, plain text, JSON/JSONL chats,
ShareGPT, Alpaca, prompt/response, ChatML, CSV; --format names a dataset format instead). Each
input is queued whole or not at all; one that cannot be read is reported and skipped, and the
run exits with 2 at the end. Long runs show their progress on stderr.
"""

import argparse
import json
import os
import sys
from pathlib import Path

QUEUE_FILE = "queue.sqlite"


def default_queue_path():
    """Where the queue lives when --queue is not given."""
    if os.environ.get("PY_ENGINE_DATA"):
        return Path(os.environ["PY_ENGINE_DATA"]) / QUEUE_FILE
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "py-engine" / QUEUE_FILE


def _queue(args, create=False):
    from py_engine.data.queue import TrainingQueue

    path = Path(args.queue) if args.queue else default_queue_path()
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no queue at {path}: import something first "
                                    "(py-engine data import ...)")
        if not args.queue:
            path.parent.mkdir(parents=True, exist_ok=True)
    return TrainingQueue(str(path)), path


def _count_tokens(args):
    """The model's tokenizer as a counter of tokens (None: about 4 characters a token)."""
    if not getattr(args, "tokenizer", None):
        return None
    from py_engine.tokenizers.checkpoint import chat_tokenizer, classifier_tokenizer

    model = Path(args.tokenizer)
    if not model.is_dir():
        raise FileNotFoundError(f"--tokenizer {model}: no model directory there")
    try:
        tokenizer, _ = chat_tokenizer(model)
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
    except (FileNotFoundError, ValueError):      # a BERT-family checkpoint: WordPiece
        tokenizer = classifier_tokenizer(model)
        return lambda text: len(tokenizer.encode(text, truncation=False).ids)


def _progress(done, total, what):
    print(f"[{done}/{total}] {what}", file=sys.stderr, flush=True)


# --- import --------------------------------------------------------------------------------------

def _inputs(items):
    """(name, path or None) for each URL, file, and file under a directory, in order."""
    out = []
    for item in items:
        if item.startswith(("http://", "https://")):
            out.append((item, None))
            continue
        path = Path(item)
        if path.is_dir():
            out += [(str(p), p) for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.is_file():
            out.append((item, path))
        else:
            raise FileNotFoundError(f"no file, directory or URL {item}")
    return out


def records_of(name, path, args, count_tokens):
    """The records one input makes (DataError when it cannot be read)."""
    from py_engine.data.importers import import_file
    from py_engine.data.importers.website import import_url

    options = dict(count_tokens=count_tokens, max_tokens=args.max_tokens)
    if path is None:
        return import_url(name, qa=args.qa, **options)
    if args.format:
        from py_engine.data.datasets import import_dataset

        return import_dataset(path, args.format)
    return import_file(path.read_bytes(), name, url=path.resolve().as_uri(), qa=args.qa,
                       **options)


def cmd_import(args):
    from py_engine.data.classification import DataError
    from py_engine.gpu import run_sync

    inputs = _inputs(args.inputs)
    count_tokens = _count_tokens(args)
    queue, path = _queue(args, create=True)
    totals = {"added": 0, "duplicates": 0, "evicted": 0, "refused": 0}
    failed = []
    for k, (name, file) in enumerate(inputs, 1):
        try:
            records = records_of(name, file, args, count_tokens)
        except (DataError, OSError) as e:
            failed.append(name)
            print(f"py-engine: error: {e}", file=sys.stderr)
            continue
        if args.priority is not None:
            records = [r.replace(priority=args.priority) for r in records]
        result = run_sync(queue.put(records))
        for key in totals:
            totals[key] += result[key]
        if len(inputs) > 1 or args.verbose:
            _progress(k, len(inputs), f"{name}: {len(records)} records ({result['added']} added, "
                                      f"{result['duplicates']} duplicates)")
    queue.close()
    print(json.dumps({"queue": str(path), "inputs": len(inputs), "failed": len(failed), **totals}))
    if failed:
        said = "it could not be imported" if len(inputs) == 1 else \
            f"none of the {len(inputs)} inputs could be imported" if len(failed) == len(inputs) \
            else f"{len(failed)} of {len(inputs)} inputs could not be imported; the others were"
        print(f"py-engine: error: {said}", file=sys.stderr)
        return 2
    return 0


# --- clean ---------------------------------------------------------------------------------------

def cmd_clean(args):
    from py_engine.data.cleaning import CleaningConfig, clean_records
    from py_engine.data.dedup import DedupConfig
    from py_engine.gpu import run_sync

    queue, _ = _queue(args)
    records = run_sync(_all(queue))
    defaults = CleaningConfig()
    config = CleaningConfig(
        pii=None if args.no_pii else defaults.pii,
        quality=None if args.no_quality else defaults.quality,
        dedup=None if args.no_dedup else DedupConfig(threshold=args.near_threshold))
    report = clean_records(records, config)
    summary = report.summary()
    changed = [records[i] for i in report.kept_indices]
    replaced = [(old, new) for old, new in zip(changed, report.records) if new is not old]
    removed = [records[o.index].id for o in report.outcomes if o.action == "removed"]
    if not args.dry_run:
        run_sync(queue.replace(removed + [old.id for old, _ in replaced],
                               [new for _, new in replaced]))
    queue.close()
    out = {k: v for k, v in summary.items() if k != "records"}
    out["dry_run"] = args.dry_run
    print(json.dumps(out, ensure_ascii=False))
    return 0


async def _all(queue, **where):
    return [r async for r in queue.records(**where)]


# --- export, stats -------------------------------------------------------------------------------

def _split(text):
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions separated by commas, got {text!r}") from None
    if len(parts) not in (2, 3) or any(not 0 < x < 1 for x in parts) or abs(sum(parts) - 1) > 1e-9:
        raise argparse.ArgumentTypeError(f"expected 2 or 3 fractions in (0, 1) adding up to 1 "
                                         f"(train,validation,test), got {text!r}")
    return tuple(parts)


def _fraction(text, closed=False):
    """A number in (0, 1), or in (0, 1] when `closed`."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not (0 < value < 1 or closed and value == 1):
        raise argparse.ArgumentTypeError(f"expected a number in (0, {'1]' if closed else '1)'}, "
                                         f"got {text!r}")
    return value


def cmd_export(args):
    from py_engine.data.datasets import ExportConfig, export_dataset
    from py_engine.formats.output_dir import check_output_dir
    from py_engine.gpu import run_sync

    if args.split is not None and args.validation_split is not None:
        raise ValueError("--split and --validation-split: give one of them")
    if args.system_prompt is not None and args.no_system:
        raise ValueError("--system-prompt and --no-system: give one of them")
    queue, path = _queue(args)
    check_output_dir(args.out, protected=[("the queue", path)], kind="a dataset")
    config = ExportConfig.from_options(
        args.format, quality_filter=args.quality, deduplicate=args.dedup,
        include_system=not args.no_system, system_prompt=args.system_prompt, split=args.split,
        validation_split=args.validation_split, seed=args.seed, count_tokens=_count_tokens(args))
    records = run_sync(_all(queue, kind=args.kind))
    queue.close()
    result = export_dataset(records, args.out, config, protected=[("the queue", path)])
    print(json.dumps({"out": args.out, "files": result.counts}))
    return 0


def cmd_stats(args):
    from py_engine.data.datasets import dataset_stats
    from py_engine.gpu import run_sync

    queue, path = _queue(args)
    stats = run_sync(queue.stats())
    stats["lengths"] = dataset_stats(run_sync(_all(queue)), _count_tokens(args))
    queue.close()
    if args.json:
        print(json.dumps(stats, indent=1, ensure_ascii=False))
        return 0
    print(f"queue {path}: {stats['total']} records ({stats['available']} available, "
          f"{stats['leased']} leased; capacity {stats['capacity']})")
    for key in ("by_kind", "by_source", "by_priority", "by_label"):
        if stats.get(key):
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(stats[key].items(), key=str))
            print(f"  {key[3:]:<9} {shown}")
    return 0


def add_data_parser(sub, positive_int, formats):
    """The `data` command and its subcommands, on the CLI's subparsers."""
    data = sub.add_parser("data", help="the training queue: import, clean, export, stats")
    commands = data.add_subparsers(dest="data_command", required=True)

    def command(name, fn, text):
        p = commands.add_parser(name, help=text)
        p.add_argument("--queue", help="the queue's SQLite file (default: "
                                       f"{default_queue_path()})")
        p.set_defaults(fn=fn)
        return p

    p = command("import", cmd_import, "queue examples from files, directories and URLs")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_URL")
    p.add_argument("--tokenizer", help="a model directory whose tokenizer measures chunks "
                                       "(default: about 4 characters a token)")
    p.add_argument("--max-tokens", type=positive_int, default=512, help="tokens a chunk (512)")
    p.add_argument("--qa", action="store_true", help="web pages: also question/answer pairs")
    p.add_argument("--format", choices=formats, help="read files as this dataset format")
    p.add_argument("--priority", type=int, help="the records' priority (default: by source)")
    p.add_argument("--verbose", action="store_true", help="a progress line per input")
    p = command("clean", cmd_clean, "scrub PII, normalise, filter and deduplicate the queue")
    p.add_argument("--no-pii", action="store_true")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--no-dedup", action="store_true")
    p.add_argument("--near-threshold", type=lambda text: _fraction(text, closed=True), default=0.5,
                   help="near duplicates: estimated Jaccard similarity at least this (0.5)")
    p.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    p = command("export", cmd_export, "write the queue as a dataset")
    p.add_argument("--format", choices=formats, required=True)
    p.add_argument("--out", required=True, help="a new, empty or py_engine-written directory")
    p.add_argument("--kind", choices=["classification", "causal_lm"])
    p.add_argument("--split", type=_split, help="train,validation,test fractions (seeded; "
                                                "stratified by label for classification)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-split", type=_fraction,
                   help="hold out this fraction as validation (train and validation files)")
    p.add_argument("--system-prompt", help="first message of conversations without one")
    p.add_argument("--no-system", action="store_true",
                   help="leave the conversations' system messages out")
    p.add_argument("--quality", action="store_true", help="drop low-quality examples first")
    p.add_argument("--dedup", action="store_true", help="drop duplicates and near duplicates first")
    p.add_argument("--tokenizer", help="a model directory for the stats' token lengths")
    p = command("stats", cmd_stats, "counts by kind, source, priority and label; lengths")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tokenizer", help="a model directory for token lengths")
    return data
