"""A classifier head's rows by label: which old row each new label's comes from, and the
rows taken so (relabelling a classifier, starting from a fine-tuned checkpoint's head)."""

import math
from array import array


def label_sources(old_labels, new_labels, renamed=None, fewest=2):
    """For each of `new_labels`, the index of the old label its head row comes from (a kept
    label, or one `renamed` {old: new} names), or None for an added label. `fewest`: how many
    labels the head needs (a single-label classifier two, a multi-label or regression one)."""
    renamed = dict(renamed or {})
    new_labels = list(new_labels)
    if len(set(new_labels)) != len(new_labels) or len(new_labels) < fewest:
        raise ValueError(f"labels must be {'two' if fewest == 2 else 'one'} or more distinct "
                         f"names, got {new_labels}")
    unknown = sorted(set(renamed) - set(old_labels))
    if unknown:
        raise ValueError(f"cannot rename {unknown}: not among the labels {list(old_labels)}")
    missing = sorted(set(renamed.values()) - set(new_labels))
    if missing:
        raise ValueError(f"labels renamed to {missing} are not in the new labels {new_labels}")
    if len(set(renamed.values())) != len(renamed):
        raise ValueError(f"two labels are renamed to the same name: {renamed}")
    origin = {new: old for old, new in renamed.items()}
    index = {name: i for i, name in enumerate(old_labels)}
    sources = []
    for name in new_labels:
        old = origin.get(name, name if name not in renamed else None)
        sources.append(index.get(old))
    if all(s is None for s in sources):
        raise ValueError(f"no label of {list(old_labels)} is kept in {new_labels}: train a new "
                         "classifier instead")
    return sources


def relabel_rows(shape, data, sources):
    """(shape, array('f')) of a head tensor ([C, H] weight or [C] bias) with its rows taken
    from `sources` (label_sources); an added row is the mean of the kept ones."""
    width = len(data) // shape[0]
    rows = [data[i * width:(i + 1) * width] for i in range(shape[0])]
    kept = [rows[s] for s in sources if s is not None]
    mean = array("f", (math.fsum(col) / len(kept) for col in zip(*kept)))
    out = array("f")
    for s in sources:
        out.extend(rows[s] if s is not None else mean)
    return (len(sources),) + tuple(shape[1:]), out
