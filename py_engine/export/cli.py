"""`py-engine export`: a fine-tuned model for another engine.

    py-engine export --format merged    --model DIR [--adapter DIR] --out DIR
    py-engine export --format gguf      --model DIR [--adapter DIR] --out DIR [--quant f16|q8_0|q4_0|f32]
    py-engine export --format gguf-lora --model DIR --adapter DIR --out DIR [--quant f32|f16]
    py-engine export --format onnx      --model DIR [--adapter DIR] --out DIR [--quant f32|int8]

merged: a Hugging Face checkpoint with the adapter folded in (chat models, T5 encoder-decoders
and [CLS]-pooled classifiers). gguf: OUT/model.gguf for llama.cpp (chat models of the Llama,
Mistral, Qwen2, Qwen3, Phi-3, Gemma, Gemma 3, Phi-2 and GPT-2 families, and T5) and OUT/Modelfile for `ollama
create` (chat models). gguf-lora: OUT/adapter.gguf for llama.cpp's --lora over the base model's
GGUF (the families gguf writes). onnx: OUT/model.onnx (classifiers: the BERT family's, ModernBERT's, a decoder's read
as a sequence classifier), with the labels and tokenizer files beside it.

Every path and option is checked before anything is loaded; OUT must be new, empty, or written
by py_engine before (never the model or the adapter), and is replaced only when complete. A
progress line per group of tensors goes to stderr; tensors holding NaN or infinity stop the
export before anything is written.
"""

import argparse
import sys
from pathlib import Path

FORMATS = ("merged", "gguf", "gguf-lora", "onnx")
QUANTS = {"merged": ("f32",), "gguf": ("f16", "q8_0", "q4_0", "f32"), "gguf-lora": ("f32", "f16"),
          "onnx": ("f32", "int8")}
KINDS = {"merged": ("decoder", "encoder", "seq2seq"), "gguf": ("decoder", "seq2seq"),
         "gguf-lora": ("decoder", "seq2seq"),
         "onnx": ("encoder",)}
KIND_NAMES = {"decoder": "chat model", "encoder": "classifier", "seq2seq": "T5 encoder-decoder"}
ADAPTER_TASKS = {"decoder": "CAUSAL_LM", "encoder": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM"}
WHY = {"gguf": "GGUF holds chat models and T5; export a classifier with --format onnx or merged",
       "gguf-lora": "GGUF adapters are for chat models and T5; export a classifier with "
                    "--format onnx or merged",
       "onnx": "the ONNX export is for classifiers; export a chat model or a T5 "
               "with --format gguf or merged"}


def add_export_parser(sub):
    """The `export` subcommand, on the `py-engine` parser's subparsers."""
    from ..cli import model_dir

    p = sub.add_parser("export", help="a merged checkpoint, GGUF (llama.cpp, Ollama) or ONNX",
                       description="\n\n".join(__doc__.split("\n\n")[1:3]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--model", required=True, type=model_dir,
                   help='Hugging Face checkpoint directory, or "minilm" (all-MiniLM-L6-v2)')
    p.add_argument("--adapter", help="a PEFT LoRA adapter trained on --model (classifiers need "
                                     "one, but for a fine-tuned classifier checkpoint)")
    p.add_argument("--out", required=True, help="directory to write: new, empty, or py_engine's")
    p.add_argument("--quant", help="gguf: f16 (default), q8_0, q4_0, f32; gguf-lora: f32 "
                                   "(default), f16; onnx: f32 (default), int8; merged: f32")
    p.add_argument("--name", help="gguf: the model's name in the file (default: --out's name)")
    p.set_defaults(fn=cmd_export)


def check_export(args):
    """Every path and option, before anything is loaded; returns (model kind, quant)."""
    from ..cli import UsageError, check_adapter, model_kind, names_classifier, reads_as_classifier
    from ..formats.output_dir import check_output_dir

    kind = model_kind(args.model, seq2seq=True)
    if reads_as_classifier(args.model, kind, args.adapter):
        # a decoder's sequence classifier (models/decoder_classifier.py)
        if args.format not in ("merged", "onnx"):
            what = (f"{args.model} is a decoder's fine-tuned sequence classifier"
                    if args.adapter is None else f"{args.adapter} makes {args.model} a sequence "
                    "classifier (a SEQ_CLS adapter)")
            raise UsageError(f"{what}: --format merged exports it, as transformers' "
                             "...ForSequenceClassification, and --format onnx as an ONNX graph")
        kind = "encoder"
    if kind not in KINDS[args.format]:
        raise UsageError(f"{args.model} is a {KIND_NAMES[kind]} checkpoint: {WHY[args.format]}")
    quant = args.quant or QUANTS[args.format][0]
    if quant not in QUANTS[args.format]:
        raise UsageError(f"--quant {quant} is not a choice for --format {args.format} (choose "
                         f"{', '.join(QUANTS[args.format])})")
    if args.name is not None and not args.format.startswith("gguf"):
        raise UsageError("--name is for --format gguf and gguf-lora")
    # a classifier's head is in the adapter trained on it, but for a fine-tuned classifier's
    needs_adapter = kind == "encoder" and not names_classifier(args.model) or \
        args.format == "gguf-lora"
    if needs_adapter and args.adapter is None:
        what = "the adapter to convert" if args.format == "gguf-lora" else \
            "a classifier's head is in the adapter trained on it, unless --model is a " \
            "fine-tuned classifier (...ForSequenceClassification)"
        raise UsageError(f"--format {args.format} needs --adapter ({what})")
    if args.adapter is not None:
        check_adapter(args.adapter, ADAPTER_TASKS[kind])
        if args.format != "gguf-lora":      # (which refuses lora_bias whatever the layers)
            from .merged import check_lora_biases_merge

            check_lora_biases_merge(args.model, args.adapter, kind)
        else:
            from ..formats.peft_adapter import read_adapter_config
            from ..train.base_init import base_init

            init = base_init(read_adapter_config(args.adapter))
            if init is not None:
                raise UsageError(f"{args.adapter} was trained with init_lora_weights {init!r}, over "
                                 "base weights less its first values, and llama.cpp applies an "
                                 "adapter to the base as it is: export the merged model "
                                 "(--format gguf)")
    if kind == "encoder" and args.format == "merged":
        from ..models.checkpoint import Checkpoint
        from ..models.classifiers import adapter_pooling
        from .merged import check_mergeable

        config = Checkpoint.read_config(Path(args.model) / "config.json")
        pooling = config.default_pooling if args.adapter is None else \
            adapter_pooling(args.model, args.adapter, config=config)[0]
        check_mergeable(kind, pooling, config)
    readable = ("tokenizer.json", "vocab.txt") + (("spm.model", "spiece.model")
                                                  if args.format == "onnx" else ())
    if args.format in ("gguf", "onnx") and not any((Path(args.model) / f).is_file() for f in readable):
        raise FileNotFoundError(f"{args.model} has no tokenizer.json, which the {args.format} "
                                "export needs")
    check_output_dir(args.out, protected=_protected(args),
                     kind="a model" if args.format == "merged" else "an export")
    return kind, quant


def _protected(args):
    return {"the model directory": args.model, "the adapter": args.adapter}


def _progress(label):
    print(f"export: {label}", file=sys.stderr, flush=True)


def _warn(message):
    print(f"py-engine: warning: {message}", file=sys.stderr, flush=True)


def cmd_export(args):
    _, quant = check_export(args)
    out = {"merged": export_merged, "gguf": export_gguf, "gguf-lora": export_gguf_lora,
           "onnx": export_onnx}[args.format](args, quant)
    files = sorted(p for p in Path(out).iterdir() if not p.name.startswith("."))
    sizes = ", ".join(f"{p.name} {_size(p.stat().st_size)}" for p in files)
    print(f"wrote {out} ({sizes})", file=sys.stderr)
    return 0


def _size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def export_merged(args, quant):
    from .merged import load_merged, save_merged

    return save_merged(load_merged(args.model, args.adapter), args.out,
                       list(_protected(args).items()), progress=_progress)


def export_gguf(args, quant):
    from ..formats.output_dir import write_output_dir
    from . import gguf
    from .gguf_llama import gguf_groups, model_writer
    from .merged import load_merged
    from .modelfile import modelfile

    merged = load_merged(args.model, args.adapter)
    writer = model_writer(merged, gguf.TYPE_IDS[quant.upper()], args.name or Path(args.out).name,
                          warn=_warn)
    add_bos = writer.metadata.get("tokenizer.ggml.add_bos_token", (None, False))[1]

    def fill(staging):
        with open(staging / "model.gguf", "wb") as f:
            writer.write(f, progress=_progress, groups=gguf_groups(merged, writer))
        if not getattr(merged.config, "encoder_decoder", False):   # a T5 is no Ollama chat model
            (staging / "Modelfile").write_text(modelfile(merged.tokenizer_dir, "model.gguf", _warn,
                                                         add_bos),
                                               encoding="utf-8")

    return write_output_dir(args.out, fill, list(_protected(args).items()), kind="an export")


def export_gguf_lora(args, quant):
    from ..formats.output_dir import write_output_dir
    from ..formats.peft_adapter import load_adapter
    from ..models.checkpoint import DecoderCheckpoint
    from ..models.lora_config import LoraConfig
    from . import gguf
    from .gguf_llama import adapter_writer
    from .merged import ExportError

    config, tensors, _ = load_adapter(args.adapter)
    if config.get("modules_to_save"):
        raise ExportError(f"{args.adapter}: modules_to_save {config['modules_to_save']!r} trains "
                          "those modules in full beside the LoRA, and llama.cpp's LoRA adapters "
                          "hold lora_a and lora_b only; export the merged model (--format gguf)")
    model_config = DecoderCheckpoint.read_config(args.model)
    lora = LoraConfig.from_language_model_dict(config, model_config.lora_targets)
    writer = adapter_writer(model_config, lora, tensors,
                            gguf.TYPE_IDS[quant.upper()], args.name or Path(args.out).name)

    def fill(staging):
        with open(staging / "adapter.gguf", "wb") as f:
            writer.write(f, progress=_progress)

    return write_output_dir(args.out, fill, list(_protected(args).items()), kind="an export")


def export_onnx(args, quant):
    from .merged import load_merged
    from .onnx_export import save_onnx

    return save_onnx(load_merged(args.model, args.adapter), args.out, quant,
                     list(_protected(args).items()), progress=_progress)
