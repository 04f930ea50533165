"""Ollama's Modelfile for an exported GGUF: FROM the file, a TEMPLATE (a Go text/template over
Ollama's .Messages) and stop parameters derived from the checkpoint's chat template (a default
system turn the template adds when a conversation has none is in the TEMPLATE too).

A Jinja chat template cannot be translated in general, so it is measured instead: rendered (with
py_engine's Jinja interpreter, which renders as transformers does) on conversations whose
contents are markers, the text around each role's content is read off, and the Go template
prints exactly that text around each message, the generation prompt after the last one. The
result is then checked: the Go template's output, as it prints it, must equal the Jinja
rendering of every conversation shape (a user turn; user, assistant, user; with a system
prompt; with and without the generation prompt). Templates whose text around a message depends
on more than its role (Llama 2's system prompt inside the first user turn) fail that check and
get no TEMPLATE, with a warning.

    text = modelfile(model_dir, "model.gguf", warn=print)
"""

from ..tokenizers.chat_template import ChatTemplate
from .gguf_vocab import chat_template_text

MARKERS = {"system": "SYSTEMmarker7d1", "user": "USERmarker7d1", "assistant": "ASSISTANTmarker7d1"}
SHAPES = ([("user", 1)], [("user", 1), ("assistant", 1), ("user", 2)],
          [("system", 1), ("user", 1)], [("system", 1), ("user", 1), ("assistant", 1), ("user", 2)],
          [("user", 1), ("assistant", 1)], [("system", 1), ("user", 1), ("assistant", 1)],
          [("user", 1), ("assistant", 1), ("user", 2), ("assistant", 2), ("user", 3)])


class TemplateShapeError(ValueError):
    """A chat template whose text around a message is not a function of its role alone."""


def _content(role, k):
    return f"{MARKERS[role]}{k}"


def _messages(shape):
    return [{"role": role, "content": _content(role, k)} for role, k in shape]


def _between(text, before, after):
    """The text between the end of marker `before` (or the start) and marker `after` (or the
    end)."""
    start = 0 if before is None else text.index(before) + len(before)
    end = len(text) if after is None else text.index(after, start)
    return text[start:end]


class RoleParts:
    """The text a template prints around each role's content: pre[role], post[role], the
    generation prompt, what starts the conversation (a BOS the template prints) and a default
    system prompt it adds when the conversation has none."""

    def __init__(self, template):
        self.template = template
        render = self.render
        u1, a1, u2 = _content("user", 1), _content("assistant", 1), _content("user", 2)
        plain = render([("user", 1), ("assistant", 1)], False)
        self.post = {"assistant": _between(plain, a1, None)}
        turns = render([("user", 1), ("assistant", 1), ("user", 2)], True)
        between_ua = _between(turns, u1, a1)
        if _between(turns, u2, None) != between_ua:
            raise TemplateShapeError("the generation prompt is not how an assistant turn opens")
        # A user turn closes as an assistant turn does when the text says so (ChatML's
        # <|im_end|>, Llama 3's <|eot_id|>); the rest opens the assistant's turn.
        close = self.post["assistant"]
        self.post["user"] = close if close and between_ua.startswith(close) else ""
        self.generation = between_ua[len(self.post["user"]):]
        self.pre = {"assistant": self.generation}
        between_au = _between(turns, a1, u2)
        if not between_au.startswith(self.post["assistant"]):
            raise TemplateShapeError("an assistant turn ends differently before a user turn")
        self.pre["user"] = between_au[len(self.post["assistant"]):]
        self.start = _between(turns, None, u1)
        if not self.start.endswith(self.pre["user"]):
            raise TemplateShapeError("the first user turn opens differently from the others")
        self.start = self.start[:-len(self.pre["user"])] if self.pre["user"] else self.start
        self.default_system = None
        try:
            with_system = render([("system", 1), ("user", 1)], True)
        except ValueError:      # raise_exception: the template takes no system prompt
            self.pre["system"] = self.post["system"] = None
            return
        s1 = _content("system", 1)
        before, after = _between(with_system, None, s1), _between(with_system, s1, u1)
        if not after.endswith(self.pre["user"]):
            raise TemplateShapeError("a user turn opens differently after a system prompt")
        self.post["system"] = after[:-len(self.pre["user"])] if self.pre["user"] else after
        bos = template.special.get("bos_token") or ""
        self.bos = bos if bos and before.startswith(bos) and self.start.startswith(bos) else ""
        self.pre["system"] = before[len(self.bos):]
        added = self.start[len(self.bos):]
        # A system block the template adds by itself when none is given: its default prompt.
        if added:
            if not (added.startswith(self.pre["system"]) and added.endswith(self.post["system"])):
                raise TemplateShapeError("the conversation starts with text that is no system turn")
            self.default_system = added[len(self.pre["system"]):len(added) - len(self.post["system"])]
        self.start = self.bos

    def render(self, shape, add_generation_prompt):
        return self.template.render(_messages(shape), add_generation_prompt=add_generation_prompt)

    def as_go_prints(self, shape, add_generation_prompt):
        """What the Go template prints for a conversation: the template's default system turn
        when the conversation has none, each message, the generation prompt after a last
        message that is not the assistant's (whose turn is left open, to be continued)."""
        messages = list(shape)
        out = [self.start]
        if self.default_system is not None and messages[0][0] != "system":
            out += [self.pre["system"], self.default_system, self.post["system"]]
        for k, (role, n) in enumerate(messages):
            last = k == len(messages) - 1
            out += [self.pre[role], _content(role, n)]
            if not (last and role == "assistant"):
                out.append(self.post[role])
            if last and role != "assistant" and add_generation_prompt:
                out.append(self.generation)
        return "".join(out)

    def check(self):
        """The Go template must print what the Jinja template renders, for every shape."""
        for shape in SHAPES:
            if self.pre.get("system") is None and shape[0][0] == "system":
                continue
            # Ollama prompts for a reply after a user turn, and continues a last assistant
            # turn (left open: Jinja's rendering without its closing text).
            gen = shape[-1][0] != "assistant"
            want = self.render(shape, gen)
            if not gen:
                want = want[:len(want) - len(self.post["assistant"])]
            if self.as_go_prints(shape, gen) != want:
                raise TemplateShapeError(f"the text around a message depends on more than its "
                                         f"role ({[r for r, _ in shape]})")


def _common_suffix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n:]


def _literal(text):
    """Text as Go template source: printed as is, "{{" escaped."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(parts):
    """The TEMPLATE: one line (no trim markers, so every character prints as measured)."""
    branches = []
    for role in ("system", "user", "assistant"):
        if parts.pre.get(role) is None:
            continue
        post = _literal(parts.post[role])
        if role == "assistant":
            post = f"{{{{ if not $last }}}}{post}{{{{ end }}}}"
        branches.append(f'eq .Role "{role}" }}}}{_literal(parts.pre[role])}{{{{ .Content }}}}{post}')
    body = "{{ if " + "{{ else if ".join(branches) + "{{ end }}"
    default = ""
    if parts.default_system is not None:
        default = (f'{{{{ if and (eq $i 0) (ne .Role "system") }}}}{_literal(parts.pre["system"])}'
                   f'{_literal(parts.default_system)}{_literal(parts.post["system"])}{{{{ end }}}}')
    return (f"{_literal(parts.start)}{{{{ range $i, $_ := .Messages }}}}"
            f"{{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}{default}{body}"
            f'{{{{ if and $last (ne .Role "assistant") }}}}{_literal(parts.generation)}'
            "{{ end }}{{ end }}")


def stop_words(parts, template):
    """Texts that end a reply: the end-of-turn tokens the assistant's turn closes with, the
    EOS token, and the special token that opens a user turn."""
    stops = []
    closing = parts.post["assistant"]
    for token in template.end_tokens:
        if token in closing and token not in stops:
            stops.append(token)
    eos = template.special.get("eos_token")
    if eos and eos not in stops:
        stops.append(eos)
    opening = parts.pre["user"].strip()
    for token in template.end_tokens + ["<|im_start|>", "<|start_header_id|>", "<|user|>"]:
        if opening.startswith(token) and token not in stops:
            stops.append(token)
    return stops


def _quoted(text):
    if '"""' in text:
        raise TemplateShapeError('the text holds """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile(model_dir, gguf_file, warn=None, add_bos=True):
    """The Modelfile's text. Without a chat template (or with one it cannot express; `warn`
    is told why) it has FROM only. `add_bos`: llama.cpp adds the BOS token itself, so a BOS
    the template prints is left out."""
    lines = [f"FROM ./{gguf_file}"]
    source = chat_template_text(model_dir)
    if source is None:
        return "\n".join(lines) + "\n"
    template = ChatTemplate.from_pretrained(model_dir)
    try:
        parts = RoleParts(template)
        parts.check()
    except (ValueError, TypeError) as e:     # TemplateShapeError, or a template that fails
        if warn is not None:
            warn(f"the chat template cannot be written as an Ollama TEMPLATE ({e}); the "
                 "Modelfile has none: give one by hand")
        return "\n".join(lines) + "\n"
    bos = template.special.get("bos_token")
    if add_bos and bos and parts.start.startswith(bos):
        parts.start = parts.start[len(bos):]
    lines.append(f"TEMPLATE {_quoted(go_template(parts))}")
    for stop in stop_words(parts, template):
        lines.append(f"PARAMETER stop {_go_string(stop)}")
    return "\n".join(lines) + "\n"


def _go_string(text):
    """A Modelfile parameter value in double quotes (backslash and quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
