"""Learning-rate schedules, matching transformers' get_linear_schedule_with_warmup."""


def linear_warmup_decay(step, base_lr, warmup_steps, total_steps):
    """The learning rate for optimizer step `step` (0-based, as LambdaLR counts).

    Rises linearly from 0 over `warmup_steps`, then falls linearly to 0 at `total_steps`.
    """
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
