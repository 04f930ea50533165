"""The `dropout` option every model takes (TextClassifier.create, ChatModel.create, the CLI's
--dropout): the checkpoint's dropout probabilities, overridden by a float for all of them (0.0
turns dropout off for training) or by a dict naming some of them."""


class DropoutError(ValueError):
    pass


def override_rates(rates, dropout, family):
    """`rates` ({name: probability} from the checkpoint's config) with `dropout` applied: None
    keeps them; a float sets all of them; a dict sets the ones it names. A family with no
    dropout (`rates` empty) accepts 0.0 only."""
    rates = dict(rates)
    if dropout is None:
        return rates
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, dict)):
        raise DropoutError(f"dropout must be a probability or a dict of them, got {dropout!r}")
    if not isinstance(dropout, dict):
        if not rates and dropout != 0:
            raise DropoutError(f"the {family} has no dropout to set (got {dropout})")
        dropout = dict.fromkeys(rates, dropout)
    for key, p in dropout.items():
        if key not in rates:
            raise DropoutError(f"unknown dropout {key!r} for the {family}; choose from {sorted(rates)}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise DropoutError(f"dropout {key} must be in [0, 1), got {p!r}")
        rates[key] = float(p)
    return rates
