"""`py-engine tabs deploy`: what the extension loads, in one directory (host side).

    DIR/manifest.json             what is where, how the base is stored, accuracy, file hashes
    DIR/base/                     config.json, tokenizer files, the weights (f16 or int8)
    DIR/adapter/                  the PEFT adapter, labels.json, head_config.json (+ its records)
    DIR/categories.json           the categories, their colours (Categories JSON)
    DIR/rules.json                the fallback rules, and rules_conformance.json their test table
    DIR/listed_domains.json       the rules' listed domains (CC BY-SA 4.0, see listed_domains.py)
    DIR/word_weights.json         the rules' guess where no model answers (word_weights.py)

background_tabs(record) is the sample of the adapter's training tabs the extension replays with
the user's corrections (build.py writes it beside the deployed model as background.jsonl).

The base weights are stored as the smallest of int8-embeddings, int8, f16 whose accuracy on
the given labelled tabs stays within TOLERANCE of f32's (or as asked). The directory is filled
beside its destination, reloaded from there through TabClassifier.load_deployed, and swapped
in only when its predictions on the first VERIFY_TABS tabs equal those of the same weights in
memory on the host; a directory that is not an earlier deploy is never replaced.
"""

import hashlib
import shutil
from pathlib import Path

from ..formats.output_dir import OutputDirError, check_output_dir, write_output_dir
from ..formats.peft_adapter import ADAPTER_FILES, load_adapter
from .categories import Categories
from .compress import base_files, compressed_checkpoint
from .evaluate import check_labels
from .model import DEPLOY_MANIFEST, MAX_LENGTH, TabClassifier, manifest_bytes, read_deploy_manifest
from .rules import CONFORMANCE_FILE, LISTED_FILE, RULES_FILE, WEIGHTS_FILE
from .train import CATEGORIES_FILE, TRAINING_RECORD

WRITTEN_BY = "py-engine tabs deploy"
BACKGROUND_PER_CATEGORY = 192      # 1,344 tabs, ~190 KB (see app/tab_service.REPLAY)
CANDIDATES = ("int8-embeddings", "int8", "f16")       # smallest first
TOLERANCE = 0.005
VERIFY_TABS = 32
DEPLOYED = "the extension's model"          # its output kind (formats.output_dir.KINDS)


def check_deploy_dir(to, protected=()):
    """check_output_dir, and a non-empty directory must be an earlier deploy."""
    out = check_output_dir(to, protected, kind=DEPLOYED)
    if out.is_dir() and any(out.iterdir()):
        try:
            manifest = read_deploy_manifest(out)
        except ValueError:
            manifest = {}
        if manifest.get("written_by") != WRITTEN_BY:
            raise OutputDirError(f"cannot write to {to}: it is not a directory `{WRITTEN_BY}` "
                                 "wrote; name a new or empty directory")
    return out


async def _accuracy(model_dir, adapter_dir, checkpoint, tabs):
    clf = await TabClassifier.load(model_dir, adapter_dir, checkpoint=checkpoint)
    predictions = await clf.predict([(t.url, t.title) for t in tabs])
    return sum(p["label"] == t.label for p, t in zip(predictions, tabs)) / len(tabs), predictions


async def choose_base_dtype(model_dir, adapter_dir, tabs):
    """(dtype, {dtype: accuracy}): the smallest candidate within TOLERANCE of f32."""
    from ..models.checkpoint import Checkpoint

    accuracy = {"f32": (await _accuracy(model_dir, adapter_dir, Checkpoint.load(model_dir), tabs))[0]}
    for dtype in CANDIDATES:
        accuracy[dtype] = (await _accuracy(model_dir, adapter_dir,
                                           compressed_checkpoint(model_dir, dtype), tabs))[0]
        if accuracy[dtype] >= accuracy["f32"] - TOLERANCE:
            return dtype, accuracy
    return "f32", accuracy


def _adapter_files(adapter_dir):
    names = list(ADAPTER_FILES) + [CATEGORIES_FILE, TRAINING_RECORD]
    return {n: (Path(adapter_dir) / n).read_bytes() for n in names if (Path(adapter_dir) / n).is_file()}


def _categories_bytes(adapter_files, labels):
    if CATEGORIES_FILE in adapter_files:
        return adapter_files[CATEGORIES_FILE]
    cats = Categories.default()
    if cats.names() != list(labels):
        raise ValueError(f"the adapter's labels {labels} are not the default categories and it "
                         f"has no {CATEGORIES_FILE} saying what they are")
    return cats.to_json().encode("utf-8")


async def deploy(to, model_dir, adapter_dir, tabs, base_dtype="auto", protected=()):
    """Write and verify the deployed directory (see the module docstring); returns a summary."""
    check_deploy_dir(to, protected)
    _, _, labels = load_adapter(adapter_dir)
    check_labels(tabs, labels or [], "the deploy data")
    if base_dtype == "auto":
        base_dtype, accuracy = await choose_base_dtype(model_dir, adapter_dir, tabs)
    else:
        accuracy = {base_dtype: (await _accuracy(model_dir, adapter_dir,
                                                 compressed_checkpoint(model_dir, base_dtype), tabs))[0]}
    adapter = _adapter_files(adapter_dir)
    tree = {**{f"base/{n}": d for n, d in base_files(model_dir, base_dtype).items()},
            **{f"adapter/{n}": d for n, d in adapter.items()},
            CATEGORIES_FILE: _categories_bytes(adapter, labels),
            "rules.json": RULES_FILE.read_bytes(),
            "listed_domains.json": LISTED_FILE.read_bytes(),
            "word_weights.json": WEIGHTS_FILE.read_bytes(),
            "rules_conformance.json": CONFORMANCE_FILE.read_bytes()}
    manifest = {"written_by": WRITTEN_BY, "format": 1, "base": "base", "adapter": "adapter",
                "base_dtype": base_dtype, "gpu_base_dtype": "f16" if base_dtype in ("f16", "f32") else "int8",
                "categories": CATEGORIES_FILE, "rules": "rules.json",
                "listed_domains": "listed_domains.json", "word_weights": "word_weights.json",
                "rules_conformance": "rules_conformance.json", "labels": labels,
                "max_length": MAX_LENGTH, "input": "py_engine.tabs.normalize.tab_text(url, title)",
                "accuracy": {k: round(v, 4) for k, v in accuracy.items()}, "checked_on": len(tabs),
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in sorted(tree.items())}}
    sample = tabs[:VERIFY_TABS]
    _, expected = await _accuracy(model_dir, adapter_dir, compressed_checkpoint(model_dir, base_dtype), sample)
    verified = {}

    def fill(staging):
        for name, data in tree.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        (staging / DEPLOY_MANIFEST).write_bytes(manifest_bytes(manifest))
        verified.update(_verify(staging, sample, expected))

    write_output_dir(to, fill, protected, kind=DEPLOYED)
    return {"to": str(to), "base_dtype": base_dtype, "accuracy": manifest["accuracy"],
            "bytes": {"base": sum(len(d) for n, d in tree.items() if n.startswith("base/")),
                      "adapter": sum(len(d) for n, d in tree.items() if n.startswith("adapter/")),
                      "total": sum(len(d) for d in tree.values())},
            "verified": verified}


def _verify(staging, sample, expected):
    """Reload `staging` as the extension would and compare its predictions on `sample` with
    `expected` (the same weights in memory): the same label for every tab and probabilities
    within 1e-6."""
    from ..gpu import run_sync

    clf = run_sync(TabClassifier.load_deployed(staging))
    got = run_sync(clf.predict([(t.url, t.title) for t in sample]))
    worst = max(abs(g["probs"][k] - e["probs"][k]) for g, e in zip(got, expected) for k in e["probs"])
    same = all(g["label"] == e["label"] for g, e in zip(got, expected))
    if not same or worst > 1e-6:
        raise ValueError(f"the deployed model does not predict what the host does (largest "
                         f"probability difference {worst:.2e}); nothing was replaced")
    return {"tabs": len(sample), "max_probability_difference": worst}


def remove_deploy(to):
    """Delete a directory an earlier deploy wrote (and nothing else)."""
    check_deploy_dir(to)
    shutil.rmtree(to)


def background_tabs(record, per_category=BACKGROUND_PER_CATEGORY):
    """[{url, title, label}]: a class-balanced sample of the tabs an adapter was trained on,
    generated again by the size, seed and validation share its training record (training.json,
    a dict) keeps; the extension replays them with the user's corrections so that it does not
    unlearn the rest (EngineService.set_background)."""
    from .generator import DEFAULT_SIZE, DEFAULT_VALIDATION, generate

    options = record.get("config", record)
    train, _, _ = generate(size=options.get("size", DEFAULT_SIZE), seed=options.get("seed", 0),
                           validation=options.get("validation", DEFAULT_VALIDATION))
    taken, out = {}, []
    for tab in train:                  # the generator's order is already shuffled
        if taken.get(tab["label"], 0) < per_category:
            taken[tab["label"]] = taken.get(tab["label"], 0) + 1
            out.append({k: tab[k] for k in ("url", "title", "label")})
    return out
