"""The categories tabs are sorted into: names the user sees (and the classifier's labels), what
each one holds, and the colour of its tab group. Users rename, add and remove categories; that
is a change of this data (and of the classifier's head: TextClassifier.relabel with
Categories.head_change), never of code.

    cats = Categories.default()
    cats.names()                              # ["Dev", "Social", ..., "News"]: the labels
    cats = cats.renamed("Dev", "Code").added("Research", "papers, preprints").removed("News")
    cats.colour_of("Code")                    # "blue": a category keeps its colour when renamed
    Categories.from_json(cats.to_json()) == cats
    await clf.relabel(cats.names(), renamed=cats.head_change(old_cats))

Each category has an `id` that never changes (the default ones: their lower-cased names), so
that a rename keeps its colour, what the rule set says about it (rules.json names ids), and
its row of the classifier's head. Colours are those chrome.tabGroups offers (COLOURS); an
added category takes the first colour no other category has, in COLOURS order, else the
colour its position gives. Pure Python: this runs in the browser too.
"""

import json
from dataclasses import dataclass, field

COLOURS = ("grey", "blue", "red", "yellow", "green", "pink", "purple", "cyan", "orange")

DEFAULTS = (
    ("dev", "Dev", "programming, code hosting, documentation, developer tools, local dev "
                   "servers", "blue"),
    ("social", "Social", "social networks, forums, personal messaging", "pink"),
    ("entertainment", "Entertainment", "video, music, games, streaming, film and book sites",
     "red"),
    ("work", "Work", "office documents, work mail, calendars, workplace chat, project and CRM "
                     "tools, meetings", "yellow"),
    ("cloud", "Cloud", "cloud consoles, hosting, infrastructure, monitoring", "cyan"),
    ("shopping", "Shopping", "e-commerce, retail, travel booking", "green"),
    ("news", "News", "news outlets, articles, aggregators", "purple"),
)


class CategoryError(ValueError):
    """A category change or file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    description: str = ""
    colour: str = "grey"

    def __post_init__(self):
        for key in ("id", "name"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip() or value != value.strip():
                raise CategoryError(f"a category's {key} must be a non-empty string without "
                                    f"surrounding spaces, got {value!r}")
        if not isinstance(self.description, str):
            raise CategoryError(f"category {self.name!r}: description must be a string")
        if self.colour not in COLOURS:
            raise CategoryError(f"category {self.name!r}: colour {self.colour!r} is not a tab "
                                f"group colour ({', '.join(COLOURS)})")


@dataclass(frozen=True)
class Categories:
    items: tuple = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "items", tuple(self.items))
        if len(self.items) < 2:
            raise CategoryError(f"tabs need at least two categories, got {len(self.items)}")
        for what in ("id", "name"):
            seen = [getattr(c, what) for c in self.items]
            dupes = sorted({x for x in seen if seen.count(x) > 1})
            if dupes:
                raise CategoryError(f"category {what}s must be distinct: {dupes} repeat")
        names = [c.name.casefold() for c in self.items]
        if len(set(names)) != len(names):
            raise CategoryError("category names must differ in more than letter case")

    @classmethod
    def default(cls):
        return cls(tuple(Category(*row) for row in DEFAULTS))

    # --- reading ---

    def names(self):
        """The category names in order: the classifier's labels."""
        return [c.name for c in self.items]

    def get(self, name):
        for c in self.items:
            if c.name == name:
                return c
        raise CategoryError(f"no category named {name!r}; there are {self.names()}")

    def by_id(self, category_id):
        """The category with this id, or None (it was removed)."""
        return next((c for c in self.items if c.id == category_id), None)

    def colour_of(self, name):
        return self.get(name).colour

    # --- changes (each returns new Categories) ---

    def renamed(self, old, new):
        target = self.get(old)
        return Categories(tuple(Category(c.id, new, c.description, c.colour) if c is target else c
                                for c in self.items))

    def added(self, name, description="", colour=None, category_id=None):
        category_id = category_id or self._new_id(name)
        colour = colour or self._free_colour()
        return Categories(self.items + (Category(category_id, name, description, colour),))

    def removed(self, name):
        target = self.get(name)
        return Categories(tuple(c for c in self.items if c is not target))

    def recoloured(self, name, colour):
        target = self.get(name)
        return Categories(tuple(Category(c.id, c.name, c.description, colour) if c is target
                                else c for c in self.items))

    def _new_id(self, name):
        base = "-".join(name.casefold().split()) or "category"
        ids = {c.id for c in self.items}
        candidate, n = base, 2
        while candidate in ids:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    def _free_colour(self):
        used = {c.colour for c in self.items}
        free = [c for c in COLOURS if c not in used]
        return free[0] if free else COLOURS[len(self.items) % len(COLOURS)]

    def head_change(self, before):
        """{old name: new name} of the categories (matched by id) that `before` named
        differently: the `renamed` argument of TextClassifier.relabel(self.names(), ...), which
        keeps every surviving category's row of the head."""
        now = {c.id: c.name for c in self.items}
        return {c.name: now[c.id] for c in before.items if c.id in now and now[c.id] != c.name}

    # --- JSON ---

    def to_dict(self):
        return {"categories": [{"id": c.id, "name": c.name, "description": c.description,
                                "colour": c.colour} for c in self.items]}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data, source="categories"):
        rows = data.get("categories") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise CategoryError(f"{source}: expected an object with a \"categories\" list")
        items = []
        for k, row in enumerate(rows, 1):
            if not isinstance(row, dict) or set(row) - {"id", "name", "description", "colour"}:
                raise CategoryError(f"{source}: category {k} must be an object with id, name, "
                                    "description and colour")
            try:
                items.append(Category(row.get("id"), row.get("name"), row.get("description", ""),
                                      row.get("colour", "grey")))
            except CategoryError as e:
                raise CategoryError(f"{source}: category {k}: {e}") from None
        try:
            return cls(tuple(items))
        except CategoryError as e:
            raise CategoryError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text, source="categories"):
        from ..formats.json_file import parse_json

        return cls.from_dict(parse_json(text, source), source)
