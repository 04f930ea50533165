"""The word weights: the rules' last step (rules.py, step 7), a guess for the tabs no rule
places, used by the extension where no model will answer (a browser without WebGPU). A linear
classifier (multinomial logistic regression) over the tab's host labels, path words and title
words (rules.features), learned from generated tabs the way the shipped adapter is (the
generator's tabs and their rewritten copies, augment.py), its weights stored as whole numbers
so that every port of the rules adds them up exactly. Host only (NumPy).

    python -m py_engine.tabs.word_weights [--out FILE]     # rewrites data/word_weights.json

On the evaluation tabs the rules alone place 58% (95% of those right); with this guess for
the rest they place all of them (`py-engine tabs eval` reports both).
"""

import argparse
import json
import sys
from collections import Counter

from ..formats.atomic_file import write_atomically
from .augment import augmented
from .categories import Categories
from .generator import generate
from .rules import WEIGHTS_FILE, WordWeights, features, replaceable_file

# The data and the fit, recorded in the file as "source". The generator's tabs as the shipped
# adapter's training.json has them (size 14,000, seed 0, a tenth held out) with one rewritten
# copy each; features seen at least MIN_COUNT times; full-batch Adam. The few choices here
# (min_count, l2, epochs) were read off the generator's validation split.
RECIPE = {"size": 14000, "seed": 0, "validation": 0.1, "augment": 1.0, "min_count": 3,
          "epochs": 100, "lr": 0.05, "l2": 1e-5, "scale": 100}


def learn(rows, categories, min_count=3, epochs=100, lr=0.05, l2=1e-5, scale=100):
    """The word-weights file's "categories", "bias" and "features" learned from `rows`
    ([{"url", "title", "label"}], labels being ids of `categories`): softmax regression with
    an L2 penalty, weights multiplied by `scale` and rounded; features whose weights all round
    to 0 are left out."""
    import numpy as np

    tab_features = [features(r["url"], r["title"]) for r in rows]
    counts = Counter(f for fs in tab_features for f in fs)
    vocab = {f: i for i, f in enumerate(sorted(f for f, n in counts.items() if n >= min_count))}
    pairs = [(i, vocab[f]) for i, fs in enumerate(tab_features) for f in fs if f in vocab]
    row_of = np.array([i for i, _ in pairs])
    feature_of = np.array([j for _, j in pairs])
    labels = np.array([categories.index(r["label"]) for r in rows])
    n, classes = len(rows), len(categories)
    onehot = np.eye(classes)[labels]
    w, b = np.zeros((len(vocab), classes)), np.zeros(classes)
    moments = [(np.zeros_like(w), np.zeros_like(w)), (np.zeros_like(b), np.zeros_like(b))]
    for step in range(1, epochs + 1):
        logits = np.zeros((n, classes))
        np.add.at(logits, row_of, w[feature_of])
        logits += b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        gw = np.zeros_like(w)
        np.add.at(gw, feature_of, g[row_of])
        gw += 2 * l2 * w
        for param, grad, (m, v) in ((w, gw, moments[0]), (b, g.sum(axis=0), moments[1])):
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    whole_w, whole_b = np.rint(w * scale).astype(int), np.rint(b * scale).astype(int)
    kept = {f: whole_w[j].tolist() for f, j in vocab.items() if whole_w[j].any()}
    return {"categories": list(categories), "bias": whole_b.tolist(), "features": kept}


def build(recipe=RECIPE):
    """The word-weights file's object, learned by `recipe`."""
    ids = [c.id for c in Categories.default().items]
    by_name = {c.name: c.id for c in Categories.default().items}
    train, _, _ = generate(size=recipe["size"], seed=recipe["seed"], validation=recipe["validation"])
    train = train + augmented(train, recipe["augment"], seed=recipe["seed"])
    rows = [{"url": r["url"], "title": r["title"], "label": by_name[r["label"]]} for r in train]
    learned = learn(rows, ids, recipe["min_count"], recipe["epochs"], recipe["lr"], recipe["l2"],
                    recipe["scale"])
    return {"version": 1, "source": dict(recipe, tabs=len(rows)), **learned}


def dumps(data):
    """The file's text: one feature a line, so that a change reads as a diff."""
    head = {k: v for k, v in data.items() if k != "features"}
    lines = [json.dumps(head, ensure_ascii=False)[:-1] + ', "features": {']
    items = sorted(data["features"].items())
    lines += [f" {json.dumps(f, ensure_ascii=False)}: {json.dumps(row)}" + ("," if k < len(items) - 1 else "")
              for k, (f, row) in enumerate(items)]
    return "\n".join(lines) + "\n}}\n"


def check_out(path):
    """`path` for the file main() writes: new, or a word-weights file."""
    return replaceable_file(path, lambda data: WordWeights.from_dict(data, str(path)), "a word-weights file")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m py_engine.tabs.word_weights",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=check_out, default=str(WEIGHTS_FILE),
                   help="the file to write: new, or a word-weights file to replace (default: the shipped one)")
    args = p.parse_args(argv)
    data = build()
    write_atomically(args.out, [dumps(data).encode("utf-8")])
    print(f"wrote {len(data['features'])} features to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
