"""What both tokenizers (WordPiece, and the BPE or Unigram SubwordTokenizer) share around their
model: the Encoding they return, the vocabulary with its added tokens, and truncation, padding
and batches as the Hugging Face `tokenizers` library applies them (one rule for every model),
read from tokenizer.json's truncation and padding sections."""

from .tokenizer_file import TokenizerJsonReader


class Encoding:
    """One encoded text (or pair): parallel lists of token ids, type ids and attention mask."""

    __slots__ = ("ids", "type_ids", "attention_mask", "_names", "_tokens")

    def __init__(self, ids, type_ids, attention_mask, names, tokens=None):
        self.ids = ids
        self.type_ids = type_ids
        self.attention_mask = attention_mask
        self._names = names
        self._tokens = tokens   # only when some token's text is not its vocabulary entry

    @property
    def tokens(self):
        """The token strings, looked up only when asked for (training needs only the ids)."""
        if self._tokens is not None:
            return self._tokens
        return [self._names[i] for i in self.ids]

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        more = "..." if len(self) > 8 else ""
        return f"Encoding({len(self.ids)} tokens: {self.tokens[:8]}{more})"


def padded_length(tokenizer, batch, padding, max_length, pad_to_multiple_of):
    """The length a batch is padded to: its longest encoding ("longest") or max_length, else
    the file's padding length ("max_length"), rounded up to the multiple asked for or set in
    tokenizer.json."""
    if padding == "longest":
        length = max(map(len, batch), default=0)
    elif padding == "max_length":
        length = max_length or tokenizer._pad_length or tokenizer.max_length
        if length is None:
            raise ValueError('padding="max_length" needs max_length: none given, '
                             "none in tokenizer.json")
    else:
        raise ValueError(f"padding must be 'longest', 'max_length' or None, not {padding!r}")
    multiple = pad_to_multiple_of or tokenizer._pad_multiple
    if multiple and length % multiple:
        length += multiple - length % multiple
    return length


class TokenizerBase(TokenizerJsonReader):
    """A subclass reads its model into _model_vocab (token -> id), then calls _read_added_tokens,
    _read_truncation and _read_padding (after setting pad_token and pad_id its own way), and
    encodes one text in encode(); encode_batch is _encode_batch over it."""

    def _read_vocabulary(self, added, names=None, model_size=None):
        """_vocab (token -> id, the added tokens included) and _names (id -> token) from
        _model_vocab and the added tokens ({"id", "content"}), which win over the model's
        entries as in the library; `names` ({id: name}) first overrides the model's (a
        Unigram piece listed twice keeps each id's own). Returns the added tokens with the
        ids the library gives them (library_ids; model_size: its model's vocabulary size,
        default len(_model_vocab))."""
        added = library_ids(added, self._model_vocab,
                            len(self._model_vocab) if model_size is None else model_size)
        self._vocab = dict(self._model_vocab)
        for token in added:
            self._vocab[token["content"]] = token["id"]
        self._names = [None] * (max(self._vocab.values(), default=-1) + 1)
        for token, i in self._model_vocab.items():
            self._names[i] = token
        for i, name in (names or {}).items():
            self._names[i] = name
        for token in added:
            self._names[token["id"]] = token["content"]
        return added

    def _read_added_tokens(self, config, normalize, matcher, names=None, model_size=None):
        """The added tokens of tokenizer.json, once _model_vocab is read: their ids and names
        (_read_vocabulary), matchers (`matcher`, built from a list of tokens) of the raw ones
        and of those marked "normalized" (matched in normalized text by their normalized
        form, which the library then names them by, in decoding too: "New York" -> "new
        york"), and the ids decoding skips as special (special_ids)."""
        original = [t for t in config.get("added_tokens") or [] if t["content"]]
        original = self._read_vocabulary(original, names, model_size)
        added = original if normalize is None else [
            dict(t, content=normalize(t["content"])) if t.get("normalized") else t for t in original]
        raw = [t for t in added if not t.get("normalized")]
        normalized = [t for t in added if t.get("normalized")]
        self._raw_added = matcher(raw) if raw else None
        self._normalized_added = matcher(normalized) if normalized else None
        self._special_ids = special_ids(original, added)
        for token in normalized:    # the raw ones _read_vocabulary named
            self._names[token["id"]] = token["content"]

    _id_limit = None

    def limit_ids(self, rows):
        """Refuse, in encode(), a text that gives an id the model has no embedding row for
        (id >= rows): a tokenizer may hold more tokens than its model (Gemma 3's
        <image_soft_token>, or tokens added without resizing the model), and such an id would
        fail deep in the model, or read past the table on the GPU."""
        self._id_limit = rows if len(self._names) > rows else None

    def _check_ids(self, ids, text):
        limit = self._id_limit
        if limit is not None and ids and max(ids) >= limit:
            bad = next(i for i in ids if i >= limit)
            raise ValueError(f"{text!r:.80} gives the token {self._names[bad]!r} (id {bad}), "
                             f"which the model does not have: its embedding has {limit} rows "
                             "(config.json's vocab_size), fewer than the tokenizer's tokens")

    @property
    def vocab_size(self):
        """Size of the vocabulary, added tokens included (the library's get_vocab_size())."""
        return len(self._vocab)

    def token_to_id(self, token):
        return self._vocab.get(token)

    def id_to_token(self, i):
        return self._names[i] if 0 <= i < len(self._names) else None

    # ---- truncation ---------------------------------------------------------------------

    def _read_truncation(self, truncation):
        truncation = truncation or {}
        self.max_length = truncation.get("max_length")      # default truncation length, or None
        self._truncation_strategy = truncation.get("strategy", "LongestFirst")
        if self._truncation_strategy not in ("LongestFirst", "OnlyFirst", "OnlySecond"):
            raise ValueError(f"unknown truncation strategy {self._truncation_strategy!r}")
        self._truncate_left = truncation.get("direction", "Right") == "Left"

    def _kept_lengths(self, lengths, max_length, n_special):
        """How many tokens of each sequence (one, or a pair) truncation to `max_length` keeps,
        beside the template's `n_special` tokens."""
        budget = max_length - n_special
        if budget < 0:
            raise ValueError(f"max_length {max_length} leaves no room for the "
                             f"{n_special} special tokens")
        if sum(lengths) <= budget:
            return lengths
        if len(lengths) == 1:
            return [budget]
        n1, n2 = lengths
        if self._truncation_strategy == "LongestFirst":
            # The library's rule: the shorter keeps its length if the longer can take the rest
            # (but no less than the shorter), else both get half, the second one the odd token.
            short, long_ = min(n1, n2), max(n1, n2)
            long_ = short if short > budget else max(short, budget - short)
            if short + long_ > budget:
                short, long_ = budget // 2, budget // 2 + budget % 2
            return [long_, short] if n1 > n2 else [short, long_]
        excess = n1 + n2 - budget
        first = self._truncation_strategy == "OnlyFirst"
        if (n1 if first else n2) <= excess:
            raise ValueError(f"cannot truncate to {max_length}: the "
                             f"{'first' if first else 'second'} sequence is too short")
        return [n1 - excess, n2] if first else [n1, n2 - excess]

    def _cut(self, items, n):
        return items[len(items) - n:] if self._truncate_left else items[:n]

    # ---- padding and batches ------------------------------------------------------------

    def _read_padding(self, padding):
        """What pads a batch, besides pad_token and pad_id (each tokenizer's defaults differ)."""
        padding = padding or {}
        self._pad_type_id = padding.get("pad_type_id", 0)
        self._pad_left = padding.get("direction", "Right") == "Left"
        self._pad_multiple = padding.get("pad_to_multiple_of")
        strategy = padding.get("strategy")
        self._pad_length = strategy.get("Fixed") if isinstance(strategy, dict) else None

    def _no_pad_token(self):
        """The message when a batch needs padding and there is no pad id."""
        return "cannot pad: tokenizer.json defines no pad token; set pad_id (e.g. tok.pad_id = tok.eos_id)"

    def _encode_batch(self, texts, pairs, encode, padding, max_length, pad_to_multiple_of):
        """encode(text, pair) for each text (and pair), padded as `padding` says (see
        padded_length; None: not padded)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of str, not a single "
                            f"{type(texts).__name__}; use encode() for one text")
        texts = list(texts)
        if pairs is None:
            pairs = [None] * len(texts)
        elif isinstance(pairs, (str, bytes)) or len(pairs) != len(texts):
            raise ValueError("pairs must be a list as long as texts")
        batch = [encode(t, p) for t, p in zip(texts, pairs)]
        if padding is None:
            return batch
        length = padded_length(self, batch, padding, max_length, pad_to_multiple_of)
        for encoding in batch:
            self._pad(encoding, length)
        return batch

    def _pad(self, encoding, length):
        """Pad `encoding` to `length` tokens on the padding's side: the pad id (its token
        named pad_token, else the id's vocabulary entry), pad_type_id, mask 0, and offsets
        (0, 0) where the encoding has offsets."""
        missing = length - len(encoding.ids)
        if missing <= 0:
            return
        if self.pad_id is None:
            raise ValueError(self._no_pad_token())
        fields = [("ids", self.pad_id), ("type_ids", self._pad_type_id), ("attention_mask", 0)]
        if encoding._tokens is not None:
            fields.append(("_tokens", self.pad_token if self.pad_token is not None
                           else self.id_to_token(self.pad_id)))
        if getattr(encoding, "offsets", None) is not None:
            fields.append(("offsets", (0, 0)))
        for field, pad in fields:
            value, pads = getattr(encoding, field), [pad] * missing
            setattr(encoding, field, pads + value if self._pad_left else value + pads)


def library_ids(added, model_vocab, model_size):
    """The added tokens ({"id", "content", ...}, in the file's order) with the ids the library
    gives them, which are not always the ids tokenizer.json lists: it adds them one by one as
    its AddedVocabulary.add_tokens does. A content added before keeps its id, one the model's
    vocabulary holds takes the model's id, and any other the next id past both the model's
    vocabulary (model_size entries) and the tokens added so far. In the files the library
    writes the two agree; where a file's ids disagree (edited by hand, or written by other
    tools), transformers uses these, and so do we."""
    ids, out = {}, []
    for token in added:
        content = token["content"]
        if content in ids:
            new = ids[content]
        elif content in model_vocab:
            new = model_vocab[content]
        else:
            top = max(ids.values(), default=None)
            new = model_size if top is None or (top < model_size and model_size) else top + 1
        ids[content] = new
        out.append(token if token["id"] == new else dict(token, id=new))
    return out


def special_ids(original, added):
    """The ids decoding skips as special: the added tokens marked special (`original`, as
    the file lists them) whose name (in `added`, a "normalized" token's content normalized)
    is still a special token's text. The library checks the name, so a special token that
    normalizing renames ("</s>" to "▁</s>") is not skipped there, nor here."""
    texts = {t["content"] for t in original if t.get("special")}
    return {t["id"] for t, o in zip(added, original) if o.get("special") and t["content"] in texts}
