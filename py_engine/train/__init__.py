"""Training: optimizer schedule, trainer, batching of steps."""
