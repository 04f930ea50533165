"""Rewritten copies of generated tabs, so that no single part of a tab is enough to classify it
and the model has to learn what the words of its title and path mean (host only).

    extra = augmented(train_rows, share=0.5, seed=0)      # rows to add to the training rows

Each chosen tab comes back once, rewritten in one of REWRITES:
- "made_up_domain": its registrable domain replaced by a made-up brand (generator.made_up_site)
  on a common TLD, the subdomains kept, and the old brand word in the title replaced by the new
  name (real tabs are mostly on domains no list holds);
- "url_only": the title dropped;
- "no_path": the path and query dropped (the domain and title left).
Dropping a part applies to a tab with both a title and path words (so that something other
than the domain is left), the title only where the URL alone gives the label (URL_KINDS: not a
programming talk on a video site, whose title makes it Dev); a made-up domain only to a tab whose path and title keep at least
MIN_WORDS words besides the brand ("Overview | Koyeb" on a made-up domain says nothing of what
the site is, and would teach noise). A tab the drawn rewrite does not apply to is rewritten
another way, or left out. Local and browser tabs are never chosen: their domain text is what
they mean.
"""

import random
import re
from urllib.parse import urlsplit, urlunsplit

from .generator import made_up_site, registrable_domain
from .normalize import local_server, parse_tab, split_url, tab_text

REWRITES = ("made_up_domain", "url_only", "no_path")
MIN_WORDS = 3
URL_KINDS = ("regular", "unknown_site")     # kinds whose label the URL alone gives
_WORD = re.compile(r"[^\W\d_]{3,}")


def augmented(rows, share, seed=0):
    """Rewritten copies of round(share * len(rows)) of `rows` (dicts with url, title, label),
    drawn with `seed`; each copy has "kind" "augment:<rewrite>" and its "text" recomputed."""
    if not 0 <= share <= 1:
        raise ValueError(f"augment share must be in [0, 1], got {share!r}")
    rng = random.Random(seed)
    candidates = [r for r in rows if _rewritable(r["url"])]
    chosen = rng.sample(candidates, min(len(candidates), round(share * len(rows))))
    copies = [rewrite(row, rng.choice(REWRITES), rng) for row in chosen]
    return [row for row in copies if row is not None]


def rewrite(row, how, rng):
    """A copy of `row` rewritten as `how` (one of REWRITES) says, or the other ways in random
    order where that one does not apply, or None where none does (see the module docstring)."""
    others = [r for r in REWRITES if r != how]
    rng.shuffle(others)
    for way in [how, *others]:
        rewritten = _rewritten(row["url"], row["title"], way, rng, row.get("kind", "regular"))
        if rewritten is not None:
            url, title = rewritten
            return {**row, "url": url, "title": title, "text": tab_text(url, title),
                    "kind": f"augment:{way}"}
    return None


def _rewritten(url, title, how, rng, kind):
    split = urlsplit(url)
    has_path = bool(parse_tab(url, "")[1])
    if how == "url_only":
        return (url, "") if title and has_path and kind in URL_KINDS else None
    if how == "no_path":
        return (urlunsplit((split.scheme, split.netloc, "/", "", "")), title) if title and has_path else None
    url, title, name = with_made_up_domain(split, title, rng)
    return (url, title) if content_words(url, title, name) >= MIN_WORDS else None


def with_made_up_domain(split, title, rng):
    """(url, title, name): `split` (a urlsplit result) on a made-up registrable domain, and
    `title` with the old brand (the first label of the registrable domain) written as the new
    name."""
    host = split.hostname or ""
    old = registrable_domain(host)
    domain, name = made_up_site(rng)
    new = registrable_domain(domain)
    netloc = host[:len(host) - len(old)] + new
    brand = old.split(".")[0]
    if len(brand) >= 3:
        title = re.sub(re.escape(brand), name, title, flags=re.IGNORECASE)
    return urlunsplit((split.scheme, netloc, split.path, split.query, "")), title, name


def content_words(url, title, name):
    """How many words of three letters or more the path and title of a tab hold, the brand
    `name` left out."""
    _, path_words, title_text = parse_tab(url, title)
    words = _WORD.findall(" ".join(path_words) + " " + title_text.lower())
    return sum(w != name.lower() for w in words)


def _rewritable(url):
    try:
        split = split_url(url)
        host, port = split.hostname or "", split.port
    except ValueError:              # not a URL a browser loads
        return False
    return split.scheme in ("http", "https") and "." in host and not host.replace(".", "").isdigit() \
        and local_server(host, split.scheme, port) is None
