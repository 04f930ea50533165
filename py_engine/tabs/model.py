"""The tab classifier: a TextClassifier that reads tabs (url, title) through normalize.tab_text.
Pure Python: this is what the extension's offscreen document runs in Pyodide.

    clf = await TabClassifier.load_deployed("/model", backend="gpu")   # what `tabs deploy` wrote
    clf = await TabClassifier.load(model_dir, adapter_dir)              # any base + adapter
    await clf.predict([("https://github.com/x/y", "x/y: a tool"), ...])
    -> [{"label": "Dev", "probs": {"Dev": 0.97, ...}}, ...]
    await clf.categorise(tabs, load_rules())    # the extension's answer: the model, or the
    -> [{"label", "probs", "source": "model" | "rules"}, ...]   # rules where it is unsure

DEFAULT_ADAPTER is the adapter shipped in the wheel (trained by `py-engine tabs train`; see its
training.json); DEPLOY_MANIFEST names what a deployed directory holds.
"""

import json
from pathlib import Path

from ..formats.json_file import read_json_object
from ..train.classifier import TextClassifier
from .answer import UNSURE_BELOW, choose
from .base_weights import load_base
from .categories import Categories
from .normalize import tab_text
from .rules import categorise_name

DEFAULT_ADAPTER = Path(__file__).parent / "default_adapter"
DEPLOY_MANIFEST = "manifest.json"
CATEGORIES_FILE = "categories.json"     # in an adapter directory: what its labels mean
MAX_LENGTH = 64         # tokens: a tab's text fits (domain, path words, a title of 200 characters)


def as_tab(tab):
    """(url, title) of a tab given as a pair, a dict with url and title, or an object with
    url and title attributes."""
    if isinstance(tab, dict):
        return tab.get("url") or "", tab.get("title") or ""
    if isinstance(tab, (tuple, list)):
        return tab[0] or "", tab[1] or ""
    return getattr(tab, "url", "") or "", getattr(tab, "title", "") or ""


class TabClassifier:
    def __init__(self, classifier, categories=None):
        self.classifier = classifier
        # what the labels mean: the rules name categories by id, the labels by name
        self.categories = categories or Categories.default()

    @property
    def labels(self):
        return self.classifier.labels

    @classmethod
    async def load(cls, model_dir, adapter_dir=DEFAULT_ADAPTER, backend="numpy", device=None,
                   base_dtype="f32", checkpoint=None, max_length=MAX_LENGTH):
        """The base model in `model_dir` (any checkpoint; f16 and int8 shipped ones included)
        with the adapter in `adapter_dir`."""
        checkpoint = checkpoint or load_base(model_dir)
        clf = await TextClassifier.load(model_dir, adapter_dir, backend=backend, device=device,
                                        base_dtype=base_dtype, checkpoint=checkpoint,
                                        max_length=max_length)
        return cls(clf, adapter_categories(adapter_dir))

    @classmethod
    async def load_deployed(cls, directory, backend="numpy", device=None, base_dtype=None):
        """The classifier `py-engine tabs deploy` wrote into `directory` (its manifest says
        where the base model and adapter are and how the GPU should store the base weights;
        `base_dtype` overrides that)."""
        manifest = read_deploy_manifest(directory)
        gpu_dtype = base_dtype or (manifest["gpu_base_dtype"] if backend == "gpu" else "f32")
        return await cls.load(Path(directory) / manifest["base"], Path(directory) / manifest["adapter"],
                              backend=backend, device=device, base_dtype=gpu_dtype)

    async def predict(self, tabs, batch_size=50):
        """[{"label", "probs"}] for each tab ((url, title) pairs, or dicts with url and title)."""
        texts = [tab_text(*as_tab(tab)) for tab in tabs]
        rows = await self.classifier.predict(texts, batch_size=batch_size)
        return [{"label": max(probs, key=probs.get), "probs": probs} for probs in rows]

    async def categorise(self, tabs, rules, batch_size=50, unsure_below=UNSURE_BELOW):
        """What the extension answers for each tab: predict()'s {"label", "probs"} with the
        label chosen by answer.choose between the model and `rules` (rules.Rules), and
        "source" saying which."""
        pairs = [as_tab(tab) for tab in tabs]
        out = []
        for (url, title), p in zip(pairs, await self.predict(pairs, batch_size=batch_size)):
            label, source = choose(p, categorise_name(rules, url, title, self.categories),
                                   unsure_below=unsure_below)
            out.append(dict(p, label=label, source=source))
        return out


def adapter_categories(adapter_dir):
    """The categories an adapter was trained with (its categories.json), else the shipped
    ones."""
    path = Path(adapter_dir) / CATEGORIES_FILE
    if path.is_file():
        return Categories.from_json(path.read_text(encoding="utf-8"), str(path))
    return Categories.default()


def read_deploy_manifest(directory):
    """The manifest of a deployed directory, checked for the entries load_deployed needs."""
    manifest = read_json_object(Path(directory) / DEPLOY_MANIFEST)
    missing = [k for k in ("base", "adapter", "gpu_base_dtype") if not isinstance(manifest.get(k), str)]
    if missing:
        raise ValueError(f"{directory}/{DEPLOY_MANIFEST} lacks {', '.join(missing)}: not a "
                         "directory `py-engine tabs deploy` wrote")
    return manifest


def manifest_bytes(manifest):
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
