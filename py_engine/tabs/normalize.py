"""A browser tab as the tab classifier reads it: one line of text made of the tab's normalised
domain, the words of its URL path (and search query) and its title.

    tab_text("https://www.github.com/rust-lang/rust/pull/1234", "Fix ICE · Pull Request #1234")
    -> "github.com | rust lang rust pull | Fix ICE · Pull Request #1234"
    tab_text("http://localhost:5173/users/42/editProfile", "")
    -> "local dev server | users edit profile"

The same function makes the training examples on the host and the model's input in the
browser, so it is pure Python over the standard library (it runs in Pyodide) and deterministic.

What is kept, part by part (empty parts are left out, the rest joined by " | "):
- domain: the host lower-cased, IDNA (punycode) labels decoded, a trailing dot and the port
  dropped, the mobile/"www" labels of MOBILE_LABELS dropped (www.x.com, m.x.com, en.m.x.org),
  and any label that looks like an id or a hash (see is_noise) dropped, except the last two.
  Local servers become LOCAL_DEV (see local_server) and other private-network addresses
  LOCAL_NETWORK, so the model never learns from a port number or an address.
  URLs that are not http(s): "file" -> "local file", browser pages (chrome:, about:, edge:,
  chrome-extension:, ...) -> "browser <scheme> <host>", anything else -> its scheme.
- path words: the percent-decoded path and the values of the search keys of SEARCH_KEYS in
  the query, cut at every character that is not a letter or a digit (/ - _ . and the rest),
  runs that are ids or hashes dropped (is_noise, and mixed-case ids such as dQw4w9WgXcQ whose
  camelCase pieces are mostly one or two characters), the rest split at camelCase and
  letter/digit boundaries (editProfile -> edit profile) and lower-cased; numbers, single
  characters and file-type words (NOISE_WORDS) are dropped, and a word repeating the one
  before it. At most MAX_PATH_WORDS words.
- title: whitespace collapsed, an unread counter "(3) " at its start dropped, at most
  MAX_TITLE_CHARS characters.
"""

import re
import unicodedata
from urllib.parse import parse_qsl, unquote, urlsplit

LOCAL_DEV = "local dev server"
LOCAL_NETWORK = "local network"
SEPARATOR = " | "
MAX_PATH_WORDS = 16
MAX_TITLE_CHARS = 200
MOBILE_LABELS = frozenset({"www", "www1", "www2", "www3", "m", "mobile", "amp"})
NOISE_WORDS = frozenset({"html", "htm", "php", "aspx", "asp", "jsp", "shtml", "cgi", "www"})
SEARCH_KEYS = frozenset({"q", "query", "search", "search_query", "k", "keywords", "term", "text"})
BROWSER_SCHEMES = frozenset({"chrome", "about", "edge", "brave", "opera", "vivaldi",
                             "chrome-extension", "moz-extension", "view-source", "devtools"})
LOOPBACK_NAMES = frozenset({"localhost", "0.0.0.0", "::1"})
DEV_SUFFIXES = (".localhost", ".test")       # reserved for testing (RFC 2606, RFC 6761)
LAN_SUFFIXES = (".local", ".internal", ".lan", ".home.arpa")
# The special schemes' default ports (WHATWG): a URL that names one has no port, as a browser
# reads it.
DEFAULT_PORTS = {"ftp": 21, "http": 80, "https": 443, "ws": 80, "wss": 443}

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_COUNTER = re.compile(r"^\(\d+\+?\)\s+")
_HEX = re.compile(r"^[0-9a-f]+$")
_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_DIGITS = re.compile(r"[0-9]+")                  # whole strings (fullmatch)
_RADIX_DIGITS = {8: re.compile(r"[0-7]+"), 10: _DIGITS, 16: re.compile(r"[0-9a-fA-F]+")}
# Schemes whose hosts the WHATWG URL standard parses as domains or addresses (not opaque);
# all but "file" must have a host.
SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "file"})
_HOST_SCHEMES = SPECIAL_SCHEMES - {"file"}
_DRIVE_LETTER = re.compile(r"[A-Za-z][:|]")
# The WHATWG forbidden host code points, and for a special scheme's host also the controls
# (not "%": an escape, which a browser decodes first).
_FORBIDDEN_HOST = re.compile(r"[\x00\t\n\r #/:<>?@\[\\\]^|]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What the URL parser takes away before it reads: controls and spaces at the ends, and
# tabs and newlines anywhere.
_URL_ENDS = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = re.compile(r"[\t\n\r]")


def tab_text(url, title):
    """The classifier's input for a tab (see the module docstring)."""
    parts = parse_tab(url, title)
    return SEPARATOR.join(p for p in (parts[0], " ".join(parts[1]), parts[2]) if p)


def split_url(url):
    """urlsplit(url), with its port read: a ValueError for what a browser would not load as a
    URL and urlsplit lets through. That is a port out of range, a malformed IPv6 address, an
    IPv6 address that is not the whole host ("www.[::1]", whose hostname urlsplit gives as
    "::1"), no host where the scheme needs one ("http://:80/"), a file URL with a port or a
    user name, a host holding a character no host may hold ("a^b"), and a host that ends in a
    number but is no IPv4 address ("m.127.0.0.1"). A special scheme's URL is read as a browser
    reads it (backslashes are slashes, "file://c:/" has no host; see _special_url). An
    IPv4 address a browser reads in another form ("127.1", "0x7f.0.0.1") comes back
    dotted-decimal ("127.0.0.1"), and the scheme's default port is no port ("http://x:80/"),
    so that the host and port here are the ones the extension's URL parser sees (as the rules
    port reads the host: lower-cased)."""
    url = _TAB_OR_NEWLINE.sub("", url.strip(_URL_ENDS))
    split = urlsplit(url)
    scheme = split.scheme.lower()
    if scheme in SPECIAL_SCHEMES:
        split = urlsplit(_special_url(split.scheme, url.partition(":")[2]))
    split.port                      # read for its check: a port out of range raises
    userinfo, at, host_port = split.netloc.rpartition("@")
    ipv6 = host_port.startswith("[")
    if "[" in host_port and not ipv6:
        raise ValueError(f"an IPv6 address must be the whole host, not part of {host_port!r}")
    host, colon, port = ("", "", "") if ipv6 else host_port.partition(":")
    if not ipv6 and not host and (at or colon or scheme in _HOST_SCHEMES):
        raise ValueError(f"{url!r} has no host")
    if _FORBIDDEN_HOST.search(host) or (scheme in SPECIAL_SCHEMES and _CONTROL.search(host)):
        raise ValueError(f"{host!r} is not a host: it holds a character no host may hold")
    if scheme == "file" and (at or colon):
        raise ValueError(f"{url!r}: a file URL has no user name, password or port")
    if scheme in SPECIAL_SCHEMES:
        if split.port is not None and split.port == DEFAULT_PORTS.get(scheme):
            colon, port = "", ""            # the scheme's default port: no port, as read
            split = split._replace(netloc=split.netloc[:split.netloc.rindex(":")])
        address = None if ipv6 else whatwg_ipv4(host.lower())
        if address is not None and address != host:
            split = split._replace(netloc=f"{userinfo}{at}{address}{colon}{port}")
    return split


def _special_url(scheme, rest):
    """A special scheme's URL, `rest` being what follows its colon, rebuilt as urlsplit reads
    it right: "scheme://authority/path...". As the WHATWG URL standard reads such URLs, a
    backslash is a slash, and the authority ends at the first of / \\ ? #. Any number of
    slashes may come before it ("http:x", "http:///x" are http://x/); a file URL has one only
    after exactly two, and a Windows drive letter there ("file://c:/x") or "localhost" is no
    host; the path keeps its words."""
    if scheme.lower() == "file":
        if len(rest) < 2 or rest[0] not in "/\\" or rest[1] not in "/\\":
            return "file:///" + rest.lstrip("/\\")
        after = rest[2:]
    else:
        after = rest.lstrip("/\\")
    authority = re.match(r"[^/\\?#]*", after).group(0)
    tail = after[len(authority):]
    path_end = re.match(r"[^?#]*", tail).end()
    tail = tail[:path_end].replace("\\", "/") + tail[path_end:]
    if scheme.lower() == "file":
        if _DRIVE_LETTER.fullmatch(authority):
            authority, tail = "", "/" + authority + tail
        elif authority.lower() == "localhost":
            authority = ""
    return f"{scheme}://{authority}{tail}"


def whatwg_ipv4(host):
    """The dotted-decimal IPv4 address of a host that ends in a number, as the WHATWG URL
    standard's host parser reads it (parts in decimal, octal "0..." or hex "0x...", the last
    part filling the bytes left: "127.1" is 127.0.0.1), or None for a host that does not end
    in a number. A host that ends in a number but is no address raises ValueError, as the
    browser refuses its URL. Written here because urllib keeps such hosts as they are."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()                 # one trailing dot is allowed
    if not (_DIGITS.fullmatch(parts[-1]) or _ipv4_number(parts[-1]) is not None):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or None in numbers or any(n > 255 for n in numbers[:-1]) \
            or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host!r} ends in a number but is not an IPv4 address")
    value = numbers[-1] + sum(n << 8 * (3 - i) for i, n in enumerate(numbers[:-1]))
    return ".".join(str(value >> shift & 255) for shift in (24, 16, 8, 0))


def _ipv4_number(part):
    """The WHATWG IPv4 number parser: a part's value, or None where it fails."""
    if not part:
        return None
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits:
        return 0                    # "0x" alone is zero
    if not _RADIX_DIGITS[base].fullmatch(digits):
        return None
    return int(digits, base)


def parse_tab(url, title):
    """(domain text, [path words], title text) of a tab; see the module docstring."""
    url = (url or "").strip()
    try:
        split = split_url(url)
        scheme, port = split.scheme.lower(), split.port
        host = split.hostname or ""
    except ValueError:              # not a URL a browser loads (split_url)
        return "", words_of(url), clean_title(title)
    if scheme in ("http", "https") or (not scheme and host):
        domain = domain_text(host, scheme, port)
    elif scheme == "file":
        domain = "local file"
    elif scheme in BROWSER_SCHEMES:
        domain = " ".join(["browser", scheme.replace("-", " ")] + ([host] if host else []))
        return domain, words_of(split.path), clean_title(title)
    else:
        domain = scheme
    words = words_of(split.path)
    words += words_of(" ".join(v for k, v in parse_qsl(split.query) if k.lower() in SEARCH_KEYS))
    return domain, _dedupe(words)[:MAX_PATH_WORDS], clean_title(title)


def domain_text(host, scheme="https", port=None):
    """The normalised domain of `host` (a URL's hostname), or LOCAL_DEV / LOCAL_NETWORK."""
    host = host.lower().rstrip(".").strip("[]")
    place = local_server(host, scheme, port)
    if place is not None:
        return place
    labels = [_decode_label(label) for label in host.split(".") if label]
    head, tail = labels[:-2], labels[-2:]
    head = [label for label in head if label not in MOBILE_LABELS and not is_noise(label)]
    return ".".join(head + tail)


def local_server(host, scheme="http", port=None):
    """LOCAL_DEV, LOCAL_NETWORK or None for a lower-cased hostname (no brackets). A local dev
    server is a loopback host (localhost, 127.0.0.0/8, 0.0.0.0, ::1) or a host under the
    testing names .localhost and .test, on any port; or a private address (10/8, 172.16/12,
    192.168/16, 169.254/16) or a host ending in .local, .internal, .lan or .home.arpa on a
    port that is not the scheme's default (80 for http, 443 for https); such a host without a
    port (a router, a printer, a NAS) is LOCAL_NETWORK."""
    explicit_port = port is not None and port != DEFAULT_PORTS.get(scheme)
    ipv4 = _IPV4.match(host)
    octets = [int(x) for x in ipv4.groups()] if ipv4 else None
    if host in LOOPBACK_NAMES or host.endswith(DEV_SUFFIXES) or (octets and octets[0] == 127):
        return LOCAL_DEV
    private = bool(octets) and (octets[0] == 10 or (octets[0] == 172 and 16 <= octets[1] <= 31)
                                or octets[:2] in ([192, 168], [169, 254]))
    if private or host.endswith(LAN_SUFFIXES):
        return LOCAL_DEV if explicit_port else LOCAL_NETWORK
    return None


def _decode_label(label):
    if label.startswith("xn--"):
        try:
            return label.encode("ascii").decode("idna")
        except UnicodeError:
            return label
    return label


def words_of(text):
    """The kept words of a URL path or query (see the module docstring), in order."""
    out = []
    for chunk in letter_digit_runs(unquote(text)):
        if is_noise(chunk):
            continue
        pieces = _CAMEL.findall(chunk) if chunk.isascii() else [chunk]
        if len(pieces) >= 3 and 2 * sum(len(p) <= 2 for p in pieces) > len(pieces):
            continue        # dQw4w9WgXcQ: an id in mixed case, not words
        out += [w for w in map(str.lower, pieces) if not is_noise(w) and w not in NOISE_WORDS]
    return out


def letter_digit_runs(text):
    """The maximal runs of letters and digits (Unicode general categories L* and N*) of `text`."""
    runs, current = [], []
    for ch in text:
        if unicodedata.category(ch)[0] in "LN":
            current.append(ch)
        elif current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs


def is_noise(word):
    """Whether a path word or host label is a number, an id or a hash rather than a word: all
    digits; a single character; longer than 30 characters; six or more hex digits holding a
    digit; or six or more characters of which at least a third are digits."""
    word = word.lower()
    if len(word) <= 1 or len(word) > 30 or word.isdigit():
        return True
    digits = sum(ch.isdigit() for ch in word)
    if len(word) >= 6 and digits and _HEX.match(word):
        return True
    return len(word) >= 6 and 3 * digits >= len(word)


def _dedupe(words):
    return [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]


def clean_title(title):
    """The title with whitespace collapsed, a leading unread counter dropped, capped."""
    text = " ".join((title or "").split())
    return _COUNTER.sub("", text)[:MAX_TITLE_CHARS].rstrip()
