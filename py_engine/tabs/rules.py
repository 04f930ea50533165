"""The rule set that categorises a tab when the model cannot run in time: domain rules and
keyword rules, kept as data (data/rules.json) so that the extension's JavaScript applies the
same rules. This module is the reference evaluator; data/rules_conformance.json lists (url,
title, expected) rows every port must reproduce.

    rules = load_rules()                       # data/rules.json, checked
    categorise(rules, url, title)              # a category id ("dev", ...) or None
    categorise(rules, url, title, guess=True)  # ... and the word weights' guess for the rest
    categorise_name(rules, url, title, cats)   # the current name of that category, or None

The file:
    {"version": 1, "local_dev": ID,
     "domains": [{"domain": D, "category": ID, "path": P (optional), "weak": true (optional)}, ...],
     "keywords": {ID: [KEYWORD, ...], ...}}
IDs are category ids (Categories: "dev", "social", ...), so rules follow a renamed category
and say nothing about a removed one. A domain is lower-case ASCII labels; a path starts with
"/"; a keyword is one or more lower-case words separated by single spaces.

Matching, exactly (a port must do the same, step by step):
1. The URL is parsed as a WHATWG/RFC 3986 URL: the scheme lower-cased; the host lower-cased,
   without brackets around an IPv6 address and without a trailing dot; the port (none where
   it is the scheme's default, "ws://x:80"); the path. A URL that does not parse (one
   without a scheme among them) has an empty host and its whole text as the path.
2. Local dev server: if the host is one (normalize.local_server gives "local dev server":
   localhost, 127.0.0.0/8, 0.0.0.0, ::1, *.localhost, *.test on any port; private IPv4
   addresses and *.local, *.internal, *.lan, *.home.arpa on a port other than the scheme's
   default), the answer is `local_dev`.
3. Domain rules: a rule matches when the host equals its domain or ends with "." + domain,
   and, if it has a path, the URL's path (as written in the URL, not decoded) starts with
   it. Of the matching rules the one with the longest domain wins, then the one with the
   longest path. A winner that is not weak is the answer.
4. Keywords: the words of a text are its maximal runs of letters and digits (Unicode general
   categories L* and N*) after lower-casing (Unicode default case mapping, as str.lower and
   JavaScript's toLowerCase). The text is the title; when the title has no words, the URL's
   path percent-decoded (each maximal run of %XX escapes decoded as UTF-8 when it is valid
   UTF-8, else kept as written). A keyword matches when its words occur consecutively in
   that word list (a run of CJK characters is one word, so a CJK keyword matches only a run
   of its own). Each category scores the number of its distinct keywords that match; the
   one highest score, if it is at least 1 and no other category has it, is the answer.
5. Otherwise the weak domain winner of step 3, if there was one, is the answer.
6. Otherwise the listed domains (data/listed_domains.json, built from a list others keep; see
   listed_domains.py): the host, then each name left when its first label is dropped, in
   turn, down to two labels; the first that is a listed domain gives its category. Else None,
   unless the caller asks for a guess:
7. The word weights (data/word_weights.json, learned from generated tabs: word_weights.py),
   with guess=True only. A tab's features are "h:" + each label of the host, "p:" + each word
   of the path (percent-decoded as in step 4), "t:" + each word of the title, each counted
   once. If the weights know at least one of them, each category scores its bias plus the
   weights of the known features (whole numbers, so every port sums them exactly); the
   highest score wins, a tie going to the category listed first. Else None.
   The extension guesses only where no model will answer (no WebGPU): a wrong guess is then
   better than a tab left ungrouped, while a model that is loading or slow answers later.

The listed-domains file: {"version": 1, "source", "lists", "domains": {ID: "domain domain
..."}}, each category's domains separated by single spaces, none listed twice.

The word-weights file: {"version": 1, "source", "categories": [ID, ...], "bias": [N, ...],
"features": {FEATURE: [N, ...]}}, one whole number per category in each list.
"""

import json
import re
from pathlib import Path

from ..formats.json_file import parse_json, read_utf8
from .normalize import LOCAL_DEV, letter_digit_runs, local_server, split_url

RULES_FILE = Path(__file__).parent / "data" / "rules.json"
CONFORMANCE_FILE = Path(__file__).parent / "data" / "rules_conformance.json"
LISTED_FILE = Path(__file__).parent / "data" / "listed_domains.json"
WEIGHTS_FILE = Path(__file__).parent / "data" / "word_weights.json"


class RulesError(ValueError):
    """A rule file that cannot be used; the message names it and the rule."""


class Rules:
    """A checked rule set: domain rules, keyword lists and the listed domains (see the module
    docstring)."""

    def __init__(self, local_dev, domains, keywords, listed=None, weights=None):
        self.local_dev = local_dev
        self.domains = domains              # [(domain, path or "", weak, category)]
        self.keywords = keywords            # {category: [tuple of words]}
        self.listed = listed or {}          # {domain: category}
        self.weights = weights              # WordWeights, or None

    def categories(self):
        """Every category id the rules can answer."""
        guessed = set(self.weights.categories) if self.weights else set()
        return ({self.local_dev} | {d[3] for d in self.domains} | set(self.keywords)
                | set(self.listed.values()) | guessed)

    @classmethod
    def from_dict(cls, data, source="rules", listed=None, weights=None):
        """The rules of rules.json's object `data`, with the listed domains of the
        listed-domains file's object `listed` and the word weights of the word-weights file's
        object `weights` (None: none)."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise RulesError(f"{source}: expected an object with \"version\": 1")
        local = data.get("local_dev")
        if not isinstance(local, str) or not local:
            raise RulesError(f"{source}: \"local_dev\" must name a category id")
        domains, seen = [], set()
        for k, rule in enumerate(data.get("domains") or [], 1):
            domains.append(_domain_rule(rule, f"{source}: domain rule {k}"))
            key = domains[-1][:2]
            if key in seen:
                raise RulesError(f"{source}: domain rule {k} repeats {key[0]}{key[1]}")
            seen.add(key)
        keywords = {}
        for category, words in (data.get("keywords") or {}).items():
            if not isinstance(words, list) or not all(_is_keyword(w) for w in words):
                raise RulesError(f"{source}: keywords of {category!r} must be a list of lower-case "
                                 "words separated by single spaces")
            keywords[category] = list(dict.fromkeys(tuple(w.split(" ")) for w in words))
        return cls(local, domains, keywords,
                   None if listed is None else listed_domains(listed, f"{source}: listed domains"),
                   None if weights is None else WordWeights.from_dict(weights, f"{source}: word weights"))


class WordWeights:
    """Step 7's weights: `categories` (ids), `bias` and `features` ({feature: [whole number per
    category]})."""

    def __init__(self, categories, bias, features):
        self.categories, self.bias, self.features = categories, bias, features

    @classmethod
    def from_dict(cls, data, source="word weights"):
        if not isinstance(data, dict) or data.get("version") != 1:
            raise RulesError(f"{source}: expected an object with \"version\": 1")
        categories, bias, features = data.get("categories"), data.get("bias"), data.get("features")
        if not (isinstance(categories, list) and categories and len(set(categories)) == len(categories)
                and all(isinstance(c, str) and c for c in categories)):
            raise RulesError(f"{source}: \"categories\" must be a list of distinct category ids")
        whole = lambda v: (isinstance(v, list) and len(v) == len(categories)
                           and all(isinstance(n, int) and not isinstance(n, bool) for n in v))
        if not whole(bias):
            raise RulesError(f"{source}: \"bias\" must hold one whole number per category")
        if not isinstance(features, dict):
            raise RulesError(f"{source}: \"features\" must be an object")
        for feature, row in features.items():
            if not whole(row):
                raise RulesError(f"{source}: feature {feature!r} must hold one whole number per category")
        return cls(list(categories), list(bias), features)

    def guess(self, features):
        """The category the weights give a tab of `features` (an iterable of distinct
        features), or None when they know none of them."""
        known = [self.features[f] for f in features if f in self.features]
        if not known:
            return None
        scores = [b + sum(row[k] for row in known) for k, b in enumerate(self.bias)]
        return self.categories[scores.index(max(scores))]


def listed_domains(data, source="listed domains"):
    """{domain: category id} of a listed-domains file's object, checked."""
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("domains"), dict):
        raise RulesError(f"{source}: expected an object with \"version\": 1 and \"domains\"")
    out = {}
    for category, text in data["domains"].items():
        if not isinstance(text, str) or (text and text.split(" ") != text.split()):
            raise RulesError(f"{source}: the domains of {category!r} must be one string, "
                             "separated by single spaces")
        for domain in text.split():
            if not is_domain(domain):
                raise RulesError(f"{source}: {domain!r} under {category!r} is not a domain of "
                                 "lower-case ASCII labels")
            if domain in out:
                raise RulesError(f"{source}: {domain} is listed twice")
            out[domain] = category
    return out


def is_domain(text):
    """Lower-case ASCII labels (letters, digits, "-") joined by dots, at least two, not an IP
    address."""
    labels = text.split(".")
    return len(labels) >= 2 and not all(label.isdigit() for label in labels) and all(
        label and all(c.isascii() and (c.isalnum() or c == "-") and not c.isupper() for c in label)
        for label in labels)


def _domain_rule(rule, where):
    if not isinstance(rule, dict) or set(rule) - {"domain", "category", "path", "weak"}:
        raise RulesError(f"{where}: expected an object with domain, category, path, weak")
    domain, category = rule.get("domain"), rule.get("category")
    path, weak = rule.get("path", ""), rule.get("weak", False)
    if not isinstance(domain, str) or not is_domain(domain):
        raise RulesError(f"{where}: domain must be lower-case ASCII labels joined by dots, got {domain!r}")
    if not isinstance(category, str) or not category:
        raise RulesError(f"{where}: category must be a category id")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise RulesError(f"{where}: path must start with \"/\", got {path!r}")
    if not isinstance(weak, bool):
        raise RulesError(f"{where}: weak must be true or false")
    return domain, path, weak, category


def _is_keyword(text):
    return isinstance(text, str) and text == text.lower() and text.split(" ") == text.split() \
        and bool(text) and all(words(w) == [w] for w in text.split(" "))


def replaceable_file(path, check, kind):
    """`path` for a command that writes one of the rules' data files: in an existing folder,
    and new or a file `check` accepts (it raises RulesError for any other), so that no other
    file is replaced. An argparse type's errors (ArgumentTypeError) name the path and `kind`."""
    import argparse

    from ..formats.json_file import JsonFileError, read_json_object

    path = Path(path)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no folder {path.parent}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    if path.exists():
        try:
            check(read_json_object(path))
        except (JsonFileError, RulesError) as e:
            raise argparse.ArgumentTypeError(f"{e}: it is not {kind} to replace; give a new path") from None
    return path


def load_rules(path=RULES_FILE, listed=LISTED_FILE, weights=WEIGHTS_FILE):
    """The rules of `path` with the listed domains of `listed` and the word weights of
    `weights` (None: without them)."""
    path = Path(path)
    read = lambda p: None if p is None else parse_json(read_utf8(Path(p)), str(p))
    return Rules.from_dict(read(path), str(path), read(listed), read(weights))


def words(text):
    """The lower-cased runs of letters and digits (Unicode L* and N*) of `text`."""
    return letter_digit_runs(text.lower())


_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def decode_percent(text):
    """`text` with each maximal run of %XX escapes decoded as UTF-8 when it is valid UTF-8,
    else kept as written."""
    def one(match):
        try:
            return bytes.fromhex(match.group(0).replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return match.group(0)

    return _ESCAPES.sub(one, text)


def _url_parts(url):
    """(scheme, host, port, path) as step 1 says: a URL without a scheme ("//x.com/a",
    "x.com/a") does not parse either, as in a browser's URL parser."""
    try:
        split = split_url(url)
    except ValueError:
        return "", "", None, url
    if not split.scheme:
        return "", "", None, url
    return split.scheme.lower(), (split.hostname or "").rstrip("."), split.port, split.path


def _domain_winner(rules, host, path):
    best = None
    for domain, prefix, weak, category in rules.domains:
        if (host == domain or host.endswith("." + domain)) and path.startswith(prefix):
            if best is None or (len(domain), len(prefix)) > (len(best[0]), len(best[1])):
                best = (domain, prefix, weak, category)
    return best


def _keyword_winner(rules, text_words):
    scores = {}
    for category, keywords in rules.keywords.items():
        n = len(text_words)
        scores[category] = sum(any(tuple(text_words[i:i + len(k)]) == k for i in range(n - len(k) + 1))
                               for k in keywords)
    top = max(scores.values(), default=0)
    leaders = [c for c, s in scores.items() if s == top]
    return leaders[0] if top >= 1 and len(leaders) == 1 else None


def features(url, title):
    """Step 7's features of a tab, sorted (see the module docstring)."""
    _, host, _, path = _url_parts((url or "").strip())
    out = {"h:" + label for label in host.split(".") if label}
    out |= {"p:" + w for w in words(decode_percent(path))}
    out |= {"t:" + w for w in words(title or "")}
    return sorted(out)


def categorise(rules, url, title, guess=False):
    """The category id the rules give a tab, or None (see the module docstring); `guess`:
    step 7 too."""
    answer = _matched(rules, url, title)
    if answer is None and guess and rules.weights is not None:
        return rules.weights.guess(features(url, title))
    return answer


def _matched(rules, url, title):
    """Steps 1-6."""
    scheme, host, port, path = _url_parts((url or "").strip())
    if host and local_server(host, scheme, port) == LOCAL_DEV:
        return rules.local_dev
    winner = _domain_winner(rules, host, path) if host else None
    if winner is not None and not winner[2]:
        return winner[3]
    text_words = words(title or "") or words(decode_percent(path))
    keyword = _keyword_winner(rules, text_words)
    if keyword is not None:
        return keyword
    if winner is not None:
        return winner[3]
    return _listed(rules, host) if host else None


def _listed(rules, host):
    labels = host.split(".")
    for k in range(len(labels) - 1):
        category = rules.listed.get(".".join(labels[k:]))
        if category is not None:
            return category
    return None


def categorise_name(rules, url, title, categories, guess=False):
    """categorise(), as the current name of that category in `categories` (None when the
    rules give nothing, or a category that was removed)."""
    category_id = categorise(rules, url, title, guess)
    found = categories.by_id(category_id) if category_id is not None else None
    return found.name if found is not None else None


def load_conformance(path=CONFORMANCE_FILE):
    """[(url, title, expected id or None)] that every implementation of the rules must give."""
    rows = json.loads(read_utf8(path))["cases"]
    return [(row["url"], row["title"], row["expected"]) for row in rows]
