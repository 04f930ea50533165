"""The local stand-ins of web pages the extension's tests and the demo open: one loopback
server answering for any host name, over TLS or plain HTTP as the client opens, each page
titled as its tab."""

import http.client
import ssl

import pytest

from py_engine.tab_pages import TabPages

TABS = [("https://github.com/rust-lang/rust/pull/1", "Fix ICE · rust-lang/rust"),
        ("https://www.youtube.com/watch?v=abc&t=3", "Lofi <beats> & rain"),
        ("http://localhost:5173/", ""),
        ("https://zh.wikipedia.org/wiki/新闻", "新闻 - 维基百科")]


def get(pages, host, path, tls):
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", pages.port, context=context, timeout=10)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", pages.port, timeout=10)
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


@pytest.fixture(scope="module")
def pages():
    with TabPages(TABS) as served:
        yield served


def test_every_host_is_served_over_tls_or_plain_http_with_its_title(pages):
    status, body = get(pages, "github.com", "/rust-lang/rust/pull/1", tls=True)
    assert status == 200 and "<title>Fix ICE · rust-lang/rust</title>" in body
    status, body = get(pages, "www.youtube.com", "/watch?v=abc&t=3", tls=True)
    assert status == 200 and "<title>Lofi &lt;beats&gt; &amp; rain</title>" in body   # escaped
    status, body = get(pages, "localhost:5173", "/", tls=False)
    assert status == 200 and "<title>" not in body        # no title: the browser shows the URL
    status, body = get(pages, "zh.wikipedia.org", "/wiki/%E6%96%B0%E9%97%BB", tls=True)
    assert status == 200 and "<title>新闻 - 维基百科</title>" in body
    assert get(pages, "github.com", "/elsewhere", tls=True)[0] == 404
    assert get(pages, "example.org", "/rust-lang/rust/pull/1", tls=False)[0] == 404
    # every request is recorded, with the origin that sent it
    assert ("GET", "github.com", "/rust-lang/rust/pull/1", "") in pages.requests
    conn = http.client.HTTPConnection("127.0.0.1", pages.port, timeout=10)
    conn.request("POST", "/collect", headers={"Host": "t.example", "Origin": "chrome-extension://abc"})
    assert conn.getresponse().status == 405
    conn.close()
    assert pages.sent_by("chrome-extension://") == [("POST", "t.example", "/collect", "chrome-extension://abc")]


def test_chromium_is_sent_to_the_server_for_every_name(pages):
    rules, certificates = pages.chromium_args
    assert rules == f"--host-resolver-rules=MAP * 127.0.0.1:{pages.port}"
    assert certificates == "--ignore-certificate-errors"
