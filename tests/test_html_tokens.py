"""html_tokens.tokenize against html5lib's tokenizer (the same WHATWG standard, written apart):
the real pages of tests/pages and thousands of damaged ones and of random fragments dense in
the standard's hard cases give the same tokens, and every token's span is where it stands in
the source. The extractor (html_text) reads pages through it, so the host and the browser read
a page alike whatever their Python's html.parser does."""

import random
import re
from pathlib import Path

import pytest
from html5lib._tokenizer import HTMLTokenizer
from html5lib.constants import namespaces, tokenTypes

from py_engine.data.html_text import extract_main_text
from py_engine.data.html_tokens import RAWTEXT, RCDATA, decode_references, tokenize

PAGES = sorted((Path(__file__).parent / "pages").glob("*.html"))
TOKEN_TYPES = {number: name for name, number in tokenTypes.items()}


class _HTMLContent:
    """What html5lib's tokenizer asks its parser: the current node is HTML (so "<![CDATA[" is
    a bogus comment, as in a page's body)."""
    class tree:
        defaultNamespace = namespaces["html"]
        openElements = [type("Node", (), {"namespace": namespaces["html"]})()]


def _add_text(out, data):
    if out and out[-1][0] == "text":
        out[-1] = ("text", out[-1][1] + data)
    elif data:
        out.append(("text", data))


def library_tokens(source):
    """html5lib's tokens, switched to raw text after the start tags that switch ours (its
    tree builder does that switching in a full parse)."""
    tokenizer = HTMLTokenizer(source)
    tokenizer.parser = _HTMLContent()
    switch = {**{n: tokenizer.rcdataState for n in RCDATA}, **{n: tokenizer.rawtextState for n in RAWTEXT},
              "script": tokenizer.scriptDataState, "plaintext": tokenizer.plaintextState}
    out = []
    for token in tokenizer:
        kind = TOKEN_TYPES[token["type"]]
        if kind in ("Characters", "SpaceCharacters"):
            _add_text(out, token["data"])
        elif kind == "StartTag":
            out.append(("start", token["name"], list(token["data"].items()), token["selfClosing"]))
            if token["name"] in switch:
                tokenizer.state = switch[token["name"]]
        elif kind == "EndTag":
            out.append(("end", token["name"]))
        elif kind == "Comment":
            out.append(("comment", token["data"]))
        elif kind == "Doctype":
            out.append(("doctype",))
    return out


def our_tokens(source):
    out = []
    for token in tokenize(source):
        if token.kind == "text":
            _add_text(out, token.data)
        elif token.kind == "start":
            out.append(("start", token.name, token.attrs, token.self_closing))
        elif token.kind == "end":
            out.append(("end", token.name))
        elif token.kind == "comment":
            out.append(("comment", token.data))
        else:
            out.append(("doctype",))
    return out


# Fragments dense in the standard's hard cases: comments closed every way, script escapes,
# raw text and its end tags (a Turkish dotted I and a long s do not close them), references
# with and without ";", in text and attributes, bogus comments, NUL, CR LF.
FRAGMENTS = ["<", ">", "/", "!", "-", "--", "<!--", "-->", "--!>", "<!-", "<?", "</>", "</3",
             "<script>", "</script>", "</script ", "<script ", "<!--<script>", "<SCRIPT>", "</SCRİPT>",
             "<title>", "</title>", "<textarea>", "</TEXTAREA ", "<style>", "</style", "<xmp>", "</xmp>",
             "<iframe>", "</iframe>", "<plaintext>", "<noscript>", "<svg>", "<!DOCTYPE html>", "<!doctype",
             "[CDATA[", "<![CDATA[", "]]>", "<a ", "</a", "<a", "<p", "<br/>", "/>", "x=y", " href=",
             "&", "&amp", "&amp;", "&lt", "&notin;", "&notit;", "&not", "&copy=", "&#x", "&#", "&#x41;",
             "&#65", "&#128;", "&#0;", "&#13;", "&#x10FFFF;", "&#xFFFE;", "&#99999999999;",
             "1", "a", "A", "b", "=", "'", '"', "`", " ", "\t", "\f", "\n", "\r", "\r\n", "\0", "?",
             "ſ", "é"]
# html5lib 1.1 stays in its comment start states on NUL ("<!--\0>" closes there, "<!---\0" keeps
# a dash too many); the standard (13.2.5.44, 13.2.5.45) reads on in the comment state, as we
# do. Draws with either are left out.
LIBRARY_NUL_IN_COMMENT_START = re.compile("<!---?\0")


def damaged(page, rng):
    """A page cut, spliced, repeated or sprinkled with fragments and tags."""
    for _ in range(rng.randint(1, 6)):
        i, way = rng.randrange(len(page) + 1), rng.random()
        if way < 0.3:
            page = page[:i] + page[i + rng.randint(1, 200):]
        elif way < 0.6:
            page = page[:i] + "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 4))) + page[i:]
        elif way < 0.7:
            page = page[:i]
        elif way < 0.85:
            j = rng.randrange(len(page) + 1)
            a, b = sorted((i, j))
            page = page[:a] + page[a:b] * rng.randint(1, 3) + page[b:]
        else:
            page = page[:i] + chr(rng.randrange(1, 0xD800)) + page[i:]
    return page


def test_real_pages_tokenize_as_the_library_does():
    for path in PAGES:
        source = path.read_text(encoding="utf-8", errors="replace")
        assert our_tokens(source) == library_tokens(source), path.name


@pytest.mark.parametrize("kind", ["damaged pages", "fragments"])
def test_random_documents_tokenize_as_the_library_does(kind):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    pages = [p.read_text(encoding="utf-8", errors="replace") for p in PAGES]
    compared = 0
    while compared < (400 if kind == "damaged pages" else 4000):
        if kind == "damaged pages":
            source = damaged(rng.choice(pages), rng)
        else:
            source = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 30)))
        if LIBRARY_NUL_IN_COMMENT_START.search(source):
            continue
        compared += 1
        assert our_tokens(source) == library_tokens(source), f"seed {seed}: {source[:2000]!r}"


def test_spans_are_where_the_tokens_stand():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    pages = [p.read_text(encoding="utf-8", errors="replace") for p in PAGES]
    for _ in range(300):
        source = damaged(rng.choice(pages), rng)
        at, raw = 0, False
        for token in tokenize(source):
            assert at <= token.start < token.end <= len(source), f"seed {seed}: {token}"
            span = source[token.start:token.end]
            if token.kind == "text":                  # markup inside a script is its text
                assert raw or not re.match(r"</?[A-Za-z!?]", span), f"seed {seed}: {token}"
            else:
                assert span.startswith("<"), f"seed {seed}: {token}"
                closed = span.endswith(">")
                assert closed or token.end == len(source) and token.kind in ("comment", "doctype"), \
                    f"seed {seed}: {token}"
            at, raw = token.end, token.kind == "start" and token.name in (*RCDATA, *RAWTEXT, "script", "plaintext")


@pytest.mark.parametrize("source, expected", [
    # A tag: names lower-cased, the first of a repeated attribute kept, references decoded in
    # values, a legacy name before "=" left as written.
    ('<A HREF="?a=1&copy=2&amp;b=&lt;" href=x Data-X>',
     [("start", "a", [("href", "?a=1&copy=2&b=<"), ("data-x", "")], False)]),
    # Text: references with and without ";", numbers past Unicode, 0x80-0x9F as Windows-1252.
    ("&notit; &copy2024 &#128;&#0;&#x110000;&#xD800; &#x; &bogus;",
     [("text", "\u00acit; \u00a92024 \u20ac\ufffd\ufffd\ufffd &#x; &bogus;")]),
    # Comments closed every way; bogus comments at the next ">".
    ("<!---->a<!-->b<!--->c<!--x--!>d<![CDATA[e>f]]>g<?php h?>i</3 j>k</>l",
     [("comment", ""), ("text", "a"), ("comment", ""), ("text", "b"), ("comment", ""), ("text", "c"),
      ("comment", "x"), ("text", "d"), ("comment", "[CDATA[e"), ("text", "f]]>g"),
      ("comment", "?php h?"), ("text", "i"), ("comment", "3 j"), ("text", "kl")]),
    # A script's "<!--<script>" hides its "</script>" until "-->".
    ("<script><!--<script>x</script>--></script>after",
     [("start", "script", [], False), ("text", "<!--<script>x</script>-->"), ("end", "script"),
      ("text", "after")]),
    # Raw text: a title's references decoded, a style's not; "</titlex" does not close it.
    ("<title>a &amp; </titlex> b</TITLE ><style>a &amp; b</style>",
     [("start", "title", [], False), ("text", "a & </titlex> b"), ("end", "title"),
      ("start", "style", [], False), ("text", "a &amp; b"), ("end", "style")]),
    # A tag cut off by the end of the file is dropped, with the rest of the file.
    ("a<p class='x>b", [("text", "a")]),
    ("a\r\nb\rc", [("text", "a\nb\nc")]),
])
def test_tokens_follow_the_standard(source, expected):
    assert our_tokens(source) == expected
    assert library_tokens(source) == expected


def test_references_in_attributes_and_text_differ_only_before_equals_or_letters():
    assert decode_references("&amp=1&ampx&amp;", in_attribute=True) == "&amp=1&ampx&"
    assert decode_references("&amp=1&ampx&amp;") == "&=1&x&"


def test_the_extractor_reads_past_damaged_markup():
    """A "<![" section the host's older html.parser refused (AssertionError) and a
    "<![CDATA[" in a page's body, which Pyodide's html.parser read to the end of the file,
    are bogus comments that end at the next ">", as in a browser."""
    for marker in ("<![ if IE ]>", "<![CDATA[ note >", "<![endif]>", "<![CDAT"):
        page = extract_main_text(f"<html><body><article><h1>Harbour</h1><p>First {marker} part."
                                 f"</p><p>Second part of the story.</p></article></body></html>")
        assert "Second part of the story." in page.text, marker
        # "<![CDAT" has no ">" of its own: the comment takes " part.</p" with it.
        assert ("First part." if ">" in marker else "First") in page.text.replace("  ", " "), marker


def test_the_first_of_a_repeated_attribute_is_the_elements():
    """class="content" then class="signature": the browser keeps the first, so the block is
    not cut as a signature."""
    page = extract_main_text('<body><article><h1>Repairs</h1><p>The pump works again now.</p>'
                             '<div class="content" class="signature">Ask me about gaskets any time.</div>'
                             '</article></body>')
    assert "Ask me about gaskets any time." in page.text

