"""The character encodings of web pages as browsers name and read them: the WHATWG Encoding
Standard's labels (every name a page or an HTTP header may give an encoding), each encoding read
by a Python codec, and the HTML standard's prescan of a page's first bytes for its <meta>
charset.

    encoding_for("Latin1")                  # "windows-1252", as browsers read "latin1"
    encoding_for("utf-7")                   # None: not a label; a browser ignores it
    text = decode(data, "windows-1252")     # UnicodeDecodeError where a byte has no character
    meta_charset(page_bytes)                # "shift_jis", or None where no <meta> says

Written here since the browser's runtime has only Python's codecs, which know other names (and
transforms such as "rot13" and "base64" that decode no text). Each encoding is read by Python's
codec or, where that reads some bytes otherwise, by a "web-" codec of web_codecs.py (gbk is read
as gb18030, as the standard reads it). The labels are checked against webencodings (the Encoding
Standard's table in Python) and meta_charset against html5lib's prescan
(tests/test_charsets.py). The "replacement" encoding (labels such as iso-2022-kr and
hz-gb-2312, which browsers refuse to read for safety) has no codec: decode raises LookupError
naming it.
"""

import re

from . import web_codecs  # noqa: F401  (registers the "web-" codecs)

# The Encoding Standard's encodings and their labels (https://encoding.spec.whatwg.org/).
LABELS_OF = {
    "utf-8": "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8",
    "ibm866": "866 cp866 csibm866 ibm866",
    "iso-8859-2": (
        "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2"),
    "iso-8859-3": (
        "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3"),
    "iso-8859-4": (
        "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4"),
    "iso-8859-5": (
        "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
        "iso_8859-5:1988"),
    "iso-8859-6": (
        "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 iso-8859-6-e "
        "iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    "iso-8859-7": (
        "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 iso88597 "
        "iso_8859-7 iso_8859-7:1987 sun_eu_greek"),
    "iso-8859-8": (
        "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 "
        "iso_8859-8 iso_8859-8:1988 visual"),
    "iso-8859-8-i": "csiso88598i iso-8859-8-i logical",
    "iso-8859-10": "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6",
    "iso-8859-13": "iso-8859-13 iso8859-13 iso885913",
    "iso-8859-14": "iso-8859-14 iso8859-14 iso885914",
    "iso-8859-15": "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9",
    "iso-8859-16": "iso-8859-16",
    "koi8-r": "cskoi8r koi koi8 koi8-r koi8_r",
    "koi8-u": "koi8-ru koi8-u",
    "macintosh": "csmacintosh mac macintosh x-mac-roman",
    "windows-874": "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
    "windows-1250": "cp1250 windows-1250 x-cp1250",
    "windows-1251": "cp1251 windows-1251 x-cp1251",
    "windows-1252": (
        "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 "
        "iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252"),
    "windows-1253": "cp1253 windows-1253 x-cp1253",
    "windows-1254": (
        "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 "
        "latin5 windows-1254 x-cp1254"),
    "windows-1255": "cp1255 windows-1255 x-cp1255",
    "windows-1256": "cp1256 windows-1256 x-cp1256",
    "windows-1257": "cp1257 windows-1257 x-cp1257",
    "windows-1258": "cp1258 windows-1258 x-cp1258",
    "x-mac-cyrillic": "x-mac-cyrillic x-mac-ukrainian",
    "gbk": "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk",
    "gb18030": "gb18030",
    "big5": "big5 big5-hkscs cn-big5 csbig5 x-x-big5",
    "euc-jp": "cseucpkdfmtjapanese euc-jp x-euc-jp",
    "iso-2022-jp": "csiso2022jp iso-2022-jp",
    "shift_jis": "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis",
    "euc-kr": (
        "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 "
        "ksc_5601 windows-949"),
    "replacement": "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr replacement",
    "utf-16be": "unicodefffe utf-16be",
    "utf-16le": "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le",
    "x-user-defined": "x-user-defined",

}
ENCODING_OF_LABEL = {label: name for name, labels in LABELS_OF.items() for label in labels.split()}
ASCII_WHITESPACE = "\t\n\f\r "

# The Python codec each encoding is read with ("web-" ones from web_codecs.py).
PYTHON_CODECS = {
    "utf-8": "utf-8", "ibm866": "cp866", "iso-8859-8-i": "iso8859-8", "koi8-r": "koi8-r",
    "koi8-u": "web-koi8-u", "macintosh": "mac-roman", "x-mac-cyrillic": "mac-cyrillic",
    "windows-874": "web-windows-874", "gbk": "web-gb18030", "gb18030": "web-gb18030",
    "big5": "web-big5", "euc-jp": "web-euc-jp", "iso-2022-jp": "web-iso-2022-jp",
    "shift_jis": "web-shift-jis",
    "euc-kr": "cp949", "utf-16be": "utf-16-be", "utf-16le": "utf-16-le",
    "x-user-defined": "web-x-user-defined",
    **{f"iso-8859-{n}": f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16)},
    **{f"windows-{n}": f"web-windows-{n}" for n in range(1250, 1259)},
}


def encoding_for(label):
    """The Encoding Standard's name of the encoding `label` names (ASCII whitespace around it
    and ASCII case ignored), or None where it names none ("get an encoding")."""
    if not isinstance(label, str):
        return None
    label = label.strip(ASCII_WHITESPACE)
    if not label.isascii():
        return None
    return ENCODING_OF_LABEL.get(label.lower())


def python_codec(encoding):
    """The Python codec that reads `encoding` (a name encoding_for gives); LookupError for the
    replacement encoding, which browsers do not read."""
    if encoding not in PYTHON_CODECS:
        raise LookupError(f"{encoding!r} is not an encoding browsers read")
    return PYTHON_CODECS[encoding]


def decode(data, encoding):
    """`data` read as `encoding`; UnicodeDecodeError at the first byte without a character."""
    return bytes(data).decode(python_codec(encoding))


# --- the HTML standard's prescan for <meta> --------------------------------------------------

_SPACES = (b"\t", b"\n", b"\f", b"\r", b" ")
_FAILURE = "failure"            # a charset that names no encoding (not the same as none given)


class _OutOfBytes(Exception):
    pass


def meta_charset(data, limit=8192):
    """The encoding the first `limit` bytes of a page declare in a <meta charset> or <meta
    http-equiv="Content-Type" content="...; charset=..."> as the HTML standard's prescan finds
    it (comments, other tags' attributes and unknown labels passed over), or None."""
    scan = _Prescan(bytes(data[:limit]))
    try:
        return scan.run()
    except _OutOfBytes:
        return None


class _Prescan:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        if self.pos >= len(self.data):
            raise _OutOfBytes
        return self.data[self.pos:self.pos + 1]

    def skip(self, skipped=_SPACES):
        while self.byte() in skipped:
            self.pos += 1

    def run(self):
        data = self.data
        while self.pos < len(data):
            if data.startswith(b"<!--", self.pos):
                close = data.find(b"-->", self.pos + 2)     # "<!-->" closes at once
                if close < 0:
                    return None
                self.pos = close + 2
            elif data[self.pos:self.pos + 5].lower() == b"<meta" and \
                    data[self.pos + 5:self.pos + 6] in (*_SPACES, b"/"):
                self.pos += 6
                found = self.meta()
                if found is not None:
                    return found
                continue
            elif data[self.pos:self.pos + 1] == b"<" and (
                    _letter(data[self.pos + 1:self.pos + 2]) or data[self.pos + 1:self.pos + 2] == b"/"
                    and _letter(data[self.pos + 2:self.pos + 3])):
                while self.byte() not in (*_SPACES, b">"):
                    self.pos += 1
                while self.attribute() is not None:
                    pass
            elif data[self.pos:self.pos + 2] in (b"<!", b"</", b"<?"):
                close = data.find(b">", self.pos + 2)
                if close < 0:
                    return None
                self.pos = close
            self.pos += 1
        return None

    def meta(self):
        """The encoding a <meta> declares (its name read), or None to read on."""
        seen, got_pragma, need_pragma, charset = set(), False, None, None
        while True:
            attribute = self.attribute()
            if attribute is None:
                break
            name, value = attribute
            if name in seen:
                continue
            seen.add(name)
            if name == "http-equiv" and value == "content-type":
                got_pragma = True
            elif name == "content" and charset is None:
                found = charset_in_content(value)
                if found is not None:
                    charset, need_pragma = found, True
            elif name == "charset":
                charset, need_pragma = encoding_for(value) or _FAILURE, False
        if need_pragma is None or need_pragma and not got_pragma or charset in (None, _FAILURE):
            return None
        if charset in ("utf-16be", "utf-16le"):    # a page that can say so in ASCII is not UTF-16
            return "utf-8"
        return "windows-1252" if charset == "x-user-defined" else charset

    def attribute(self):
        """(name, value) of the attribute at the position, lower-cased, or None at ">"."""
        self.skip((*_SPACES, b"/"))
        if self.byte() == b">":
            return None
        name = bytearray()
        while True:
            c = self.byte()
            if c == b"=" and name:
                self.pos += 1
                break
            if c in _SPACES:
                self.skip()
                if self.byte() != b"=":
                    return _text(name), ""
                self.pos += 1
                break
            if c in (b"/", b">"):
                return _text(name), ""
            name += c.lower()
            self.pos += 1
        self.skip()
        c = self.byte()
        if c in (b"\"", b"'"):
            value = bytearray()
            self.pos += 1
            while self.byte() != c:
                value += self.byte().lower()
                self.pos += 1
            self.pos += 1
            return _text(name), _text(value)
        if c == b">":
            return _text(name), ""
        value = bytearray()
        while self.byte() not in (*_SPACES, b">"):
            value += self.byte().lower()
            self.pos += 1
        return _text(name), _text(value)


_CHARSET_WORD = re.compile("charset", re.IGNORECASE | re.ASCII)


def charset_in_content(content):
    """The encoding a <meta> content attribute's "charset=..." names, or None (the HTML
    standard's "extracting a character encoding from a meta element")."""
    at = 0
    while True:
        found = _CHARSET_WORD.search(content, at)
        if found is None:
            return None
        at = found.end()
        while at < len(content) and content[at] in ASCII_WHITESPACE:
            at += 1
        if content[at:at + 1] != "=":
            continue
        at += 1
        while at < len(content) and content[at] in ASCII_WHITESPACE:
            at += 1
        quote = content[at:at + 1]
        if quote in ("\"", "'"):
            close = content.find(quote, at + 1)
            return None if close < 0 else encoding_for(content[at + 1:close])
        end = at
        while end < len(content) and content[end] not in ASCII_WHITESPACE + ";":
            end += 1
        return encoding_for(content[at:end])


def _letter(c):
    return c.isalpha() and c.isascii() if c else False


def _text(raw):
    return bytes(raw).decode("latin-1")
