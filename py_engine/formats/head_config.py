"""head_config.json: how a classifier adapter pools the encoder's output, which PEFT's files
have no field for. "cls" is transformers' sequence classifier head (the first token through
the pooler, BertForSequenceClassification's, or the family's own), what an adapter made by PEFT
always means; "mean" averages the tokens (what
sentence-embedding checkpoints such as MiniLM were trained for); "last" is a decoder's
sequence classifier's, its last real token (models/decoder_classifier.py).

py_engine writes head_config.json beside every classifier adapter it saves, cls included, so a
missing file means the adapter was made elsewhere (cls), never that the choice was lost; an
adapter py_engine wrote that has lost the file is an error rather than a silent change of
pooling and of every probability.

    write: {HEAD_CONFIG: head_config(pooling, problem_type)} in save_adapter's extra_json
    read:  pooling, note = resolve_pooling(adapter_dir, requested)
           problem_type = resolve_problem_type(read_head_config(adapter_dir), requested, where)

It records the kind of head too (transformers' problem_type) where it is not single-label:
PEFT's files do not say it either.
"""

import json
from pathlib import Path

from ..labels import SINGLE_LABEL, check_problem_type
from .json_file import read_json_object
from .output_dir import written_by_py_engine

HEAD_CONFIG = "head_config.json"
POOLINGS = ("cls", "mean", "last")     # "last": a decoder classifier's last real token


def checkpoint_pooling(model_dir):
    """The pooling a sentence-transformers checkpoint was made with, "mean" or "cls", where
    its modules.json names a Pooling module whose config.json pools only that way; None
    otherwise (not such a checkpoint, other or several modes, files that cannot be read: this
    only informs a choice)."""
    model_dir = Path(model_dir)
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        for module in modules if isinstance(modules, list) else []:
            if not (isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling")):
                continue
            folder = (model_dir / str(module.get("path", ""))).resolve()
            if not folder.is_relative_to(model_dir.resolve()):
                return None
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            modes = {k for k, v in config.items() if k.startswith("pooling_mode_") and v is True}
            return {frozenset({"pooling_mode_mean_tokens"}): "mean",
                    frozenset({"pooling_mode_cls_token"}): "cls"}.get(frozenset(modes))
    except (OSError, ValueError, AttributeError):
        return None
    return None


class HeadConfigError(ValueError):
    """A head_config.json that cannot be used, or a pooling that disagrees with it."""


def head_config(pooling, problem_type=SINGLE_LABEL):
    """The contents of head_config.json for a classifier pooled this way, with its kind of
    head where it is not a single-label classifier's (a file without one means single-label,
    as every adapter written before the other kinds were built)."""
    if pooling not in POOLINGS:
        raise HeadConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    config = {"pooling": pooling}
    if check_problem_type(problem_type) != SINGLE_LABEL:
        config["problem_type"] = problem_type
    return config


def read_head_config(adapter_dir):
    """The contents of `adapter_dir`/head_config.json, or None when there is no file."""
    path = Path(adapter_dir) / HEAD_CONFIG
    if not path.exists():
        return None
    return read_json_object(path)


def read_pooling(adapter_dir):
    """The pooling recorded in `adapter_dir`/head_config.json, or None when there is no file."""
    config = read_head_config(adapter_dir)
    return None if config is None else pooling_of(config, Path(adapter_dir) / HEAD_CONFIG)


def problem_type_of(config, where):
    """The kind of head head_config.json's contents `config` record (None: no file, or a file
    without the field: single-label); HeadConfigError naming `where` for one not known."""
    value = config.get("problem_type") if isinstance(config, dict) else None
    try:
        return check_problem_type(value)
    except ValueError as e:
        raise HeadConfigError(f"{where}: {e}") from None


def resolve_problem_type(config, requested, where):
    """The kind of head to load an adapter with: what its head_config.json contents `config`
    record (single-label without a record), which `requested` (if given) must agree with."""
    recorded = problem_type_of(config, f"{where}/{HEAD_CONFIG}")
    if requested is not None and check_problem_type(requested) != recorded:
        raise HeadConfigError(f"{where} holds a {recorded} head (its {HEAD_CONFIG}), not a "
                              f"{requested} one")
    return recorded


def pooling_of(config, where):
    """The pooling head_config.json's contents `config` record (HeadConfigError naming `where`
    for one that is not read here)."""
    pooling = config.get("pooling", "cls") if isinstance(config, dict) else None
    if pooling not in POOLINGS:
        raise HeadConfigError(f"{where}: unknown pooling {pooling!r:.60}; expected one of "
                              f"{', '.join(POOLINGS)}")
    return pooling


def resolve_pooling(adapter_dir, requested=None, default="cls"):
    """(pooling, note): the pooling to load `adapter_dir` with, and a note for the user (or
    None). A recorded pooling wins and `requested` (if given) must agree with it; without a
    record, `requested` is taken, else `default` (the model's sequence classifier's: "cls", or
    ModernBERT's config.json's classifier_pooling) with a note, unless py_engine wrote the
    adapter (then the file is missing and that is an error)."""
    if requested is not None and requested not in POOLINGS:
        raise HeadConfigError(f"unknown pooling {requested!r}; choose one of {', '.join(POOLINGS)}")
    saved = read_pooling(adapter_dir)
    if saved is not None:
        if requested is not None and requested != saved:
            raise HeadConfigError(f"{adapter_dir} was trained with {saved} pooling, not "
                                  f"{requested} (see its {HEAD_CONFIG})")
        return saved, None
    if requested is not None:
        return requested, None
    if written_by_py_engine(adapter_dir) is not None:
        raise HeadConfigError(f"{adapter_dir} was written by py_engine but its {HEAD_CONFIG} is "
                              "missing, so its pooling is unknown; give the pooling it was "
                              "trained with (cls or mean)")
    return default, (f"{adapter_dir} has no {HEAD_CONFIG} (an adapter made by PEFT): using "
                     f"{default} pooling, as the model's sequence classifier pools")
