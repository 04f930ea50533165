"""html_text's tree against html5lib's (the HTML standard's tree construction, written apart):
on the real pages of tests/pages and on fresh random valid pages that leave out the tags HTML
lets a page leave out (</p>, </li>, </dt>, </dd>, </td>, </th>, </tr>, </tbody>, <html>, <head>,
</head>, <body>, </body>, </html>), every text lands under the same elements. The builder is
simpler than the standard's (no reconstruction of formatting elements, no foster parenting,
a link inside a link closed only across inline elements), so damaged pages may differ; valid
ones may not."""

import random
from pathlib import Path

import html5lib
import pytest

from py_engine.data.html_text import Element, Text, extract_main_text, parse_html

PAGES = sorted((Path(__file__).parent / "pages").glob("*.html"))
# The elements whose nesting decides what the extractor reads as a block or as furniture.
STRUCTURE = frozenset("p li td th tr table ul ol dl dt dd h1 h2 h3 h4 h5 h6 pre article main section "
                      "div nav aside footer header blockquote figure figcaption caption form select "
                      "option a title script style noscript template textarea button head body".split())


def _merged(texts):
    out = []
    for text, chain in texts:
        if out and out[-1][1] == chain:
            out[-1] = (out[-1][0] + " " + text, chain)
        else:
            out.append((text, chain))
    return out


def library_texts(source):
    """(text, the structural elements above it) in document order, from html5lib's tree."""
    out = []

    def walk(element, chain):
        tag = element.tag if isinstance(element.tag, str) else None      # None: a comment
        chain = chain + ((tag,) if tag in STRUCTURE else ())
        if tag is not None and element.text and element.text.strip():
            out.append((" ".join(element.text.split()), chain))
        for child in element:
            walk(child, chain)
            if child.tail and child.tail.strip():
                out.append((" ".join(child.tail.split()), chain))
    walk(html5lib.parse(source, treebuilder="etree", namespaceHTMLElements=False), ())
    return _merged(out)


def our_texts(source):
    out = []

    def walk(node, chain):
        for child in node.children:
            if isinstance(child, Text):
                if child.data.strip():
                    out.append((" ".join(child.data.split()), chain))
            else:
                walk(child, chain + ((child.tag,) if child.tag in STRUCTURE else ()))
    walk(parse_html(source), ())
    return _merged(out)


def test_real_pages_build_the_librarys_tree():
    for path in PAGES:
        source = path.read_text(encoding="utf-8", errors="replace")
        ours, theirs = our_texts(source), library_texts(source)
        # An <svg>'s <title> is SVG's in the library (not in STRUCTURE), HTML's here.
        ours = [(text, tuple(t for t in chain if t != "title" or "head" in chain)) for text, chain in ours]
        assert ours == theirs, path.name


WORDS = "harbour wall stone tide boat rope gull pier lamp sail".split()


class ValidPage:
    """A random valid page, its optional tags left out at random where HTML allows it."""

    def __init__(self, rng):
        self.rng = rng

    def words(self):
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 4)))

    def maybe(self, tag):
        return "" if self.rng.random() < 0.6 else tag

    def inline(self, depth=0):
        rng, out = self.rng, [self.words()]
        for _ in range(rng.randint(0, 2)):
            if depth < 2 and rng.random() < 0.5:
                tag = rng.choice(["a", "b", "em", "span", "code"])
                out.append(f" <{tag}{' href=#' if tag == 'a' else ''}>{self.inline(depth + 1)}</{tag}> {self.words()}")
            elif rng.random() < 0.3:
                out.append(" <br>" + self.words())
        return "".join(out)

    def blocks(self, depth):
        rng = self.rng
        kinds = [rng.choices(["p", "list", "table", "heading", "section", "dl", "pre", "text"],
                             [35, 15, 10, 10, 10 if depth < 3 else 0, 7, 6, 7])[0]
                 for _ in range(rng.randint(1, 4))]
        out = []
        for i, kind in enumerate(kinds):
            after = kinds[i + 1] if i + 1 < len(kinds) else None
            if kind == "p":       # </p> may go where a block, or the parent's end, follows
                out.append(f"<p>{self.inline()}" + (self.maybe("</p>") if after != "text" else "</p>"))
            elif kind == "list":
                tag = rng.choice(["ul", "ol"])
                items = "".join(f"<li>{self.inline() if rng.random() < 0.7 else ''.join(self.blocks(depth + 1))}"
                                + self.maybe("</li>") for _ in range(rng.randint(1, 4)))
                out.append(f"<{tag}>{items}</{tag}>")
            elif kind == "dl":
                out.append("<dl>" + "".join(f"<dt>{self.inline()}{self.maybe('</dt>')}<dd>{self.inline()}"
                                            f"{self.maybe('</dd>')}" for _ in range(rng.randint(1, 3))) + "</dl>")
            elif kind == "table":
                rows = "".join("<tr>" + "".join(f"<{c}>{self.inline()}{self.maybe(f'</{c}>')}" for c in
                                                (rng.choice(["td", "th"]) for _ in range(rng.randint(1, 3))))
                               + self.maybe("</tr>") for _ in range(rng.randint(1, 3)))
                if rng.random() < 0.5:
                    rows = f"<tbody>{rows}{self.maybe('</tbody>')}"
                caption = f"<caption>{self.words()}</caption>" if rng.random() < 0.3 else ""
                out.append(f"<table>{caption}{rows}</table>")
            elif kind == "heading":
                n = rng.randint(1, 6)
                out.append(f"<h{n}>{self.inline()}</h{n}>")
            elif kind == "section":
                tag = rng.choice(["div", "section", "article", "blockquote", "main", "aside", "nav",
                                  "footer", "header", "figure"])
                out.append(f"<{tag}>{''.join(self.blocks(depth + 1))}</{tag}>")
            elif kind == "pre":
                out.append(f"<pre>{self.words()}\n  {self.words()}</pre>")
            else:
                out.append(self.words())
        return out

    def page(self):
        rng = self.rng
        head = f"<title>{self.words()}</title>" + ("<meta charset=utf-8>" if rng.random() < 0.5 else "")
        return ("<!DOCTYPE html>" + self.maybe("<html>") + self.maybe("<head>") + head + self.maybe("</head>")
                + self.maybe("<body>") + "".join(self.blocks(0)) + self.maybe("</body>") + self.maybe("</html>"))


def test_valid_pages_without_their_optional_tags_build_the_librarys_tree():
    seed = random.randrange(1 << 30)
    maker = ValidPage(random.Random(seed))
    for _ in range(400):
        page = maker.page()
        assert our_texts(page) == library_texts(page), f"seed {seed}: {page}"


def test_an_unclosed_heading_closes_at_the_next_as_in_a_browser():
    page = extract_main_text("<body><article><h1>Harbour works<h2>The wall</h2><p>Stones were "
                             "laid again.</p></article></body>")
    assert [b.text for b in page.blocks] == ["# Harbour works", "## The wall", "Stones were laid again."]


@pytest.mark.parametrize("page", [
    # Both <head>'s end tag and <body> are optional: the first content opens the body.
    "<!DOCTYPE html><html><head><meta charset=utf-8><title>Harbour</title><p>The wall is being rebuilt stone by stone.",
    "<title>Harbour</title><p>The wall is being rebuilt stone by stone.</p>",
    "<html><head><title>Harbour</title><noscript><img src=/pixel.gif></noscript><div class=story><p>The wall is "
    "being rebuilt stone by stone.</p></div></html>",
    # What follows </body></html> is the body's, and a second <head> or <body> is ignored.
    "<html><head><title>Harbour</title></head><body><h1>Harbour</h1></body></html>"
    "<p>The wall is being rebuilt stone by stone.</p>",
    "<html><body><article><h1>Harbour</h1><head><meta name=robots content=none></head><body class=other>"
    "<p>The wall is being rebuilt stone by stone.</p></article></body></html>",
])
def test_the_body_is_found_where_a_browser_finds_it(page):
    text = extract_main_text(page).text
    assert "The wall is being rebuilt stone by stone." in text and "Harbour" in text


def test_a_link_inside_a_link_closes_the_first():
    page = "<p>Read <a href=/a>the first <b>part</b> <a href=/b>or the second</a> now.</p>"
    assert our_texts(page) == library_texts(page)
    assert all(chain.count("a") == 1 for text, chain in our_texts(page) if "second" in text)
