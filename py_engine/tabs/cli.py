"""`py-engine tabs`: the tab classifier from the command line (host side).

    py-engine tabs generate --out DIR [--size 10000] [--seed 0] [--validation 0.1] [--format jsonl|json|csv]
    py-engine tabs train --out DIR [--model minilm] [--data DIR] [--size N] [--seed N] [--epochs N] [--lr X] [--augment S] ...
    py-engine tabs eval --data FILE.jsonl [--adapter DIR] [--model minilm] [--json] [--plot out.png] [--model-only]
    py-engine tabs deploy --to DIR [--adapter DIR] [--model minilm] [--base-dtype auto|f16|int8]

generate writes train and validation files and stats.json (counts per class, hard case and
domain, and each hard case's labelling policy). train fine-tunes MiniLM with LoRA and a
mean-pooled head on generated tabs (--data: a directory `generate` wrote) and writes the
adapter with labels.json, categories.json and training.json (how it was made). eval reads
lines {"url", "title", "label"} and reports accuracy, per-class precision, recall and F1, the
confusion matrix, latency per tab and per batch of 50, and sizes, of the extension's answers
(the model's, the rules' where it is unsure; --model-only: the model's alone); without
--adapter it uses the adapter shipped with py_engine. deploy writes what the extension loads: the base model (f16 or
int8, whichever the measured accuracy allows), adapter, categories and rules, then reloads the
directory and checks its predictions equal the host's.

Every option and path is checked before anything is written; output directories follow the
engine's rule (new, empty, or written by py_engine; deploy only replaces its own).
"""

import json
import sys
from pathlib import Path


def add_tabs_parser(sub):
    """Add `tabs` and its commands to the `py-engine` sub-parsers."""
    from py_engine.cli import COUNT, FRACTION, MAX_LENGTH, POSITIVE, SEED, SHARE, _alpha, _modules, model_dir
    from .generator import DEFAULT_SIZE, DEFAULT_VALIDATION
    from .tab_data import FORMATS

    tabs = sub.add_parser("tabs", help="the tab classifier: generate data, train, eval, deploy")
    commands = tabs.add_subparsers(dest="tabs_command", required=True)

    p = commands.add_parser("generate", help="synthetic labelled tabs: train/validation files and stats.json")
    p.add_argument("--out", required=True, help="directory to write (new, empty or py_engine's)")
    p.add_argument("--size", type=COUNT, default=DEFAULT_SIZE)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--validation", type=FRACTION, default=DEFAULT_VALIDATION,
                   help="share of each class held out for validation")
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.set_defaults(fn=cmd_generate)

    p = commands.add_parser("train", help="fine-tune the tab classifier (LoRA + head) on generated tabs")
    p.add_argument("--out", required=True, help="adapter directory to write")
    p.add_argument("--model", type=model_dir, default="minilm",
                   help='base checkpoint directory, or "minilm" (the default)')
    p.add_argument("--data", help="a directory `tabs generate` wrote (default: generate in memory)")
    p.add_argument("--size", type=COUNT, help=f"tabs to generate (default {DEFAULT_SIZE})")
    p.add_argument("--seed", type=SEED)
    p.add_argument("--validation", type=FRACTION)
    p.add_argument("--epochs", type=COUNT)
    p.add_argument("--lr", type=POSITIVE)
    p.add_argument("--batch-size", type=COUNT)
    p.add_argument("--r", type=COUNT)
    p.add_argument("--lora-alpha", type=_alpha)
    p.add_argument("--lora-dropout", type=FRACTION)
    p.add_argument("--target-modules", type=_modules)
    p.add_argument("--use-dora", action="store_true", default=None,
                   help="DoRA (PEFT's use_dora) instead of plain LoRA")
    p.add_argument("--label-smoothing", type=FRACTION)
    p.add_argument("--max-length", type=MAX_LENGTH)
    p.add_argument("--augment", type=SHARE,
                   help="share of the training tabs added again rewritten: on a made-up domain, "
                        "without title, or without path (default 0)")
    p.add_argument("--backend", choices=["numpy", "gpu"], default="numpy")
    p.set_defaults(fn=cmd_train)

    p = commands.add_parser("eval", help="accuracy, per-class F1, confusion, the mistakes, latency and sizes on labelled tabs")
    p.add_argument("--data", required=True, help='JSONL lines {"url", "title", "label"}')
    p.add_argument("--adapter", help="adapter directory (default: the one shipped with py_engine)")
    p.add_argument("--model", type=model_dir, default="minilm",
                   help='base checkpoint directory (f16/int8 shipped ones too), or "minilm"')
    p.add_argument("--backend", choices=["numpy", "gpu"], default="numpy")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", help="write the confusion matrix as a PNG here")
    p.add_argument("--model-only", action="store_true",
                   help="the model's answers alone (by default the rules answer for tabs the "
                        "model is unsure of, as in the extension)")
    p.set_defaults(fn=cmd_eval)

    p = commands.add_parser("deploy", help="copy the model, adapter, categories and rules for the extension, then verify")
    p.add_argument("--to", required=True, help="directory to write (new, empty, or an earlier deploy)")
    p.add_argument("--adapter", help="adapter directory (default: the one shipped with py_engine)")
    p.add_argument("--model", type=model_dir, default="minilm")
    p.add_argument("--base-dtype", choices=["auto", "f16", "int8", "int8-embeddings"], default="auto",
                   help="how the base weights are stored (auto: the smallest whose accuracy on the "
                        "evaluation data stays within 0.5 points of f32)")
    p.add_argument("--data", help="labelled tabs that decide --base-dtype auto and are checked "
                                  "(default: the evaluation set of a source checkout)")
    p.set_defaults(fn=cmd_deploy)
    return tabs


def _check_out(path, kind, *protected):
    from py_engine.formats.output_dir import check_output_dir

    return check_output_dir(path, protected=[p for p in protected if p is not None], kind=kind)


# --- generate ------------------------------------------------------------------------------------

def cmd_generate(args):
    from py_engine.formats.output_dir import write_files
    from .generator import generate
    from .tab_data import tabs_bytes

    _check_out(args.out, "a dataset")
    train, held, stats = generate(args.size, args.seed, args.validation)
    if not train:
        raise ValueError(f"--size {args.size} with --validation {args.validation} leaves no "
                         "training tabs: give a larger --size or a smaller --validation")
    files = {f"train.{args.format}": tabs_bytes(train, args.format), "stats.json": _json_bytes(stats)}
    if held:
        files[f"validation.{args.format}"] = tabs_bytes(held, args.format)
    write_files(args.out, files, kind="a dataset")
    print(f"wrote {len(train)} training and {len(held)} validation tabs from {stats['domain_count']} "
          f"domains to {args.out}", file=sys.stderr)
    return 0


def _json_bytes(value):
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --- train ---------------------------------------------------------------------------------------

TRAIN_OPTIONS = ("size", "seed", "validation", "epochs", "lr", "batch_size", "r", "lora_alpha",
                 "lora_dropout", "target_modules", "label_smoothing", "max_length", "augment",
                 "use_dora")


def _train_config(args):
    from py_engine.cli import given_options
    from .train import TabTrainConfig

    return TabTrainConfig(**given_options(args, *TRAIN_OPTIONS))


def _command(args, names):
    """The `py-engine tabs train` command line of the options given (the model by name when it
    is minilm), as the training record keeps it."""
    parts = ["py-engine", "tabs", "train"]
    for name in names:
        value = getattr(args, name, None)
        if value is None or (name == "backend" and value == "numpy"):
            continue
        if name == "model":
            value = "minilm" if _is_minilm(value) else value
        flag = f"--{name.replace('_', '-')}"
        if value is True:           # a switch (--use-dora)
            parts.append(flag)
            continue
        shown = ",".join(value) if isinstance(value, list) else value
        parts += [flag, str(shown)]
    return " ".join(parts)


def _dataset_rows(directory):
    """(train rows, validation rows) of a directory `tabs generate` wrote (JSONL format)."""
    from py_engine.data.classification import DataError
    from .tab_data import read_tabs

    directory = Path(directory)
    if not (directory / "train.jsonl").is_file():
        raise DataError(f"--data {directory}: no train.jsonl there (give a directory "
                        "`py-engine tabs generate --format jsonl` wrote)")
    rows = lambda name: [{"url": t.url, "title": t.title, "label": t.label}
                         for t in read_tabs(directory / name)]
    held = rows("validation.jsonl") if (directory / "validation.jsonl").is_file() else []
    return rows("train.jsonl"), held


def cmd_train(args):
    from py_engine.cli import UsageError
    from py_engine.gpu import run_sync
    from .categories import Categories
    from .evaluate import eval_summary
    from .tab_data import EVAL_FILE
    from .train import CATEGORIES_FILE, TRAINING_RECORD, train_tabs

    config = _train_config(args)
    if args.data and any(getattr(args, k) is not None for k in ("size", "validation")):
        raise UsageError("--size and --validation describe generated data; --data gives its own")
    _check_out(args.out, "a model", args.model, args.data)
    data = _dataset_rows(args.data) if args.data else None
    categories = Categories.default()
    unknown = sorted({r["label"] for rows in data or () for r in rows} - set(categories.names()))
    if unknown:
        raise UsageError(f"--data {args.data}: labels {unknown} are not categories "
                         f"({', '.join(categories.names())})")
    device = _device(args.backend)

    def progress(step):
        if step.step % 20 == 0:
            print(json.dumps({"step": step.step, "epoch": step.epoch, "loss": round(step.loss, 4),
                              "accuracy": round(step.accuracy, 4)}), file=sys.stderr, flush=True)

    base = "sentence-transformers/all-MiniLM-L6-v2" if _is_minilm(args.model) else str(args.model)
    clf, record = run_sync(train_tabs(args.model, config, categories, args.backend, device, data,
                                      on_step=progress, base_model=base))
    record["command"] = _command(args, ["out", "model", "data", *TRAIN_OPTIONS, "backend"])
    if EVAL_FILE.is_file():
        record["eval"] = run_sync(eval_summary(clf, EVAL_FILE))
    run_sync(clf.save(args.out, extra_files={TRAINING_RECORD: _json_bytes(record),
                                             CATEGORIES_FILE: categories.to_json().encode("utf-8")}))
    shown = {k: record[k] for k in ("train_seconds", "validation", "eval") if k in record}
    print(json.dumps(shown, ensure_ascii=False), file=sys.stderr)
    print(f"saved adapter to {args.out}", file=sys.stderr)
    return 0


def _is_minilm(path):
    from py_engine.cli import model_dir

    return Path(path).resolve() == Path(model_dir("minilm")).resolve()


def _device(backend):
    if backend != "gpu":
        return None
    from py_engine.cli import _open

    return _open("high-performance")


# --- eval ----------------------------------------------------------------------------------------

def cmd_eval(args):
    from py_engine.cli import UsageError
    from py_engine.gpu import run_sync
    from .answer import UNSURE_BELOW
    from .evaluate import evaluate_tabs, print_report
    from .model import DEFAULT_ADAPTER
    from .plot import write_confusion_png
    from .tab_data import read_tabs

    adapter = args.adapter or DEFAULT_ADAPTER
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot {args.plot}: give a .png file name")
        if plot.is_dir() or not plot.resolve().parent.is_dir():
            raise UsageError(f"--plot {args.plot}: not a file in an existing directory")
    tabs = read_tabs(args.data)
    report = run_sync(evaluate_tabs(args.model, adapter, tabs, backend=args.backend,
                                    device=_device(args.backend), source=args.data,
                                    unsure_below=0.0 if args.model_only else UNSURE_BELOW))
    if args.plot:
        write_confusion_png(report["confusion"], args.plot)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print_report(report)
    return 0


# --- deploy --------------------------------------------------------------------------------------

def cmd_deploy(args):
    from py_engine.gpu import run_sync
    from .deploy import deploy
    from .model import DEFAULT_ADAPTER
    from .tab_data import EVAL_FILE, read_tabs

    adapter = args.adapter or DEFAULT_ADAPTER
    data = args.data or EVAL_FILE
    tabs = read_tabs(data)
    result = run_sync(deploy(args.to, args.model, adapter, tabs, base_dtype=args.base_dtype,
                             protected=[args.model, adapter, data]))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
