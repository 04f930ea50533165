"""BatchManager: how many rows of a planned batch the next micro-batch takes.

The trainer (py_engine/train/trainer.py) asks before each micro-batch: rows(left, T,
seconds_left, ...). The answer is a power of two (few shapes: each is a recorded GPU program),
or the whole planned batch, chosen from the measured time per padded token of recent
micro-batches so that the micro-batch ends within the time left in the slice: small while the
user is around (short deadlines), the whole batch when idle (long or no deadlines). It never
exceeds what the device can hold: the largest buffer a micro-batch of m rows x T tokens needs,
estimated from the model's config, must fit the device's max_storage_buffer_binding_size and
max_buffer_size. The effective batch stays the configured one: the trainer accumulates the
micro-batches of a planned batch into its gradient.

    manager = BatchManager.for_runtime(runtime)           # limits from the runtime's device
    trainer = Trainer(runtime, task, examples, config, batch_manager=manager)

Pure Python, no clock of its own (the trainer measures): this runs in the browser.
"""

import math
from dataclasses import dataclass

from ..gpu.device import buffer_limit

F32 = 4
LM_HEAD_CHUNK = 256       # the vocabulary columns of the LM-head loss's logits block (gpu_backend)


class DoesNotFit(ValueError):
    """Not even one row of the batch fits the device's buffer limits."""


@dataclass
class BatchConfig:
    """min_rows / max_rows: bounds on a micro-batch's rows (powers of two are used);
    max_micro_ms: a cap on one micro-batch's predicted time even without a deadline (None:
    none); samples: recent micro-batch timings the estimate uses."""

    min_rows: int = 1
    max_rows: int = None
    max_micro_ms: float = None
    samples: int = 16

    def __post_init__(self):
        for name in ("min_rows", "samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.max_rows is not None and (isinstance(self.max_rows, bool) or
                                          not isinstance(self.max_rows, int) or
                                          self.max_rows < self.min_rows):
            raise ValueError(f"max_rows must be a whole number >= min_rows, got {self.max_rows!r}")
        if self.max_micro_ms is not None and not (isinstance(self.max_micro_ms, (int, float))
                                                  and self.max_micro_ms > 0):
            raise ValueError(f"max_micro_ms must be a positive number, got {self.max_micro_ms!r}")


def largest_buffer_bytes(model, rows, T):
    """The largest single GPU buffer a training micro-batch of rows x T tokens of `model`
    records: BERT's attention probabilities rows*H*T*T, the feed-forward activations
    rows*T*intermediate; a decoder's feed-forward activations and its LM-head logits block
    (rows*T*256). The weights are not counted: they were placed when the model loaded."""
    c = model.config
    tokens = rows * T
    sizes = [tokens * c.intermediate_size, tokens * c.hidden_size * 3]
    if model.decoder:
        sizes.append(tokens * min(LM_HEAD_CHUNK, c.vocab_size))
    else:
        sizes.append(rows * c.num_attention_heads * T * T)
    return F32 * max(sizes)


def power_below(n):
    """The largest power of two <= n (n >= 1)."""
    return 1 << (int(n).bit_length() - 1)


class BatchManager:
    def __init__(self, model, limits=None, config=None):
        """model: the runtime's model (its config and family size the buffers); limits: the
        device's limits (a dict as py_engine.gpu's Device.limits), None for none (NumPy)."""
        self.model = model
        self.limit = buffer_limit(limits)
        self.config = config or BatchConfig()
        self.timings = []            # (padded tokens, seconds) of recent micro-batches
        self._fits = {}              # T -> the most rows that fit the limits

    @classmethod
    def for_runtime(cls, runtime, config=None):
        device = getattr(runtime, "device", None)
        return cls(runtime.model, device.limits if device is not None else None, config)

    def configure(self, **options):
        """Change BatchConfig options while running."""
        values = dict(vars(self.config), **options)
        self.config = BatchConfig(**values)

    # --- the device's limits ---

    def max_rows(self, T):
        """The most rows (a power of two, or any count up to it) of T tokens whose largest
        buffer fits the device."""
        if T not in self._fits:
            if self.limit is None:
                self._fits[T] = math.inf
            else:
                if largest_buffer_bytes(self.model, 1, T) > self.limit:
                    raise DoesNotFit(
                        f"one row of {T} tokens needs a {largest_buffer_bytes(self.model, 1, T):,}"
                        f"-byte buffer; this device binds at most {self.limit:,} bytes: lower "
                        "max_length or use a smaller model")
                rows = 1
                while largest_buffer_bytes(self.model, rows * 2, T) <= self.limit:
                    rows *= 2
                self._fits[T] = rows
        cap = self._fits[T]
        return cap if self.config.max_rows is None else min(cap, self.config.max_rows)

    # --- timing ---

    def observe(self, rows, T, seconds):
        """A micro-batch of rows x T padded tokens took `seconds`."""
        if seconds >= 0 and rows * T > 0:
            self.timings = (self.timings + [(rows * T, seconds)])[-self.config.samples:]

    def seconds_per_token(self):
        """The median time per padded token of the recent micro-batches (None before any)."""
        if not self.timings:
            return None
        rates = sorted(s / n for n, s in self.timings)
        return rates[len(rates) // 2]

    def predict(self, rows, T):
        """Predicted seconds of a micro-batch of rows x T tokens (None before any timing)."""
        rate = self.seconds_per_token()
        return None if rate is None else rate * rows * T

    # --- the choice ---

    def candidates(self, left, T, whole):
        """Row counts the next micro-batch may take, largest first: `left` itself when it is
        the whole planned batch (a shape already used) or a power of two, else powers of two
        below it; within the device's limits and the configured bounds."""
        cap = min(left, self.max_rows(T))
        out = [left] if left <= cap and (whole or left == power_below(left)) else []
        m = power_below(cap)
        while m >= 1:
            if m < left and m >= min(self.config.min_rows, power_below(cap)):
                out.append(m)
            m //= 2
        return out or [power_below(cap)]

    def rows(self, left, T, seconds_left, whole=False, first=False):
        """Rows for the next micro-batch of a planned batch with `left` rows to go (`whole`:
        none of it has run), T tokens each, `seconds_left` in the slice (None: no deadline).
        None when nothing fits; with `first` (nothing ran in this slice yet) the smallest
        runs anyway, so every slice progresses and overruns its deadline by at most one
        micro-batch."""
        options = self.candidates(left, T, whole)
        if seconds_left is not None and seconds_left <= 0 and not first:
            return None
        limit = seconds_left
        if self.config.max_micro_ms is not None:
            cap = self.config.max_micro_ms / 1000.0
            limit = cap if limit is None else min(limit, cap)
        if limit is None:
            return options[0]
        for rows in options:
            predicted = self.predict(rows, T)
            if predicted is not None and predicted <= limit:
                return rows
        return options[-1] if first or self.predict(options[-1], T) is None else None

    def status(self):
        rate = self.seconds_per_token()
        return {"ms_per_token": None if rate is None else rate * 1000.0,
                "limit_bytes": self.limit, "config": dict(vars(self.config))}
