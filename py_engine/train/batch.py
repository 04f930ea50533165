"""One batch of token ids for the model (plain lists: no NumPy, so it serves the browser)."""


class Batch:
    """Token ids, type ids, attention mask ([B][T] lists) and labels (a task's: one per row for
    classification, B * T shifted token labels for a causal LM; or None). Its tokens start at
    position 0 (no KV cache)."""

    position = 0

    def __init__(self, ids, type_ids, mask, labels=None):
        if len(ids) == 0 or len({len(row) for row in ids}) != 1:
            raise ValueError("a batch needs at least one row, all rows of one length")
        self.ids, self.type_ids, self.mask, self.labels = ids, type_ids, mask, labels
        self.B = len(ids)
        self.T = len(ids[0])

    def rows(self, start, stop):
        """Rows [start, stop) as a batch of their own, padded as they are here (the labels of a
        row are its share of `labels`: one for classification, T for a causal LM)."""
        if not 0 <= start < stop <= self.B:
            raise ValueError(f"rows [{start}, {stop}) are not within a batch of {self.B}")
        per_row = None if self.labels is None else len(self.labels) // self.B
        return Batch(self.ids[start:stop],
                     None if self.type_ids is None else self.type_ids[start:stop],
                     self.mask[start:stop],
                     None if per_row is None else self.labels[start * per_row:stop * per_row])
