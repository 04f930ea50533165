"""Who answers for a tab: the model, unless it is unsure and the rules know the site.

    label, source = choose(prediction, rules_label)               # source: "model" | "rules"
    label, source = choose(prediction, rules_label, trusted=True) # a site the user corrected

The model is right on most tabs, but a site whose tab text does not say what it is (a
Mastodon server, a Mattermost one, a dating app) leaves it unsure, and on such tabs the rules'
domain lists (rules.py) are more often right than its guess. So when the model's probability
for its answer is under UNSURE_BELOW and the rules give a category it has, the rules answer.

UNSURE_BELOW was read off the generator's validation split, not the hand-checked tabs:
`python bench/tabs_eval.py` sweeps it and records the accuracy at each value (the shipped
adapter, 1,400 generated tabs: the model alone 97.36%, the rules under 0.9 97.50%, the best of
the sweep; on the evaluation tabs 91.64% -> 93.9%, on the holdout 93.9% -> 94.6%).

A site the user corrected is the model's: what it learned from the user outranks the rules,
however unsure (a correction is learned to a probability of 0.6-0.9, not 1), so the caller
says `trusted` for those tabs.
"""

UNSURE_BELOW = 0.9


def choose(prediction, rules_label, trusted=False, unsure_below=UNSURE_BELOW):
    """(label, "model" | "rules") for a tab the model predicted as `prediction` ({"label",
    "probs"}) and the rules as `rules_label` (a label of the model's, in the same naming, or
    None: the rules do not know the tab, or answer a category the model lacks)."""
    label = prediction["label"]
    if (not trusted and rules_label is not None and rules_label in prediction["probs"]
            and prediction["probs"][label] < unsure_below):
        return rules_label, "rules"
    return label, "model"
