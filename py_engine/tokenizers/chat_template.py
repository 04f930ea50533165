"""Chat templates (tokenizer_config.json's `chat_template`) rendered in pure Python, giving the
text `transformers` gives with `apply_chat_template(messages, tokenize=False,
add_generation_prompt=...)`, plus the character spans of the assistant turns in it.

The browser has no jinja2, so this is a small Jinja interpreter for what chat templates use
(ChatML as in Qwen2/SmolLM2, Qwen2.5 with tools, Llama-3.x with tools and a date, Mistral with
tools, Gemma 2/3, Phi-3/3.5, DeepSeek, Hermes tool use with macros, Zephyr, TinyLlama),
configured the way transformers configures its Jinja environment: trim_blocks and lstrip_blocks
on, loop controls, a trailing newline of the template dropped, `tojson` without HTML escaping,
`raise_exception`, `strftime_now`, `namespace()` and `dict` as globals, a message's reasoning
under both `reasoning_content` and `thinking`; `| safe` gives a safe string that escapes the
plain text added to it, as jinja2's Markup does with autoescape off (_Markup). It is tested
against transformers itself (tests/test_chat_template.py, tests/test_chat_template_models.py).

    tpl = ChatTemplate.from_pretrained("checkpoint_dir")    # reads tokenizer_config.json
    text = tpl.render(messages, add_generation_prompt=True)
    text, spans = tpl.render_with_spans(messages)           # spans: [(start, end), ...]

Assistant spans (for training masks, where everything outside them is ignored): each span
starts where an assistant message's content starts in the rendered text and ends after that
content as the template printed it (after `| trim` or `.strip()` where the template trims),
extended over the end-of-turn token that follows it, after any spaces or tabs (`<|im_end|>`,
`<|eot_id|>`, `</s>`, `<end_of_turn>`, the EOS token...: `end_tokens`; " </s>" in Llama-2's
template), since the model has to learn to emit it. Whatever follows that token (ChatML's "\n",
Zephyr's "\n"), the role header before the content and the generation prompt are outside every
span. Content is followed through `+`, `~`, `{% set %}` (block ones too), what a macro prints,
`trim`, `.strip()/.lstrip()/.rstrip()` and `.split(sep)`; other filters and methods (`upper`,
`tojson`, `.split()` on whitespace...) give text outside any span, and an assistant message
printed only through its tool_calls has no span.

Supported: `{{ expr }}`, `{% if %}/{% elif %}/{% else %}/{% endif %}`, `{% for x in xs [if
cond] [recursive] %}...[{% else %}]...{% endfor %}` (also `for k, v in ...`) with `{% break
%}`, `{% continue %}` and loop.index0, index, revindex, revindex0, first, last, length,
previtem, nextitem, depth, depth0, cycle(), changed(), loop(items) in a recursive loop; `{% set
name = expr %}`, `{% set a, b = expr %}`, `{% set ns.attr = expr %}` on a namespace(), block
`{% set name [| filters] %}...{% endset %}`; `{% macro name(a, b=default) %}` with keyword
arguments, `varargs`, `kwargs`, recursion, and `{% call[(args)] macro(...) %}...{% endcall %}`
with `caller(...)`, scoped as jinja2 scopes them (a macro sees its defining scope as it is when
called); `{# comments #}`; `{% raw %}...{% endraw %}`; `{% with a = x, ... %}...{% endwith %}`;
whitespace control `{%-`, `-%}`, `{{-`, `-}}`, `{%+`, `+%}`. Expressions: string (adjacent ones
joined), integer, float, list, tuple and dict literals, true/false/none, names, `.attr`,
`[key]`, `[a:b:c]` slices, calls, `a if c else b`, `+ - * / // % ** ~`, `== != < <= > >= in not
in` (chained as in Python), `and or not`.
Tests (`is` / `is not`, with an argument as `is divisibleby 3` or `is in(xs)`): defined,
undefined, none, string, number, integer, float, boolean, true, false, mapping, sequence,
iterable, callable, even, odd, divisibleby, lower, upper, escaped, sameas, in, eq/equalto/==,
ne/!=, lt/lessthan/<, le/<=, gt/greaterthan/>, ge/>=, filter, test. Filters: trim, length,
count, tojson (indent, separators, sort_keys, ensure_ascii), capitalize, upper, lower, title,
default/d, join (attribute=), first, last, list, string, int, float, abs, round, replace,
reverse, safe, escape/e, forceescape, items, select, reject, selectattr, rejectattr, map (a
filter's name, or attribute= with default=), unique, dictsort, sort, sum, min, max, indent,
center, wordcount, format; select/reject/selectattr/rejectattr/map/unique/items give one-pass
generators as in jinja2 (`| list` before `| length`). Globals: messages, add_generation_prompt, bos_token,
eos_token, unk_token, pad_token, tools and documents (None unless given), raise_exception,
strftime_now, namespace, range, dict. Public methods of strings, read-only ones of dicts and
lists (`message.content.strip()`, `.items()`). `{% generation %}...{% endgeneration %}`
(transformers' marker of assistant text) prints its body; the spans stay those described
above. Anything else (include, import, other filters and tests...) is a
ValueError naming it. A conversation the
template refuses through raise_exception(...) is a TemplateError carrying the template's message;
one it fails on otherwise, where jinja2 fails too (a None content added to a string...), is a
ValueError saying what failed.
"""

import datetime
import html
import itertools
import json
import math
import operator
import os
import re
import string
import textwrap
from collections.abc import Mapping
from urllib.parse import quote_from_bytes

from ..formats.json_file import read_json_object, read_utf8
from .turn_spans import add_turn_span

# Variables rendering sets itself: template_args cannot name them.
TEMPLATE_OWN = ("messages", "add_generation_prompt", "tools", "documents")


def check_template_args(args, what="template_args"):
    """`args`, more variables for a chat template (Qwen3's enable_thinking...), as a dict:
    a mapping whose keys are variable names, none of them one rendering sets itself; else a
    ValueError starting with `what`."""
    if not isinstance(args, Mapping):
        raise ValueError(f"{what} must be an object of template variables and their values")
    for name in args:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{what}: {name!r} is not a template variable name")
        if name in TEMPLATE_OWN:
            raise ValueError(f"{what}: {name} is set by generate itself")
    return dict(args)


DEFAULT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>",
                      "<end_of_turn>")


class TemplateError(ValueError):
    """Raised by the template's raise_exception(...), where transformers raises jinja2's:
    the template refuses its input (roles that do not alternate, an unknown role...).
    `message` is the template's own text, `origin` where the template came from (or None)."""

    def __init__(self, message, origin=None):
        self.message, self.origin = message, origin
        where = f" ({origin})" if origin else ""
        super().__init__(f"the chat template{where} refused the conversation: {message}")


# ---- values ----------------------------------------------------------------------------------

class _Undefined:
    """A missing variable, key or attribute: prints as '', is false, iterates as empty."""

    def __init__(self, name):
        self.name = name

    def __bool__(self):
        return False

    def __str__(self):
        return ""

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _Undefined)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return 0

    def __getitem__(self, key):
        raise ValueError(f"chat template: {self.name!r} is undefined (reading [{key!r}])")

    def __repr__(self):
        return "Undefined"


class _Namespace:
    def __init__(self, attrs):
        self.__dict__["_attrs"] = dict(attrs)


class _Marked(str):
    """A string with the character spans of assistant content it carries."""

    def __new__(cls, value, spans):
        self = str.__new__(cls, value)
        self.spans = tuple(spans)
        return self


def _spans(value):
    return value.spans if isinstance(value, _Marked) else ()


def _with_spans(like, text, spans):
    """`text` with `spans`, a safe string (_Markup) where `like` is one, as its methods give."""
    if isinstance(like, _Markup):
        return _Markup(text, spans)
    return _Marked(text, spans) if spans else text


def _concat(a, b):
    """a + b as plain strings (jinja2's `~`; `+` of two strings neither of them safe)."""
    s = str.__add__(a, b)
    sa, sb = _spans(a), _spans(b)
    if not sa and not sb:
        return s
    return _Marked(s, sa + tuple((x + len(a), y + len(a)) for x, y in sb))


_HTML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("'", "&#39;"), ('"', "&#34;"))


def _escape(value):
    """markupsafe.escape: a safe string as it is; anything else as text with & < > ' "
    escaped. The spans it carries survive where escaping leaves its text unchanged."""
    if isinstance(value, _Markup):
        return value
    text = _to_str(value)
    escaped = str(text)
    for char, entity in _HTML_ESCAPES:
        escaped = escaped.replace(char, entity)
    return _Markup(escaped, _spans(value) if escaped == text else ())


class _EscapedArgument:
    """A `%` argument of a safe string, printed escaped (markupsafe's _MarkupEscapeHelper)."""

    def __init__(self, obj):
        self.obj = obj

    def __getitem__(self, key):
        return _EscapedArgument(self.obj[key])

    def __str__(self):
        return str(_escape(self.obj))

    def __repr__(self):
        return str(_escape(repr(self.obj)))

    def __int__(self):
        return int(self.obj)

    def __float__(self):
        return float(self.obj)


class _EscapeFormatter(string.Formatter):
    """str.format on a safe string: each field escaped after formatting, as markupsafe's."""

    def format_field(self, value, format_spec):
        if isinstance(value, _Markup):
            if format_spec:
                raise ValueError("chat template: a safe string takes no format specification")
            return str(value)
        return str(_escape(super().format_field(value, str(format_spec))))


class _Markup(_Marked):
    """A string marked safe (`| safe`, `| escape`): markupsafe's Markup, which jinja2 gives
    even with autoescape off, as transformers renders. Its text prints as it is, but a plain
    string added to it, joined by it, put in by `%` or .format, or given to .replace, .center,
    .ljust or .rjust is HTML-escaped first, and its string methods return safe strings
    (Functionary v3.1's tool list is escaped this way). `~`, output, block set and macros give
    plain strings again, as jinja2 does without autoescape."""

    def __new__(cls, value="", spans=()):
        return _Marked.__new__(cls, _to_str(value), spans)

    def __html__(self):
        return self

    def __repr__(self):   # as markupsafe's, which a printed list of safe strings shows
        return f"Markup({str.__repr__(self)})"

    def __add__(self, other):
        if isinstance(other, str):
            return _Markup._of(_concat(self, _escape(other)))
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, str):
            return _Markup._of(_concat(_escape(other), self))
        return NotImplemented

    @staticmethod
    def _of(value):
        return _Markup(value, _spans(value))

    def __mul__(self, n):
        return _Markup(str.__mul__(self, n))

    __rmul__ = __mul__

    def __mod__(self, args):
        if isinstance(args, tuple):
            args = tuple(_EscapedArgument(a) for a in args)
        elif hasattr(type(args), "__getitem__") and not isinstance(args, str):
            args = _EscapedArgument(args)
        else:
            args = (_EscapedArgument(args),)
        return _Markup(str.__mod__(self, args))

    def join(self, items):
        return _Markup(str.join(self, map(_escape, items)))

    # .strip() and .split(): _trim and _split, which keep a safe string safe (and its spans)

    def rsplit(self, sep=None, maxsplit=-1):
        return [_Markup(v) for v in str.rsplit(self, sep, maxsplit)]

    def splitlines(self, keepends=False):
        return [_Markup(v) for v in str.splitlines(self, keepends)]

    def partition(self, sep):
        return tuple(_Markup(v) for v in str.partition(self, sep))

    def rpartition(self, sep):
        return tuple(_Markup(v) for v in str.rpartition(self, sep))

    def format(self, *args, **kwargs):
        return _Markup(_EscapeFormatter().vformat(self, args, kwargs))

    def format_map(self, mapping):
        return _Markup(_EscapeFormatter().vformat(self, (), mapping))


def _safe_string_method(name, escaped=()):
    """str's method `name` returning a safe string, with the arguments at `escaped` escaped."""
    method = getattr(str, name)

    def safe(self, *args):
        return _Markup(method(self, *(_escape(a) if i in escaped else a
                                      for i, a in enumerate(args))))
    safe.__name__ = name
    return safe


for _name in ("__getitem__", "capitalize", "title", "lower", "upper", "translate", "expandtabs",
              "swapcase", "zfill", "casefold", "removeprefix", "removesuffix"):
    setattr(_Markup, _name, _safe_string_method(_name))
_Markup.replace = _safe_string_method("replace", escaped=(1,))
for _name in ("ljust", "rjust", "center"):
    setattr(_Markup, _name, _safe_string_method(_name, escaped=(1,)))


def _trim(value, chars=None, left=True, right=True):
    """value.strip(chars) (or lstrip/rstrip), keeping the spans it carries."""
    s = str.__str__(value) if isinstance(value, str) else _to_str(value)
    lo = len(s) - len(s.lstrip(chars)) if left else 0
    hi = len(s.rstrip(chars)) if right else len(s)
    hi = max(hi, lo)
    return _with_spans(value, s[lo:hi], tuple((min(max(x, lo), hi) - lo, min(max(y, lo), hi) - lo)
                                             for x, y in _spans(value)))


def _split(value, sep=None, maxsplit=-1):
    """value.split(sep, maxsplit), each part keeping the spans it carries (as after
    `content.split('</think>')[-1]`); split on whitespace (no sep) gives plain strings (safe
    ones from a safe string)."""
    s = str.__str__(value)
    parts = s.split(sep, maxsplit)
    if sep is None or not sep:
        return [_with_spans(value, part, ()) for part in parts]
    out, start = [], 0
    for part in parts:
        lo, hi = start, start + len(part)
        out.append(_with_spans(value, part, tuple((min(max(x, lo), hi) - lo,
                                                   min(max(y, lo), hi) - lo)
                                                  for x, y in value.spans)))
        start = hi + len(sep)
    return out


def _to_str(value):
    if isinstance(value, _Undefined):
        return ""
    if isinstance(value, str):
        return value
    return str(value)


# ---- lexing ------------------------------------------------------------------------------------

_TAG_START = re.compile(r"\{\{|\{%|\{#")
_EXPR_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<num>(?:\d+_)*\d+(?:(?:\.(?:\d+_)*\d+)?[eE][+-]?(?:\d+_)*\d+|\.(?:\d+_)*\d+)
            |0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0[xX](?:_?[0-9a-fA-F])+|[1-9](?:_?\d)*|0(?:_?0)*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>//|\*\*|==|!=|<=|>=|[-+*/%~<>()\[\]{}.,:|=])
""", re.S | re.X)
_WHITESPACE = re.compile(r"\s+")
# jinja2's raw block: no trim_blocks after {% raw %}, which `-%}` ends by eating whitespace
_RAW_BEGIN = re.compile(r"\s*raw\s*(?:-%\}\s*|%\})")
_RAW_END = re.compile(r"\{%(-|\+|)\s*endraw\s*(?:\+%\}|-%\}\s*|%\}\n?)", re.S)


def _lex_expr(src, pos, kind):
    """Tokens of a tag's inside from `pos` up to its closing delimiter; returns (tokens, pos after
    the delimiter, strip sign of the delimiter)."""
    close = "}}" if kind == "var" else "%}"
    tokens = []
    depth = 0   # open brackets: as in jinja2, `}}` inside `{...}` closes the dict, not the tag
    n = len(src)
    while True:
        while pos < n and src[pos].isspace():
            pos += 1
        if pos >= n:
            raise ValueError(f"chat template: unterminated {'{{' if kind == 'var' else '{%'} tag")
        for sign in ("-", "+", "") if depth == 0 else ():
            if src.startswith(sign + close, pos) and (sign != "+" or kind == "block"):
                return tokens, pos + len(sign) + 2, sign
        m = _EXPR_TOKEN.match(src, pos)
        if m is None:
            raise ValueError(f"chat template: unexpected character {src[pos]!r} in an expression")
        k = m.lastgroup
        v = m.group()
        if k == "str":
            v = v[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")
        elif k == "num":   # jinja2's literals: 1_000, 0x1f, 0o17, 0b101, 2.5, 1e3
            v = int(v, 0) if v[:2].lower() in ("0x", "0o", "0b") or not re.search("[.eE]", v) \
                else float(v)
        elif k == "op" and v in "([{":
            depth += 1
        elif k == "op" and v in ")]}":
            depth = max(depth - 1, 0)
        tokens.append((k, v))
        pos = m.end()


def _lex(src):
    """The template as a list of ('text', s), ('var', tokens), ('block', tokens)."""
    src = "\n".join(src.splitlines())   # jinja2: newlines normalized, one trailing newline dropped
    out = []
    pos = 0
    line_start = True
    while True:
        m = _TAG_START.search(src, pos)
        if m is None:
            if pos < len(src):
                out.append(("text", src[pos:]))
            return out
        text = src[pos:m.start()]
        kind = {"{{": "var", "{%": "block", "{#": "comment"}[m.group()]
        p = m.end()
        sign = src[p] if p < len(src) and src[p] in "-+" else ""
        if sign == "+" and kind == "var":
            sign = ""
        p += len(sign)
        if sign == "-":
            text = text.rstrip()
        elif sign != "+" and kind != "var":        # lstrip_blocks
            l_pos = text.rfind("\n") + 1
            if (l_pos > 0 or line_start) and _WHITESPACE.fullmatch(text, l_pos):
                text = text[:l_pos]
        if text:
            out.append(("text", text))
        raw = _RAW_BEGIN.match(src, p) if kind == "block" else None
        if raw:   # {% raw %}: text up to {% endraw %}, lexed as jinja2 lexes it
            end = _RAW_END.search(src, raw.end())
            if end is None:
                raise ValueError("chat template: {% raw %} without {% endraw %}")
            body = src[raw.end():end.start()]
            if end.group(1) == "-":
                body = body.rstrip()
            elif end.group(1) != "+":            # lstrip_blocks before {% endraw %}
                l_pos = body.rfind("\n") + 1
                starts_line = src[raw.end() - 1] == "\n"
                if (l_pos > 0 or starts_line) and _WHITESPACE.fullmatch(body, l_pos):
                    body = body[:l_pos]
            if body:
                out.append(("text", body))
            pos = end.end()
            line_start = src[pos - 1] == "\n"
            continue
        if kind == "comment":
            e = src.find("#}", p)
            if e < 0:
                raise ValueError("chat template: unterminated {# comment")
            end_sign = src[e - 1] if e > p and src[e - 1] in "-+" else ""
            pos = e + 2
        else:
            tokens, pos, end_sign = _lex_expr(src, p, kind)
            out.append((kind, tokens))
        consumed = src[pos - 1]
        if end_sign == "-":
            ws = _WHITESPACE.match(src, pos)
            if ws:
                pos = ws.end()
                consumed = ws.group()[-1]
        elif end_sign != "+" and kind != "var" and src.startswith("\n", pos):   # trim_blocks
            pos += 1
            consumed = "\n"
        line_start = consumed == "\n"


# ---- parsing -----------------------------------------------------------------------------------

def _is_sequence(value):
    try:
        len(value)
        value.__getitem__
    except Exception:
        return False
    return True


def _is_iterable(value):
    try:
        iter(value)
    except TypeError:
        return False
    return True


# name -> test(value, *args), as jinja2.tests defines them
_TESTS = {
    "defined": lambda v: not isinstance(v, _Undefined),
    "undefined": lambda v: isinstance(v, _Undefined),
    "none": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float, complex)),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "boolean": lambda v: v is True or v is False,
    "true": lambda v: v is True,
    "false": lambda v: v is False,
    "mapping": lambda v: isinstance(v, Mapping),
    "sequence": _is_sequence,
    "iterable": _is_iterable,
    "callable": lambda v: callable(v) or isinstance(v, _Undefined),   # as jinja2's Undefined
    "even": lambda v: v % 2 == 0,
    "odd": lambda v: v % 2 == 1,
    "divisibleby": lambda v, n: v % n == 0,
    "lower": lambda v: str(v).islower(),
    "upper": lambda v: str(v).isupper(),
    "escaped": lambda v: hasattr(v, "__html__"),
    "sameas": lambda v, other: v is other,
    "in": lambda v, seq: v in seq,
    "filter": lambda name: name in _FILTERS,
    "test": lambda name: name in _TESTS,
}
for _names, _op in ((("==", "eq", "equalto"), operator.eq), (("!=", "ne"), operator.ne),
                    ((">", "gt", "greaterthan"), operator.gt), ((">=", "ge"), operator.ge),
                    (("<", "lt", "lessthan"), operator.lt), (("<=", "le"), operator.le)):
    _TESTS.update(dict.fromkeys(_names, _op))


class _Parser:
    """Recursive descent over one tag's tokens, with jinja2's operator precedence."""

    def __init__(self, tokens):
        self.t = tokens
        self.i = 0

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else (None, None)

    def at(self, kind, value=None):
        k, v = self.peek()
        return k == kind and (value is None or v == value)

    def take(self, kind=None, value=None):
        k, v = self.peek()
        if k is None or (kind and k != kind) or (value is not None and v != value):
            want = value if value is not None else kind
            raise ValueError(f"chat template: expected {want!r}, got {v!r}")
        self.i += 1
        return v

    def done_yet(self):
        return self.i >= len(self.t)

    def done(self):
        if self.i != len(self.t):
            raise ValueError(f"chat template: unexpected {self.t[self.i][1]!r}")

    def expr(self):
        node = self.or_()
        if self.at("name", "if"):
            self.take()
            cond = self.or_()
            other = None
            if self.at("name", "else"):
                self.take()
                other = self.expr()
            node = ("cond", cond, node, other)
        return node

    def or_(self):
        node = self.and_()
        while self.at("name", "or"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.at("name", "and"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.at("name", "not"):
            self.take()
            return ("not", self.not_())
        return self.compare()

    def compare(self):
        node = self.math1()
        ops = []
        while True:
            k, v = self.peek()
            if k == "op" and v in ("==", "!=", "<", "<=", ">", ">="):
                self.take()
            elif k == "name" and v == "in":
                self.take()
            elif k == "name" and v == "not" and self.peek(1) == ("name", "in"):
                self.i += 2
                v = "not in"
            else:
                return ("cmp", node, ops) if ops else node
            ops.append((v, self.math1()))   # chained like Python: a < b < c

    def math1(self):
        node = self.concat()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()
            node = ("bin", op, node, self.concat())
        return node

    def concat(self):
        node = self.math2()
        while self.at("op", "~"):
            self.take()
            node = ("bin", "~", node, self.math2())
        return node

    def math2(self):
        node = self.pow_()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/", "//", "%"):
            op = self.take()
            node = ("bin", op, node, self.pow_())
        return node

    def pow_(self):
        node = self.unary()
        while self.at("op", "**"):
            self.take()
            node = ("bin", "**", node, self.unary())
        return node

    def unary(self, with_filters=True):
        if self.peek()[0] == "op" and self.peek()[1] in ("-", "+"):
            op = self.take()   # jinja2: `-x | f` is f(-x)
            node = ("neg" if op == "-" else "pos", self.unary(with_filters=False))
        else:
            node = self.postfix(self.primary())
        return self.filters(node) if with_filters else node

    def primary(self):
        k, v = self.peek()
        if k == "str":
            self.take()
            while self.at("str"):
                v += self.take()
            return ("const", v)
        if k == "num":
            self.take()
            return ("const", v)
        if k == "name":
            self.take()
            consts = {"true": True, "True": True, "false": False, "False": False,
                      "none": None, "None": None}
            if v in consts:
                return ("const", consts[v])
            return ("name", v)
        if k == "op" and v == "(":
            self.take()
            if self.at("op", ")"):
                self.take()
                return ("tuple", [])
            node = self.expr()
            if self.at("op", ","):
                items = [node]
                while self.at("op", ","):
                    self.take()
                    if self.at("op", ")"):
                        break
                    items.append(self.expr())
                node = ("tuple", items)
            self.take("op", ")")
            return node
        if k == "op" and v == "[":
            self.take()
            items = []
            while not self.at("op", "]"):
                items.append(self.expr())
                if not self.at("op", "]"):
                    self.take("op", ",")
            self.take()
            return ("list", items)
        if k == "op" and v == "{":
            self.take()
            items = []
            while not self.at("op", "}"):
                key = self.expr()
                self.take("op", ":")
                items.append((key, self.expr()))
                if not self.at("op", "}"):
                    self.take("op", ",")
            self.take()
            return ("dict", items)
        raise ValueError(f"chat template: unexpected {v!r} in an expression")

    def postfix(self, node):
        while True:
            if self.at("op", "."):
                self.take()
                k, v = self.peek()
                if k == "num" and isinstance(v, int):
                    self.take()
                    node = ("item", node, ("const", v))
                else:
                    node = ("attr", node, self.take("name"))
            elif self.at("op", "["):
                self.take()
                parts = [None]
                keys = []   # jinja2 reads x[a, b] as x[(a, b)]
                while not self.at("op", "]"):
                    if self.at("op", ":"):
                        self.take()
                        parts.append(None)
                    elif self.at("op", ",") and len(parts) == 1 and parts[0] is not None:
                        self.take()
                        keys.append(parts[0])
                        parts = [None]
                    else:
                        if parts[-1] is not None:
                            raise ValueError("chat template: bad subscript")
                        parts[-1] = self.expr()
                self.take()
                if keys:
                    if len(parts) > 1:
                        raise ValueError("chat template: a slice in a tuple subscript")
                    node = ("item", node, ("tuple", keys + [x for x in parts if x is not None]))
                elif len(parts) == 1:   # x[] is x[()] in jinja2
                    node = ("item", node, ("tuple", []) if parts[0] is None else parts[0])
                elif len(parts) <= 3:
                    node = ("slice", node, parts + [None] * (3 - len(parts)))
                else:
                    raise ValueError("chat template: bad slice")
            elif self.at("op", "("):
                node = ("call", node) + self.args()
            else:
                return node

    def args(self):
        self.take("op", "(")
        args, kwargs = [], []
        while not self.at("op", ")"):
            if self.peek()[0] == "name" and self.peek(1) == ("op", "="):
                name = self.take()
                self.take()
                kwargs.append((name, self.expr()))
            else:
                args.append(self.expr())
            if not self.at("op", ")"):
                self.take("op", ",")
        self.take()
        return args, kwargs

    def filters(self, node):
        while True:
            if self.at("op", "|"):
                self.take()
                name = self.dotted_name()   # an unknown one: see _refuse_unknown
                args, kwargs = self.args() if self.at("op", "(") else ([], [])
                node = ("filter", name, node, args, kwargs)
            elif self.at("name", "is"):
                node = self.test(node)
            else:
                return node

    def dotted_name(self):
        """A filter's or test's name: jinja2 reads `x | a.b` as the filter named "a.b"."""
        name = self.take("name")
        while self.at("op", "."):
            self.take()
            name += "." + self.take("name")
        return name

    def test(self, node):
        """`node is [not] name [arg | (args)]`, parsed as jinja2 parses it."""
        self.take("name", "is")
        negate = False
        if self.at("name", "not"):
            self.take()
            negate = True
        name = self.dotted_name()
        name = {"None": "none", "True": "true", "False": "false"}.get(name, name)
        k, v = self.peek()
        if k == "op" and v == "(":
            args, kwargs = self.args()
        elif (k in ("str", "num") or (k == "op" and v in ("[", "{"))
              or (k == "name" and v not in ("else", "or", "and"))):
            if k == "name" and v == "is":
                raise ValueError("chat template: tests cannot be chained with 'is'")
            args, kwargs = [self.postfix(self.primary())], []
        else:
            args, kwargs = [], []
        return ("test", name, node, negate, args, kwargs)


def _parse_target(p):
    names = [p.take("name")]
    while p.at("op", ","):
        p.take()
        names.append(p.take("name"))
    return names


def _parse_params(p):
    """A macro's or a call block's `(name, name=default, ...)`: [(name, default node or None)]."""
    params = []
    p.take("op", "(")
    while not p.at("op", ")"):
        name = p.take("name")
        default = None
        if p.at("op", "="):
            p.take()
            default = p.expr()
        elif params and params[-1][1] is not None:
            raise ValueError(f"chat template: macro parameter {name!r} without a default "
                             "follows one with a default")
        params.append((name, default))
        if not p.at("op", ")"):
            p.take("op", ",")
    p.take()
    return params


def _refuse_unknown(body, soft=False):
    """Refuse a filter or test we do not have where jinja2 refuses it when it compiles the
    template: anywhere but inside an {% if %} block or a conditional expression (its "soft"
    frames; a for loop's, a macro's or a block's body starts a frame that is not). There,
    jinja2 compiles it and fails only if it is reached, and so do we (_eval): templates such
    as DeepSeek V3.2's use llama.cpp's from_json on a path that transformers never takes."""
    def expression(node, soft):
        if isinstance(node, tuple) and node:
            kind = node[0]
            if kind == "filter" and len(node) == 5 and node[1] not in _FILTERS and not soft:
                raise ValueError(f"chat template: unsupported filter {node[1]!r}")
            if kind == "test" and len(node) == 6 and node[1] not in _TESTS and not soft:
                raise ValueError(f"chat template: unsupported test 'is {node[1]}'")
            soft = soft or kind == "cond"
        if isinstance(node, (tuple, list)):
            for child in node:
                expression(child, soft)

    for statement in body:
        kind = statement[0]
        if kind == "if":
            _, branches, other = statement
            for cond, sub in branches:
                expression(cond, True)
                _refuse_unknown(sub, True)
            _refuse_unknown(other or [], True)
        elif kind == "for":
            _, targets, seq, cond, sub, other, _ = statement
            expression(seq, soft)
            expression(cond, False)
            _refuse_unknown(sub)
            _refuse_unknown(other or [])
        elif kind in ("macro", "callblock"):
            macro = statement[-1]
            if kind == "callblock":
                expression(statement[1], soft)
            expression([d for _, d in macro.params], False)
            _refuse_unknown(macro.body)
        elif kind == "setblock":
            expression(statement[2], soft)
            _refuse_unknown(statement[3])
        elif kind == "filterblock":
            expression(statement[1], False)
            _refuse_unknown(statement[2])
        elif kind == "generation":
            _refuse_unknown(statement[1], soft)
        elif kind == "with":
            expression([value for _, value in statement[1]], soft)
            _refuse_unknown(statement[2])
        else:
            expression(statement[1:], soft)


def _names_used(tree):
    """Every variable name read anywhere in a parsed body or expression, the bodies and
    defaults of the macros and call blocks in it included (as jinja2 counts a nested macro's
    `caller` as its enclosing macro's)."""
    found = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple) and len(node) == 2 and node[0] == "name" and isinstance(node[1], str):
            found.add(node[1])      # (a keyword argument called name is ("name", its value))
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, _MacroDef):
            found |= node.names
    return found


# The placeholder a block `{% set x | filter %}` runs its filters on: not a name a template can
# spell, so it cannot clash with one.
_CAPTURED = " captured"


def _parse(items):
    """Nested statement lists from the lexer's items."""
    pos = 0
    loops = 0   # for loops around the current position (inside the innermost macro)

    def block(stop):
        nonlocal pos, loops
        body = []
        while pos < len(items):
            kind, val = items[pos]
            if kind == "text":
                body.append(("text", val))
                pos += 1
                continue
            p = _Parser(val)
            if kind == "var":
                node = p.expr()
                p.done()
                body.append(("out", node))
                pos += 1
                continue
            if not p.at("name"):
                raise ValueError(f"chat template: unexpected {val[:1]!r} at the start of "
                                 "a {% %} tag")
            word = p.take()
            if word in stop:
                return body, word, p
            if word.startswith("end") or word in ("elif", "else"):
                expected = f" (expected {{% {stop[-1]} %}})" if stop else ""
                raise ValueError(f"chat template: unexpected {{% {word} %}}{expected}")
            pos += 1
            if word == "if":
                branches = []
                cond = p.expr()
                p.done()
                while True:
                    sub, end, q = block(("elif", "else", "endif"))
                    branches.append((cond, sub))
                    pos += 1
                    if end == "elif":
                        cond = q.expr()
                        q.done()
                        continue
                    q.done()
                    other = None
                    if end == "else":
                        other, end, q = block(("endif",))
                        q.done()
                        pos += 1
                    break
                body.append(("if", branches, other))
            elif word == "for":
                targets = _parse_target(p)
                p.take("name", "in")
                seq = p.or_()
                cond = None
                if p.at("name", "if"):
                    p.take()
                    cond = p.expr()
                recursive = p.at("name", "recursive")
                if recursive:
                    p.take()
                p.done()
                loops += 1
                sub, end, q = block(("else", "endfor"))
                loops -= 1
                q.done()
                pos += 1
                other = None
                if end == "else":
                    other, end, q = block(("endfor",))
                    q.done()
                    pos += 1
                body.append(("for", targets, seq, cond, sub, other, recursive))
            elif word in ("break", "continue"):
                p.done()
                if not loops:
                    raise ValueError(f"chat template: {{% {word} %}} outside a for loop")
                body.append((word,))
            elif word == "set":
                targets = _parse_target(p)
                attr = None
                if len(targets) == 1 and p.at("op", "."):
                    p.take()
                    attr = p.take("name")
                if p.at("op", "="):
                    p.take()
                    value = p.expr()
                    if p.at("op", ","):   # set a, b = 1, 2
                        items_ = [value]
                        while p.at("op", ","):
                            p.take()
                            items_.append(p.expr())
                        value = ("tuple", items_)
                    p.done()
                    body.append(("set", targets, attr, value))
                elif attr is None and len(targets) == 1:   # {% set x [| filters] %}...{% endset %}
                    value = p.filters(("name", _CAPTURED))
                    p.done()
                    sub, _, q = block(("endset",))
                    q.done()
                    pos += 1
                    body.append(("setblock", targets[0], value, sub))
                else:
                    raise ValueError("chat template: expected '=' in {% set %}")
            elif word == "filter":       # {% filter f(args) | g %}...{% endfilter %}
                p.t = p.t[:p.i] + [("op", "|")] + p.t[p.i:]
                value = p.filters(("name", _CAPTURED))
                p.done()
                sub, _, q = block(("endfilter",))
                q.done()
                pos += 1
                body.append(("filterblock", value, sub))
            elif word == "with":         # {% with a = x, b = y %}...{% endwith %}
                assignments = []
                while not p.done_yet():
                    if assignments:
                        p.take("op", ",")
                    name = p.take("name")
                    p.take("op", "=")
                    assignments.append((name, p.expr()))
                sub, _, q = block(("endwith",))
                q.done()
                pos += 1
                body.append(("with", assignments, sub))
            elif word == "generation":   # transformers' assistant-mask tag: its body as is
                p.done()
                sub, _, q = block(("endgeneration",))
                q.done()
                pos += 1
                body.append(("generation", sub))
            elif word == "macro":
                name = p.take("name")
                params = _parse_params(p)
                p.done()
                outer, loops = loops, 0
                sub, _, q = block(("endmacro",))
                loops = outer
                q.done()
                pos += 1
                body.append(("macro", _MacroDef(name, params, sub)))
            elif word == "call":
                params = _parse_params(p) if p.at("op", "(") else []
                call = p.expr()
                p.done()
                if call[0] != "call":
                    raise ValueError("chat template: {% call %} needs a macro call")
                outer, loops = loops, 0
                sub, _, q = block(("endcall",))
                loops = outer
                q.done()
                pos += 1
                body.append(("callblock", call, _MacroDef("caller", params, sub)))
            else:
                raise ValueError(f"chat template: unsupported construct {{% {word} %}}")
        if stop:
            raise ValueError(f"chat template: missing {{% {stop[-1]} %}}")
        return body, None, None

    body, _, _ = block(())
    return body


# ---- evaluation --------------------------------------------------------------------------------

_SAFE_METHODS = {
    dict: {"get", "items", "keys", "values", "copy"},
    list: {"index", "count", "copy"},
    range: {"index", "count"},
    tuple: {"index", "count"},
}


def _getattr(obj, name):
    if isinstance(obj, _Undefined):
        raise ValueError(f"chat template: {obj.name!r} is undefined (reading .{name})")
    if isinstance(obj, _Namespace):
        return obj._attrs.get(name, _Undefined(name))
    if isinstance(obj, _DictGlobal) and name == "fromkeys":
        return obj.fromkeys
    if not name.startswith("_"):
        if isinstance(obj, _Marked) and name in ("strip", "lstrip", "rstrip"):
            return lambda chars=None: _trim(obj, chars, name != "rstrip", name != "lstrip")
        if isinstance(obj, _Marked) and name == "split":
            return lambda sep=None, maxsplit=-1: _split(obj, sep, maxsplit)
        if isinstance(obj, _Markup) and hasattr(str, name):
            return _bounded_method(obj, name)
        if isinstance(obj, str) and hasattr(str, name):
            return _bounded_method(str(obj), name)
        for t, allowed in _SAFE_METHODS.items():
            if isinstance(obj, t) and name in allowed:
                return getattr(obj, name)
    if isinstance(obj, _Loop):
        return obj.get(name)
    if isinstance(obj, _Group) and name in ("grouper", "list"):
        return getattr(obj, name)
    try:
        return obj[name]
    except (TypeError, LookupError):
        return _Undefined(name)


def _getitem(obj, key):
    if isinstance(obj, _Undefined):
        raise ValueError(f"chat template: {obj.name!r} is undefined (reading [{key!r}])")
    try:
        return obj[key]
    except (TypeError, LookupError, AttributeError):
        if isinstance(key, str):
            return _getattr(obj, key)
        return _Undefined(repr(key))


_NOTHING_YET = object()


class _Loop:
    """A for loop's `loop`; in a recursive loop, loop(items) renders the body over items one
    level deeper and gives the text."""

    def __init__(self, items, depth0=0, recurse=None):
        self.items = items
        self.length = len(items)
        self.index0 = 0
        self.depth0 = depth0
        self.recurse = recurse
        self.last_changed = _NOTHING_YET

    def __call__(self, items):
        if self.recurse is None:
            raise ValueError("chat template: loop() is only for a 'for ... recursive' loop")
        return self.recurse(items, self.depth0 + 1)

    def __repr__(self):   # as jinja2's LoopContext
        return f"<LoopContext {self.index0 + 1}/{self.length}>"

    def get(self, name):
        i, n = self.index0, self.length
        values = {
            "index0": i, "index": i + 1, "revindex0": n - i - 1, "revindex": n - i,
            "first": i == 0, "last": i == n - 1, "length": n, "depth": self.depth0 + 1,
            "depth0": self.depth0,
            "previtem": self.items[i - 1] if i > 0 else _Undefined("previtem"),
            "nextitem": self.items[i + 1] if i + 1 < n else _Undefined("nextitem"),
            "cycle": self.cycle, "changed": self.changed,
        }
        if name not in values:
            raise ValueError(f"chat template: unsupported loop attribute loop.{name}")
        return values[name]

    def cycle(self, *values):
        if not values:
            raise ValueError("chat template: loop.cycle() needs at least one value")
        return values[self.index0 % len(values)]

    def changed(self, *value):
        """True on the first call, then whenever the value differs from the last call's."""
        if value != self.last_changed:
            self.last_changed = value
            return True
        return False


class _MacroDef:
    """A parsed `{% macro %}` (or a `{% call %}` block's body, named caller)."""

    def __init__(self, name, params, body):
        self.name, self.params, self.body = name, params, body
        self.names = used = _names_used(body) | _names_used([d for _, d in params])
        self.varargs, self.kwargs, self.caller = ("varargs" in used, "kwargs" in used,
                                                  "caller" in used)


class _Macro:
    """A macro bound to the scope it was defined in: like jinja2's, it sees that scope's
    variables as they are when it is called, not those of the place that calls it."""

    def __init__(self, definition, scope, anonymous=False):
        self.definition, self.scope, self.anonymous = definition, scope, anonymous

    def __repr__(self):   # as jinja2's; a call block's caller has no name there
        return "<Macro anonymous>" if self.anonymous else f"<Macro {self.definition.name!r}>"

    def __call__(self, *args, **kwargs):
        """Arguments bound as jinja2's Macro binds them: positional ones first; keyword ones
        for the parameters left (a keyword naming a parameter already given by position stays
        a keyword argument); `caller` (a call block's) where the macro reads caller, else among
        the keyword arguments where it reads kwargs."""
        d = self.definition
        names = [name for name, _ in d.params]
        scope = _Scope(self.scope)
        if d.caller and "caller" not in names:
            scope.vars["caller"] = kwargs.pop("caller", _Undefined("caller"))
        for name in names:   # a default reads the parameters before it, never outer names
            scope.vars[name] = _Undefined(name)      # that a later parameter's name hides
        for i, (name, default) in enumerate(d.params):
            if i < len(args):
                value = args[i]
            elif name in kwargs:
                value = kwargs.pop(name)
            elif default is not None:
                value = _eval(default, scope)   # defaults may read the parameters before them
            else:
                value = _Undefined(name)
            scope.vars[name] = value
        if kwargs and not d.kwargs:
            if "caller" in kwargs:
                raise ValueError(f"chat template: macro {d.name!r} is called by a {{% call %}} "
                                 "block but never calls caller()")
            raise ValueError(f"chat template: macro {d.name!r} takes no keyword argument "
                             f"{next(iter(kwargs))!r}")
        if len(args) > len(names) and not d.varargs:
            raise ValueError(f"chat template: macro {d.name!r} takes not more than "
                             f"{len(names)} argument(s)")
        scope.vars["varargs"] = tuple(args[len(names):])
        scope.vars["kwargs"] = kwargs
        out = []
        _exec(d.body, scope, out)
        return _join(out)


def _join(pieces):
    """The printed values as one string that keeps the assistant spans they carry."""
    texts, spans, n = [], [], 0
    for piece in pieces:
        text = _to_str(piece)
        spans.extend((n + a, n + b) for a, b in _spans(piece))
        texts.append(text)
        n += len(text)
    text = "".join(texts)
    return _Marked(text, spans) if spans else text


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _default(value, default="", boolean=False):
    if isinstance(value, _Undefined) or (boolean and not value):
        return default
    return value


def _first(value):
    for v in value:
        return v
    return _Undefined("first")


def _last(value):
    for v in reversed(value):   # as jinja2: not for generators
        return v
    return _Undefined("last")


def _replace(value, old, new, count=None):
    # str(...): without autoescape jinja2 replaces in plain strings, a safe one too
    return str(_to_str(value)).replace(str(old), str(new), -1 if count is None else count)


def _lower_if_str(value):
    return value.lower() if isinstance(value, str) else value


def _attrgetter(attribute, postprocess=None, default=None):
    """jinja2's make_attrgetter: `a.b.0` looks up a, then b, then index 0."""
    if attribute is None:
        parts = []
    elif isinstance(attribute, str):
        parts = [int(x) if x.isdigit() else x for x in attribute.split(".")]
    else:
        parts = [attribute]

    def get(item):
        for part in parts:
            item = _getitem(item, part)
            if default is not None and isinstance(item, _Undefined):
                item = default
        return postprocess(item) if postprocess is not None else item
    return get


def _test_of(args, kwargs):
    """select/reject's test: the named test with its arguments, or truthiness."""
    if not args:
        return bool
    name, args = args[0], args[1:]
    if name not in _TESTS:
        raise ValueError(f"chat template: unsupported test {name!r}")
    test = _TESTS[name]
    return lambda v: test(v, *args, **kwargs)


def _select_or_reject(value, get, keep, args, kwargs):
    """Jinja's select/reject/selectattr/rejectattr: lazy, and nothing at all from a false
    value (none, an undefined name), which it does not iterate."""
    if value:
        test = _test_of(args, kwargs)
        for x in value:
            if bool(test(get(x))) is keep:
                yield x


def _select(value, *args, **kwargs):
    return _select_or_reject(value, lambda x: x, True, args, kwargs)


def _reject(value, *args, **kwargs):
    return _select_or_reject(value, lambda x: x, False, args, kwargs)


def _selectattr(value, attribute, *args, **kwargs):
    return _select_or_reject(value, _attrgetter(attribute), True, args, kwargs)


def _rejectattr(value, attribute, *args, **kwargs):
    return _select_or_reject(value, _attrgetter(attribute), False, args, kwargs)


def _map(value, *args, **kwargs):
    """Jinja's map: an attribute (with a default) or a filter applied to each item; like
    select, lazy (its arguments are checked when it is iterated), and nothing from a false
    value."""
    if not value:
        return
    if not args and "attribute" in kwargs:
        get = _attrgetter(kwargs.pop("attribute"), default=kwargs.pop("default", None))
        if kwargs:
            raise ValueError(f"chat template: map got an unexpected keyword argument "
                             f"{next(iter(kwargs))!r}")
    elif not args:
        raise ValueError("chat template: map needs a filter name or attribute=")
    else:
        name, args = args[0], args[1:]
        if name not in _FILTERS:
            raise ValueError(f"chat template: unsupported filter {name!r}")
        f = _FILTERS[name]

        def get(x):
            return f(x, *args, **kwargs)
    for x in value:
        yield get(x)


def _unique(value, case_sensitive=False, attribute=None):
    get = _attrgetter(attribute, None if case_sensitive else _lower_if_str)
    seen = set()
    for item in value:
        key = get(item)
        if key not in seen:
            seen.add(key)
            yield item


def _dictsort(value, case_sensitive=False, by="key", reverse=False):
    if by not in ("key", "value"):
        raise ValueError('chat template: dictsort sorts by either "key" or "value"')
    pos = 0 if by == "key" else 1

    def key(item):
        return item[pos] if case_sensitive else _lower_if_str(item[pos])
    return sorted(value.items(), key=key, reverse=reverse)


def _sort(value, reverse=False, case_sensitive=False, attribute=None):
    """Jinja's sort, whose keys are lists (so equal items, undefined ones too, never meet <)."""
    post = None if case_sensitive else _lower_if_str
    names = attribute.split(",") if isinstance(attribute, str) else [attribute]
    getters = [_attrgetter(a, post) for a in names]
    return sorted(value, key=lambda x: [g(x) for g in getters], reverse=reverse)


def _min_or_max(pick, value, case_sensitive=False, attribute=None):
    items = list(value)
    if not items:
        return _Undefined("No aggregated item, sequence was empty.")
    return pick(items, key=_attrgetter(attribute, None if case_sensitive else _lower_if_str))


def _items(value):
    """Jinja's items: lazy, like map."""
    if isinstance(value, _Undefined):
        return
    if not isinstance(value, Mapping):
        raise ValueError("chat template: the items filter needs a mapping")
    yield from value.items()


def _reverse(value):
    """Jinja's reverse: a string reversed, else an iterator where Python's reversed() gives one
    (true even when empty, as in jinja2), else a reversed list of the items."""
    if isinstance(value, str):
        return value[::-1]
    try:
        return reversed(value)
    except TypeError:
        try:
            return list(value)[::-1]
        except TypeError:
            raise ValueError("chat template: reverse needs a string or an iterable") from None


def _sum(value, attribute=None, start=0):
    if attribute is not None:
        value = map(_attrgetter(attribute), value)
    return sum(value, start)


def _join_filter(value, d="", attribute=None):
    if attribute is not None:
        value = map(_attrgetter(attribute), value)
    return str(d).join(map(_to_str, value))


def _format_filter(v, *args, **kwargs):
    fmt, values = _to_str(v), kwargs or args
    _check_format(fmt, values, True)
    return fmt % values


def _indent(s, width=4, first=False, blank=False):
    if isinstance(s, _Markup):    # jinja2 indents a safe string's lines as safe strings
        return _Markup(_indent(str(s), width, first, blank))
    if not isinstance(width, str):
        _check_width(width * (_to_str(s).count("\n") + 2), "indent's spaces")
    indention = width if isinstance(width, str) else " " * width
    s = _to_str(s) + "\n"
    if blank:
        rv = ("\n" + indention).join(s.splitlines())
    else:
        lines = s.splitlines()
        rv = lines.pop(0)
        if lines:
            rv += "\n" + "\n".join(indention + line if line else line for line in lines)
    return indention + rv if first else rv


def _round(value, precision=0, method="common"):
    if method == "common":
        return round(value, precision)
    if method not in ("ceil", "floor"):
        raise ValueError("chat template: round's method must be common, ceil or floor")
    func = math.ceil if method == "ceil" else math.floor
    return func(value * (10 ** precision)) / (10 ** precision)


def _title(value):
    return "".join(w[0].upper() + w[1:].lower()
                   for w in re.split(r"([-\s({\[<]+)", _to_str(value)) if w)


def _attr(obj, name):
    """Jinja's attr: an attribute only, never an item (a message's "role" is not one)."""
    if isinstance(obj, (_Namespace, _Loop)) or isinstance(name, str) and not name.startswith("_") \
            and not isinstance(obj, _Undefined) and hasattr(obj, name):
        return _getattr(obj, name)
    return _Undefined(name)


def _batch(value, linecount, fill_with=None):
    """Jinja's batch: lists of `linecount` items (lazy), the last filled with fill_with."""
    _check_width(linecount, "batch's lines")
    line = []
    for item in value:
        if len(line) == linecount:
            yield line
            line = []
        line.append(item)
    if line:
        if fill_with is not None and len(line) < linecount:
            line += [fill_with] * (linecount - len(line))
        yield line


def _slice(value, slices, fill_with=None):
    """Jinja's slice: `slices` lists of the items in order (lazy), the first ones one longer,
    the others given fill_with to even them up."""
    _check_width(slices, "slice's slices")
    items = list(value)
    per, extra = divmod(len(items), slices)
    offset = 0
    for n in range(slices):
        start = offset + n * per
        if n < extra:
            offset += 1
        part = items[start:offset + (n + 1) * per]
        if fill_with is not None and n >= extra:
            part.append(fill_with)
        yield part


def _truncate(s, length=255, killwords=False, end="...", leeway=None):
    """Jinja's truncate: kept within length + leeway (5 by default), else cut at the last
    space before length - len(end) (anywhere with killwords) and `end` added."""
    leeway = 5 if leeway is None else leeway
    if length < len(end) or leeway < 0:
        raise ValueError(f"chat template: truncate needs length >= {len(end)} and leeway >= 0")
    if len(s) <= length + leeway:
        return s
    if killwords:
        return s[:length - len(end)] + end
    return s[:length - len(end)].rsplit(" ", 1)[0] + end


def _striptags(value):
    """markupsafe's striptags: comments and tags removed, whitespace runs one space, entities
    read."""
    value, parts, pos = str(_to_str(value)), [], 0
    while (start := value.find("<", pos)) != -1:
        if value.startswith("<!--", start):
            end = value.find("-->", start + 4)
            end = -1 if end == -1 else end + 3
        else:
            end = value.find(">", start)
            end = -1 if end == -1 else end + 1
        if end == -1:       # unclosed: the rest stays
            break
        parts.append(value[pos:start])
        pos = end
    if pos > 0:
        value = "".join(parts) + value[pos:]
    return html.unescape(" ".join(value.split()))


def _wordwrap(s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True):
    """Jinja's wordwrap: each line wrapped on its own (textwrap), joined by wrapstring."""
    wrapstring = "\n" if wrapstring is None else wrapstring
    return wrapstring.join(wrapstring.join(textwrap.wrap(
        line, width=width, expand_tabs=False, replace_whitespace=False,
        break_long_words=break_long_words, break_on_hyphens=break_on_hyphens))
        for line in s.splitlines())


class _Group(tuple):
    """Jinja's groupby item: (grouper, list), printed as a tuple."""

    @property
    def grouper(self):
        return self[0]

    @property
    def list(self):
        return self[1]


def _groupby(value, attribute, default=None, case_sensitive=False):
    """Jinja's groupby: the items sorted and grouped by an attribute, each group's key its
    first item's (the comparison ignoring case unless case_sensitive)."""
    key = _attrgetter(attribute, None if case_sensitive else _lower_if_str, default)
    shown = _attrgetter(attribute, default=default)
    groups = [list(items) for _, items in itertools.groupby(sorted(value, key=key), key)]
    return [_Group((shown(items[0]), items)) for items in groups]


def _url_quote(value, for_qs=False):
    """jinja2's url_quote: UTF-8 bytes percent-escaped ("/" kept but in a query, where a space
    is "+")."""
    if not isinstance(value, bytes):
        value = (value if isinstance(value, str) else str(_to_str(value))).encode("utf-8")
    quoted = quote_from_bytes(value, b"" if for_qs else b"/")
    return quoted.replace("%20", "+") if for_qs else quoted


def _urlencode(value):
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return _url_quote(value)
    items = value.items() if isinstance(value, Mapping) else value
    return "&".join(f"{_url_quote(k, True)}={_url_quote(v, True)}" for k, v in items)


def _filesizeformat(value, binary=False):
    """Jinja's filesizeformat: "1 Byte", "12 Bytes", "1.5 kB" (or KiB with binary)."""
    size, base = float(value), 1024 if binary else 1000
    prefixes = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"] if binary else \
        ["kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    if size == 1:
        return "1 Byte"
    if size < base:
        return f"{int(size)} Bytes"
    for i, prefix in enumerate(prefixes):
        unit = base ** (i + 2)
        if size < unit:
            break
    return f"{base * size / unit:.1f} {prefix}"


_ATTRIBUTE_KEY = re.compile(r"[\s/>=]", flags=re.ASCII)


def _xmlattr(d, autospace=True):
    """Jinja's xmlattr: key="value" pairs, escaped, none or undefined values left out."""
    items = []
    for key, value in d.items():
        if value is None or isinstance(value, _Undefined):
            continue
        if _ATTRIBUTE_KEY.search(key) is not None:
            raise ValueError(f"chat template: invalid character in attribute name: {key!r}")
        items.append(f'{_escape(key)}="{_escape(value)}"')
    out = " ".join(items)
    return " " + out if autospace and out else out


_FILTERS = {
    "trim": _trim,
    "length": len,
    "count": len,
    "tojson": _tojson,
    "capitalize": lambda v: _to_str(v).capitalize(),
    "upper": lambda v: _to_str(v).upper(),
    "lower": lambda v: _to_str(v).lower(),
    "title": _title,
    "default": _default,
    "d": _default,
    "join": _join_filter,
    "first": _first,
    "last": _last,
    "list": list,
    "string": _to_str,
    "int": lambda v, default=0, base=10: _int(v, default, base),
    "float": lambda v, default=0.0: _float(v, default),
    "abs": abs,
    "round": _round,
    "replace": _replace,
    "reverse": _reverse,
    "safe": lambda v: _Markup(v, _spans(v)),
    "escape": _escape,
    "e": _escape,
    "forceescape": lambda v: _escape(str(_to_str(v))),
    "items": _items,
    "select": _select,
    "reject": _reject,
    "selectattr": _selectattr,
    "rejectattr": _rejectattr,
    "map": _map,
    "unique": _unique,
    "dictsort": _dictsort,
    "sort": _sort,
    "sum": _sum,
    "min": lambda v, *a, **k: _min_or_max(min, v, *a, **k),
    "max": lambda v, *a, **k: _min_or_max(max, v, *a, **k),
    "indent": _indent,
    "center": lambda v, width=80: _bounded_method(_to_str(v), "center")(width),
    "wordcount": lambda v: len(re.findall(r"\w+", _to_str(v))),
    "format": _format_filter,
    "attr": _attr,
    "batch": _batch,
    "slice": _slice,
    "truncate": _truncate,
    "striptags": _striptags,
    "wordwrap": _wordwrap,
    "groupby": _groupby,
    "urlencode": _urlencode,
    "filesizeformat": _filesizeformat,
    "xmlattr": _xmlattr,
}


def _int(v, default=0, base=10):
    """Jinja's int: a string read in `base`, "42.23" as 42, anything unreadable as default."""
    try:
        return int(v, base) if isinstance(v, str) else int(v)
    except (TypeError, ValueError):
        try:
            return int(float(v))
        except (TypeError, ValueError, OverflowError):
            return default


def _float(v, default):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _binop(op, a, b):
    if op == "~":
        return _concat(_to_str(a), _to_str(b))
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        if isinstance(a, _Markup):
            return a + b
        if isinstance(b, _Markup):   # a _Marked's own + would not ask b first, as str's does
            return b.__radd__(a)
        return _concat(a, b)
    if op == "%" and isinstance(a, str) and isinstance(b, _Undefined):
        return a % b   # as in jinja2: Python formats it as an empty mapping or as ''
    if isinstance(a, _Undefined) or isinstance(b, _Undefined):
        raise ValueError(f"chat template: undefined value in {op!r}")
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        _check_repeat(a, b)
        return a * b
    if op == "/":
        return a / b
    if op == "//":
        return a // b
    if op == "%":
        if isinstance(a, str):
            _check_format(str.__str__(a), b, True)
        return a % b
    _check_power(a, b)
    return a ** b


# A template is code from a model's files: what it makes is bounded, so that one cannot take
# the machine's memory (jinja2 would compute 2 ** (3 ** 99) until memory runs out).
MAX_MADE = 10 ** 8          # elements of a repeated string or list
MAX_POWER_BITS = 1 << 24    # bits of an integer power


def _check_repeat(a, b):
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(n, bool) \
                and len(seq) * n > MAX_MADE:
            raise ValueError(f"chat template: repeating {len(seq)} elements {n} times makes more "
                             f"than {MAX_MADE:,}")


def _check_width(n, what):
    """A width (center, ljust, rjust, zfill, a format's width or precision) of n characters."""
    if isinstance(n, int) and not isinstance(n, bool) and n > MAX_MADE:
        raise ValueError(f"chat template: {what} of {n:,} makes more than {MAX_MADE:,} characters")


# a %-format's conversion: its width and precision (digits, or * for an argument's value)
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
# a str.format field's spec (after the colon), which may hold nested {fields}
_FORMAT_SPEC = re.compile(r"\{[^{}:]*:((?:[^{}]|\{[^{}]*\})*)\}")


def _check_format(fmt, args, printf):
    """The widths and precisions `fmt` asks for (printf: a %-format, else str.format's): the
    digits it holds, and where it takes them from the arguments (* or a nested field), the
    arguments' integers."""
    if printf:
        sizes = [x for m in _PRINTF_SPEC.finditer(fmt) for x in m.groups() if x]
    else:
        sizes = [x for spec in _FORMAT_SPEC.findall(fmt)
                 for x in (["*"] if "{" in spec else []) + re.findall(r"\d+", spec)]
    if "*" in sizes:
        values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
        sizes += [v for v in values if isinstance(v, int)]
    for size in sizes:
        _check_width(int(size) if isinstance(size, str) and size != "*" else size, "a format's width")


def _bounded_method(s, name):
    """str method `name` of `s`, its result's size checked first where an argument sets it."""
    method = getattr(s, name)
    if name in ("center", "ljust", "rjust", "zfill"):
        def call(width, *args):
            _check_width(width, f"{name}'s width")
            return method(width, *args)
    elif name == "expandtabs":
        def call(tabsize=8):
            _check_width(s.count("\t") * tabsize if isinstance(tabsize, int) else tabsize,
                         "expandtabs' spaces")
            return method(tabsize)
    elif name in ("format", "format_map"):
        def call(*args, **kwargs):
            _check_format(str.__str__(s), args[0] if name == "format_map" and args else
                          (dict(kwargs, **{str(i): a for i, a in enumerate(args)})), False)
            return method(*args, **kwargs)
    else:
        return method
    return call


def _check_power(a, b):
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and b > 0 \
            and abs(a) > 1 and b * abs(a).bit_length() > MAX_POWER_BITS:
        raise ValueError(f"chat template: {a} ** {b} has over {MAX_POWER_BITS:,} bits")


def _compare(op, a, b):
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "in":
        return a in b
    if op == "not in":
        return a not in b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


class _Scope:
    def __init__(self, parent=None):
        self.vars = {}
        self.parent = parent

    def lookup(self, name):
        s = self
        while s is not None:
            if name in s.vars:
                return s.vars[name]
            s = s.parent
        return _Undefined(name)


def _eval(node, scope):
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "name":
        return scope.lookup(node[1])
    if kind == "attr":
        return _getattr(_eval(node[1], scope), node[2])
    if kind == "item":
        return _getitem(_eval(node[1], scope), _eval(node[2], scope))
    if kind == "filter":
        _, name, arg, args, kwargs = node
        if name not in _FILTERS:
            raise ValueError(f"chat template: unsupported filter {name!r}")
        return _FILTERS[name](_eval(arg, scope), *[_eval(a, scope) for a in args],
                              **{k: _eval(v, scope) for k, v in kwargs})
    if kind == "bin":
        return _binop(node[1], _eval(node[2], scope), _eval(node[3], scope))
    if kind == "cmp":
        left = _eval(node[1], scope)
        for op, expr in node[2]:
            right = _eval(expr, scope)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    if kind == "and":
        a = _eval(node[1], scope)
        return _eval(node[2], scope) if a else a
    if kind == "or":
        a = _eval(node[1], scope)
        return a if a else _eval(node[2], scope)
    if kind == "not":
        return not _eval(node[1], scope)
    if kind == "test":
        _, name, arg, negate, args, kwargs = node
        if name not in _TESTS:
            raise ValueError(f"chat template: unsupported test 'is {name}'")
        result = _TESTS[name](_eval(arg, scope), *[_eval(a, scope) for a in args],
                              **{k: _eval(v, scope) for k, v in kwargs})
        return not result if negate else result
    if kind == "cond":
        if _eval(node[1], scope):
            return _eval(node[2], scope)
        return _eval(node[3], scope) if node[3] is not None else _Undefined("else")
    if kind == "call":
        fn = _eval(node[1], scope)
        if isinstance(fn, _Undefined):
            raise ValueError(f"chat template: unsupported or undefined function {fn.name!r}")
        if not callable(fn):
            raise ValueError(f"chat template: {fn!r} is not callable")
        return fn(*[_eval(a, scope) for a in node[2]], **{k: _eval(v, scope) for k, v in node[3]})
    if kind == "slice":
        obj = _eval(node[1], scope)
        a, b, c = (None if x is None else _eval(x, scope) for x in node[2])
        return _getitem(obj, slice(a, b, c))
    if kind == "list":
        return [_eval(x, scope) for x in node[1]]
    if kind == "tuple":
        return tuple(_eval(x, scope) for x in node[1])
    if kind == "dict":
        return {_eval(k, scope): _eval(v, scope) for k, v in node[1]}
    if kind == "neg":
        return -_eval(node[1], scope)
    if kind == "pos":
        return +_eval(node[1], scope)
    raise AssertionError(kind)


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _exec(body, scope, out):
    for stmt in body:
        kind = stmt[0]
        if kind == "text":
            out.append(stmt[1])
        elif kind == "out":
            out.append(_to_str(_eval(stmt[1], scope)))   # now: a loop prints as it is now
        elif kind == "if":
            for cond, sub in stmt[1]:
                if _eval(cond, scope):
                    _exec(sub, scope, out)
                    break
            else:
                if stmt[2] is not None:
                    _exec(stmt[2], scope, out)
        elif kind == "for":
            _exec_for(stmt, scope, out)
        elif kind == "break":
            raise _Break()
        elif kind == "continue":
            raise _Continue()
        elif kind == "set":
            _, targets, attr, value = stmt
            value = _eval(value, scope)
            if attr is not None:
                ns = scope.lookup(targets[0])
                if not isinstance(ns, _Namespace):
                    raise ValueError(f"chat template: cannot set {targets[0]}.{attr}: "
                                     f"{targets[0]} is not a namespace()")
                _check_namespace_name(attr)
                ns._attrs[attr] = value
            else:
                _bind(scope, targets, value)
        elif kind == "setblock":
            _, name, value, sub = stmt
            scope.vars[name] = _eval(value, _captured(sub, scope))
        elif kind == "with":   # values read outside, bound in a scope of the body's own
            _, assignments, sub = stmt
            values = [(name, _eval(value, scope)) for name, value in assignments]
            inner = _Scope(scope)
            inner.vars.update(values)
            _exec(sub, inner, out)
        elif kind == "filterblock":
            _, value, sub = stmt
            out.append(_eval(value, _captured(sub, scope)))
        elif kind == "generation":   # a call block in transformers: its body is a macro's
            _exec(stmt[1], _Scope(scope), out)
        elif kind == "macro":
            scope.vars[stmt[1].name] = _Macro(stmt[1], scope)
        elif kind == "callblock":
            _, call, caller = stmt
            fn = _eval(call[1], scope)
            if not isinstance(fn, _Macro):
                raise ValueError("chat template: {% call %} needs a macro")
            keywords = {k: _eval(v, scope) for k, v in call[3]}   # then caller, as jinja2
            keywords["caller"] = _Macro(caller, scope, anonymous=True)
            out.append(fn(*[_eval(a, scope) for a in call[2]], **keywords))
        else:
            raise AssertionError(kind)


def _captured(body, scope):
    """A set or filter block's body run in a scope of its own, as jinja2 runs it; that scope,
    with the text the body printed as _CAPTURED, is where the block's filters run (they see
    the body's sets, as in jinja2)."""
    inner = _Scope(scope)
    captured = []
    _exec(body, inner, captured)
    inner.vars[_CAPTURED] = _join(captured)
    return inner


def _exec_for(stmt, scope, out, depth0=0, seq=None):
    _, targets, seq_expr, cond, sub, other, recursive = stmt
    seq = _eval(seq_expr, scope) if seq is None else seq
    if isinstance(seq, dict):
        seq = list(seq)
    items = list(seq)
    if cond is not None:
        kept = []
        for item in items:
            s = _Scope(scope)
            _bind(s, targets, item)
            if _eval(cond, s):   # jinja2's filtering generator yields tuples when unpacking
                kept.append(tuple(item) if len(targets) > 1 else item)
        items = kept

    def recurse(items, depth0):
        captured = []
        _exec_for(stmt, scope, captured, depth0, items)
        return _join(captured)

    loop = _Loop(items, depth0, recurse if recursive else None)
    # jinja2 runs the else block unless an iteration reached the end of the body: after no
    # items, and also when every iteration left by {% continue %} or the first by {% break %}
    completed = False
    for i, item in enumerate(items):
        loop.index0 = i
        s = _Scope(scope)   # each iteration's {% set %}s are its own, as in jinja2
        s.vars["loop"] = loop
        _bind(s, targets, item)
        try:
            _exec(sub, s, out)
        except _Continue:
            continue
        except _Break:
            break
        completed = True
    if other is not None and not completed:
        _exec(other, _Scope(scope), out)   # its {% set %}s are its own too


def _bind(scope, targets, item):
    if len(targets) == 1:
        scope.vars[targets[0]] = item
    else:
        values = list(item)
        if len(values) != len(targets):
            raise ValueError(f"chat template: cannot unpack {len(values)} values into "
                             f"{len(targets)} variables")
        scope.vars.update(zip(targets, values))


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def _check_namespace_name(name):
    if isinstance(name, str) and name.startswith("_"):   # as transformers' namespace()
        raise ValueError("chat template: Chat templates cannot store underscore-prefixed "
                         f"attributes on a namespace, but got {name!r}. Please rename the "
                         "attribute.")


def _namespace(*args, **kwargs):
    attrs = {}
    for a in args:
        attrs.update(a)
    attrs.update(kwargs)
    for name in attrs:
        _check_namespace_name(name)
    return _Namespace(attrs)


_MAX_RANGE = 100000   # jinja2's sandbox refuses longer ranges


def _range(*args):
    r = range(*args)
    if len(r) > _MAX_RANGE:
        raise ValueError("chat template: Range too big. The sandbox blocks ranges larger than "
                         f"MAX_RANGE ({_MAX_RANGE}).")
    return r


class _DictGlobal:
    """The template's `dict`: dict(...) and dict.fromkeys(...), as transformers exposes it."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


# Names a message's reasoning may come under; transformers passes it to the template as both
# `thinking` and `reasoning_content`, whichever the caller used.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _with_reasoning_aliases(message):
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _token_text(value):
    if isinstance(value, dict):
        return value.get("content")
    return value


# ---- the template ----------------------------------------------------------------------------

class ChatTemplate:
    """One chat template, parsed once; render() as often as needed."""

    def __init__(self, source, bos_token=None, eos_token=None, unk_token=None, pad_token=None,
                 end_tokens=None, origin=None):
        """`origin`: where the template was read from (a file), named in its errors."""
        if not isinstance(source, str):
            raise ValueError(f"chat template{f' in {origin}' if origin else ''}: the template "
                             "must be a string")
        self.source = source
        self.origin = origin
        try:
            self.body = _parse(_lex(source))
            _refuse_unknown(self.body)
        except ValueError as e:
            if origin is None:
                raise
            raise ValueError(f"{origin}: {e}") from None
        self._names_read = frozenset(_names_used(self.body))
        self.special = {"bos_token": _token_text(bos_token), "eos_token": _token_text(eos_token),
                        "unk_token": _token_text(unk_token), "pad_token": _token_text(pad_token)}
        if end_tokens is None:
            end_tokens = list(DEFAULT_END_TOKENS)
            eos = self.special["eos_token"]
            if eos and eos not in end_tokens:
                end_tokens.append(eos)
        self.end_tokens = sorted(set(end_tokens), key=len, reverse=True)

    @classmethod
    def from_config(cls, config, template_name="default", **kwargs):
        """From tokenizer_config.json's contents (a dict)."""
        where = kwargs.get("origin") or "tokenizer_config.json"
        template = config.get("chat_template")
        if isinstance(template, list):   # named templates: [{"name": ..., "template": ...}]
            if not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                       and isinstance(t.get("template"), str) for t in template):
                raise ValueError(f"{where}: a list of chat templates must hold "
                                 "{\"name\": str, \"template\": str} objects")
            named = {t["name"]: t["template"] for t in template}
            if template_name not in named:
                raise ValueError(f"chat template: no template named {template_name!r} "
                                 f"(have {sorted(named)})")
            template = named[template_name]
        if template is None:
            raise ValueError("chat template: tokenizer_config.json has no chat_template")
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            token = config.get(key)
            if not (token is None or isinstance(token, str)
                    or isinstance(token, dict) and isinstance(token.get("content"), str)):
                raise ValueError(f"{where}: \"{key}\" must be a string or an object with a "
                                 f"string \"content\", got {token!r:.60}")
            kwargs.setdefault(key, token)
        return cls(template, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """From a checkpoint directory: tokenizer_config.json, with the template taken from
        chat_template.jinja when that file is there (as newer checkpoints save it)."""
        config_path = os.path.join(path, "tokenizer_config.json")
        config = read_json_object(config_path)
        kwargs.setdefault("origin", config_path)
        jinja_path = os.path.join(path, "chat_template.jinja")
        if os.path.exists(jinja_path):
            config = dict(config, chat_template=read_utf8(jinja_path))
            kwargs["origin"] = jinja_path
        return cls.from_config(config, **kwargs)

    def _run(self, messages, add_generation_prompt, tools, documents, extra):
        chat = []
        for message in messages:
            if not isinstance(message, dict):
                raise TypeError(f"Chat messages should be dicts, got {message!r}")
            message = _with_reasoning_aliases(dict(message))
            if message.get("role") == "assistant" and isinstance(message.get("content"), str):
                message["content"] = _Marked(message["content"], [(0, len(message["content"]))])
            chat.append(message)
        scope = _Scope()

        def raise_exception(message):
            raise TemplateError(message, self.origin)

        scope.vars.update(raise_exception=raise_exception, strftime_now=_strftime_now,
                          namespace=_namespace, range=_range, dict=_DictGlobal())
        scope.vars.update(self.special)
        scope.vars.update(extra)
        scope.vars.update(messages=chat, add_generation_prompt=add_generation_prompt,
                          tools=tools, documents=documents)
        out = []
        where = f" ({self.origin})" if self.origin else ""
        try:
            _exec(self.body, _Scope(scope), out)
        except RecursionError:
            raise ValueError(f"chat template{where}: calls nested too deeply (a macro that "
                             "calls itself without end?)") from None
        except (TypeError, LookupError, ArithmeticError, AttributeError) as e:
            # the template did something the conversation does not allow (jinja2 fails
            # alike), as `'\n' + message.content` where the content is None
            raise ValueError(f"chat template{where} failed on this conversation: "
                             f"{type(e).__name__}: {e}") from None
        text = _join(out)
        return str.__str__(text), list(_spans(text))

    def reads(self, name):
        """Whether the template reads variable `name` anywhere (Qwen3's enable_thinking...)."""
        return name in self._names_read

    def render(self, messages, add_generation_prompt=False, tools=None, documents=None, **kwargs):
        """The text transformers' apply_chat_template(..., tokenize=False) gives."""
        return self._run(messages, add_generation_prompt, tools, documents, kwargs)[0]

    def render_with_spans(self, messages, add_generation_prompt=False, tools=None,
                          documents=None, **kwargs):
        """(text, spans): spans are sorted, non-overlapping (start, end) character ranges of
        the assistant contents in text, each extended over an end-of-turn token
        (self.end_tokens) that immediately follows it."""
        text, raw = self._run(messages, add_generation_prompt, tools, documents, kwargs)
        spans = []
        for a, b in sorted(set(raw)):
            add_turn_span(spans, text, a, b, self.end_tokens)
        return text, spans

    def assistant_mask(self, messages, **kwargs):
        """Per character of the rendered text: True inside an assistant span."""
        text, spans = self.render_with_spans(messages, **kwargs)
        mask = [False] * len(text)
        for a, b in spans:
            mask[a:b] = [True] * (b - a)
        return mask
