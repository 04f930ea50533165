"""LoRA configuration with PEFT's names, defaults and adapter_config.json layout.

An adapter trained here is meant to load with `PeftModel.from_pretrained` and back, so the
hyperparameter names (r, lora_alpha, lora_dropout, target_modules, bias, modules_to_save) and
the JSON written are PEFT's own.
"""

import copy
import re
from pathlib import Path

# PEFT's defaults for BERT-family models (peft.utils.constants: bert -> ["query", "value"]).
BERT_TARGET_MODULES = ("query", "value")
SEQ_CLS_MODULES_TO_SAVE = ("classifier", "score")  # PEFT adds these for task_type SEQ_CLS
PEFT_VERSION = "0.21.2"


class LoraConfigError(ValueError):
    pass


ALL_LINEAR = "all-linear"    # PEFT's target_modules keyword: every linear layer of the model

# PEFT's bias option: which of the base model's biases train beside the adapter (their values
# saved in the adapter file): none; those of the LoRA-wrapped linears; every bias of the model.
LORA_BIAS = ("none", "lora_only", "all")


class LoraConfig:
    def __init__(self, r=8, lora_alpha=8, lora_dropout=0.0, target_modules=None, bias="none",
                 modules_to_save=None, task_type="SEQ_CLS", use_rslora=False,
                 base_model_name_or_path=None, fan_in_fan_out=False, exclude_modules=None,
                 layers_to_transform=None, layers_pattern=None, rank_pattern=None,
                 alpha_pattern=None, init_lora_weights=True, use_dora=False,
                 ensure_weight_tying=False, trainable_token_indices=None, lora_bias=False,
                 **unsupported):
        # Options we do not implement must not be silently ignored.
        unsupported = {k: v for k, v in unsupported.items() if v not in (None, False, {}, [], "")
                       and k not in _IGNORED_PEFT_FIELDS}
        if unsupported:
            raise LoraConfigError(f"unsupported LoRA options: {sorted(unsupported)}")
        _check_rank("r", r)
        _check_alpha("lora_alpha", lora_alpha)
        _check_init(init_lora_weights)
        use_dora = False if use_dora is None else use_dora
        rank_pattern = _module_patterns("rank_pattern", rank_pattern, _check_rank)
        alpha_pattern = _module_patterns("alpha_pattern", alpha_pattern, _check_alpha)
        if isinstance(lora_dropout, bool) or not isinstance(lora_dropout, (int, float)) \
                or not 0.0 <= lora_dropout < 1.0:
            raise LoraConfigError(f"lora_dropout must be a number in [0, 1), got {lora_dropout!r}")
        if bias not in LORA_BIAS:
            raise LoraConfigError(f"bias must be one of {', '.join(map(repr, LORA_BIAS))} (PEFT's "
                                  f"values), got {bias!r}")
        if isinstance(target_modules, str):       # PEFT: a regular expression over full names
            target_modules = _pattern("target_modules", target_modules)
        else:
            target_modules = _names("target_modules", target_modules)
        modules_to_save = _names("modules_to_save", modules_to_save)
        if isinstance(exclude_modules, str):
            exclude_modules = _pattern("exclude_modules", exclude_modules)
        elif exclude_modules is not None:
            exclude_modules = _names("exclude_modules", exclude_modules)
        if isinstance(target_modules, str) and (layers_to_transform, layers_pattern) != (None, None):
            raise LoraConfigError("layers_to_transform and layers_pattern cannot narrow a "
                                  "target_modules regular expression (a string), as in PEFT")
        if layers_pattern and layers_to_transform is None:
            raise LoraConfigError("layers_pattern needs layers_to_transform, as in PEFT")
        layers_to_transform = _layer_indexes(layers_to_transform)
        if isinstance(layers_pattern, str):
            layers_pattern = [layers_pattern]
        layers_pattern = _names("layers_pattern", layers_pattern)
        for name, value in (("use_rslora", use_rslora), ("fan_in_fan_out", fan_in_fan_out),
                            ("use_dora", use_dora), ("ensure_weight_tying", ensure_weight_tying),
                            ("lora_bias", lora_bias)):
            if not isinstance(value, bool):
                raise LoraConfigError(f"{name} must be true or false, got {value!r}")
        if lora_bias and use_dora:
            raise LoraConfigError("lora_bias (a bias on lora_B) with DoRA (use_dora): PEFT refuses "
                                  "the pair, and so does this; choose one")
        if use_dora and isinstance(init_lora_weights, str) and init_lora_weights.lower() in REBUILT_INITS:
            raise LoraConfigError(f"init_lora_weights {init_lora_weights!r} with DoRA (use_dora) is "
                                  "not built here: choose one")
        if lora_bias and init_lora_weights not in (True, False):
            raise LoraConfigError(f"lora_bias (a bias on lora_B) takes init_lora_weights true or "
                                  f"false, as in PEFT; got {init_lora_weights!r}")
        self.r = r
        self.lora_alpha = lora_alpha
        self.lora_dropout = float(lora_dropout)
        # Which layers these name is decided against the model (PEFT's rules), there.
        self.target_modules = target_modules if isinstance(target_modules, str) else \
            list(target_modules or BERT_TARGET_MODULES)
        self.bias = bias
        self.task_type = task_type
        self.use_rslora = bool(use_rslora)
        self.modules_to_save = list(modules_to_save) if modules_to_save is not None else (
            list(SEQ_CLS_MODULES_TO_SAVE) if task_type == "SEQ_CLS" else [])
        self.base_model_name_or_path = base_model_name_or_path
        # True for models whose linears are Conv1D ([in, out], GPT-2): the model family sets
        # it, as PEFT does; the adapter tensors' shapes are the same either way.
        self.fan_in_fan_out = bool(fan_in_fan_out)
        # PEFT's narrowing of the targets (see lora.match_targets)
        self.exclude_modules = exclude_modules
        self.layers_to_transform = layers_to_transform
        self.layers_pattern = layers_pattern
        # Per-module r and lora_alpha, by PEFT's rules (see rank_of); written by PEFT's own
        # tools (EVA initialisation, PiSSA/OLoRA conversion, conversion of other adapter types).
        self.rank_pattern = rank_pattern
        self.alpha_pattern = alpha_pattern
        # DoRA: each wrapped linear also trains a magnitude per output feature (see ops/dora.py)
        self.use_dora = use_dora
        # PEFT's lora_bias: lora_B is a linear with a bias of its own, so that the adapter adds
        # scaling * (B.A x + b_B); the merge adds scaling * b_B to the base layer's bias
        self.lora_bias = lora_bias
        # a tied embedding and output layer that modules_to_save names train as one table
        # (PEFT 0.18's option; without it PEFT trains a copy of each)
        self.ensure_weight_tying = ensure_weight_tying
        # PEFT's trainable tokens: some rows of the embedding trained (models/trainable_tokens.py);
        # a list (the embedding's rows) or {module: rows}
        self.trainable_token_indices = _token_indices(trainable_token_indices)
        # how a new adapter's first values are drawn (fresh_init; train/init.py draws them)
        self.init_lora_weights = init_lora_weights

    def fresh_init(self):
        """The init_lora_weights a new adapter is drawn with: True (PEFT's default: lora_A
        from kaiming_uniform, lora_B zeros), False (both from kaiming_uniform: the adapter
        changes the model from the start), "gaussian" (lora_A from N(0, 1/r), lora_B zeros) or
        "orthogonal" (lora_A and lora_B from halves of one orthogonal matrix, so that B.A is
        zero; an even r), "pissa" or "olora" (both taken out of the base weights, which the
        model then holds less them: train/base_init.py). Another value (EVA, LoRA-GA, MiCA: data or the base weights' SVD) is
        read when an adapter trained with it is loaded, but no new adapter is drawn with it:
        LoraConfigError."""
        init = self.init_lora_weights
        if isinstance(init, str) and init.lower() in ("gaussian", "olora"):
            init = init.lower()
        if init not in (True, False, "gaussian", "orthogonal", *REBUILT_INITS):
            raise LoraConfigError(f"init_lora_weights {init!r} draws a new adapter's first values "
                                  "from the training data or the base weights' decomposition, "
                                  "which is not done here; choose true, false, gaussian, "
                                  "orthogonal, pissa or olora (an adapter trained with it loads)")
        if init == "orthogonal":
            odd = sorted({r for r in [self.r, *self.rank_pattern.values()] if r % 2})
            if odd:
                raise LoraConfigError(f"init_lora_weights orthogonal needs an even rank, as "
                                      f"PEFT's; got {odd[0]}")
        return init

    @property
    def scaling(self):
        """PEFT's scale on the LoRA path: alpha / r, or alpha / sqrt(r) with rsLoRA (of a module
        rank_pattern and alpha_pattern leave at r and lora_alpha: see scaling_of)."""
        return self._scaling(self.r, self.lora_alpha)

    def rank_of(self, module):
        """The r of the adapter on `module` (its full name in the base model, as PEFT's
        current_key): rank_pattern's value for its first key that matches, else r."""
        return _pattern_value(self.rank_pattern, module, self.r)

    def alpha_of(self, module):
        """The lora_alpha of the adapter on `module`, from alpha_pattern as rank_of."""
        return _pattern_value(self.alpha_pattern, module, self.lora_alpha)

    def scaling_of(self, module):
        """The scale on `module`'s LoRA path, from its own r and alpha."""
        return self._scaling(self.rank_of(module), self.alpha_of(module))

    def _scaling(self, r, alpha):
        return alpha / (r ** 0.5 if self.use_rslora else r)

    def to_peft_dict(self):
        """adapter_config.json as PEFT 0.21 writes it for these options."""
        return {
            "alpha_pattern": dict(self.alpha_pattern), "auto_mapping": None,
            "base_model_name_or_path": self.base_model_name_or_path, "bias": self.bias,
            "ensure_weight_tying": self.ensure_weight_tying,
            "exclude_modules": self.exclude_modules, "fan_in_fan_out": self.fan_in_fan_out,
            "inference_mode": True, "init_lora_weights": self.init_lora_weights,
            "layer_replication": None,
            "layers_pattern": self.layers_pattern, "layers_to_transform": self.layers_to_transform,
            "loftq_config": {}, "lora_alpha": self.lora_alpha,
            "lora_bias": self.lora_bias, "lora_dropout": self.lora_dropout, "megatron_config": None,
            "megatron_core": "megatron.core", "modules_to_save": self.modules_to_save,
            "peft_type": "LORA", "peft_version": PEFT_VERSION, "r": self.r,
            "rank_pattern": dict(self.rank_pattern),
            "revision": None, "target_modules": self.target_modules, "target_parameters": None,
            "task_type": self.task_type,
            "trainable_token_indices": copy.deepcopy(self.trainable_token_indices),
            "use_dora": self.use_dora,
            "use_qalora": False, "use_rslora": self.use_rslora,
        }

    def with_targets(self, target_modules):
        """A copy that targets these modules (a list of names) instead."""
        other = copy.copy(self)
        other.target_modules = _names("target_modules", target_modules)
        return other

    @classmethod
    def from_peft_dict(cls, data, default_targets=None):
        """From adapter_config.json's fields. Without target_modules, PEFT targets its default
        modules for the model's family: `default_targets` (BERT's when None)."""
        if data.get("peft_type", "LORA") != "LORA":
            raise LoraConfigError(f"adapter is {data.get('peft_type')!r}, not LORA")
        fields = {k: v for k, v in data.items() if k not in ("peft_type",)}
        if fields.get("target_modules") is None and default_targets:
            fields["target_modules"] = list(default_targets)
        try:
            return cls(**fields)
        except LoraConfigError as e:
            raise LoraConfigError(f"adapter_config.json: {e}") from None

    @classmethod
    def from_language_model_dict(cls, data, default_targets, whole_modules=()):
        """A language model's adapter (chat models, T5). modules_to_save trains whole modules
        beside the LoRA (the embedding and the output layer, as when tokens were added): those
        of `whole_modules` (the family's modules that may train whole, full names) are read,
        an entry naming a module whole or by its last parts (PEFT's rule); any other entry is
        refused by name, since dropping it would give another model than the adapter's."""
        from .saved_modules import check_saved_modules

        saved = _names("modules_to_save", data.get("modules_to_save")) or []
        check_saved_modules(saved, whole_modules, "adapter_config.json: ")
        lora = cls.from_peft_dict(dict(data, modules_to_save=None), default_targets)
        lora.modules_to_save = saved
        return lora

    @classmethod
    def from_file(cls, path):
        path = Path(path)
        if path.is_dir():
            path = path / "adapter_config.json"
        if not path.is_file():
            raise LoraConfigError(f"no adapter_config.json at {path}")
        from ..formats.json_file import read_json_object

        return cls.from_peft_dict(read_json_object(path))


def _check_rank(field, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LoraConfigError(f"{field} must be a positive int, got {value!r}")


def _check_alpha(field, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value < float("inf"):
        raise LoraConfigError(f"{field} must be a positive finite number, got {value!r}")


# init_lora_weights PEFT applies to the base model's weights whenever the adapter loads: it takes
# the initial adapter out of them (PiSSA, CorDA, OLoRA) or quantizes them (LoftQ), so the trained
# tensors are meant for that changed base. PiSSA's full decomposition and OLoRA's are rebuilt
# here too (train/base_init.py); the others are not.
_BASE_CHANGING_INITS = ("pissa", "corda", "olora", "loftq")
REBUILT_INITS = ("pissa", "olora")


def _check_init(value):
    if not isinstance(value, (bool, str)):
        raise LoraConfigError(f"init_lora_weights must be true, false or the name of an "
                              f"initialisation, got {value!r:.60}")
    if not isinstance(value, str) or value == "pissa" or value.lower() == "olora":
        return
    if value.startswith("pissa_niter_"):
        raise LoraConfigError(
            f"init_lora_weights {value!r}: PiSSA over a random subspace (torch's svd_lowrank), "
            "which no load rebuilds, PEFT's own neither; use 'pissa' (the full decomposition), "
            "or convert the adapter into a plain LoRA adapter with PEFT "
            "(save_pretrained(..., path_initial_model_for_weight_conversion=...)) and load that")
    if value.lower().startswith(_BASE_CHANGING_INITS):
        raise LoraConfigError(
            f"init_lora_weights {value!r}: PEFT changes the base model's weights when such an "
            "adapter loads (the adapter's first values are taken out of them, or they are "
            "quantized), which is done here for pissa and olora only; convert it into a plain "
            "LoRA adapter with PEFT (save_pretrained(..., "
            "path_initial_model_for_weight_conversion=...)) and load that")


def _module_patterns(field, value, check):
    """rank_pattern / alpha_pattern: {regular expression over module names: value}; None or {}
    for none."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LoraConfigError(f"{field} must be an object of module name patterns, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise LoraConfigError(f"{field} keys must be module name patterns, got {key!r}")
        try:
            re.compile(key)
        except re.error as e:
            raise LoraConfigError(f"{field} key {key!r} is not a regular expression: {e}") from None
        check(f"{field}[{key!r}]", item)
    return dict(value)


def _pattern_value(patterns, module, default):
    """PEFT's get_pattern_key: the first key (in the file's order) that matches the end of the
    module's name at a dot boundary, as a regular expression; its value, else `default`."""
    for key, value in patterns.items():
        if _pattern_matches(key, module):
            return value
    return default


def _pattern_matches(key, module):
    return re.match(rf"(.*\.)?({key})$", module) is not None


def unmatched_pattern_keys(lora, modules):
    """{field: keys} of rank_pattern's and alpha_pattern's keys that match none of `modules`
    (full names): passed over, as PEFT passes them over (with a warning)."""
    found = {}
    for field in ("rank_pattern", "alpha_pattern"):
        keys = sorted(k for k in getattr(lora, field)
                      if not any(_pattern_matches(k, m) for m in modules))
        if keys:
            found[field] = keys
    return found


def _layer_indexes(value):
    """layers_to_transform: None, a layer index, or a list of them (PEFT's forms)."""
    if value is None or value == []:
        return None
    indexes = [value] if isinstance(value, int) else value
    if not isinstance(indexes, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                and i >= 0 for i in indexes):
        raise LoraConfigError(f"layers_to_transform must be a layer index or a list of them, "
                              f"got {value!r}")
    return value


def _pattern(field, value):
    """A target_modules string: as in PEFT, a regular expression each module's full name must
    match whole (re.fullmatch), but PEFT's keyword "all-linear" (any case) for every linear
    layer of the model (Linears spells them out)."""
    if field == "target_modules" and value.lower() == ALL_LINEAR:
        return ALL_LINEAR
    try:
        re.compile(value)
    except re.error as e:
        raise LoraConfigError(f"{field} {value!r} is not a regular expression: {e}") from None
    return value


def _names(field, value):
    """A list of module names (None stays None); LoraConfigError for anything else, and for
    PEFT's forms we do not implement (a regular expression in a list: PEFT reads one only as the
    whole target_modules string; "all-linear" in a list)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise LoraConfigError(f"{field} must be a list of module names, got {value!r}")
    for name in value:
        if name.lower() == ALL_LINEAR:
            raise LoraConfigError(f"{field} ['all-linear'] names a module 'all-linear'; PEFT's "
                                  "keyword for every linear layer is the string 'all-linear', "
                                  "not a list")
        if not re.fullmatch(r"\w+(\.\w+)*", name):
            raise LoraConfigError(f"{field} {name!r} is not a module name (regular "
                                  "expressions are not supported): name the modules, such as "
                                  "['query', 'value']")
    return list(value)


def _token_indices(value):
    """trainable_token_indices checked: None, a list of token ids, or {module name: list}."""
    if value is None:
        return None

    def ids(where, rows):
        if not isinstance(rows, (list, tuple)) or not rows or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in rows):
            raise LoraConfigError(f"{where} must be a non-empty list of token ids, got {rows!r:.80}")
        if len(set(rows)) != len(rows):
            raise LoraConfigError(f"{where} names a token twice: {rows!r:.80}")
        return list(rows)

    if isinstance(value, dict):
        if not value:
            raise LoraConfigError("trainable_token_indices is an empty dict")
        for module in value:
            _names("trainable_token_indices", [module])
        return {module: ids(f"trainable_token_indices[{module!r}]", rows)
                for module, rows in value.items()}
    return ids("trainable_token_indices", value)


# PEFT fields that change nothing for the adapters built here (bookkeeping, or options whose
# effect is only at initialization). Any other field set to a non-default value is refused.
_IGNORED_PEFT_FIELDS = {
    "auto_mapping", "inference_mode", "loftq_config", "megatron_config",
    "megatron_core", "peft_version", "revision", "qalora_group_size",
    "runtime_config",       # some PEFT versions saved it; PEFT drops it on load (runtime only)
}
