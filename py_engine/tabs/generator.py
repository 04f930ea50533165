"""Synthetic browser tabs for training the tab classifier: realistic (url, title) pairs per
category from the sites, URL paths and title patterns in data/sites.json, with the hard cases a
real tab strip holds, in balanced classes.

    train, validation, stats = generate(size=10000, seed=0, validation=0.1)

Each example is a dict {"url", "title", "text", "label", "kind"}: "text" is the classifier's
input (normalize.tab_text), "kind" is "regular" or the hard case it is. The same (size, seed,
validation) always gives the same examples. Host only (the browser never generates data).

sites.json: {"words": {slot: [values]}, "categories": {label: [site]}, "non_english": {label:
[site]}, "hard_cases": {kind: {"label", "share", "policy", "sites"}}}. A site is {"domains":
[[domain, display name], ...], "pages": [[path, title], ...]} and optionally "scheme" (default
https); a page may name, third, the domains it belongs to (a title naming one site of a family). Templates name slots in braces: a word list of "words" (a value may hold slots of its
own), or a built-in (BUILTINS; {site} is the domain's display name). A slot keeps one value in
an example, so a path and its title agree; in a path the value is written as a slug (lower
case, words joined by "-"; "{slot_}" joins with "_", "{slot+}" with "+", "{slot=}" keeps the
value as it is); in a domain it is lower-cased with everything but letters, digits, "." and "-"
dropped (dots kept). A display name may hold slots too ("The {town} Times"). A bare registrable domain gets "www." in front
a third of the time, as typed URLs do.

Labelling policy for the hard cases (also in stats.json): each hard case's "policy" in
sites.json says which category it takes and why. In short: the category is what the tab is used
for. A programming talk or course on a video site is Dev, and so are developer Q&A sites and
programming forums; a job post on a social network is Work; a news article about a cloud outage
is News (the provider's status page stays Cloud); a local dev server is Dev whatever it serves;
a non-English title takes its content's category; a tab with an empty title takes its URL's.
"unknown_site" puts a page of one of the category's sites on a made-up domain and name, so
that the model learns to read titles and paths rather than to remember domains (real tabs are
mostly on sites no list holds); a made-up domain is never one the generator knows.

data/brands.json: the well-known sites of each category, so that the model knows which real
site belongs where when its tab does not say ("Home | Etsy"); none of the evaluation sets'
sites is on it (data/tabs/eval.jsonl measures sites the model has never seen). {"share",
"policy", "pages": {set: [[path, title], ...]}, "sites": {label: {set: [[domain, display name],
...]}}}: a domain listed under page set "Shopping travel" of label "Shopping" draws its pages
from the generic set "Shopping" and the set "Shopping travel" (a set named as its label stands
alone); its pages are templates as in sites.json, written for any site of the kind ("{site} -
Log In", "{product} | {site}", a bare "{site}", an empty title). The kind "well_known_site"
takes `share` of each class that has well-known sites, drawing a domain uniformly from its
label's list (every site is equally likely, not weighted by its pages). load_sites reads both
files; the well-known sites land in data["well_known"] as {"share", "policy", "sites": {label:
[site]}} with sites in sites.json's form.
"""

import json
import math
import random
import re
import string
from pathlib import Path
from urllib.parse import quote, urlsplit

from .categories import Categories
from .normalize import tab_text

SITES_FILE = Path(__file__).parent / "data" / "sites.json"
BRANDS_FILE = Path(__file__).parent / "data" / "brands.json"
WELL_KNOWN = "well_known_site"     # the example kind of data["well_known"]
DEFAULT_SIZE = 10000
DEFAULT_VALIDATION = 0.1
MAX_TRIES = 50          # draws of a new example before accepting a duplicate

_SLOT = re.compile(r"\{([a-z0-9_]+?)([_+=]?)\}")
_SLUG_BREAK = re.compile(r"[^\w]+|_+")
_DOMAIN_DROP = re.compile(r"[^a-z0-9.-]")
_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "-_"

BUILTINS = {
    "n": lambda rng: str(rng.randint(10, 999999)),
    "n2": lambda rng: str(rng.randint(1, 60)),
    "n3": lambda rng: str(rng.randint(1, 9999)),
    "id": lambda rng: "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice((8, 10, 12, 16)))),
    "b64": lambda rng: "".join(rng.choice(_B64) for _ in range(11)),
    "uuid": lambda rng: "-".join("".join(rng.choice("0123456789abcdef") for _ in range(k))
                                 for k in (8, 4, 4, 4, 12)),
    "meet_code": lambda rng: "-".join("".join(rng.choice(string.ascii_lowercase) for _ in range(k))
                                      for k in (3, 4, 3)),
    "year": lambda rng: str(rng.randint(2019, 2026)),
    "month": lambda rng: f"{rng.randint(1, 12):02d}",
    "day": lambda rng: f"{rng.randint(1, 28):02d}",
}

# Made-up site names (the unknown_site hard case): syllables, an ending, a common TLD.
_ONSETS = ("b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "fl", "gr", "kr", "pl", "pr", "st", "tr", "sk", "qu", "v", "h", "j")
_VOWELS = ("a", "e", "i", "o", "u", "a", "o", "ai", "ea", "io", "ou")
_CODAS = ("", "", "", "n", "r", "x", "l", "m", "s", "k")
_BRAND_ENDINGS = ("", "", "", "ly", "ify", "io", "hq", "ora", "ex", "o")
_BRAND_TLDS = ("com", "com", "io", "app", "net", "co", "org", "dev", "ai", "xyz", "me", "de",
               "fr", "co.uk", "eu", "so", "tv")
_BRAND_PREFIXES = ("", "", "", "app.", "my.", "www.", "go.", "web.")

# Second-level labels under which a registrable domain takes three labels (a short list for
# the domains here; not the Public Suffix List).
SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "ne", "or", "go"})


class GeneratorDataError(ValueError):
    """sites.json refers to something it does not define; the message names it."""


def registrable_domain(host):
    """The registrable part of a host name (example.co.uk, github.com): the last two labels, or
    three under a second-level label such as co.uk or com.au; a port is dropped. Hosts that
    are IP addresses or single labels come back whole."""
    host = host.lower().rsplit("@", 1)[-1].strip("[]")
    host = host.split(":")[0] if host.count(":") == 1 else host
    labels = [x for x in host.rstrip(".").split(".") if x]
    if len(labels) <= 2 or all(x.isdigit() for x in labels):
        return ".".join(labels)
    keep = 3 if labels[-2] in SECOND_LEVEL and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def url_domain(url):
    """registrable_domain of a URL's host ("" for a URL without one)."""
    try:
        return registrable_domain(urlsplit(url).netloc)
    except ValueError:
        return ""


def load_sites(path=SITES_FILE, brands=BRANDS_FILE):
    """sites.json's data, with the well-known sites of `brands` (None: none) in "well_known"."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if brands is not None:
        with open(brands, encoding="utf-8") as f:
            data["well_known"] = well_known_sites(json.load(f))
    return data


def well_known_sites(brands):
    """brands.json's lists as {"share", "policy", "sites": {label: [site]}}: one site per
    domain, its pages the label's generic set plus the set it is listed under."""
    pages = brands["pages"]
    sites = {}
    for label, sets in brands["sites"].items():
        for name, domains in sets.items():
            if name not in pages or label not in pages:
                raise GeneratorDataError(f"brands.json: no page set {name if name not in pages else label!r}")
            site_pages = pages[label] + (pages[name] if name != label else [])
            sites.setdefault(label, []).extend({"domains": [domain], "pages": site_pages}
                                               for domain in domains)
    return {"share": brands["share"], "policy": brands["policy"], "sites": sites}


def slug(value, sep="-"):
    """A URL path segment for a slot value: lower case, words joined by `sep`, percent-encoded."""
    words = [w for w in _SLUG_BREAK.split(value.lower()) if w]
    return quote(sep.join(words), safe="-_+")


class _Example:
    """One example's slot values: drawn once, written in each template's form."""

    def __init__(self, words, rng, site_name):
        self.words, self.rng = words, rng
        self.values = {"site": site_name}

    def value(self, name):
        if name not in self.values:
            if name in BUILTINS:
                self.values[name] = BUILTINS[name](self.rng)
            elif name in self.words:
                self.values[name] = self.fill(self.rng.choice(self.words[name]), "title")
            else:
                raise GeneratorDataError(f"sites.json: unknown slot {{{name}}}")
        return self.values[name]

    def fill(self, template, mode):
        def one(match):
            value = self.value(match.group(1))
            if mode == "title" or match.group(2) == "=":
                return value
            if mode == "domain":
                return _DOMAIN_DROP.sub("", value.lower())
            return slug(value, match.group(2) or "-")

        return _SLOT.sub(one, template)


def _site_weight(site):
    return math.sqrt(len(site["domains"]) * len(site["pages"]))


def made_up_site(rng):
    """(domain, name) of a site that does not exist: a pronounceable brand on a common TLD."""
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                 for _ in range(rng.choice((2, 2, 3)))]
    name = "".join(syllables) + rng.choice(_BRAND_ENDINGS)
    domain = rng.choice(_BRAND_PREFIXES) + name + "." + rng.choice(_BRAND_TLDS)
    return domain, name.capitalize()


def _draw(site, words, rng, brand=None):
    """(url, title) of one page of `site` (on one of the domains it names, if it names any),
    or on the made-up site `brand` ((domain, name)) instead."""
    page = rng.choice(site["pages"])
    path, title = page[:2]
    domains = [d for d in site["domains"] if d[0] in page[2]] if len(page) > 2 else site["domains"]
    domain_template, name = brand or rng.choice(domains)
    example = _Example(words, rng, "")
    example.values["site"] = example.fill(name, "title")
    domain = example.fill(domain_template, "domain")
    if domain.count(".") == 1 and ":" not in domain and rng.random() < 1 / 3:
        domain = "www." + domain
    url = f"{site.get('scheme', 'https')}://{domain}{example.fill(path, 'path')}"
    return url, example.fill(title, "title")


def _pick(sites, rng):
    return rng.choices(sites, weights=[_site_weight(s) for s in sites])[0]


def class_plan(data, label, count):
    """[(kind, number)] of the examples of one class: each hard case's share of `count` (those
    for this label, and those for every label), the rest regular."""
    plan = []
    for kind, case in data["hard_cases"].items():
        if case["label"] in (None, label):
            if kind == "non_english" and not data["non_english"].get(label):
                continue
            plan.append((kind, round(case["share"] * count)))
    well_known = data.get("well_known")
    if well_known and well_known["sites"].get(label):
        plan.append((WELL_KNOWN, round(well_known["share"] * count)))
    plan.append(("regular", count - sum(n for _, n in plan)))
    return plan


def _made_up_site(rng, known):
    """made_up_site, drawn again while it is one of the `known` registrable domains."""
    while True:
        brand = made_up_site(rng)
        if registrable_domain(brand[0]) not in known:
            return brand


def _example(data, label, kind, rng, known):
    words = data["words"]
    if kind == "regular" or kind == "url_only":
        url, title = _draw(_pick(data["categories"][label], rng), words, rng)
        title = "" if kind == "url_only" else title
    elif kind == WELL_KNOWN:
        url, title = _draw(rng.choice(data["well_known"]["sites"][label]), words, rng)
    elif kind == "unknown_site":
        url, title = _draw(_pick(data["categories"][label], rng), words, rng,
                           _made_up_site(rng, known))
    elif kind == "non_english":
        url, title = _draw(_pick(data["non_english"][label], rng), words, rng)
    else:
        url, title = _draw(_pick(data["hard_cases"][kind]["sites"], rng), words, rng)
    return {"url": url, "title": title, "text": tab_text(url, title), "label": label, "kind": kind}


def check_sites(data, labels):
    """A GeneratorDataError unless every category of `labels` has sites and every hard case
    names a known label."""
    missing = [label for label in labels if not data["categories"].get(label)]
    if missing:
        raise GeneratorDataError(f"sites.json has no sites for {missing}")
    for kind, case in data["hard_cases"].items():
        if case["label"] is not None and case["label"] not in labels:
            raise GeneratorDataError(f"sites.json: hard case {kind} labels {case['label']!r}, "
                                     f"not one of {labels}")


def generate(size=DEFAULT_SIZE, seed=0, validation=DEFAULT_VALIDATION, data=None, labels=None):
    """(train, validation, stats): `size` examples in balanced classes (the remainder of
    size / classes going to the first classes), split per class (stratified), validation
    taking round(validation * class size) of each."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a whole number >= 1, got {size!r}")
    if not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation!r}")
    data = data or load_sites()
    labels = labels or Categories.default().names()
    check_sites(data, labels)
    known = generator_domains(data)
    rng = random.Random(seed)
    seen, train, held = set(), [], []
    for k, label in enumerate(labels):
        count = size // len(labels) + (k < size % len(labels))
        rows = []
        for kind, number in class_plan(data, label, count):
            for _ in range(number):
                for _ in range(MAX_TRIES):
                    row = _example(data, label, kind, rng, known)
                    if (row["url"], row["title"]) not in seen:
                        break
                seen.add((row["url"], row["title"]))
                rows.append(row)
        rng.shuffle(rows)
        cut = round(validation * len(rows))
        held += rows[:cut]
        train += rows[cut:]
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held, dataset_stats(train, held, data, size, seed, validation)


def dataset_stats(train, held, data, size, seed, validation):
    """Counts per class, hard case and domain, and the labelling policy of each hard case."""
    def count(rows, key):
        out = {}
        for row in rows:
            out[key(row)] = out.get(key(row), 0) + 1
        return dict(sorted(out.items()))

    rows = train + held
    domains = count(rows, lambda r: url_domain(r["url"]))
    policies = {kind: case["policy"] for kind, case in data["hard_cases"].items()}
    if data.get("well_known"):
        policies[WELL_KNOWN] = data["well_known"]["policy"]
    return {"size": size, "seed": seed, "validation_fraction": validation,
            "examples": {"train": len(train), "validation": len(held)},
            "classes": {"train": count(train, lambda r: r["label"]),
                        "validation": count(held, lambda r: r["label"])},
            "hard_cases": {kind: count([r for r in rows if r["kind"] == kind], lambda r: r["label"])
                           for kind in ["regular", *policies]},
            "hard_case_policy": policies,
            "domain_count": len(domains), "domains": domains}


def generator_domains(data=None, well_known=True):
    """Every registrable domain the generator can write, local hosts left out; without those
    of the well-known sites unless `well_known`. A domain template with slots in its
    registrable part ("{lib}.dev") counts once per value of the slot; slots further left
    ("{company_slug}.atlassian.net") do not change it."""
    data = data or load_sites()
    sites = [s for group in (data["categories"], data["non_english"]) for ss in group.values()
             for s in ss] + [s for case in data["hard_cases"].values() for s in case.get("sites", [])]
    if well_known and data.get("well_known"):
        sites += [s for ss in data["well_known"]["sites"].values() for s in ss]
    out = set()
    for site in sites:
        for template, _ in site["domains"]:
            host = template.split("/")[0].rsplit(":", 1)[0] if not template.startswith("[") else ""
            for expanded in _expansions(registrable_domain(host), data["words"]):
                if expanded.count(".") and not expanded.endswith((".test", ".localhost")) and \
                        not expanded.replace(".", "").isdigit() and expanded != "localhost":
                    out.add(registrable_domain(expanded))
    return out


def _expansions(template, words):
    """`template` with each slot replaced by every value of its word list, as domains are
    written (see _Example.fill)."""
    match = _SLOT.search(template)
    if match is None:
        return [template]
    name = match.group(1)
    if name in BUILTINS:        # numbers (an address's last octet): any one stands for all
        return _expansions(template[:match.start()] + "1" + template[match.end():], words)
    if name not in words:
        raise GeneratorDataError(f"sites.json: a domain uses {{{name}}}, which is not a word list")
    out = []
    for value in words[name]:
        filled = template[:match.start()] + _DOMAIN_DROP.sub("", value.lower()) + template[match.end():]
        out += _expansions(filled, words)
    return out
