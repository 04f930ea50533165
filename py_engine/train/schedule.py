"""Learning-rate schedules, as transformers' get_scheduler makes them (TrainingArguments'
lr_scheduler_type and lr_scheduler_kwargs): each the base rate times a factor of the optimizer
step, after a warmup that rises linearly from 0 (but where said).

    linear                     falls linearly to 0 at the last step
    cosine                     falls along a cosine to 0 (num_cycles 0.5: half a wave)
    cosine_with_restarts       num_cycles (1) falls along half a cosine, each from the base rate
    polynomial                 falls as (1 - progress)^power (1.0) to lr_end (1e-7), which it keeps
    constant                   the base rate at every step, warmup or not
    constant_with_warmup       the base rate after the warmup
    inverse_sqrt               1/sqrt((step + timescale - warmup) / timescale); timescale
                               defaults to the warmup's steps, or 10,000 without a warmup
    cosine_with_min_lr         cosine down to min_lr, or min_lr_rate of the base rate (one needed)
    cosine_warmup_with_min_lr  the same a step ahead, its warmup from (step + 1)/warmup, or
                               from warmup_lr_rate
    warmup_stable_decay        a warmup (warmup_type linear, cosine or 1-sqrt), num_stable_steps
                               at the base rate (default: what warmup and decay leave), then
                               num_decay_steps (needed) falling (decay_type, cosine by default)
                               to min_lr_ratio (0) of the base rate, kept after

Every formula is transformers' own (optimization.py), to the float; tests/test_training.py
holds each to get_scheduler at every step. reduce_lr_on_plateau (a metric's, not the step's)
is not one of them.
"""

import math

SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
             "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr",
             "cosine_warmup_with_min_lr", "warmup_stable_decay")
REQUIRED = object()
SHAPES = ("linear", "cosine", "1-sqrt")       # warmup_stable_decay's warmup_type and decay_type
# each kind's lr_scheduler_kwargs with transformers' defaults (None: computed; REQUIRED: needed)
KWARGS = {
    "linear": {}, "constant": {}, "constant_with_warmup": {},
    "cosine": {"num_cycles": 0.5},
    "cosine_with_restarts": {"num_cycles": 1},
    "polynomial": {"lr_end": 1e-7, "power": 1.0},
    "inverse_sqrt": {"timescale": None},
    "cosine_with_min_lr": {"num_cycles": 0.5, "min_lr": None, "min_lr_rate": None},
    "cosine_warmup_with_min_lr": {"num_cycles": 0.5, "min_lr": None, "min_lr_rate": None,
                                  "warmup_lr_rate": None},
    "warmup_stable_decay": {"num_decay_steps": REQUIRED, "num_stable_steps": None,
                            "warmup_type": "linear", "decay_type": "cosine", "min_lr_ratio": 0.0,
                            "num_cycles": 0.5},
}
_WHOLE = ("timescale", "num_decay_steps", "num_stable_steps")
_TEXT = ("warmup_type", "decay_type")


def check_schedule(kind, kwargs, base_lr):
    """ValueError naming what is wrong with schedule `kind` and its `kwargs` (a dict or None)
    for base rate `base_lr`: an unknown kind, a keyword the kind does not take (transformers
    raises a TypeError for those), a value of the wrong kind, or one its function refuses."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type must be one of {', '.join(SCHEDULES)} "
                         f"(transformers' names), got {kind!r}")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise ValueError(f"lr_scheduler_kwargs must be an object of keywords, got {kwargs!r:.60}")
    takes = KWARGS[kind]
    wrong = sorted(set(kwargs) - set(takes))
    if wrong:
        what = f"takes {', '.join(takes)}" if takes else "takes none"
        raise ValueError(f"lr_scheduler_kwargs {', '.join(map(repr, wrong))}: lr_scheduler_type "
                         f"{kind} {what}")
    for name, value in kwargs.items():
        if name in _TEXT:
            if value not in SHAPES:
                raise ValueError(f"lr_scheduler_kwargs {name} must be one of {', '.join(SHAPES)}, "
                                 f"got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or name in _WHOLE and not isinstance(value, int) \
                or name == "timescale" and value == 0:
            kind_of = "a whole number > 0" if name == "timescale" else "a whole number >= 0" \
                if name in _WHOLE else "a finite number >= 0"
            raise ValueError(f"lr_scheduler_kwargs {name} must be {kind_of}, got {value!r}")
    missing = [n for n, default in takes.items() if default is REQUIRED and n not in kwargs]
    if missing:
        raise ValueError(f"lr_scheduler_type {kind} needs lr_scheduler_kwargs {', '.join(missing)}")
    if kind == "polynomial" and not base_lr > kwargs.get("lr_end", 1e-7):
        raise ValueError(f"lr_scheduler_kwargs lr_end ({kwargs['lr_end']!r}) must be smaller than "
                         f"the learning rate ({base_lr!r})")
    if kind.endswith("with_min_lr") and ("min_lr" in kwargs) == ("min_lr_rate" in kwargs):
        raise ValueError(f"lr_scheduler_type {kind} needs one of lr_scheduler_kwargs min_lr or "
                         "min_lr_rate")


def learning_rate(step, base_lr, warmup_steps, total_steps, kind="linear", kwargs=None):
    """The learning rate for optimizer step `step` (0-based, as LambdaLR counts) of a run of
    `total_steps`, the first `warmup_steps` of them warming up, on schedule `kind` with its
    lr_scheduler_kwargs `kwargs` (checked by check_schedule, as TrainConfig checks them)."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    options = {n: v for n, v in KWARGS[kind].items() if v is not REQUIRED}
    options.update(kwargs or {})
    return base_lr * _factor(kind, step, warmup_steps, total_steps, base_lr, **options)


def _factor(kind, step, warmup, total, base_lr, num_cycles=None, lr_end=None, power=None,
            timescale=None, min_lr=None, min_lr_rate=None, warmup_lr_rate=None,
            num_decay_steps=None, num_stable_steps=None, warmup_type=None, decay_type=None,
            min_lr_ratio=None):
    """The factor of the base rate (LambdaLR's lambda) at `step`."""
    if kind == "constant":
        return 1.0
    if kind == "warmup_stable_decay":
        return _warmup_stable_decay(step, warmup, total, num_decay_steps, num_stable_steps,
                                    warmup_type, decay_type, min_lr_ratio, num_cycles)
    if kind == "cosine_warmup_with_min_lr":
        return _cosine_warmup_with_min_lr(step, warmup, total, num_cycles,
                                          min_lr / base_lr if min_lr is not None else min_lr_rate,
                                          warmup_lr_rate)
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant_with_warmup":
        return 1.0
    if kind == "inverse_sqrt":
        timescale = timescale if timescale is not None else warmup or 10_000
        return 1.0 / math.sqrt((step + timescale - warmup) / timescale)
    if kind == "polynomial":
        if step > total:
            return lr_end / base_lr
        remaining = 1 - (step - warmup) / ((total - warmup) or 1)   # (0: transformers divides by it)
        return ((base_lr - lr_end) * remaining ** power + lr_end) / base_lr
    progress = float(step - warmup) / float(max(1, total - warmup))
    if kind == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))
    if kind in ("cosine", "cosine_with_min_lr"):
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        if kind == "cosine":
            return max(0.0, factor)
        rate = min_lr / base_lr if min_lr is not None else min_lr_rate
        return max(0, factor * (1 - rate) + rate)
    return max(0.0, float(total - step) / float(max(1, total - warmup)))     # linear


def _cosine_warmup_with_min_lr(step, warmup, total, num_cycles, min_lr_rate, warmup_lr_rate):
    """transformers' cosine_warmup_with_min_lr, in floats throughout as there."""
    step, warmup, total = float(step), float(warmup), float(total)
    if step < warmup:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, warmup)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * step / max(1, warmup - 1)
    progress = (step - warmup + 1.0) / max(1.0, total - warmup)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0, factor * (1 - min_lr_rate) + min_lr_rate)


def _warmup_stable_decay(step, warmup, total, decay_steps, stable_steps, warmup_type, decay_type,
                         min_lr_ratio, num_cycles):
    """transformers' get_wsd_schedule (stable steps default to what warmup and decay leave of
    the run)."""
    if stable_steps is None:
        stable_steps = total - warmup - decay_steps
    if step < warmup:
        progress = float(step) / float(max(1, warmup))
        factor = {"linear": lambda: progress,
                  "cosine": lambda: 0.5 * (1.0 - math.cos(math.pi * progress)),
                  "1-sqrt": lambda: 1.0 - math.sqrt(1.0 - progress)}[warmup_type]()
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < warmup + stable_steps:
        return 1.0
    if step < warmup + stable_steps + decay_steps:
        progress = float(step - warmup - stable_steps) / float(max(1, decay_steps))
        factor = {"linear": lambda: 1.0 - progress,
                  "cosine": lambda: 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)),
                  "1-sqrt": lambda: 1.0 - math.sqrt(progress)}[decay_type]()
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio
