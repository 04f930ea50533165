"""Chat and plain-text training data for causal-LM fine-tuning: JSONL records read into
conversations or texts, then encoded into token ids and labels, where a label of -100 (the
ignore index of transformers' and torch's cross-entropy) marks a token the loss skips.

    examples = read_chat_jsonl("chats.jsonl")                # [ChatExample, ...]
    tok = BPETokenizer.from_file(f"{ckpt}/tokenizer.json")
    template = load_chat_template(ckpt, tok)                 # ChatML where the files have none
    encoded, skipped = encode_chat_examples(examples, tok, template, max_length=512)
    encoded[0].ids, encoded[0].labels                        # lists of int, same length

Record formats, one JSON object per line (blank lines skipped; a file may mix them, since each
line says what it is; a line that fits two formats is an error):
  - {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  - Alpaca: {"instruction": str, "input": str (optional, may be empty), "output": str}, read as
    [user: instruction + ("\\n\\n" + input if input), assistant: output]; as in LLaMA-Factory's
    Alpaca files, an optional "system" str and "history" ([[user, assistant], ...], earlier
    turns) come before it
  - {"prompt": str, "response": str} ("completion" also names the response): [user, assistant],
    after an optional "system" str
  - {"text": str}: continued pretraining on plain text.

Encoding follows what the Hugging Face stack trains on:
  - a conversation is rendered by the checkpoint's chat template (add_generation_prompt off)
    and tokenized without added special tokens, as transformers' apply_chat_template(
    tokenize=True) does (the template writes BOS itself where the model wants it). A token is
    trained (label = its id) when its character range overlaps an assistant span of the
    rendered text (ChatTemplate.render_with_spans: each assistant content plus the end-of-turn
    token after it, so the model learns to stop); every other token gets -100. Overlap rather
    than containment, so that a token the BPE merged across the edge of an assistant turn (the
    header's "\\n" with the content's leading spaces) is still learned, as transformers'
    assistant masks (char_to_token of each end of a span) do.
  - a text is tokenized with the tokenizer's own special tokens (BOS for Llama), as
    `tokenizer(text)` does, and every token is its own label.
Labels are not shifted: the loss shifts them (label[t] is predicted from ids[:t]), as
transformers' causal-LM loss does.

Truncation keeps the start (the first max_length tokens), as the tokenizers' default right-side
truncation does. An example left with nothing to learn (no label after the first position: a
conversation whose assistant turns all lie past max_length, an empty text) is an error from
encode_chat_example; encode_chat_examples can skip such examples instead and count them.
"""

import os

from ..formats.json_file import read_json_object
from ..tokenizers.chat_template import ChatTemplate
from ..tokenizers.checkpoint import family_template
from .classification import DataError, parse_records, read_jsonl_lines

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")

# Used where a checkpoint has no chat template: ChatML without a default system prompt, the
# format trl's setup_chat_format gives a base model. Needs <|im_start|> and <|im_end|> tokens.
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                   "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")

_FORMATS = {   # format name -> the keys that mark a record as that format
    "messages": ("messages",),
    "alpaca": ("instruction", "output"),
    "prompt/response": ("prompt",),
    "text": ("text",),
}


class UntrainableExample(DataError):
    """An example with no token left to train on (see encode_chat_example)."""


class ChatExample:
    """One training example: a conversation (`messages`, a list of {"role", "content"} dicts)
    or a plain `text`; exactly one of the two is set. `source` ("file:line") names it in
    errors."""

    __slots__ = ("messages", "text", "source")

    def __init__(self, messages=None, text=None, source=None):
        if (messages is None) == (text is None):
            raise ValueError("ChatExample takes either messages or text, not both or neither")
        self.messages = messages
        self.text = text
        self.source = source

    def __eq__(self, other):
        return isinstance(other, ChatExample) and \
            (self.messages, self.text) == (other.messages, other.text)

    def __repr__(self):
        if self.text is not None:
            return f"ChatExample(text={self.text[:40]!r})"
        return f"ChatExample({len(self.messages)} messages)"


class EncodedExample:
    """Token ids and their labels (-100: not trained), lists of int of the same length."""

    __slots__ = ("ids", "labels")

    def __init__(self, ids, labels):
        self.ids = ids
        self.labels = labels

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        trained = sum(label != IGNORE_INDEX for label in self.labels)
        return f"EncodedExample({len(self.ids)} tokens, {trained} trained)"


# ---- reading ---------------------------------------------------------------------------------

def _string(record, key, where, optional=False):
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: \"{key}\" must be a string, got {value!r:.80}")
    return value


def _messages(value, where):
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: \"messages\" must be a non-empty list of "
                        f"{{\"role\", \"content\"}} objects, got {value!r:.80}")
    messages = []
    for k, message in enumerate(value):
        at = f"{where}: messages[{k}]"
        if not isinstance(message, dict):
            raise DataError(f"{at} must be an object with \"role\" and \"content\", "
                            f"got {message!r:.80}")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"{at}: \"role\" must be one of {', '.join(ROLES)}, got {role!r:.40}")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(f"{at}: \"content\" must be a string, got {content!r:.80}")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation has no assistant message, so nothing in it "
                        "would be trained")
    return messages


def record_format(record, where="<record>"):
    """Which of the formats above (a key of _FORMATS) one decoded JSON record is in; a
    DataError starting with `where` when it is none, or more than one."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    formats = [name for name, keys in _FORMATS.items() if any(k in record for k in keys)]
    if not formats:
        raise DataError(f"{where}: not a known record format: expected \"messages\", "
                        "\"instruction\"/\"output\" (Alpaca), \"prompt\"/\"response\" or "
                        f"\"text\"; got keys {sorted(record)}")
    if len(formats) > 1:
        raise DataError(f"{where}: the record mixes formats ({' and '.join(formats)}); "
                        "give one of them per line")
    return formats[0]


def chat_example_from_record(record, where="<record>"):
    """A ChatExample from one decoded JSON record in any of the formats above; `where` (e.g.
    "data.jsonl:12") starts every error message."""
    kind = record_format(record, where)
    if kind == "messages":
        return ChatExample(messages=_messages(record["messages"], where), source=where)
    if kind == "text":
        if record.get("label") is not None:     # else the label would be dropped unsaid
            raise DataError(f"{where}: a \"text\" with a \"label\" is a classifier example; "
                            "a chat model learns plain \"text\" or conversations: leave the "
                            "label out, or train a classifier")
        return ChatExample(text=_string(record, "text", where), source=where)
    before = _system(record, where)
    if kind == "alpaca":
        instruction = _string(record, "instruction", where)
        extra = _string(record, "input", where, optional=True)
        output = _string(record, "output", where)
        user = instruction + ("\n\n" + extra if extra else "")
        return ChatExample(messages=before + _history(record, where) + [
            {"role": "user", "content": user}, {"role": "assistant", "content": output}],
            source=where)
    prompt = _string(record, "prompt", where)
    if "response" in record and "completion" in record:
        raise DataError(f"{where}: give \"response\" or \"completion\", not both")
    answer = _string(record, "completion" if "completion" in record else "response", where)
    return ChatExample(messages=before + [{"role": "user", "content": prompt},
                                          {"role": "assistant", "content": answer}], source=where)


def _system(record, where):
    """[the system message] of a record's optional "system" string, else []."""
    if record.get("system") is None:
        return []
    return [{"role": "system", "content": _string(record, "system", where)}]


def _history(record, where):
    """The messages of an Alpaca record's optional "history": [[user, assistant], ...]."""
    history = record.get("history")
    if history is None:
        return []
    if not isinstance(history, list) or not all(
            isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)
            for turn in history):
        raise DataError(f"{where}: \"history\" must be a list of [user, assistant] string "
                        f"pairs, got {history!r:.80}")
    return [{"role": role, "content": text} for turn in history
            for role, text in zip(("user", "assistant"), turn)]


def parse_chat_jsonl(lines, source="<data>"):
    """ChatExamples from an iterable of JSONL lines; blank lines are skipped, any other line
    that is not a valid record is a DataError naming source and line number."""
    return parse_records(lines, source, chat_example_from_record)


def read_chat_jsonl(path):
    """ChatExamples from a JSONL file; an empty file is an error, as an empty dataset is."""
    return read_jsonl_lines(path, parse_chat_jsonl)


# ---- the template ----------------------------------------------------------------------------

def load_chat_template(checkpoint_dir, tokenizer=None):
    """The checkpoint's chat template (tokenizer_config.json or chat_template.jinja). Where it
    has none: its family's format where it has one (GPT-2's: DialoGPT's, see
    tokenizers.checkpoint.family_template), else ChatML (CHATML_TEMPLATE), provided the tokenizer has ChatML's <|im_start|> and
    <|im_end|> tokens, each encoding as one token (pass `tokenizer` to have that checked); else a DataError, since a
    format the model has no tokens for would teach it to spell out markup."""
    config_path = os.path.join(checkpoint_dir, "tokenizer_config.json")
    config = read_json_object(config_path) if os.path.exists(config_path) else {}
    has_template = config.get("chat_template") is not None or \
        os.path.exists(os.path.join(checkpoint_dir, "chat_template.jinja"))
    if has_template:
        return ChatTemplate.from_pretrained(checkpoint_dir)
    family = family_template(checkpoint_dir, config)
    if family is not None:
        return family
    if tokenizer is not None:
        missing = [t for t in CHATML_TOKENS   # each must encode as one (added) token
                   if len(tokenizer.encode(t, add_special_tokens=False).ids) != 1]
        if missing:
            raise DataError(f"{checkpoint_dir}: no chat template (tokenizer_config.json has no "
                            "chat_template), and the vocabulary lacks the ChatML tokens "
                            f"{missing} the fallback format needs; pass a ChatTemplate")
    return ChatTemplate(CHATML_TEMPLATE, eos_token="<|im_end|>",
                        end_tokens=["<|im_end|>"])


def template_for(examples, checkpoint_dir, tokenizer=None, template=None):
    """The template encoding `examples` needs: `template` when given (the checkpoint's own, as
    loaded with it), None when every example is plain text (text needs none, so continued
    pretraining works on a base checkpoint without one), else load_chat_template's."""
    if template is not None or all(e.messages is None for e in examples):
        return template
    return load_chat_template(checkpoint_dir, tokenizer)


# ---- encoding --------------------------------------------------------------------------------

def _overlap_labels(ids, offsets, spans):
    """ids where a token's [start, end) overlaps a span, else IGNORE_INDEX. Offsets and spans
    (sorted, disjoint) both run left to right: spans[k], the first span ending after the
    token's start, is the only one the token can begin to overlap."""
    labels, k, n = [], 0, len(spans)
    for i, (start, end) in zip(ids, offsets):
        while k < n and spans[k][1] <= start:
            k += 1
        inside = start < end and k < n and spans[k][0] < end
        labels.append(i if inside else IGNORE_INDEX)
    return labels


def encode_chat_example(example, tokenizer, template=None, max_length=None):
    """An EncodedExample for one ChatExample (see the module docstring for the rules).
    `template` (a ChatTemplate) is needed for conversations; `max_length` truncates, keeping
    the start. A DataError if nothing is left to train on."""
    if example.text is not None:
        ids = tokenizer.encode(example.text, truncation=False).ids
        labels = list(ids)
    else:
        if template is None:
            raise DataError("a conversation needs a chat template: pass template= "
                            "(load_chat_template(checkpoint_dir, tokenizer))")
        try:
            text, spans = template.render_with_spans(example.messages,
                                                     add_generation_prompt=False)
        except ValueError as e:     # TemplateError (the template refused it), or it failed on it
            raise DataError(str(e)) from None
        encoding = tokenizer.encode(text, add_special_tokens=False, truncation=False,
                                    return_offsets=True)
        ids = encoding.ids
        labels = _overlap_labels(ids, encoding.offsets, spans)
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        what = "text" if example.text is not None else "conversation"
        where = f" within max_length={max_length}" if max_length is not None else ""
        raise UntrainableExample(f"the {what} has no token to train on{where} ({len(ids)} "
                                 "tokens; the first is never predicted)")
    return EncodedExample(ids, labels)


def encode_chat_examples(examples, tokenizer, template=None, max_length=None,
                         skip_untrainable=False):
    """(encoded, skipped): EncodedExamples for ChatExamples in order. An example with nothing
    to train on is a DataError naming it (its source "file:line", else its index), or, with
    skip_untrainable, left out and counted in `skipped` (a long conversation cut by max_length
    before its first answer). Any other problem (a template that refuses the conversation) is
    always an error."""
    encoded, skipped = [], 0
    for k, example in enumerate(examples):
        try:
            encoded.append(encode_chat_example(example, tokenizer, template, max_length))
        except UntrainableExample as e:
            if not skip_untrainable:
                raise UntrainableExample(f"{_name(example, k)}: {e}") from None
            skipped += 1
        except DataError as e:
            raise DataError(f"{_name(example, k)}: {e}") from None
    return encoded, skipped


def _name(example, k):
    return getattr(example, "source", None) or f"example {k}"
