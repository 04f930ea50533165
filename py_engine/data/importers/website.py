"""Web pages made into training records: the page's readable main text (html_text), split into
chunks that fit the model's tokenizer, as continued-pretraining texts and, when asked, as
question/answer conversations from its headed sections.

    records = import_html(page_bytes, "https://example.org/post", charset="utf-8",
                          count_tokens=lambda t: len(tokenizer.encode(t).ids), max_tokens=512,
                          qa=True)
    records = import_url("https://example.org/post")          # host only: fetch_url, then this

Records (py_engine.data.record.Record, kind "causal_lm", source "website"):
  - a text per chunk; origin {"url", "title", "chunk" (from 0), "chunks", "chars": [start, end]
    of the chunk in the page's main text, "html_bytes": [start, end] of the source the chunk's
    blocks came from (from a block's start tag to where its last block closes), "where"}.
  - with qa=True also, per headed section, [user: a question about the heading, assistant: the
    section's text]; origin {"url", "title", "section" (the heading), "path" (the headings above
    it), "part", "parts", "chars", "html_bytes", "where"}. A heading that is already a question
    is asked as written; otherwise 'What does "<title>" say about <heading>?' (the page's own
    first section: 'What is "<title>" about?'). A section too long for max_tokens (question and
    answer counted together, the chat template's few tokens not) is answered in parts.

Chunks are cut at block boundaries (headings, paragraphs, list items, rows, code), a block too
long for one chunk at its lines, then sentences, then words, then characters. Every chunk is a
slice of the main text, and a chunk never ends on a heading whose text went to the next one.

count_tokens: any callable from a string to its token count; the default, approx_tokens, is one
token per 4 characters (about what English BPE gives), so pass the model's tokenizer where the
chunks must fit exactly.

Charset (the HTML standard's order): a byte order mark, else the `charset` argument (the HTTP
header's), else a <meta charset> or <meta http-equiv="Content-Type"> in the first 8 KiB (found
by the standard's prescan), else UTF-8. Charsets are named and read as browsers name and read
them (charsets.py, the Encoding Standard): iso-8859-1, latin1 and us-ascii mean windows-1252,
windows-874 and x-mac-cyrillic are known, a name browsers do not know (utf-7, rot13) is passed
over as they pass it over, and one they refuse to read (iso-2022-kr) is an error. Bytes that
are not valid in the charset are an error naming the URL and byte offset, never silently
replaced: a wrong guess would teach the model mojibake.

Refused with a DataError naming the URL and the problem: more than max_bytes, empty input,
bytes that are not HTML (PDF, images, archives, other binary data, JSON, XML feeds, text with no
HTML markup), an unknown charset, and a page with no readable text. Nothing on the page is run
or loaded (html_text parses markup only).

Pure Python, also in the browser; fetch_url and import_url need the host's network (urllib).
"""

import bisect
import json
import re

from .. import charsets, web_codecs
from ..chunks import approx_tokens, fit_chunks
from ..classification import DataError
from ..html_text import extract_main_text
from ..record import Record
from ..sniff import binary_kind

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_TOKENS = 512
DEFAULT_TIMEOUT = 20.0
META_SCAN_BYTES = 8192
BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16le"), (b"\xfe\xff", "utf-16be"))
HTML_MARKUP = re.compile(r"<(?:!doctype\s+html|html|head|body|title|meta|div|p|article|main|"
                         r"section|h[1-6]|table|ul|ol|span|a|br|script|style|!--)[\s/>]", re.I)


def import_html(html_bytes, url, charset=None, count_tokens=None, max_tokens=DEFAULT_MAX_TOKENS,
                qa=False, max_bytes=DEFAULT_MAX_BYTES):
    """Records from one page's bytes (see the module's docstring). `charset`: the HTTP header's,
    if any; `url`: where the page is from (named in every error and origin)."""
    count_tokens = count_tokens or approx_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    source, encoding, bom = decode_html(html_bytes, url, charset, max_bytes)
    page = extract_main_text(source)
    if all(b.kind == "title" for b in page.blocks):
        raise DataError(f"{url}: no readable text in the page")
    text = page.text
    offsets = page.block_offsets()
    to_bytes = ByteOffsets(source, encoding, bom, bytes(html_bytes))
    title = page.title or None

    def html_span(first, last):
        spans = [(b.start, b.end) for b in page.blocks[first:last + 1] if b.end > b.start]
        if not spans:
            return None
        return [to_bytes(min(s for s, _ in spans)), to_bytes(max(e for _, e in spans))]

    units = [(s, e, b.kind in ("title", "heading")) for (s, e), b in zip(offsets, page.blocks)]
    chunks = fit_chunks(text, units, count_tokens, max_tokens)
    records = []
    for i, (start, end) in enumerate(chunks):
        first, last = blocks_between(offsets, start, end)
        origin = {"url": url, "title": title, "chunk": i, "chunks": len(chunks),
                  "chars": [start, end], "html_bytes": html_span(first, last),
                  "where": f"{url} (chunk {i + 1} of {len(chunks)})"}
        records.append(Record("causal_lm", "website", text=text[start:end], origin=origin))
    if qa:
        for section in headed_sections(page):
            records.extend(qa_records(section, page, offsets, text, url, count_tokens,
                                      max_tokens, html_span))
    return records


def decode_html(data, url, charset=None, max_bytes=DEFAULT_MAX_BYTES):
    """(text, Python codec name, BOM length) of a page's bytes, after checking they are HTML of
    a sane size; a DataError naming `url` otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"{url}: expected the page's bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DataError(f"{url}: {len(data)} bytes is over the limit of {max_bytes} bytes")
    if not data.strip():
        raise DataError(f"{url}: the page is empty")
    bom = next(((mark, name) for mark, name in BOMS if data.startswith(mark)), None)
    if bom is None:
        sniff_binary(data, url)
        encoding, declared = charset_of(data, url, charset)
        body = data
    else:
        encoding, declared, body = bom[1], "by its byte order mark", data[len(bom[0]):]
    try:
        text = charsets.decode(body, encoding)
    except UnicodeDecodeError as e:
        offset = e.start + (len(bom[0]) if bom else 0)
        hint = (" and no charset is declared (HTTP header or <meta>); give the page's charset"
                if declared is None else f" ({declared})")
        raise DataError(f"{url}: byte {offset} (0x{data[offset]:02x}) is not valid "
                        f"{encoding}{hint}") from None
    sniff_text(text, url)
    return text, charsets.python_codec(encoding), len(bom[0]) if bom else 0


def sniff_binary(data, url):
    what = binary_kind(data)
    if what:
        raise DataError(f"{url}: not HTML but {what}")
    nul = data.find(b"\x00", 0, 4096)
    if nul >= 0:
        raise DataError(f"{url}: not HTML but binary data (a NUL byte at offset {nul})")


def sniff_text(text, url):
    head = text.lstrip()
    if head[:1] in ("{", "["):
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            raise DataError(f"{url}: not HTML but JSON")
    if head[:5].lower() == "<?xml" and not re.search(r"<(?:!doctype\s+html|html)[\s>]",
                                                      head[:4096], re.I):
        raise DataError(f"{url}: not HTML but an XML document (a feed?)")
    if not HTML_MARKUP.search(text, 0, 65536):
        raise DataError(f"{url}: not HTML (no HTML markup in its first 64 KiB)")


def charset_of(data, url, header_charset):
    """(the Encoding Standard's name, how it was declared or None) for BOM-less bytes."""
    passed_over = ""
    if header_charset:
        # A Content-Type parameter may come quoted (charset="utf-8"), as MIME allows.
        encoding = charsets.encoding_for(header_charset.strip().strip('"'))
        if encoding is not None:
            return _readable(encoding, url, "the HTTP header"), "declared in the HTTP header"
        passed_over = f"the HTTP header's charset {header_charset!r} is not one browsers know; "
    encoding = charsets.meta_charset(data, META_SCAN_BYTES)
    if encoding is not None:
        return (_readable(encoding, url, "the page's <meta>"),
                passed_over + "declared in the page's <meta>")
    if passed_over:
        return "utf-8", passed_over + "read as UTF-8, as no <meta> names one they know"
    return "utf-8", None


def _readable(encoding, url, where):
    if encoding == "replacement":
        raise DataError(f"{url}: {where} declares a charset browsers refuse to read (one the "
                        f"Encoding Standard maps to \"replacement\", such as iso-2022-kr)")
    return encoding


class ByteOffsets:
    """Byte offsets in the page's bytes of character offsets in its decoded text; each call
    encodes only from the nearest offset already known. ISO-2022-JP, whose escape sequences
    make a part of the text encode otherwise alone, is read from its runs instead."""

    def __init__(self, text, encoding, bom, data):
        self.text, self.encoding = text, encoding
        self.chars, self.bytes = [0], [bom]
        self.runs = web_codecs.iso_2022_jp_runs(data[bom:]) if encoding == "web-iso-2022-jp" else None

    def __call__(self, char):
        if self.runs is not None:
            i = bisect.bisect_right(self.runs, (char, float("inf"))) - 1
            if i < 0:
                return self.bytes[0]
            first, byte, width = self.runs[i]
            return self.bytes[0] + byte + (char - first) * width
        i = bisect.bisect_right(self.chars, char) - 1
        byte = self.bytes[i] + len(self.text[self.chars[i]:char].encode(self.encoding))
        self.chars.insert(i + 1, char)
        self.bytes.insert(i + 1, byte)
        return byte


def blocks_between(offsets, start, end):
    """Indices of the first and last blocks that overlap text[start:end]."""
    inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    return inside[0], inside[-1]


class Section:
    __slots__ = ("heading", "path", "first", "last", "is_title")

    def __init__(self, heading, path, first, last, is_title):
        self.heading, self.path, self.first, self.last = heading, path, first, last
        self.is_title = is_title


def headed_sections(page):
    """Each heading with text under it: the blocks from it up to the next heading."""
    sections, path = [], []
    blocks = page.blocks
    for i, block in enumerate(blocks):
        if block.kind not in ("title", "heading"):
            continue
        while path and path[-1][0] >= block.level:
            path.pop()
        last = i
        while last + 1 < len(blocks) and blocks[last + 1].kind not in ("title", "heading"):
            last += 1
        if last > i:
            sections.append(Section(block.heading_text, [h for _, h in path], i + 1, last,
                                    block.kind == "title"))
        path.append((block.level, block.heading_text))
    return sections


def question_for(section, title):
    heading = section.heading
    if heading.rstrip().endswith(("?", "\uff1f")):
        return heading
    if section.is_title or not title:
        return f'What is "{heading}" about?'
    return f'What does "{title}" say about {heading}?'


def qa_records(section, page, offsets, text, url, count_tokens, max_tokens, html_span):
    question = question_for(section, page.title)
    budget = max_tokens - count_tokens(question)
    if budget < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for an answer to "
                         f"{question!r}")
    units = [(*offsets[i], False) for i in range(section.first, section.last + 1)]
    parts = fit_chunks(text, units, count_tokens, budget)
    records = []
    for j, (start, end) in enumerate(parts):
        first, last = blocks_between(offsets, start, end)
        origin = {"url": url, "title": page.title or None, "section": section.heading,
                  "path": section.path, "part": j, "parts": len(parts), "chars": [start, end],
                  "html_bytes": html_span(first, last),
                  "where": f"{url} (section {section.heading!r}, part {j + 1} of {len(parts)})"}
        messages = [{"role": "user", "content": question},
                    {"role": "assistant", "content": text[start:end]}]
        records.append(Record("causal_lm", "website", messages=messages, origin=origin))
    return records


class FetchedPage:
    """What fetch_url got: the final URL (after redirects), the body, the charset of its
    Content-Type (or None) and the content type itself."""
    __slots__ = ("url", "body", "charset", "content_type")

    def __init__(self, url, body, charset, content_type):
        self.url, self.body, self.charset, self.content_type = url, body, charset, content_type


def fetch_url(url, max_bytes=DEFAULT_MAX_BYTES, timeout=DEFAULT_TIMEOUT):
    """GET an http(s) URL on the host, following up to 5 redirects (to http(s) only), and
    return a FetchedPage. Refused with a DataError naming the URL: another scheme, an HTTP
    error status, a content type other than text/html or application/xhtml+xml (a missing one
    is left to import_html's sniffing), a compressed body, a body over max_bytes (stopped
    there, by Content-Length or while reading), and a fetch taking over `timeout` seconds in
    all (checked between reads; no single network wait is longer than `timeout` either)."""
    import socket
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    def check_scheme(target):
        if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
            raise DataError(f"{url}: only http and https URLs are fetched, not {target!r}")

    class HttpRedirects(urllib.request.HTTPRedirectHandler):
        max_redirections = 5

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            check_scheme(urllib.parse.urljoin(req.full_url, newurl))
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    check_scheme(url)
    opener = urllib.request.build_opener(HttpRedirects)
    request = urllib.request.Request(url, headers={
        "User-Agent": "py-engine website importer",
        "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"})
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            headers = response.headers
            content_type = headers.get_content_type() if headers.get("Content-Type") else None
            if content_type not in (None, "text/html", "application/xhtml+xml"):
                raise DataError(f"{url}: content type {content_type} is not HTML")
            encoding = headers.get("Content-Encoding", "identity").strip().lower()
            if encoding != "identity":
                raise DataError(f"{url}: the body is {encoding}-encoded; only plain bodies "
                                "are read")
            length = headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise DataError(f"{url}: {length} bytes is over the limit of {max_bytes} bytes")
            body = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise DataError(f"{url}: the fetch took longer than {timeout} s")
                block = response.read1(65536)
                if not block:
                    break
                body += block
                if len(body) > max_bytes:
                    raise DataError(f"{url}: the body is over the limit of {max_bytes} bytes")
            return FetchedPage(response.geturl(), bytes(body), headers.get_content_charset(),
                               content_type)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise DataError(f"{url}: no answer within {timeout} s") from None
        raise DataError(f"{url}: cannot fetch ({e.reason})") from None
    except (socket.timeout, TimeoutError):
        raise DataError(f"{url}: no answer within {timeout} s") from None
    except (ConnectionError, OSError) as e:
        raise DataError(f"{url}: the connection failed ({e})") from None


def import_url(url, max_bytes=DEFAULT_MAX_BYTES, timeout=DEFAULT_TIMEOUT, **options):
    """fetch_url then import_html (options: count_tokens, max_tokens, qa), on the host; the
    records' origin names the final URL."""
    page = fetch_url(url, max_bytes, timeout)
    return import_html(page.body, page.url, charset=page.charset, max_bytes=max_bytes, **options)
