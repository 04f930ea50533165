"""Local stand-ins for real web pages, so that a browser's tabs look real offline (host side).

    with TabPages([("https://github.com/rust-lang/rust/pull/1", "Fix ICE · rust-lang/rust"), ...]) as pages:
        args = pages.chromium_args      # every host name resolves to this server
        page.goto("https://github.com/rust-lang/rust/pull/1")   # a page titled as given

One server on loopback answers for every host name: Chromium is started with
--host-resolver-rules mapping all names to it, and the server speaks HTTPS (a self-signed
certificate made for the session with `openssl`, which --ignore-certificate-errors accepts)
or plain HTTP, whichever the browser opens with, so that https://github.com/... (which HSTS
keeps on HTTPS) and http://localhost:5173/ both load. Each page is an HTML document whose
<title> is the tab's title (none when the title is empty: the browser then shows the URL).
"""

import html
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

TLS_HANDSHAKE = 0x16      # the first byte of a TLS ClientHello


class TabPagesError(RuntimeError):
    """The page server could not start; the message says what is missing."""


def self_signed_certificate(directory):
    """(certificate path, key path) of a fresh self-signed certificate made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TabPagesError("openssl is needed to serve the tab pages over HTTPS: "
                            "apt-get install openssl")
    cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=tab pages"],
                   check=True, capture_output=True)
    return cert, key


def page_html(url, title):
    head = f"<title>{html.escape(title)}</title>" if title else ""
    return (f"<!doctype html><html><head><meta charset=\"utf-8\">{head}</head><body>"
            f"<h1>{html.escape(title or url)}</h1><p>A local stand-in for {html.escape(url)}</p>"
            "</body></html>").encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pages, tls):
        self.pages, self.tls = pages, tls
        self.requests = []          # (method, host, path, sender) of every request, in order
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request, client_address):
        # TLS or plain HTTP, by the connection's first byte (in the request's own thread)
        try:
            request.settimeout(10)
            first = request.recv(1, socket.MSG_PEEK)
            if first and first[0] == TLS_HANDSHAKE:
                request = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").lower()
        path = unquote(self.path)           # the browser sends non-ASCII percent-encoded
        self.server.requests.append(("GET", host, path, self._sender()))
        title = self.server.pages.get((host, path))
        if title is None:
            title = self.server.pages.get((host.split(":")[0], path))
        if title is None:
            self.send_error(404)
            return
        body = page_html(f"{host}{self.path}", title)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _sender(self):
        """The origin the request names (Origin, else Referer): "" for the browser's own."""
        return self.headers.get("Origin") or self.headers.get("Referer") or ""

    def _refuse(self):
        self.server.requests.append((self.command, self.headers.get("Host") or "", self.path,
                                     self._sender()))
        self.send_error(405)

    do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _refuse

    def log_message(self, *args):
        pass


class TabPages:
    def __init__(self, tabs):
        """tabs: (url, title) pairs; each URL is served (by host and path with its query)."""
        self.pages = {}
        for url, title in tabs:
            split = urlsplit(url)
            path = unquote((split.path or "/") + (f"?{split.query}" if split.query else ""))
            host = (split.hostname or "").lower()
            self.pages[(host, path)] = title or ""
            if split.port:
                self.pages[(f"{host}:{split.port}", path)] = title or ""
        self._tmp = self._server = self._thread = None

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="tab-pages-")
        cert, key = self_signed_certificate(self._tmp.name)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self._server = _Server(self.pages, tls)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()
        return False

    @property
    def requests(self):
        """(method, host, path, sender) of every request the server was sent (sender: its
        Origin or Referer header): with every name resolved to this server, whatever the
        browser fetched from the network is here."""
        return list(self._server.requests)

    def sent_by(self, prefix):
        """The requests whose sender starts with `prefix` ("chrome-extension://": an
        extension's pages and workers, which name their origin on a request elsewhere)."""
        return [r for r in self.requests if r[3].startswith(prefix)]

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def chromium_args(self):
        """Chromium flags that send every host name to this server and accept its certificate."""
        return [f"--host-resolver-rules=MAP * 127.0.0.1:{self.port}", "--ignore-certificate-errors"]
