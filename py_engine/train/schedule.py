"""Learning-rate schedules, as transformers' get_scheduler makes them (TrainingArguments'
lr_scheduler_type): each the base rate times a factor of the optimizer step, after a warmup
that rises linearly from 0.

    linear                 falls linearly to 0 at the last step (get_linear_schedule_with_warmup)
    cosine                 falls along half a cosine to 0 (get_cosine_schedule_with_warmup)
    constant               the base rate at every step, warmup or not (get_constant_schedule)
    constant_with_warmup   the base rate after the warmup (get_constant_schedule_with_warmup)
"""

import math

SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


def learning_rate(step, base_lr, warmup_steps, total_steps, kind="linear"):
    """The learning rate for optimizer step `step` (0-based, as LambdaLR counts) of a run of
    `total_steps`, the first `warmup_steps` of them warming up, on schedule `kind`."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    if kind == "constant":
        return base_lr
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    if kind == "constant_with_warmup":
        return base_lr
    if kind == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return base_lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
