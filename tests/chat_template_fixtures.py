"""The chat templates of tests/data/chat_templates/ and transformers' own rendering of them.

The fixtures are written the way the named checkpoints' tokenizer_config.json files write their
`chat_template`: the same constructs (macros, namespace(), selectattr, items, loop controls,
raise_exception...), the same whitespace control and the same prompt formats.
"""

from pathlib import Path

import jinja2
from transformers.utils.chat_template_utils import render_jinja_template

TEMPLATE_DIR = Path(__file__).resolve().parent / "data" / "chat_templates"


def model_template(name):
    """The text of tests/data/chat_templates/<name>.jinja."""
    return (TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8")


class Refused(Exception):
    """The reference refused the conversation through the template's raise_exception()."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def reference_render(template, messages, add_generation_prompt=False, tools=None, **kwargs):
    """What apply_chat_template(..., tokenize=False) gives: transformers' Jinja environment and
    its render function, the special tokens passed as keyword arguments as the tokenizer passes
    them. A raise_exception() in the template comes out as Refused(message); any other error
    of the template comes out as itself."""
    try:
        rendered, _ = render_jinja_template([messages], tools=tools, chat_template=template,
                                            add_generation_prompt=add_generation_prompt,
                                            **kwargs)
    except jinja2.exceptions.TemplateError as e:
        if type(e) is not jinja2.exceptions.TemplateError:   # syntax or undefined errors
            raise
        raise Refused(e.message) from None
    return rendered[0]
