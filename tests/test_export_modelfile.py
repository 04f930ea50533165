"""Ollama Modelfiles from chat templates. The TEMPLATE is executed here by a small evaluator of
the part of Go's text/template it uses (range over .Messages with $i, variables, if / else if,
eq ne and not len slice, .Role .Content, string literals) on conversations, and must print what
transformers' Jinja rendering (py_engine's, tested against transformers in
tests/test_chat_template.py) prints: Ollama itself and Go are not available here."""

import re

import pytest

from test_chat_template import TEMPLATES
from tiny_chat import tiny_chat_dir
from py_engine.export.modelfile import RoleParts, go_template, modelfile
from py_engine.tokenizers.chat_template import ChatTemplate


# --- a Go text/template subset --------------------------------------------------------------------

def _parse_template(text):
    """[("text", s) | ("action", source)]: Go's lexer without trim markers."""
    out, pos = [], 0
    for m in re.finditer(r"\{\{(.*?)\}\}", text, re.S):
        if m.start() > pos:
            out.append(("text", text[pos:m.start()]))
        out.append(("action", m.group(1).strip()))
        pos = m.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def _tokens(source):
    return re.findall(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+', source)


def _expr(tokens, env):
    """Evaluate a pipeline of function calls and operands (prefix, Go's argument syntax)."""
    def operand(i):
        t = tokens[i]
        if t == "(":
            value, i = call(i + 1)
            assert tokens[i] == ")"
            return value, i + 1
        if t.startswith('"'):
            return t[1:-1].replace('\\"', '"').replace("\\\\", "\\"), i + 1
        if t.isdigit():
            return int(t), i + 1
        if t == "$.Messages":
            return env["$"]["Messages"], i + 1
        if t.startswith("$"):
            return env[t], i + 1
        if t.startswith("."):
            return env["."][t[1:]], i + 1
        raise AssertionError(f"unknown operand {t}")

    functions = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "not": lambda a: not a,
                 "and": lambda *a: all(a), "len": len, "slice": lambda s, i: s[i:]}

    def call(i):
        if tokens[i] in functions:
            fn, args, i = functions[tokens[i]], [], i + 1
            while i < len(tokens) and tokens[i] != ")":
                value, i = operand(i)
                args.append(value)
            return fn(*args), i
        return operand(i)

    value, i = call(0)
    assert i == len(tokens), tokens
    return value


def execute(text, messages):
    items, out = _parse_template(text), []

    def block(k, env, emit):
        while k < len(items):
            kind, src = items[k]
            if kind == "text":
                if emit:
                    out.append(src)
                k += 1
                continue
            words = src.split()
            if words[0] in ("end", "else"):
                return k
            if words[0] == "range":
                names, over = src[len("range"):].split(":=")
                index, value = [n.strip() for n in names.split(",")]
                seq = _expr(_tokens(over), env)
                end = k + 1
                for i, item in enumerate(seq if emit else [None]):
                    end = block(k + 1, dict(env, **{index: i, value: item, ".": item}),
                                emit and item is not None)
                k = end + 1
            elif words[0] == "if":
                taken = emit and bool(_expr(_tokens(src[2:]), env))
                done = taken
                k = block(k + 1, env, taken)
                while items[k][1] != "end":
                    rest = items[k][1][len("else"):].strip()
                    cond = True if not rest else (not done and emit and
                                                  bool(_expr(_tokens(rest[2:]), env)))
                    cond = cond and not done and emit
                    done = done or cond
                    k = block(k + 1, env, cond)
                k += 1
            elif ":=" in src:
                name, expr = src.split(":=")
                if emit:
                    env[name.strip()] = _expr(_tokens(expr), env)
                k += 1
            else:
                if emit:
                    out.append(str(_expr(_tokens(src), env)))
                k += 1
        return k

    root = {"Messages": messages}
    block(0, {"$": root, ".": root}, True)
    return "".join(out)


# --- the tests -------------------------------------------------------------------------------------

CONVERSATIONS = [
    [("user", "Hi there")],
    [("system", "Be brief."), ("user", "What is 2+2?")],
    [("user", "a"), ("assistant", "b"), ("user", "c")],
    [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"),
     ("user", "e {{ not a template }}")],
    [("user", "Continue:"), ("assistant", "Once upon")],
]


@pytest.mark.parametrize("name", sorted(n for n in TEMPLATES if n != "llama2"))
def test_go_template_prints_what_the_chat_template_renders(name):
    source, bos, eos, _, _ = TEMPLATES[name]
    template = ChatTemplate(source, bos_token=bos, eos_token=eos)
    parts = RoleParts(template)
    parts.check()
    text = go_template(parts)
    for conversation in CONVERSATIONS:
        messages = [{"Role": r, "Content": c} for r, c in conversation]
        jinja = [{"role": r, "content": c} for r, c in conversation]
        continuing = conversation[-1][0] == "assistant"
        want = template.render(jinja, add_generation_prompt=not continuing)
        if continuing:      # Ollama continues a last assistant turn: its closing is not printed
            want = want[:len(want) - len(parts.post["assistant"])]
        assert execute(text, messages) == want, conversation


def test_modelfile_of_a_chat_checkpoint(tmp_path):
    model = tiny_chat_dir(tmp_path, family="llama")
    warnings = []
    text = modelfile(model, "model.gguf", warn=warnings.append)
    assert not warnings
    lines = text.splitlines()
    assert lines[0] == "FROM ./model.gguf"
    assert lines[1].startswith('TEMPLATE """')
    assert lines[-2:] == ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    template = text[text.index('"""') + 3:text.rindex('"""')]
    chat = ChatTemplate.from_pretrained(model)
    for conversation in CONVERSATIONS[:4]:
        got = execute(template, [{"Role": r, "Content": c} for r, c in conversation])
        assert got == chat.render([{"role": r, "content": c} for r, c in conversation],
                                  add_generation_prompt=True)


def test_bos_printed_by_the_template_is_left_to_llama_cpp(tmp_path):
    source, bos, eos, _, _ = TEMPLATES["llama3"]
    model = tiny_chat_dir(tmp_path, family="llama")
    config = (model / "tokenizer_config.json").read_text()
    (model / "chat_template.jinja").write_text(source)
    (model / "tokenizer_config.json").write_text(config.replace('"bos_token": null',
                                                                f'"bos_token": "{bos}"'))
    with_bos = modelfile(model, "m.gguf", add_bos=False)
    without = modelfile(model, "m.gguf", add_bos=True)
    assert 'TEMPLATE """<|begin_of_text|>{{' in with_bos
    assert 'TEMPLATE """{{' in without


def test_a_template_that_is_not_per_role_gets_no_template(tmp_path):
    source, bos, eos, _, _ = TEMPLATES["llama2"]
    model = tiny_chat_dir(tmp_path, family="llama")
    (model / "chat_template.jinja").write_text(source)
    config = (model / "tokenizer_config.json").read_text()
    (model / "tokenizer_config.json").write_text(config.replace('"bos_token": null',
                                                                f'"bos_token": "{bos}"'))
    warnings = []
    text = modelfile(model, "model.gguf", warn=warnings.append)
    assert text == "FROM ./model.gguf\n"
    assert len(warnings) == 1 and "give one by hand" in warnings[0]
