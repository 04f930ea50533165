"""The readable main text of an HTML page: its title, headings, paragraphs, list items, table
rows and code blocks in reading order, without navigation, site headers and footers, scripts,
styles, forms, cookie banners, ad blocks, share bars, related links or comments.

    page = extract_main_text(html_str)
    page.title                      # "How the harbour was rebuilt"
    page.text                       # "# How the harbour was rebuilt\\n\\nThe first ..."
    page.blocks[2].kind, page.blocks[2].start, page.blocks[2].end   # "paragraph", 5120, 5496

Written here, in pure Python over our own HTML tokenizer (html_tokens.py, the WHATWG
standard's, checked against html5lib), so that it runs in Pyodide's core and reads a page
alike on the host and in the browser, whatever their Python's html.parser. Its output is
checked against trafilatura (the reference extractor on the host) on realistic pages in
tests/pages/, with main-text recall and boilerplate leakage measured on gold texts marked up
by hand (tests/test_import_website.py).

Nothing on the page is executed or fetched: scripts, styles, iframes and event handlers are
markup to skip, never code to run; images and links are never loaded.

How the main text is found, in order:
1. The markup is parsed into a tree with HTML's implied end tags (a <p> closes at the next
   block, an <li> at the next <li>, a heading at the next heading, ...) and its implied <head>
   and <body> (both optional in HTML). Every text keeps its character span in the source.
2. Content that is never main text is cut: scripts, styles, templates, noscript, iframes,
   embedded media, form controls, hidden elements (hidden, aria-hidden, display:none).
3. Page furniture is cut: <nav>, <aside>, <footer>, <dialog>, forms, a <header> that is not
   inside an <article>, <main> or <section>; ARIA roles navigation, banner, contentinfo,
   complementary, search, dialog, menu, toolbar; and elements whose class or id words name
   furniture (cookie, consent, ad, sponsor, newsletter, share, social, related, comments,
   sidebar, breadcrumb, menu, footer, pagination, signature, ...; BOILERPLATE_WORDS). An element
   holding the page's <main> or <article>, or (on a page without them) most of its text, is
   never cut this way: such class words on a wrapper are layout, not furniture.
4. The main container is the <main> (or role=main) element with the most text, else the
   <article> with the most text (or the common parent of several comparable ones, as posts of a
   thread), else <body>.
5. Its content is laid out as blocks: headings ("## Heading", "#" per level), paragraphs,
   list items ("- item", "1. item", indented per depth), table rows ("cell | cell"; a table
   that lays out blocks rather than data is read as flow), code ("```" fenced, whitespace
   kept). Whitespace is collapsed outside <pre>; <br> is a line break.
6. Link lists are cut (a list most of whose items are mostly link text, a paragraph or row
   that is mostly link text: "Related", "Tags", a table of contents), and so is a heading
   left with no text under it.
7. The title (the container's first <h1>, else og:title, else the longest part of <title>)
   opens the text unless a heading already says it.
"""

import re
from dataclasses import dataclass

from .html_tokens import WHITESPACE as WHITESPACE_CHARS, tokenize

VOID = frozenset("area base br col embed hr img input link meta param source track wbr "
                 "keygen frame".split())
INLINE = frozenset("a abbr b bdi bdo big cite code data del dfn em font i ins kbd mark nobr q "
                   "rp rt ruby s samp small span strike strong sub sup time tt u var wbr "
                   "label".split())
HEADINGS = {f"h{n}": n for n in range(1, 7)}
# What a page's <head> holds; any other element, or text, before a <body> tag opens the body.
HEAD_CONTENT = frozenset("base basefont bgsound link meta title noscript noframes style script "
                         "template".split())
# Never main text, whatever the page: skipped with everything inside.
SKIPPED = frozenset("script style template noscript svg math canvas iframe frame frameset "
                    "object embed applet video audio source track map area picture img input "
                    "button select option optgroup textarea datalist output progress meter "
                    "head title meta link base marquee".split())
# Page furniture: cut unless it holds the main content.
FURNITURE = frozenset("nav aside footer dialog form menu".split())
FURNITURE_ROLES = frozenset("navigation banner contentinfo complementary search dialog "
                            "alertdialog menu menubar toolbar".split())
# Words in class and id attributes (split at non-letters and camelCase) that name furniture.
BOILERPLATE_WORDS = frozenset("""
    ad ads adv advert adverts advertisement advertising adsbygoogle adslot adunit dfp
    sponsor sponsored promo promoted banner cookie cookies consent gdpr onetrust
    newsletter subscribe subscription signup paywall popup modal overlay
    share shares sharing sharebar social breadcrumb breadcrumbs sidebar related recommended
    recommendations trending popular mostread outbrain taboola disqus
    comment comments commentlist respond footer masthead navbar nav navigation navbox menu
    skip skiplink pagination pager toolbar bar widget widgets signature tags tagcloud
    author byline bio postprofile userinfo rating meta toc catlinks editsection
    printfooter noprint button buttons btn werbung anzeige publicidad publicite
    """.split())
# Stems that also match glued words (cookiebanner, relatedposts, sharedaddy, sidebarleft).
BOILERPLATE_STEMS = ("advert", "sponsor", "cookie", "consent", "gdpr", "newsletter",
                     "breadcrumb", "sidebar", "outbrain", "taboola", "disqus", "paywall",
                     "social", "share", "related", "recommend", "comment", "promo", "popup",
                     "navbar", "navbox", "navigation", "pagination", "widget", "footer",
                     "masthead", "menu", "subscribe")
HIDDEN_CLASSES = frozenset("sr-only visually-hidden screen-reader-text d-none hide hidden "
                           "invisible".split())
# A class that shows the element again on wider screens (Bootstrap's d-md-block, Tailwind's
# md:block): hidden on phones only, so shown to a reader at a desk.
SHOWN_ON_WIDE_SCREENS = re.compile(r"^(?:d-(?:sm|md|lg|xl|xxl)-(?!none)|(?:sm|md|lg|xl|2xl):"
                                   r"(?!hidden|sr-only))")
# The text of a link to its own heading (Sphinx's and many blogs' permalink anchors).
PERMALINK_MARKS = frozenset("\u00b6 \u00a7 # \U0001f517 \u2693".split())
HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
# Implied end tags: a start tag of the key closes these open elements first.
P_CLOSERS = frozenset("address article aside blockquote details dialog div dl fieldset "
                      "figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr li "
                      "main menu nav ol p pre section table ul dd dt".split())
# Implied end tags: a start tag of the key closes the nearest open element named in its value
# (and whatever is open inside that), searching no further up than its scope.
IMPLIED = {"li": ("li",), "dt": ("dt", "dd"), "dd": ("dt", "dd"), "tr": ("tr",),
           "td": ("td", "th"), "th": ("td", "th"), "option": ("option",),
           "thead": ("thead", "tbody", "tfoot"), "tbody": ("thead", "tbody", "tfoot"),
           "tfoot": ("thead", "tbody", "tfoot")}
SCOPE = {"li": ("ul", "ol", "menu"), "dt": ("dl",), "dd": ("dl",), "tr": ("table",),
         "td": ("tr", "table"), "th": ("tr", "table"), "option": ("select",),
         "thead": ("table",), "tbody": ("table",), "tfoot": ("table",),
         "p": ("button", "td", "th", "caption", "object", "marquee", "template")}
LINE_BREAK = object()      # a <br> among the texts of a block
MAX_DEPTH = 200            # deeper markup is flattened, so nothing recurses without bound
DOMINANT = 0.7             # share of the text that makes one part of a page its content
LINK_DENSE = 0.5           # share of a block's characters in links that makes it a link block
WHITESPACE = re.compile(r"[ \t\n\r\f\xa0]+")
TITLE_SEPARATORS = re.compile(r"\s+[|\-\u2013\u2014\u00b7:]{1,2}\s+")


class Text:
    __slots__ = ("data", "start", "end")

    def __init__(self, data, start):
        self.data, self.start, self.end = data, start, start


class Element:
    __slots__ = ("tag", "attrs", "parent", "children", "start", "end")

    def __init__(self, tag, attrs, parent, start):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children, self.start, self.end = [], start, start

    def elements(self):
        """This element and every element below it, in document order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(c for c in reversed(node.children) if isinstance(c, Element))

    def text(self):
        return "".join(t.data for t in self.texts())

    def texts(self):
        stack = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, Text):
                yield node
            else:
                stack.extend(reversed(node.children))

    def ancestors(self):
        """The parent, its parent, ... up to the document."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def has_ancestor(self, tags):
        return any(node.tag in tags for node in self.ancestors())


class TreeBuilder:
    """A tree from the tokenizer's tokens (html_tokens.py), with HTML's common implied end tags
    and every node's character span in the source."""

    def __init__(self):
        self.root = Element("#document", {}, None, 0)
        self.stack = [self.root]
        self.html = self.head = self.body = None     # the document's first of each

    def build(self, source):
        for token in tokenize(source):
            if token.kind == "start":
                self.start_tag(token)
            elif token.kind == "end":
                self.end_tag(token)
            elif token.kind == "text":
                self.text(token)
        for element in self.stack:
            element.end = len(source)
        return self.root

    def start_tag(self, token):
        tag, start = token.name, token.start
        # The document's frame, as browsers build it: a second <html>, <head> or <body> (or a
        # <head> after the body began) is ignored; content other than the head's opens the
        # body where no <body> tag does (both tags are optional), closing the head.
        if tag == "html" and self.html is not None or tag == "head" and (
                self.head is not None or self.body is not None):
            return
        if tag == "body":
            if self.body is not None:
                return
            self.leave_head(start)
        elif tag not in HEAD_CONTENT and tag != "html" and tag != "head" and self.body is None:
            self.open_body(start)
        elif tag in HEAD_CONTENT and self.head is None and self.body is None:
            self.open_implied("head", start)
        if tag in P_CLOSERS:
            self.close_implied(("p",), SCOPE["p"], start)
        if tag in IMPLIED:
            self.close_implied(IMPLIED[tag], SCOPE[tag], start)
        if tag in HEADINGS and self.stack[-1].tag in HEADINGS:    # <h1>Title<h2>: two headings
            self.stack.pop().end = start
        if tag == "a":
            self.close_open_link(start)
        parent = self.stack[-1]
        element = Element(tag, dict(token.attrs), parent, start)
        parent.children.append(element)
        if tag in ("html", "head", "body"):
            setattr(self, tag, element)
        if tag in VOID:
            return
        if token.self_closing:          # <div/>: read as an empty element
            return
        if len(self.stack) < MAX_DEPTH:
            self.stack.append(element)

    def close_from(self, i, position):
        """Close the open elements from the i-th of the stack up, ending them at `position`."""
        for element in self.stack[i:]:
            element.end = position
        del self.stack[i:]

    def close_implied(self, tags, scope, position):
        for i in range(len(self.stack) - 1, 0, -1):
            tag = self.stack[i].tag
            if tag in tags:
                self.close_from(i, position)
                return
            if tag in scope or tag in ("table", "body", "html"):
                return

    def close_open_link(self, position):
        """A link inside a link closes the first, as browsers' adoption agency does where only
        inline elements are open inside it (with a block between, the nesting is left)."""
        for i in range(len(self.stack) - 1, 0, -1):
            tag = self.stack[i].tag
            if tag == "a":
                self.close_from(i, position)
                return
            if tag not in INLINE:
                return

    def leave_head(self, position):
        """Close whatever is open above <html> (the head and what it holds)."""
        self.close_from(self.stack.index(self.html) + 1 if self.html in self.stack else 1, position)

    def open_body(self, position):
        """The implied <body>, at `position`."""
        self.leave_head(position)
        self.open_implied("body", position)

    def open_implied(self, tag, position):
        """An element no tag opens (<head>, <body>), at `position` in the current node."""
        parent = self.stack[-1]
        element = Element(tag, {}, parent, position)
        parent.children.append(element)
        self.stack.append(element)
        setattr(self, tag, element)

    def end_tag(self, token):
        if token.name in ("body", "html"):      # browsers keep the body open for what follows
            return
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == token.name:
                self.close_from(i, token.start)
                return
        # A stray end tag (</p> with no <p> open) is ignored, as browsers mostly do.

    def text(self, token):
        data = token.data.replace("\0", "")       # NUL in text is dropped, as browsers drop it
        if self.body is None and self.stack[-1].tag in ("#document", "html", "head", "noscript") \
                and data.strip(WHITESPACE_CHARS):
            self.open_body(token.start)           # text before any <body> is the body's
        children = self.stack[-1].children
        if children and isinstance(children[-1], Text) and children[-1].end == token.start:
            children[-1].data += data            # text on both sides of a dropped "</>"
            children[-1].end = token.end
        elif data:
            text = Text(data, token.start)
            text.end = token.end
            children.append(text)


def parse_html(source):
    """The element tree of an HTML string (a "#document" root)."""
    return TreeBuilder().build(source)


@dataclass
class Block:
    """One block of the main text. kind: "title", "heading", "paragraph", "item", "row" or
    "code"; text: as written into the page's text (with its Markdown marker); level: the
    heading's level (1-6; 1 for the title); start, end: its character span in the HTML source;
    link_chars: how many of its characters are link text."""
    kind: str
    text: str
    level: int = 0
    start: int = 0
    end: int = 0
    link_chars: int = 0
    group: int = 0                      # the list or table it belongs to (0: none)
    heading_text: str = ""              # for headings: the text without its marker


@dataclass
class Page:
    title: str
    blocks: list
    lang: str = ""

    @property
    def text(self):
        """The main text: blocks joined by blank lines, the items of a list and the rows of a
        table by single line breaks."""
        return "".join(sep + b.text for sep, b in zip(self.separators(), self.blocks))

    def separators(self):
        """What goes before each block in `text`."""
        out, previous = [], None
        for block in self.blocks:
            if previous is None:
                out.append("")
            elif (block.kind == previous.kind and block.kind in ("item", "row")
                  and block.group == previous.group):
                out.append("\n")
            else:
                out.append("\n\n")
            previous = block
        return out

    def block_offsets(self):
        """(start, end) of each block within `text`."""
        offsets, at = [], 0
        for sep, block in zip(self.separators(), self.blocks):
            at += len(sep)
            offsets.append((at, at + len(block.text)))
            at += len(block.text)
        return offsets


def extract_main_text(source):
    """The Page (title, blocks) of an HTML document given as a str."""
    root = parse_html(source)
    head = page_metadata(root)
    body = next((e for e in root.elements() if e.tag == "body"), root)
    remove_furniture(body)
    container = main_container(body)
    blocks = Layout().run(container)
    blocks = drop_link_blocks(blocks)
    title = choose_title(container, head, body)
    blocks = drop_empty_headings(blocks)
    return Page(title, with_title(blocks, title), head.get("lang", ""))


def page_metadata(root):
    """<title>, og:title and the document language."""
    meta = {}
    for element in root.elements():
        if element.tag == "title" and "title" not in meta:
            meta["title"] = clean(element.text())
        elif element.tag == "meta":
            prop = (element.attrs.get("property") or element.attrs.get("name") or "").lower()
            if prop == "og:title" and element.attrs.get("content"):
                meta["og:title"] = clean(element.attrs["content"])
        elif element.tag == "html" and element.attrs.get("lang"):
            meta["lang"] = element.attrs["lang"]
    return meta


def clean(text):
    return WHITESPACE.sub(" ", text).strip()


def class_words(element):
    """The words of an element's class and id attributes, lowercased (camelCase split)."""
    names = f"{element.attrs.get('class', '')} {element.attrs.get('id', '')}"
    names = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", names).lower()
    return [w for w in re.split(r"[^a-z0-9]+", names) if w]


def names_furniture(element):
    words = class_words(element)
    return any(w in BOILERPLATE_WORDS or w.startswith(BOILERPLATE_STEMS) for w in words)


def is_hidden(element):
    attrs = element.attrs
    if "hidden" in attrs or attrs.get("aria-hidden", "").lower() == "true":
        return True
    if attrs.get("type", "").lower() == "hidden" or HIDDEN_STYLE.search(attrs.get("style", "")):
        return True
    classes = attrs.get("class", "").lower().split()
    return (any(c in HIDDEN_CLASSES for c in classes)
            and not any(SHOWN_ON_WIDE_SCREENS.match(c) for c in classes))


def is_permalink(element):
    return (element.tag == "a" and element.attrs.get("href", "").startswith("#")
            and clean(element.text()) in PERMALINK_MARKS)


def is_main_marker(element):
    return element.tag in ("main", "article") or element.attrs.get("role", "").lower() == "main"


def remove_furniture(body):
    """Cut what is never main text, then page furniture (see the module's docstring)."""
    holds_marker = set()                      # <main>, <article> and their ancestors
    for element in body.elements():
        if is_main_marker(element):
            node = element
            while node is not None:
                holds_marker.add(id(node))
                node = node.parent
    prune(body, lambda e: e.tag in SKIPPED or (id(e) not in holds_marker
                                               and (is_hidden(e) or is_permalink(e))))
    has_marker = any(is_main_marker(e) for e in body.elements())
    total = len(clean(body.text())) or 1

    def furniture(element):
        if element.tag in ("body", "html") or id(element) in holds_marker:
            return False
        role = element.attrs.get("role", "").lower()
        cut = (element.tag in FURNITURE or role in FURNITURE_ROLES
               or (element.tag == "header"
                   and not element.has_ancestor(("article", "main", "section")))
               or names_furniture(element))
        if cut and not has_marker and len(clean(element.text())) > 0.6 * total:
            return False                # a wrapper of most of the page, whatever its class
        return cut

    prune(body, furniture)


def prune(node, cut):
    stack = [node]
    while stack:
        element = stack.pop()
        kept = []
        for child in element.children:
            if isinstance(child, Element) and cut(child):
                continue
            kept.append(child)
            if isinstance(child, Element):
                stack.append(child)
        element.children = kept


def main_container(body):
    def size(element):
        return len(clean(element.text()))

    mains = [e for e in body.elements()
             if e.tag == "main" or e.attrs.get("role", "").lower() == "main"]
    mains = [e for e in mains if size(e)]
    if mains:
        return max(mains, key=size)
    articles = [e for e in body.elements() if e.tag == "article" and not e.has_ancestor(("article",))]
    sized = [(size(e), e) for e in articles]
    sized = [(n, e) for n, e in sized if n]
    if not sized:
        return dominant_part(body)
    largest = max(n for n, _ in sized)
    comparable = [e for n, e in sized if n >= 0.2 * largest]
    if len(comparable) == 1:
        return comparable[0]
    return common_ancestor(comparable)


def dominant_part(element):
    """The innermost block below `element` that holds most of its text (DOMINANT of the text
    outside links, at each step down): on a page without <main> or <article>, the cell or
    column of the content, without the unmarked menus and footers around it."""
    weights = text_weights(element)
    while True:
        children = [c for c in element.children if isinstance(c, Element) and c.tag not in INLINE]
        best = max(children, key=lambda c: weights[id(c)], default=None)
        if best is None or weights[id(best)] < DOMINANT * weights[id(element)]:
            return element
        element = best


def text_weights(root):
    """{id(element): characters of its text outside links}, for every element below root."""
    weights = {}
    order = list(root.elements())
    for element in reversed(order):                  # children before their parents
        total = 0
        for child in element.children:
            if isinstance(child, Text):
                total += len(child.data.strip())
            elif not (child.tag == "a" and "href" in child.attrs):
                total += weights[id(child)]
        weights[id(element)] = total
    return weights


def common_ancestor(elements):
    def path(e):
        chain = []
        while e is not None:
            chain.append(e)
            e = e.parent
        return chain[::-1]

    paths = [path(e) for e in elements]
    common = paths[0][0]
    for nodes in zip(*paths):
        if any(n is not nodes[0] for n in nodes):
            break
        common = nodes[0]
    return common


class Layout:
    """Blocks from a container's tree, in document order."""

    def __init__(self):
        self.blocks = []
        self.pieces = []                 # (text, start, end, in_link) of the block being read
        self.lists = []                  # [(ordered, number, group id)] of the open lists
        self.item_marker = None          # the marker of the list item read now, until used
        self.groups = 0

    def run(self, container):
        self.flow(container, in_link=False)
        self.flush()
        return self.blocks

    def flow(self, node, in_link):
        for child in node.children:
            if isinstance(child, Text):
                self.pieces.append((child.data, child.start, child.end, in_link))
                continue
            tag = child.tag
            if tag in INLINE:
                self.flow(child, in_link or (tag == "a" and "href" in child.attrs))
            elif tag == "br":
                self.pieces.append((LINE_BREAK, child.start, child.start, in_link))
            elif tag in HEADINGS:
                self.flush()
                self.heading(child)
            elif tag in ("pre", "xmp", "listing", "plaintext"):
                self.flush()
                self.code(child)
            elif tag == "table" and not is_layout_table(child):
                self.flush()
                self.table(child)
            elif tag in ("ul", "ol", "dl"):
                self.flush()
                self.groups += 1
                start = child.attrs.get("start", "1")
                self.lists.append([tag == "ol", int(start) if start.isdigit() else 1, self.groups])
                self.flow(child, in_link)
                self.flush()
                self.lists.pop()
            elif tag in ("li", "dt", "dd"):
                self.flush()
                if self.lists:
                    ordered, number, _ = self.lists[-1]
                    indent = "  " * (len(self.lists) - 1)
                    self.item_marker = f"{indent}{number}. " if ordered else f"{indent}- "
                    self.lists[-1][1] += 1
                self.flow(child, in_link)
                self.flush()
                self.item_marker = None
            else:                        # any other element is a block boundary
                self.flush()
                self.flow(child, in_link)
                self.flush()

    def flush(self):
        pieces, self.pieces = self.pieces, []
        text = inline_text(p[0] for p in pieces)
        if not text:
            return
        links = sum(len(clean(p[0])) for p in pieces if p[3] and p[0] is not LINE_BREAK)
        start = min(p[1] for p in pieces)
        end = max(p[2] for p in pieces)
        group = self.lists[0][2] if self.lists else 0     # the outermost list's
        if self.item_marker is not None:
            self.blocks.append(Block("item", self.item_marker + text, len(self.lists), start, end,
                                     links, group))
            self.item_marker = ""        # later blocks of the same item: no marker again
        else:
            self.blocks.append(Block("paragraph", text, 0, start, end, links, group))

    def heading(self, element):
        text = one_line(element)
        if text:
            level = HEADINGS[element.tag]
            self.blocks.append(Block("heading", "#" * level + " " + text, level, element.start,
                                     element.end, 0, 0, text))

    def code(self, element):
        text = "".join("\n" if p is LINE_BREAK else p for p in flow_pieces(element)).strip("\n")
        if text.strip():
            self.blocks.append(Block("code", "```\n" + text.rstrip() + "\n```", 0, element.start,
                                     element.end))

    def table(self, element):
        self.groups += 1
        for part in table_parts(element):
            if part.tag == "caption":
                text = inline_text(flow_pieces(part))
                if text:
                    self.blocks.append(Block("paragraph", text, 0, part.start, part.end))
                continue
            cells = [c for c in part.children if isinstance(c, Element) and c.tag in ("td", "th")]
            texts = [one_line(c) for c in cells]
            if any(texts):
                links = sum(len(clean(a.text())) for c in cells for a in c.elements()
                            if a.tag == "a" and "href" in a.attrs)
                self.blocks.append(Block("row", " | ".join(texts), 0, part.start, part.end, links,
                                         self.groups))


def table_parts(table):
    """The caption and rows of a table (not of tables inside it), in order."""
    for child in table.children:
        if isinstance(child, Element):
            if child.tag in ("caption", "tr"):
                yield child
            elif child.tag in ("thead", "tbody", "tfoot"):
                yield from (r for r in child.children if isinstance(r, Element) and r.tag == "tr")


def is_layout_table(table):
    """A table that places blocks on the page (read as flow) rather than rows of data."""
    if table.attrs.get("role", "").lower() in ("presentation", "none"):
        return True
    for element in table.elements():
        if element is not table and element.tag == "table":
            return True
        if element.tag in ("td", "th"):
            blocks = [c for c in element.children if isinstance(c, Element)
                      and c.tag not in INLINE and c.tag != "br" and clean(c.text())]
            if len(blocks) > 1 or any(c.tag in HEADINGS for c in element.elements()):
                return True
    return False


def one_line(element):
    """An element's text on one line (a heading's, a table cell's)."""
    return inline_text(flow_pieces(element)).replace("\n", " ")


def flow_pieces(element):
    """The texts below an element in order, a <br> as a line break."""
    stack = [element]
    while stack:
        node = stack.pop()
        if isinstance(node, Text):
            yield node.data
        elif node.tag == "br":
            yield LINE_BREAK
        else:
            stack.extend(reversed(node.children))


def inline_text(pieces):
    """Texts and LINE_BREAKs as a browser shows them: whitespace collapsed, soft hyphens
    dropped, a <br> a line break."""
    lines, line = [], []
    for piece in pieces:
        if piece is LINE_BREAK:
            lines.append(line)
            line = []
        else:
            line.append(piece)
    lines.append(line)
    lines = [clean("".join(line).replace("\xad", "")) for line in lines]
    return "\n".join(line for line in lines if line)


def drop_link_blocks(blocks):
    """Without link lists and link paragraphs (see the module's docstring)."""
    def dense(block):
        return block.kind != "heading" and block.link_chars > LINK_DENSE * len(clean(block.text))

    group_counts, group_dense = {}, {}
    for block in blocks:
        if block.group and block.kind in ("item", "row"):
            group_counts[block.group] = group_counts.get(block.group, 0) + 1
            group_dense[block.group] = group_dense.get(block.group, 0) + dense(block)
    link_groups = {g for g, n in group_counts.items() if n >= 2 and group_dense[g] > 0.5 * n}
    return [b for b in blocks if not dense(b) and b.group not in link_groups]


def drop_empty_headings(blocks):
    """Without headings that have no text under them before the next heading of their level or
    above (a "Related" heading whose list was cut)."""
    keep = [True] * len(blocks)
    text_below = False            # text between this block and the next heading
    later = []                    # (level, has text) of later headings not yet closed
    for i in range(len(blocks) - 1, -1, -1):
        block = blocks[i]
        if block.kind != "heading":
            text_below = True
            continue
        under = text_below        # text right below it, or a deeper heading with text
        while later and later[-1][0] > block.level:
            under = later.pop()[1] or under
        keep[i] = under
        later.append((block.level, under))
        text_below = False
    return [b for b, k in zip(blocks, keep) if k]


def choose_title(container, head, body):
    """The content's <h1>, else the page's og:title or <title> (the longest part between
    separators), else an <h1> elsewhere on the page (a heading above a content column: where the
    page names itself in its head, such an <h1> is more often the site's name)."""
    title = first_h1(container)
    if title:
        return title
    if head.get("og:title"):
        return head["og:title"]
    parts = [p for p in TITLE_SEPARATORS.split(head.get("title", "")) if p.strip()]
    return max(parts, key=len).strip() if parts else first_h1(body)


def first_h1(element):
    """The text of the first <h1> below `element` that has some, or ""."""
    for e in element.elements():
        if e.tag == "h1":
            text = one_line(e)
            if text:
                return text
    return ""


def with_title(blocks, title):
    """The blocks opened by the title, made the title block where a heading already says it."""
    if not title:
        return blocks
    for i, block in enumerate(blocks):
        if block.kind == "heading" and block.heading_text == title:
            blocks[i] = Block("title", "# " + title, 1, block.start, block.end, 0, 0, title)
            return blocks
    return [Block("title", "# " + title, 1, 0, 0, 0, 0, title)] + blocks
