"""TextClassifier: fine-tune a BERT-family checkpoint with LoRA on labelled texts, predict,
evaluate, and save or load PEFT-compatible adapters. The user-facing API.

    clf = await TextClassifier.create("model_dir", labels=["neg", "pos"], backend="gpu")
    await clf.fit(examples, ClassifierTrainConfig(epochs=3))
    probs = await clf.predict(["great!"])       # [{"neg": 0.1, "pos": 0.9}]
    await clf.save("adapter_dir")

Training in slices (an idle deadline at a time), with held-out checks and rollback:

    trainer = await clf.trainer(examples, config, validation=held_out, guard=GuardConfig())
    await trainer.run(budget_ms=200)

Methods that run the model are coroutines (the GPU backend waits on readbacks; in the browser
that wait is asynchronous). Natively, drive them with py_engine.gpu.run_sync or asyncio.
"""

import math
import warnings
from dataclasses import replace

from ..data.classification import label_targets
from ..formats.head_config import (HEAD_CONFIG, head_config, pooling_of, problem_type_of,
                                   read_head_config, resolve_problem_type)
from ..formats.json_file import decode_utf8, parse_json
from ..formats.output_dir import write_files
from ..formats.peft_adapter import adapter_files, load_adapter, read_adapter_files
from ..models.bert import holds_pooler_lora
from ..models.classifiers import adapter_pooling, classifier_model
from ..models.checkpoint import Checkpoint
from ..models.lora_config import LoraConfig
from ..tokenizers.checkpoint import classifier_tokenizer
from .base_init import check_same_base, residual_base
from .config import ClassifierTrainConfig, TrainConfig  # noqa: F401 (TrainConfig: the API's)
from .head_rows import label_sources, relabel_rows
from .init import initial_trainable, merge_loaded
from . import state as training_state
from .runtime import create_runtime
from .tasks import (MULTI_LABEL, REGRESSION, SINGLE_LABEL, ClassificationTask,  # noqa: F401
                    LabelledIds, check_problem_type, classification_report, sigmoid,
                    target_report)
from .trainer import Trainer


class LoadNote(UserWarning):
    """What loading a classifier tells its user (a checkpoint's head not used, an adapter's
    pooling taken from its family): a warning here, a note on the app's page (its summary's
    "notes")."""


def adapter_model(checkpoint, model_dir, config, tensors, n_labels, pooling, source, dropout=None):
    """The classifier model an adapter (its adapter_config.json `config`, its `tensors`) was
    made with on `checkpoint` (read from `model_dir`), with `n_labels` labels pooled by
    `pooling`: a pooler the adapter holds trains whole, the checkpoint's takes a LoRA where
    the adapter holds one."""
    lora = LoraConfig.from_peft_dict(config, checkpoint.config.classifier_targets)
    # the pooler's own weights (a checkpoint without one), not a LoRA on the checkpoint's
    train_pooler = checkpoint.config.trains_pooler(tensors)
    if pooling == "cls" and not train_pooler and not checkpoint.has_pooler:
        name = checkpoint.config.pooler_module
        raise ValueError(
            f"{source} holds no {name} and {model_dir} has none: PEFT draws that layer at "
            "random whenever it loads the checkpoint (its modules_to_save names only the "
            "classifier), so the adapter's predictions cannot be reproduced; train it with "
            f"modules_to_save including {name.split('.')[0]!r}")
    return classifier_model(checkpoint.config, lora, n_labels, pooling=pooling, dropout=dropout,
                            train_pooler=train_pooler, pooler_lora=holds_pooler_lora(tensors))


class TextClassifier:
    def __init__(self, checkpoint, tokenizer, labels, runtime, max_length=128, model_dir=None):
        self.checkpoint = checkpoint
        self.model_dir = model_dir
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.runtime = runtime
        self.max_length = min(max_length, checkpoint.config.positions)
        self.history = []
        self._trainer = None        # the last trainer made: its snapshots are released with it

    @property
    def model(self):
        return self.runtime.model

    # --- construction ---

    @classmethod
    async def create(cls, model_dir, labels=None, lora=None, backend="numpy", pooling=None,
                     seed=0, max_length=128, dropout=None, device=None, base_dtype="f32",
                     quant_group=64, checkpoint=None, problem_type=None):
        """A new classifier over model_dir's checkpoint. `labels`: its label names; None takes
        a fine-tuned classifier checkpoint's (config.json's id2label), whose head the rows of
        its labels start from whenever they are among `labels` (checkpoint_head).
        `problem_type`: transformers' (tasks.PROBLEM_TYPES): "single_label_classification"
        (one label per text, a softmax), "multi_label_classification" (any number of labels
        per text, a sigmoid each) or "regression" (a value per label); None takes a fine-tuned
        checkpoint's kind of head, else single-label.
        `checkpoint`: model_dir's weights when they were loaded already (fetched bytes, or a
        compressed file read into a Checkpoint); model_dir still gives the tokenizer."""
        checkpoint = checkpoint or Checkpoint.load(model_dir)
        labels, problem_type = starting_labels(checkpoint, labels, problem_type)
        lora = lora or LoraConfig(target_modules=list(checkpoint.config.classifier_targets))
        lora.base_model_name_or_path = lora.base_model_name_or_path or str(model_dir)
        model = classifier_model(checkpoint.config, lora, len(labels), pooling=pooling,
                                 train_pooler=not checkpoint.has_pooler, dropout=dropout)
        checkpoint = residual_base(model, checkpoint)       # PiSSA's, OLoRA's
        return await cls._make(model_dir, checkpoint, model, labels,
                               initial_trainable(model, seed, checkpoint, labels, problem_type),
                               backend, device, base_dtype, quant_group, max_length, problem_type)

    @classmethod
    async def load(cls, model_dir, adapter_dir, backend="numpy", pooling=None, max_length=128,
                   device=None, base_dtype="f32", quant_group=64, checkpoint=None,
                   problem_type=None):
        """`pooling`: None takes what the adapter was trained with (head_config.json; when
        absent, the family's sequence classifier's: "cls" for BERT's, config.json's
        classifier_pooling for ModernBERT). `problem_type`: None takes the adapter's
        (head_config.json; single-label without one, as PEFT's files do not say), a given one
        must agree with what it records. `checkpoint`: as in create()."""
        config, tensors, labels = load_adapter(adapter_dir)
        pooling, note = adapter_pooling(model_dir, adapter_dir, pooling,
                                        checkpoint.config if checkpoint else None)
        if note:
            warnings.warn(note, LoadNote, stacklevel=2)
        problem_type = resolve_problem_type(read_head_config(adapter_dir), problem_type,
                                            adapter_dir)
        return await cls._from_adapter(model_dir, adapter_dir, config, tensors, labels, pooling,
                                       backend, device, base_dtype, quant_group, max_length,
                                       checkpoint, problem_type)

    @classmethod
    async def _from_adapter(cls, model_dir, source, config, tensors, labels, pooling, backend,
                            device, base_dtype, quant_group, max_length, checkpoint=None,
                            problem_type=None):
        checkpoint = checkpoint or Checkpoint.load(model_dir)
        if labels is None:
            raise ValueError(f"{source} has no labels.json: label names are needed to predict")
        if len(labels) < 2 and check_problem_type(problem_type) == SINGLE_LABEL:
            raise ValueError(f"{source}/labels.json names one label {labels}: a single-label "
                             "classifier needs two or more (its head_config.json records no "
                             "multi-label or regression head)")
        model = adapter_model(checkpoint, model_dir, config, tensors, len(labels), pooling, source)
        checkpoint = residual_base(model, checkpoint)
        values = merge_loaded(model, initial_trainable(model, 0, fresh=False), tensors, source)
        return await cls._make(model_dir, checkpoint, model, labels, values, backend, device,
                               base_dtype, quant_group, max_length, problem_type)

    @classmethod
    async def _make(cls, model_dir, checkpoint, model, labels, values, backend, device,
                    base_dtype, quant_group, max_length, problem_type=None):
        tokenizer = classifier_tokenizer(model_dir)
        tokenizer.limit_ids(checkpoint.config.vocab_size)
        task = ClassificationTask(len(labels), tokenizer.pad_id, last_token=model.last_token,
                                  problem_type=problem_type)
        placement = dict(backend=backend, device=device, base_dtype=base_dtype,
                         quant_group=quant_group)
        runtime = await create_runtime(model=model, task=task, checkpoint=checkpoint,
                                       trainable=values, **placement)
        return cls(checkpoint, tokenizer, labels, runtime, max_length, model_dir)

    @property
    def problem_type(self):
        """transformers' problem_type of this classifier's head (tasks.PROBLEM_TYPES)."""
        return self.runtime.task.problem_type

    def _files(self, values, where):
        # Pooling and the kind of head have no PEFT field: head_config.json beside the adapter
        # holds them.
        return adapter_files(self.model.peft_dict(), values, self.labels,
                             {HEAD_CONFIG: head_config(self.model.pooling, self.problem_type)},
                             where)

    def _protected(self):
        return [("the model directory", self.model_dir)] if self.model_dir is not None else []

    async def save(self, adapter_dir, extra_files=None):
        """Write adapter_config.json, adapter_model.safetensors, labels.json and
        head_config.json atomically, into a new, empty or py_engine-written directory;
        `extra_files` ({file name: bytes}) go beside them in the same write."""
        files = self._files(await self.runtime.trainable_values(), adapter_dir)
        clash = sorted(set(files) & set(extra_files or {}))
        if clash:
            raise ValueError(f"extra files {clash} would replace the adapter's own")
        return write_files(adapter_dir, dict(files, **(extra_files or {})), self._protected(),
                           kind="a model")

    async def adapter_files(self):
        """The adapter as {file name: bytes}: what save() writes (for the browser to hand out)."""
        return self._files(await self.runtime.trainable_values(), "the adapter")

    def check_adapter_files(self, files, source="the adapter", labels=None):
        """(model, trainable values) of an adapter given as {file name: bytes}, checked against
        this classifier's checkpoint as it would be with `labels` (default: its own) before
        anything changes: labels.json (when there is one) naming those labels, and every
        trainable tensor with its shape. The model is this classifier's (its head resized to
        the labels) when the adapter was made with its LoRA options and pooling, else the one
        the adapter was made with (load()'s; head_config.json's pooling, the family's
        sequence classifier's when there is none)."""
        labels = list(self.labels if labels is None else labels)
        config, tensors, adapter_labels = read_adapter_files(files, source)
        if adapter_labels is not None and adapter_labels != labels:
            raise ValueError(f"{source} has labels {adapter_labels}, this classifier {labels}")
        recorded, where = _files_head_config(files, source)
        pooling = (self.checkpoint.config.default_pooling if recorded is None
                   else pooling_of(recorded, where))
        problem_type = problem_type_of(recorded, where)
        if problem_type != self.problem_type:
            raise ValueError(f"{source} holds a {problem_type} head, this classifier a "
                             f"{self.problem_type} one")
        other = self._other_model(config, tensors, len(labels), pooling, source)
        if other is not None:
            return other
        model = self.model if len(labels) == len(self.labels) else self._model_for(len(labels))
        return model, merge_loaded(model, {}, tensors, source)

    def _other_model(self, config, tensors, n_labels, pooling, source):
        """(model, trainable values) of an adapter (its adapter_config.json `config`, its
        `tensors`) made with other LoRA options or pooling than this classifier's, as load()
        would make it; None when it was made with the same."""
        if pooling == self.model.pooling and not training_state.adapter_differences(self.model, config):
            return None
        model = adapter_model(self.checkpoint, self.model_dir, config, tensors, n_labels, pooling,
                              source, dropout=self.model.dropout)
        check_same_base(self.model, model, source)
        return model, merge_loaded(model, initial_trainable(model, 0, fresh=False), tensors, source)

    async def load_adapter_files(self, files, source="the adapter"):
        """Take the trainable weights of an adapter given as {file name: bytes} (labels and
        tensors checked by check_adapter_files). One made with other LoRA options or pooling
        brings them: the model is rebuilt with them (the frozen weights are kept, the
        optimizer's moments start again). Returns whether it was."""
        model, values = self.check_adapter_files(files, source)
        return await self._take(model, values)

    async def _take(self, model, values):
        """Load trainable `values` of `model`: into the runtime when it is this classifier's
        (or its head resized), else into a runtime rebuilt over it. Whether it was rebuilt."""
        if model is self.model:
            await self.runtime.load_trainable(values)
            return False
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None
        task = ClassificationTask(model.num_labels, self.tokenizer.pad_id,
                                  last_token=model.last_token, problem_type=self.problem_type)
        self.runtime = await self.runtime.rebuilt(model, values, task)
        return True

    async def save_state(self, trainer, store, extra_files=None):
        """Save everything `trainer` needs to continue (the adapter's files, the optimizer
        state, where training stands) into `store`: a host directory (written atomically, only
        where py_engine may write) or an IndexedDBStateStore in the browser. `extra_files`
        ({name: bytes}) are saved with them, in the same write."""
        files = self._files(await self.runtime.trainable_values(), store)
        files = await training_state.capture(trainer, files, {"pooling": self.model.pooling})
        files.update(extra_files or {})
        return await training_state.as_store(store, self._protected()).save(files)

    @classmethod
    async def resume(cls, model_dir, store, examples, validation=None, backend="numpy",
                     device=None, base_dtype="f32", quant_group=64, max_length=128):
        """(classifier, trainer) continuing a state save_state() wrote, on the same examples
        (and validation examples) it was trained on; the trainer goes on exactly where it
        stopped."""
        files, state, optimizer, train_config = await training_state.open_state(
            store, ClassifierTrainConfig)
        config, tensors, labels = read_adapter_files(files, "the training state")
        pooling = (state.get("model") or {}).get("pooling", "cls")
        clf = await cls._from_adapter(model_dir, "the training state", config, tensors, labels,
                                      pooling, backend, device, base_dtype, quant_group, max_length,
                                      problem_type=_files_problem_type(files, "the training state"))
        return await training_state.resume_training(clf, state, optimizer, train_config, examples,
                                                    validation)

    async def restore_state(self, store, examples, validation=None):
        """A trainer continuing a state save_state() wrote, on this classifier (made with the
        same labels): its weights, optimizer state and position are loaded (a state made with
        other LoRA options or pooling, an adapter imported since, rebuilds the model with
        them)."""
        files, state, optimizer, train_config = await training_state.open_state(
            store, ClassifierTrainConfig)
        config, tensors, labels = read_adapter_files(files, "the training state")
        if labels != self.labels:
            raise training_state.StateError(f"the training state has labels {labels}, this "
                                            f"classifier {self.labels}")
        problem_type = _files_problem_type(files, "the training state")
        if problem_type != self.problem_type:
            raise training_state.StateError(f"the training state holds a {problem_type} head, "
                                            f"this classifier a {self.problem_type} one")
        pooling = (state.get("model") or {}).get("pooling", "cls")
        other = self._other_model(config, tensors, len(labels), pooling, "the training state")
        if other is not None:       # made with other LoRA options (an adapter imported since)
            await self._take(*other)
        _, trainer = await training_state.resume_training(self, state, optimizer, train_config,
                                                          examples, validation, tensors)
        return trainer

    # --- labels ---

    async def relabel(self, labels, renamed=None):
        """Follow a change of the label list without training from scratch: `labels` is the new
        list, `renamed` {old name: new name}. A kept or renamed label keeps its row of the
        head (so its logit, for every input, is what it was), a label no longer listed loses
        its row, and an added label's row starts as the mean of the kept rows (its logit is
        the mean of theirs, never above the highest, so nothing is predicted as the new label
        until it is trained on). The LoRA weights are kept; the optimizer's moments start
        again. Renaming and reordering alone keep the model in place; a change in the number
        of labels rebuilds the runtime (the frozen weights kept as they are)."""
        sources = label_sources(self.labels, labels, renamed,
                                fewest=2 if self.problem_type == SINGLE_LABEL else 1)
        values = await self.runtime.trainable_values()
        for name in (self.model.head_module + ".weight", self.model.head_module + ".bias"):
            if name in values:      # a decoder classifier's head has no bias
                values[name] = relabel_rows(*values[name], sources)
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None
        if len(sources) == len(self.labels):
            self.runtime.model.merged = False
            await self.runtime.load_trainable(values)
        else:
            await self._take(self._model_for(len(sources)), values)
        self.labels = list(labels)

    def _model_for(self, n_labels):
        """This classifier's model with a head of `n_labels` rows."""
        old = self.model
        return classifier_model(old.config, old.lora, n_labels, pooling=old.pooling,
                                dropout=old.dropout, train_pooler=old.train_pooler,
                                pooler_lora=old.pooler_lora)

    # --- data ---

    def encode(self, texts, pairs=None, max_length=None):
        max_length = max_length or self.max_length
        return self.tokenizer.encode_batch(texts, pairs, max_length=max_length, padding=None)

    def encode_examples(self, examples, max_length=None):
        """LabelledIds of Example-like objects (text, label, optional pair); labels must be
        among the classifier's (None: unlabelled). A multi-label classifier's label is the
        list of label names a text has (none, one or several), or {name: target in [0, 1]}
        (soft targets; names left out are 0); a regression head's is a number (a head of one
        label), or {name: value} naming every label."""
        if self.problem_type == SINGLE_LABEL:
            index = {name: i for i, name in enumerate(self.labels)}
            unknown = sorted({e.label for e in examples if e.label is not None} - set(index))
            if unknown:
                raise ValueError(f"labels {unknown} are not among the classifier's labels "
                                 f"{self.labels}")
            gold = [None if e.label is None else index[e.label] for e in examples]
        else:
            gold = [None if e.label is None else self.targets(e.label, f"example {i + 1}")
                    for i, e in enumerate(examples)]
        pairs = [e.pair for e in examples] if any(e.pair for e in examples) else None
        encodings = self.encode([e.text for e in examples], pairs, max_length)
        return [LabelledIds(enc.ids, enc.type_ids, y) for enc, y in zip(encodings, gold)]

    def targets(self, label, where="the example"):
        """A multi-label or regression example's label as one float target per label (see
        encode_examples), checked: ValueError naming `where` and the problem."""
        return label_targets(label, self.labels, self.problem_type, where)

    # --- training ---

    async def trainer(self, examples, config=None, validation=None, guard=None):
        """A Trainer over `examples` (Example-like: text, label, optional pair), to run in
        slices; validation examples are held out for quality checks (needed by a guard)."""
        config = ClassifierTrainConfig.of(config)
        if config.max_length > self.max_length:     # the checkpoint's positions bound it
            config = replace(config, max_length=self.max_length)
        if not examples:
            raise ValueError("the dataset is empty")
        if config.class_weights is not None and len(config.class_weights) != len(self.labels):
            raise ValueError(f"class_weights has {len(config.class_weights)} values for "
                             f"{len(self.labels)} labels {self.labels}")
        encoded = self.encode_examples(examples, config.max_length)
        held = self.encode_examples(validation, config.max_length) if validation else None
        if held and any(e.label is None for e in held):
            raise ValueError("validation examples need labels")
        self.runtime.set_gradient_checkpointing(config.gradient_checkpointing)
        self.model.merged = False   # merged weights would go stale as the adapter trains
        task = ClassificationTask(len(self.labels), self.tokenizer.pad_id, config.label_smoothing,
                                  config.class_weights, last_token=self.model.last_token,
                                  problem_type=self.problem_type)
        if vars(task) != vars(self.runtime.task):
            self.runtime.use_task(task)
        trainer = Trainer(self.runtime, self.runtime.task, encoded, config, validation=held,
                          guard=guard)
        trainer.history = self.history
        if self._trainer is not None:
            self._trainer.close()
        self._trainer = trainer
        return trainer

    async def fit(self, examples, config=None, on_step=None, validation=None, guard=None):
        """Train on `examples` (py_engine.data.classification.Example); returns the step log."""
        trainer = await self.trainer(examples, config, validation, guard)
        if on_step is not None:
            trainer.subscribe(lambda event: on_step(trainer.history[-1]) if event["event"] == "step" else None)
        await trainer.fit()
        return self.history

    # --- inference ---

    async def merge(self):
        """Predict with the LoRA updates merged into the base weights (one matmul per layer
        instead of three); training afterwards uses the unmerged path and unmerges."""
        await self.runtime.merge()

    def unmerge(self):
        self.model.merged = False

    async def predict(self, texts, batch_size=32):
        """One {label: probability} dict per text."""
        texts = list(texts)
        encoded = self.encode_examples([_Text(t) for t in texts])
        task = self.runtime.task
        out = []
        for start in range(0, len(encoded), batch_size):
            indices = list(range(start, min(start + batch_size, len(encoded))))
            logits = await self.runtime.outputs(task.batch(encoded, indices, 8, self.max_length))
            for i, row in zip(indices, logits):
                if not all(math.isfinite(z) for z in row):
                    raise ValueError(f"text {i + 1} gets logits that are not finite: the adapter "
                                     "is unusable (a diverged run?)")
                out.append(dict(zip(self.labels, self._outputs(row))))
        return out

    def _outputs(self, row):
        """What predict() gives for one row of logits: a probability per label (a softmax
        over them, or a multi-label head's sigmoid each), a regression head's values."""
        if self.problem_type == MULTI_LABEL:
            return [sigmoid(z) for z in row]
        if self.problem_type == REGRESSION:
            return list(row)
        return _softmax(row)

    async def evaluate(self, examples, batch_size=32):
        """Quality on labelled examples: accuracy and per-label precision, recall, F1 (a
        multi-label classifier's accuracy counts texts given exactly their labels, each label
        predicted where its probability is over 0.5); a regression head's mean squared and
        absolute errors, overall and per label."""
        if self.problem_type != SINGLE_LABEL:
            gold = [self.targets(e.label, f"example {i + 1}") for i, e in enumerate(examples)]
            outputs = await self.predict([e.text for e in examples], batch_size)
            return target_report(gold, [[p[name] for name in self.labels] for p in outputs],
                                 self.labels, self.problem_type)
        unknown = sorted({e.label for e in examples} - set(self.labels))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classifier's labels {self.labels}")
        probs = await self.predict([e.text for e in examples], batch_size)
        predicted = [max(p, key=p.get) for p in probs]
        return classification_report([e.label for e in examples], predicted, self.labels)


def starting_labels(checkpoint, labels=None, problem_type=None):
    """(labels, problem_type) of a new classifier over `checkpoint`: `labels` (two or more
    distinct names; one or more for a multi-label or regression head), or where None, those of
    the fine-tuned classifier it is (ValueError where it is none); `problem_type`, or where
    None the checkpoint's head's kind (single-label without a head). Warns where it holds a
    head of another kind (not the start: checkpoint_head), or one holding none of `labels`."""
    held, held_problem = checkpoint.head_labels(), checkpoint.head_problem()
    problem_type = check_problem_type(problem_type or held_problem)
    if labels is None:
        if held is None:
            raise ValueError(f"{checkpoint.source} is not a fine-tuned classifier (it has no "
                             f"{checkpoint.config.head_output}.weight): the label names are "
                             "needed")
        if held_problem != problem_type:
            raise ValueError(f"{checkpoint.source} holds a {held_problem} head (config.json's "
                             f"problem_type), not a {problem_type} one: give label names to "
                             f"train a {problem_type} head on its encoder")
        return held, problem_type
    labels = list(labels)
    label_sources(labels, labels, fewest=1 if problem_type != SINGLE_LABEL else 2)
    if held is not None and held_problem != problem_type:
        warnings.warn(f"{checkpoint.source} holds a {held_problem} head, not a {problem_type} "
                      "one: a new head starts on its encoder", LoadNote, stacklevel=3)
        return labels, problem_type
    if held is not None and not set(held) & set(labels):
        warnings.warn(f"{checkpoint.source} is a classifier of the labels {held}, none of which "
                      f"is among {labels}: its head is not used, a new one starts", LoadNote,
                      stacklevel=3)
    return labels, problem_type


def _files_head_config(files, source):
    """(contents of head_config.json or None without one, where it is named) of an adapter
    given as {file name: bytes}."""
    where = f"{source}/{HEAD_CONFIG}"
    if HEAD_CONFIG not in files:
        return None, where
    return parse_json(decode_utf8(files[HEAD_CONFIG], where), where), where


def _files_problem_type(files, source):
    """The kind of head an adapter given as {file name: bytes} records (single-label without
    a head_config.json, or without the field)."""
    return problem_type_of(*_files_head_config(files, source))


class _Text:
    __slots__ = ("text", "label", "pair")

    def __init__(self, text):
        self.text, self.label, self.pair = text, None, None


def _softmax(row):
    top = max(row)
    e = [math.exp(z - top) for z in row]
    total = sum(e)
    return [x / total for x in e]
