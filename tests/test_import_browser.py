"""The image, text and web-page importers inside Chromium (Pyodide): the same files give the
same records (every field but the creation time) and the same error messages as on the host."""

import json
import random

import pytest

from py_engine.data.classification import DataError
from py_engine.data.importers.image import import_image, import_page_image
from py_engine.data.importers.text import import_text
from py_engine.data.importers.website import import_html
from py_engine.harness import put_files, run_json
from test_import_image import FORMATS, PAGE, make_image
from test_import_text import MARKDOWN, render_chatml

pytestmark = pytest.mark.browser

PAGE_URL = "https://example.org/posts/ride.html"

IMPORT = """
import json, os
from py_engine.data.classification import DataError
from py_engine.data.importers.image import import_image, import_page_image
from py_engine.data.importers.text import import_text
from py_engine.data.importers.website import import_html

def outcome(call):
    try:
        return [{k: v for k, v in r.as_dict().items() if k != "created"} for r in call()]
    except DataError as e:
        return type(e).__name__ + ": " + str(e)

out = {}
for name in sorted(os.listdir("/work/import")):
    data = open("/work/import/" + name, "rb").read()
    if name.startswith("image-"):
        out[name] = outcome(lambda: import_image(data, name=name[6:], caption="seen from the pier"))
    elif name == "page.html":
        out[name] = outcome(lambda: import_page_image(data, "/img/bike.jpg", page_url=PAGE_URL))
    elif name.startswith("web-"):
        out[name] = outcome(lambda: import_html(data, PAGE_URL))
    else:
        out[name] = outcome(lambda: import_text(data, name=name, max_tokens=40))
json.dumps(out)
"""


def outcome(call):
    try:
        return [{k: v for k, v in r.as_dict().items() if k != "created"} for r in call()]
    except DataError as e:
        return type(e).__name__ + ": " + str(e)


def test_importers_give_the_same_records_in_the_browser(engine_page):
    rng = random.Random(8)
    files = {}
    for fmt in FORMATS:
        data, _ = make_image(fmt, rng, metadata=True)
        files[f"image-sunset_over the pier.{fmt.lower()}"] = data
    files["image-IMG_0001.jpg"] = make_image("JPEG", rng, metadata=False)[0]
    files["image-broken.png"] = files["image-sunset_over the pier.png"][:-30]
    files["page.html"] = PAGE.encode()
    items = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
             {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
             {"instruction": "Translate", "input": "bonjour", "output": "hello"},
             {"text": "great film", "label": "pos"}]
    files["mixed.jsonl"] = "\n".join(json.dumps(x) for x in items).encode()
    files["list.json"] = json.dumps(items, indent=2).encode()
    files["dump.txt"] = (render_chatml(items[0]["messages"]) + "\n").encode() * 3
    files["labels.csv"] = b'text,label\n"a, b",x\n"multi\nline",y\n'
    files["notes.md"] = MARKDOWN.encode()
    files["cut.json"] = json.dumps(items).encode()[:-9]
    files["latin1.txt"] = "café".encode("latin-1")
    # Web pages in charsets Python's codecs name or read otherwise, and markup that Python's
    # html.parser releases read apart (a "<![CDATA[" in the body, a repeated attribute).
    files["web-thai.html"] = ("<html><head><meta charset='windows-874'><title>ข่าวเช้า</title></head><body>"
                              "<article><h1>ข่าวเช้า</h1><p>สวัสดีครับ ยินดีต้อนรับ</p></article></body></html>").encode("cp874")
    files["web-1252.html"] = (b"<html><head><meta http-equiv='Content-Type' content='text/html; charset=latin1'>"
                              b"</head><body><main><p>Caf\xe9 cr\xe8me \x81 \x80 five</p><![CDATA[ a > b ]]>"
                              b"<p class=intro class=signature>Read on past the section.</p></main></body></html>")
    files["web-rot13.html"] = b"<meta charset=rot13><p>Plain page, an odd charset name.</p>"
    # Multi-byte codes Python's codecs refuse or read otherwise (web_codecs.py), and their offsets.
    files["web-euc-jp.html"] = (b"<meta charset=euc-jp><article><h1>\xc6\xfc\xcb\xdc</h1><p>\xad\xa1 \xa1\xc1 "
                                b"\xa4\xb3\xa4\xec\xa4\xcf\xcb\xdc\xa4\xc7\xa4\xb9</p><h2>\xad\xa2</h2><p>\xcb\xdc\xa1\xa3</p></article>")
    files["web-gbk.html"] = b"<meta charset=gbk><p>\xbc\xdb\xb8\xf1\xa3\xba\x80100\xa3\xac\xa6\xd9 \x87\x7a</p>"

    want = {name: (outcome(lambda: import_image(data, name=name[6:], caption="seen from the pier"))
                   if name.startswith("image-") else
                   outcome(lambda: import_page_image(data, "/img/bike.jpg", page_url=PAGE_URL))
                   if name == "page.html" else
                   outcome(lambda: import_html(data, PAGE_URL))
                   if name.startswith("web-") else
                   outcome(lambda: import_text(data, name=name, max_tokens=40)))
            for name, data in files.items()}
    assert sum(isinstance(v, str) for v in want.values()) == 3    # the broken ones, refused
    assert len(want["notes.md"]) > 3                              # chunked
    assert "สวัสดีครับ" in want["web-thai.html"][0]["text"]
    assert "Café crème \x81 € five" in want["web-1252.html"][0]["text"]
    assert "Read on past the section." in want["web-1252.html"][0]["text"]
    assert "① ～ これは本です" in want["web-euc-jp.html"][0]["text"]
    assert "价格：€100，︐ 噝" in want["web-gbk.html"][0]["text"]

    put_files(engine_page, {f"/work/import/{name}": data for name, data in files.items()})
    got = run_json(engine_page, IMPORT.replace("PAGE_URL", repr(PAGE_URL)))
    assert got == want
