"""Images into training records: the pure-Python metadata reader (py_engine.data.image_meta)
checked against Pillow on images Pillow makes here (every format, with and without metadata,
random sizes) and on cut and corrupted copies of them, then the importer and the <img> helper.

"Where Pillow reads them": a file counts as read by Pillow when Image.open, load() and the
metadata calls all succeed; there our format, size, PNG text, comments, XMP and every EXIF
text tag must equal Pillow's. Our reader is stricter than Pillow about the container (it wants
the end marker, valid CRCs, a RIFF size that fits), so a corrupted file it refuses is fine as
long as the refusal is a DataError naming the file and the byte offset.
"""

import io
import random
import re
import warnings

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from py_engine.data.classification import DataError
from py_engine.data.image_meta import EXIF_TEXT_TAGS, USER_COMMENT, read_image, sniff_format

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
OUR_TAGS = tuple(EXIF_TEXT_TAGS) + (USER_COMMENT,)


# ---- what Pillow reads, and the same from ours -----------------------------------------------

def pillow_view(data):
    """Pillow's format, size and metadata for `data`, or None where Pillow cannot read it."""
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            im.load()
            view = {"format": im.format, "size": im.size, "xmp": im.info.get("xmp")}
            if im.format == "PNG":
                view["text"] = {k: (str(v), getattr(v, "lang", None) or "", getattr(v, "tkey", None) or "")
                                for k, v in im.text.items()}
            if im.format == "JPEG":
                view["comments"] = [s for app, s in im.applist if app == "COM"]
            if im.format == "GIF":
                view["comments"] = im.info.get("comment")
            exif = im.getexif()
            tags = {tag: exif[tag] for tag in EXIF_TEXT_TAGS if tag in exif}
            user = exif.get_ifd(0x8769).get(USER_COMMENT)
            if user is not None:
                tags[USER_COMMENT] = user
            view["exif"] = {t: v for t, v in tags.items() if isinstance(v, (str, bytes))}
            return view
    except Exception:           # Pillow raises many kinds; any of them means "not read"
        return None


def our_view(info):
    view = {"format": info.format, "size": (info.width, info.height), "xmp": info.xmp}
    if info.format == "PNG":
        view["text"] = {c.key: (c.text, c.lang, c.translated_key) for c in info.png_text}
    if info.format == "JPEG":
        view["comments"] = info.comments
    if info.format == "GIF":
        view["comments"] = b"\n".join(info.comments) or None
    view["exif"] = {tag: raw.decode("latin-1") if typ == 2 else raw
                    for tag, (typ, raw) in info.exif.items()}
    return view


# ---- images made with Pillow -----------------------------------------------------------------

DESCRIPTION = "A red bicycle leaning on a fence, Brighton beach"
XP = {0x9C9B: "Red bicycle", 0x9C9C: "taken at dawn, très calme", 0x9C9F: "bicycles",
      0x9C9E: "bicycle; beach; red"}
USER = "Borrowed from Ana — thanks!"


def exif_block(user_charset):
    exif = Image.Exif()
    exif[0x010E] = DESCRIPTION
    for tag, text in XP.items():
        exif[tag] = text.encode("utf-16-le") + b"\0\0"
    if user_charset == "UNICODE":
        body = USER.encode("utf-16-le")
    elif user_charset == "ASCII":
        body = USER.encode("ascii", "replace")
    else:
        body = USER.encode("utf-8")
    exif.get_ifd(0x8769)[USER_COMMENT] = user_charset.encode().ljust(8, b"\0") + body
    return exif


def expected_user(user_charset):
    return USER.encode("ascii", "replace").decode() if user_charset == "ASCII" else USER


def make_image(fmt, rng, metadata):
    """(bytes, the metadata fields written) for a random-sized image of `fmt`."""
    size = (rng.randint(1, 300), rng.randint(1, 200))
    mode = {"GIF": "P", "BMP": rng.choice(["RGB", "L", "P", "1"])}.get(fmt, rng.choice(["RGB", "L"]))
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    im.putpixel((size[0] // 2, size[1] // 2), (0, 255, 0))
    im = im.convert(mode)
    kwargs, fields = {}, {}
    if metadata:
        charset = rng.choice(["UNICODE", "ASCII", "\0\0\0\0\0\0\0\0"])
        if fmt in ("PNG", "JPEG", "WEBP"):
            kwargs["exif"] = exif_block(charset)
            fields.update({"exif:ImageDescription": DESCRIPTION, "exif:UserComment": expected_user(charset)})
            fields.update({f"exif:{EXIF_TEXT_TAGS[t]}": text for t, text in XP.items()})
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text("Title", "Sunrise over the pier")
            info.add_text("Description", "Long exposure; " * rng.randint(1, 40), zip=True)
            info.add_itxt("Comment", "Schöne Grüße aus Brighton", lang="de-DE", tkey="Kommentar",
                          zip=rng.random() < 0.5)
            info.add_itxt("Author", "Zoë", lang="", tkey="")
            kwargs["pnginfo"] = info
            fields.update({"png:Title": "Sunrise over the pier",
                           "png:Description": ("Long exposure; " * 1).strip(),
                           "png:Comment": "Schöne Grüße aus Brighton", "png:Author": "Zoë"})
        if fmt == "JPEG":
            kwargs["comment"] = "Pier at 6am, café open"
            fields["comment"] = "Pier at 6am, café open"
        if fmt == "GIF":
            kwargs["comment"] = "Seagulls over the West Pier " * rng.randint(1, 20)
            fields["comment"] = kwargs["comment"].strip()
        if fmt == "WEBP":
            kwargs["xmp"] = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><dc:title>pier</dc:title></x:xmpmeta>"
    out = io.BytesIO()
    im.save(out, fmt, **kwargs)
    return out.getvalue(), fields


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_agrees_with_pillow_on_images_pillow_made(fmt):
    rng = random.Random(f"pillow-{fmt}")
    for k in range(12):
        metadata = k % 2 == 0
        data, fields = make_image(fmt, rng, metadata)
        info = read_image(data, f"image{k}.{fmt.lower()}")
        want = pillow_view(data)
        assert want is not None, "Pillow could not read an image it wrote"
        assert our_view(info) == want, f"{fmt} image {k}"
        assert sniff_format(data) == fmt
        assert info.skipped == []
        got = dict(info.fields())
        for name, text in fields.items():
            if name == "png:Description":
                assert got[name].startswith("Long exposure;")
            else:
                assert got[name] == text, name
        if not metadata:
            assert got == {}


def test_user_comment_charsets_and_exif_text_decoding():
    from py_engine.data.image_meta import decode_user_comment, decode_xp, decode_text

    assert decode_user_comment(b"UNICODE\0" + "héllo".encode("utf-16-be"), big_endian=True) == "héllo"
    assert decode_user_comment(b"UNICODE\0" + "héllo".encode("utf-16-le"), big_endian=True) == "héllo"
    assert decode_user_comment(b"UNICODE\0\xff\xfe" + "日本".encode("utf-16-le")) == "日本"
    assert decode_user_comment(b"ASCII\0\0\0plain text   ") == "plain text"
    assert decode_user_comment(b"JIS\0\0\0\0\0" + "日本語".encode("shift_jis")) == "日本語"
    assert decode_user_comment(b"\0" * 8 + "ünïcode".encode()) == "ünïcode"
    assert decode_user_comment(b"\0" * 8 + b"\0" * 20) == ""
    assert decode_xp("Grüße".encode("utf-16-le") + b"\0\0junk") == "Grüße"
    assert decode_text("café".encode("latin-1")) == "café"
    assert decode_text("café".encode("utf-8") + b"\0rest") == "café"


def test_png_text_chunks_with_languages_and_compression_match_pillow():
    rng = random.Random(7)
    info = PngImagePlugin.PngInfo()
    chunks = {}
    for k in range(12):
        key = f"Key{k}"
        text = "".join(rng.choice("abcé ü—日本\n") for _ in range(rng.randint(0, 300)))
        kind = rng.choice(["text", "ztxt", "itxt", "itxt-zip"])
        if kind == "text":
            text = text.encode("latin-1", "replace").decode("latin-1")
            info.add_text(key, text)
        elif kind == "ztxt":
            text = text.encode("latin-1", "replace").decode("latin-1")
            info.add_text(key, text, zip=True)
        else:
            info.add_itxt(key, text, lang=rng.choice(["", "en", "de-CH", "x-klingon"]),
                          tkey=rng.choice(["", "Schlüssel"]), zip=kind == "itxt-zip")
        chunks[key] = text
    # text chunks after the pixel data too: Pillow reads them on load()
    out = io.BytesIO()
    Image.new("L", (5, 3)).save(out, "PNG", pnginfo=info)
    data = out.getvalue()
    late = _png_chunk(b"tEXt", b"Late\0after the pixels")
    data = data[:-12] + late + data[-12:]
    got = read_image(data, "t.png")
    assert our_view(got) == pillow_view(data)
    assert {c.key: c.text for c in got.png_text} == {**chunks, "Late": "after the pixels"}
    assert {c.chunk for c in got.png_text} >= {"iTXt"}


def _png_chunk(ctype, body):
    import struct
    import zlib
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))


# ---- corrupted and truncated files -----------------------------------------------------------

def mutations(data, rng):
    """(kind, mutated bytes): cut at a random offset, bytes flipped, a run of bytes
    overwritten, bytes inserted or deleted. Half the edits land in the first quarter of the
    file, where the headers and metadata are; a PNG edit is followed, half the time, by fresh
    CRCs, so that what lies inside the chunks gets read rather than refused for its CRC."""
    kind = rng.choice(["cut", "flip", "flip", "smash", "insert", "delete"])
    b = bytearray(data)
    at = rng.randrange(len(b) if rng.random() < 0.5 else max(1, len(b) // 4))
    if kind == "cut":
        return kind, bytes(b[:at])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            b[at] ^= 1 << rng.randrange(8)
            at = min(len(b) - 1, at + rng.randint(0, 16))
    elif kind == "smash":
        b[at:at + 8] = bytes(rng.randrange(256) for _ in range(len(b[at:at + 8])))
    elif kind == "insert":
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    else:
        del b[at:at + rng.randint(1, 6)]
    if data.startswith(b"\x89PNG") and rng.random() < 0.5:
        kind += "+crc"
        b = fresh_png_crcs(b)
    return kind, bytes(b)


def fresh_png_crcs(b):
    """A PNG's bytes with each whole chunk's CRC recomputed."""
    import struct
    import zlib
    pos = 8
    while pos + 12 <= len(b):
        (length,) = struct.unpack(">I", b[pos:pos + 4])
        end = pos + 8 + length
        if end + 4 > len(b):
            break
        b[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(b[pos + 4:end])))
        pos = end + 4
    return b


def test_corrupted_and_truncated_images_fail_cleanly_or_agree_with_pillow():
    rng = random.Random(2024)
    bases = [make_image(fmt, rng, metadata)[0] for fmt in FORMATS for metadata in (True, False)]
    counts = {"agree": 0, "refused": 0, "only ours": 0}
    for k in range(400):
        kind, data = mutations(bases[k % len(bases)], rng)
        name = f"fuzz{k}.img"
        try:
            info = read_image(data, name)
        except DataError as e:
            message = str(e)
            assert message.startswith(name + ":") and "\n" not in message
            assert re.search(r"byte \d+", message) or "empty file" in message, message
            counts["refused"] += 1
            continue
        assert kind != "cut", f"a cut file was accepted: {name} ({len(data)} bytes)"
        want = pillow_view(data)
        if want is None:
            counts["only ours"] += 1        # pixel data Pillow cannot decode: we never decode it
            continue
        assert our_view(info) == want, f"{name} ({kind})"
        counts["agree"] += 1
    print(counts)
    assert counts["agree"] >= 80 and counts["refused"] >= 80, counts


# ---- the importer ----------------------------------------------------------------------------

from py_engine.data.importers.image import (NothingToLearn, describe_file_name, image_context,  # noqa: E402
                                            import_image, import_page_image)


def test_an_image_file_becomes_a_text_record_and_a_caption_pair():
    data, _ = make_image("JPEG", random.Random(1), metadata=True)
    records = import_image(data, name="photos/red_bicycle-on the beach.jpg")
    text, pair = records
    assert text.kind == "causal_lm" and text.source == "image"
    assert text.text.split("\n\n")[0] == "Red bicycle"                  # XPTitle names it
    for expected in (DESCRIPTION, "Keywords: bicycle, beach, red", XP[0x9C9C], "Pier at 6am, café open"):
        assert expected in text.text
    assert "red bicycle on the beach" in text.text
    info = read_image(data)
    assert text.origin["file"] == "photos/red_bicycle-on the beach.jpg"
    assert (text.origin["format"], text.origin["width"], text.origin["height"]) == ("JPEG", info.width, info.height)
    assert text.origin["fields"][:2] == ["exif:XPTitle", "file name"]
    assert "exif:ImageDescription" in text.origin["fields"] and "comment" in text.origin["fields"]
    assert pair.messages == [{"role": "user", "content": 'Describe the image "Red bicycle".'},
                             {"role": "assistant", "content": DESCRIPTION}]
    assert pair.origin["fields"] == ["exif:XPTitle", "exif:ImageDescription"]


def test_page_fields_come_first_and_boilerplate_is_left_out():
    exif = Image.Exif()
    exif[0x010E] = "OLYMPUS DIGITAL CAMERA         "
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "JPEG", exif=exif, comment="CREATOR: gd-jpeg v1.0 (using IJG JPEG v62), quality = 90")
    records = import_image(out.getvalue(), name="https://example.org/img/IMG_2041.jpg",
                           alt="A red bicycle", title="Bike", caption="A red bicycle leaning on a fence.",
                           surrounding="We rode along the coast.", page_url="https://example.org/post")
    assert records[0].text == "Bike\n\nA red bicycle\n\nA red bicycle leaning on a fence.\n\nWe rode along the coast."
    assert records[0].origin["url"] == "https://example.org/img/IMG_2041.jpg"
    assert records[0].origin["page"] == "https://example.org/post"
    assert records[0].origin["fields"] == ["title", "alt", "caption", "surrounding"]
    assert records[1].messages[1]["content"] == "A red bicycle leaning on a fence."
    with pytest.raises(NothingToLearn, match=r"^IMG_2041\.jpg: nothing to learn from this image"):
        import_image(out.getvalue(), name="IMG_2041.jpg")
    only_alt = import_image(None, name="https://example.org/a8f93c0e1b2d.webp", alt="Harbour at night")
    assert [r.text for r in only_alt] == ["Harbour at night"] and "format" not in only_alt[0].origin


@pytest.mark.parametrize("name, want", [
    ("IMG_2041.jpg", None), ("DSC01234.JPG", None), ("PXL_20230101_123456789.jpg", None),
    ("Screenshot 2024-03-01 at 10.15.22.png", None), ("a8f93c0e1b2d.webp", None), ("photo (3).png", None),
    ("red_bicycle-on the beach.png", "red bicycle on the beach"), ("cat.jpg", "cat"),
    ("IMG_2041 sunset at Brighton.jpg", "sunset at Brighton"),
    ("https://x.org/a/red%20kite.jpg?w=300", "red kite"), ("C:\\Users\\me\\Pictures\\old mill.bmp", "old mill"),
    ("data:image/png;base64,iVBORw0KGgo=", None),
])
def test_file_names_that_say_something(name, want):
    assert describe_file_name(name) == want


PAGE = """<!doctype html><html><head><title>Trip</title>
<script>document.write('<img src="/img/bike.jpg" alt="fake">')</script><style>p{}</style></head>
<body><nav>Home <img src="/logo.png" alt="Logo"></nav>
<article><h1>Our coast ride</h1>
<p>We rode along the coast
   all morning, &amp; stopped at the pier.</p>
<figure><picture><img src="../img/bike.jpg" srcset="/img/bike-2x.jpg 2x, /img/bike-3x.jpg 3x"
  alt="A red bicycle" title="The bike"></picture>
  <figcaption>A red bicycle <em>leaning</em> on a fence.</figcaption></figure>
<p>Then it rained.<br>And rained.</p>
<table><caption>Distances</caption><tr><td><img src="/img/map.png"></td><td>12 km</td></tr></table>
<div class="wp-caption"><img src="/img/gull.gif" alt=""><p class="wp-caption-text">A gull, unimpressed</p></div>
<p>Read more <img src="/img/icon.bmp" alt="arrow"> below</p>
<footer>(c) us</footer></article></body></html>"""


def test_image_context_gathers_what_the_page_says_about_an_img():
    url = "https://example.org/posts/ride.html"
    ctx = image_context(PAGE, "/img/bike.jpg", page_url=url)
    assert ctx.url == "https://example.org/img/bike.jpg" and ctx.page_url == url
    assert (ctx.alt, ctx.title, ctx.caption) == ("A red bicycle", "The bike", "A red bicycle leaning on a fence.")
    assert ctx.surrounding == "We rode along the coast all morning, & stopped at the pier.\n\nThen it rained."
    assert image_context(PAGE, "https://example.org/img/bike-3x.jpg", page_url=url).alt == "A red bicycle"
    assert image_context(PAGE, "/img/map.png", url).caption == "Distances"
    gull = image_context(PAGE, "/img/gull.gif", url)
    assert (gull.alt, gull.caption) == (None, "A gull, unimpressed")
    assert image_context(PAGE, "/img/icon.bmp", url).surrounding == "Read more below"
    with pytest.raises(DataError, match=r"^https://example.org/posts/ride.html: no <img> with src '/img/nope.png'$"):
        image_context(PAGE, "/img/nope.png", url)
    bmp, _ = make_image("BMP", random.Random(2), metadata=False)
    records = import_page_image(PAGE.encode(), "/img/bike.jpg", page_url=url, data=bmp)
    assert records[0].origin["url"] == "https://example.org/img/bike.jpg"
    assert records[0].origin["format"] == "BMP"
    assert records[0].text.startswith("The bike\n\nA red bicycle\n\nA red bicycle leaning on a fence.")


def test_a_page_given_as_bytes_is_read_in_its_charset():
    """As the web importer reads it: the <meta> charset, else the HTTP header's, else UTF-8,
    and bytes that are not valid there an error, never replacement characters in alt text."""
    page = ("<html><head><meta charset='windows-1251'></head><body><p>Велосипед у моря</p>"
            "<img src='/img/bike.jpg' alt='Красный велосипед'></body></html>")
    url = "https://example.org/posts/ride.html"
    assert image_context(page.encode("cp1251"), "/img/bike.jpg", url).alt == "Красный велосипед"
    plain = page.replace("<meta charset='windows-1251'>", "")
    assert image_context(plain.encode("cp1251"), "/img/bike.jpg", url, charset="cp1251").alt == \
        "Красный велосипед"
    with pytest.raises(DataError, match=r"^https://example.org/posts/ride.html: byte \d+ \(0x[0-9a-f]{2}\) "
                                        r"is not valid utf-8 and no charset is declared"):
        import_page_image(plain.encode("cp1251"), "/img/bike.jpg", page_url=url, data=b"")


@pytest.mark.parametrize("data, message", [
    (b"", r"^shot\.png: empty file, not an image$"),
    (b"hello world", r"^shot\.png: not an image \(no PNG, JPEG, GIF, WebP or BMP signature at byte 0"),
    (b"II*\x00\x08\x00\x00\x00", r"^shot\.png: TIFF images are not supported \(byte 0: its signature\)"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", r"^shot\.png: SVG images are not supported"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00", r"^shot\.png: corrupt or truncated PNG at byte 16: chunk 'IHDR' needs 13 bytes"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", r"^shot\.png: corrupt or truncated JPEG at byte 6: segment 0xFFE0 needs 14 bytes"),
    (b"GIF89a\x05\x00\x05\x00\x00\x00\x00;", r"^shot\.png: corrupt or truncated GIF at byte 13: no image before the trailer$"),
])
def test_bad_image_files_are_refused_with_the_byte_offset(data, message):
    with pytest.raises(DataError, match=message):
        import_image(data, name="shot.png", alt="something")


def test_deep_pages_and_endless_scans_are_handled_without_running_away():
    deep = "<div>" * 20000 + '<p>Before <img src="x.png" alt="deep"> after</p>' + "</div>" * 20000
    ctx = image_context(deep, "x.png")
    assert (ctx.alt, ctx.surrounding) == ("deep", "Before after")
    scan = b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    for body in (b"\xff" * 300000, b"\xff\x00" * 150000):      # no end-of-image marker, ever
        with pytest.raises(DataError, match=f"at byte {len(scan) + len(body)}: the file ends inside a scan"):
            read_image(scan + body, "endless.jpg")
