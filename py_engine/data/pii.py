"""Personal data and secrets found in text and replaced by typed placeholders, so that what a
model learns from a user's chats and pages does not teach it their addresses, numbers or keys.

    text, found = scrub_pii("mail jane@example.org or call +44 20 7946 0958")
    text                       # "mail [EMAIL] or call [PHONE]"
    [m.type for m in found]    # ["email", "phone"]

Types (PII_TYPES, in precedence order: where two findings overlap, the earlier type wins, then
the longer span), each replaced by "[" + TYPE + "]":
  private_key  PEM/PGP private key blocks, BEGIN to END (to the end of the base64 lines if cut)
  credential   secrets in URLs and settings: the user:password of scheme://user:pass@host, the
               value of ?token= / access_token / api_key / password / signature... parameters,
               `password = ...` style assignments, Authorization Bearer/Basic values
  api_key      key shapes: AWS access key ids (AKIA...), GitHub (ghp_..., github_pat_...), Slack
               (xoxb-...), Google (AIza...), Stripe (sk_live_...), OpenAI-like (sk-...), JWTs
  email        addresses with a dotted domain (not file names such as icon@2x.png)
  iban         IBANs whose length fits their country and whose mod-97 check holds (spaced or not)
  card         13-19 digit card numbers (first digit 2-6) passing the Luhn check, plain or in
               groups of 4 (or 4-6-5 / 4-6-4) joined by spaces or dashes
  ip           IPv4 (octets 0-255) and IPv6 (checked by the standard library's ipaddress)
  phone        numbers with a country code (+44 ..., 0044 ...), or in a national layout: US
               (415) 555-2671 / 415-555-2671, numbers with a trunk 0 (UK 020 7946 0958, FR 01 42
               68 53 00, DE 030 901820, IN 098765 43210), Indian mobiles 98765 43210, an area
               code in parentheses (BR (11) 96108-4548); other layouts (ES 612 51 90 73) and
               unseparated runs of 10-11 digits only where "phone", "call", "tel"... precede them
Numbers whose context names something else ("order", "invoice", "ISBN", "version",
"tracking"...) are left alone, as are dates, times, prices, version numbers, UUIDs, hashes and
colours. What is found is reported by type and span only: a report never holds the secret.

Pure Python (re, ipaddress): this runs in the browser.
"""

import ipaddress
import re
from dataclasses import dataclass, field

PII_TYPES = ("private_key", "api_key", "credential", "email", "iban", "card", "ip", "phone")


def placeholder(pii_type):
    return "[" + pii_type.upper() + "]"


@dataclass
class PiiConfig:
    """Which types to scrub (any subset of PII_TYPES)."""
    types: tuple = PII_TYPES

    def __post_init__(self):
        unknown = sorted(set(self.types) - set(PII_TYPES))
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; the types are {list(PII_TYPES)}")


@dataclass(frozen=True)
class PiiMatch:
    """One finding: its type and where it was in the text given ([start, end) characters)."""
    type: str
    start: int
    end: int


# ---- secrets ---------------------------------------------------------------------------------

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK|)-----"
    r"(?:.{0,20000}?-----END \1PRIVATE KEY\2-----"    # the whole block (an RSA-8192 PEM is 6 kB)
    r"|(?:\r?\n[ \t]*[A-Za-z0-9+/=][A-Za-z0-9+/=:,. -]*)*)",   # or what is left of a cut one
    re.S)

_URL_USERINFO = re.compile(r"(?<=://)[^\s/?#@:\[\]]+:[^\s/?#@\[\]]+(?=@[\w\[])")
_PARAM_NAMES = (r"(?:access|refresh|id|auth|session|api|private|client|bearer|security)[_-]?token"
                r"|token|api[_-]?key|apikey|key|secret|client[_-]?secret|password|passwd|pwd|pass"
                r"|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|auth"
                r"|session[_-]?id|sid|jwt")
# a value's last character is no sentence punctuation: "?token=abc." ends at "c"
_VALUE = r"[^\s&#\"'<>()\[\]{}]*[^\s&#\"'<>()\[\]{}.,;:]"
_URL_PARAM = re.compile(r"(?i)(?<=[?&;#])(?:" + _PARAM_NAMES + r")=(" + _VALUE + ")")
_ASSIGNED_NAMES = (r"(?:access|refresh|id|auth|api|private|client|bearer)[_-]?token"
                   r"|api[_-]?key|apikey|api[_-]?secret|client[_-]?secret|secret[_-]?key"
                   r"|(?:aws[_-]?)?secret[_-]?access[_-]?key|password|passwd|db[_-]?pass(?:word)?")
# NAME=value, name = value, name: value, "name": "value". A bare value other than NAME=value
# must look like a secret (a digit, or 16+ characters), so that code (`api_key: str`,
# `password = os.environ[...]`) is no finding.
_ASSIGNMENT = re.compile(
    r"(?i)(?<![A-Za-z0-9-])[\"']?(?:" + _ASSIGNED_NAMES + r")[\"']?"
    r"(?:\s*=\s*|\s*:\s*)"
    r"(?:\"([^\"\s]{4,})\"|'([^'\s]{4,})'|(?=[^\s\"'&<>()\[\]{},;]{4})(" + _VALUE + "))")
_AUTH_HEADER = re.compile(r"(?i)\b(?:bearer|basic)\s+([A-Za-z0-9\-._~+/]{16,}=*)")

_API_KEY = re.compile("|".join([
    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    r"\bxox[abposre]-[A-Za-z0-9-]{10,250}",
    r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
    r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}\b",
    r"(?<![\w-])sk-(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z]{3})[A-Za-z0-9_-]{20,250}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
]))


def _find_private_keys(text):
    for m in _PRIVATE_KEY.finditer(text):
        yield m.start(), m.end()


def _find_credentials(text):
    for m in _URL_USERINFO.finditer(text):
        yield m.start(), m.end()
    for m in _URL_PARAM.finditer(text):
        yield m.start(1), m.end(1)
    for m in _ASSIGNMENT.finditer(text):
        group = next(g for g in (1, 2, 3) if m.group(g) is not None)
        value = m.group(group)
        if group == 3 and text[m.start(group) - 1] != "=" \
                and not (len(value) >= 16 or any(c.isdigit() for c in value)):
            continue
        yield m.start(group), m.end(group)
    for m in _AUTH_HEADER.finditer(text):
        yield m.start(1), m.end(1)


def _find_api_keys(text):
    for m in _API_KEY.finditer(text):
        yield m.start(), m.end()


# ---- addresses -------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))"
    r"(?![\w-]|\.[A-Za-z0-9])")
_FILE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "ts",
                    "json", "txt", "pdf", "map", "mjs", "py", "html", "htm", "avif"}

_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\w|\.\d|-[A-Za-z])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
                   r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\w)")
# "version 1.2.3.4", "v1.2.3.4", "Chrome/120.0.0.0": four numbers that are no address
_VERSION_BEFORE = re.compile(r"(?i)(?:\b(?:version|ver|release|build|firmware|v)\.?\s*"
                             r"|[A-Za-z][\w.-]*/)$")


def _find_emails(text):
    for m in _EMAIL.finditer(text):
        if m.group(2).lower() not in _FILE_EXTENSIONS:
            yield m.start(), m.end()


def _find_ips(text):
    for m in _IPV4.finditer(text):
        if not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            yield m.start(), m.end()
    for m in _IPV6.finditer(text):
        candidate = m.group()
        groups = [g for g in re.split(r":", candidate) if g]
        if len(groups) < 2 or not any(len(g) >= 2 for g in groups) \
                or not any(c.isdigit() for c in candidate):
            continue   # "a::b", "dead::beef", "[::2]" slices and the like
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield m.start(), m.end()


# ---- IBANs -----------------------------------------------------------------------------------

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})\d{2}(?= ?[A-Z0-9])")


def iban_checksum_ok(iban):
    """The ISO 13616 mod-97 check of a compact IBAN (letters A=10 ... Z=35)."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _find_ibans(text):
    for m in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(m.group(1))
        if length is None:
            continue
        compact, pos = [], m.start()
        while pos < len(text) and len(compact) < length:
            c = text[pos]
            if c.isascii() and c.isalnum() and (c.isdigit() or c.isupper()):
                compact.append(c)
            elif not (c == " " and compact and pos + 1 < len(text) and text[pos + 1] != " "):
                break
            pos += 1
        if len(compact) != length or (pos < len(text) and text[pos].isalnum()):
            continue
        if iban_checksum_ok("".join(compact)):
            yield m.start(), pos


# ---- numbers: cards and phones ---------------------------------------------------------------

def luhn_ok(digits):
    """The Luhn check of a string of digits."""
    total = 0
    for k, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_DIGITS = re.compile(r"\d+")
_JOIN = re.compile(r"[ .\-/]|\)[ .\-]?|[ .\-]?\(")    # what may stand between two digit groups
_NOT_BEFORE = set("@#$€£¥%/.&_-+*^~") | {"\\"}
_NEGATIVE_CONTEXT = re.compile(
    r"(?i)\b(?:isbn(?:-1[03])?|issn|order|orders|invoice|inv|ref|reference|tracking|track|serial"
    r"|sku|account|acct|a/c|id|ticket|case|po|part|model|version|build|patent|zip|postcode"
    r"|postal|iban|bic|swift|routing|sort code|receipt|transaction|txn|booking|confirmation"
    r"|customer|member|policy|claim|batch|lot|item|product|imei|vin|ssn)\b"
    r"(?:\s*(?:no\.?|nr\.?|number|num|#|id|code))?[\s:#.-]*$")
_PHONE_CONTEXT = re.compile(
    r"(?i)(?:\b(?:phone|phones|tel|telephone|mobile|mob|cell|cellphone|call|calling|fax|whatsapp"
    r"|sms|text|texting|ring|dial|landline|hotline|helpline|contact|reach|reachable|numéro"
    r"|téléphone|portable|telefon|handy|rufnummer|movil|móvil|teléfono)\b|☎|📞)[^\n]{0,30}$")


_WORDED = re.compile(r"[^\W\d_]|[☎📞]")


@dataclass
class _Group:
    digits: str
    start: int
    end: int
    plus: bool = False        # a "+" stands right before it (a country code)
    paren: bool = False       # written in parentheses


def _digit_runs(text):
    """Runs of digit groups that a single separator joins ("415-555-2671", "+44 (0)20 7946
    0958"), each a list of _Group."""
    runs, run = [], []
    for m in _DIGITS.finditer(text):
        group = _Group(m.group(), m.start(), m.end())
        before = text[max(0, m.start() - 2):m.start()]
        if before.endswith("(") and text.startswith(")", m.end()):
            group.paren = True
        if before.endswith("+") or before == "+(":
            group.plus = True
        if run and _JOIN.fullmatch(text, run[-1].end, m.start()) and not group.plus:
            run.append(group)
        else:
            if run:
                runs.append(run)
            run = [group]
    if run:
        runs.append(run)
    return runs


def _span(text, groups):
    start, end = groups[0].start, groups[-1].end
    if groups[0].paren:
        start -= 1
    if groups[0].plus:
        start = text.rindex("+", 0, start)
    if groups[-1].paren:
        end += 1
    return start, end


def _bounded(text, start, end, first_in_run):
    before = text[start - 1] if start else " "
    if before.isalnum() or before in _NOT_BEFORE:
        return False
    if before == "," and start > 1 and text[start - 2].isdigit():
        return False                              # 1,299: thousands, not a new number
    if not first_in_run and before != " ":
        return False
    after = text[end:end + 2]
    if after[:1].isalnum() or after[:1] in ("@", "%", "_"):
        return False
    return not (len(after) == 2 and after[0] in ".,-/:" and after[1].isdigit())


def _is_card(groups, text):
    if groups[0].plus:
        return False
    digits = "".join(g.digits for g in groups)
    if not (13 <= len(digits) <= 19) or digits[0] not in "23456" or not luhn_ok(digits):
        return False
    if len(groups) > 1:
        gaps = {text[a.end:b.start] for a, b in zip(groups, groups[1:])}
        if len(gaps) != 1 or gaps.pop() not in (" ", "-"):
            return False
        sizes = [len(g.digits) for g in groups]
        fours = all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4
        if not (fours or sizes in ([4, 6, 5], [4, 6, 4])):
            return False
    return True


def _one_separator(groups, text):
    """Whether the groups after the first are joined by one kind of separator (the one after
    an area code may differ: "070-123 44 17"); "01.02.2024 12:00", a date and a time, is not."""
    gaps = {text[a.end:b.start] for a, b in zip(groups[1:], groups[2:])}
    return len(gaps) <= 1


def _is_phone(groups, text, said):
    """Whether digit groups are a phone number; `said`: whether a word such as "phone" or
    "call" comes shortly before them."""
    digits = "".join(g.digits for g in groups)
    sizes = [len(g.digits) for g in groups]
    n = len(digits)
    first = groups[0].digits
    if groups[0].plus:                            # +44 20 7946 0958, +14155552671
        if len(groups) == 1:
            return 8 <= n <= 15
        return 8 <= n <= 15 and n - len(first) >= 6 and len(first) <= 3
    if first.startswith("00") and len(groups) > 1 and 10 <= n <= 15:
        return True                               # 0044 20 7946 0958: an international prefix
    if len(groups) == 1:                          # one run of digits: only where it is said
        return said and ((n == 10 and first[0] in "23456789") or (first[0] == "0" and 10 <= n <= 11))
    if sizes == [3, 3, 4] and first[0] in "23456789":
        return True                               # US 415-555-2671, (415) 555-2671, IT, MX
    if sizes == [1, 3, 3, 4] and first == "1" and groups[1].digits[0] in "23456789":
        return True                               # US 1-800-555-0199
    if sizes == [5, 5] and first[0] in "6789" and text[groups[0].end] in " -":
        return True                               # Indian mobile 98765 43210
    if not (9 <= n <= 13 and len(groups) <= 5 and all(s >= 2 for s in sizes[1:])
            and _one_separator(groups, text)):
        return False
    # trunk 0 (UK 020 7946 0958, FR 01 42 68 53 00, DE 030 901820, IN 098765 43210), an area
    # code in parentheses (BR (11) 96108-4548), or any layout where "phone", "call"... precede
    return (first[0] == "0" and 2 <= len(first) <= 6 and n <= 12) or groups[0].paren or said


_MOST_GROUPS = 8     # "+44 (0) 20 7946 0958" is 5 groups, "+33 1 42 68 53 00" 6, a card 5


def _find_numbers(text):
    """(type, start, end) for the card numbers and phone numbers in text. A run of digit
    groups is read from its first group, taking the longest valid span, then on from where
    that span ended: a number is never cut out of the middle of a longer one ("0000 0000 0004"
    of "5500 0000 0000 0004" is no phone)."""
    for run in _digit_runs(text):
        i = 0
        while i < len(run):
            start = _span(text, run[i:i + 1])[0]
            context = text[max(0, start - 40):start]
            worded = _WORDED.search(context) is not None     # most numbers come with no words
            if worded and _NEGATIVE_CONTEXT.search(context):
                break
            said = worded and _PHONE_CONTEXT.search(context) is not None
            found = None
            for j in range(min(len(run), i + _MOST_GROUPS), i, -1):
                groups = run[i:j]
                end = _span(text, groups)[1]
                if not _bounded(text, start, end, i == 0) or \
                        (j < len(run) and text[end:run[j].start] != " "):
                    continue
                kind = "card" if _is_card(groups, text) else \
                    "phone" if _is_phone(groups, text, said) else None
                if kind:
                    found = j
                    yield kind, start, end
                    break
            if found is None:
                break
            i = found


# ---- putting it together ---------------------------------------------------------------------

_FINDERS = {"private_key": _find_private_keys, "credential": _find_credentials,
            "api_key": _find_api_keys, "email": _find_emails, "iban": _find_ibans,
            "ip": _find_ips}


def find_pii(text, config=None):
    """Non-overlapping PiiMatches in text, in order (see the module docstring for precedence)."""
    types = PII_TYPES if config is None else config.types
    candidates = []
    for pii_type, finder in _FINDERS.items():
        if pii_type in types:
            candidates.extend(PiiMatch(pii_type, a, b) for a, b in finder(text) if b > a)
    if "card" in types or "phone" in types:
        candidates.extend(PiiMatch(t, a, b) for t, a, b in _find_numbers(text) if t in types)
    rank = {t: k for k, t in enumerate(PII_TYPES)}
    candidates.sort(key=lambda m: (rank[m.type], m.start - m.end, m.start))
    taken = []
    for m in candidates:
        if all(m.end <= t.start or m.start >= t.end for t in taken):
            taken.append(m)
    return sorted(taken, key=lambda m: m.start)


def scrub_pii(text, config=None):
    """(scrubbed text, [PiiMatch, ...]): each finding replaced by its placeholder; the matches'
    spans refer to the text given."""
    found = find_pii(text, config)
    pieces, pos = [], 0
    for m in found:
        pieces.append(text[pos:m.start])
        pieces.append(placeholder(m.type))
        pos = m.end
    pieces.append(text[pos:])
    return "".join(pieces), found
