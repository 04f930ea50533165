"""Python codecs that read bytes as the WHATWG Encoding Standard's decoders read them
(https://encoding.spec.whatwg.org/), for the encodings whose Python codec reads some bytes
otherwise. Registered on import as "web-<encoding>", so that bytes.decode("web-big5") reads a
page as a browser does and str.encode("web-big5") gives back the bytes it came from (the web
importer's byte offsets need it).

Written here since the browser's runtime has only Python's codecs. Each is Python's codec of the
same encoding plus the places where the standard differs, which are few:

- Single-byte: windows-1250 to -1258 and windows-874 give the C1 control of the same number for
  a byte Python leaves undefined (0x81 in windows-1252); windows-1255 has U+05BA at 0xCA; KOI8-U
  has the Belarusian letters at 0xAE and 0xBE; x-user-defined has the bytes 0x80-0xFF at
  U+F780-U+F7FF. These are charmap codecs.
- gb18030 (also the standard's gbk): 0x80 is the euro sign; GB 18030-2022's mappings of 21
  codes Python's GB 18030-2005 reads as private-use characters (0xA6D9 is U+FE10, not U+E78D);
  0x8431A437 is no character (Python reads it as U+FFFD).
- big5: the standard's index is HKSCS-2008 (Python's big5hkscs is HKSCS-2004: 192 codes
  refused), and 11 punctuation codes read as Windows reads them (0xA145 is U+2027).
- euc-jp: JIS X 0208 codes are read through the same index as the standard's Shift_JIS, with
  NEC's row 13 (circled numbers, 0xADA1 is U+2460) and IBM's extensions, which Python's euc-jp
  refuses; Python's cp932 reads that index as the standard does, so this table is built from it.
  Six codes and JIS X 0212's tilde read as Windows reads them (0xA1C1 is U+FF5E, not U+301C).
- shift_jis: Python's cp932 reads the bytes 0xA0 and 0xFD-0xFF as private-use characters; the
  standard refuses them.
- iso-2022-jp: its JIS X 0208 with the standard's euc-jp index, and its half-width katakana
  (ESC ( I), which Python's iso2022-jp refuses; two escape sequences in a row are an error.
  Being stateful, a part of its text does not re-encode to its bytes alone (an escape sequence
  before or after it): iso_2022_jp_runs gives where each character came from.

euc-kr needs nothing (Python's cp949 reads as the standard does). The multi-byte codecs read
strictly only (errors="strict"): a page with a byte the standard gives no character is
refused, naming the byte. Checked against Chromium's TextDecoder on every one- and two-byte
code, every EUC-JP three-byte one, GB 18030's four-byte ones and random runs of codes and
ISO-2022-JP escapes (tests/test_web_codecs.py); the single-byte tables against the standard's
indexes (tests/test_charsets.py).
"""

import codecs
import functools
import re
from dataclasses import dataclass

# --- single-byte ---------------------------------------------------------------------------

# The Python codec, and byte -> code point where the standard's table differs from it.
_C1_FOR_UNDEFINED = -1          # every byte 0x80-0x9F the codec leaves undefined: its C1 control
SINGLE_BYTE = {
    "web-koi8-u": ("koi8-u", {0xAE: 0x045E, 0xBE: 0x040E}),
    "web-windows-874": ("cp874", {_C1_FOR_UNDEFINED: 0}),
    "web-windows-1255": ("cp1255", {_C1_FOR_UNDEFINED: 0, 0xCA: 0x05BA}),
    **{f"web-windows-{n}": (f"cp{n}", {_C1_FOR_UNDEFINED: 0}) for n in range(1250, 1259) if n != 1255},
    "web-x-user-defined": ("latin-1", {b: 0xF700 + b for b in range(0x80, 0x100)}),
}


def _single_byte_table(base, changes):
    table = []
    for byte in range(256):
        try:
            char = bytes([byte]).decode(base)
        except UnicodeDecodeError:
            char = chr(byte) if _C1_FOR_UNDEFINED in changes and 0x80 <= byte <= 0x9F else "\ufffe"
        table.append(chr(changes[byte]) if byte in changes else char)
    return "".join(table)


def _single_byte_codec(name):
    decoding = _single_byte_table(*SINGLE_BYTE[name])
    encoding = codecs.charmap_build(decoding)
    return codecs.CodecInfo(
        name=name,
        encode=lambda text, errors="strict": codecs.charmap_encode(text, errors, encoding),
        decode=lambda data, errors="strict": codecs.charmap_decode(data, errors, decoding))


# --- multi-byte ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MultiByte:
    base: str               # the Python codec that reads everything else as the standard does
    char: bytes             # a regular expression: one character's bytes, as the standard splits them
    overrides: object       # a function giving {bytes: the standard's text, or None where it refuses}


# big5 codes Python's big5hkscs reads otherwise: "lead trail:code point ..." (hex).
_BIG5_CHANGES = (
    '87 7a:3875 7b:21d53 7c:2369e 7d:26021 7e:3eec a1:258de a2:3af5 a3:7afc a4:9f97\n'
    '87 a5:24161 a6:2890d a7:231ea a8:20a8a a9:2325e aa:430a ab:8484 ac:9f96 ad:942f\n'
    '87 ae:4930 af:8613 b0:5896 b1:974a b2:9218 b3:79d0 b4:7a32 b5:6660 b6:6a29 b7:889d\n'
    '87 b8:744c b9:7bc5 ba:6782 bb:7a2c bc:524f bd:9046 be:34e6 bf:73c4 c0:25db9 c1:74c6\n'
    '87 c2:9fc7 c3:57b3 c4:492f c5:544c c6:4131 c7:2368e c8:5818 c9:7a72 ca:27b65 cb:8b8f\n'
    '87 cc:46ae cd:26e88 ce:4181 cf:25d99 d0:7bae d1:224bc d2:9fc8 d3:224c1 d4:224c9\n'
    '87 d5:224cc d6:9fc9 d7:8504 d8:235bb d9:40b4 da:9fca db:44e1 dc:2adff dd:62c1 de:706e\n'
    '87 df:9fcb\n'
    '8e 69:7bb8 6f:7c06 7e:7cce ab:7dd2 b4:7e1d cd:8005 d0:8028\n'
    '8f 57:83c1 69:84a8 6e:840f cb:89a6 cc:89a9 fe:8d77\n'
    '90 6d:90fd 7a:92b9 dc:975c f1:97ff\n'
    '91 bf:9f16\n'
    '92 44:8503 af:5159 b0:515b b1:515d b2:515e c8:936e d1:7479\n'
    '94 47:6d67 ca:799b\n'
    '95 d9:9097\n'
    '96 44:975d ed:701e fc:5b28\n'
    '9b 76:7201 78:77d7 7b:7e87 c6:99d6 de:91d4 ec:60de f6:6fb6\n'
    '9c 42:8f36 53:4fbb 62:71df 68:9104 6b:9df0 77:83cf bc:5c10 bd:79e3 d0:5a67\n'
    '9d 57:8f0b 5a:7b51 c4:62d0\n'
    '9e a9:6062 ef:75f9 fd:6c4a\n'
    '9f 60:9b2e 66:9f17 cb:50ed d8:5f0c\n'
    'a0 63:880f 77:62ce d5:7468 df:7162 e4:7250\n'
    'a1 45:2027 4e:fe51 c2:af e3:ff5e f2:2295 f3:2299\n'
    'a2 41:2215 42:fe68 44:ffe5 46:ffe0 47:ffe1\n'
    'a3 c0:2400 c1:2401 c2:2402 c3:2403 c4:2404 c5:2405 c6:2406 c7:2407 c8:2408 c9:2409\n'
    'a3 ca:240a cb:240b cc:240c cd:240d ce:240e cf:240f d0:2410 d1:2411 d2:2412 d3:2413\n'
    'a3 d4:2414 d5:2415 d6:2416 d7:2417 d8:2418 d9:2419 da:241a db:241b dc:241c dd:241d\n'
    'a3 de:241e df:241f e0:2421 e1:20ac\n'
    'c6 cf:5ef4 d3:65e0 d5:7676 d7:96b6 de:3003 df:4edd\n'
    'fa 5f:5029 66:507d bd:5305 c5:5344 d5:537f\n'
    'fb 48:5605 b8:5a77 f3:5e75 f9:5ed0\n'
    'fc 4f:5f58 6c:60a4 b9:6490 e2:6674 f1:675e\n'
    'fd b7:6c9c b8:6e1d bb:6e2f f1:716e\n'
    'fe 52:732a 6f:745c aa:74e9 dd:7809\n'
)


def _big5_overrides():
    table = {}
    for line in _BIG5_CHANGES.splitlines():
        lead, *cells = line.split()
        for cell in cells:
            trail, code_point = cell.split(":")
            table[bytes.fromhex(lead + trail)] = chr(int(code_point, 16))
    return table


def _gb18030_overrides():
    # GB 18030-2022 (and the standard) read these as the characters Unicode has since encoded
    # where Python's GB 18030-2005 reads private-use ones (0xA3A0 is a second ideographic
    # space); 0xA8BC and 0x8135F437 trade places.
    moved = {
        "a6d9": 0xFE10, "a6da": 0xFE12, "a6db": 0xFE11, "a6dc": 0xFE13, "a6dd": 0xFE14,
        "a6de": 0xFE15, "a6df": 0xFE16, "a6ec": 0xFE17, "a6ed": 0xFE18, "a6f3": 0xFE19,
        "fe59": 0x9FB4, "fe61": 0x9FB5, "fe66": 0x9FB6, "fe67": 0x9FB7, "fe6d": 0x9FB8,
        "fe7e": 0x9FB9, "fe90": 0x9FBA, "fea0": 0x9FBB, "a3a0": 0x3000, "a8bc": 0x1E3F,
        "8135f437": 0xE7C7,
    }
    return {b"\x80": "\u20ac", b"\x84\x31\xa4\x37": None,
            **{bytes.fromhex(code): chr(point) for code, point in moved.items()}}


def _euc_jp_overrides():
    table = {b"\x8f\xa2\xb7": "\uff5e"}          # JIS X 0212's tilde (Python: U+007E)
    for lead in range(0xA1, 0xFF):
        for trail in range(0xA1, 0xFF):
            row, cell = divmod((lead - 0xA1) * 94 + trail - 0xA1, 188)
            shift_jis = bytes([row + (0x81 if row < 0x1F else 0xC1), cell + (0x40 if cell < 0x3F else 0x41)])
            code = bytes([lead, trail])
            standard, python = _decoded_or_none(shift_jis, "cp932"), _decoded_or_none(code, "euc-jp")
            if standard != python:
                table[code] = standard
    return table


def _decoded_or_none(data, codec):
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        return None


def _encoded_or_none(text, codec):
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        return None


MULTI_BYTE = {
    "web-gb18030": MultiByte(
        "gb18030", rb"[\x81-\xfe](?:[\x30-\x39][\x81-\xfe][\x30-\x39]|[\x40-\x7e\x80-\xfe])|[\x00-\x7f]",
        _gb18030_overrides),
    "web-big5": MultiByte("big5hkscs", rb"[\x81-\xfe][\x40-\x7e\xa1-\xfe]|[\x00-\x7f]", _big5_overrides),
    "web-euc-jp": MultiByte(
        "euc-jp", rb"\x8e[\xa1-\xdf]|\x8f[\xa1-\xfe][\xa1-\xfe]|[\xa1-\xfe][\xa1-\xfe]|[\x00-\x7f]",
        _euc_jp_overrides),
    "web-shift-jis": MultiByte(
        "cp932", rb"[\x81-\x9f\xe0-\xfc][\x40-\x7e\x80-\xfc]|[\x00-\x80\xa1-\xdf]",
        lambda: {bytes([byte]): None for byte in (0xA0, 0xFD, 0xFE, 0xFF)}),
}


class _MultiByteCodec:
    """Python's codec `base`, but where `overrides` names a code (found at character
    boundaries, as `char` splits the bytes) the standard's text for it, or an error."""

    def __init__(self, name, spec):
        self.name, self.base, self.char = name, spec.base, spec.char
        self.overrides = spec.overrides()
        self.override = re.compile(_alternatives(self.overrides))
        # The longest run of characters from `pos` with no override among them.
        self.run = re.compile(rb"(?:(?!%s)(?:%s))*" % (self.override.pattern, spec.char))
        self.back = self._encodings_back()
        self.back_chars = re.compile("(%s)" % "|".join(map(re.escape, self.back))) if self.back else None

    def decode(self, data, errors="strict"):
        _strict_only(self.name, errors)
        data = bytes(data)
        parts, pos = [], 0
        while pos < len(data):
            end = self.run.match(data, pos).end()
            parts.append(self._base_decode(data, pos, end))
            if end == len(data):
                break
            found = self.override.match(data, end)
            if found is None or self.overrides[found.group()] is None:
                raise UnicodeDecodeError(self.name, data, end, found.end() if found else end + 1,
                                         "no character in the Encoding Standard")
            parts.append(self.overrides[found.group()])
            pos = found.end()
        return "".join(parts), len(data)

    def encode(self, text, errors="strict"):
        _strict_only(self.name, errors)
        if self.back_chars is None or self.back_chars.search(text) is None:
            return text.encode(self.base), len(text)
        parts = self.back_chars.split(text)        # text, a character to encode back, text, ...
        return b"".join(self.back[part] if i % 2 else part.encode(self.base)
                        for i, part in enumerate(parts)), len(text)

    def _base_decode(self, data, start, end):
        try:
            return data[start:end].decode(self.base)
        except UnicodeDecodeError as e:     # the offsets in the whole of `data`
            raise UnicodeDecodeError(self.name, data, start + e.start, start + e.end, e.reason) from None

    def _read_here(self, data):
        try:
            return self.decode(data)[0]
        except UnicodeDecodeError:
            return None

    def _encodings_back(self):
        """Each character whose code here is not the base codec's -> its code, chosen as the
        standard's encoders choose: the shortest (JIS X 0208's 0xADE2 for U+2116, where Python's
        euc-jp writes JIS X 0212's 0x8FA2F1; 0xA6D9 for U+FE10, where Python's gb18030 writes
        0x84318236), except that the euro sign stays GB 18030's 0xA2E3, not gbk's 0x80. And the
        characters Python writes in a code that reads otherwise here: big5's 0xA241 reads as
        U+2215, so U+FF0F, which Python writes there, goes to 0xA1FE, the other code of U+FF0F."""
        back = {}
        for code, text in sorted(self.overrides.items(), key=lambda item: len(item[0])):
            if text is None or text in back:
                continue
            base = _encoded_or_none(text, self.base)
            if base is None or self._read_here(base) != text or 1 < len(code) < len(base):
                back[text] = code
        lost = {}
        for code in self.overrides:
            text = _decoded_or_none(code, self.base)
            if text is not None and text not in back and not self._encodes_back(text):
                lost[text] = len(code)
        for code in _codes_of_length(self.char, set(lost.values())):
            text = self._read_here(code)
            if text in lost and text not in back:
                back[text] = code
        return back

    def _encodes_back(self, text):
        base = _encoded_or_none(text, self.base)
        return base is not None and self._read_here(base) == text


def _codes_of_length(char, lengths):
    """Every code of one or two bytes in these lengths that `char` matches (the rarer longer
    ones are not searched)."""
    char = re.compile(char)
    for length in sorted(lengths & {1, 2}):
        for value in range(256 ** length):
            code = value.to_bytes(length, "big")
            if char.fullmatch(code):
                yield code


def _alternatives(codes):
    """A regular expression matching exactly `codes`: each prefix, then its last bytes as a set."""
    last_bytes = {}
    for code in codes:
        last_bytes.setdefault(code[:-1], []).append(code[-1])
    return b"|".join(b"".join(b"\\x%02x" % byte for byte in prefix)
                     + b"[" + b"".join(b"\\x%02x" % byte for byte in sorted(lasts)) + b"]"
                     for prefix, lasts in sorted(last_bytes.items(), key=lambda item: -len(item[0])))


# --- ISO-2022-JP ----------------------------------------------------------------------------

# Escape sequences switch between ASCII, JIS X 0201 Roman (0x5C is the yen sign, 0x7E the
# overline), half-width katakana and JIS X 0208, whose two bytes are EUC-JP's less 0x80 each
# (so read here as web-euc-jp reads them, with the same index).
_ISO_2022_JP_ESCAPE = re.compile(rb"(\x1b(?:\(B|\(J|\(I|\$@|\$B))")
_ISO_2022_JP_BYTES = {                  # what each state reads
    b"(B": re.compile(rb"[\x00-\x0d\x10-\x1a\x1c-\x7f]*"), b"(I": re.compile(rb"[\x21-\x5f]*"),
    b"$@": re.compile(rb"(?:[\x21-\x7e]{2})*"),
}
_ISO_2022_JP_BYTES[b"(J"], _ISO_2022_JP_BYTES[b"$B"] = _ISO_2022_JP_BYTES[b"(B"], _ISO_2022_JP_BYTES[b"$@"]
_ROMAN = {0x5C: 0xA5, 0x7E: 0x203E}
_KATAKANA = {byte: 0xFF61 - 0x21 + byte for byte in range(0x21, 0x60)}
_JIS_TO_EUC = bytes.maketrans(bytes(range(0x21, 0x7F)), bytes(range(0xA1, 0xFF)))


def _iso_2022_jp_decode(data, errors="strict"):
    """The standard's ISO-2022-JP decoder, strictly: an escape sequence right after another
    (no character between) is an error, as is an escape that names no state."""
    _strict_only("web-iso-2022-jp", errors)
    data = bytes(data)
    text = []
    for state, pos, part in _iso_2022_jp_parts(data):
        if state in (b"$@", b"$B"):
            try:
                text.append(part.translate(_JIS_TO_EUC).decode("web-euc-jp"))
            except UnicodeDecodeError as e:
                raise UnicodeDecodeError("web-iso-2022-jp", data, pos + e.start, pos + e.end,
                                         e.reason) from None
        else:
            chars = part.decode("latin-1")
            text.append(chars.translate(_ROMAN) if state == b"(J" else
                        chars.translate(_KATAKANA) if state == b"(I" else chars)
    return "".join(text), len(data)


def iso_2022_jp_runs(data):
    """[(first character, its byte offset, bytes per character)] for each run of text in one
    state of ISO-2022-JP `data` (valid: decoded without error): where each character of the
    text came from. The web importer's byte offsets need it, since a part of the text does not
    re-encode to its bytes alone."""
    runs, chars = [], 0
    for state, pos, part in _iso_2022_jp_parts(bytes(data)):
        width = 2 if state in (b"$@", b"$B") else 1
        runs.append((chars, pos, width))
        chars += len(part) // width
    return runs


def _iso_2022_jp_parts(data):
    """(state, byte offset, bytes) of each run between escape sequences, as far as the state
    reads them; then UnicodeDecodeError at a byte it does not read, or at an escape right after
    another."""
    parts, pos, state = _ISO_2022_JP_ESCAPE.split(data), 0, b"(B"
    for i, part in enumerate(parts):
        if i % 2:
            if i > 1 and not parts[i - 1]:
                raise UnicodeDecodeError("web-iso-2022-jp", data, pos, pos + len(part),
                                         "an escape sequence right after another")
            state, pos = part[1:], pos + len(part)
            continue
        read = _ISO_2022_JP_BYTES[state].match(part).end()
        if read:
            yield state, pos, part[:read]
        if read < len(part):
            raise UnicodeDecodeError("web-iso-2022-jp", data, pos + read, pos + read + 1,
                                     "no character in the Encoding Standard")
        pos += len(part)


def _iso_2022_jp_encode(text, errors="strict"):
    """Text in the fewest escapes: ASCII, the yen sign and overline in Roman, half-width
    katakana as katakana (the standard's encoder widens them; kept here so text re-encodes
    to as many bytes), the rest in JIS X 0208. Ends in ASCII."""
    _strict_only("web-iso-2022-jp", errors)
    out, state = [], b"(B"
    for i, char in enumerate(text):
        code = ord(char)
        if code < 0x80 and code not in (0x0E, 0x0F, 0x1B):     # Roman has all but 0x5C, 0x7E
            want, byte = b"(J" if state == b"(J" and code not in _ROMAN else b"(B", bytes([code])
        elif code in (0xA5, 0x203E):
            want, byte = b"(J", b"\x5c" if code == 0xA5 else b"\x7e"
        elif 0xFF61 <= code <= 0xFF9F:
            want, byte = b"(I", bytes([code - 0xFF61 + 0x21])
        else:
            try:
                euc = char.encode("web-euc-jp")
            except UnicodeEncodeError:
                euc = b""
            if len(euc) != 2 or euc[0] < 0xA1:
                raise UnicodeEncodeError("web-iso-2022-jp", text, i, i + 1, "not in ISO-2022-JP")
            want, byte = b"$B", bytes([euc[0] - 0x80, euc[1] - 0x80])
        if want != state and not (want == b"$B" and state == b"$@"):
            out.append(b"\x1b" + want)
            state = want
        out.append(byte)
    if state != b"(B":
        out.append(b"\x1b(B")
    return b"".join(out), len(text)


def _strict_only(name, errors):
    if errors != "strict":
        raise ValueError(f"{name} reads and writes with errors='strict' only, not {errors!r}")


@functools.cache
def _multi_byte_codec(name):
    codec = _MultiByteCodec(name, MULTI_BYTE[name])
    return codecs.CodecInfo(name=name, encode=codec.encode, decode=codec.decode)


def _search(name):
    name = name.replace("_", "-")
    if name in SINGLE_BYTE:
        return _single_byte_codec(name)
    if name in MULTI_BYTE:
        return _multi_byte_codec(name)
    if name == "web-iso-2022-jp":
        return codecs.CodecInfo(name=name, encode=_iso_2022_jp_encode, decode=_iso_2022_jp_decode)
    return None


codecs.register(_search)
