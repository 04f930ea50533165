"""Fetching a URL on the page's behalf (host side: the local server's /fetch endpoint).

A page cannot read other origins (CORS), so the local server fetches for it, as the user's
browser would, but never into the user's own network: the server runs on the user's machine,
and a page (or a web site that gets a URL into it) must not use it to reach routers, cloud
metadata services or other programs listening on loopback.

    page = fetch("https://example.org/post", FetchLimits(max_bytes=5 << 20, timeout=20),
                 allowed={("127.0.0.1", 8000)})
    page.url, page.content_type, page.body

Rules, checked at every hop (the URL given and each redirect, at most MAX_REDIRECTS):
  - http and https only, with a host; no user:password@ part (it would be sent on);
  - the host is resolved first and EVERY address it resolves to must be public (ipaddress's
    is_global, not multicast; IPv6 forms that embed an IPv4 address are judged by that address);
    a host with any private, loopback, link-local, reserved or shared address is refused whole,
    unless that (address, port) is in `allowed` (the server's own address);
  - the connection goes to an address that was checked (pinned), never to a second lookup, so a
    name that changes its answer between the check and the connect (DNS rebinding) gets nowhere;
  - the body is read up to max_bytes (a larger Content-Length is refused before reading) and the
    whole fetch, redirects included, within `timeout` seconds;
  - only identity-encoded bodies (the request asks for nothing else).
A refusal is a FetchRefused whose message names the URL and the reason, and whose `status` is
the HTTP status the endpoint answers with.
"""

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "py-engine page fetch"
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchRefused(Exception):
    """A URL not fetched; `status`: the HTTP status to answer the page with."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 5 * 1024 * 1024
    timeout: float = 20.0


@dataclass
class Fetched:
    url: str              # the final URL, after redirects
    content_type: str     # the response's Content-Type header ("" when absent)
    body: bytes


def embedded_ipv4(ip):
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), or None."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip):
    """Whether an address is on the public internet (not private, loopback, link-local,
    reserved, shared, multicast or unspecified, nor an IPv6 wrapping of such an address)."""
    inner = embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
        return False
    return ip.is_global and not ip.is_multicast


def address_kind(ip):
    """What a non-public address is, in a word or two (for the refusal's message)."""
    inner = embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
        return f"{address_kind(inner)} (inside an IPv6 address)"
    for kind, test in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                       ("private", ip.is_private)):
        if test:
            return kind
    return "reserved" if ip.is_reserved else "non-public"


def resolve(host, port, allowed, getaddrinfo=socket.getaddrinfo):
    """[(family, address)] of `host`, every one checked: public, or (address, port) allowed."""
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchRefused(f"cannot resolve {host}: {e}", 502) from None
    if not infos:
        raise FetchRefused(f"{host} resolves to no address", 502)
    out = []
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not is_public(ip) and (str(ip), port) not in allowed:
            what = f"{host} is a" if host.strip("[]") == str(ip) else f"{host} resolves to {ip}, a"
            raise FetchRefused(f"{what} {address_kind(ip)} address: the server fetches only "
                               "public addresses", 403)
        if (family, sockaddr[:2]) not in out:
            out.append((family, sockaddr[:2]))
    return out


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to one checked address; the Host header still names the URL's host."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        family, sockaddr = self.address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(sockaddr)
        self.stream = self.sock     # kept: http.client drops .sock when the response owns it

    def set_timeout(self, seconds):
        self.stream.settimeout(seconds)


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """HTTPS to one checked address; the certificate is verified against the URL's host."""

    default_port = 443

    def connect(self):
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)
        self.stream = self.sock


def split(url):
    """(scheme, host, port, path with query) of an http(s) URL, or FetchRefused."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise FetchRefused(f"{url!r} is not a valid URL: {e}", 400) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused(f"{url!r}: only http and https URLs are fetched", 400)
    if not parts.hostname:
        raise FetchRefused(f"{url!r} has no host", 400)
    if parts.username is not None or parts.password is not None:
        raise FetchRefused(f"{url!r}: URLs with a user name or password are not fetched", 400)
    port = port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port, path


def fetch(url, limits=FetchLimits(), allowed=frozenset(), refuse_path=None,
          getaddrinfo=socket.getaddrinfo, clock=time.monotonic):
    """GET `url` under the rules above; returns Fetched. `allowed`: {(address, port)} that may
    be fetched though not public (the server's own); `refuse_path(host, port, path)`: True for
    a target that must not be fetched though allowed (the endpoint itself, which would recurse)."""
    deadline = clock() + limits.timeout
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, path = split(url)
        addresses = resolve(host, port, allowed, getaddrinfo)
        if refuse_path is not None and refuse_path(host, port, path):
            raise FetchRefused(f"{url}: the server does not fetch its own fetch endpoint", 400)
        response, connection = _get(scheme, host, port, path, addresses, deadline, clock, url,
                                    limits.timeout)
        try:
            if response.status in REDIRECTS and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise FetchRefused(f"{url}: HTTP {response.status} {response.reason}", 502)
            body = _read(response, connection, url, limits, deadline, clock)
            return Fetched(url, response.getheader("Content-Type", ""), body)
        finally:
            connection.close()
    raise FetchRefused(f"{url}: more than {MAX_REDIRECTS} redirects", 502)


def _remaining(deadline, clock, url, timeout):
    left = deadline - clock()
    if left <= 0:
        raise FetchRefused(f"{url}: no answer within {timeout:g} s", 504)
    return left


def _get(scheme, host, port, path, addresses, deadline, clock, url, limit):
    """(response, connection) of a GET to the first checked address that connects."""
    timeout = _remaining(deadline, clock, url, limit)
    kind = PinnedHTTPSConnection if scheme == "https" else PinnedHTTPConnection
    failure = None
    for address in addresses:
        connection = kind(host, port, address, timeout)
        try:
            connection.request("GET", path, headers={
                "User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"})
            return connection.getresponse(), connection
        except (TimeoutError, socket.timeout):
            connection.close()
            raise FetchRefused(f"{url}: no answer within {limit:g} s", 504) from None
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            failure = e
    raise FetchRefused(f"{url}: the connection failed ({failure})", 502)


def _read(response, connection, url, limits, deadline, clock):
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise FetchRefused(f"{url}: the body is {encoding}-encoded; only plain bodies are read", 502)
    length = response.getheader("Content-Length", "")
    if length.isdigit() and int(length) > limits.max_bytes:
        raise FetchRefused(f"{url}: {length} bytes is over the limit of {limits.max_bytes} bytes", 413)
    body = bytearray()
    while True:
        connection.set_timeout(_remaining(deadline, clock, url, limits.timeout))
        try:
            block = response.read1(65536)
        except (TimeoutError, socket.timeout):
            raise FetchRefused(f"{url}: no answer within {limits.timeout:g} s", 504) from None
        except (OSError, http.client.HTTPException) as e:
            raise FetchRefused(f"{url}: the connection failed while reading ({e})", 502) from None
        if not block:
            return bytes(body)
        body += block
        if len(body) > limits.max_bytes:
            raise FetchRefused(f"{url}: the body is over the limit of {limits.max_bytes} bytes", 413)
        _remaining(deadline, clock, url, limits.timeout)
