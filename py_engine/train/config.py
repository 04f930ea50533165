"""Training configurations, with PEFT/transformers-style names. One base for what every task's
training loop needs, and one subclass per task with its own options and defaults.

    TrainConfig(epochs=3, lr=5e-4)                       # any task: optimizer, schedule, data order
    ClassifierTrainConfig(label_smoothing=0.1)           # + classification options
    CausalTrainConfig(mode="hybrid", full_lr=2e-5)       # + decoder options (chat defaults)
    GuardConfig(keep=3, tolerance=0.1)                   # snapshots, quality checks and rollback

Every value is checked when the config is made; a bad one is a ValueError naming the option.
"""

import math
from dataclasses import asdict, dataclass, fields

from .schedule import check_schedule

MODES = ("lora", "full", "hybrid")


class ConfigError(ValueError):
    """A training option out of its range; the message names it."""


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive whole number, got {value!r}")


# The training arithmetic is float32 (WGSL's f32 on the GPU): a value past its largest finite
# number would be infinite there, and a positive one under its smallest normal number is read as
# zero on GPUs that flush subnormals (an adam_epsilon of 1e-300 would divide by zero).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


def _finite(name, value, low=None, high=None, low_open=False, high_open=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{name} {value!r} is past float32's range (about 3.4e38), in which "
                          "training computes")
    if low == 0.0 and low_open and value < FLOAT32_TINY:
        raise ConfigError(f"{name} must be > 0 and at least float32's smallest normal number "
                          f"(about 1.2e-38), got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


@dataclass
class TrainConfig:
    """What the training loop needs, whatever the task. max_grad_norm None disables clipping.
    The AdamW options keep transformers' names and defaults (TrainingArguments), as do the
    schedule's (lr_scheduler_type, lr_scheduler_kwargs, warmup_ratio, warmup_steps:
    schedule.py) and
    gradient_checkpointing: recompute each layer's forward in the backward instead of keeping
    its activations, about a third more compute for the activations of one layer instead of
    all (models/checkpointing.py; the gradients are the same)."""

    epochs: int = 3
    max_steps: int = None       # transformers': when given, the run's optimizer steps, not epochs'
    lr: float = 5e-4
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    warmup_steps: int = 0       # transformers': when > 0, the warmup's length, not warmup_ratio's
    lr_scheduler_type: str = "linear"       # schedule.SCHEDULES, transformers' names
    lr_scheduler_kwargs: dict = None        # transformers': the schedule's keywords (schedule.KWARGS)
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    seed: int = 0
    max_length: int = 128
    pad_multiple: int = 8
    gradient_checkpointing: bool = False

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum", "pad_multiple"):
            _positive_int(name, getattr(self, name))
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(f"gradient_checkpointing must be true or false, got "
                              f"{self.gradient_checkpointing!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 3:
            raise ConfigError(f"max_length must be a whole number >= 3, got {self.max_length!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")
        _finite("lr", self.lr, low=0.0, low_open=True, high=None)
        _finite("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or \
                self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be a whole number >= 0, got {self.warmup_steps!r}")
        try:
            check_schedule(self.lr_scheduler_type, self.lr_scheduler_kwargs, self.lr)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _finite("weight_decay", self.weight_decay, 0.0, None)
        _finite("adam_beta1", self.adam_beta1, 0.0, 1.0, high_open=True)
        _finite("adam_beta2", self.adam_beta2, 0.0, 1.0, high_open=True)
        _finite("adam_epsilon", self.adam_epsilon, low=0.0, low_open=True, high=None)
        if self.max_grad_norm is not None:
            _finite("max_grad_norm", self.max_grad_norm, low=0.0, low_open=True)

    def as_dict(self):
        return asdict(self)

    @classmethod
    def of(cls, config):
        """`config` as this task's config: itself, a plain TrainConfig's values with this
        class's own options at their defaults, or the class's defaults for None."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if type(config) is not TrainConfig:
            raise TypeError(f"this model trains with a {cls.__name__}, not a {type(config).__name__}")
        return cls(**config.as_dict())

    @classmethod
    def from_dict(cls, data):
        """The config a dict describes (as as_dict() wrote it); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no option {', '.join(unknown)}")
        return cls(**data)


@dataclass
class ClassifierTrainConfig(TrainConfig):
    """label_smoothing and class_weights as torch's cross_entropy takes them."""

    label_smoothing: float = 0.0
    class_weights: list = None

    def __post_init__(self):
        super().__post_init__()
        _finite("label_smoothing", self.label_smoothing, 0.0, 1.0)
        if self.class_weights is not None:
            self.class_weights = list(self.class_weights)
            for w in self.class_weights:
                _finite("each class weight", w, low=0.0)
            if not any(self.class_weights):
                raise ConfigError("class_weights are all zero: no example would count")


@dataclass
class CausalTrainConfig(TrainConfig):
    """A decoder's training: chat-model defaults, and the mode.

    mode: "lora", "full", or "hybrid" (LoRA, then full fine-tuning once the validation loss has
    not improved by `min_delta` for `patience` evaluations; the best state of the full phase is
    kept and restored if later full training makes the validation loss worse).
    full_lr: the learning rate of full fine-tuning in hybrid mode (default lr / 10).
    eval_every: optimizer steps between validation evaluations (default: once per epoch).
    validation_ratio: the share of examples held out for validation when fit() is given none
    and the mode is hybrid.
    neftune_noise_alpha: NEFTune's alpha, as transformers' TrainingArguments (None: no noise):
    noise uniform in +-alpha/sqrt(L d) on the input embeddings in training (models/neftune.py).
    label_smoothing: transformers' label_smoothing_factor (its LabelSmoother): each trained
    token's loss (1 - e) CE + e times the mean over the vocabulary of -log p (evaluation too).
    """

    epochs: int = 1
    lr: float = 2e-4
    batch_size: int = 4
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_length: int = 512
    mode: str = "lora"
    full_lr: float = None
    patience: int = 2
    min_delta: float = 0.0
    eval_every: int = None
    validation_ratio: float = 0.1
    neftune_noise_alpha: float = None
    label_smoothing: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.neftune_noise_alpha is not None:
            _finite("neftune_noise_alpha", self.neftune_noise_alpha, 0.0)
        _finite("label_smoothing", self.label_smoothing, 0.0, 1.0)
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        _positive_int("patience", self.patience)
        _finite("min_delta", self.min_delta, 0.0)
        if self.eval_every is not None:
            _positive_int("eval_every", self.eval_every)
        _finite("validation_ratio", self.validation_ratio, 0.0, 1.0, low_open=True)
        if self.full_lr is None:
            self.full_lr = self.lr / 10
        _finite("full_lr", self.full_lr, low=0.0, low_open=True)


@dataclass
class GuardConfig:
    """Snapshots, quality checks and rollback while training in slices.

    keep: snapshots in the ring (the oldest is dropped).
    snapshot_every: accepted quality checks between snapshots (1: after every check).
    monitor: the held-out metric watched: "loss" (every task), "accuracy" or "macro_f1"
      (classifiers), "perplexity" (causal LMs).
    tolerance: relative worsening of the monitored metric, against the best recent snapshot,
      that triggers a rollback (0.1: 10% worse); slack: an absolute change that never does
      (a loss near zero moves by more than 10% of itself on noise alone).
    grad_norm_factor: a step whose gradient norm exceeds this many times the median of the
      recent ones is a divergence (rolled back at once); grad_norm_limit: an absolute bound
      (None: none).
    """

    keep: int = 3
    snapshot_every: int = 1
    monitor: str = "loss"
    tolerance: float = 0.1
    slack: float = 0.01
    grad_norm_factor: float = 50.0
    grad_norm_limit: float = None
    warmup_steps: int = 10

    def __post_init__(self):
        _positive_int("keep", self.keep)
        _positive_int("snapshot_every", self.snapshot_every)
        if self.monitor not in ("loss", "accuracy", "macro_f1", "perplexity"):
            raise ConfigError(f"monitor must be loss, accuracy, macro_f1 or perplexity, got {self.monitor!r}")
        _finite("tolerance", self.tolerance, 0.0, None)
        _finite("slack", self.slack, 0.0, None)
        _finite("grad_norm_factor", self.grad_norm_factor, 1.0, None, low_open=True)
        if self.grad_norm_limit is not None:
            _finite("grad_norm_limit", self.grad_norm_limit, 0.0, None, low_open=True)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 1:
            raise ConfigError(f"warmup_steps must be a positive whole number, got {self.warmup_steps!r}")

    def as_dict(self):
        return asdict(self)
