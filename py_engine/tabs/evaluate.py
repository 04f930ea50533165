"""The tab classifier measured on labelled tabs (host side): the report `py-engine tabs eval`
prints and bench/tabs_eval.py records.

    report = await evaluate_tabs(model_dir, adapter_dir, tabs)
    report["accuracy"], report["per_class"]["Dev"]["f1"], report["confusion"]["matrix"]
    report["latency_ms"]["per_tab"]["p95"], report["sizes"]["model_bytes"]
    report["mistakes"][0]      # {url, title, label, predicted, source, confidence}, most confident first
    report["model_accuracy"], report["rules"]["answered_for_model"]

The answers measured are the extension's: the model's, or the rules' where the model is unsure
(answer.choose; "source" says which). "model_accuracy" is the model's alone, and "rules" what
the rules do on their own (the share of tabs they answer, how often right) and for how many
tabs they answered instead of the model.

Accuracy, precision, recall and F1 come from the engine's classification report
(py_engine/train/tasks.py). Latency is wall time of the model's predictions on this machine's
backend: one tab at a time ("per_tab") and batches of 50 ("per_batch_50"), each after a
warm-up call, reported as mean and 95th percentile in milliseconds.
"""

import math
import time
from pathlib import Path

from ..data.classification import DataError
from ..formats.peft_adapter import ADAPTER_FILES
from ..train.tasks import classification_report
from .answer import UNSURE_BELOW
from .base_weights import F16_FILE, INT8_FILE, base_dtype_of
from .model import TabClassifier
from .rules import categorise_name, load_rules
from .train import examples_of, summary

BATCH = 50
LATENCY_TABS = 100      # single-tab predictions timed (the first ones of the data, cycled)
LATENCY_BATCHES = 8     # batches of 50 timed
SHOWN_MISTAKES = 10     # mistakes the printed report lists (the JSON has them all)


def check_labels(tabs, labels, source):
    """A DataError naming the labels of `tabs` the classifier does not know."""
    unknown = sorted({t.label for t in tabs} - set(labels))
    if unknown:
        raise DataError(f"{source}: labels {unknown} are not the adapter's categories "
                        f"({', '.join(labels)})")


def confusion(gold, predicted, labels):
    """{"labels", "matrix"}: matrix[i][j] counts tabs of labels[i] predicted as labels[j]."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted):
        matrix[index[g]][index[p]] += 1
    return {"labels": list(labels), "matrix": matrix}


def mistakes(tabs, predictions):
    """The tabs predicted wrong, the most confident first: {url, title, label, predicted,
    source, confidence} (the model's probability of the predicted label; source: "model" or
    "rules", when the predictions say)."""
    wrong = [{"url": t.url, "title": t.title, "label": t.label, "predicted": p["label"],
              "source": p.get("source", "model"), "confidence": p["probs"][p["label"]]}
             for t, p in zip(tabs, predictions) if p["label"] != t.label]
    return sorted(wrong, key=lambda m: -m["confidence"])


def percentile(values, q):
    """The q-th percentile (0-100) by linear interpolation between ranks (NumPy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stats(seconds):
    ms = [s * 1000 for s in seconds]
    return {"mean": round(sum(ms) / len(ms), 3), "p95": round(percentile(ms, 95), 3), "runs": len(ms)}


async def latency(clf, tabs, tab_runs=LATENCY_TABS, batch_runs=LATENCY_BATCHES):
    """{"per_tab", "per_batch_50"}: wall times of `tab_runs` predictions of one tab and
    `batch_runs` of a batch of 50 (tabs cycled when there are fewer), each shape after one
    warm-up call."""
    pairs = [(t.url, t.title) for t in tabs]
    cycle = lambda start, n: [pairs[(start + k) % len(pairs)] for k in range(n)]
    await clf.predict(cycle(0, 1))
    singles = []
    for k in range(tab_runs):
        start = time.perf_counter()
        await clf.predict(cycle(k, 1))
        singles.append(time.perf_counter() - start)
    await clf.predict(cycle(0, BATCH), batch_size=BATCH)
    batches = []
    for k in range(batch_runs):
        start = time.perf_counter()
        await clf.predict(cycle(k * BATCH, BATCH), batch_size=BATCH)
        batches.append(time.perf_counter() - start)
    return {"per_tab": _stats(singles), "per_batch_50": _stats(batches)}


def sizes(model_dir, adapter_dir):
    """Bytes of the base weights file and of the adapter's files."""
    model_dir, adapter_dir = Path(model_dir), Path(adapter_dir)
    weights = model_dir / (INT8_FILE if (model_dir / INT8_FILE).is_file() else F16_FILE)
    adapter = sum((adapter_dir / n).stat().st_size for n in ADAPTER_FILES if (adapter_dir / n).is_file())
    return {"model_bytes": weights.stat().st_size, "adapter_bytes": adapter}


def rules_report(tabs, predictions, rules, categories):
    """What the rules do on `tabs`: the share they answer, how often right then and overall,
    how many tabs they answered instead of the unsure model (`predictions` from
    TabClassifier.categorise), and "with_guess": the same with the word weights' guess for the
    tabs no rule places (rules.py step 7: what the extension answers without WebGPU; None
    without word weights)."""
    def answered(guess):
        answers = [categorise_name(rules, t.url, t.title, categories, guess) for t in tabs]
        given = [(a, t.label) for a, t in zip(answers, tabs) if a is not None]
        return {"answered": len(given) / len(tabs),
                "accuracy_when_answered": sum(a == b for a, b in given) / max(1, len(given)),
                "accuracy": sum(a == t.label for a, t in zip(answers, tabs)) / len(tabs)}

    return {**answered(False), "answered_for_model": sum(p["source"] == "rules" for p in predictions),
            "with_guess": answered(True) if rules.weights is not None else None}


async def evaluate_tabs(model_dir, adapter_dir, tabs, backend="numpy", device=None, source="the data",
                        timing=True, rules=None, unsure_below=UNSURE_BELOW,
                        tab_runs=LATENCY_TABS, batch_runs=LATENCY_BATCHES):
    """The report on labelled `tabs` (see the module docstring); `rules` default to the
    shipped ones (rules.load_rules); `unsure_below` 0: the model's answers alone; with
    `timing`, latency() over `tab_runs` single tabs and `batch_runs` batches."""
    clf = await TabClassifier.load(model_dir, adapter_dir, backend=backend, device=device)
    check_labels(tabs, clf.labels, source)
    rules = rules or load_rules()
    predictions = await clf.categorise([(t.url, t.title) for t in tabs], rules, batch_size=BATCH,
                                       unsure_below=unsure_below)
    gold = [t.label for t in tabs]
    predicted = [p["label"] for p in predictions]
    model_alone = [max(p["probs"], key=p["probs"].get) for p in predictions]
    report = classification_report(gold, predicted, clf.labels)
    out = {"accuracy": report["accuracy"], "count": report["count"], "unsure_below": unsure_below,
           "model_accuracy": sum(g == m for g, m in zip(gold, model_alone)) / len(tabs),
           "rules": rules_report(tabs, predictions, rules, clf.categories),
           "per_class": report["labels"], "confusion": confusion(gold, predicted, clf.labels),
           "mistakes": mistakes(tabs, predictions),
           "latency_ms": await latency(clf, tabs, tab_runs, batch_runs) if timing else None,
           "sizes": sizes(model_dir, adapter_dir),
           "backend": backend, "base_dtype": base_dtype_of(model_dir),
           "adapter": str(adapter_dir), "model": str(model_dir)}
    return out


async def eval_summary(clf, path):
    """summary() of a TextClassifier of tabs on the labelled tabs in `path`."""
    from .tab_data import read_tabs

    tabs = read_tabs(path)
    rows = [{"url": t.url, "title": t.title, "label": t.label} for t in tabs]
    return summary(await clf.evaluate(examples_of(rows)))


def print_report(report):
    """The report as a short table."""
    rules = report["rules"]
    how = (f"the model, and the rules for {rules['answered_for_model']} tabs it was unsure of "
           f"(the model alone {report['model_accuracy']:.4f})") if report["unsure_below"] > 0 \
        else "the model alone"
    print(f"accuracy {report['accuracy']:.4f} on {report['count']} tabs "
          f"({report['backend']}, base {report['base_dtype']}): {how}")
    for label, m in report["per_class"].items():
        print(f"  {label:<14} precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
              f"f1 {m['f1']:.3f}  support {m['support']}")
    lat = report["latency_ms"]
    if lat:
        print(f"latency per tab {lat['per_tab']['mean']:.2f} ms (p95 {lat['per_tab']['p95']:.2f}), "
              f"per batch of 50 {lat['per_batch_50']['mean']:.1f} ms (p95 {lat['per_batch_50']['p95']:.1f})")
    print(f"sizes: model {report['sizes']['model_bytes']:,} bytes, adapter "
          f"{report['sizes']['adapter_bytes']:,} bytes")
    print(f"the rules alone: accuracy {rules['accuracy']:.4f} (they answer "
          f"{rules['answered']:.0%} of the tabs, {rules['accuracy_when_answered']:.0%} of those right)")
    if rules.get("with_guess"):
        print(f"the rules and the word weights' guess for the rest, as without WebGPU: accuracy "
              f"{rules['with_guess']['accuracy']:.4f} (they answer {rules['with_guess']['answered']:.0%} of the tabs)")
    wrong = report["mistakes"]
    if wrong:
        more = len(wrong) > SHOWN_MISTAKES
        print(f"{len(wrong)} mistakes" + (f", the {SHOWN_MISTAKES} most confident:" if more else ":"))
        for m in wrong[:SHOWN_MISTAKES]:
            by = "rules" if m["source"] == "rules" else f"{m['confidence']:.2f}"
            print(f"  {m['label']} as {m['predicted']} ({by}): {m['url']} | {m['title']}")
