"""The tab classifier's input text (py_engine/tabs/normalize.py): domain, path words, title."""

import json
import random
import shutil
import subprocess
import sys

import pytest

from py_engine.tabs.normalize import (LOCAL_DEV, LOCAL_NETWORK, is_noise, local_server, parse_tab, split_url,
                                     tab_text)

CASES = [
    ("https://www.github.com/rust-lang/rust/pull/1234", "Fix ICE · Pull Request #1234",
     "github.com | rust lang rust pull | Fix ICE · Pull Request #1234"),
    ("http://localhost:5173/users/42/editProfile", "", "local dev server | users edit profile"),
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "(3) Never Gonna Give You Up - YouTube",
     "youtube.com | watch | Never Gonna Give You Up - YouTube"),
    ("https://youtu.be/dQw4w9WgXcQ", "", "youtu.be"),
    ("https://en.m.wikipedia.org/wiki/Python_(programming_language)", "Python - Wikipedia",
     "en.wikipedia.org | wiki python programming language | Python - Wikipedia"),
    ("https://www.google.com/search?q=rust+async+traits&oq=rust", "rust async traits - Google Search",
     "google.com | search rust async traits | rust async traits - Google Search"),
    ("http://192.168.1.1/", "Router", "local network | Router"),
    ("http://192.168.1.20:8080/app", "App", "local dev server | app | App"),
    ("http://printer.local/", "", "local network"),
    ("http://myapp.test/login", "", "local dev server | login"),
    ("http://127.0.0.2:80/", "", "local dev server"),
    ("https://[::1]:3000/", "", "local dev server"),
    ("chrome://settings/privacy", "Settings", "browser chrome settings | privacy | Settings"),
    ("file:///home/me/Downloads/report%20Q3.pdf", "report Q3.pdf",
     "local file | home me downloads report pdf | report Q3.pdf"),
    ("file://C:/Users/me/Budget%202027.xlsx", "", "local file | users me budget xlsx"),   # a drive, no host
    ("http://github.com\\rust-lang\\rust", "", "github.com | rust lang rust"),           # backslashes are slashes
    ("https://d1a2b3c4e5.cloudfront.net/x/3fa85f64-5717-4562-b3fc-2c963f66afa6/getElementById", "x",
     "cloudfront.net | get element by id | x"),
    ("https://xn--bcher-kva.de/buch/iPhone15Pro", "Bücher", "bücher.de | buch phone pro | Bücher"),
    ("https://shop.example.com/p/HTTPServer_v2.html", "  Spaces\t collapse\n here ",
     "shop.example.com | http server | Spaces collapse here"),
    ("", "Untitled", "Untitled"),
    ("", "", ""),
    ("http://[bad/", "t", "http bad | t"),
]


@pytest.mark.parametrize("url, title, expected", CASES)
def test_tab_text(url, title, expected):
    assert tab_text(url, title) == expected


def test_local_servers():
    assert local_server("localhost") == LOCAL_DEV
    assert local_server("api.localhost", "https", 443) == LOCAL_DEV
    assert local_server("10.0.0.5", "http", 8000) == LOCAL_DEV
    assert local_server("10.0.0.5", "http", 80) == LOCAL_NETWORK      # the default port
    assert local_server("172.20.1.1", "https", None) == LOCAL_NETWORK
    assert local_server("172.32.1.1", "https", 8443) is None           # outside 172.16/12
    assert local_server("nas.home.arpa", "https", 5001) == LOCAL_DEV
    assert local_server("example.com", "http", 8080) is None


def test_hosts_are_read_as_the_browser_reads_them():
    """split_url's host against the WHATWG URL parser (Node's URL, the one the extension's
    rules port uses) on fresh random hosts that end in numbers: IPv4 addresses in the forms a
    browser accepts ("127.1", "0x7f.0.0.1", octal parts) come back dotted-decimal, hosts that
    end in a number but are no address ("m.127.0.0.1") and missing hosts are refused, and a
    special scheme's host is found after any number of slashes or backslashes ("http:x",
    "http:///x", "http:\\\\x"), ends at a backslash, and holds no forbidden character ("a^b"),
    and a file URL's drive letter ("file://c:/") or "localhost" is no host. The port is the
    browser's too: none where it is the scheme's default ("ws://x:80/"). Hosts with escapes or
    IPv6 addresses inside are not drawn: tabs do not hold them."""
    node = shutil.which("node")
    assert node, "Node is needed to check hosts against the WHATWG URL parser: apt-get install nodejs"
    rng = random.Random()
    parts = ["", "0", "1", "08", "017", "0x", "0x7f", "0Xff", "0xg", "127", "255", "256", "65535",
             "16777216", "4294967295", "4294967296", "1e", "m", "www", "example", "a^b", "a b"]
    schemes = ["http", "HTTPS", "ws", "ftp", "file", "foo"]
    slashes = ["//", "//", "", "/", "///", "\\\\", "/\\"]
    tails = ["/a?b#c", "/a?b#c", "\\a/b", "?q", "#f", ""]
    urls = []
    for _ in range(600):
        host = ".".join(rng.choice(parts) for _ in range(rng.randint(1, 6))) + rng.choice(["", "", "."])
        host = rng.choice([host] * 8 + ["m:", "C|", "localhost", "LocalHost"])
        urls.append(f"{rng.choice(schemes)}:{rng.choice(slashes)}{rng.choice(['', 'user:pw@', '@'])}{host}"
                    f"{rng.choice(['', ':8080', ':', ':99999', ':80', ':443', ':21', ':0080'])}{rng.choice(tails)}{rng.choice(['', ' ', chr(9)])}")
    urls += ["http:\\\\x/", "http:x", "foo://:1/", "http://m.127.0.0.1:5000/", "http://127.1/", "http://:80/",
             "https://0x7f.1/"]
    done = subprocess.run([node, "-e", "const urls = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
                           "console.log(JSON.stringify(urls.map((u) => { try { const p = new URL(u); return [p.hostname, p.port]; }"
                           " catch { return null; } })))"],   # hosts lower-cased below, as the rules port reads them
                          input=json.dumps(urls), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = [h if h is None else (h[0].lower(), h[1]) for h in json.loads(done.stdout)]

    def host(url):
        try:
            split = split_url(url)
        except ValueError:
            return None
        return split.hostname or "", "" if split.port is None else str(split.port)
    got = [host(u) for u in urls]
    wrong = [(u, g, e) for u, g, e in zip(urls, got, expected) if g != e]
    assert not wrong, f"{len(wrong)} of {len(urls)} hosts differ from the browser's, e.g. {wrong[:5]}"
    assert got[-4:] == [None, ("127.0.0.1", ""), None, ("127.0.0.1", "")]
    assert None in got[:-4] and any(g and g[0].count(".") == 3 and g[0][0].isdigit() for g in got[:-4])
    assert any(g and g[1] == "8080" for g in got) and any(g and g[1] == "" and ":80/" in u for u, g in zip(urls, got))


def test_noise_words():
    assert all(is_noise(w) for w in ["12345", "a", "3fa85f64", "abc123def456", "x" * 31])
    assert not any(is_noise(w) for w in ["python", "iphone", "v2ray", "deadbeef", "k8s"])


def test_long_titles_and_paths_are_capped():
    domain, words, title = parse_tab("https://a.com/" + "/".join(f"word{c}x" for c in "abcdefghijklmnopqrstuvwxyz"),
                                     "t" * 500)
    assert len(words) == 16 and len(title) == 200


def test_random_input_never_raises():
    """Whatever a tab holds, the function returns a string, and the same one each time."""
    rng = random.Random()
    alphabet = "ab:/?#[]@!$&'()*+,;=%-._~ 0123456789\u00e9\u4e2d\U0001f600\x00\t"
    for _ in range(2000):
        url = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        url = rng.choice(["", "http://", "https://", "chrome://", "file://"]) + url
        title = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        text = tab_text(url, title)
        assert isinstance(text, str) and text == tab_text(url, title)


def test_browser_modules_need_no_numpy():
    """What runs in Pyodide (normalising a tab, categories, rules) imports nothing beyond the
    standard library and py_engine's own pure-Python modules."""
    code = ("import sys, py_engine.tabs.normalize, py_engine.tabs.categories, py_engine.tabs.rules, "
            "py_engine.tabs.model; bad = [m for m in ('numpy', 'torch', 'PIL') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
