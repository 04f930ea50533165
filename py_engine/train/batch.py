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
