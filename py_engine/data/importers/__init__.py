"""Importers: web pages, images and text files made into training records (py_engine.data.record),
each record saying where it came from (its origin). Pure Python: they run in the browser too.

    records = import_file(data, "notes.md")        # routed by what the bytes are (import_file)
"""

HTML_SUFFIXES = (".html", ".htm", ".xhtml")


def import_file(data, name, url=None, qa=False, count_tokens=None, max_tokens=None):
    """The records of one file's bytes, by what they are: an image (its text: metadata, name),
    an HTML page (main text; with `qa` also question/answer pairs; `url`: where it is from,
    else `name`), else a text file (markdown, plain text, JSON/JSONL chats and records, CSV...).
    A DataError says why a file cannot be read."""
    from ..image_meta import sniff_format
    from .image import import_image
    from .text import import_text
    from .website import import_html

    options = {"count_tokens": count_tokens}
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    data = bytes(data)
    image = sniff_format(data)
    if image and not image.startswith("unsupported:"):
        return import_image(data, name=name)
    head = data[:1024].lstrip().lower()
    if str(name).lower().endswith(HTML_SUFFIXES) or head.startswith((b"<!doctype html", b"<html")):
        return import_html(data, url=url or str(name), qa=qa, **options)
    return import_text(data, name=name, **options)
