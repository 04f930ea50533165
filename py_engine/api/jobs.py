"""Fine-tuning jobs: what a setup request asks for (checked before it is queued), and one job's
run on the engine's loop.

    spec = job_spec(models, {"model": "minilm", "options": {"epochs": 2}, "labels": [...],
                             "problem_type": "multi_label_classification"})
    run = JobRun(job, model_dir, backend, device, records, publish, cancelled)
    adapter_model, metrics = await run.train()      # None when cancelled

A job trains a fresh LoRA adapter on the chosen checkpoint over records of the training queue
(those of the given documents, or every record of the model's kind), with the app's defaults
(app/models.py: train_config) and the options given. It only reads the queue, and it writes
nothing until it has finished: a job that fails, diverges or is cancelled leaves the queue and
the last good adapter as they were.
"""

import asyncio
import math

from ..app.models import (RECORD_KINDS, ModelFilesError, check_lora_options, kind_of,
                          load_model_dir, read_model_config)
from ..data.datasets import split_records
from ..data.record import label_names
from ..labels import MULTI_LABEL, SINGLE_LABEL
from ..models.decoders import config_positions
from ..train.config import CausalTrainConfig, ClassifierTrainConfig

# The training options a setup request may give (TrainConfig names); the rest keep the app's.
COMMON_OPTIONS = ("epochs", "max_steps", "lr", "batch_size", "grad_accum", "warmup_ratio",
                  "warmup_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "max_grad_norm",
                  "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "seed", "max_length",
                  "gradient_checkpointing")
CONFIGS = {"classification": (ClassifierTrainConfig, COMMON_OPTIONS + ("label_smoothing",)),
           "causal_lm": (CausalTrainConfig, COMMON_OPTIONS + ("neftune_noise_alpha",
                                                              "label_smoothing")),
           "seq2seq": (CausalTrainConfig, COMMON_OPTIONS + ("neftune_noise_alpha",
                                                            "label_smoothing"))}
SETUP_FIELDS = ("model", "documents", "options", "labels", "validation_split", "problem_type",
                "lora")
# The new adapter's options a setup request may give (PEFT's LoraConfig names); the rest keep
# the app's (app/models.py: job_lora).
LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora",
               "bias", "init_lora_weights", "lora_bias", "exclude_modules", "layers_to_transform",
               "rank_pattern", "alpha_pattern")
# the classifiers a job trains: one label per text, or any number (each label's own sigmoid)
JOB_PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL)
MAX_LABELS = 1000


class JobError(ValueError):
    """A setup request that cannot be run as asked; `status` is the HTTP status to answer."""

    def __init__(self, message, status=422):
        super().__init__(message)
        self.status = status


def model_config(model_dir):
    """(config.json as a dict, the model's kind)."""
    try:
        config = read_model_config(model_dir)
        return config, kind_of(config)
    except ModelFilesError as e:
        raise JobError(str(e), 500) from None


def job_spec(models, request):
    """The job a setup request describes (model, kind, documents or None for the whole queue,
    options, labels, validation_split, problem_type: a classifier's kind of head, single-label
    unless multi_label_classification is asked for; lora: the new adapter's LoRA options),
    every value checked."""
    unknown = sorted(set(request) - set(SETUP_FIELDS))
    if unknown:
        raise JobError(f"unknown field {', '.join(map(repr, unknown))}; setup takes "
                       f"{', '.join(SETUP_FIELDS)}")
    name = request.get("model")
    if name is None and len(models) == 1:
        name = next(iter(models))
    if not isinstance(name, str) or name not in models:
        raise JobError(f"model must be one of {sorted(models)}, got {name!r:.60}",
                       404 if isinstance(name, str) else 422)
    model, kind = model_config(models[name])
    documents = request.get("documents")
    if documents is not None and (not isinstance(documents, list) or not documents or
                                  not all(isinstance(d, str) for d in documents)):
        raise JobError("documents must be a non-empty list of document ids (omit it to train "
                       "on the whole queue)")
    options = request.get("options") or {}
    if not isinstance(options, dict):
        raise JobError(f"options must be an object of training options, got {options!r:.60}")
    config, allowed = CONFIGS[kind]
    wrong = sorted(set(options) - set(allowed))
    if wrong:
        raise JobError(f"unknown training option {', '.join(map(repr, wrong))} for a {kind} "
                       f"model; options are {', '.join(allowed)}")
    try:
        config(**options)
    except ValueError as e:
        raise JobError(str(e)) from None
    positions = config_positions(model)
    if options.get("max_length") is not None and positions is not None and \
            options["max_length"] > positions:
        raise JobError(f"max_length {options['max_length']} is more than the {positions} "
                       f"positions of the {name!r} model (config.json's max_position_embeddings)")
    problem_type = request.get("problem_type")
    if problem_type is not None:
        if kind != "classification":
            raise JobError(f"problem_type is for classifiers; this model is a {kind} model")
        if problem_type not in JOB_PROBLEM_TYPES:
            raise JobError(f"problem_type must be one of {', '.join(JOB_PROBLEM_TYPES)}, got "
                           f"{problem_type!r:.60}")
    problem_type = problem_type or (SINGLE_LABEL if kind == "classification" else None)
    if problem_type == MULTI_LABEL and "label_smoothing" in options:
        raise JobError("label_smoothing is a single-label classifier's option (its softmax's "
                       "targets); a multi-label one learns each label's own target")
    labels = request.get("labels")
    if labels is not None:
        if kind != "classification":
            raise JobError(f"labels are for classifiers; this model is a {kind} model")
        fewest = 2 if problem_type == SINGLE_LABEL else 1
        if not isinstance(labels, list) or not fewest <= len(labels) <= MAX_LABELS or \
                len(set(labels)) != len(labels) or \
                not all(isinstance(x, str) and x.strip() for x in labels):
            raise JobError(f"labels must be a list of {'two' if fewest == 2 else 'one'} or more "
                           "distinct non-empty names")
    lora = _lora_options(request.get("lora"), model, kind)
    split = request.get("validation_split")
    if split is not None and (isinstance(split, bool) or not isinstance(split, (int, float)) or
                              not math.isfinite(split) or not 0 < split < 1):
        raise JobError(f"validation_split must be a fraction in (0, 1), got {split!r:.40}")
    return {"model": name, "kind": kind, "documents": documents, "options": options,
            "labels": labels, "validation_split": split, "problem_type": problem_type,
            "lora": lora}


def _lora_options(lora, model, kind):
    """A setup's "lora" ({LoraConfig field: value}, LORA_FIELDS) checked against the model's
    structure (its config.json `model`; the targets must name its linear layers), or None."""
    if lora is None:
        return None
    if not isinstance(lora, dict):
        raise JobError(f"lora must be an object of LoRA options, got {lora!r:.60}")
    wrong = sorted(set(lora) - set(LORA_FIELDS))
    if wrong:
        raise JobError(f"unknown LoRA option {', '.join(map(repr, wrong))}; lora takes "
                       f"{', '.join(LORA_FIELDS)}")
    try:
        check_lora_options(model, kind, lora)
    except ValueError as e:         # LoraConfigError, LoraTargetError, ConfigError
        raise JobError(f"lora: {e}") from None
    return dict(lora)


class JobCancelled(Exception):
    """The job was cancelled; nothing was written."""


class JobRun:
    def __init__(self, job, model_dir, backend, device, records, publish, cancelled):
        """job: the job's dict (updated as it runs); records: the queue records it trains on;
        publish(job, **changes): report progress; cancelled(): whether to stop."""
        self.job, self.model_dir = job, model_dir
        self.backend, self.device = backend, device
        self.records, self.publish, self.cancelled = records, publish, cancelled

    def _labels(self, records):
        """The job's labels, or the names the records give (a single-label job's: those of
        records of one label)."""
        if self.job["labels"]:
            return list(self.job["labels"])
        multi = self.job.get("problem_type") == MULTI_LABEL
        labels = sorted({name for r in records if multi or isinstance(r.label, str)
                         for name in label_names(r.label)})
        if len(labels) < (1 if multi else 2):
            raise JobError(f"a {'multi-label' if multi else 'single-label'} classifier needs "
                           f"records of {'one label' if multi else 'two labels'} or more; these "
                           f"records have {labels or 'none'}: upload labelled examples, or give "
                           "labels")
        return labels

    async def train(self):
        """(the trained AppModel, its metrics); JobCancelled when cancelled."""
        job = self.job
        records = [r for r in self.records if r.kind == RECORD_KINDS[job["kind"]]]
        if not records:
            raise JobError(f"nothing to train on: no {RECORD_KINDS[job['kind']]} record in "
                           f"{'the documents' if job['documents'] else 'the queue'}", 409)
        labels = self._labels(records) if job["kind"] == "classification" else None
        self.publish(job, phase="loading the model")
        model = await load_model_dir(self.model_dir, job["model"], kind=job["kind"], labels=labels,
                                     backend=self.backend, device=self.device,
                                     problem_type=job.get("problem_type") or SINGLE_LABEL,
                                     lora_options=job.get("lora"))
        usable = [r for r in records if model.unusable(r) is None]
        if not usable:
            raise JobError(f"none of the {len(records)} records can be learned by this model "
                           f"({model.unusable(records[0])})", 409)
        train, validation = usable, []
        if job["validation_split"]:
            v = job["validation_split"]
            parts = split_records(usable, {"train": 1 - v, "validation": v},
                                  seed=job["options"].get("seed", 0))
            train, validation = parts["train"] or usable, parts["validation"]
        config = model.train_config(**job["options"])
        trainer = await model.trainer(model.examples(train), config,
                                      model.examples(validation) or None, None)
        self.publish(job, phase="training", step=0, total_steps=trainer.total_steps,
                     records=len(train), validation_records=len(validation))
        try:
            while not trainer.done:
                if self.cancelled():
                    raise JobCancelled()
                await trainer.run(max_steps=1, stop=self.cancelled)
                if trainer.history:
                    last = trainer.history[-1]
                    self.publish(job, step=trainer.progress.step, epoch=last.epoch,
                                 loss=_number(last.loss), accuracy=_number(last.accuracy),
                                 grad_norm=_number(last.grad_norm))
                await asyncio.sleep(0)            # queries get their turn between steps
            if self.cancelled():
                raise JobCancelled()
            metrics = {"steps": trainer.progress.step, "records": len(train)}
            if trainer.history:
                metrics["loss"] = _number(trainer.history[-1].loss)
            if validation:
                quality = await trainer.quality()
                metrics["validation"] = {k: _number(v) for k, v in quality.items()
                                         if isinstance(v, (int, float))}
        finally:
            trainer.close()
        return model, metrics


def _number(value):
    """A float for JSON (rounded), None for what is not a finite number."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        return None
    return round(float(value), 6)

