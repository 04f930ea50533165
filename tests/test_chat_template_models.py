"""ChatTemplate on the chat templates of real checkpoint families, against transformers.

The templates (tests/data/chat_templates/) are written as Mistral v0.3 (tools), Gemma 2 and 3,
Phi-3 and Phi-3.5, Llama 3.1 (built-in and custom tools) and 3.2 (tools, strftime_now date),
Qwen 2.5 (tools), Qwen3 (tools, reasoning, enable_thinking), DeepSeek V2 and R1 (tool calls, </think>) and Hermes 2/3 (tool use through a
recursive macro) write theirs. Each is rendered by transformers' own render function (its
Jinja2 environment: sandbox, trim_blocks, lstrip_blocks, loop controls, its tojson, its
globals) and by ours, for hand-picked conversations and for random ones drawn fresh on every
run (the seed is in the failure message): system message or not, tools or not, tool calls
(one or several, arguments as objects or JSON text, call ids of the right length or not) and
tool results, reasoning, content given as a list of parts, roles out of order, unknown roles,
add_generation_prompt both ways. Every render must be equal, or both must refuse: with the
template's own message (our TemplateError.message equal to the text jinja2 raised) when the
template calls raise_exception, with an error of ours when jinja2 fails otherwise.

Assistant spans: each assistant message the template prints as text has exactly one span,
its content as printed (trimmed, or cut after </think>, where the template does so) followed
by the end-of-turn token.

Run: .venv/bin/python -m pytest tests/test_chat_template_models.py -q
"""

import json
import random

import pytest

from chat_template_fixtures import Refused, model_template, reference_render
from py_engine.tokenizers.chat_template import ChatTemplate, TemplateError

DEEPSEEK_BOS, DEEPSEEK_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

# name: (fixture, bos_token, eos_token, end-of-turn text after an assistant's content)
MODELS = {
    "mistral-v0.3": ("mistral-v0.3-tools", "<s>", "</s>", "</s>"),
    "gemma-2": ("gemma-2", "<bos>", "<eos>", "<end_of_turn>"),
    "gemma-3": ("gemma-3", "<bos>", "<eos>", "<end_of_turn>"),
    "phi-3": ("phi-3", "<s>", "<|endoftext|>", "<|end|>"),
    "phi-3.5": ("phi-3.5", "<s>", "<|endoftext|>", "<|end|>"),
    "llama-3.1": ("llama-3.1-tools", "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "llama-3.2": ("llama-3.2-tools", "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "qwen-2.5": ("qwen-2.5-tools", None, "<|im_end|>", "<|im_end|>"),
    "qwen-3": ("qwen-3", None, "<|im_end|>", "<|im_end|>"),
    "deepseek-v2": ("deepseek-v2", DEEPSEEK_BOS, DEEPSEEK_EOS, DEEPSEEK_EOS),
    "deepseek-r1": ("deepseek-r1", DEEPSEEK_BOS, DEEPSEEK_EOS, DEEPSEEK_EOS),
    "hermes": ("hermes-tool-use", "<|begin_of_text|>", "<|im_end|>", "<|im_end|>"),
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city — ünïcode",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "  City name  "},
        "unit": {"type": "string", "enum": ["c", "f"], "description": "Unit"}},
        "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "description": "What to look for"},
        "limit": {"type": "integer", "description": "At most this many"},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags"},
        "filters": {"type": "object", "additionalProperties": {"type": "number"},
                    "description": "Numeric filters"},
        "exact": {"type": ["boolean", "integer"], "description": "Exact match"},
        "extra": {"description": "Anything"}},
        "required": ["query"]},
    "return": {"type": "array", "items": {"type": "object"}, "description": "The hits"}}}
NO_ARGS = {"type": "function", "function": {
    "name": "now", "description": "The time", "parameters": {"type": "object",
                                                          "properties": {}}}}
TOOL_POOL = [WEATHER, SEARCH, NO_ARGS]
BUILTIN_TOOLS = ["brave_search", "wolfram_alpha", "code_interpreter"]

CONTENTS = [
    "Hello!", "", "  padded  ", "\nnewlines around\n", "multi\nline", "unicode: héllo 你好 🚀",
    "{{ not a tag }} {% if x %}", "quotes ' \" and \\ backslash", "<|im_end|> </s> <eos>",
    "What is 2 + 2?", "It is 4.",
]
ANSWERS = CONTENTS + ["<think>\nLet me think.\n</think>\n\nThe answer.", "a</think>b</think>c"]


def _call_id(rng, good=True):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(9 if good else rng.choice([3, 12])))


def _tool_call(rng, tool, json_text, good_id=True, builtin=None):
    name = builtin or tool["function"]["name"]
    args = {"query": "weather in Paris"} if builtin else \
        {"city": rng.choice(["Paris", "Zürich"]), "unit": "c"}
    return {"id": _call_id(rng, good_id), "type": "function",
            "function": {"name": name, "arguments": json.dumps(args) if json_text else args}}


def random_conversation(rng, with_tools=0.5, list_content=0.02, system=0.5):
    """(messages, tools, extra template variables): mostly well-formed, sometimes not.
    with_tools: how often tools are given; list_content: how often a user message's content is
    a list of parts (which only Gemma 3's template prints, the others fail on); system: how
    often there is a system message."""
    tools = rng.sample(TOOL_POOL, rng.randint(1, 3)) if rng.random() < with_tools else None
    extra = {}
    if rng.random() < 0.5:
        extra["date_string"] = rng.choice(["01 Jan 2025", "29 Feb 2024"])
    builtin = rng.random() < 0.15
    if builtin:
        extra["builtin_tools"] = BUILTIN_TOOLS
    json_text = rng.random() < 0.5
    messages = []
    if rng.random() < system:
        messages.append({"role": "system", "content": rng.choice(["Be brief.", "", "  Sys  "])})
    for turn in range(rng.randint(1, 4)):
        user = rng.choice(CONTENTS)
        if rng.random() < list_content:
            user = [{"type": "image"}, {"type": "text", "text": user}]
        messages.append({"role": "user", "content": user})
        if rng.random() < 0.35 and tools:
            calls = [_tool_call(rng, rng.choice(tools), json_text, rng.random() < 0.9,
                                rng.choice(BUILTIN_TOOLS[:2]) if builtin else None)
                     for _ in range(rng.choice([1, 1, 2]))]
            messages.append({"role": "assistant", "content": rng.choice([None, "", "Checking."]),
                             "tool_calls": calls})
            for call in calls:
                messages.append({"role": "tool", "name": call["function"]["name"],
                                 "tool_call_id": call["id"] if rng.random() < 0.9 else "x",
                                 "content": rng.choice(["22 °C", '{"temp": 22}', ""])})
        if turn < 3 or rng.random() < 0.5:
            answer = {"role": "assistant", "content": rng.choice(ANSWERS)}
            if rng.random() < 0.15:
                answer["reasoning_content"] = "Thinking it over."
            messages.append(answer)
    r = rng.random()
    if r < 0.08 and len(messages) > 1:        # two turns of one role in a row
        i = rng.randrange(len(messages) - 1)
        messages.insert(i, dict(messages[i]))
    elif r < 0.12:
        messages.insert(0, {"role": "assistant", "content": "I speak first"})
    elif r < 0.15:
        messages.append({"role": "narrator", "content": "Meanwhile..."})
    return messages, tools, extra


# How random conversations are drawn where the template asks for something else: Hermes' always
# lists tools, Gemma 3's takes content as a list of parts.
# Gemma 2's template refuses a system message and tool turns (roles must alternate): fewer of
# them, so that enough of its draws render.
DRAWS = {"hermes": {"with_tools": 0.95}, "gemma-3": {"list_content": 0.3},
         "gemma-2": {"system": 0.2, "with_tools": 0.25}}


# Hand-picked conversations every template sees, and the refusal each template must give.
PLAIN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         {"role": "user", "content": "Bye"}]
WITH_SYSTEM = [{"role": "system", "content": "You are terse."}] + PLAIN
TOOL_CHAT = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call00001", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "name": "get_weather", "tool_call_id": "call00001", "content": "22 °C"},
    {"role": "assistant", "content": "It is 22 °C in Paris."},
]
TWO_USERS = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"}]
ASSISTANT_FIRST = [{"role": "assistant", "content": "I speak first"},
                   {"role": "user", "content": "Hi"}]
BAD_CALL_ID = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "tool_calls": [
                   {"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}]
TWO_CALLS = [{"role": "user", "content": "Weather in Paris and Rome?"},
             {"role": "assistant", "tool_calls": [
                 {"type": "function", "function": {"name": "get_weather",
                                                   "arguments": {"city": c}}}
                 for c in ("Paris", "Rome")]}]
FIXED = [(PLAIN, None), (WITH_SYSTEM, None), (TOOL_CHAT, None), (TOOL_CHAT, [WEATHER]),
         (WITH_SYSTEM, TOOL_POOL), (TWO_USERS, None), (ASSISTANT_FIRST, None),
         (BAD_CALL_ID, [WEATHER]), (TWO_CALLS, [WEATHER])]

ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
REFUSALS = {   # model: [(messages, tools, the template's message)]
    "mistral-v0.3": [
        (TWO_USERS, None, "After the optional system message, conversation roles must "
                          "alternate user/assistant/user/assistant/..."),
        (BAD_CALL_ID, [WEATHER], "Tool call IDs should be alphanumeric strings with length 9!")],
    "gemma-2": [(TWO_USERS, None, ALTERNATE), (WITH_SYSTEM, None, "System role not supported")],
    "gemma-3": [(ASSISTANT_FIRST, None, ALTERNATE)],
    "llama-3.1": [(TWO_CALLS, [WEATHER], "This model only supports single tool-calls at once!")],
    "llama-3.2": [(TWO_CALLS, [WEATHER], "This model only supports single tool-calls at once!")],
}


def _ours(name):
    fixture, bos, eos, _ = MODELS[name]
    return ChatTemplate(model_template(fixture), bos_token=bos, eos_token=eos,
                        origin=f"{fixture}.jinja")


def _reference(name, messages, agp, tools, extra):
    fixture, bos, eos, _ = MODELS[name]
    specials = {"bos_token": bos, "eos_token": eos}
    return reference_render(model_template(fixture), messages, agp, tools,
                            **{k: v for k, v in specials.items() if v is not None}, **extra)


def _expected_spans(name, messages):
    """The text each assistant message's span must cover, in order."""
    end = MODELS[name][3]
    out = []
    after_tool = False
    for i, m in enumerate(messages):
        content, calls = m.get("content"), m.get("tool_calls")
        if m["role"] == "assistant" and isinstance(content, str):
            if name == "qwen-3":
                out += _qwen3_spans(messages, i, end)
            elif name == "deepseek-r1":
                if not after_tool:
                    content = content.split("</think>")[-1]
                out.append(content + end)
            elif calls is not None and name in ("mistral-v0.3", "llama-3.1", "llama-3.2",
                                                "hermes"):
                pass   # printed through its tool calls only
            elif calls and name == "qwen-2.5":
                if content:
                    out.append(content)   # followed by the tool calls, not by <|im_end|>
            elif name in ("mistral-v0.3", "gemma-2", "gemma-3", "llama-3.1", "llama-3.2"):
                out.append(content.strip() + end)
            else:
                out.append(content + end)
        # DeepSeek-R1 prints whole only the first assistant message after tool outputs: any
        # user or assistant message ends that state.
        after_tool = m["role"] == "tool" or (after_tool and m["role"] not in ("user", "assistant"))
    return out


def _qwen3_spans(messages, i, end):
    """Qwen3 prints the reasoning of an assistant message after the last real user query (the
    last one, or one with reasoning) between <think> tags: the reasoning cut from its content
    is a span of its own, the answer after </think> another; tool calls follow the answer
    instead of <|im_end|>."""
    def query(m):
        c = m.get("content")
        return m["role"] == "user" and isinstance(c, str) and \
            not (c.startswith("<tool_response>") and c.endswith("</tool_response>"))

    last_query = max([k for k, m in enumerate(messages) if query(m)], default=len(messages) - 1)
    m = messages[i]
    content, calls = m["content"], m.get("tool_calls")
    reasoning, from_content = "", False
    if isinstance(m.get("reasoning_content"), str):
        reasoning = m["reasoning_content"]
    elif "</think>" in content:
        reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
        content, from_content = content.split("</think>")[-1].lstrip("\n"), True
    out = []
    if i > last_query and (i == len(messages) - 1 or reasoning):
        if from_content and reasoning.strip("\n"):
            out.append(reasoning.strip("\n"))
        content = content.lstrip("\n")
    if not calls:
        out.append(content + end)
    elif content:
        out.append(content)
    return out


def _check(name, tpl, messages, agp, tools, extra, where):
    """One conversation through both; returns 'equal' or 'refused'."""
    try:
        ref = _reference(name, messages, agp, tools, extra)
    except Refused as e:
        with pytest.raises(TemplateError) as ours:
            tpl.render(messages, add_generation_prompt=agp, tools=tools, **extra)
        assert ours.value.message == e.message, where
        return "refused"
    except Exception as e:   # jinja2 fails for another reason: ours must fail too, saying why
        with pytest.raises(ValueError, match="chat template") as ours:
            tpl.render(messages, add_generation_prompt=agp, tools=tools, **extra)
        assert not isinstance(ours.value, TemplateError), where
        return f"failed: {type(e).__name__}"
    text, spans = tpl.render_with_spans(messages, add_generation_prompt=agp, tools=tools,
                                        **extra)
    assert text == ref, where
    assert tpl.render(messages, add_generation_prompt=agp, tools=tools, **extra) == ref, where
    assert all(0 <= a <= b <= len(text) for a, b in spans), where
    assert all(b0 <= a1 for (_, b0), (a1, _) in zip(spans, spans[1:])), where
    if name != "llama-3.1" or "builtin_tools" not in extra:
        assert [text[a:b] for a, b in spans] == _expected_spans(name, messages), where
    return "equal"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fixed_conversations(name):
    tpl = _ours(name)
    outcomes = []
    for messages, tools in FIXED:
        for extra in ({}, {"date_string": "26 Jul 2024"}):
            for agp in (False, True):
                where = (name, messages, tools, extra, agp)
                outcomes.append(_check(name, tpl, messages, agp, tools, extra, where))
    assert outcomes.count("equal") >= 8, outcomes
    for messages, tools, message in REFUSALS.get(name, []):
        with pytest.raises(Refused, match="^" + message.replace(".", r"\.") + "$"):
            _reference(name, messages, False, tools, {})
        with pytest.raises(TemplateError) as e:
            tpl.render(messages, tools=tools)
        assert e.value.message == message
        assert f"{MODELS[name][0]}.jinja" in str(e.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_random_conversations(name):
    seed = random.SystemRandom().randrange(2 ** 32)
    rng = random.Random(seed)
    tpl = _ours(name)
    outcomes = []
    for i in range(120):
        messages, tools, extra = random_conversation(rng, **DRAWS.get(name, {}))
        agp = rng.random() < 0.5
        where = (f"seed={seed}", i, name, messages, tools, extra, agp)
        outcomes.append(_check(name, tpl, messages, agp, tools, extra, where))
    assert outcomes.count("equal") >= 20, (seed, outcomes)


def test_tool_conversations_render_the_tools():
    """The tool paths are taken: the tool names and calls appear in the rendered text."""
    for name in ("mistral-v0.3", "llama-3.1", "llama-3.2", "qwen-2.5", "hermes"):
        text = _ours(name).render(TOOL_CHAT, tools=[WEATHER])
        assert "get_weather" in text and "Paris" in text, name
    hermes = _ours("hermes").render(PLAIN, tools=[SEARCH])
    # `json_spec|items` hands the macro a generator, whose undefined .type is iterable: Union[]
    assert "search(query: str, limit: int, tags: list[Union[]], filters: dict[str, float], " \
           "exact: Union[bool,int], extra: Union[]) -> list[Union[]]" in hermes
    llama = _ours("llama-3.1").render(TOOL_CHAT, builtin_tools=BUILTIN_TOOLS)
    assert "Tools: brave_search, wolfram_alpha\n" in llama


def test_endless_macro_recursion_is_an_error():
    """Hermes' type macro recurses without end on a JSON type it cannot map ("null": a one-letter
    string iterates to itself); jinja2 dies of RecursionError, ours says so in one line."""
    tools = [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object", "properties": {
            "x": {"type": "null", "description": "nothing"}}}}}]
    with pytest.raises(RecursionError):
        _reference("hermes", PLAIN, False, tools, {})
    with pytest.raises(ValueError, match="nested too deeply"):
        _ours("hermes").render(PLAIN, tools=tools)
