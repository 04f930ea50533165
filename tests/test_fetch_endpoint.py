"""The server's /fetch endpoint (the page's URL import): it fetches public http(s) URLs within
size and time limits, and never reaches a private, loopback or link-local address other than
its own (nor one allowed by --allow-fetch), whatever the URL's spelling, its DNS answers or its
redirects say. Upstream servers here are real local HTTP servers that count what reaches them:
a refusal must happen before any connection."""

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from py_engine.server import ServerThread, check_loopback, parse_origins
from py_engine.url_fetch import FetchLimits, FetchRefused, fetch, is_public, resolve

import ipaddress

PAGE = b"<!doctype html><html><head><title>Tea</title></head><body><p>Green tea is steeped at 80 C.</p></body></html>"
LIMITS = FetchLimits(max_bytes=64 * 1024, timeout=1.5)


class Upstream:
    """A local HTTP server recording each request's path and Host header."""

    def __init__(self):
        self.requests = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.close_connection = True
                upstream.requests.append((self.path, self.headers.get("Host")))
                path, _, query = self.path.partition("?")
                args = dict(urllib.parse.parse_qsl(query))
                route = getattr(upstream, "route_" + path.strip("/").replace("-", "_"), None)
                if route is None:
                    return self.answer(404, b"not here", "text/plain")
                route(self, args)

            def answer(self, status, body, content_type="text/html; charset=utf-8", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route_page(self, h, args):
        h.answer(200, PAGE)

    def route_image(self, h, args):
        h.answer(200, b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")

    def route_redirect(self, h, args):
        h.answer(int(args.get("code", 302)), b"", headers=[("Location", args["to"])])

    def route_big(self, h, args):
        h.answer(200, b"x" * (LIMITS.max_bytes + 1), "text/plain")

    def route_chunked(self, h, args):
        # No Content-Length: the limit must be enforced while reading.
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b"y" * 8192
        for _ in range(LIMITS.max_bytes // len(block) + 2):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        h.wfile.write(b"0\r\n\r\n")

    def route_slow(self, h, args):
        time.sleep(float(args.get("s", 4)))
        h.answer(200, PAGE)

    def route_drip(self, h, args):
        # Answers at once, then sends a byte at a time: each read is quick, the whole is not.
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", "100")
        h.end_headers()
        try:
            for _ in range(100):
                h.wfile.write(b"z")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def route_gzip(self, h, args):
        h.answer(200, b"\x1f\x8b" + bytes(20), "text/html", headers=[("Content-Encoding", "gzip")])

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def bystander():
    """A local service that is NOT allowed: nothing may ever reach it."""
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, upstream):
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text("<!doctype html><title>own page</title><p>served here</p>")
    with ServerThread(root, fetch_limits=LIMITS, allow_fetch={("127.0.0.1", upstream.port)}) as url:
        yield url


def get(site, url, headers=None):
    """(status, headers, body) of /fetch?url=... on the server."""
    request = urllib.request.Request(site + "fetch?" + urllib.parse.urlencode({"url": url}),
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def error(site, url, headers=None):
    status, _, body = get(site, url, headers)
    return status, json.loads(body)["error"]


def test_fetches_an_allowed_page_and_follows_redirects(site, upstream):
    status, headers, body = get(site, upstream.url + "/page")
    assert status == 200 and body == PAGE
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Fetched-Url"] == upstream.url + "/page"
    status, headers, body = get(site, upstream.url + "/image")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    hop = upstream.url + "/redirect?" + urllib.parse.urlencode({"to": "/page", "code": 301})
    status, headers, body = get(site, upstream.url + "/redirect?" + urllib.parse.urlencode({"to": hop}))
    assert status == 200 and body == PAGE and headers["X-Fetched-Url"] == upstream.url + "/page"


def test_the_servers_own_address_is_fetched(site):
    status, headers, body = get(site, site + "index.html")
    assert status == 200 and b"served here" in body
    status, message = error(site, site + "fetch?url=" + urllib.parse.quote(site + "index.html"))
    assert status == 400 and "own fetch endpoint" in message


REFUSED_HOSTS = [
    "localhost", "127.0.0.1", "127.0.0.2", "127.1", "2130706433", "0x7f000001", "0177.0.0.1",
    "0.0.0.0", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "224.0.0.1", "[::1]", "[::]", "[fe80::1]", "[fd00::1]", "[::ffff:127.0.0.1]",
    "[::ffff:169.254.169.254]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_private_loopback_and_link_local_addresses_are_refused(site, bystander, host):
    before = len(bystander.requests)
    status, message = error(site, f"http://{host}:{bystander.port}/page")
    assert status == 403, message
    assert message.endswith("address: the server fetches only public addresses"), message
    assert len(bystander.requests) == before


def test_redirects_into_the_private_network_are_refused(site, upstream, bystander):
    for target in (f"{bystander.url}/page", "http://169.254.169.254/latest/meta-data/",
                   f"http://localhost:{bystander.port}/page", "http://[::1]/"):
        status, message = error(site, upstream.url + "/redirect?" + urllib.parse.urlencode({"to": target}))
        assert status == 403 and "the server fetches only public addresses" in message, (target, message)
    assert bystander.requests == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "javascript:alert(1)",
                                 "gopher://127.0.0.1:70/", "http://", "http://user:pw@example.org/",
                                 "not a url", "http://[::1/"])
def test_other_schemes_and_malformed_urls_are_refused(site, url):
    status, message = error(site, url)
    assert status == 400 and message


def test_redirect_to_another_scheme_is_refused(site, upstream):
    status, message = error(site, upstream.url + "/redirect?to=file:///etc/passwd")
    assert status == 400 and "only http and https" in message


def test_size_limits(site, upstream):
    status, message = error(site, upstream.url + "/big")
    assert status == 413 and f"limit of {LIMITS.max_bytes} bytes" in message
    status, message = error(site, upstream.url + "/chunked")
    assert status == 413 and "over the limit" in message


def test_time_limits(site, upstream):
    for path in ("/slow?s=4", "/drip"):
        started = time.monotonic()
        status, message = error(site, upstream.url + path)
        took = time.monotonic() - started
        assert status == 504 and "no answer within 1.5 s" in message, message
        assert took < LIMITS.timeout + 1.5, took


def test_upstream_failures_are_one_line(site, upstream):
    status, message = error(site, upstream.url + "/missing")
    assert status == 502 and "HTTP 404" in message
    status, message = error(site, upstream.url + "/gzip")
    assert status == 502 and "gzip-encoded" in message
    status, message = error(site, "http://no-such-host.invalid/")
    assert status == 502 and "cannot resolve" in message
    status, message = error(site, "")
    assert status == 400


def test_only_this_servers_own_pages_may_ask(site, upstream):
    # DNS rebinding: a web site whose name now points at 127.0.0.1 sends its own Host.
    status, message = error(site, upstream.url + "/page", {"Host": "evil.example:80"})
    assert status == 403 and "127.0.0.1 only" in message
    status, message = error(site, upstream.url + "/page", {"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    status, _, _ = get(site, upstream.url + "/page", {"Sec-Fetch-Site": "same-origin"})
    assert status == 200


def resolver(answers, calls):
    """A getaddrinfo that answers `answers[host]` (a list of addresses, or a list of such lists
    for successive calls) and counts its calls."""
    def getaddrinfo(host, port, type=0, **kwargs):
        calls.append(host)
        found = answers[host]
        if isinstance(found[0], list):
            found = found[min(len(calls), len(found)) - 1]
        out = []
        for address in found:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out
    return getaddrinfo


def test_every_address_of_a_name_is_checked():
    calls = []
    getaddrinfo = resolver({"mixed.example": ["93.184.216.34", "10.1.2.3"]}, calls)
    with pytest.raises(FetchRefused, match="resolves to 10.1.2.3, a private address") as e:
        resolve("mixed.example", 80, set(), getaddrinfo)
    assert e.value.status == 403
    assert resolve("v4.example", 80, set(), resolver({"v4.example": ["93.184.216.34"]}, [])) == \
        [(socket.AF_INET, ("93.184.216.34", 80))]


def test_the_connection_goes_to_the_checked_address(upstream):
    # The name answers a checked address first, then a private one (DNS rebinding): the fetch
    # resolves once per hop and connects to what it checked, sending the name as Host.
    calls = []
    getaddrinfo = resolver({"pages.example": [["127.0.0.1"], ["192.168.0.1"]]}, calls)
    page = fetch(f"http://pages.example:{upstream.port}/page", LIMITS,
                 allowed={("127.0.0.1", upstream.port)}, getaddrinfo=getaddrinfo)
    assert page.body == PAGE and calls == ["pages.example"]
    assert upstream.requests[-1] == ("/page", f"pages.example:{upstream.port}")


def test_refusals_name_the_kind_of_address(site):
    for host, kind in (("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
                       ("10.0.0.1", "private"), ("[::ffff:127.0.0.1]", "loopback (inside an IPv6 address)"),
                       ("0.0.0.0", "unspecified"), ("localhost", "loopback")):
        status, message = error(site, f"http://{host}:9/")
        assert status == 403 and f" {kind} address" in message, message
    assert error(site, "http://169.254.169.254/")[1].startswith("169.254.169.254 is a link-local")


def test_public_addresses():
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:2800:220:1::1"))
    assert is_public(ipaddress.ip_address("::ffff:93.184.216.34"))
    for address in ("127.0.0.1", "10.0.0.1", "169.254.1.1", "fe80::1", "fc00::1", "224.1.1.1",
                    "ff02::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2001:0:4136:e378:8000:63bf:f5ff:fffe"):
        assert not is_public(ipaddress.ip_address(address)), address


def test_the_server_binds_to_loopback_only():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        check_loopback(host)
    for host in ("0.0.0.0", "::", "192.168.1.2", "example.org"):
        with pytest.raises(ValueError, match="loopback only"):
            check_loopback(host)
    assert parse_origins(["127.0.0.1:9000", "[::1]:80"]) == {("127.0.0.1", 9000), ("::1", 80)}
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_origins(["127.0.0.1"])
