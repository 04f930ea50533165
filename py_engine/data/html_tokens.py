"""HTML's tokenizer, as the WHATWG HTML standard specifies it (section 13.2.5), with each token's
character span in the source.

    for token in tokenize('<p class=a>Fish &amp; chips<br/>'):
        token.kind, token.name, token.attrs, token.data, token.start, token.end
    # ("start", "p", [("class", "a")], "", 0, 11), ("text", "", [], "Fish & chips", 11, 27),
    # ("start", "br", [], "", 27, 32) with token.self_closing True

Written here, in pure Python, so that the host and the browser read a page the same way: the
standard library's html.parser differs between Python releases (the host's 3.11 against
Pyodide's 3.14: what is inside <title>, "<![" sections, a tag cut off by the end of the file,
comments closed by "--!>"), and the older one raises AssertionError on some malformed pages.
tests/test_html_tokens.py checks the tokens against html5lib's tokenizer (an implementation
of the same standard) on real pages and on thousands of damaged ones.

What the standard's tokenizer does and this one does too:
- start and end tags: names and attribute names lower-cased (ASCII letters only); a repeated
  attribute keeps its first value; character references decoded in attribute values (a
  legacy name without ";" before "=" or a letter or digit is left as written); a tag cut
  off by the end of the file is dropped; "</>" is dropped; "</3" and "<?x" are bogus comments;
  a "<" that opens nothing is text;
- comments: closed by "-->" or "--!>", or at once by "<!-->" and "<!--->", else at the end;
  "<!x", "<![CDATA[" (in HTML content) and other bogus comments close at the next ">";
- text: character references (named: the longest name of the standard's table that matches;
  numeric: 0, surrogates and numbers past U+10FFFF give U+FFFD, 0x80-0x9F the Windows-1252
  character); "\\r\\n" and "\\r" read as "\\n";
- raw text: after <title> and <textarea> the text (references decoded) runs to the matching
  end tag; after <style>, <xmp>, <iframe>, <noembed> and <noframes> likewise, nothing decoded;
  after <script> with the standard's escape rules ("<!--" and a nested "<script>" inside a
  script hide its "</script>" until "-->"); after <plaintext>, to the end.

What it leaves to the tree builder: NUL characters in text are kept (the builder drops them),
and it switches to raw text by the tag's name alone (the standard does so only in HTML
content: a <title> inside <svg> is markup there, raw text here; the extractor skips both).
"""

import re
from html.entities import html5 as NAMED_REFERENCES

WHITESPACE = "\t\n\f\r "
RCDATA = frozenset(("title", "textarea"))
RAWTEXT = frozenset(("style", "xmp", "iframe", "noembed", "noframes"))
LONGEST_NAME = max(map(len, NAMED_REFERENCES))
# Numeric references to these code points give these characters instead (Windows-1252's).
C1_REPLACEMENTS = {
    0x80: 0x20AC, 0x82: 0x201A, 0x83: 0x0192, 0x84: 0x201E, 0x85: 0x2026, 0x86: 0x2020,
    0x87: 0x2021, 0x88: 0x02C6, 0x89: 0x2030, 0x8A: 0x0160, 0x8B: 0x2039, 0x8C: 0x0152,
    0x8E: 0x017D, 0x91: 0x2018, 0x92: 0x2019, 0x93: 0x201C, 0x94: 0x201D, 0x95: 0x2022,
    0x96: 0x2013, 0x97: 0x2014, 0x98: 0x02DC, 0x99: 0x2122, 0x9A: 0x0161, 0x9B: 0x203A,
    0x9C: 0x0153, 0x9E: 0x017E, 0x9F: 0x0178}
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ\0", "abcdefghijklmnopqrstuvwxyz\ufffd")
_REFERENCE = re.compile(r"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([A-Za-z0-9]+;?))")
_NEWLINES = re.compile(r"\r\n?")
_COMMENT_END = re.compile(r"--!?>")
_UNFINISHED_CLOSE = re.compile(r"(?:--!|--?)\Z")
_TAG_NAME_END = re.compile(r"[\t\n\f\r />]")
_SPACE_RUN = re.compile(r"[\t\n\f\r ]*")
_ATTRIBUTE_NAME = re.compile(r"[^\t\n\f\r />=]*")     # a name after its first character (which may be "=")
_UNQUOTED_VALUE = re.compile(r"[^\t\n\f\r >]*")


class Token:
    """kind: "start", "end", "text", "comment" or "doctype"; start, end: the span in the
    source; name: a tag's name; attrs: a start tag's [(name, value)]; data: a text's or
    comment's characters."""
    __slots__ = ("kind", "start", "end", "name", "attrs", "data", "self_closing")

    def __init__(self, kind, start, end, name="", attrs=None, data="", self_closing=False):
        self.kind, self.start, self.end, self.name = kind, start, end, name
        self.attrs, self.data, self.self_closing = attrs or [], data, self_closing

    def __repr__(self):
        return (f"Token({self.kind!r}, {self.start}, {self.end}, name={self.name!r}, "
                f"attrs={self.attrs!r}, data={self.data!r}, self_closing={self.self_closing})")


def decode_references(raw, in_attribute=False):
    """`raw` with its character references replaced as the standard's tokenizer replaces them
    (in an attribute value when `in_attribute`)."""
    if "&" not in raw:
        return raw

    def replace(match):
        hex_digits, digits, name = match.groups()
        if name is None:
            significant = (hex_digits or digits).lstrip("0") or "0"
            too_long = len(significant) > 8    # past U+10FFFF whatever the digits
            return _numeric(0x110000 if too_long else int(significant, 16 if hex_digits else 10))
        for length in range(min(len(name), LONGEST_NAME), 0, -1):
            if name[:length] in NAMED_REFERENCES:
                break
        else:
            return match.group()              # no name of the table: an ampersand as written
        after = name[length:length + 1] or raw[match.end():match.end() + 1]
        if in_attribute and name[length - 1] != ";" and (after == "=" or after.isascii()
                                                         and after.isalnum()):
            return match.group()              # "&copy=1" in a URL stays as written
        return NAMED_REFERENCES[name[:length]] + name[length:]

    return _REFERENCE.sub(replace, raw)


def _numeric(number):
    if number == 0 or number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
        return "\ufffd"
    return chr(C1_REPLACEMENTS.get(number, number))


def _text(source, start, end, decode=True, nul="\0"):
    raw = _NEWLINES.sub("\n", source[start:end]).replace("\0", nul)
    return Token("text", start, end, data=decode_references(raw) if decode else raw)


def _clean(raw):
    """A comment's or attribute's characters: newlines as "\n", NUL as U+FFFD."""
    return _NEWLINES.sub("\n", raw).replace("\0", "\ufffd")


def _is_letter(c):
    return "a" <= c <= "z" or "A" <= c <= "Z"


_LITERAL = "literal"        # markup() found a "<" that opens nothing: it is text
_CUT_OFF = "cut off"        # a tag the end of the file cuts: the rest of the file is gone


def tokenize(source):
    """The tokens of an HTML document given as a str (see the module docstring)."""
    n, i, text_from = len(source), 0, 0
    while True:
        lt = source.find("<", i)
        if lt < 0:
            break
        token, after = markup(source, lt)
        if token is _LITERAL:
            i = after
            continue
        if lt > text_from:
            yield _text(source, text_from, lt)
        if token is _CUT_OFF:
            return
        i = text_from = after
        if token is None:                       # "</>": nothing at all
            continue
        yield token
        if token.kind == "start":
            end = raw_text_end(source, token.name, after)
            if end > after:
                yield _text(source, after, end, decode=token.name in RCDATA, nul="\ufffd")
                i = text_from = end
    if n > text_from:
        yield _text(source, text_from, n)


def markup(source, lt):
    """(token or None, where reading goes on) for the "<" at `lt` in the data state; the token
    is _LITERAL where the "<" is text and _CUT_OFF where the end of the file cuts the tag."""
    c = source[lt + 1:lt + 2]
    if _is_letter(c):
        return tag(source, lt, lt + 1, "start")
    if c == "/":
        c = source[lt + 2:lt + 3]
        if _is_letter(c):
            return tag(source, lt, lt + 2, "end")
        if c == ">":
            return None, lt + 3
        if not c:
            return _LITERAL, lt + 1
        return bogus_comment(source, lt, lt + 2)
    if c == "!":
        if source.startswith("--", lt + 2):
            return comment(source, lt)
        if source[lt + 2:lt + 9].lower() == "doctype":
            close = source.find(">", lt + 9)
            end = len(source) if close < 0 else close + 1
            return Token("doctype", lt, end, data=_clean(source[lt + 9:end - (close >= 0)])), end
        return bogus_comment(source, lt, lt + 2)   # "<![CDATA[" too: a comment in HTML content
    if c == "?":
        return bogus_comment(source, lt, lt + 1)
    return _LITERAL, lt + 1


def bogus_comment(source, lt, data_from):
    close = source.find(">", data_from)
    end = len(source) if close < 0 else close + 1
    return Token("comment", lt, end, data=_clean(source[data_from:end - (close >= 0)])), end


def comment(source, lt):
    body = lt + 4
    for abrupt in (">", "->"):                  # "<!-->" and "<!--->" close at once
        if source.startswith(abrupt, body):
            return Token("comment", lt, body + len(abrupt)), body + len(abrupt)
    close = _COMMENT_END.search(source, body)
    if close:
        return Token("comment", lt, close.end(), data=_clean(source[body:close.start()])), close.end()
    # Cut off by the end: the dashes that might have closed it are not its text.
    data = _UNFINISHED_CLOSE.sub("", source[body:])
    return Token("comment", lt, len(source), data=_clean(data)), len(source)


def tag(source, lt, name_from, kind):
    """A start or end tag whose name starts at `name_from` (the tag states of the standard)."""
    n = len(source)
    stop = _TAG_NAME_END.search(source, name_from)
    if stop is None:
        return _CUT_OFF, n
    name, i = source[name_from:stop.start()].translate(_LOWER), stop.start()
    attrs, seen = [], set()
    while True:
        i = _SPACE_RUN.match(source, i).end()
        if i >= n:
            return _CUT_OFF, n
        if source[i] == ">":
            return _tag_token(kind, lt, i + 1, name, attrs, False), i + 1
        if source[i] == "/":
            if source.startswith(">", i + 1):
                return _tag_token(kind, lt, i + 2, name, attrs, True), i + 2
            i += 1                              # a stray "/": read on as between attributes
            continue
        # An attribute's name (a leading "=" is part of it), then maybe "=" and its value.
        j = _ATTRIBUTE_NAME.match(source, i + 1).end()
        attr, value, i = source[i:j].translate(_LOWER), "", _SPACE_RUN.match(source, j).end()
        if source.startswith("=", i):
            i = _SPACE_RUN.match(source, i + 1).end()
            quote = source[i:i + 1]
            if quote in ("\"", "'"):
                close = source.find(quote, i + 1)
                if close < 0:
                    return _CUT_OFF, n
                value, i = source[i + 1:close], close + 1
            else:                               # unquoted, to a space or ">" ("" before ">")
                j = _UNQUOTED_VALUE.match(source, i).end()
                value, i = source[i:j], j
            value = decode_references(_clean(value), in_attribute=True)
        if attr not in seen:
            seen.add(attr)
            attrs.append((attr, value))


def _tag_token(kind, start, end, name, attrs, self_closing):
    if kind == "end":                           # an end tag's attributes are read, not kept
        return Token("end", start, end, name)
    return Token("start", start, end, name, attrs, self_closing=self_closing)


def _end_tag_pattern(name):
    # ASCII only: "</ſcript>" (a long s) does not close a script.
    return re.compile(r"</" + name + r"[\t\n\f\r />]", re.IGNORECASE | re.ASCII)


_END_TAGS = {name: _end_tag_pattern(name) for name in (*RCDATA, *RAWTEXT, "script")}


def raw_text_end(source, name, i):
    """Where the raw text that a start tag `name` opens at `i` ends: the "<" of its end tag, or
    the end of the file; `i` itself for an element whose content is markup."""
    if name in RCDATA or name in RAWTEXT:
        close = _END_TAGS[name].search(source, i)
        return close.start() if close else len(source)
    if name == "script":
        return script_end(source, i)
    if name == "plaintext":
        return len(source)
    return i


_LETTERS = re.compile(r"[A-Za-z]*")
_AFTER_TAG_NAME = tuple(WHITESPACE + "/>")


def _script_word(source, at):
    """(where the letters at `at` end, whether they spell "script" with a space, "/" or ">"
    after them): what the script data states ask after a "<" or "</" in an escaped script."""
    end = _LETTERS.match(source, at).end()
    return end, source[at:end].lower() == "script" and source[end:end + 1] in _AFTER_TAG_NAME


def script_end(source, i):
    """The "<" of the end tag that closes a script whose text starts at `i` (or the end of the
    file), following the standard's script data states: after "<!--", a "<script" followed by
    a space, "/" or ">" hides "</script>" until "-->" or a "</script" of its own."""
    n, state = len(source), "data"
    end_tag = _END_TAGS["script"]
    while i < n:
        c = source[i]
        if state == "data":
            i = source.find("<", i)
            if i < 0:
                return n
            if end_tag.match(source, i):
                return i
            if source.startswith("<!--", i):
                state, i = "escaped_dash_dash", i + 4
            else:
                i += 1
        elif c == "-":
            state = state.split("_")[0] + "_dash" + ("_dash" if "dash" in state else "")
            i += 1
        elif c == ">" and state.endswith("dash_dash"):
            state, i = "data", i + 1
        elif c != "<":
            state, i = state.split("_")[0], i + 1
        elif state.startswith("escaped"):
            if end_tag.match(source, i):
                return i
            letters, hidden = _script_word(source, i + 1)
            state, i = ("double", letters + 1) if hidden else ("escaped", max(letters, i + 1))
        else:                                   # "<" in a double-escaped script
            i += 1
            state = "double"
            if source.startswith("/", i):
                letters, ends_it = _script_word(source, i + 1)
                state, i = ("escaped", letters + 1) if ends_it else ("double", letters)
    return n
