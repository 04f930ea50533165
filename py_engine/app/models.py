"""The model an app trains, whatever its family: a checkpoint given as files (a folder the user
picked, or the bundled MiniLM the worker fetched) made into a TextClassifier, a ChatModel or a
Seq2SeqModel, and what the learner and the service ask of each: which records it can learn, its
examples, a trainer, its state, its adapter.

    model = await load_model_files(files, name="minilm", labels=["neg", "pos"], backend="gpu")
    model.kind            # "classification", "causal_lm" or "seq2seq", from config.json (or given)
    model.record_kind     # the queue records it learns: a seq2seq model learns conversations
    model.key             # names its saved state: the same checkpoint (and labels) -> the same key

Pure Python: this runs in the browser (the files go to Pyodide's in-memory file system).
"""

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import warnings

from ..data.chat import DataError, encode_chat_example
from ..data.classification import Example
from ..data.record import label_names
from ..data.seq2seq import conversation_input, encode_seq2seq_example, seq2seq_example_from_record
from ..labels import MULTI_LABEL, SINGLE_LABEL
from ..models.bert_config import BERT_TYPES
from ..models.checkpoint import Checkpoint
from ..models.classifiers import classifier_config, classifier_model, names_sequence_classifier
from ..models.decoder_classifier import DecoderClassifierConfig
from ..models.modernbert_config import MODEL_TYPE as MODERNBERT
from ..models.decoders import CAUSAL_TYPES, T5_TYPES, decoder_config, decoder_model
from ..models.lora_config import LoraConfig
from ..train.chat import ChatModel
from ..train.classifier import LoadNote, TextClassifier
from ..train.config import CausalTrainConfig, ClassifierTrainConfig
from ..train.seq2seq import Seq2SeqModel

KINDS = ("classification", "causal_lm", "seq2seq")
ENCODERS = BERT_TYPES + (MODERNBERT,)      # TextClassifier's: the BERT families, ModernBERT
DECODERS = CAUSAL_TYPES     # every decoder-only family ChatModel runs
ENCODER_DECODERS = T5_TYPES  # Seq2SeqModel's
# The queue records each kind of model learns: an encoder-decoder learns conversations.
RECORD_KINDS = {"classification": "classification", "causal_lm": "causal_lm",
                "seq2seq": "causal_lm"}
DEFAULT_LABELS = ["negative", "positive"]


class ModelFilesError(ValueError):
    """Model files that cannot be used; the message says which and why."""


def kind_of(config, given=None):
    """"classification" for BERT-family checkpoints, "causal_lm" for decoder-only ones (which
    `given` "classification" reads as sequence classifiers, as a fine-tuned one's config.json
    names itself)."""
    model_type = config.get("model_type")
    if given is not None:
        if given not in KINDS:
            raise ModelFilesError(f"kind must be one of {KINDS}, got {given!r}")
        return given
    if model_type in ENCODERS:
        return "classification"
    if model_type in DECODERS:      # a fine-tuned sequence classifier of one is read as that
        return "classification" if names_sequence_classifier(config) else "causal_lm"
    if model_type in ENCODER_DECODERS:
        return "seq2seq"
    raise ModelFilesError(f"config.json has model_type {model_type!r}; this engine trains "
                          f"{', '.join(ENCODERS)} classifiers, {', '.join(DECODERS)} chat models "
                          f"and {', '.join(ENCODER_DECODERS)} encoder-decoders")


def write_model_files(files, directory=None):
    """Write {relative path: bytes} into a new directory (or `directory`); returns its path and
    config.json's contents. Paths must stay inside it."""
    if not isinstance(files, dict) or not files:
        raise ModelFilesError("no model files were given")
    if "config.json" not in files:
        raise ModelFilesError(f"the model files have no config.json (got {sorted(files)[:8]})")
    try:
        config = json.loads(bytes(files["config.json"]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFilesError(f"config.json is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ModelFilesError("config.json does not hold a JSON object")
    paths = {}
    for name in files:    # all checked before anything is written
        path = posixpath.normpath(str(name).replace("\\", "/"))
        if path.startswith(("../", "/")) or path in ("..", ".") or ":" in path:
            raise ModelFilesError(f"model file {name!r} is not a relative path inside the model")
        paths[name] = path.split("/")
    made = directory is None
    if made:
        directory = tempfile.mkdtemp(prefix="py_engine-model-")
    try:
        for name, data in files.items():
            target = os.path.join(directory, *paths[name])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(bytes(data))
    except BaseException:
        if made:
            remove_written(directory)
        raise
    return directory, config


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]


def model_key(kind, name, config, labels=None):
    """The name of a model's saved state: its kind, name, config.json and (classifiers) labels."""
    digest = hashlib.sha256(json.dumps([config, labels], sort_keys=True).encode()).hexdigest()
    return f"{kind}-{_safe(name)}-{digest[:12]}"


def state_key(kind, state):
    """The name of a model's saved state when the app names it (`state`): the same whatever
    the labels, so a classifier whose labels change keeps its state."""
    return f"{kind}-state-{_safe(state)}"


async def load_model_files(files, name, kind=None, labels=None, backend="gpu", device=None,
                           pooling=None, max_length=None, state=None, adapter=None,
                           base_dtype="f32", read_checkpoint=None):
    """An AppClassifier, AppChat or AppSeq2Seq over the checkpoint in `files`; its saved state
    is kept under model_key(...), or state_key(kind, state) when `state` names it. `adapter`
    ({file name: bytes}): the weights to start from; a classifier then takes its LoRA
    options, pooling and (unless given) labels from it. base_dtype: how the GPU keeps a
    classifier's frozen weights ("f32", "f16", "int8"); read_checkpoint(directory): a
    classifier's Checkpoint when its weights are not a plain model.safetensors (compressed
    ones)."""
    directory, config = write_model_files(files)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LoadNote)
            model = await load_model_dir(directory, name, config, kind, labels, backend, device,
                                         pooling, max_length, state, adapter, base_dtype,
                                         read_checkpoint)
    except BaseException:
        remove_written(directory)
        raise
    finally:
        for w in caught:            # the others go on as they came
            if not issubclass(w.category, LoadNote):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    model.owns_directory = True      # close() lets go of the files written for it
    # what the load tells the user, naming the checkpoint rather than where its files were put
    model.notes = [str(w.message).replace(str(directory), "The checkpoint") for w in caught
                   if issubclass(w.category, LoadNote)]
    return model


def remove_written(directory):
    """Remove a directory write_model_files made. In the browser its files are held in memory
    (Emscripten's file system), so a model loaded again and again would keep every copy."""
    shutil.rmtree(directory, ignore_errors=True)


def read_model_config(directory):
    """config.json of a checkpoint directory, as a dict (ModelFilesError when unusable)."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ModelFilesError(f"{directory} has no readable config.json ({e.strerror})") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFilesError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ModelFilesError(f"{path} does not hold a JSON object")
    return config


async def load_model_dir(directory, name, config=None, kind=None, labels=None, backend="gpu",
                         device=None, pooling=None, max_length=None, state=None, adapter=None,
                         base_dtype="f32", read_checkpoint=None, problem_type=SINGLE_LABEL,
                         lora_options=None):
    """An AppClassifier, AppChat or AppSeq2Seq over the checkpoint directory `directory`
    (config: its config.json, read here when not given); the other options as
    load_model_files'. `problem_type`: a classifier's kind of head, single-label (the app's:
    one label per text) or multi-label (a training job's that asks for it). `lora_options`:
    LoraConfig fields over the new adapter's defaults (job_lora)."""
    config = read_model_config(directory) if config is None else config
    kind = kind_of(config, kind)
    checkpoint = read_checkpoint(directory) if read_checkpoint and kind == "classification" else None
    placement = dict(backend=backend, device=device, max_length=max_length or 128,
                     base_dtype=base_dtype, checkpoint=checkpoint)
    if kind == "classification":
        if adapter and labels is None and "labels.json" in adapter:
            labels = json.loads(bytes(adapter["labels.json"]).decode("utf-8"))
        held = None         # a fine-tuned classifier's labels, where it is one
        if not adapter:
            checkpoint = placement["checkpoint"] = checkpoint or Checkpoint.load(directory)
            held = checkpoint.head_labels()
        if problem_type not in (SINGLE_LABEL, MULTI_LABEL):
            raise ModelFilesError(f"a classifier here is single-label or multi-label, not "
                                  f"{problem_type!r:.60}")
        labels = list(labels or held or DEFAULT_LABELS)
        fewest = 2 if problem_type == SINGLE_LABEL else 1
        if len(labels) < fewest or len(set(labels)) != len(labels) or \
                not all(isinstance(x, str) and x for x in labels):
            raise ModelFilesError(f"a {'single-label ' if fewest == 2 else ''}classifier needs "
                                  f"{'two or more' if fewest == 2 else 'one or more'} distinct "
                                  f"label names, got {labels!r:.100}")
        if adapter:
            adapter_dir, _ = write_model_files(dict(adapter, **{"config.json": b"{}"}))
            try:    # the adapter is read whole: its files are not needed after this
                # an adapter of another kind of head than asked (head_config.json's
                # problem_type) is refused by name
                clf = await TextClassifier.load(directory, adapter_dir, problem_type=problem_type,
                                                **placement)
            finally:
                remove_written(adapter_dir)
            if clf.labels != labels:
                raise ModelFilesError(f"the adapter has labels {clf.labels}, not {labels}")
        else:
            family = classifier_config(config)
            lora = job_lora(family.classifier_targets, lora_options)
            # pooling None: the mean of the tokens for an encoder (sentence encoders such as
            # MiniLM are trained for it), a decoder's last real token (its classifier's), the
            # family's where the checkpoint is a fine-tuned classifier (its head reads that)
            if pooling is None and held is None and not isinstance(family, DecoderClassifierConfig):
                pooling = "mean"
            # the kind of head asked for: a checkpoint's head of another kind is not the start
            # (a load note says so)
            clf = await TextClassifier.create(directory, labels, lora=lora, pooling=pooling,
                                              dropout=0.0, problem_type=problem_type, **placement)
        # a multi-label head's state is not a single-label one's with the same labels
        named = labels if problem_type == SINGLE_LABEL else {problem_type: labels}
        key = state_key(kind, state) if state is not None else model_key(kind, name, config, named)
        return AppClassifier(clf, name, key, directory, config, fixed_key=state is not None)
    family, app = (Seq2SeqModel, AppSeq2Seq) if kind == "seq2seq" else (ChatModel, AppChat)
    placement = dict(backend=backend, device=device, max_length=max_length or 512)
    adapter_dir = None
    if adapter:
        # read as the CLI reads an adapter folder: its LoRA options, modules trained whole,
        # and a tokenizer or chat template saved beside it
        adapter_dir, _ = write_model_files(dict(adapter, **{"config.json": b"{}"}))
        try:
            chat = await family.load(directory, adapter_dir=adapter_dir, **placement)
        except BaseException:
            remove_written(adapter_dir)
            raise
        if getattr(chat, "tokenizer_dir", None) != adapter_dir:
            remove_written(adapter_dir)     # read whole: its files are not needed after this
            adapter_dir = None
    elif lora_options:
        targets = decoder_config(config).lora_targets      # config.json, read above
        chat = await family.create(directory, lora=job_lora(targets, lora_options, family.task_type),
                                   **placement)
    else:
        chat = await family.create(directory, **placement)
    key = state_key(kind, state) if state is not None else model_key(kind, name, config)
    model = app(chat, name, key, directory, config)
    model.adapter_directory = adapter_dir    # the adapter's own tokenizer, kept while it lives
    return model


def job_lora(targets, options=None, task_type="SEQ_CLS"):
    """The LoraConfig of a new adapter here: r 8, lora_alpha 16, no dropout, on `targets` (the
    family's default linears), with `options` (LoraConfig fields) over them."""
    fields = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(targets))
    return LoraConfig(**dict(fields, **(options or {})), task_type=task_type)


def check_lora_options(config, kind, options):
    """That a new adapter with LoRA `options` (job_lora's) can be made for the checkpoint of
    config.json `config` and `kind`, as load_model_dir would make it: its values, its draw,
    and targets that name the model's linear layers, from the config alone (no weights read).
    ValueError (LoraConfigError, LoraTargetError, ConfigError) naming what is wrong."""
    if kind == "classification":
        family = classifier_config(config)
        lora = job_lora(family.classifier_targets, options)
        lora.fresh_init()
        classifier_model(family, lora, 2)
    else:
        family = decoder_config(config)
        task_type = (Seq2SeqModel if kind == "seq2seq" else ChatModel).task_type
        lora = job_lora(family.lora_targets, options, task_type)
        lora.fresh_init()
        decoder_model(family, lora)


class AppModel:
    """What the learner and the service use of a model, whatever its family."""

    kind = None

    @property
    def record_kind(self):
        """The kind of the queue records this model learns."""
        return RECORD_KINDS[self.kind]

    def __init__(self, model, name, key, directory, config_json=None, fixed_key=False):
        self.model, self.name, self.key, self.directory = model, name, key, directory
        self.config_json = config_json    # config.json's contents (model_key's input)
        self.fixed_key = fixed_key        # the app named the state: labels do not change it
        self.owns_directory = False       # `directory` was written for this model alone
        self.adapter_directory = None     # an adapter's files written for this model (its tokenizer)
        self.notes = []                   # what loading it told the user (LoadNote warnings)

    def close(self):
        """Let go of the checkpoint's files when they were written for this model
        (load_model_files), and of an adapter's; a directory the caller gave stays. The model
        is not used after."""
        if self.owns_directory:
            remove_written(self.directory)
            self.owns_directory = False
        if self.adapter_directory is not None:
            remove_written(self.adapter_directory)
            self.adapter_directory = None

    @property
    def runtime(self):
        return self.model.runtime

    def summary(self):
        m = self.model.model
        trainable = sum(_size(s) for s in m.trainable.values())
        frozen = sum(_size(self.model.checkpoint.shape(n)) for n in m.frozen_names())
        runtime = self.runtime
        device = getattr(runtime, "device", None)
        return {"name": self.name, "kind": self.kind, "key": self.key,
                "family": self.model.checkpoint.config.model_type,
                "parameters": trainable + frozen, "trainable": trainable,
                "max_length": self.model.max_length, "backend": runtime.name,
                "adapter": device.info.as_dict() if device is not None else None,
                "notes": list(self.notes)}

    async def trainer(self, examples, config, validation, guard):
        return await self.model.trainer(examples, config, validation, guard=guard)

    async def save_state(self, trainer, store, extra_files):
        return await self.model.save_state(trainer, store, extra_files)

    async def restore_state(self, store, examples, validation):
        return await self.model.restore_state(store, examples, validation)

    async def adapter_files(self):
        return await self.model.adapter_files()

    async def load_adapter_files(self, files, source="the imported adapter"):
        """The adapter `files` into the model; `source` names them in a failure's message.
        Whether the model was rebuilt with the adapter's own LoRA options."""
        return await self.model.load_adapter_files(files, source)

    async def relabel(self, labels, renamed):
        raise ValueError(f"a {self.kind} model has no labels to change")


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class AppClassifier(AppModel):
    kind = "classification"

    @property
    def labels(self):
        return self.model.labels

    def summary(self):
        return dict(super().summary(), labels=self.labels, pooling=self.model.model.pooling,
                    problem_type=self.problem_type)

    def train_config(self, **options):
        return ClassifierTrainConfig(**dict(dict(epochs=3, lr=2e-3, batch_size=16,
                                                 warmup_ratio=0.0, max_length=self.model.max_length),
                                            **options))

    @property
    def problem_type(self):
        """SINGLE_LABEL (one label per text) or MULTI_LABEL (the names that apply to it)."""
        return self.model.problem_type

    def unusable(self, record):
        """Why this model cannot learn `record` (None: it can). A multi-label classifier reads
        a record of one label as a text that only that label applies to; a single-label one
        cannot learn a multi-label record."""
        if record.kind != self.record_kind:
            return f"a {record.kind} record"
        if record.label is None:
            return "a record without a label"
        multi = self.problem_type == MULTI_LABEL
        if isinstance(record.label, list) and not multi:
            return (f"a multi-label record (labels {record.label!r:.80}); this classifier learns "
                    "one label per text")
        unknown = [name for name in label_names(record.label) if name not in self.labels]
        if unknown:
            names = ", ".join(map(repr, unknown))
            return (f"label{'s' if len(unknown) > 1 else ''} {names} "
                    f"{'are' if len(unknown) > 1 else 'is'} not among the classifier's "
                    f"{self.labels}")
        return None

    def examples(self, records):
        """What the classifier's trainer() takes."""
        if self.problem_type == MULTI_LABEL:
            return [Example(r.text, label_names(r.label)) for r in records]
        return [Example(r.text, r.label) for r in records]

    def encoded(self, records, config):
        """What a Trainer takes (Trainer.replace_data)."""
        return self.model.encode_examples(self.examples(records), config.max_length)

    async def predict_many(self, texts):
        """{"label", "probs"} per text, in one pass over them (batches of 32); a multi-label
        classifier's {"labels": the names whose probability is over 0.5, "probs"}."""
        if self.problem_type == MULTI_LABEL:
            return [{"labels": [n for n in self.labels if probs[n] > 0.5], "probs": probs}
                    for probs in await self.model.predict(texts)]
        return [{"label": max(probs, key=probs.get), "probs": probs}
                for probs in await self.model.predict(texts)]

    async def predict(self, text):
        (answer,) = await self.predict_many([text])
        return answer

    async def relabel(self, labels, renamed):
        """TextClassifier.relabel; the state's name follows the labels unless the app named it."""
        await self.model.relabel(labels, renamed)
        if not self.fixed_key:
            self.key = model_key(self.kind, self.name, self.config_json, self.labels)

    def check_adapter_files(self, files, labels):
        """TextClassifier.check_adapter_files of an import, for the model with `labels`."""
        self.model.check_adapter_files(files, "the imported adapter", labels)


class AppChat(AppModel):
    kind = "causal_lm"

    def summary(self):
        """thinking: the chat template has Qwen3's switch (enable_thinking) for the page to show."""
        template = self.model.template
        return dict(super().summary(),
                    thinking=template is not None and template.reads("enable_thinking"))

    def train_config(self, **options):
        return CausalTrainConfig(**dict(dict(epochs=2, lr=2e-4, batch_size=4,
                                             max_length=min(512, self.model.max_length)),
                                        **options))

    def _encode(self, record, max_length=None):
        return encode_chat_example(record.to_example(), self.model.tokenizer,
                                   self.model.template, max_length or self.model.max_length)

    def unusable(self, record):
        if record.kind != self.record_kind:
            return f"a {record.kind} record"
        try:
            self._encode(record)
        except DataError as e:
            return str(e)
        return None

    def examples(self, records):
        return [self._encode(r) for r in records]

    def prompt(self, messages):
        """What generate() takes for a conversation that awaits the model's reply."""
        return messages

    def encoded(self, records, config):
        return self.examples(records)


class AppSeq2Seq(AppChat):
    """An encoder-decoder (FLAN-T5) learning the queue's conversations as (input, target) pairs:
    the turns before the last assistant message in, that message out (data/seq2seq.py's
    mapping, the one `train` applies to a conversation file). A plain-text record has no target
    to learn."""

    kind = "seq2seq"

    def _encode(self, record, max_length=None):
        if record.messages is None:
            raise DataError("a text record has no target; an encoder-decoder learns "
                            "conversations that end on an assistant message")
        example = seq2seq_example_from_record({"messages": record.messages},
                                              record.origin.get("where", "a conversation"))
        return encode_seq2seq_example(example, self.model.tokenizer,
                                      max_length or self.model.max_length)

    def prompt(self, messages):
        return conversation_input(messages)
