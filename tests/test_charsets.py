"""charsets.py against what it must agree with: its labels against webencodings (the Encoding
Standard's label table in Python), its single-byte tables against the standard's own indexes
(tests/data/encoding_single_byte_indexes.json, from the standard's indexes.json), and its
<meta> prescan against html5lib's on random page heads. Then the web importer reading pages
in the charsets browsers know and passing over the names they do not."""

import json
import random
import re
from pathlib import Path

import pytest
import webencodings
from html5lib._inputstream import EncodingParser

from py_engine.data import charsets
from py_engine.data.classification import DataError
from py_engine.data.importers.website import decode_html, import_html

INDEXES = json.loads((Path(__file__).parent / "data" / "encoding_single_byte_indexes.json")
                     .read_text())["indexes"]


def library_encoding(label):
    found = webencodings.lookup(label)
    return None if found is None else found.name


def test_every_label_names_the_encoding_the_library_names():
    assert set(charsets.ENCODING_OF_LABEL) == set(webencodings.LABELS)
    for label in webencodings.LABELS:
        for written in (label, label.upper(), f" \t{label}\n\f", label.title()):
            assert charsets.encoding_for(written) == library_encoding(written), written


def test_other_names_are_no_encoding_as_the_library_says():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    labels = sorted(webencodings.LABELS)
    odd = ["utf-7", "utf-32", "rot13", "base64", "zlib", "idna", "punycode", "cp037", "undefined",
           "mbcs", "latin-1", "iso-8859-1\u0130", "\u212aoi8-r", "utf-8\x00", "utf\u20118", "", " ",
           "windows-1252;", "\u00a0utf-8"]
    for _ in range(3000):
        label = rng.choice(labels + odd)
        way = rng.randrange(5)
        if way == 0:
            i = rng.randrange(len(label) + 1)
            label = label[:i] + rng.choice("-_ .:\u00a0\u0131\u017f\u212a\v") + label[i:]
        elif way == 1 and label:
            i = rng.randrange(len(label))
            label = label[:i] + label[i + 1:]
        elif way == 2:
            label = "".join(c.upper() if rng.random() < 0.5 else c for c in label)
        assert charsets.encoding_for(label) == library_encoding(label), f"seed {seed}: {label!r}"


@pytest.mark.parametrize("encoding", sorted(INDEXES))
def test_single_byte_encodings_read_every_byte_as_the_standards_index(encoding):
    index = INDEXES[encoding]
    for byte in range(256):
        want = chr(byte) if byte < 0x80 else None if index[byte - 0x80] is None else chr(index[byte - 0x80])
        try:
            got = charsets.decode(bytes([byte]), encoding)
        except UnicodeDecodeError:
            got = None
        assert got == want, (encoding, hex(byte))
        if want is not None:        # and the text goes back to its byte (byte offsets need it)
            assert want.encode(charsets.python_codec(encoding)) == bytes([byte])
    for label, name in charsets.ENCODING_OF_LABEL.items():
        if name == encoding:
            assert charsets.decode(b"caf\xe9", charsets.encoding_for(label)) == charsets.decode(b"caf\xe9", encoding)


def test_every_encoding_but_replacement_has_a_codec():
    for encoding in set(charsets.ENCODING_OF_LABEL.values()) - {"replacement"}:
        assert charsets.decode(b"<p>plain ASCII</p>", encoding) == "<p>plain ASCII</p>" or \
            encoding in ("utf-16be", "utf-16le"), encoding
    with pytest.raises(LookupError, match="'replacement' is not an encoding browsers read"):
        charsets.decode(b"x", "replacement")
    assert charsets.decode(bytes([0x41, 0x80, 0xFF]), "x-user-defined") == "A\uF780\uF7FF"


# --- the <meta> prescan ------------------------------------------------------------------------

def library_prescan(data):
    found = EncodingParser(data).getEncoding()
    if found is None:
        return None
    name = found.name
    # html5lib's input stream applies these after its prescan; the standard, inside it.
    return "utf-8" if name in ("utf-16be", "utf-16le") else "windows-1252" if name == "x-user-defined" else name


HEAD_PARTS = [
    b"<html>", b"<head>", b"<title>Caf\xc3\xa9 \xe2\x80\x94 menu</title>", b"<!-- a comment -->", b"<!-->",
    b"<!-- <meta charset=koi8-r> -->", b"<?xml version='1.0'?>", b"<!DOCTYPE html>", b"</p>", b"</>",
    b"<script>var s = '<b>';</script>", b'<link rel="stylesheet" href="a.css">', b"<div class=x>",
    b"<p title='x > y'>", b"<a href=/x>", b"<img alt=\"<meta charset=big5>\">", b"text ", b"\n", b"<3",
    b"<meta name=viewport content='width=device-width'>", b"<meta name=description content=\"charset=gbk\">",
]
META_ATTRIBUTES = [
    b"charset={label}", b"charset=\"{label}\"", b"charset='{label}'", b"CHARSET = {label}",
    b"http-equiv=\"Content-Type\" content=\"text/html; charset={label}\"",
    b"content=\"text/html;charset={label}\" http-equiv=content-type",
    b"http-equiv=Content-Type content='text/html; Charset = \"{label}\"'",
    b"content=\"text/html; charset={label}\"", b"http-equiv=refresh content=\"0; charset={label}\"",
    b"content='charset=' http-equiv=content-type", b"name=x", b"content=\"text/html; charset='{label}\"",
]
LABELS = ["utf-8", "koi8-r", "shift_jis", "windows-1251", "latin1", "ISO-8859-2", "gb2312", "big5",
          "utf-16", "utf-16be", "x-user-defined", "iso-2022-kr", "klingon", "utf-7", "", " euc-kr "]
# Where html5lib's prescan is older than the standard's, and draws that would meet it are left
# out: a repeated attribute in one <meta> (the standard keeps the first), "<meta/", a "<meta"
# that runs on into a longer name, a charset attribute naming no encoding before a content one
# (the standard then reads no charset from that <meta>), "<!-->", which html5lib reads as
# opening a comment that the standard's prescan closes at once, and a <meta> cut off by the
# end of the bytes (html5lib takes a charset read before the cut; the standard, having run out
# of bytes, none); and "</>" before text, after which html5lib misses the next <meta>.
LIBRARY_DEVIATIONS = re.compile(rb"<meta/|<meta[A-Za-z]|<!---?>|</>")


def random_head(rng):
    parts = []
    for _ in range(rng.randint(1, 8)):
        if rng.random() < 0.4:
            attributes = rng.sample(META_ATTRIBUTES, rng.randint(1, 2))
            label = rng.choice(LABELS).encode()
            parts.append(b"<meta " + b" ".join(a.replace(b"{label}", label) for a in attributes) + b">")
        else:
            parts.append(rng.choice(HEAD_PARTS))
    head = b"".join(parts)
    if rng.random() < 0.3:                      # cut anywhere, as a page's first bytes may be
        head = head[:rng.randrange(len(head) + 1)]
    return head


def _meets_library_deviation(head):
    if LIBRARY_DEVIATIONS.search(head) or head.rfind(b"<meta") > head.rfind(b">"):
        return True
    for meta in re.findall(rb"<meta [^>]*", head):
        names = re.findall(rb"(?:^| )([a-zA-Z-]+) ?=", meta[6:])
        lowered = [n.lower() for n in names]
        if len(set(lowered)) < len(lowered):
            return True
        if b"charset" in lowered and b"content" in lowered:
            label = re.search(rb"charset ?= ?[\"']?([^\"' >]*)", meta, re.I)
            if lowered.index(b"charset") < lowered.index(b"content"):
                return True
            if label and charsets.encoding_for(label.group(1).decode()) is None:
                return True
    return False


def test_the_prescan_finds_the_charset_html5lib_finds():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    compared = found = 0
    while compared < 3000:
        head = random_head(rng)
        if _meets_library_deviation(head):
            continue
        compared += 1
        ours = charsets.meta_charset(head)
        assert ours == library_prescan(head), f"seed {seed}: {head!r}"
        found += ours is not None
    assert found > 300          # the draws do declare charsets


@pytest.mark.parametrize("head, expected", [
    (b'<meta charset="klingon"><meta charset="koi8-r">', "koi8-r"),          # unknown: read on
    (b"<!-- <meta charset=big5> --><meta charset=gbk>", "gbk"),
    (b"<!--><meta charset=gbk>", "gbk"), (b"</>text <meta charset=gbk>", "gbk"),
    (b"<img alt='<meta charset=big5>'><meta charset=gbk>", "gbk"),          # inside an attribute
    (b'<meta http-equiv="refresh" content="0; charset=big5">', None),       # no Content-Type pragma
    (b'<meta content="text/html; charset=big5" http-equiv="Content-Type">', "big5"),
    (b'<meta charset="utf-16le">', "utf-8"), (b'<meta charset="x-user-defined">', "windows-1252"),
    (b'<meta charset=koi8-r charset=big5>', "koi8-r"),                        # the first one
    (b'<meta/charset=koi8-r>', "koi8-r"),
    (b'<meta charset=klingon content="text/html; charset=big5" http-equiv=content-type>', None),
    (b'<meta charset="koi8-r', None),                                        # cut off
])
def test_the_prescan_follows_the_standard(head, expected):
    assert charsets.meta_charset(head) == expected


# --- the web importer -------------------------------------------------------------------------

def test_pages_in_charsets_python_names_otherwise_are_read():
    thai = "<html><head><meta charset='windows-874'><title>ข่าว</title></head><body><p>สวัสดีครับ</p></body></html>"
    assert import_html(thai.encode("cp874"), "u")[0].text.endswith("สวัสดีครับ")
    russian = "<meta charset=x-mac-cyrillic><p>Привет, мир</p>"
    assert import_html(russian.encode("mac-cyrillic"), "u")[0].text == "Привет, мир"
    # windows-1252 has characters for the five bytes Python's cp1252 leaves out (0x81 ...):
    quoted = decode_html("<p>Привет, мир</p>".encode("cp1251"), "u", charset='"windows-1251"')[0]
    assert quoted == "<p>Привет, мир</p>"     # a Content-Type parameter may come quoted
    text, codec, _ = decode_html(b"<p>caf\xe9 \x81 \x9d</p>", "u", charset="ISO-8859-1")
    assert text == "<p>caf\u00e9 \x81 \x9d</p>" and text.encode(codec) == b"<p>caf\xe9 \x81 \x9d</p>"
    # Multi-byte pages with the codes Python's codecs refuse or read otherwise (web_codecs.py):
    # NEC's circled numbers in EUC-JP, the euro sign as GBK's 0x80, a HKSCS-2008 character.
    japanese = (b"<meta charset=euc-jp><p>\xad\xa1 \xa1\xc1 \xad\xa2 "
                b"\xa4\xb3\xa4\xec\xa4\xcf\xcb\xdc\xa4\xc7\xa4\xb9</p>")
    assert import_html(japanese, "u")[0].text == "① ～ ② これは本です"
    chinese = "<meta charset=gb2312><p>价格：\u20ac100，\ufe10好</p>".encode("gb18030")
    chinese = chinese.replace(b"\xa2\xe3", b"\x80").replace(b"\x84\x31\x82\x36", b"\xa6\xd9")
    assert import_html(chinese, "u")[0].text == "价格：€100，︐好"
    hong_kong = b"<meta charset=big5-hkscs><p>\x87\x7a\xa4\xa4\xa4\xe5\xa1\x45</p>"
    assert import_html(hong_kong, "u")[0].text == "\u3875中文\u2027"


@pytest.mark.parametrize("label", ["rot13", "base64", "zlib", "punycode", "undefined", "utf-7", "cp037"])
def test_names_browsers_do_not_know_are_passed_over(label):
    page = f'<html><head><meta charset="{label}"></head><body><p>Grüße aus Köln</p></body></html>'
    assert import_html(page.encode(), "u")[0].text == "Grüße aus Köln"
    assert import_html(page.encode(), "u", charset=label)[0].text == "Grüße aus Köln"


def test_charsets_browsers_refuse_are_refused_by_name():
    for where, call in (("the page's <meta>", lambda: import_html(b'<meta charset="iso-2022-kr"><p>x</p>', "u")),
                        ("the HTTP header", lambda: import_html(b"<p>x</p>", "u", charset="hz-gb-2312"))):
        with pytest.raises(DataError, match=f"^u: {where} declares a charset browsers refuse to read"):
            call()
