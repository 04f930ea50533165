"""TabService: the engine service of the tab extension: browser tabs in, categories out.

    service = TabService(queue="tabs", emit=post_event)          # in the extension's worker
    await service.call("load_tab_model", {"files": {...}, "adapter": {...},
                                          "categories": b'{"categories": [...]}'})
    await service.call("categorise", {"tabs": [{"url": ..., "title": ...}, ...]})
    # {"results": [{"category": "dev", "confidence": 0.97, "probs": {...}, "source": "model"},
    #              ...], "model_ms": ...}
    await service.call("correct_tab", {"url": ..., "title": ..., "category": "news"})

An EngineService (every method of it answers too) over the deployed tab classifier, whose
labels are the categories' ids (py_engine.tabs.categories): a category the user renames keeps
its id, so a rename changes no weight; adding or removing one relabels the head
(EngineService.relabel). The user's categories are kept with the model's training state (one
write: the labels and their meaning never part), under the state name STATE. A tab becomes the
model's input through py_engine.tabs.normalize.tab_text, the function the default adapter was
trained with. Where the model is unsure of a tab the rules answer for it
(py_engine.tabs.answer), except on a site the user corrected: those sites are kept with the
state too (SITES_FILE), so a correction is never undone by the rules. An exported adapter
carries its categories and those sites beside it (IMPORTED_CATEGORIES, IMPORTED_SITES), and
an import brings both back.

Pure Python: this runs in the browser.
"""

import hashlib
import json
import time

from ..formats.json_file import JsonFileError, parse_json
from ..formats.peft_adapter import read_labels
from ..tabs import rules as tab_rules
from ..tabs.answer import choose
from ..tabs.base_weights import load_base
from ..tabs.categories import Categories, Category, CategoryError
from ..tabs.model import MAX_LENGTH
from ..tabs.normalize import parse_tab, tab_text
from .learner import LearnerConfig
from .service import METHODS, EngineService, UserError, _bytes, _json_list

STATE = "tabs"
# How a correction is learned, chosen on generated tabs with the shipped adapter and its int8
# base as deployed (bench/tabs_corrections.py: five sets of ten of the model's mistakes on
# generated tabs corrected, one idle slice each, measured on other generated tabs). At the
# classifier default (3 passes at lr 2e-3, 3 tabs replayed) a few corrections pulled the rest
# along (three: 96.0% -> 71.4%) and were not all learned. One pass at lr 6e-4 keeps them; the
# tabs replayed beside each correction (REPLAY per copy of it, from the background the
# extension ships, tabs.deploy.BACKGROUND_PER_CATEGORY) set how much moves with it: 6 of 224
# left 94.5% / 95.0% (two sets of five), 12 of 672 95.3% / 95.4%, 12 of 1,344 95.7% / 96.3%
# with as many corrections learned (46 of 50 twice); 24 of 1,344 kept 96.3% but learned 41.
# Choosing the replayed tabs nearest the correction (by words) gained nothing.
REPLAY = 12
CORRECTION_TRAINING = {"lr": 6e-4, "epochs": 1}
CATEGORIES_FILE = "app-categories.json"     # a Learner app file (saved with the state)
IMPORTED_CATEGORIES = "categories.json"     # beside an adapter: what its labels are
IMPORTED_SITES = "corrected_sites.json"     # ... and the sites whose corrections it learned
SITES_FILE = "app-corrected-sites.json"     # the sites of the user's corrections (tab_site)
SHIPPED_FILE = "app-shipped.json"           # {"adapter_sha256"}: the adapter the state started from
TAB_METHODS = ("load_tab_model", "categorise", "correct_tab", "tab_texts", "categories",
               "rename_category", "add_category", "remove_category", "reset_tabs")


class TabService(EngineService):
    METHODS = METHODS + TAB_METHODS
    read_checkpoint = staticmethod(load_base)     # the shipped base: f16 or int8 weights

    def __init__(self, queue=STATE, learner=None, **options):
        # tabs it was trained on replayed per correction, and a small step: a few corrections
        # (the user's whole say) would otherwise pull the tabs around them along (see REPLAY)
        learner = learner or LearnerConfig(replay=REPLAY, train=dict(CORRECTION_TRAINING))
        super().__init__(queue=queue, learner=learner, **options)
        # The extension pushes chrome.idle's state in (set_idle_state); until it does, the user
        # counts as active, so that an engine started again does not train while they work.
        self.scheduler.set_idle_state("active")
        self.shipped = None          # the categories the adapter was trained with
        self.cats = None             # the user's categories (ids: the model's labels)
        self.rules = None            # tabs.rules.Rules: they answer where the model is unsure
        self.shipped_sha256 = None   # the shipped adapter's (SHIPPED_FILE)

    # --- the model ---

    async def load_tab_model(self, files=None, adapter=None, categories=None, base_dtype="f32",
                             background=None, rules=None, listed_domains=None):
        """Load the deployed classifier (what `py-engine tabs deploy` wrote): the base
        checkpoint's `files` (f16 or int8 weights), the trained `adapter` (its labels.json
        names the categories, by name or id), the `categories` it was trained with
        (categories.json) and how the GPU keeps the base weights (the deploy manifest's
        gpu_base_dtype). `background`: JSON lines {url, title, label} of tabs it was trained
        on, replayed with the corrections it learns (EngineService.set_background). `rules`
        and `listed_domains`: the deployed rules.json and listed_domains.json (default: the
        ones py_engine ships, where it has them). A saved state (the user's corrections,
        categories) is put back. Returns the model's summary with "categories"."""
        if not files or not adapter or categories is None:
            raise UserError("load_tab_model needs the model's files, its adapter and its "
                            "categories")
        try:
            shipped = Categories.from_json(_bytes(categories).decode("utf-8"), "categories.json")
            rules = _rules(rules, listed_domains)
        except (CategoryError, tab_rules.RulesError, JsonFileError, UnicodeDecodeError) as e:
            raise UserError(str(e)) from None
        adapter = dict(adapter)
        adapter["labels.json"] = _json(_adapter_ids(adapter, shipped))
        if background is not None:
            self.set_background(_background(background, shipped))
        self.shipped_sha256 = _files_sha256(adapter)
        summary = await self.load_model(source="files", name="tab-classifier", files=files,
                                        adapter=adapter, state=STATE, base_dtype=base_dtype,
                                        max_length=MAX_LENGTH)
        started_from = _started_from(self.learner.app_files.get(SHIPPED_FILE))
        if summary["restored"] and started_from not in (None, self.shipped_sha256):
            # An update of the extension shipped another model: it starts from that one, with
            # the user's categories, corrected sites and corrections (learned again), rather
            # than keep the older model the state had made of the shipped one before.
            async with self._using_model():
                await self.learner.close()
                aside, self.learner = await self._set_aside(
                    self.model, "the shipped model changed since this state was trained",
                    why="shipped_changed")
            # the model as it is now (the state may have had other labels)
            summary = dict(self.model.summary(), restored=False, step=0, set_aside=aside)
        # a state saved before the adapter it started from was recorded: taken to be this one's
        self.learner.app_files[SHIPPED_FILE] = self._shipped_file()
        self.shipped = shipped
        self.rules = rules
        saved = self.learner.app_files.get(CATEGORIES_FILE)
        cats = Categories.from_json(saved.decode("utf-8"), CATEGORIES_FILE) if saved else shipped
        self.cats = _matching(cats, shipped, self.model.labels)
        self.learner.app_files[CATEGORIES_FILE] = self.cats.to_json().encode("utf-8")
        return dict(summary, categories=self.cats.to_dict()["categories"])

    def _categories(self):
        if self.cats is None:
            raise UserError("the tab model is not loaded: call load_tab_model first")
        return self.cats

    # --- tabs ---

    async def categorise(self, tabs=None):
        """The category id of each tab ({url, title}), with the model's confidence (its
        probability of that category) and its probabilities by id, and "source": "model", or
        "rules" where the model was unsure and the rules answered (answer.choose; never on a
        site the user corrected). A tab with nothing to go by (no URL or title words) gets
        None. "model_ms": the time the model and the rules took."""
        self._categories()
        texts = _texts(tabs)
        wanted = [i for i, t in enumerate(texts) if t]
        results = [{"category": None, "confidence": None, "probs": None, "source": None, "text": t}
                   for t in texts]
        started = time.perf_counter()
        if wanted:
            corrected = self._corrected_sites()
            for i, p in zip(wanted, await self.predict_many([texts[i] for i in wanted])):
                url, title = _tab(tabs[i])
                category, source = choose(p, tab_rules.categorise(self.rules, url, title),
                                          trusted=tab_site(url, title) in corrected)
                results[i].update(category=category, confidence=p["probs"][category],
                                  probs=p["probs"], source=source)
        return {"results": results, "model_ms": (time.perf_counter() - started) * 1000.0}

    async def correct_tab(self, url=None, title=None, category=None, where=None):
        """The user says this tab belongs in `category` (an id): a top-priority correction."""
        cats = self._categories()
        if cats.by_id(category) is None:
            raise UserError(f"no category with id {category!r}; there are "
                            f"{[c.id for c in cats.items]}")
        (text,) = _texts([{"url": url, "title": title}])
        if not text:
            raise UserError("this tab has nothing to learn from (no address or title words)")
        result = await self.correct(text, category, where or "a tab the user moved")
        site = tab_site(url, title)
        corrected = self._corrected_sites()
        if site and site not in corrected:
            # kept with the state at once: from now on this site is the model's to answer
            self.learner.app_files[SITES_FILE] = _json(sorted(corrected | {site}))
            await self.save()
        return dict(result, text=text)

    def _learner(self, model):
        # every state records the shipped adapter it started from (load_tab_model compares)
        learner = super()._learner(model)
        learner.app_files[SHIPPED_FILE] = self._shipped_file()
        return learner

    def _shipped_file(self):
        return _json({"adapter_sha256": self.shipped_sha256})

    def _carried_app_files(self, files):
        """Of a saved state set aside (EngineService._set_aside), the user's categories (their
        names; the model's labels decide which, see _matching) and the sites they corrected,
        where those files still read."""
        kept = {}
        try:
            Categories.from_json(bytes(files[CATEGORIES_FILE]).decode("utf-8"), CATEGORIES_FILE)
            kept[CATEGORIES_FILE] = bytes(files[CATEGORIES_FILE])
        except (KeyError, CategoryError, JsonFileError, UnicodeDecodeError):
            pass
        try:
            sites = json.loads(bytes(files[SITES_FILE]).decode("utf-8"))
            if isinstance(sites, list) and all(isinstance(s, str) for s in sites):
                kept[SITES_FILE] = _json(sorted(set(sites)))
        except (KeyError, ValueError):
            pass
        return kept

    def _corrected_sites(self):
        saved = self.learner.app_files.get(SITES_FILE)
        return set(json.loads(saved.decode("utf-8"))) if saved else set()

    async def tab_texts(self, tabs=None):
        """The model's input for each tab ({url, title}): tab_text's normalised line."""
        return _texts(tabs)

    # --- categories ---

    async def categories(self):
        return self._categories().to_dict()["categories"]

    async def _keep(self, cats, renamed=None):
        """Make `cats` the user's categories, relabelling the head when the ids changed;
        saved at once, with the state."""
        before = self._categories()
        ids = [c.id for c in cats.items]
        files = {CATEGORIES_FILE: cats.to_json().encode("utf-8")}
        if ids != [c.id for c in before.items]:
            await self.relabel(ids, renamed or {}, app_files=files)
        else:
            self.learner.app_files.update(files)
            await self.save()
        self.cats = cats
        return cats.to_dict()["categories"]

    async def rename_category(self, id=None, name=None):
        cats = self._categories()
        found = cats.by_id(id)
        if found is None:
            raise UserError(f"no category with id {id!r}")
        return await self._keep(_checked(lambda: cats.renamed(found.name, _name(name))))

    async def add_category(self, name=None, description=""):
        """A new category; the model predicts it only once it has learned it from
        corrections (its row of the head starts as the mean of the others)."""
        cats = self._categories()
        return await self._keep(_checked(lambda: cats.added(_name(name), description or "")))

    async def remove_category(self, id=None):
        cats = self._categories()
        found = cats.by_id(id)
        if found is None:
            raise UserError(f"no category with id {id!r}")
        return await self._keep(_checked(lambda: cats.removed(found.name)))

    # --- adapters ---

    async def export_adapter(self):
        """The adapter's files, with the categories its labels are (IMPORTED_CATEGORIES) and
        the sites of the corrections it learned (IMPORTED_SITES): what an import needs to bring
        all of it back."""
        cats = self._categories()
        exported = await super().export_adapter()
        files = dict(exported["files"], **{IMPORTED_CATEGORIES: cats.to_json().encode("utf-8"),
                                           IMPORTED_SITES: _json(sorted(self._corrected_sites()))})
        return dict(exported, files=files)

    async def import_adapter(self, files=None):
        """An adapter exported by the extension (its categories.json and corrected_sites.json
        beside it) or trained on the host (`py-engine tabs train`'s folder; labels by name):
        with a categories.json its categories become the user's, as they were when it was made
        (the head is theirs); without one, its labels (names or ids) must be the current
        categories. The sites the model answers for however unsure become the imported
        adapter's (none for an adapter that comes without them: it learned no correction of
        this user's). Everything is checked before anything changes. Returns the model's
        summary with "categories"."""
        current = self._categories()
        if not files:
            raise UserError("import_adapter needs the adapter's files")
        files = {name: _bytes(data) for name, data in files.items()}
        given = files.pop(IMPORTED_CATEGORIES, None)
        given_sites = files.pop(IMPORTED_SITES, None)
        sites = [] if given_sites is None else _json_list(
            given_sites, f"the imported {IMPORTED_SITES}", "site names")
        try:
            cats = current if given is None else Categories.from_json(
                given.decode("utf-8"), f"the imported {IMPORTED_CATEGORIES}")
        except (CategoryError, JsonFileError, UnicodeDecodeError) as e:
            raise UserError(str(e)) from None
        hint = ("" if given is not None else
                f": import it with the {IMPORTED_CATEGORIES} it was exported with")
        ids = _adapter_ids(files, cats, hint, "the imported adapter")
        if sorted(ids) != sorted(c.id for c in cats.items):
            raise UserError(f"the adapter's labels are not the categories {cats.names()}{hint}")
        cats = _matching(cats, self.shipped, ids)
        files["labels.json"] = _json(ids)
        self.model.check_adapter_files(files, ids)
        keep = {CATEGORIES_FILE: cats.to_json().encode("utf-8"), SITES_FILE: _json(sorted(set(sites)))}
        if ids != self.model.labels:
            await self.relabel(ids, {}, app_files=keep)
        self.learner.app_files.update(keep)
        self.cats = cats
        summary = await super().import_adapter(files)
        return dict(summary, categories=cats.to_dict()["categories"])

    async def reset_tabs(self):
        """Back to the shipped model and categories: the corrections are forgotten."""
        self._categories()
        summary = await self.reset()
        self.cats = self.shipped
        self.learner.app_files[CATEGORIES_FILE] = self.cats.to_json().encode("utf-8")
        await self.save()
        return dict(summary, categories=self.cats.to_dict()["categories"])


def _files_sha256(files):
    """sha256 over {name: bytes} (names sorted): which adapter a state started from."""
    h = hashlib.sha256()
    for name in sorted(files):
        data = _bytes(files[name])
        h.update(f"{name}\0{len(data)}\0".encode("utf-8"))
        h.update(data)
    return h.hexdigest()


def _started_from(saved):
    """The adapter_sha256 a state's SHIPPED_FILE records, or None (none recorded, or it does not
    read: the state is then taken to have started from the adapter shipped now)."""
    try:
        found = json.loads(bytes(saved).decode("utf-8"))["adapter_sha256"] if saved else None
    except (ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, str) else None


def tab_site(url, title):
    """The site of a tab as the model reads it: tab_text's domain part ("github.com", "local
    dev server"); "" for a tab without an address."""
    return parse_tab(url or "", title or "")[0]


def _tab(tab):
    return tab.get("url") or "", tab.get("title") or ""


def _rules(rules, listed_domains):
    """tabs.rules.Rules of rules.json's and listed_domains.json's bytes (None: the files
    py_engine ships)."""
    if rules is None and listed_domains is None:
        # without the word weights: the model answers here, and guesses are for no model at all
        return tab_rules.load_rules(weights=None)
    if rules is None or listed_domains is None:
        raise UserError("load_tab_model needs both rules and listed_domains, or neither")
    return tab_rules.Rules.from_dict(parse_json(_bytes(rules).decode("utf-8"), "rules.json"),
                                     "rules.json",
                                     parse_json(_bytes(listed_domains).decode("utf-8"),
                                                "listed_domains.json"))


def _texts(tabs):
    if not isinstance(tabs, list):
        raise UserError("tabs must be a list of {url, title}")
    out = []
    for i, tab in enumerate(tabs):
        if not isinstance(tab, dict):
            raise UserError(f"tab {i + 1} is not an object with url and title")
        url, title = _tab(tab)
        if not isinstance(url, str) or not isinstance(title, str):
            raise UserError(f"tab {i + 1}: url and title must be strings")
        out.append(tab_text(url, title))
    return out


def _background(data, shipped):
    """[(tab text, category id)] of JSON lines {url, title, label (a name or an id)}."""
    out = []
    for n, line in enumerate(_bytes(data).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label = row["label"]
            found = shipped.by_id(label) or next(c for c in shipped.items if c.name == label)
        except (ValueError, KeyError, TypeError, StopIteration):
            raise UserError(f"background line {n}: expected {{url, title, label}} with a "
                            f"category's name or id") from None
        out.append((tab_text(row.get("url") or "", row.get("title") or ""), found.id))
    return out


def _name(name):
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"a category name must be a non-empty string, got {name!r}")
    return " ".join(name.split())


def _checked(change):
    try:
        return change()
    except CategoryError as e:
        raise UserError(str(e)) from None


def _json(value):
    return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")


def _adapter_ids(adapter, cats, hint="", source="the tab adapter"):
    """The adapter's labels as ids of the categories `cats` (an adapter may name them by name
    or by id); `hint` ends the message of a label that is not one of them."""
    try:
        labels = read_labels(adapter, source)
    except ValueError as e:
        raise UserError(str(e)) from None
    if labels is None:
        raise UserError(f"{source} has no labels.json")
    ids = []
    for label in labels:
        found = cats.by_id(label) or next((c for c in cats.items if c.name == label), None)
        if found is None:
            raise UserError(f"the adapter's label {label!r} is not one of the categories "
                            f"{cats.names()}{hint}")
        ids.append(found.id)
    return ids


def _matching(cats, shipped, ids):
    """`cats` made to hold exactly the categories `ids` names, in that order (the model's
    labels decide: a category the state lacks is dropped; one only the state has is taken
    from the shipped ones, else named after its id)."""
    items = []
    for category_id in ids:
        found = cats.by_id(category_id) or shipped.by_id(category_id)
        if found is None:
            found = Category(category_id, category_id)
        items.append(found)
    return Categories(tuple(items))
