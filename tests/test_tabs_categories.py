"""Tab categories as data (py_engine/tabs/categories.py) and the classifier head following a
change of labels (TextClassifier.relabel) without training from scratch."""

import math
import random

import pytest

from py_engine.data.classification import Example
from py_engine.gpu import run_sync
from py_engine.tabs.categories import COLOURS, Categories, CategoryError
from py_engine.train.classifier import TextClassifier
from py_engine.train.head_rows import label_sources
from py_engine.train.config import ClassifierTrainConfig

from peft_oracle import tiny_bert_dir

ISSUE_DESCRIPTIONS = {
    "Dev": "programming, code hosting, documentation, developer tools, local dev servers",
    "Social": "social networks, forums, personal messaging",
    "Entertainment": "video, music, games, streaming, film and book sites",
    "Work": "office documents, work mail, calendars, workplace chat, project and CRM tools, meetings",
    "Cloud": "cloud consoles, hosting, infrastructure, monitoring",
    "Shopping": "e-commerce, retail, travel booking",
    "News": "news outlets, articles, aggregators",
}


def test_defaults():
    cats = Categories.default()
    assert cats.names() == list(ISSUE_DESCRIPTIONS)
    assert {c.name: c.description for c in cats.items} == ISSUE_DESCRIPTIONS
    colours = [c.colour for c in cats.items]
    assert len(set(colours)) == len(colours) and set(colours) <= set(COLOURS)


def test_changes_keep_ids_and_colours():
    cats = Categories.default()
    changed = cats.renamed("Dev", "Code").added("Research", "papers").removed("News")
    assert changed.names() == ["Code", "Social", "Entertainment", "Work", "Cloud", "Shopping", "Research"]
    assert changed.colour_of("Code") == cats.colour_of("Dev") and changed.get("Code").id == "dev"
    assert changed.colour_of("Research") not in {c.colour for c in cats.items if c.name != "News"}
    assert changed.by_id("news") is None and changed.by_id("research").name == "Research"
    assert changed.head_change(cats) == {"Dev": "Code"}
    again = changed.added("Research 2").added("Research-2")
    assert len({c.id for c in again.items}) == len(again.items)


def test_json_round_trip():
    cats = Categories.default().renamed("Work", "Job").added("Été", "accents survive", "orange")
    assert Categories.from_json(cats.to_json()) == cats


@pytest.mark.parametrize("change, message", [
    (lambda c: c.renamed("Dev", "Social"), "names must be distinct"),
    (lambda c: c.renamed("Dev", "social"), "letter case"),
    (lambda c: c.renamed("Nope", "X"), "no category named 'Nope'"),
    (lambda c: c.added(" padded"), "surrounding spaces"),
    (lambda c: c.recoloured("Dev", "magenta"), "not a tab group colour"),
    (lambda c: Categories(c.items[:1]), "at least two"),
])
def test_bad_changes(change, message):
    with pytest.raises(CategoryError, match=message):
        change(Categories.default())


@pytest.mark.parametrize("text, message", [
    ("[]", "expected an object"), ('{"categories": [{"id": "a"}]}', "name must be"),
    ('{"categories": [{"id": "a", "name": "A", "icon": 1}]}', "must be an object with"),
    ("{", "not valid JSON"),
])
def test_bad_json(text, message):
    with pytest.raises(ValueError, match=message):
        Categories.from_json(text, "cats.json")


def test_label_sources():
    assert label_sources(["a", "b", "c"], ["b", "x", "A"], {"a": "A"}) == [1, None, 0]
    assert label_sources(["a", "b"], ["b", "a"]) == [1, 0]
    assert label_sources(["a", "b"], ["a", "c"], {"b": "c"}) == [0, 1]
    for new, renamed, message in ((["a", "a"], None, "distinct"), (["a", "b"], {"z": "a"}, "not among"),
                                  (["a", "b"], {"a": "q"}, "not in the new labels"),
                                  (["x", "y"], None, "train a new classifier")):
        with pytest.raises(ValueError, match=message):
            label_sources(["a", "b"], new, renamed)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classifier over four labels with a trained (not initial) head."""
    model = tiny_bert_dir(tmp_path_factory.mktemp("tiny"))
    rng = random.Random(0)
    words = "the film was great good bad awful fine movie plot actor scene".split()
    labels = ["a", "b", "c", "d"]
    examples = [Example(" ".join(rng.choice(words) for _ in range(6)), rng.choice(labels)) for _ in range(48)]
    clf = run_sync(TextClassifier.create(model, labels, pooling="mean", seed=1))
    run_sync(clf.fit(examples, ClassifierTrainConfig(epochs=2, lr=5e-2, batch_size=8)))
    texts = [e.text for e in examples[:24]]
    return model, clf, texts


def _fresh(model, clf, tmp_path, name):
    run_sync(clf.save(tmp_path / name))
    return run_sync(TextClassifier.load(model, tmp_path / name))


def test_renaming_keeps_predictions(trained, tmp_path):
    model, clf, texts = trained
    copy = _fresh(model, clf, tmp_path, "rename")
    before = run_sync(copy.predict(texts))
    run_sync(copy.relabel(["d", "bee", "a", "c"], renamed={"b": "bee"}))
    after = run_sync(copy.predict(texts))
    for old, new in zip(before, after):
        for label in "acd":
            assert new[label] == pytest.approx(old[label], rel=1e-6)
        assert new["bee"] == pytest.approx(old["b"], rel=1e-6)
    # the relabelled head is what is saved and loaded again
    again = _fresh(model, copy, tmp_path, "rename2")
    assert again.labels == ["d", "bee", "a", "c"]
    assert run_sync(again.predict(texts))[0]["bee"] == pytest.approx(after[0]["bee"], rel=1e-6)


def test_removing_keeps_the_others_order(trained, tmp_path):
    model, clf, texts = trained
    copy = _fresh(model, clf, tmp_path, "remove")
    before = run_sync(copy.predict(texts))
    run_sync(copy.relabel(["a", "b", "d"]))
    after = run_sync(copy.predict(texts))
    assert copy.model.num_labels == 3
    for old, new in zip(before, after):
        kept = {k: v for k, v in old.items() if k != "c"}
        assert max(new, key=new.get) == max(kept, key=kept.get)
        total = sum(kept.values())
        for label in kept:       # the kept logits are unchanged: renormalised probabilities
            assert new[label] == pytest.approx(kept[label] / total, rel=1e-5)


def test_adding_predicts_nothing_new_until_trained(trained, tmp_path):
    model, clf, texts = trained
    copy = _fresh(model, clf, tmp_path, "add")
    before = run_sync(copy.predict(texts))
    run_sync(copy.relabel(["a", "b", "c", "d", "e"]))
    after = run_sync(copy.predict(texts))
    for old, new in zip(before, after):
        assert max(new, key=new.get) == max(old, key=old.get)
        assert new["e"] <= max(new.values())
        # e's logit is the mean of the others': its probability is their geometric mean
        logs = [math.log(new[k]) for k in "abcd"]
        assert math.log(new["e"]) == pytest.approx(sum(logs) / 4, abs=1e-5)
    # Training then teaches the new label (words the other labels' texts never hold).
    rng = random.Random(2)
    words = "really not very and it is this that of to in".split()
    new = [Example(" ".join(rng.choice(words) for _ in range(6)), "e") for _ in range(24)]
    old = [Example(t, max(p, key=p.get)) for t, p in zip(texts, before)]
    run_sync(copy.fit(new + old, ClassifierTrainConfig(epochs=4, lr=5e-2, batch_size=8)))
    probs = run_sync(copy.predict([e.text for e in new + old]))
    predicted = [max(p, key=p.get) for p in probs]
    assert sum(p == "e" for p in predicted[:24]) >= 20
    assert sum(p == "e" for p in predicted[24:]) <= 4


def test_relabel_on_the_gpu(device, trained, tmp_path):
    """On the GPU runtime the head follows too (a new label count rebuilds the runtime on the
    same device), and the kept logits match the NumPy runtime's."""
    model, clf, texts = trained
    run_sync(clf.save(tmp_path / "gpu"))
    gpu = run_sync(TextClassifier.load(model, tmp_path / "gpu", backend="gpu", device=device))
    host = run_sync(TextClassifier.load(model, tmp_path / "gpu"))
    for c in (gpu, host):
        run_sync(c.relabel(["x", "a", "d"], renamed={"b": "x"}))
    assert gpu.runtime.device is device and gpu.labels == ["x", "a", "d"]
    for g, h in zip(run_sync(gpu.predict(texts)), run_sync(host.predict(texts))):
        for label in h:
            assert g[label] == pytest.approx(h[label], rel=1e-4, abs=1e-6)
