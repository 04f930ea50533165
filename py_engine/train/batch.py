"""One batch of token ids for the model (plain lists: no NumPy, so it serves the browser)."""

from ..labels import IGNORE_INDEX


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

    @property
    def last(self):
        """Each row's last real token (the mask's last 1) as a one-hot [B][T] row: where a
        decoder classifier reads its logits (DecoderClassifier)."""
        out = []
        for row in self.mask:
            n = sum(row)
            out.append([1 if t == n - 1 else 0 for t in range(self.T)])
        return out

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


class Seq2SeqBatch:
    """An encoder-decoder batch (T5): the encoder's token ids and mask ([B][S] lists), the
    decoder's input ids ([B][T]: the targets shifted right after the decoder start token, see
    seq2seq_decoder_ids) and labels (B * T flat, IGNORE_LABEL where not counted)."""

    position = 0

    def __init__(self, ids, mask, decoder_ids, labels=None):
        for name, rows in (("ids", ids), ("decoder_ids", decoder_ids)):
            if len(rows) == 0 or len({len(row) for row in rows}) != 1:
                raise ValueError(f"a batch's {name} need at least one row, all rows of one length")
        if len(ids) != len(decoder_ids):
            raise ValueError(f"{len(ids)} encoder rows but {len(decoder_ids)} decoder rows")
        self.ids, self.mask, self.decoder_ids, self.labels = ids, mask, decoder_ids, labels
        self.B, self.S, self.T = len(ids), len(ids[0]), len(decoder_ids[0])

    def rows(self, start, stop):
        """Rows [start, stop) as a batch of their own (labels: T per row)."""
        if not 0 <= start < stop <= self.B:
            raise ValueError(f"rows [{start}, {stop}) are not within a batch of {self.B}")
        labels = None if self.labels is None else self.labels[start * self.T:stop * self.T]
        return Seq2SeqBatch(self.ids[start:stop], self.mask[start:stop], self.decoder_ids[start:stop], labels)


def seq2seq_decoder_ids(targets, start, pad):
    """transformers' _shift_right: each row of `targets` ([B][T], IGNORE_INDEX where not
    counted) moved one right after `start` (decoder_start_token_id), IGNORE_INDEX as `pad`."""
    return [[start] + [pad if t == IGNORE_INDEX else t for t in row[:-1]] for row in targets]
