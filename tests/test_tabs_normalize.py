"""The tab classifier's input text (py_engine/tabs/normalize.py): domain, path words, title."""

import random
import subprocess
import sys

import pytest

from py_engine.tabs.normalize import LOCAL_DEV, LOCAL_NETWORK, is_noise, local_server, parse_tab, tab_text

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
