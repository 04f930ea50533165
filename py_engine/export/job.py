"""`py-engine export-job`: a training job for transformers + PEFT + accelerate, for when a
dataset or a model outgrows the browser. The same data and adapter formats go out, the same
LoRA comes back.

    py-engine export-job --model DIR|PRESET --data FILE --out DIR [--adapter DIR]
                         [--validation FILE] [training options as for train]
                         [--problem-type single_label_classification|multi_label_classification]
                         [--precision no|bf16|fp16] [--processes N] [--gradient-checkpointing]
    accelerate launch --config_file DIR/accelerate.yaml DIR/train.py

The folder holds the dataset (data/train.jsonl: `messages` conversations and {"text"} lines
for chat models, as TRL and PEFT's examples read them; {"text", "label"} lines for
classifiers, with "targets" (one per label) for a multi-label one's; {"input", "target"}
pairs for a T5 encoder-decoder such as FLAN-T5), the LoRA adapter to start from (adapter/:
adapter_config.json with these hyperparameters, and the weights: --adapter's, or the ones
py_engine would start from for --seed), job.json (the base,
the task, the training options), train.py (transformers' Trainer with PEFT; it trains what
py_engine trains: the same tokens, batches and loss), an accelerate config, presets.json (bases
train.py --base can switch to: Llama 3 8B, Mistral 7B, Phi-3 mini, TinyLlama, SmolLM2,
FLAN-T5 small and base) and a README with the commands. `accelerate launch` runs it
unchanged on one GPU or many (CPU processes over gloo on a machine without one); the adapter
it writes in output/adapter loads back into py_engine, the page included (chat models and
classifiers), and training continues from it there.

Every path and option is checked before anything is written; --out must be new, empty or
written by py_engine (so a job folder that holds a run's output is never replaced).
"""

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..labels import MULTI_LABEL, SINGLE_LABEL
from .job_presets import PRESETS, presets_json

JOB_SCRIPT = "train.py"
PRECISIONS = ("no", "bf16", "fp16")
# job.json's task of each kind of model (cli.model_kind's names), and its adapters' PEFT task.
TASKS = {"decoder": "causal_lm", "encoder": "classification", "seq2seq": "seq2seq"}
KINDS = {task: kind for kind, task in TASKS.items()}
PEFT_TASKS = {"decoder": "CAUSAL_LM", "encoder": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM"}
KIND_NAMES = {"decoder": "a chat model (a decoder)", "encoder": "a classifier (BERT family)",
              "seq2seq": "a T5 encoder-decoder"}
# What the job was checked with: requirements.txt of the folder.
# the classifiers a job trains (its train.py's losses: cross-entropy, or BCE per label)
JOB_PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")
REQUIREMENTS = ("torch==2.13.0", "transformers==5.23.0", "peft==0.21.2", "accelerate==1.15.0",
                "safetensors==0.8.0")


def add_export_job_parser(sub, add_training_options, model_dir, count, fraction):
    """The `export-job` subcommand, on the `py-engine` parser's subparsers."""
    p = sub.add_parser("export-job", help="a training job for transformers + PEFT + accelerate "
                                          "(one GPU or many)",
                       description="\n\n".join(__doc__.split("\n\n")[1:4]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=model_dir,
                   help=f"a Hugging Face checkpoint directory, or a preset: {', '.join(PRESETS)}")
    p.add_argument("--data", required=True,
                   help='JSONL: {"text", "label"} for classifiers; messages, Alpaca, '
                        'prompt/response or {"text"} lines for chat models; {"input", '
                        '"target"}, Alpaca, prompt/response or messages lines for T5')
    p.add_argument("--out", required=True, help="the job folder: new, empty, or py_engine's")
    p.add_argument("--adapter", help="a PEFT LoRA adapter to continue training (from the page, "
                                     "train, or an earlier job)")
    p.add_argument("--validation", help="JSONL scored after each epoch")
    add_training_options(p)
    p.add_argument("--label-smoothing", type=fraction,
                   help="single-label classifiers, chat models and T5")
    p.add_argument("--problem-type", choices=list(JOB_PROBLEM_TYPES),
                   help="classifiers: single_label_classification (the default, or --adapter's "
                        "kind: one label per text) or multi_label_classification (\"label\" a "
                        "list of names or {name: target in [0, 1]}; a sigmoid per label)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="mixed precision on the GPU (default: bf16 for presets, no (f32) for a "
                        "checkpoint directory, as py_engine computes)")
    p.add_argument("--processes", type=count, default=1,
                   help="processes (GPUs) in accelerate.yaml (default 1; --num_processes at "
                        "launch overrides it)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass (presets of 7-8B models "
                        "turn it on)")
    p.set_defaults(fn=cmd_export_job)


def cmd_export_job(args):
    import sys

    from ..formats.output_dir import write_output_dir

    job = check_job(args)
    files = job_files(job)

    def fill(staging):
        for name, data in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    write_output_dir(args.out, fill, job.protected, kind="a training job")
    counts = f"{len(job.data)} examples" + (f", {len(job.validation)} for validation"
                                            if job.validation else "")
    print(f"wrote {args.out} ({counts}; base {job.base}); run it with:\n"
          f"  accelerate launch --config_file {Path(args.out) / 'accelerate.yaml'} "
          f"{Path(args.out) / JOB_SCRIPT}", file=sys.stderr)
    return 0


@dataclass
class Job:
    """What check_job found: everything job_files writes."""

    kind: str                   # "decoder", "encoder" or "seq2seq" (cli.model_kind's)
    base: str                   # the checkpoint's absolute path, or a preset's Hub id
    preset: object              # a BasePreset, or None
    preset_name: str
    config: object              # CausalTrainConfig (decoders, T5) or ClassifierTrainConfig
    lora: object                # LoraConfig
    adapter_files: dict         # the adapter to start from: {file name: bytes}
    labels: list                # classifiers' label names, else None
    problem_type: str           # classifiers' kind of head (JOB_PROBLEM_TYPES), else None
    data: list                  # ChatExamples, Examples or Seq2SeqExamples
    validation: list
    precision: str
    gradient_checkpointing: bool
    processes: int
    protected: dict             # the inputs --out may not touch
    dropout: float = None       # the model's own dropout rates in training (None: the checkpoint's)
    chat_template: str = None   # the chat template --adapter's folder carries (py_engine uses it)


def check_job(args):
    """Every path and option, before anything is written; a Job."""
    from ..cli import UsageError, model_kind, refuse_options

    local = Path(args.model).is_dir()
    if not local and args.model not in PRESETS:
        if Path(args.model).exists():
            model_kind(args.model)          # says what is wrong with it
        raise UsageError(f"--model {args.model}: no model directory there, and not a preset "
                         f"({', '.join(PRESETS)})")
    preset = None if local else PRESETS[args.model]
    kind = model_kind(args.model, args.max_length, seq2seq=True) if local else \
        KINDS[preset.task]
    if kind != "encoder":
        refuse_options(args, ("problem_type",),
                       f"only for classifiers; {args.model} is {KIND_NAMES[kind]}")
    else:
        refuse_options(args, ("neftune_noise_alpha",), f"only for chat models and T5; "
                       f"{args.model} is {KIND_NAMES[kind]}")
    if kind == "seq2seq":
        refuse_options(args, ("neftune_noise_alpha",), "not for T5 jobs: transformers' Trainer "
                       "hooks the shared embedding, which transformers 5's T5 stacks do not call "
                       "(each embeds with a module of its own), so the job would train without "
                       "it; py-engine train adds it")
    config = _train_config(args, kind)
    if local:       # as py_engine does, the checkpoint's positions bound max_length
        from ..formats.json_file import read_json_object

        values = read_json_object(Path(args.model) / "config.json")
        if kind != "encoder":       # in its family's names (GPT-2's and T5's n_positions)
            from ..models.decoders import decoder_config

            values = vars(decoder_config(values))
        positions = values.get("max_position_embeddings")
        if type(positions) is int and config.max_length > positions:
            config = replace(config, max_length=positions)
    lora, adapter_files, adapter_labels, problem_type = _adapter(args, kind, preset)
    if problem_type == MULTI_LABEL:
        refuse_options(args, ("label_smoothing",), "only for single-label classifiers; a "
                       "multi-label job trains a sigmoid per label")
    examples, validation, labels = _data(args, kind, adapter_labels, problem_type)
    if local and kind == "seq2seq":
        # train.py reads the tokenizer.json py_engine reads: a T5 without one is refused here
        from ..tokenizers.checkpoint import seq2seq_tokenizer

        seq2seq_tokenizer(args.model)
    chat_template = None
    if local:
        adapter_files = adapter_files or _initial_adapter(args.model, kind, lora, labels,
                                                          config.seed, problem_type)
        _check_adapter_fits(args.model, kind, adapter_files, labels)
        if kind == "decoder" and args.adapter:
            from ..tokenizers.checkpoint import adapter_chat_template

            template = adapter_chat_template(args.adapter, args.model)
            chat_template = template.source if template else None
    from ..formats.output_dir import check_output_dir

    protected = {"the model directory": args.model if local else None,
                 "the data file": args.data, "the validation file": args.validation,
                 "the adapter": args.adapter}
    check_output_dir(args.out, protected=protected, kind="a training job")
    base = str(Path(args.model).resolve()) if local else preset.model_id
    return Job(kind=kind, base=base, preset=preset, preset_name=None if local else args.model,
               config=config, lora=lora, adapter_files=adapter_files or {}, labels=labels,
               problem_type=problem_type, data=examples, validation=validation,
               precision=args.precision or ("bf16" if preset else "no"),
               gradient_checkpointing=args.gradient_checkpointing, processes=args.processes,
               protected=protected, dropout=args.dropout, chat_template=chat_template)


def _train_config(args, kind):
    from ..cli import train_options
    from ..train.config import CausalTrainConfig, ClassifierTrainConfig

    if kind == "encoder":
        return ClassifierTrainConfig(**train_options(args, "label_smoothing"))
    return CausalTrainConfig(**train_options(args, "neftune_noise_alpha", "label_smoothing"))


def _decoder_targets(model_dir):
    """PEFT's default LoRA targets for the decoder (or T5) family of a checkpoint directory."""
    from ..models.checkpoint import DecoderCheckpoint

    return DecoderCheckpoint.read_config(model_dir).lora_targets


def _adapter(args, kind, preset):
    """(LoraConfig, the adapter's files or None, its labels or None, the classifier's kind of
    head or None): --adapter's (its kind of head must be --problem-type's where that is
    given), or a new adapter of the LoRA options given (py_engine's defaults for the rest;
    --problem-type's head, single-label by default)."""
    from ..cli import LORA_OPTIONS, check_adapter, lora_options, refuse_options
    from ..models.checkpoint import Checkpoint
    from ..models.lora_config import LoraConfig

    task = PEFT_TASKS[kind]
    language_model = kind != "encoder"      # no head of its own to train (modules_to_save)
    refuse_options(args, ("modules_to_save", "trainable_token_indices"), "not for training "
                   "jobs: their PEFT scripts train the LoRA (and a classifier's head) alone")
    if args.adapter is None:
        targets = preset.target_modules if preset else \
            _decoder_targets(args.model) if language_model else \
            Checkpoint.read_config(args.model).classifier_targets
        lora = lora_options(args, 2 if language_model else 1, targets, task_type=task) or \
            LoraConfig(r=8, lora_alpha=16 if language_model else 8,
                       target_modules=list(targets), task_type=task)
        if language_model:
            lora.modules_to_save = []
        lora.base_model_name_or_path = preset.model_id if preset else str(Path(args.model))
        return lora, None, None, None if language_model else args.problem_type or SINGLE_LABEL
    refuse_options(args, LORA_OPTIONS, f"the job continues {args.adapter}, whose LoRA settings it keeps")
    check_adapter(args.adapter, task)
    from ..formats.head_config import HEAD_CONFIG, problem_type_of, read_head_config
    from ..formats.peft_adapter import READ_FILES, load_adapter
    from ..models.classifiers import adapter_pooling

    config, _, labels = load_adapter(args.adapter)
    problem_type = None
    if kind == "encoder":       # a preset is no classifier; a local checkpoint says how it pools
        model_config = Checkpoint.read_config(Path(args.model) / "config.json")
        pooling = adapter_pooling(args.model, args.adapter, config=model_config)[0]
        wanted = model_config.default_pooling
        if pooling != wanted:
            raise ValueError(f"{args.adapter} pools with {pooling}, and transformers' classifier "
                             f"of {args.model} pools with {wanted}: the job cannot continue it "
                             "(train it with py-engine train)")
        problem_type = problem_type_of(read_head_config(args.adapter),
                                       f"{args.adapter}/{HEAD_CONFIG}")
        if problem_type not in JOB_PROBLEM_TYPES:
            raise ValueError(f"{args.adapter} holds a {problem_type} head: the job trains "
                             "single-label and multi-label classifiers (train it with py-engine "
                             "train)")
        if args.problem_type not in (None, problem_type):
            raise ValueError(f"{args.adapter} holds a {problem_type} head, not a "
                             f"{args.problem_type} one (its {HEAD_CONFIG})")
    lora = LoraConfig.from_language_model_dict(config, _decoder_targets(args.model)) \
        if language_model else LoraConfig.from_peft_dict(config)
    files = {name: (Path(args.adapter) / name).read_bytes() for name in READ_FILES
             if (Path(args.adapter) / name).is_file()}
    return lora, files, labels, problem_type


def _data(args, kind, known_labels, problem_type=None):
    """(examples, validation examples or None, label names or None), read and checked (a
    classifier's labels as `problem_type` reads them)."""
    from ..cli import UsageError, input_file

    input_file(args.data, "data file")
    if args.validation:
        input_file(args.validation, "validation file")
    if kind == "decoder":
        from ..data.chat import read_chat_jsonl

        return (read_chat_jsonl(args.data),
                read_chat_jsonl(args.validation) if args.validation else None, None)
    if kind == "seq2seq":
        from ..data.seq2seq import read_seq2seq_jsonl

        return (read_seq2seq_jsonl(args.data),
                read_seq2seq_jsonl(args.validation) if args.validation else None, None)
    from ..data.classification import given_names, label_names, read_jsonl

    examples = read_jsonl(args.data, problem_type=problem_type)
    validation = read_jsonl(args.validation, problem_type=problem_type) if args.validation \
        else None
    labels = label_names(examples, known_labels, problem_type)
    unknown = sorted(given_names(validation or (), problem_type) - set(labels))
    if unknown:
        raise UsageError(f"{args.validation}: labels {unknown} are not among the training "
                         f"data's {labels}")
    return examples, validation, labels


def _model(model_dir, kind, lora, num_labels, pooler_lora=True, with_checkpoint=False):
    """The model's structure (which tensors train, their shapes), from its files' headers
    (pooler_lora: see BertClassifier); with_checkpoint: (model, its checkpoint)."""
    if kind != "encoder":       # decoders and T5 (decoder_model builds either)
        from ..models.checkpoint import DecoderCheckpoint
        from ..models.decoders import decoder_model

        checkpoint = DecoderCheckpoint.load(model_dir)
        model = decoder_model(checkpoint.config, lora)
    else:
        from ..models.checkpoint import Checkpoint
        from ..models.classifiers import classifier_model

        checkpoint = Checkpoint.load(model_dir)
        model = classifier_model(checkpoint.config, lora, num_labels,
                                 train_pooler=not checkpoint.has_pooler, pooler_lora=pooler_lora)
    return (model, checkpoint) if with_checkpoint else model


def _initial_adapter(model_dir, kind, lora, labels, seed, problem_type=None):
    """The adapter py_engine starts training from with this seed, as files (a fine-tuned
    classifier's head rows of `problem_type`'s kind for the labels it holds, as
    TextClassifier.create starts)."""
    from ..formats.peft_adapter import adapter_files
    from ..train.init import initial_trainable

    model, checkpoint = _model(model_dir, kind, lora, len(labels or ()), with_checkpoint=True)
    values = initial_trainable(model, seed, checkpoint, labels if kind == "encoder" else None,
                               problem_type or SINGLE_LABEL)
    return adapter_files(model.peft_dict(), values, labels,
                         where="the job's adapter")


def _check_adapter_fits(model_dir, kind, files, labels):
    """The adapter's tensors are those the model trains with its LoRA settings."""
    from ..formats.peft_adapter import read_adapter_files
    from ..models.lora_config import LoraConfig
    from ..train.init import merge_loaded

    config, tensors, _ = read_adapter_files(files, "the adapter")
    lora = LoraConfig.from_peft_dict(config) if kind == "encoder" else \
        LoraConfig.from_language_model_dict(config, _decoder_targets(model_dir))
    from ..models.bert import holds_pooler_lora

    merge_loaded(_model(model_dir, kind, lora, len(labels or ()), holds_pooler_lora(tensors)), {},
                 tensors, "the adapter")


# ---- the folder ----------------------------------------------------------------------------------

def job_files(job):
    """{path in the folder: bytes}."""
    from ..data.chat import CHATML_TEMPLATE
    from ..data.datasets import dumps_dataset
    from ..tokenizers import turn_spans
    from ..tokenizers.chat_template import DEFAULT_END_TOKENS
    from ..train import batching

    task = TASKS[job.kind]
    data = {"train": "data/train.jsonl"}
    files = {data["train"]: _dataset(job, job.data, dumps_dataset)}
    if job.validation:
        data["validation"] = "data/validation.jsonl"
        files[data["validation"]] = _dataset(job, job.validation, dumps_dataset)
    settings = {k: v for k, v in job.config.as_dict().items()
                if k in ("epochs", "max_steps", "lr", "batch_size", "grad_accum", "warmup_ratio",
                         "warmup_steps", "lr_scheduler_type", "lr_scheduler_kwargs",
                         "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2",
                         "adam_epsilon", "seed", "max_length",
                         "pad_multiple", "label_smoothing", "neftune_noise_alpha")}
    spec = {"task": task, "base": job.base, "preset": job.preset_name, "labels": job.labels,
            "problem_type": job.problem_type, "train": settings, "data": data,
            "dtype": job.preset.dtype if job.preset else "float32",
            "precision": job.precision,
            "gradient_checkpointing": job.gradient_checkpointing or bool(
                job.preset and job.preset.gradient_checkpointing),
            "dropout": job.dropout}
    if job.kind == "decoder":       # how conversations are rendered and their answers found
        spec.update(end_tokens=list(DEFAULT_END_TOKENS),
                    fallback_chat_template=_fallback_template(job) or CHATML_TEMPLATE)
        if job.chat_template:       # the adapter folder's, over the base's (as py_engine reads it)
            spec["chat_template"] = job.chat_template
    adapter = dict(job.adapter_files)
    adapter["adapter_config.json"] = _json(job.lora.to_peft_dict()) \
        if "adapter_config.json" not in adapter else adapter["adapter_config.json"]
    files.update({f"adapter/{name}": data for name, data in adapter.items()})
    here = Path(__file__).parent
    files.update({
        "job.json": _json(spec),
        "presets.json": _json(presets_json()),
        JOB_SCRIPT: (here / "job_train.py").read_bytes(),
        "batching.py": Path(batching.__file__).read_bytes(),
        "turn_spans.py": Path(turn_spans.__file__).read_bytes(),
        "accelerate.yaml": _accelerate_config(job.processes, job.precision).encode(),
        "requirements.txt": ("\n".join(REQUIREMENTS) + "\n").encode(),
        "README.md": _readme(job).encode(),
    })
    return files


def _fallback_template(job):
    """The conversation format py_engine gives a local checkpoint with no chat template, where
    its family has one (GPT-2's: DialoGPT's turns joined by the end-of-text token); None for
    the others (ChatML) and for presets."""
    if job.kind != "decoder" or job.preset is not None:
        return None
    from ..formats.json_file import read_json_object
    from ..tokenizers.checkpoint import family_template

    config = Path(job.base) / "tokenizer_config.json"
    template = family_template(job.base, read_json_object(config) if config.is_file() else {})
    return template.source if template else None


def _dataset(job, examples, dumps_dataset):
    """A data file's text; a multi-label line holds its "targets" too, one per label as
    py_engine trains them (data.classification.label_targets), which train.py reads."""
    from ..data.classification import label_targets

    if job.kind == "decoder":
        return dumps_dataset(examples, "messages").encode()
    if job.kind == "seq2seq":   # every record format py_engine reads, as the pair it trains
        lines = [{"input": e.input, "target": e.target} for e in examples]
    else:
        multi = job.problem_type == MULTI_LABEL
        lines = [dict({"text": e.text, "label": e.label},
                      **({"targets": label_targets(e.label, job.labels, MULTI_LABEL)}
                         if multi else {}),
                      **({"text_pair": e.pair} if e.pair else {})) for e in examples]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


def _json(value):
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


def _accelerate_config(processes, precision):
    return f"""\
# accelerate launch --config_file accelerate.yaml train.py
# One process per GPU; --num_processes N at launch overrides num_processes. On a machine
# without a GPU the same launch runs the processes on the CPU, talking over gloo.
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
machine_rank: 0
num_processes: {processes}
gpu_ids: all
mixed_precision: '{precision}'
rdzv_backend: static
same_network: true
main_training_function: main
use_cpu: false
"""


# The README's words for each kind of model: the task, what data/*.jsonl holds, where
# py_engine loads the adapter.
README_TASKS = {
    "decoder": ("chat model (causal LM)",
                '`messages` conversations and {"text"} lines (TRL\'s SFTTrainer reads them)',
                "`py-engine generate|score --adapter output/adapter`, ChatModel.load"),
    "encoder": ("classifier", '{"text", "label"} lines',
                "`py-engine predict --adapter output/adapter`, TextClassifier.load"),
    "seq2seq": ("sequence to sequence (T5 encoder-decoder)",
                '{"input", "target"} pairs: each side tokenized with tokenizer.json (T5 appends '
                '</s>), every target token trained',
                "`py-engine generate|score --adapter output/adapter`, Seq2SeqModel.load"),
}


def _readme(job):
    import textwrap

    base = f"the preset {job.preset_name} ({job.base})" if job.preset else job.base
    back = "" if not job.preset or job.preset.py_engine else (
        "\nThis base is not a Llama-family model, so its adapter stays with PEFT: py_engine "
        "does not run it.\n")
    task, data, loads = README_TASKS[job.kind]
    # the page runs chat models and classifiers; T5 runs in py_engine on the host
    page = "" if job.kind == "seq2seq" else "the page's adapter import, "
    presets = [name for name, preset in PRESETS.items() if preset.task == TASKS[job.kind]]
    switch = "" if not presets else \
        f"    accelerate launch train.py --base {presets[0]}".ljust(79) + "# a preset's base\n"
    examples = f"{len(job.data)} training examples in data/train.jsonl" + (
        f", {len(job.validation)} in data/validation.jsonl" if job.validation else "") + \
        ":\n" + textwrap.fill(f"{data}.", 95)
    output = textwrap.fill(
        "The adapter lands in output/adapter (PEFT's format; `--output DIR` moves it), a line "
        "per step in output/log.jsonl. It loads where this job's adapter came from: PEFT "
        f"(PeftModel.from_pretrained), py_engine ({loads}, whose training continues from "
        f"it), {page}and `py-engine export-job --adapter output/adapter` for a next job.", 95)
    return f"""\
# A LoRA training job written by py-engine export-job

Base: {base}. Task: {task}.
{examples}

    pip install -r requirements.txt
    accelerate launch --config_file accelerate.yaml train.py                  # GPUs: num_processes
    accelerate launch --config_file accelerate.yaml --num_processes 4 train.py
    accelerate launch --cpu train.py                                           # one CPU process
{switch}
{output}
{back}
job.json holds the hyperparameters (py_engine's names; train.py maps them onto
transformers' TrainingArguments), adapter/ the LoRA to start from, presets.json the bases
--base can name. The batches are py_engine's epoch plan (batching.py); each is the global
batch, split across the processes, so any number of processes takes the same steps.
"""
