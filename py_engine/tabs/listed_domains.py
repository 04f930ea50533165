"""The listed domains: the last step of the fallback rules (rules.py), built from a domain
list that others keep, so that the rules know far more real sites than we could write by hand.

The source is the UT1 blacklists of Université Toulouse Capitole (Fabrice Prigent,
https://dsi.ut-capitole.fr/blacklists/, CC BY-SA 4.0), lists of domains per kind of site that
schools filter with. Each list whose kind is one of the default categories by that category's
own description (categories.py) is taken whole, by this table and nothing else; a domain that
two of them give to different categories is left out, and so is one a hand-written domain rule
names (that rule answers first anyway). No list was cut or edited to suit the evaluation set,
whose real sites these lists know as they know any others.

    python -m py_engine.tabs.listed_domains UT1_DIR [--commit SHA]   # rewrites data/listed_domains.json

UT1_DIR holds blacklists/<list>/domains (a copy of https://github.com/olbat/ut1-blacklists).

The file (CC BY-SA 4.0, as its source):
    {"version": 1, "source": {...}, "lists": {ID: [UT1 list, ...]},
     "domains": {ID: "domain domain ...", ...}}
IDs are category ids; each category's domains are sorted and separated by single spaces (a
compact form that JSON parsers read fast: 87,000 domains load in the service worker).
"""

import argparse
import json
import sys
from pathlib import Path

from ..formats.atomic_file import write_atomically
from .rules import LISTED_FILE, RulesError, is_domain, listed_domains, load_rules, replaceable_file

# UT1 list -> category id, by the categories' descriptions (categories.py): Social is social
# networks, forums and personal messaging (dating sites are people meeting people); Entertainment
# is video, music, games, streaming, film and book sites (manga is books and cartoons); News is
# the press; Work holds work mail, and the rules already put webmail hosts there; Shopping is
# e-commerce. Lists that straddle categories (blog, celebrity, sports, filehosting, jobsearch)
# or match none stay out.
UT1_LISTS = {
    "social_networks": "social", "forums": "social", "chat": "social", "dating": "social",
    "audio-video": "entertainment", "games": "entertainment", "radio": "entertainment",
    "manga": "entertainment",
    "press": "news",
    "webmail": "work",
    "shopping": "shopping",
}
SOURCE = {
    "name": "UT1 blacklists, Université Toulouse Capitole (Fabrice Prigent)",
    "url": "https://dsi.ut-capitole.fr/blacklists/",
    "copy": "https://github.com/olbat/ut1-blacklists",
    "license": "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); this file is "
               "an adaptation of those lists and carries the same license",
}


def build(ut1_dir, hand_domains=(), commit=None):
    """The listed-domains file's object from a UT1 copy in `ut1_dir`, leaving out the
    `hand_domains` (those the hand-written rules name)."""
    root = Path(ut1_dir) / "blacklists"
    found = {}
    for name, category in UT1_LISTS.items():
        path = root / name / "domains"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such UT1 list (is {ut1_dir} a copy of the UT1 blacklists?)")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            domain = line.strip().lower().rstrip(".")
            if is_domain(domain):
                found.setdefault(domain, set()).add(category)
    hand = set(hand_domains)
    domains = {}
    for domain, categories in found.items():
        if len(categories) == 1 and domain not in hand:
            domains.setdefault(categories.pop(), []).append(domain)
    lists = {}
    for name, category in UT1_LISTS.items():
        lists.setdefault(category, []).append(name)
    source = dict(SOURCE, **({"commit": commit} if commit else {}))
    return {"version": 1, "source": source, "lists": lists,
            "domains": {c: " ".join(sorted(domains.get(c, []))) for c in lists}}


def check_out(path):
    """`path` for the file main() writes: new, or a listed-domains file built from UT1."""
    def built_from_ut1(data):
        listed_domains(data, str(path))
        source = data.get("source")
        if not isinstance(source, dict) or source.get("copy") != SOURCE["copy"]:
            raise RulesError(f"{path} has another source")

    return replaceable_file(path, built_from_ut1, "a listed-domains file built from UT1")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m py_engine.tabs.listed_domains", description=__doc__.split("\n\n")[0])
    p.add_argument("ut1_dir", help="a copy of the UT1 blacklists (holding blacklists/<list>/domains)")
    p.add_argument("--commit", help="the copy's commit, recorded in the file")
    p.add_argument("--out", type=check_out, default=str(LISTED_FILE),
                   help="the file to write: new, or a listed-domains file to replace (default: the shipped one)")
    args = p.parse_args(argv)
    hand = {domain for domain, *_ in load_rules(listed=None).domains}
    try:
        data = build(args.ut1_dir, hand, args.commit)
    except FileNotFoundError as e:
        p.error(str(e))
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    write_atomically(args.out, [text.encode("utf-8")])
    counts = {c: len(d.split()) for c, d in data["domains"].items()}
    print(f"wrote {sum(counts.values())} domains to {args.out}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
