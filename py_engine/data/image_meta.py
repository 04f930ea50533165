"""An image file's format, size and text metadata, read from its bytes in pure Python.

Written here, since the browser has no Pillow, and checked against Pillow on the host:
tests/test_import_image.py makes images of every format with Pillow, with and without metadata,
cuts and flips bytes in them, and requires our format, size and every metadata string to equal
what Pillow reads from the same bytes.

    info = read_image(data, "beach.jpg")
    info.format, info.width, info.height     # "JPEG", 640, 480 (Pillow's format names)
    info.fields()                             # [("exif:ImageDescription", "A red bicycle"), ...]

The format is sniffed from the first bytes, never taken from the name: PNG, JPEG, GIF, WEBP and
BMP are read; TIFF, ICO, HEIC/AVIF, SVG and PDF are recognised and refused by name.

What is read, per format:
  PNG   size from IHDR; tEXt (Latin-1), zTXt (zlib, Latin-1) and iTXt (UTF-8, zlib or not, with
        its language tag and translated keyword) chunks; EXIF from eXIf, or from ImageMagick's
        "Raw profile type exif" text where there is no eXIf; XMP from the XML:com.adobe.xmp iTXt.
  JPEG  size from the first SOFn; COM segments; EXIF from APP1 "Exif\\0\\0" (several are joined,
        as Pillow joins them); XMP from the last APP1 "http://ns.adobe.com/xap/1.0/".
  GIF   the logical screen, grown to hold the first image (as Pillow sizes it); the comment
        extensions before the first image (the first frame's comment, in Pillow's terms).
  WEBP  size from VP8 / VP8L / VP8X; EXIF and XMP chunks.
  BMP   size from the DIB header.
  EXIF  IFD0's ImageDescription, XPTitle, XPComment, XPSubject and XPKeywords (UTF-16LE), the
        Exif IFD's UserComment (its 8-byte charset prefix: ASCII, UNICODE, JIS or undefined).

The container is checked whole: a bad signature, a chunk, segment or block running past the
end, a PNG CRC mismatch, a missing end marker (IEND, EOI, the GIF trailer), a RIFF size that
disagrees with the file, or BMP pixel data shorter than its header says is a DataError naming
the file and the byte offset where reading failed. Pixel data is not decoded. Metadata that is
itself malformed inside a sound container (a zTXt that does not inflate, an EXIF entry pointing
outside its block) is left out, as Pillow leaves it out, and named in info.skipped.

Pure Python (struct, zlib): this runs in the browser.
"""

import re
import struct
import zlib
from dataclasses import dataclass, field

from .classification import DataError

MAX_TEXT_CHUNK = 1 << 20        # inflated size of one zTXt/iTXt, as Pillow's MAX_TEXT_CHUNK

EXIF_TEXT_TAGS = {              # tag -> name, IFD0
    0x010E: "ImageDescription",
    0x9C9B: "XPTitle",
    0x9C9C: "XPComment",
    0x9C9E: "XPKeywords",
    0x9C9F: "XPSubject",
}
EXIF_IFD_POINTER = 0x8769
USER_COMMENT = 0x9286           # in the Exif IFD
EXIF_ASCII, EXIF_BYTE, EXIF_UNDEFINED = 2, 1, 7
# type -> unit size, for the types Pillow reads (others are skipped, as Pillow skips them)
_EXIF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
              16: 8}
_USER_COMMENT_CHARSETS = {b"ASCII\0\0\0": "ascii", b"UNICODE\0": "unicode",
                          b"JIS\0\0\0\0\0": "shift_jis", b"\0" * 8: "undefined"}

_REFUSED = (   # (prefix test, name) for formats recognised only to be refused by name
    (lambda b: b[:4] in (b"II*\0", b"MM\0*"), "TIFF"),
    (lambda b: b[:4] == b"\0\0\1\0", "ICO"),
    (lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"), "HEIC"),
    (lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"), "AVIF"),
    (lambda b: b[:5] == b"%PDF-", "PDF"),
    (lambda b: re.match(rb"\s*(<\?xml[^>]*>\s*)?<svg[\s>]", b[:512]) is not None, "SVG"),
)


@dataclass
class TextChunk:
    """One PNG text chunk: `chunk` is "tEXt", "zTXt" or "iTXt"; lang and translated_key are
    iTXt's."""
    key: str
    text: str
    chunk: str
    lang: str = ""
    translated_key: str = ""


@dataclass
class ImageInfo:
    """What read_image found. exif: tag -> (type, raw bytes) for the text tags read (an ASCII
    value without its one terminating NUL, as Pillow strips it); comments: raw JPEG COM
    segments or GIF comment extensions, in file order; skipped: malformed metadata left out."""
    format: str
    width: int
    height: int
    png_text: list = field(default_factory=list)
    comments: list = field(default_factory=list)
    exif: dict = field(default_factory=dict)
    exif_big_endian: bool = False
    xmp: bytes = None
    skipped: list = field(default_factory=list)

    def fields(self):
        """(field name, text) pairs of the metadata, decoded, stripped, empty ones left out:
        exif:<tag name>, png:<keyword>, comment."""
        out = []
        for tag, (typ, raw) in self.exif.items():
            name = EXIF_TEXT_TAGS.get(tag, "UserComment")
            if tag == USER_COMMENT:
                text = decode_user_comment(raw, self.exif_big_endian)
            elif typ == EXIF_ASCII:
                text = decode_text(raw)
            else:
                text = decode_xp(raw) if tag in EXIF_TEXT_TAGS and tag != 0x010E else decode_text(raw)
            out.append((f"exif:{name}", text))
        for chunk in self.png_text:
            if chunk.key != "XML:com.adobe.xmp" and not chunk.key.startswith("Raw profile type"):
                out.append((f"png:{chunk.key}", chunk.text))
        out.extend(("comment", decode_text(raw)) for raw in self.comments)
        return [(name, text.strip()) for name, text in out if text and text.strip()]


# ---- decoding the text of a field ------------------------------------------------------------

def decode_text(raw):
    """Bytes of unknown encoding as text: UTF-8 where they are, else Latin-1 (what Pillow
    assumes for EXIF ASCII and PNG tEXt); NULs end it."""
    raw = bytes(raw).split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def decode_xp(raw):
    """Windows' XP* tags: UTF-16LE, NUL-terminated."""
    raw = bytes(raw)
    text = raw[:len(raw) // 2 * 2].decode("utf-16-le", "replace")
    return text.split("\0", 1)[0]


def decode_user_comment(raw, big_endian=False):
    """EXIF UserComment: an 8-byte charset code, then the text (UNICODE in the EXIF block's own
    byte order unless a byte-order mark says otherwise; cameras pad with NULs or spaces)."""
    raw = bytes(raw)
    charset = _USER_COMMENT_CHARSETS.get(raw[:8])
    body = raw[8:] if charset else raw
    if charset == "unicode":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            encoding, body = ("utf-16-le" if body[:2] == b"\xff\xfe" else "utf-16-be"), body[2:]
        else:
            encoding = _utf16_order(body, big_endian)
        text = body[:len(body) // 2 * 2].decode(encoding, "replace").split("\0", 1)[0]
    elif charset == "shift_jis":
        text = body.split(b"\0", 1)[0].decode("shift_jis", "replace")
    else:
        text = decode_text(body)
    return text.rstrip(" \0")


def _utf16_order(body, big_endian):
    """UTF-16's byte order for a UNICODE UserComment without a byte-order mark. The spec ties
    it to the EXIF block's byte order, but writers differ (Windows writes little-endian into
    big-endian blocks), so where the text is mostly Latin its zero high bytes tell: at odd
    offsets little-endian, at even ones big-endian."""
    even = body[0:len(body) - 1:2].count(0)
    odd = body[1::2].count(0)
    if odd > 2 * even:
        return "utf-16-le"
    if even > 2 * odd:
        return "utf-16-be"
    return "utf-16-be" if big_endian else "utf-16-le"


# ---- reading ---------------------------------------------------------------------------------

def sniff_format(data):
    """Pillow's name for the image format of `data` ("PNG", "JPEG", "GIF", "WEBP", "BMP"), the
    name of a recognised but unsupported one prefixed by "unsupported:", or None."""
    head = bytes(data[:512])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    for test, name in _REFUSED:
        if test(head):
            return "unsupported:" + name
    return None


def read_image(data, name="<image>"):
    """The ImageInfo of the image file in `data` (bytes); a DataError naming `name` and the
    byte offset for anything that is not a sound PNG, JPEG, GIF, WEBP or BMP."""
    data = bytes(data)
    fmt = sniff_format(data)
    if fmt is None:
        if not data:
            raise DataError(f"{name}: empty file, not an image")
        raise DataError(f"{name}: not an image (no PNG, JPEG, GIF, WebP or BMP signature at "
                        f"byte 0; starts with {data[:8]!r})")
    if fmt.startswith("unsupported:"):
        raise DataError(f"{name}: {fmt[12:]} images are not supported (byte 0: its signature); "
                        "give PNG, JPEG, GIF, WebP or BMP")
    reader = _Reader(data, name, fmt)
    info = _READERS[fmt](reader)
    if info.width < 1 or info.height < 1:
        raise DataError(f"{name}: corrupt {fmt}: the header gives a size of "
                        f"{info.width}x{info.height}, an image with no pixels")
    return info


class _Reader:
    """Bounds-checked access to the file's bytes; fail() raises the DataError."""

    def __init__(self, data, name, fmt):
        self.data, self.name, self.fmt = data, name, fmt

    def fail(self, offset, problem):
        raise DataError(f"{self.name}: corrupt or truncated {self.fmt} at byte {offset}: {problem}")

    def need(self, offset, size, what):
        if offset + size > len(self.data):
            self.fail(offset, f"{what} needs {size} bytes, the file ends at byte {len(self.data)}")
        return self.data[offset:offset + size]

    def unpack(self, fmt, offset, what):
        return struct.unpack(fmt, self.need(offset, struct.calcsize(fmt), what))


# ---- PNG -------------------------------------------------------------------------------------

def _read_png(r):
    pos, info, saw_idat, raw_exif = 8, None, False, None
    while True:
        length, ctype = r.unpack(">I4s", pos, "a chunk header")
        if length > 0x7FFFFFFF or not all(65 <= c <= 90 or 97 <= c <= 122 for c in ctype):
            r.fail(pos, f"not a chunk header (type {ctype!r}, length {length})")
        body = r.need(pos + 8, length, f"chunk {ctype.decode('latin-1')!r}")
        (crc,) = r.unpack(">I", pos + 8 + length, f"the CRC of chunk {ctype.decode()!r}")
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            r.fail(pos, f"chunk {ctype.decode()!r} fails its CRC check")
        if info is None:
            if ctype != b"IHDR" or length != 13:
                r.fail(pos, f"the first chunk must be a 13-byte IHDR, got {ctype!r}")
            width, height = struct.unpack(">II", body[:8])
            info = ImageInfo("PNG", width, height)
        elif ctype == b"IDAT":
            saw_idat = True
        elif ctype == b"IEND":
            if not saw_idat:
                r.fail(pos, "IEND before any IDAT: the image has no pixel data")
            break
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            chunk = _png_text(ctype.decode(), body, info, pos)
            if chunk is not None:
                info.png_text.append(chunk)
        elif ctype == b"eXIf":
            raw_exif = body
        pos += 12 + length
    if raw_exif is None:
        raw_exif = _raw_profile_exif(info)
    if raw_exif is not None:
        _read_exif(raw_exif, info)
    return info


def _png_text(ctype, body, info, pos):
    """A TextChunk, or None (noted in info.skipped) where Pillow reads nothing from the chunk;
    the XMP packet of an iTXt keyed XML:com.adobe.xmp goes to info.xmp."""
    skipped = info.skipped
    key, sep, rest = body.partition(b"\0")
    if ctype == "tEXt":
        return TextChunk(key.decode("latin-1"), rest.decode("latin-1"), ctype) if key else None
    if ctype == "zTXt":
        if rest and rest[0] != 0:
            skipped.append(f"zTXt at byte {pos}: unknown compression method {rest[0]}")
            return None
        text = _inflate(rest[1:], skipped, f"zTXt at byte {pos}")
        return TextChunk(key.decode("latin-1"), (text or b"").decode("latin-1"), ctype) if key else None
    if not sep or len(rest) < 2:
        skipped.append(f"iTXt at byte {pos}: truncated header")
        return None
    compressed, method, rest = rest[0], rest[1], rest[2:]
    parts = rest.split(b"\0", 2)
    if len(parts) < 3:
        skipped.append(f"iTXt at byte {pos}: no language tag or translated keyword")
        return None
    lang, tkey, text = parts
    if compressed:
        text = _inflate(text, skipped, f"iTXt at byte {pos}") if method == 0 else None
        if text is None:
            return None
    if key == b"XML:com.adobe.xmp":
        info.xmp = text
    try:
        return TextChunk(key.decode("latin-1"), text.decode("utf-8"), ctype,
                         lang.decode("utf-8"), tkey.decode("utf-8"))
    except UnicodeDecodeError:
        skipped.append(f"iTXt at byte {pos}: not UTF-8")
        return None


def _inflate(raw, skipped, where):
    """zlib-inflated bytes, at most MAX_TEXT_CHUNK; None (noted) when they do not inflate or
    would be larger."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, MAX_TEXT_CHUNK)
    except zlib.error:
        skipped.append(f"{where}: does not inflate")
        return None
    if inflater.unconsumed_tail:
        skipped.append(f"{where}: inflates past {MAX_TEXT_CHUNK} bytes")
        return None
    return out


def _raw_profile_exif(info):
    """ImageMagick's "Raw profile type exif" text: a header of three lines, then hex."""
    chunks = [c for c in info.png_text if c.key == "Raw profile type exif"]
    if not chunks:
        return None
    try:
        return bytes.fromhex("".join(chunks[-1].text.split("\n")[3:]))
    except ValueError:
        info.skipped.append("Raw profile type exif: not hex")
        return None


# ---- JPEG ------------------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))
_XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\0"


def _read_jpeg(r):
    """Segments are walked to the end-of-image marker; the size and the metadata come from the
    segments before the first scan, where Pillow reads them (the last SOFn there sets the size)."""
    data, pos, size, exif, in_header = r.data, 2, None, b"", True
    info = ImageInfo("JPEG", 0, 0)
    while True:
        if r.need(pos, 1, "a marker") != b"\xff":
            r.fail(pos, f"expected a marker (0xFF), got 0x{data[pos]:02X}")
        while r.need(pos + 1, 1, "a marker")[0] == 0xFF:       # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0x00, 0xD8):
            r.fail(pos, f"marker 0xFF{marker:02X} cannot appear here")
        (length,) = r.unpack(">H", pos + 2, f"the length of segment 0xFF{marker:02X}")
        if length < 2:
            r.fail(pos + 2, f"segment 0xFF{marker:02X} has length {length}")
        body = r.need(pos + 4, length - 2, f"segment 0xFF{marker:02X}")
        if not in_header:      # metadata after the first scan is not Pillow's either
            pass
        elif marker in _SOF:
            if len(body) < 6:
                r.fail(pos, "frame header (SOF) shorter than 6 bytes")
            size = struct.unpack(">HH", body[1:5])[::-1]
        elif marker == 0xFE:
            info.comments.append(body)
        elif marker == 0xE1 and body.startswith(b"Exif\0\0"):
            exif = exif + body[6:] if exif else body
        elif marker == 0xE1 and body.startswith(_XMP_PREFIX):
            info.xmp = body[len(_XMP_PREFIX):]
        pos += 2 + length
        if marker == 0xDA:
            if size is None:
                r.fail(pos, "scan (SOS) before any frame header (SOF)")
            in_header = False
            pos = _skip_entropy_coded(r, pos)
    if size is None:
        r.fail(pos, "no frame header (SOF) before the end of image")
    info.width, info.height = size
    if exif:
        _read_exif(exif, info)
    return info


# a marker after entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a restart
# marker or another 0xFF (a fill byte: the marker is the last 0xFF of a run); one linear search
_MARKER_AFTER_SCAN = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def _skip_entropy_coded(r, pos):
    """The offset of the first marker after a scan's entropy-coded data."""
    found = _MARKER_AFTER_SCAN.search(r.data, pos)
    if found is None:
        r.fail(len(r.data), "the file ends inside a scan, before the end-of-image marker")
    return found.start()


# ---- GIF -------------------------------------------------------------------------------------

def _read_gif(r):
    width, height, flags = r.unpack("<HHB", 6, "the logical screen descriptor")
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    info, first_image = ImageInfo("GIF", width, height), True
    comments = []
    while True:
        (introducer,) = r.need(pos, 1, "a block introducer")
        if introducer == 0x3B:                                    # trailer
            break
        if introducer == 0x21:                                    # extension
            (label,) = r.need(pos + 1, 1, "an extension label")
            pos, blocks = _sub_blocks(r, pos + 2)
            if label == 0xFE and first_image and blocks and blocks[0]:
                comments.append(b"".join(blocks))
        elif introducer == 0x2C:                                  # image
            x, y, w, h, iflags = r.unpack("<HHHHB", pos + 1, "an image descriptor")
            if first_image:
                info.width, info.height = max(width, x + w), max(height, y + h)
                info.comments, first_image = comments, False
            pos += 10 + (3 << ((iflags & 7) + 1) if iflags & 0x80 else 0)
            r.need(pos, 1, "the LZW code size")
            pos, _ = _sub_blocks(r, pos + 1)
        else:
            r.fail(pos, f"expected an extension, an image or the trailer, got 0x{introducer:02X}")
    if first_image:
        r.fail(pos, "no image before the trailer")
    return info


def _sub_blocks(r, pos):
    """(offset after the terminator, [block bytes]) for the data sub-blocks at `pos`."""
    blocks = []
    while True:
        (size,) = r.need(pos, 1, "a data sub-block size")
        if size == 0:
            return pos + 1, blocks
        blocks.append(r.need(pos + 1, size, "a data sub-block"))
        pos += 1 + size


# ---- WebP ------------------------------------------------------------------------------------

def _read_webp(r):
    (riff_size,) = r.unpack("<I", 4, "the RIFF size")
    end = 8 + riff_size
    if riff_size < 4 or end > len(r.data):
        r.fail(4, f"the RIFF header says {end} bytes, the file has {len(r.data)}")
    pos, info, size = 12, ImageInfo("WEBP", 0, 0), None
    while pos < end:
        if pos + 8 > end:
            r.fail(pos, "a chunk header runs past the end of the RIFF data")
        ctype, length = struct.unpack("<4sI", r.data[pos:pos + 8])
        if pos + 8 + length > end:
            r.fail(pos, f"chunk {ctype!r} of {length} bytes runs past the end of the RIFF data")
        body = r.data[pos + 8:pos + 8 + length]
        if size is None:
            size = _webp_size(r, ctype, body, pos)
            has_image = ctype != b"VP8X"
        elif ctype in (b"VP8 ", b"VP8L", b"ANMF"):
            has_image = True
        elif ctype == b"EXIF":
            _read_exif(body, info)
        elif ctype == b"XMP ":
            info.xmp = body
        pos += 8 + length + (length & 1)
    if size is None or not has_image:
        r.fail(pos, "no image chunk (VP8, VP8L or ANMF) in the file")
    info.width, info.height = size
    return info


def _webp_size(r, ctype, body, pos):
    if ctype == b"VP8X" and len(body) >= 10:
        return (int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1)
    if ctype == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if ctype == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return w & 0x3FFF, h & 0x3FFF
    r.fail(pos, f"the first chunk must be a valid VP8, VP8L or VP8X header, got {ctype!r} "
                f"of {len(body)} bytes")


# ---- BMP -------------------------------------------------------------------------------------

_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)


def _read_bmp(r):
    (pixels_at,) = r.unpack("<I", 10, "the pixel data offset")
    (header,) = r.unpack("<I", 14, "the DIB header size")
    if header not in _BMP_HEADERS:
        r.fail(14, f"unknown DIB header size {header}")
    dib = r.need(18, header - 4, "the DIB header")
    if header == 12:
        width, height, planes, bits = struct.unpack("<HHHH", dib[:8])
        compression = 0
    else:
        width, height, planes, bits, compression = struct.unpack("<IIHHI", dib[:16])
        if dib[7] == 0xFF:                       # negative: rows stored top-down
            height = 2 ** 32 - height
    if bits not in (1, 2, 4, 8, 16, 24, 32):
        r.fail(28 if header > 12 else 24, f"unsupported bit depth {bits}")
    if compression not in (0, 1, 2, 3, 6):
        r.fail(30, f"unsupported compression {compression}")
    if pixels_at > len(r.data):
        r.fail(10, f"pixel data said to start at byte {pixels_at}, past the end of the file")
    if compression in (0, 3):
        stride = (width * bits + 31) // 32 * 4
        r.need(pixels_at, stride * height, f"{width}x{height} pixels of {bits} bits")
    return ImageInfo("BMP", width, height)


# ---- EXIF ------------------------------------------------------------------------------------

def _read_exif(block, info):
    """The text tags of an EXIF block (TIFF structure, maybe after "Exif\\0\\0") into info.exif;
    problems go to info.skipped, never raise."""
    block = re.sub(b"^(Exif\x00\x00){1,2}", b"", bytes(block))
    if not block:
        return
    if block[:4] not in (b"MM\0*", b"II*\0", b"MM*\0", b"II\0*"):
        info.skipped.append(f"EXIF: not a TIFF header ({block[:4]!r})")
        return
    if len(block) < 8:
        info.skipped.append("EXIF: truncated TIFF header")
        return
    endian = "<" if block[:2] == b"II" else ">"
    info.exif_big_endian = endian == ">"
    (ifd0,) = struct.unpack(endian + "I", block[4:8])
    tags = _exif_ifd(block, ifd0, endian, info.skipped)
    for tag in EXIF_TEXT_TAGS:
        if tag in tags and tags[tag][0] in (EXIF_ASCII, EXIF_BYTE, EXIF_UNDEFINED):
            info.exif[tag] = tags[tag]
    pointer = _exif_pointer(tags.get(EXIF_IFD_POINTER), endian)
    if pointer is not None:
        exif_tags = _exif_ifd(block, pointer, endian, info.skipped)
        if USER_COMMENT in exif_tags and exif_tags[USER_COMMENT][0] in (EXIF_ASCII, EXIF_BYTE,
                                                                          EXIF_UNDEFINED):
            info.exif[USER_COMMENT] = exif_tags[USER_COMMENT]


def _exif_ifd(block, offset, endian, skipped):
    """tag -> (type, value bytes) of the IFD at `offset`, read as Pillow reads it: the first of
    a repeated tag wins, unknown types and empty values are skipped, and an entry whose value
    lies outside the block ends the IFD (keeping the entries before it)."""
    tags, total = {}, 0
    if offset + 2 > len(block):
        skipped.append(f"EXIF: IFD at {offset} is outside the {len(block)}-byte block")
        return tags
    (count,) = struct.unpack(endian + "H", block[offset:offset + 2])
    for k in range(count):
        at = offset + 2 + 12 * k
        if at + 12 > len(block):
            skipped.append(f"EXIF: IFD entry {k} at {at} is outside the block")
            break
        tag, typ, n, value = struct.unpack(endian + "HHI4s", block[at:at + 12])
        if tag in tags or typ not in _EXIF_UNIT:
            continue
        size = n * _EXIF_UNIT[typ]
        if size > 4:
            (where,) = struct.unpack(endian + "I", value)
            total += size
            if total > len(block):
                skipped.append(f"EXIF: tag 0x{tag:04X} is larger than its block")
                continue
            if where + size > len(block):
                skipped.append(f"EXIF: tag 0x{tag:04X} points outside its block")
                break
            value = block[where:where + size]
        else:
            value = value[:size]
        if value:
            if typ == EXIF_ASCII and value.endswith(b"\0"):
                value = value[:-1]
            tags[tag] = (typ, value)
    return tags


def _exif_pointer(entry, endian):
    """The Exif IFD's offset from its pointer tag (one unsigned or non-negative integer)."""
    if entry is None:
        return None
    typ, raw = entry
    formats = {3: "H", 4: "I", 13: "I", 16: "Q", 6: "b", 8: "h", 9: "i"}
    if typ not in formats or len(raw) != struct.calcsize(formats[typ]):
        return None
    (value,) = struct.unpack(endian + formats[typ], raw)
    return value if value >= 0 else None


_READERS = {"PNG": _read_png, "JPEG": _read_jpeg, "GIF": _read_gif, "WEBP": _read_webp,
            "BMP": _read_bmp}
