"""Images into training records, from what can be known without a vision model: the alt text,
title, caption and surrounding text a page gives an image, the text metadata inside the file
(EXIF ImageDescription, UserComment and XP fields, PNG text chunks, JPEG and GIF comments: see
data.image_meta) and the file name where it says something ("red bicycle on the beach.png"
does, "IMG_2041.jpg" does not).

    records = import_image(data, name="beach.jpg", caption="A red bicycle at dawn")
    ctx = image_context(html, src="/img/bike.jpg", page_url="https://example.org/post")
    records = import_image(data, name=ctx.url, **ctx.fields(), page_url=ctx.page_url)
    records = import_page_image(html, "/img/bike.jpg", page_url=..., data=None)  # the two at once

Each image gives one causal-LM text record (continued pretraining): a heading naming the image
(title, alt, XPTitle, PNG Title or the cleaned file name), then its descriptions, keywords and
surrounding text, each once. Where a caption-like description exists beside a distinct name for
the image, it also gives a prompt/response pair: 'Describe the image "NAME".' -> the caption.
Boilerplate that says nothing ("OLYMPUS DIGITAL CAMERA", "CREATOR: gd-jpeg v1.0", "Untitled")
is left out.

The bytes are optional (an <img> whose file could not be fetched still has its page's words);
when given, the format is sniffed from them and a corrupt, truncated or unsupported file is a
DataError naming the file and the byte offset. An image with nothing to learn from is a
NothingToLearn (a DataError) saying so.

Origin: "file" (the name) or "url", "page" (the page's URL), "format", "width", "height",
"fields" (the fields the text was built from, in order) and "where", the name used in errors.

Pure Python (html_text's parser, urllib.parse): this runs in the browser.
"""

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from ..classification import DataError
from ..html_text import Element, Text, parse_html
from ..image_meta import read_image
from ..record import Record

MAX_IMAGE_BYTES = 64 << 20
SURROUNDING_CHARS = 300         # of text kept on each side of an <img>

# Metadata fields that describe the picture, best first; the name-like ones head the text.
NAME_FIELDS = ("title", "alt", "exif:XPTitle", "png:Title", "file name")
CAPTION_FIELDS = ("caption", "alt", "exif:ImageDescription", "png:Description", "png:Caption",
                  "exif:XPSubject", "exif:XPComment", "exif:UserComment", "png:Comment",
                  "png:Subject", "comment")
KEYWORD_FIELDS = ("exif:XPKeywords", "png:Keywords")
_PNG_KEYS = {"title": "Title", "description": "Description", "caption": "Caption",
             "comment": "Comment", "subject": "Subject", "keywords": "Keywords"}

_BOILERPLATE = re.compile(
    r"^(?:(?:olympus|sony|konica minolta|kodak|samsung|nikon|canon|fujifilm|panasonic|"
    r"digital)\b.*\b(?:camera|dsc)|sony dsc|dsc|dcim|untitled|default|image|picture|photo|"
    r"screenshot|no description|none|null|n/?a|description|title|comment|"
    r"creator: .*|created (?:with|by) .*|made with .*|optimi[sz]ed (?:with|by) .*|"
    r"(?:file )?written by .*|processed by .*|compressed by .*|lead technologies.*|"
    r"intel\(r\) jpeg.*|applemark.*|ijg jpeg.*|gd-jpeg.*|.*\bquality\s*=\s*\d+.*)$",
    re.IGNORECASE)
# File-name words that say nothing: camera and app prefixes, counters, dates, hashes
_NAME_NOISE = re.compile(
    r"^(?:img|image|dsc[fn]?|dcim|pxl|mvimg|vid|photo|pic|picture|screenshot|screen|shot|"
    r"scan|untitled|copy|edited|final|whatsapp|signal|wp|fb|ig|export|download|file|"
    r"[a-z]?\d+[a-z]?|[0-9a-f]{8,}|[a-z]*\d[a-z\d]*)$", re.IGNORECASE)


class NothingToLearn(DataError):
    """An image with no text anywhere: no alt, title, caption, surrounding text, metadata, and
    a file name that says nothing."""


# ---- the importer ----------------------------------------------------------------------------

def import_image(data, name=None, alt=None, title=None, caption=None, surrounding=None,
                 page_url=None):
    """Records for one image (see the module docstring). `data`: the file's bytes or None;
    `name`: its file name, path or URL."""
    where = name or page_url or "<image>"
    origin = {"url": name} if _is_url(name) else {"file": name} if name else {}
    if page_url:
        origin["page"] = page_url
    fields = _page_fields(alt=alt, title=title, caption=caption, surrounding=surrounding)
    if data is not None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DataError(f"{where}: image data must be bytes, got {type(data).__name__}")
        if len(data) > MAX_IMAGE_BYTES:
            raise DataError(f"{where}: {len(data)} bytes is over the {MAX_IMAGE_BYTES}-byte "
                            "limit for an image")
        info = read_image(data, where)
        origin.update(format=info.format, width=info.width, height=info.height)
        fields += _metadata_fields(info)
    described = describe_file_name(name)
    if described:
        fields.append(("file name", described))
    if not fields:
        raise NothingToLearn(f"{where}: nothing to learn from this image without a vision model:"
                             " no alt text, title, caption, surrounding text or text metadata, "
                             "and the file name says nothing")
    origin["where"] = where
    return _records(fields, origin)


def _page_fields(**given):
    fields = []
    for key, value in given.items():
        if value is not None and not isinstance(value, str):
            raise DataError(f"{key} must be a string, got {type(value).__name__}")
        if value and _says_something(value):
            fields.append((key, _clean(value)))
    return fields


def _metadata_fields(info):
    fields = []
    for key, text in info.fields():
        if key.startswith("png:"):
            standard = _PNG_KEYS.get(key[4:].lower())
            if standard is None:
                continue                 # Software, Creation Time, dates, profiles
            key = "png:" + standard
        if _says_something(text):
            fields.append((key, _clean(text)))
    return fields


def _records(fields, origin):
    """The text record, and the prompt/response pair where there is a caption and a name."""
    fields = _distinct(sorted(fields, key=lambda f: _RANK.get(f[0], len(_RANK))))
    by_name = dict(fields)
    heading = next((k for k in NAME_FIELDS if k in by_name), None)
    caption = next((k for k in CAPTION_FIELDS if k in by_name and k != heading), None)
    parts = []
    for key, text in fields:
        if key in KEYWORD_FIELDS:
            text = "Keywords: " + ", ".join(w.strip() for w in re.split(r"[;,]", text) if w.strip())
        parts.append(text)
    records = [Record("causal_lm", "image", text="\n\n".join(parts),
                      origin={**origin, "fields": [k for k, _ in fields]})]
    if heading and caption:
        messages = [{"role": "user", "content": f'Describe the image "{by_name[heading]}".'},
                    {"role": "assistant", "content": by_name[caption]}]
        records.append(Record("causal_lm", "image", messages=messages,
                              origin={**origin, "fields": [heading, caption]}))
    return records


# the order of the text: a name first, then captions, keywords, the page's surrounding text
_RANK = {key: k for k, key in enumerate(dict.fromkeys(
    NAME_FIELDS + CAPTION_FIELDS + KEYWORD_FIELDS + ("surrounding",)))}


def _distinct(fields):
    """Fields in order, each once: one whose words a field kept before already holds (the
    file name "bike" after the title "The bike") is left out."""
    kept, seen = [], []
    for key, text in fields:
        norm = _normal(text)
        if not norm or any(norm in other for other in seen):
            continue
        kept.append((key, text))
        seen.append(norm)
    return kept


def _normal(text):
    return " ".join(re.findall(r"\w+", text.casefold()))


def _clean(text):
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _says_something(text):
    text = text.strip()
    return bool(re.search(r"[^\W\d_]{2}", text)) and not _BOILERPLATE.match(text)


def _is_url(name):
    return bool(name) and re.match(r"^(?:https?|data|blob):", name) is not None


def describe_file_name(name):
    """What a file name (or a URL's last path segment) says about its picture, or None:
    "red_bicycle-on the beach.png" -> "red bicycle on the beach"; "IMG_2041.jpg",
    "Screenshot 2024-03-01 at 10.15.22.png", "a8f93c0e1b2d.webp" -> None."""
    if not name or name.startswith("data:"):
        return None
    path = urlsplit(name).path if _is_url(name) else name
    base = unquote(re.split(r"[\\/]", path.rstrip("/\\"))[-1])
    stem = re.sub(r"\.(?:png|jpe?g|gif|webp|bmp|tiff?|avif|heic)$", "", base, flags=re.IGNORECASE)
    words = [w for w in re.split(r"[\s_\-.+,()\[\]]+", stem) if w]
    meaningful = [w for w in words if not _NAME_NOISE.match(w)]
    if not any(re.search(r"[^\W\d_]{3}", w) for w in meaningful):
        return None
    return " ".join(meaningful)


# ---- an <img> on a page ----------------------------------------------------------------------

@dataclass
class ImageContext:
    """What a page says about one of its <img> elements. url: the image's absolute URL (its src
    resolved against the page's), or the src as written where the page URL is not known."""
    url: str
    page_url: str
    alt: str = None
    title: str = None
    caption: str = None
    surrounding: str = None

    def fields(self):
        """The keyword arguments import_image takes from a page."""
        return {"alt": self.alt, "title": self.title, "caption": self.caption,
                "surrounding": self.surrounding}


def image_context(html, src, page_url=None, charset=None):
    """The ImageContext of the first <img> in `html` whose src (or data-src, or a srcset
    candidate) is `src`, compared after both are resolved against `page_url`: its alt and
    title, the caption of its <figure> (figcaption), table (caption) or a nearby element whose
    class names a caption, and the text beside it (up to SURROUNDING_CHARS on each side, within
    its article, section or main). Nothing in the page is run. A DataError where no <img> has
    that src. Bytes are read in the page's charset as the web importer reads them (`charset`:
    the HTTP header's), never with characters replaced."""
    if isinstance(html, (bytes, bytearray, memoryview)):
        from .website import decode_html

        html = decode_html(html, page_url or "the page", charset)[0]
    root = parse_html(html)
    want = urljoin(page_url or "", src)
    img = next((n for n in root.elements() if n.tag == "img" and
                want in {urljoin(page_url or "", u) for u in _sources(n)}), None)
    if img is None:
        raise DataError(f"{page_url or 'the page'}: no <img> with src {src!r}")
    caption_node = _caption_of(img)
    caption = _text_of(caption_node) if caption_node is not None else None
    return ImageContext(url=want, page_url=page_url, alt=img.attrs.get("alt") or None,
                        title=img.attrs.get("title") or None, caption=caption or None,
                        surrounding=_surrounding(img, caption_node) or None)


def import_page_image(html, src, page_url=None, data=None, charset=None):
    """import_image for the <img> of `html` with this src, with what image_context finds."""
    ctx = image_context(html, src, page_url, charset)
    return import_image(data, name=ctx.url, page_url=page_url, **ctx.fields())


_SKIPPED = {"script", "style", "template", "noscript", "nav", "header", "footer", "aside", "form",
            "button", "select", "svg", "iframe", "head"}
_BLOCKS = {"p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "tr",
           "table", "dd", "dt", "dl", "blockquote", "pre", "figure", "figcaption", "caption",
           "section", "article", "main", "body", "br", "hr"}
_SECTIONS = {"article", "section", "main", "body"}
_BLOCK_EDGE = "\x1e"            # between paragraphs while flattening (a control character text does not use)


def _sources(img):
    urls = [img.attrs.get("src"), img.attrs.get("data-src")]
    for attr in ("srcset", "data-srcset"):
        urls += [c.strip().split(" ")[0] for c in img.attrs.get(attr, "").split(",")]
    return [u.strip() for u in urls if u and u.strip()]


def _caption_of(img):
    for depth, node in enumerate(img.ancestors()):
        if node.tag == "figure":
            return next((n for n in node.elements() if n.tag == "figcaption"), None)
        if node.tag == "table":
            return next((n for n in node.children if isinstance(n, Element) and n.tag == "caption"),
                        None)
        if depth < 3:
            found = next((n for n in node.elements() if img not in n.elements() and
                          "caption" in n.attrs.get("class", "").lower()), None)
            if found is not None:
                return found
        if node.tag in _SECTIONS:
            return None
    return None


def _text_of(node, skip=None):
    pieces = []
    _linear(node, pieces, skip=skip)
    return _join_blocks(pieces)


def _linear(node, out, skip=None, mark=None):
    """Flatten `node` into text pieces, _BLOCK_EDGE at block edges, None where `mark` is."""
    for child in node.children:
        if isinstance(child, Text):
            out.append(child.data)
        elif child is mark:
            out.append(None)
        elif child is skip or child.tag in _SKIPPED:
            continue
        elif child.tag in _BLOCKS:
            out.append(_BLOCK_EDGE)
            _linear(child, out, skip, mark)
            out.append(_BLOCK_EDGE)
        elif child.tag != "img":
            _linear(child, out, skip, mark)


def _join_blocks(pieces):
    """Paragraphs (whitespace collapsed) joined by blank lines."""
    blocks = (" ".join(block.split()) for block in "".join(pieces).split(_BLOCK_EDGE))
    return "\n\n".join(b for b in blocks if b)


def _surrounding(img, caption_node):
    """The text just before and just after the image (the image's figure taken as one piece)
    inside its nearest article, section, main or body, its caption left out."""
    container = next((n for n in img.ancestors() if n.tag == "figure"), img)
    section = next((n for n in container.ancestors() if n.tag in _SECTIONS), None)
    if section is None:
        section = container
        while section.parent is not None:
            section = section.parent
    pieces = []
    _linear(section, pieces, skip=caption_node, mark=container)
    if None not in pieces:
        return None
    k = pieces.index(None)
    left, right = "".join(pieces[:k]), "".join(pieces[k + 1:])
    same_left, same_right = left.rsplit(_BLOCK_EDGE, 1)[-1], right.split(_BLOCK_EDGE, 1)[0]
    if same_left.strip() or same_right.strip():      # inside a paragraph: that paragraph
        return " ".join(t for t in (_tail(same_left), _head(same_right)) if t)
    before = _join_blocks([left]).rsplit("\n\n", 1)[-1]
    after = _join_blocks([right]).split("\n\n", 1)[0]
    return "\n\n".join(t for t in (_tail(before), _head(after)) if t)


def _tail(text):
    """The last SURROUNDING_CHARS of text, whitespace collapsed, cut at a word."""
    text = " ".join(text.split())
    return text if len(text) <= SURROUNDING_CHARS else text[-SURROUNDING_CHARS:].split(" ", 1)[-1]


def _head(text):
    text = " ".join(text.split())
    return text if len(text) <= SURROUNDING_CHARS else text[:SURROUNDING_CHARS].rsplit(" ", 1)[0]
