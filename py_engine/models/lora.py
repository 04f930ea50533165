"""The linear layers of a model and how each one runs, for every model family: which linears a
LoRA adapter wraps (PEFT's target-module rule), the names of their tensors, and one linear's
forward and backward whether it is frozen, LoRA-wrapped, merged for inference, or trained
itself (full fine-tuning). A language model's token embedding and output layer, which PEFT
wraps too, are `tables` (models/lora_tables.py).

    linears = Linears({"encoder.layer.0.attention.self.query": (384, 384), ...}, lora,
                      family="BERT model", adapter_prefix="bert.")
    linears.trainable        # {"bert.encoder.layer.0.attention.self.query.lora_A.weight": (r, 384), ...}
    y = linears.forward(be, module, x, saved, train)
    dx = linears.backward(be, module, dy, saved)

Tensor names: the base weight and bias are "{module}.weight" / "{module}.bias" as the model
holds them; the adapter's are "{adapter_prefix}{module}.lora_A.weight" / ".lora_B.weight", the
names PEFT's adapter files use after its "base_model.model." prefix (BERT classifiers keep
transformers' "bert." module prefix there). A merged weight W + scaling * B.A, for inference,
is "{module}.merged.weight". Each module's rank and scaling are its own where the adapter's
rank_pattern or alpha_pattern names it. With DoRA (use_dora) each wrapped linear also trains
"{adapter_prefix}{module}.lora_magnitude_vector" [out] (PEFT's name), and its merged weight is
scale * (W + scaling * B.A), scale = magnitude / each row's norm (ops/dora.py). With lora_bias
lora_B has a bias of its own, "{adapter_prefix}{module}.lora_B.bias" [out]: the layer adds
scaling * b_B to its output, and the merge adds it to the base layer's bias (which a merged
model needs the layer to have, as PEFT's merge does).
"""

import re
import warnings
from typing import NamedTuple

from .lora_config import ALL_LINEAR, LoraConfig, LoraConfigError, unmatched_pattern_keys
from .lora_tables import EMBEDDING, HEAD, LoraTables


class Merge(NamedTuple):
    """One LoRA-wrapped linear's merge W + scaling * B.A: its tensor names, rank and scale;
    with DoRA, the magnitude's name (the merge is then magnitude / row norm * (W + s B.A)). A
    LoRA-wrapped embedding's is W + scaling * (B.A)^T (`transposed`); `name`: the merged
    model's name of the result where it is not the base tensor's (a head tied to the
    embedding, merged on its own: "lm_head.weight"). With lora_bias, `lora_bias` names b_B and
    `bias` the base bias as the model reads it (a trained copy where the bias option trains it;
    None where the layer has none), whose merge is bias + scaling * b_B (see bias_target)."""
    merged: str
    weight: str
    lora_a: str
    lora_b: str
    rank: int
    scaling: float
    magnitude: str = None
    transposed: bool = False
    name: str = None
    lora_bias: str = None
    bias: str = None

    @property
    def target(self):
        """The merged model's name of the result."""
        return self.name or self.weight

    @property
    def bias_target(self):
        """The merged model's name of the merged bias (with lora_bias): the layer's bias."""
        return self.target[:-len("weight")] + "bias"


class LoraTargetError(ValueError):
    """A target_modules entry that names no linear layer of the model."""


def match_targets(modules, lora, family, prefix="", unprefixed=()):
    """The modules an adapter of LoraConfig `lora` wraps, in model order, by PEFT's rules
    (check_target_module_exists) on each module's full name in the base model (prefix +
    module): it matches a target of a list when it equals the target or ends with "." + target,
    and a target_modules string when it matches that regular expression whole; exclude_modules
    (a list or a string, read alike) takes modules out; layers_to_transform keeps, of the
    modules a list target matched by suffix, those of these layer indexes (the number after
    layers_pattern, or after the first name that a number follows). As in PEFT, a target that
    matches nothing is passed over when another matches (lists written for several families,
    such as ["q_proj", "v_proj", "query", "value"], are common in adapter_config.json files);
    targets that match nothing at all are an error naming the model's linears. The
    `unprefixed` modules sit beside the prefix (their full name is their own)."""
    chosen = [m for m in modules if _targeted(lora, m if m in unprefixed else prefix + m)]
    if not chosen:
        raise LoraTargetError(f"LoRA targets {_shown(lora)} match no linear layer of this "
                              f"{family} (its linear layers: {_last_names(modules)})")
    return chosen


def _shown(lora):
    """The config's target_modules as a message quotes them."""
    targets = lora.target_modules
    return repr(targets) if isinstance(targets, str) else list(targets)


def _last_names(modules):
    """The modules' last name parts, each once: "k_proj, q_proj, ..."."""
    return ", ".join(sorted({m.rsplit(".", 1)[-1] for m in modules}))


def _named(names, key):
    """Whether `key` is named by a target_modules-style value (a list, or a regular
    expression string)."""
    if isinstance(names, str):
        return re.fullmatch(names, key) is not None
    return key in names or any(key.endswith("." + name) for name in names)


def _targeted(lora, key):
    if lora.exclude_modules and _named(lora.exclude_modules, key):
        return False
    targets = lora.target_modules
    if isinstance(targets, str):
        return _named(targets, key)
    if key in targets:                  # named whole: layers_to_transform narrows only suffixes
        return True
    if not _named(targets, key):
        return False
    layers = lora.layers_to_transform
    if layers is None:
        return True
    if lora.layers_pattern:
        found = next(filter(None, (re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", key)
                                   for p in lora.layers_pattern)), None)
    else:
        found = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    if found is None:
        return False
    index = int(found.group("idx"))
    return index == layers if isinstance(layers, int) else index in layers


class Linears:
    """modules: {module name: (out_features, in_features)} in model order. lora: a LoraConfig,
    or None when no adapter is used; full: every linear's weight (and bias) trains."""

    def __init__(self, modules, lora, family, adapter_prefix="", full=False, conv1d=False,
                 params=None, unprefixed=(), passed_over=(), others=(), tables=None,
                 trainable_tokens=False):
        """conv1d: the checkpoint stores these linears as Conv1D ([in, out]), for which PEFT's
        adapters say fan_in_fan_out; for any other linear that option is refused. params:
        {checkpoint name: shape} of the tensors the model reads, among which the LoRA config's
        `bias` option finds the biases that train (see trained_biases); unprefixed: modules
        among them (linears or biases) that transformers keeps beside the adapter_prefix
        (DeBERTa's pooler); passed_over: modules among them read as they are where a target
        names them (a pooler an older adapter holds no LoRA for), which other modules a target
        names are refused (_refuse_other_targets); others: modules of the model beside
        these linears that the checkpoint may not hold (a tied output layer), refused alike;
        tables: {module: (kind, rows, cols)} of the token embedding (kind EMBEDDING; a language
        model's or an encoder's) and a language model's output layer (HEAD) that a LoRA may
        wrap as PEFT does (see LoraTables); trainable_tokens: the model trains PEFT's
        trainable tokens (rows of its embedding: DecoderModel), else they are refused."""
        if lora is not None and not isinstance(lora, LoraConfig):
            raise TypeError("lora must be a LoraConfig or None")
        if lora is not None and lora.fan_in_fan_out and not conv1d:
            raise LoraConfigError(f"fan_in_fan_out=True is for Conv1D layers; this {family} has none")
        self.modules = dict(modules)
        self.prefix = adapter_prefix
        self.unprefixed = frozenset(unprefixed)
        if lora is not None and lora.target_modules == ALL_LINEAR:
            # As PEFT does, the keyword becomes the names of every linear it wraps (their full
            # names), which the saved adapter_config.json lists; the model's output layer and a
            # classifier's head are not among these linears.
            lora = lora.with_targets([self.full_name(m) for m in self.modules])
        self.lora = lora
        self.full = full
        if lora is not None and lora.trainable_token_indices and not trainable_tokens:
            raise LoraConfigError(f"trainable_token_indices (PEFT's trainable tokens) trains rows "
                                  f"of a decoder's embedding here; this {family} takes none")
        # the embedding and output layer the adapter wraps (models/lora_tables.py)
        self.tables = LoraTables(tables or {}, lora, family,
                                 lambda m: _targeted(lora, self.full_name(m)), self.full_name)
        if lora is None:
            self.targets = []
        elif self.tables.targets:      # a LoRA on the tables alone names no linear: none needed
            self.targets = [m for m in self.modules if _targeted(lora, self.full_name(m))]
        else:
            self.targets = match_targets(list(self.modules), lora, family, adapter_prefix,
                                         self.unprefixed)
        if lora is not None:
            self._refuse_other_targets(lora, family, params or {},
                                       set(passed_over) | set(self.tables.targets), others)
        self._targeted = set(self.targets)
        self.merged = False
        # each wrapped module's rank and scale (rank_pattern, alpha_pattern), by its full name
        if lora is not None:
            for field, keys in unmatched_pattern_keys(
                    lora, [self.full_name(m) for m in self.targets + self.tables.targets]).items():
                warnings.warn(f"{field} keys {keys} match no module the adapter wraps: passed "
                              "over, as PEFT passes them over", RuntimeWarning, stacklevel=3)
        self.ranks = {m: lora.rank_of(self.full_name(m)) for m in self.targets}
        self.scalings = {m: lora.scaling_of(self.full_name(m)) for m in self.targets}
        self.dora = lora is not None and lora.use_dora
        self.lora_bias = lora is not None and lora.lora_bias
        # the linears that have a bias (a merge adds lora_bias's to it)
        self.biased = {m for m in self.modules if m + ".bias" in (params or {})}
        self.trainable = {}
        for m in self.targets:
            out_f, in_f = self.modules[m]
            self.trainable[self.lora_a(m)] = (self.ranks[m], in_f)
            self.trainable[self.lora_b(m)] = (out_f, self.ranks[m])
            if self.dora:
                self.trainable[self.magnitude(m)] = (out_f,)
            if self.lora_bias:
                self.trainable[self.lora_b_bias(m)] = (out_f,)
        self.trainable.update(self.tables.trainable())
        self.bias_keys = trained_biases(lora, family, params or {},
                                        self._targeted | set(self.tables.targets), adapter_prefix,
                                        self.unprefixed) if lora is not None and not full else {}
        for name, key in self.bias_keys.items():
            self.trainable[key] = tuple(params[name])

    def _refuse_other_targets(self, lora, family, params, passed_over, others):
        """A target naming a module of the model that is not one of these linears (an
        embedding, the output layer, a norm): PEFT would wrap it (LoRA on an nn.Embedding, on
        the output layer) or refuse it (a norm); passing it over would train something else
        than asked, so it is refused by name."""
        others = sorted(({n.rsplit(".", 1)[0] for n in params} | set(others))
                        - set(self.modules) - set(passed_over))
        named = [self.full_name(m) for m in others if _targeted(lora, self.full_name(m))]
        if named:
            raise LoraTargetError(
                f"LoRA targets {_shown(lora)} name {', '.join(named)}, which LoRA does not wrap "
                f"here (it wraps this {family}'s linear layers: {_last_names(self.modules)}); "
                "an embedding or output layer trains whole beside the LoRA with modules_to_save")

    def full_name(self, module):
        """`module`'s name in the base model, as PEFT's adapter files name it: the prefix
        added, but to the modules beside it."""
        return module if module in self.unprefixed else self.prefix + module

    def lora_a(self, module):
        return f"{self.full_name(module)}.lora_A.weight"

    def lora_b(self, module):
        return f"{self.full_name(module)}.lora_B.weight"

    def lora_b_bias(self, module):
        """lora_B's bias of `module` with lora_bias (PEFT's name in adapter files)."""
        return f"{self.full_name(module)}.lora_B.bias"

    def magnitude(self, module):
        """DoRA's magnitude vector of `module` (PEFT's name in adapter files)."""
        return f"{self.full_name(module)}.lora_magnitude_vector"

    def magnitude_weights(self):
        """{magnitude name: base weight name} of each DoRA-wrapped linear ({} without DoRA): a
        fresh adapter's magnitude is its base weight's row norms."""
        return {self.magnitude(m): f"{m}.weight" for m in self.targets} if self.dora else {}

    def merge_names(self):
        """A Merge (merged weight, base weight, lora_A, lora_B names; rank, scaling; DoRA's
        magnitude or None; with lora_bias, b_B's and the base bias's names) of each
        LoRA-wrapped linear."""
        return [Merge(f"{m}.merged.weight", f"{m}.weight", self.lora_a(m), self.lora_b(m),
                      self.ranks[m], self.scalings[m], self.magnitude(m) if self.dora else None,
                      lora_bias=self.lora_b_bias(m) if self.lora_bias else None,
                      bias=self.param_name(m + ".bias") if m in self.biased else None)
                for m in self.targets]

    def unmergeable(self):
        """The wrapped linears whose lora_B bias no merge can hold: those without a bias of
        their own (PEFT's merge refuses them too)."""
        return [self.full_name(m) for m in self.targets if self.lora_bias and m not in self.biased]

    def param_name(self, name):
        """The tensor the model reads for checkpoint tensor `name`: a bias that trains is read
        from its trainable copy (bias_keys), anything else from the checkpoint's."""
        return self.bias_keys.get(name, name)

    def bias_grad(self, be, name):
        """Where the gradient of checkpoint bias `name` goes: its trainable copy's, or with
        full fine-tuning its own (None when it does not train)."""
        key = self.bias_keys.get(name, name if self.full else None)
        return be.grad(key) if key is not None and key in be.grads else None

    def is_weight(self, name):
        """Whether `name` is one of these linears' weights that a GPU may store compressed:
        not a DoRA-wrapped one, whose row norms are taken with the update added to it in f32."""
        module = name[:-len(".weight")]
        return name.endswith(".weight") and module in self.modules and not (
            self.dora and module in self._targeted)

    def forward(self, be, module, x, saved, train):
        """y = x W^T + b, plus the adapter's scaling * B.A x when `module` is wrapped (through
        LoRA dropout while training). Keeps in `saved` what backward() needs."""
        w = be.param(module + ".weight")
        b = be.params.get(self.param_name(module + ".bias"))
        if module not in self._targeted:
            if self.full and train:
                saved[module] = x
            return be.linear(x, w, b)
        if self.lora_bias:       # y = x W^T + b + s (B.A x + b_B): the biases added first
            low = be.scale(be.param(self.lora_b_bias(module)), self.scalings[module])
            b = low if b is None else be.add(b, low)
        if self.merged and not train:
            return be.linear(x, be.param(module + ".merged.weight"), b)
        xd, drop = be.dropout(x, self.lora.lora_dropout if train else 0.0)
        if self.dora:
            return self._dora_forward(be, module, x, xd, drop, w, b, saved)
        y, h = be.lora_linear(x, xd, w, b, be.param(self.lora_a(module)),
                              be.param(self.lora_b(module)), self.scalings[module])
        saved[module] = (xd, drop, h)
        return y

    def backward(self, be, module, dy, saved, input_grad=True):
        """dx (None without input_grad); the adapter's gradients, or with full fine-tuning the
        weight's and bias's, accumulated into be.grad."""
        w = be.param(module + ".weight")
        db = self.bias_grad(be, module + ".bias")
        if module not in self._targeted:
            if self.full:
                be.linear_grad_params(dy, saved[module], be.grad(module + ".weight"), db)
            elif db is not None:           # the bias trains beside an adapter elsewhere
                be.bias_grad(dy, db)
            return be.linear_grad_input(dy, w) if input_grad else None
        if db is not None:       # y = ... + b, in LoRA and DoRA alike
            be.bias_grad(dy, db)
        if self.lora_bias:       # y = ... + s b_B
            be.bias_grad(dy, be.grad(self.lora_b_bias(module)), self.scalings[module])
        if self.dora:
            return self._dora_backward(be, module, dy, saved[module], w, input_grad)
        xd, drop, h = saved[module]
        # Without LoRA dropout the two input-gradient paths add up at once; with it, the
        # adapter's path goes back through the dropout mask first.
        a, b = self.lora_a(module), self.lora_b(module)
        dx, dxd = be.lora_linear_backward(dy, xd, w, be.param(a), be.param(b), h,
                                          self.scalings[module], be.grad(a), be.grad(b),
                                          separate=drop is not None, input_grad=input_grad)
        if not input_grad:
            return None
        return dx if dxd is None else be.add(dx, be.dropout_backward(dxd, drop))

    def _dora_forward(self, be, module, x, xd, drop, w, b, saved):
        """PEFT's DoRA: y = scale * z + b, z = xd W^T + s (xd A^T) B^T, scale = m / ||W + s B.A||
        per row (a constant of the step); with dropout, y = x W^T + b + (scale - 1) * (xd W^T)
        + scale * s (xd A^T) B^T (PEFT scales only the dropped input's path)."""
        a, bm = be.param(self.lora_a(module)), be.param(self.lora_b(module))
        s = self.scalings[module]
        scale, norm = be.dora_scale(w, a, bm, s, be.param(self.magnitude(module)))
        z, h = be.lora_linear(xd, xd, w, None, a, bm, s)
        if drop is None:
            y = be.scale_columns(z, scale, b)
        else:
            # x W^T + b + (scale - 1) * z + l, l = s (xd A^T) B^T, the adapter's part of z (a
            # product of rank r): two products of the weight's size, as PEFT computes it.
            lora = be.scale(be.linear(h, bm, None), s)
            y = be.add(be.add(be.linear(x, w, b), lora), be.sub(be.scale_columns(z, scale), z))
        saved[module] = (xd, drop, h, z, scale, norm)
        return y

    def _dora_backward(self, be, module, dy, saved, w, input_grad):
        """The magnitude's gradient (dy * z summed over rows, over the norm); the LoRA
        weights' through the scaled output gradient; dx as _dora_forward's terms give it."""
        xd, drop, h, z, scale, norm = saved
        a, b = self.lora_a(module), self.lora_b(module)
        be.dora_magnitude_grad(dy, z, norm, be.grad(self.magnitude(module)))
        dys = be.scale_columns(dy, scale)
        dx, dxd = be.lora_linear_backward(dys, xd, w, be.param(a), be.param(b), h,
                                          self.scalings[module], be.grad(a), be.grad(b),
                                          separate=drop is not None, input_grad=input_grad)
        if not input_grad or drop is None:
            return dx
        # dx = dy W through the unscaled x W^T; the dropped input's gradient is
        # dys W - dy W (its scaled and subtracted W paths) plus the adapter's dh A.
        direct = be.linear_grad_input(dy, w)
        return be.add(direct, be.dropout_backward(be.add(be.sub(dx, direct), dxd), drop))

    def lowest_layer(self, layer_of):
        """The lowest layer holding a wrapped linear or a linear whose bias trains
        (`layer_of(module)` -> its index); layers below it need no backward when only these
        train (see trains_other_biases for the rest)."""
        biased = [name[:-len(".bias")] for name in self.bias_keys]
        return min((layer_of(m) for m in self.targets + [m for m in biased if m in self.modules]),
                   default=None)

    def trains(self, module):
        """Whether linear `module` is wrapped or its bias trains."""
        return module in self.targets or module + ".bias" in self.bias_keys

    @property
    def trains_other_biases(self):
        """Whether biases outside these linears train (a norm's, a head's: bias="all"), for
        which the backward goes through every layer to the embeddings, as in full fine-tuning."""
        return any(name[:-len(".bias")] not in self.modules for name in self.bias_keys)


def trained_biases(lora, family, params, targeted, prefix="", unprefixed=()):
    """{checkpoint name: trainable name} of the biases PEFT's `bias` option trains beside the
    adapter: "lora_only" those of the wrapped linears, "all" every parameter named a bias (PEFT
    0.21 takes each whose name ends in ".bias": not the relative position tables of T5 and
    MPNet, "relative_attention_bias.weight"). The trainable names are PEFT's adapter-file keys
    (`prefix` added but to the `unprefixed` modules'): a wrapped linear's bias is its base
    layer's ("<module>.base_layer.bias")."""
    if lora.bias == "none":
        return {}
    keys = {}
    for name in params:
        if not name.endswith(".bias"):
            continue
        module = name[:-len(".bias")]
        if lora.bias == "lora_only" and module not in targeted:
            continue
        keys[name] = ("" if module in unprefixed else prefix) + module + (
            ".base_layer.bias" if module in targeted else ".bias")
    return keys


class AdaptedModel:
    """What a model family built on Linears shares: merged inference, the merge names, which
    tensors are linear weights; for the language models (decoders, T5), which train with LoRA
    or every weight, what full fine-tuning changes. Subclasses set self.linears (and a
    language model config, lora, full, dropout and head_name)."""

    @property
    def decoder_kernels(self):
        """Whether the GPU loads the decoder kernel families (RoPE, the gated MLP, ...): the
        decoders', and an encoder's built of them (ModernBERT)."""
        return self.decoder

    relative_kernels = False    # the GPU loads DeBERTa's disentangled attention bias kernels
    last_token = False          # a classifier's batches carry each row's last real token
    # whether the family's layers run through models/checkpointing.py (transformers' name)
    supports_gradient_checkpointing = False
    _checkpointing = False

    @property
    def gradient_checkpointing(self):
        """Whether a training step recomputes each layer's forward in its backward instead of
        keeping its activations (models/checkpointing.py)."""
        return self._checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on):
        if on and not self.supports_gradient_checkpointing:
            raise ValueError(f"gradient checkpointing is not built for {type(self).__name__}")
        self._checkpointing = bool(on)

    def peft_dict(self):
        """The adapter_config.json of this model's adapter (LoraConfig.to_peft_dict)."""
        return self.lora.to_peft_dict()

    @property
    def merged(self):
        """Whether inference reads the merged weights W + scaling * B.A (see merge_names)."""
        return self.linears.merged

    @merged.setter
    def merged(self, value):
        self.linears.merged = value

    def merge_names(self):
        """A Merge of each LoRA-wrapped linear (see Linears.merge_names)."""
        return self.linears.merge_names()

    def table_merge_names(self):
        """A Merge of each LoRA-wrapped table (an embedding, E + s (B.A)^T; an output layer of
        its own, W + s B.A), under its own tensor's name, for the merged model and the switch to
        full fine-tuning; inference computes their LoRA terms as they are. DecoderModel's
        names a tied pair's tables itself."""
        return self.linears.tables.merges(lambda m: m + ".weight", Merge, None,
                                          self.head_bias_name)

    def token_sources(self):
        """{trained tensor: (table, token ids)} of a decoder's trainable tokens (DecoderModel's;
        none elsewhere): each starts from its table's rows, and the merged model's table holds
        it in place of those."""
        return {}

    def merged_config(self):
        """The config of the merged model (DecoderModel's may untie its head)."""
        return self.config

    def magnitude_weights(self):
        """DoRA's {magnitude name: base weight name} (Linears.magnitude_weights)."""
        return self.linears.magnitude_weights()

    def unmergeable(self):
        """The LoRA-wrapped linears and output layer whose lora_B bias no merge can hold: those
        without a bias of their own (Linears.unmergeable, LoraTables.unmergeable)."""
        return self.linears.unmergeable() + self.linears.tables.unmergeable(self.head_bias)

    def bias_sources(self):
        """{trainable name: checkpoint name} of the biases that train beside the adapter (the
        LoRA config's `bias`; {} for "none"): each starts from the checkpoint's value."""
        return {key: name for name, key in self.linears.bias_keys.items()}

    def head_sources(self):
        """{trainable name: checkpoint name} of whole layers that start from the checkpoint's
        values where it holds them (a classifier's dense layer: BertClassifier; a language
        model's embedding or output layer: DecoderModel)."""
        return {}

    def whole_names(self):
        """{trainable name: model tensor name} of a language model's modules trained whole
        beside the adapter (DecoderModel), {} elsewhere."""
        return {}

    def tied_copies(self):
        """{name: trained tensor} of copies PEFT writes beside a trained tensor (DecoderModel's
        tied tables), {} elsewhere."""
        return {}

    def kept_names(self):
        """{trainable name: the tensor it is in the base model} of what trains beside the
        adapter in place of the checkpoint's (the biases of the `bias` option, a language
        model's modules_to_save): a merge, or a switch to full fine-tuning, keeps them so."""
        return dict(self.bias_sources(), **self.whole_names())

    @property
    def embedding_adapted(self):
        """Whether a LoRA wraps the token embedding: its gradient needs the embedding's
        output gradient, so the backward visits every layer."""
        return self.linears.tables.of_kind(EMBEDDING) is not None

    @property
    def backward_to_inputs(self):
        """Whether the backward visits every layer with its input gradient: in full
        fine-tuning, and where biases outside the linears (norms) train."""
        return self.full or self.linears.trains_other_biases

    def is_linear_weight(self, name):
        """Whether `name` is a linear's weight the GPU may store compressed (Linears.is_weight)."""
        return self.linears.is_weight(name)

    def to_full(self):
        """The same model with every weight trainable (after the LoRA update was folded in)."""
        model = type(self)(self.config, None, dropout=self.dropout)
        model.gradient_checkpointing = self.gradient_checkpointing
        return model

    def frozen_names(self):
        """The checkpoint tensors the model reads as they are (a bias that trains is read from
        its trainable copy)."""
        if self.full:
            return []
        return [n for n in self.config.parameter_shapes()
                if n not in self.linears.bias_keys and n not in self.trainable]

    def head_grad(self, be):
        """Where the loss puts the head's gradient: None unless the head trains (fine-tuning
        every weight, or modules_to_save)."""
        return be.grad(self.head_name) if self.head_name in self.trainable else None

    def _norm_backward(self, be, dy, saved, weight):
        """dx through an RMSNorm; in full fine-tuning its `weight`'s gradient is added too."""
        return be.rmsnorm_backward(dy, saved, be.grad(weight) if self.full else None)

    head_bias = None     # the language-model head's bias tensor, in families that have one (Phi-2)
    logit_softcap = None     # the final logits' soft cap, in families that cap them (Gemma 2)

    def head_logits(self, be, hidden):
        """The language-model head's logits of `hidden` [N, hidden]: h W^T (+ the head's bias,
        + its LoRA's term), soft-capped where the family caps them."""
        bias = self.linears.tables.head_bias(be, self.head_bias_param(be))
        logits = be.linear(hidden, be.param(self.head_name), bias)
        logits = self.linears.tables.head_logits(be, logits, hidden)
        if self.tokens is not None:
            logits = self.tokens.head_logits(be, logits, hidden)
        return logits if self.logit_softcap is None else be.softcap_logits(logits, self.logit_softcap)

    def head_loss(self, be, hidden, labels, loss_scale=1.0, train=True, smoothing=0.0):
        """(metrics, dh): the language-model loss of `hidden` over shifted `labels` (the
        backend's lm_head_loss: the vocabulary in chunks; label `smoothing`) and, with
        `train`, the hidden states' gradient, the head's own gradients kept where it trains: whole (full fine-tuning,
        modules_to_save; its bias), or its LoRA (models/lora_tables.py), whose low-rank term
        the loss adds chunk by chunk."""
        saved = {}
        tables = self.linears.tables
        low, grad_b, backward = self._head_term(be, hidden, train, saved)
        extra = {} if low is None else dict(low_rank=low, dlow_rank=grad_b)
        bias = self.head_bias_param(be)
        dbias = self.head_bias_grad(be) if train else None
        logits_bias = tables.head_bias(be, bias)
        # with the head LoRA's lora_B bias in the logits' bias, the loss's bias gradient goes
        # into a vector of its own, shared out after: to b_B (scaled) and the head's bias
        shared = train and logits_bias is not bias
        if shared:
            own, dbias = dbias, be.zeros(be.param(self.head_name).shape[0])
        out = be.lm_head_loss(hidden, be.param(self.head_name), labels, loss_scale,
                              dweight=self.head_grad(be) if train else None, backward=train,
                              bias=logits_bias, dbias=dbias, softcap=self.logit_softcap,
                              smoothing=smoothing, **extra)
        if shared:
            tables.head_bias_backward(be, dbias)
            if own is not None:
                be.accumulate(own, dbias)
        if low is None:
            return out
        metrics, dh, du = out
        return metrics, (be.add(dh, backward(be, du, saved)) if train else dh)

    tokens = None       # a decoder's trainable tokens (DecoderModel: models/trainable_tokens.py)

    def _head_term(self, be, hidden, train, saved):
        """(low-rank term, where its B's gradient goes, its backward) of what adds to the
        head's logits: its LoRA, or the trained rows of a tied head's table; Nones without."""
        tables = self.linears.tables
        low = tables.head_term(be, hidden, self.lora.lora_dropout if self.lora else 0.0, train, saved)
        if low is not None:
            _, b_name = tables.names(tables.of_kind(HEAD))
            return low, be.grad(b_name) if train else None, tables.head_backward
        if self.tokens is not None:
            low = self.tokens.head_term(be, hidden, saved)
            if low is not None:
                return low, None, self.tokens.head_backward
        return None, None, None

    @property
    def head_bias_name(self):
        """The tensor the model reads for the head's bias (a trained copy where it trains beside
        the adapter), or None without one."""
        return self.linears.param_name(self.head_bias) if self.head_bias else None

    def head_bias_param(self, be):
        """The head's bias the loss and generation add to the logits, or None."""
        return be.param(self.head_bias_name) if self.head_bias else None

    def head_bias_grad(self, be):
        """Where the loss puts the head bias's gradient: None unless it has one and it trains
        (every weight does, bias="all", or the head trains whole: modules_to_save)."""
        if not self.head_bias:
            return None
        if self.head_bias in self.trainable:
            return be.grad(self.head_bias)
        return self.linears.bias_grad(be, self.head_bias)
