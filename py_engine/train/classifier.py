"""TextClassifier: fine-tune a BERT-family checkpoint with LoRA on labelled texts, predict,
evaluate, and save or load PEFT-compatible adapters. The user-facing API.

    clf = await TextClassifier.create("model_dir", labels=["neg", "pos"], backend="gpu")
    await clf.fit(examples, TrainConfig(epochs=3))
    probs = await clf.predict(["great!"])       # [{"neg": 0.1, "pos": 0.9}]
    clf.save("adapter_dir")

Methods that run the model are coroutines (the GPU backend waits on readbacks; in the browser
that wait is asynchronous). Natively, drive them with py_engine.gpu.run_sync or asyncio.
"""

import math
from pathlib import Path

from ..formats.peft_adapter import load_adapter, save_adapter
from ..models.bert import BertClassifier
from ..models.checkpoint import Checkpoint
from ..models.lora_config import LoraConfig
from ..tokenizers import WordPieceTokenizer
from .batch import Batch
from .batching import padded_length, plan_epoch
from .init import initial_trainable, merge_loaded
from .schedule import linear_warmup_decay

BACKENDS = ("numpy", "gpu")


class TrainConfig:
    """Training hyperparameters, with PEFT/transformers-style names and defaults."""

    def __init__(self, epochs=3, lr=5e-4, batch_size=16, grad_accum=1, warmup_ratio=0.1,
                 max_grad_norm=1.0, weight_decay=0.01, seed=0, max_length=128,
                 label_smoothing=0.0, class_weights=None, pad_multiple=8):
        if epochs <= 0 or batch_size <= 0 or grad_accum <= 0 or max_length <= 2:
            raise ValueError("epochs, batch_size, grad_accum must be positive; max_length > 2")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.epochs, self.lr, self.batch_size, self.grad_accum = epochs, lr, batch_size, grad_accum
        self.warmup_ratio, self.max_grad_norm, self.weight_decay = warmup_ratio, max_grad_norm, weight_decay
        self.seed, self.max_length, self.pad_multiple = seed, max_length, pad_multiple
        self.label_smoothing, self.class_weights = label_smoothing, class_weights


class Step:
    """What one optimizer step reports."""

    def __init__(self, step, epoch, loss, accuracy, grad_norm, lr):
        self.step, self.epoch, self.loss, self.accuracy, self.grad_norm, self.lr = (
            step, epoch, loss, accuracy, grad_norm, lr)

    def as_dict(self):
        return dict(vars(self))


class TextClassifier:
    def __init__(self, checkpoint, tokenizer, model, labels, runtime, max_length=128):
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.model = model
        self.labels = list(labels)
        self.runtime = runtime
        self.max_length = min(max_length, checkpoint.config.max_position_embeddings)
        self.history = []

    # --- construction ---

    @classmethod
    async def create(cls, model_dir, labels, lora=None, backend="numpy", pooling="cls", seed=0,
                     max_length=128, dropout=None, device=None, base_dtype="f32"):
        checkpoint = Checkpoint.load(model_dir)
        lora = lora or LoraConfig()
        lora.base_model_name_or_path = lora.base_model_name_or_path or str(model_dir)
        model = BertClassifier(checkpoint.config, lora, len(labels), pooling=pooling,
                               train_pooler=not checkpoint.has_pooler, dropout=dropout)
        values = initial_trainable(model, seed)
        runtime = await _runtime(backend, model, checkpoint, values, device, base_dtype)
        return cls(checkpoint, _tokenizer(model_dir), model, labels, runtime, max_length)

    @classmethod
    async def load(cls, model_dir, adapter_dir, backend="numpy", pooling=None, max_length=128,
                   device=None, base_dtype="f32"):
        """`pooling`: None takes what the adapter was trained with (head_config.json; "cls",
        BertForSequenceClassification's head, when absent)."""
        checkpoint = Checkpoint.load(model_dir)
        config, tensors, labels = load_adapter(adapter_dir)
        saved_pooling = _head_config(adapter_dir).get("pooling", "cls")
        if pooling is not None and pooling != saved_pooling:
            raise ValueError(f"{adapter_dir} was trained with {saved_pooling} pooling, not {pooling}")
        pooling = saved_pooling
        if labels is None:
            raise ValueError(f"{adapter_dir} has no labels.json: label names are needed to predict")
        lora = LoraConfig.from_peft_dict(config)
        train_pooler = any(n.startswith("bert.pooler.") for n in tensors)
        model = BertClassifier(checkpoint.config, lora, len(labels), pooling=pooling,
                               train_pooler=train_pooler)
        values = merge_loaded(model, initial_trainable(model, 0), tensors, adapter_dir)
        runtime = await _runtime(backend, model, checkpoint, values, device, base_dtype)
        return cls(checkpoint, _tokenizer(model_dir), model, labels, runtime, max_length)

    async def save(self, adapter_dir):
        """Write adapter_config.json, adapter_model.safetensors and labels.json atomically."""
        values = await self.runtime.trainable_values()
        # Mean pooling has no PEFT/transformers equivalent: it is recorded beside the adapter.
        extra = {HEAD_CONFIG: {"pooling": self.model.pooling}} if self.model.pooling != "cls" else None
        return save_adapter(adapter_dir, self.model.lora.to_peft_dict(), values, self.labels, extra)

    # --- data ---

    def encode(self, texts, pairs=None, max_length=None):
        max_length = max_length or self.max_length
        return self.tokenizer.encode_batch(texts, pairs, max_length=max_length, padding=None)

    def _batch(self, encodings, indices, label_ids, multiple):
        T = padded_length(max(len(encodings[i].ids) for i in indices), multiple, self.max_length)
        pad = self.tokenizer.pad_id
        ids, types, mask = [], [], []
        for i in indices:
            e = encodings[i]
            n = len(e.ids)
            ids.append(e.ids + [pad] * (T - n))
            types.append(e.type_ids + [0] * (T - n))
            mask.append([1] * n + [0] * (T - n))
        labels = None if label_ids is None else [label_ids[i] for i in indices]
        return Batch(ids, types, mask, labels)

    # --- training ---

    async def fit(self, examples, config=None, on_step=None):
        """Train on `examples` (py_engine.data.classification.Example); returns the step log."""
        config = config or TrainConfig()
        self.unmerge()   # merged weights would go stale as the adapter trains
        if not examples:
            raise ValueError("the dataset is empty")
        index = {name: i for i, name in enumerate(self.labels)}
        unknown = sorted({e.label for e in examples} - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classifier's labels {self.labels}")
        encodings = self.encode([e.text for e in examples], [e.pair for e in examples]
                                if any(e.pair for e in examples) else None, config.max_length)
        label_ids = [index[e.label] for e in examples]
        if config.class_weights is not None and len(config.class_weights) != len(self.labels):
            raise ValueError(f"class_weights has {len(config.class_weights)} values for "
                             f"{len(self.labels)} labels {self.labels}")
        lengths = [len(e.ids) for e in encodings]
        per_epoch = math.ceil(len(examples) / config.batch_size)
        total = math.ceil(per_epoch / config.grad_accum) * config.epochs
        warmup = int(config.warmup_ratio * total)
        step = len(self.history)
        for epoch in range(config.epochs):
            plan = plan_epoch(lengths, config.batch_size, config.seed, epoch)
            for start in range(0, len(plan), config.grad_accum):
                group = plan[start:start + config.grad_accum]
                lr = linear_warmup_decay(step, config.lr, warmup, total)
                if len(group) == 1 and hasattr(self.runtime, "train_step"):
                    # One submission and one readback for the whole optimizer step.
                    batch = self._batch(encodings, group[0], label_ids, config.pad_multiple)
                    step += 1
                    loss, correct, norm = await self.runtime.train_step(
                        batch, seed=config.seed * 7919 + (step - 1) * 131, lr=lr, step=step,
                        max_norm=config.max_grad_norm, weight_decay=config.weight_decay,
                        class_weights=config.class_weights, label_smoothing=config.label_smoothing)
                    self._record(Step(step, epoch, loss, correct / batch.B, norm, lr), on_step)
                    continue
                loss = correct = count = 0
                for micro, indices in enumerate(group):
                    batch = self._batch(encodings, indices, label_ids, config.pad_multiple)
                    l, c = await self.runtime.accumulate(
                        batch, seed=config.seed * 7919 + step * 131 + micro, loss_scale=1.0 / len(group),
                        class_weights=config.class_weights, label_smoothing=config.label_smoothing)
                    loss += l / len(group)
                    correct += c
                    count += len(indices)
                step += 1
                norm = await self.runtime.update(lr=lr, step=step, max_norm=config.max_grad_norm,
                                                 weight_decay=config.weight_decay)
                self._record(Step(step, epoch, loss, correct / count, norm, lr), on_step)
        return self.history

    def _record(self, record, on_step):
        self.history.append(record)
        if on_step is not None:
            on_step(record)

    # --- inference ---

    async def merge(self):
        """Predict with the LoRA updates merged into the base weights (one matmul per layer
        instead of three); training afterwards uses the unmerged path and unmerges."""
        await self.runtime.merge()

    def unmerge(self):
        self.model.merged = False

    async def predict(self, texts, batch_size=32):
        """One {label: probability} dict per text."""
        encodings = self.encode(list(texts))
        out = []
        for start in range(0, len(encodings), batch_size):
            indices = list(range(start, min(start + batch_size, len(encodings))))
            probs = await self.runtime.probabilities(self._batch(encodings, indices, None, 8))
            out += [dict(zip(self.labels, map(float, row))) for row in probs]
        return out

    async def evaluate(self, examples, batch_size=32):
        """Accuracy and per-label precision, recall, F1 on labelled examples."""
        unknown = sorted({e.label for e in examples} - set(self.labels))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classifier's labels {self.labels}")
        probs = await self.predict([e.text for e in examples], batch_size)
        predicted = [max(p, key=p.get) for p in probs]
        return classification_report([e.label for e in examples], predicted, self.labels)


def classification_report(gold, predicted, labels):
    report = {"count": len(gold), "accuracy": sum(g == p for g, p in zip(gold, predicted)) / max(1, len(gold)),
              "labels": {}}
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report["labels"][label] = {"precision": precision, "recall": recall, "f1": f1,
                                   "support": tp + fn}
    return report


HEAD_CONFIG = "head_config.json"


def _head_config(adapter_dir):
    import json

    path = Path(adapter_dir) / HEAD_CONFIG
    if not path.is_file():
        return {}
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("pooling", "cls") not in ("cls", "mean"):
        raise ValueError(f"{path}: unknown pooling {config.get('pooling')!r}")
    return config


def _tokenizer(model_dir):
    model_dir = Path(model_dir)
    if (model_dir / "tokenizer.json").is_file():
        return WordPieceTokenizer.from_file(model_dir / "tokenizer.json")
    if (model_dir / "vocab.txt").is_file():
        return WordPieceTokenizer.from_vocab(model_dir / "vocab.txt")
    raise FileNotFoundError(f"{model_dir} has neither tokenizer.json nor vocab.txt")


async def _runtime(backend, model, checkpoint, values, device, base_dtype):
    if backend == "numpy":
        from .numpy_runtime import NumpyRuntime

        if base_dtype != "f32":
            raise ValueError(f"base_dtype {base_dtype!r} is a GPU storage mode; the NumPy backend keeps f32")
        return NumpyRuntime(model, checkpoint, values)
    if backend == "gpu":
        from .gpu_runtime import GpuRuntime

        return await GpuRuntime.create(model, checkpoint, values, device=device, base_dtype=base_dtype)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
