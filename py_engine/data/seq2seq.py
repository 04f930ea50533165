"""Sequence-to-sequence training data for encoder-decoders (T5): JSONL records read into
(input, target) text pairs, then encoded into the input's token ids and the target's.

    examples = read_seq2seq_jsonl("pairs.jsonl")             # [Seq2SeqExample, ...]
    encoded, skipped = encode_seq2seq_examples(examples, tokenizer, max_length=512)
    encoded[0].ids, encoded[0].labels                        # input ids, target ids

Record formats, one JSON object per line (blank lines skipped):
  - {"input": str, "target": str} ("output" also names the target; "source" the input)
  - the chat formats data/chat.py reads, mapped onto a pair: Alpaca {"instruction", "input",
    "output"} gives input instruction + ("\\n\\n" + input if input) and target output (FLAN's
    own instruction layout); {"prompt", "response" | "completion"} gives (prompt, response);
    {"messages": [...]} gives the last assistant message as the target and the messages
    before it, each on its own line, as the input (a system message first, "role: content"
    for earlier turns when there are any)
A {"text"} record has no target and is refused, as is a conversation that does not end on an
assistant message.

Each text is tokenized with the tokenizer's own special tokens (T5 appends </s>), as
transformers' T5 tokenizer does for inputs and for text_target; every target token is trained.
Truncation keeps the start.
"""

from .chat import IGNORE_INDEX, chat_example_from_record, record_format
from .classification import DataError, parse_records, read_jsonl_lines

INPUT_KEYS = ("input", "source")
TARGET_KEYS = ("target", "output")


class Seq2SeqExample:
    """One (input, target) text pair; `source` says where it came from ("data.jsonl:3")."""

    __slots__ = ("input", "target", "source")

    def __init__(self, input, target, source=None):
        self.input, self.target, self.source = input, target, source

    def __eq__(self, other):
        return isinstance(other, Seq2SeqExample) and (self.input, self.target) == (other.input, other.target)

    def __repr__(self):
        return f"Seq2SeqExample({self.input!r:.40}, {self.target!r:.40})"


class Seq2SeqIds:
    """An encoded pair: the input's token ids and the target's (labels; IGNORE_INDEX = not
    trained), lists of int."""

    __slots__ = ("ids", "labels")

    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

    def __repr__(self):
        return f"Seq2SeqIds({len(self.ids)} input tokens, {len(self.labels)} target tokens)"


def _pair_key(record, keys, where, what):
    found = [k for k in keys if k in record]
    if len(found) > 1:
        raise DataError(f"{where}: give one {what} field, not {' and '.join(repr(k) for k in found)}")
    value = record[found[0]]
    if not isinstance(value, str):
        raise DataError(f"{where}: {found[0]!r} must be a string, got {type(value).__name__}")
    return value


def seq2seq_example_from_record(record, where="<record>"):
    """A Seq2SeqExample from one decoded JSON record in any of the formats above; `where` starts
    every error message."""
    if isinstance(record, dict) and "instruction" not in record and any(k in record for k in TARGET_KEYS) \
            and any(k in record for k in INPUT_KEYS):
        return Seq2SeqExample(_pair_key(record, INPUT_KEYS, where, "input"),
                              _pair_key(record, TARGET_KEYS, where, "target"), where)
    if record_format(record, where) == "text":       # labelled or not
        raise DataError(f"{where}: a \"text\" record has no target; sequence-to-sequence data needs "
                        "\"input\"/\"target\" pairs, Alpaca records or conversations")
    messages = chat_example_from_record(record, where).messages
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation must end on an assistant message (the target)")
    return Seq2SeqExample(conversation_input(messages[:-1]), messages[-1]["content"], where)


def conversation_input(messages):
    """An encoder-decoder's input text for the turns of a conversation before the reply wanted:
    each message on its own line, a system message first, "role: content" for the turns when
    there is more than one (one turn, after an optional system message, is its content alone).
    Training pairs and a chat's prompt are made alike."""
    if len(messages) == 1 or (len(messages) == 2 and messages[0]["role"] == "system"):
        lines = [m["content"] for m in messages]
    else:
        lines = [m["content"] if m["role"] == "system" else f"{m['role']}: {m['content']}"
                 for m in messages]
    return "\n".join(lines)


def parse_seq2seq_jsonl(lines, source="<data>"):
    """Seq2SeqExamples from an iterable of JSONL lines; blank lines are skipped, any other line
    that is not a valid record is a DataError naming source and line number."""
    return parse_records(lines, source, seq2seq_example_from_record)


def read_seq2seq_jsonl(path):
    """Seq2SeqExamples from a JSONL file; an empty file is an error."""
    return read_jsonl_lines(path, parse_seq2seq_jsonl)


def encode_seq2seq_example(example, tokenizer, max_length=None):
    """Seq2SeqIds of one pair: each side tokenized with the tokenizer's special tokens
    (`tokenizer.encode(text).ids`), each cut to max_length. A DataError when the target is
    empty."""
    ids = list(tokenizer.encode(example.input).ids)
    labels = list(tokenizer.encode(example.target).ids)
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
    if not ids or all(y == IGNORE_INDEX for y in labels):
        raise DataError(f"{example.source or 'an example'}: the {'input' if not ids else 'target'} "
                        "has no tokens")
    return Seq2SeqIds(ids, labels)


def encode_seq2seq_examples(examples, tokenizer, max_length=None, skip_untrainable=True):
    """(encoded, skipped): every pair encoded; with skip_untrainable, pairs with an empty side
    are left out and counted instead of raising."""
    encoded, skipped = [], 0
    for example in examples:
        try:
            encoded.append(encode_seq2seq_example(example, tokenizer, max_length))
        except DataError:
            if not skip_untrainable:
                raise
            skipped += 1
    return encoded, skipped
