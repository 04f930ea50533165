"""Training objectives. A task turns encoded examples into batches, records its loss on top of a
model's forward pass (on either backend, through the backend interface), and names and
computes its metrics; the trainer and the runtimes never know which objective they run.

    ClassificationTask(num_labels, pad_id, label_smoothing, class_weights, problem_type)
        examples: LabelledIds(ids, type_ids, label); the model's forward gives [B, C] logits.
        problem_type (transformers' config.json field): "single_label_classification" (label:
        an index, softmax cross-entropy), "multi_label_classification" (label: C targets in
        [0, 1], a sigmoid per label) or "regression" (label: C values, mean squared error).
    CausalLMTask(pad_id, label_smoothing, noise_alpha)
        examples: anything with `ids` and `labels` (IGNORE_INDEX = not trained); the model's
        forward gives final hidden states, the chunked LM-head loss predicts labels shifted by
        one (label smoothing as transformers' LabelSmoother, evaluation included; NEFTune's
        noise on the input embeddings, training only).
    Seq2SeqTask(pad_id, decoder_start_id)
        examples: anything with `ids` (the input) and `labels` (the target's ids, IGNORE_INDEX =
        not trained); an encoder-decoder's forward gives the decoder's final hidden states, fed
        the target shifted right; the loss predicts the target itself.

Pure Python: this runs in the browser.
"""

import copy
import math

from ..labels import (IGNORE_INDEX, IGNORE_LABEL, MULTI_LABEL, PROBLEM_TYPES,  # noqa: F401
                      REGRESSION, SINGLE_LABEL, TARGET_LOSSES, check_problem_type, float_words)
from .batch import Batch, Seq2SeqBatch, seq2seq_decoder_ids
from .batching import padded_length


def eval_batches(examples, batch_size):
    """Example indices in batches of similar length (little padding, few batch shapes)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class LabelledIds:
    """One classification example encoded: token ids, type ids, the label (the label's index;
    for a multi-label or regression head the list of its targets, one per label), or None."""

    __slots__ = ("ids", "type_ids", "label")

    def __init__(self, ids, type_ids, label=None):
        self.ids, self.type_ids, self.label = ids, type_ids, label


class ClassificationTask:
    name = "classification"
    inputs = ("ids", "type_ids", "mask")

    def __init__(self, num_labels, pad_id=0, label_smoothing=0.0, class_weights=None,
                 last_token=False, problem_type=None):
        """last_token: the batches carry each row's last real token too (Batch.last), which a
        decoder classifier reads."""
        problem_type = check_problem_type(problem_type)
        if class_weights is not None and len(class_weights) != num_labels:
            raise ValueError(f"class_weights has {len(class_weights)} values for {num_labels} labels")
        if problem_type != SINGLE_LABEL and (class_weights is not None or label_smoothing):
            raise ValueError(f"class weights and label smoothing are a single-label classifier's "
                             f"options, not a {problem_type} head's")
        if last_token:
            self.inputs = self.inputs + ("last",)
        self.num_labels = num_labels
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.problem_type = problem_type

    @property
    def targets(self):
        """Whether labels are a float target per logit (a multi-label or regression head)."""
        return self.problem_type != SINGLE_LABEL

    def label_shape(self, B, T):
        return (B, self.num_labels) if self.targets else (B,)

    def lengths(self, examples):
        return [len(e.ids) for e in examples]

    def batch(self, examples, indices, multiple, cap):
        T = padded_length(max(len(examples[i].ids) for i in indices), multiple, cap)
        ids, types, mask, labels = [], [], [], []
        for i in indices:
            e = examples[i]
            n = min(len(e.ids), T)
            ids.append(list(e.ids[:n]) + [self.pad_id] * (T - n))
            types.append(list(e.type_ids[:n]) + [0] * (T - n))
            mask.append([1] * n + [0] * (T - n))
            if self.targets:    # C float targets as u32 words (labels.float_words)
                labels.extend(float_words([None] * self.num_labels if e.label is None
                                          else self._targets(e.label)))
            else:
                labels.append(IGNORE_LABEL if e.label is None else e.label)
        return Batch(ids, types, mask, labels)

    def _targets(self, values):
        values = list(values)
        if len(values) != self.num_labels:
            raise ValueError(f"a {self.problem_type} example has {len(values)} targets for "
                             f"{self.num_labels} labels")
        return values

    def denominator(self, batch):
        """The batch's loss denominator, as the loss op divides by it: the summed class
        weights of the rows not ignored (their count without class weights; for float targets
        the logits counted). A micro-batch whose loss is scaled by its share of its batch's
        denominator adds its share of the batch's gradient."""
        if self.targets:
            return sum(1 for y in batch.labels if y != IGNORE_LABEL)
        weights = self.class_weights
        return sum(1.0 if weights is None else weights[y] for y in batch.labels
                   if y != IGNORE_LABEL)

    def loss(self, be, model, inputs, train, loss_scale=1.0):
        """Record (or compute) the loss, and with `train` the backward; returns the metrics.
        loss_scale: a number, or on the GPU a Variable set per replay."""
        logits, saved = model.forward(be, inputs, train)
        if self.targets:
            metrics, dlogits = be.target_loss(logits, inputs.labels,
                                              TARGET_LOSSES[self.problem_type], loss_scale,
                                              backward=train)
        else:
            metrics, dlogits = be.cross_entropy(logits, inputs.labels, loss_scale,
                                                self.class_weights, self.label_smoothing,
                                                backward=train)
        if train:
            model.backward(be, dlogits, saved, inputs)
        return metrics

    def outputs(self, be, model, inputs):
        """The logits [B, C] (inference)."""
        return model.forward(be, inputs, train=False)[0]

    def step_fields(self, metrics, batch):
        """The task's own fields of a training step's record: the accuracy of a classifier
        (a multi-label one's: rows predicted whole), none of a regression head."""
        if self.problem_type == REGRESSION:
            return {}
        return {"accuracy": metrics["correct"] / max(1, metrics["counted"])}

    async def evaluate(self, runtime, examples, multiple, cap, batch_size=16):
        """Held-out quality of the runtime's current weights (see quality())."""
        logits, gold = [], []
        for indices in eval_batches(examples, batch_size):
            logits += await runtime.outputs(self.batch(examples, indices, multiple, cap))
            gold += [examples[i].label for i in indices]
        return self.quality(logits, gold)

    def quality(self, logits, gold):
        """Held-out quality from logit rows and gold labels: the mean loss (as training takes
        it), and for a classifier accuracy and macro-F1 (the unweighted mean of every label's
        F1; a multi-label one's accuracy counts rows predicted whole, its F1s are each label's
        own, a sigmoid over 0.5 predicting it), for a regression head the mean absolute error."""
        if self.problem_type == MULTI_LABEL:
            return multi_label_quality(logits, gold, self.num_labels)
        if self.problem_type == REGRESSION:
            return regression_quality(logits, gold, self.num_labels)
        loss, predicted = 0.0, []
        for row, y in zip(logits, gold):
            top = max(row)
            lse = top + math.log(sum(math.exp(z - top) for z in row))
            loss += lse - row[y]
            predicted.append(max(range(len(row)), key=row.__getitem__))
        report = classification_report(gold, predicted, range(self.num_labels))
        f1s = [m["f1"] for m in report["labels"].values()]
        return {"loss": loss / max(1, len(gold)), "accuracy": report["accuracy"],
                "macro_f1": sum(f1s) / len(f1s), "examples": len(gold)}


def classification_report(gold, predicted, labels):
    """Accuracy, and per label precision, recall, F1 and support, of predicted against gold
    labels (any comparable values; `labels` lists those to report)."""
    pairs = list(zip(gold, predicted))
    report = {"count": len(pairs), "accuracy": sum(g == p for g, p in pairs) / max(1, len(pairs)),
              "labels": {}}
    for label in labels:
        report["labels"][label] = binary_scores([(g == label, p == label) for g, p in pairs])
    return report


def _bce(z, y):
    """BCE with logits of one logit (ops/target_loss.py's term, in pure Python)."""
    return max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow on either side."""
    e = math.exp(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


def multi_label_quality(logits, gold, num_labels):
    """quality() of a multi-label head: logit rows, gold target rows (in [0, 1])."""
    loss = sum(_bce(z, y) for row, targets in zip(logits, gold) for z, y in zip(row, targets))
    report = target_report(gold, [[sigmoid(z) for z in row] for row in logits],
                           range(num_labels), MULTI_LABEL)
    f1s = [m["f1"] for m in report["labels"].values()]
    return {"loss": loss / max(1, len(gold) * num_labels), "accuracy": report["accuracy"],
            "macro_f1": sum(f1s) / max(1, num_labels), "examples": len(gold)}


def regression_quality(logits, gold, num_labels):
    """quality() of a regression head: the mean squared error (its loss) and absolute error
    over every output."""
    report = target_report(gold, logits, range(num_labels), REGRESSION)
    return {"loss": report["mse"], "mae": report["mae"], "examples": len(gold)}


def binary_scores(pairs):
    """Precision, recall, F1 and support of (gold, predicted) booleans."""
    tp = sum(g and p for g, p in pairs)
    fp = sum(p and not g for g, p in pairs)
    fn = sum(g and not p for g, p in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def target_report(gold, outputs, labels, problem_type):
    """The report of a multi-label or regression head (TextClassifier.evaluate's, quality()'s
    source): gold targets and outputs (probabilities or values) by row, in `labels`' order. A
    multi-label head's accuracy counts rows given exactly their labels (a target or a
    probability over 0.5 a label), with each label's precision, recall and F1; a regression
    head's mean squared and absolute errors, overall and by label."""
    report = {"count": len(gold), "labels": {}}
    if problem_type == MULTI_LABEL:
        wanted = [[y > 0.5 for y in row] for row in gold]
        predicted = [[p > 0.5 for p in row] for row in outputs]
        report["accuracy"] = sum(w == p for w, p in zip(wanted, predicted)) / max(1, len(gold))
        for c, name in enumerate(labels):
            report["labels"][name] = binary_scores([(w[c], p[c]) for w, p in zip(wanted, predicted)])
        return report
    for c, name in enumerate(labels):
        errors = [out[c] - want[c] for out, want in zip(outputs, gold)]
        report["labels"][name] = {"mse": sum(e * e for e in errors) / max(1, len(errors)),
                                  "mae": sum(map(abs, errors)) / max(1, len(errors))}
    per_label = report["labels"].values()
    report["mse"] = sum(m["mse"] for m in per_label) / len(labels)
    report["mae"] = sum(m["mae"] for m in per_label) / len(labels)
    return report


class CausalLMTask:
    name = "causal_lm"
    inputs = ("ids", "mask")

    def __init__(self, pad_id=0, label_smoothing=0.0, noise_alpha=None):
        self.pad_id = 0 if pad_id is None else pad_id
        self.label_smoothing = label_smoothing     # transformers' label_smoothing_factor
        self.noise_alpha = noise_alpha             # NEFTune's, in training (models/neftune.py)

    def with_options(self, **options):
        """This task with the training options given (label_smoothing, noise_alpha): itself
        where it has them already, else a copy (which the runtime takes with use_task)."""
        if all(getattr(self, k) == v for k, v in options.items()):
            return self
        other = copy.copy(self)
        vars(other).update(options)
        return other

    def label_shape(self, B, T):
        return (B * T,)

    def lengths(self, examples):
        return [len(e.ids) for e in examples]

    def batch(self, examples, indices, multiple, cap):
        """Right-padded ids and mask; labels shifted by one (position t predicts token t + 1),
        IGNORE_LABEL where not trained, flattened to B * T."""
        T = padded_length(max(len(examples[i].ids) for i in indices), multiple, cap)
        ids, mask, labels = [], [], []
        for i in indices:
            e = examples[i]
            n = min(len(e.ids), T)
            ids.append(list(e.ids[:n]) + [self.pad_id] * (T - n))
            mask.append([1] * n + [0] * (T - n))
            row = list(e.labels[1:n]) + [IGNORE_INDEX] * (T - n + 1)
            labels.extend(IGNORE_LABEL if y == IGNORE_INDEX else y for y in row)
        return Batch(ids, None, mask, labels)

    def denominator(self, batch):
        """The batch's loss denominator: the tokens trained (labels not ignored)."""
        return sum(1 for y in batch.labels if y != IGNORE_LABEL)

    def loss(self, be, model, inputs, train, loss_scale=1.0):
        inputs.noise_alpha = self.noise_alpha if train else None
        hidden, saved = model.forward(be, inputs, train)
        metrics, dh = model.head_loss(be, hidden, inputs.labels, loss_scale, train,
                                      smoothing=self.label_smoothing)
        if train:
            model.backward(be, dh, saved, inputs)
        return metrics

    def step_fields(self, metrics, batch):
        return {"trained_tokens": int(metrics["counted"])}

    async def evaluate(self, runtime, examples, multiple, cap, batch_size=16):
        """Held-out quality of the runtime's current weights: the mean loss over every trained
        token and its perplexity."""
        total = counted = 0
        for indices in eval_batches(examples, batch_size):
            m = await runtime.evaluate(self.batch(examples, indices, multiple, cap))
            total += m["loss"] * m["counted"]
            counted += int(m["counted"])
        return self.quality(total, counted)

    @staticmethod
    def quality(total_loss, counted):
        """Held-out quality from the summed token losses: mean loss and perplexity."""
        loss = total_loss / counted if counted else float("nan")
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)) if counted else float("nan"),
                "tokens": counted}


class Seq2SeqTask(CausalLMTask):
    """Input/target pairs for an encoder-decoder (T5): the loss, evaluation and metrics are the
    causal LM's, over target tokens predicted without a shift (the decoder's input is the
    target shifted right, as transformers' T5 makes it from labels)."""

    name = "seq2seq"
    inputs = ("ids", "mask", "decoder_ids")
    source_fields = ("ids", "mask")        # [B, S]: the encoder's; decoder_ids are [B, T]

    def __init__(self, pad_id=0, decoder_start_id=0):
        super().__init__(pad_id)
        self.decoder_start_id = decoder_start_id

    def label_shape(self, B, T):
        return (B * T,)

    def lengths(self, examples):
        return [len(e.ids) + len(e.labels) for e in examples]

    def batch(self, examples, indices, multiple, cap):
        """Right-padded input ids and mask [B, S]; the targets right-padded with IGNORE_INDEX to
        T, shifted right into the decoder ids; labels flattened to B * T. `cap` bounds S and T
        each (truncation keeps the start)."""
        S = padded_length(max(len(examples[i].ids) for i in indices), multiple, cap)
        T = padded_length(max(len(examples[i].labels) for i in indices), multiple, cap)
        ids, mask, targets = [], [], []
        for i in indices:
            e = examples[i]
            n, m = min(len(e.ids), S), min(len(e.labels), T)
            ids.append(list(e.ids[:n]) + [self.pad_id] * (S - n))
            mask.append([1] * n + [0] * (S - n))
            targets.append(list(e.labels[:m]) + [IGNORE_INDEX] * (T - m))
        labels = [IGNORE_LABEL if y == IGNORE_INDEX else y for row in targets for y in row]
        return Seq2SeqBatch(ids, mask, seq2seq_decoder_ids(targets, self.decoder_start_id, self.pad_id),
                            labels)
