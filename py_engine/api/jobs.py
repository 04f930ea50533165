"""Fine-tuning jobs: what a setup request asks for (checked before it is queued), and one job's
run on the engine's loop.

    spec = job_spec(models, {"model": "minilm", "options": {"epochs": 2}, "labels": [...]})
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

from ..app.models import RECORD_KINDS, ModelFilesError, kind_of, load_model_dir, read_model_config
from ..data.datasets import split_records
from ..models.decoders import config_positions
from ..train.config import CausalTrainConfig, ClassifierTrainConfig

# The training options a setup request may give (TrainConfig names); the rest keep the app's.
COMMON_OPTIONS = ("epochs", "lr", "batch_size", "grad_accum", "warmup_ratio", "max_grad_norm",
                  "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "seed", "max_length",
                  "gradient_checkpointing")
CONFIGS = {"classification": (ClassifierTrainConfig, COMMON_OPTIONS + ("label_smoothing",)),
           "causal_lm": (CausalTrainConfig, COMMON_OPTIONS),
           "seq2seq": (CausalTrainConfig, COMMON_OPTIONS)}
SETUP_FIELDS = ("model", "documents", "options", "labels", "validation_split")
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
    options, labels, validation_split), every value checked."""
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
    labels = request.get("labels")
    if labels is not None:
        if kind != "classification":
            raise JobError(f"labels are for classifiers; this model is a {kind} model")
        if not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS or \
                len(set(labels)) != len(labels) or \
                not all(isinstance(x, str) and x.strip() for x in labels):
            raise JobError("labels must be a list of two or more distinct non-empty names")
    split = request.get("validation_split")
    if split is not None and (isinstance(split, bool) or not isinstance(split, (int, float)) or
                              not math.isfinite(split) or not 0 < split < 1):
        raise JobError(f"validation_split must be a fraction in (0, 1), got {split!r:.40}")
    return {"model": name, "kind": kind, "documents": documents, "options": options,
            "labels": labels, "validation_split": split}


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
        if self.job["labels"]:
            return list(self.job["labels"])
        labels = sorted({r.label for r in records if r.label is not None})
        if len(labels) < 2:
            raise JobError(f"a classifier needs records of two or more labels; these records have "
                           f"{labels or 'none'}: upload labelled examples, or give labels")
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
                                     backend=self.backend, device=self.device)
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

