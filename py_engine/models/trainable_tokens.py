"""PEFT's trainable tokens (LoraConfig's trainable_token_indices): some rows of a decoder's token
embedding trained beside the LoRA, the rest of the table frozen, as when a few tokens were
added or are to be learnt anew. A tied output layer reads the same rows (PEFT's tied adapter).

    D [n, hidden]: "<embedding>.token_adapter.trainable_tokens_delta" (PEFT's name: the rows'
        values, not a difference), started from the checkpoint's rows E[idx]
    E' = E with rows idx replaced by D = E + P (D - E[idx]),  P [vocab, n] one-hot: P[idx[j], j] = 1
    embedding:  x = E[ids] + M (D - E[idx]),  M = P[ids] (a token's row of P; zeros for others)
    tied head:  logits = h E'^T = h E^T + (h (D - E[idx])^T) P^T: the loss's low-rank term
                (u = h R^T, B = P, scaling 1), so no [vocab, hidden] table is made
    gradient:   dD = M^T dx (+ du^T h from a tied head); E[idx] is gathered from the frozen
                table where it is read (n rows; no copy of the table is kept)

The padding token's row gets no gradient from the embedding (F.embedding's padding_idx): the
backward's P has that row zero. The list form names the embedding's rows; a dict names modules
by PEFT's rule (the embedding; an untied output layer's own rows are not built here).
"""

from .lora_config import LoraConfigError


class TrainableTokens:
    """indices: {embedding module: token ids} (None: no trainable tokens); table: the
    embedding's tensor, [vocab, hidden]; tied: whether the output layer reads it too; padding:
    the row nn.Embedding's padding_idx names (or None); full_name(module): its adapter name."""

    def __init__(self, indices, table, vocab, hidden, tied, padding, full_name):
        self.indices = indices or {}
        self.table = table
        self.vocab, self.hidden, self.tied, self.padding = vocab, hidden, tied, padding
        self.full_name = full_name
        for module, rows in self.indices.items():
            if max(rows) >= vocab:
                raise LoraConfigError(f"trainable_token_indices for {full_name(module)} names "
                                      f"token {max(rows)}; the embedding has {vocab} rows")

    @classmethod
    def of(cls, lora, embedding, head, table, vocab, hidden, tied, padding, full_name, others=()):
        """The trainable tokens `lora` names on a decoder whose embedding module is `embedding`
        (its tensor `table`) and output layer `head` (full names by full_name); refused by
        name where they meet a LoRA or modules_to_save on the same table (`others`: the
        modules so wrapped or saved)."""
        value = None if lora is None else lora.trainable_token_indices
        if not value:
            return cls({}, table, vocab, hidden, tied, padding, full_name)
        if isinstance(value, list):
            value = {embedding: value}
        else:
            named = {}
            for key, rows in value.items():
                match = [m for m in (embedding, head)
                         if full_name(m) == key or full_name(m).endswith("." + key)]
                if not match:
                    raise LoraConfigError(f"trainable_token_indices names {key!r}: only this "
                                          f"model's embedding ({full_name(embedding)}) takes "
                                          "trainable tokens here")
                if match[0] == head:
                    raise LoraConfigError(
                        f"trainable_token_indices names {key!r}, the output layer: "
                        + ("it is tied to the embedding and follows the embedding's rows; name "
                           "the embedding" if tied else "an untied output layer's own rows "
                           "are not built here (the embedding's are)"))
                named[embedding] = rows
            value = named
        clash = [m for m in value if m in others] + ([head] if tied and head in others else [])
        if clash:
            raise LoraConfigError(f"trainable_token_indices trains rows of "
                                  f"{', '.join(map(full_name, clash))}, which target_modules or "
                                  "modules_to_save also names: a table trains one way")
        return cls(value, table, vocab, hidden, tied, padding, full_name)

    def name(self, module):
        return f"{self.full_name(module)}.token_adapter.trainable_tokens_delta"

    def trainable(self):
        """{name: shape} of the trained rows."""
        return {self.name(m): (len(rows), self.hidden) for m, rows in self.indices.items()}

    def sources(self):
        """{trained tensor: (table tensor, token ids)}: each starts from its table's rows, and
        the merged model's table holds it in place of those."""
        return {self.name(m): (self.table, rows) for m, rows in self.indices.items()}

    @property
    def module(self):
        return next(iter(self.indices), None)

    def _onehot(self, be, rows, gradient):
        """P [vocab, n] (with `gradient`, the padding token's row zero)."""
        n = len(rows)
        values = [0.0] * (self.vocab * n)
        for j, token in enumerate(rows):
            if not (gradient and token == self.padding):
                values[token * n + j] = 1.0
        key = ("trainable tokens", tuple(rows), self.vocab, gradient and self.padding)
        return be.constant(key, values, (self.vocab, n))

    def _replacement(self, be):
        """R = D - E[idx] [n, hidden] and P."""
        rows = self.indices[self.module]
        ids = be.constant(("trainable token ids", tuple(rows)), rows, (1, len(rows)), ids=True)
        base_rows = be.gather_rows(be.param(self.table), ids)              # E[idx]
        return be.sub(be.param(self.name(self.module)), base_rows), self._onehot(be, rows, False)

    # --- the embedding ---

    def embed(self, be, x, ids, saved):
        """x (the table's rows of ids) with the trained rows in place of theirs; what the
        backward needs goes in saved["trainable_tokens"]."""
        if self.module is None:
            return x
        replacement, onehot = self._replacement(be)
        picked = be.gather_rows(onehot, ids)                          # M [tokens, n]
        rows = self.indices[self.module]
        grad_rows = picked if self.padding not in rows else \
            be.gather_rows(self._onehot(be, rows, True), ids)
        saved["trainable_tokens"] = grad_rows
        return be.add(x, be.linear_grad_input(picked, replacement))   # + M R

    def embed_backward(self, be, dx, saved):
        """dD += M^T dx (nothing without trainable tokens)."""
        if self.module is None:
            return
        be.linear_grad_params(saved["trainable_tokens"], dx, be.grad(self.name(self.module)), None)

    # --- a tied output layer ---

    def head_term(self, be, hidden, saved):
        """The tied head's low-rank term (u = h R^T, P, 1) for lm_head_loss, or None."""
        if self.module is None or not self.tied:
            return None
        replacement, onehot = self._replacement(be)
        saved["trainable_tokens_head"] = (hidden, replacement)
        return be.linear(hidden, replacement, None), onehot, 1.0

    def head_logits(self, be, logits, hidden):
        """Generation's logits with the trained rows in place of the tied head's."""
        if self.module is None or not self.tied:
            return logits
        replacement, onehot = self._replacement(be)
        return be.add(logits, be.linear(be.linear(hidden, replacement, None), onehot, None))

    def head_backward(self, be, du, saved):
        """dD += du^T h; the hidden states' gradient through the rows: du R."""
        hidden, replacement = saved["trainable_tokens_head"]
        be.linear_grad_params(du, hidden, be.grad(self.name(self.module)), None)
        return be.linear_grad_input(du, replacement)
