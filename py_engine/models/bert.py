"""BERT encoder for sequence classification with LoRA: forward and explicit backward.

Written once against a backend's op interface (py_engine/backends): the NumPy backend runs it
eagerly; the GPU backend runs it once per batch shape to record a program that is replayed per
step. The math is transformers' BertForSequenceClassification with PEFT LoRA on the chosen
linears:

    x = Dropout(LayerNorm(word[ids] + position[t] + token_type[types]))
    per layer:  q, k, v = Linear/LoRA(x)
                a = LayerNorm(x + Dropout(Linear(Attention(q, k, v, mask))))
                x = LayerNorm(a + Dropout(Linear(GELU(Linear(a)))))
    pooled = tanh(Linear(x[:, 0]))            (or the mean over real tokens)
    logits = Linear(Dropout(pooled));  loss = CrossEntropy(logits, labels)

Only the LoRA matrices and the head (and the pooler, when the checkpoint has none) train; the
base weights are frozen, so their gradients are never computed. A LoRA may wrap the word
embedding too, as PEFT's lora.Embedding does (word[ids] + s A^T[ids] B^T, models/lora_tables.py;
the row of transformers' padding_idx takes no gradient), and the backward then reaches it. The checkpoint's pooler is one
of the linears LoRA may wrap, as PEFT wraps it ("bert.pooler.dense": matched by "dense" and by
"all-linear"), where cls pooling reads it.

RoBERTa's kind (RoBERTa, XLM-RoBERTa, CamemBERT; config.roberta) is the same encoder under
"roberta." with its positions counted from the row after its padding token's, and
RobertaForSequenceClassification's head in place of the pooler and classifier, trained whole:

    logits = out_proj(Dropout(tanh(dense(Dropout(x[:, 0])))))   ("classifier.dense", "classifier.out_proj")

DistilBERT (config.distilbert) is the same encoder under "distilbert." with its own names
(BertConfig.layer_names), no token types, no dropout after the attention's output linear, and
DistilBertForSequenceClassification's head, pre_classifier trained whole:

    logits = classifier(Dropout(ReLU(pre_classifier(x[:, 0]))))

ELECTRA (electra) is BERT's encoder under "electra." with ElectraForSequenceClassification's
head: RoBERTa's, GELU for tanh. Each family's head is described once: bert_config.HEADS.
ELECTRA-small's embeddings are narrower than its layers: a linear (embeddings_project) takes
them up after their norm, as ALBERT's always does (encoder.embedding_hidden_mapping_in).

ALBERT (albert) is BERT's encoder under "albert." whose every depth reads one layer's weights
(and so one LoRA, whose gradient adds up over the depths), with gelu_new, no dropout after the
feed-forward's output, and BERT's head (its pooler a linear of its own, "albert.pooler").

ERNIE (ernie) is BERT under "ernie."; ERNIE 3.0's embeddings (use_task_id) add the task type
table's row 0 to every token, read here as the token type rows with that row added.

MPNet (mpnet) is BERT's encoder under "mpnet." with its own names (BertConfig.layer_names), no
token types, positions counted as RoBERTa's, RoBERTa's head, and a relative position bias
added to every layer's attention scores before the mask, as T5's encoder adds one:

    scores = q k^T / sqrt(d) + table[bucket(j - i)]      (table: encoder.relative_attention_bias)

The table is frozen (a LoRA on it is refused by name).

DeBERTa-v2 (deberta-v2, DeBERTa-v3's type; config.deberta) is BERT's encoder under "deberta."
with *_proj names, v3 without position and token type rows, and a disentangled attention: the
relative embedding rows E (normalised where config.json says, each layer's own dropout) go
through the layer's own key and query linears, LoRA included, and each score adds them by the
row r(i - j) of the query-key distance (log buckets, relative_position.deberta_relative_rows):

    scores = (q_i k_j + q_i key(E)[r(i - j)] + k_j query(E)[r(i - j)]) / sqrt(3 d)

(backends' disentangled_bias). Its head is DebertaV2ForSequenceClassification's:
classifier(Dropout(GELU(pooler.dense(Dropout(x[:, 0]))))), the pooler outside the prefix,
trained whole where the checkpoint has none.
"""

from .bert_config import BERT_LAYER, MPNET_BUCKETS, MPNET_MAX_DISTANCE
from .checkpointing import layers_backward, layers_forward
from .dropout_rates import override_rates
from .lora import AdaptedModel, Linears
from .lora_config import LoraConfig
from .lora_tables import EMBEDDING
from .relative_position import relative_position_buckets
from .saved_modules import named_whole

LINEARS = ("query", "key", "value", "attention_output", "intermediate", "output")  # BertConfig.layer_names
LINEAR_NAMES = tuple(BERT_LAYER[what] for what in LINEARS)     # BERT's (and RoBERTa's)
POOLER = "pooler.dense"         # BERT's checkpoint pooler (BertConfig.pooler_module)
WORD_EMBEDDING = "embeddings.word_embeddings"      # every family's (bare BertModel names)


class ModelError(ValueError):
    pass


def check_classifier(lora, num_labels, pooling, poolings=("cls", "mean")):
    """What every classifier is built with: a LoraConfig, a label or more (a single-label
    classifier's two or more are its task's to check), one of the family's `poolings` (an
    encoder's: cls or mean)."""
    if not isinstance(lora, LoraConfig):
        raise TypeError("lora must be a LoraConfig")
    if num_labels < 1:
        raise ModelError(f"a classifier needs at least 1 label, got {num_labels}")
    if pooling not in poolings:
        raise ModelError(f"pooling must be {' or '.join(map(repr, poolings))}, got {pooling!r}")


def holds_pooler_lora(tensors):
    """Whether an adapter's tensors (names without PEFT's prefix) hold a LoRA on the
    checkpoint's pooler (BERT's "bert.pooler.dense", DeBERTa's "pooler.dense"): PEFT's do
    wherever its targets name the pooler; ours saved before it could be wrapped do not
    (BertClassifier's pooler_lora)."""
    return any(name.startswith((f"bert.{POOLER}.lora_", f"{POOLER}.lora_")) for name in tensors)


class BertClassifier(AdaptedModel):
    """Structure of the model: which parameters exist, which train, and the step's math."""

    decoder = False
    supports_gradient_checkpointing = True

    @property
    def relative_kernels(self):
        """DeBERTa's disentangled attention needs its gather and scatter kernels on the GPU."""
        return self.config.disentangled

    def __init__(self, config, lora, num_labels, pooling="cls", train_pooler=False, dropout=None,
                 pooler_lora=True):
        """`dropout` overrides the checkpoint's dropout probabilities: a float for all of them,
        or a dict with any of "hidden", "attention", "classifier". pooler_lora=False: the
        checkpoint's pooler is never wrapped (an adapter saved before it could be holds no
        tensors for it, which PEFT reads as a LoRA that changes nothing)."""
        check_classifier(lora, num_labels, pooling)
        self.config = config
        self.full = False
        self.num_labels = num_labels
        self.pooling = pooling
        h, i = config.hidden_size, config.intermediate_size
        shapes = {"intermediate": (i, h), "output": (h, i)}
        self.names = config.layer_names
        # ALBERT's depths name one shared layer: its linears once
        modules = {config.layer_prefix(n) + self.names[what]: shapes.get(what, (h, h))
                   for n in range(config.num_hidden_layers) for what in LINEARS}
        if config.projection:       # the embeddings up to the layers' width
            modules = {config.projection: (h, config.embedding_size), **modules}
        self.pooler = config.pooler_module
        self.prefix = config.prefix
        self.dense_module, self.head_module = config.head.dense, config.head.output
        # RoBERTa's, DistilBERT's and ELECTRA's heads hold the dense layer BERT's pooler holds,
        # trained whole (PEFT's default modules_to_save, "classifier", matches pre_classifier
        # too); BERT's, ALBERT's and DeBERTa's pooler where modules_to_save names it, or where
        # the checkpoint has none
        saves_pooler = self.dense_module_parent in self._saved_head(lora, config)
        self.train_pooler = (train_pooler or config.head.trained or saves_pooler) and pooling == "cls"
        # LoRA wraps the checkpoint's pooler where it is the head's (not DistilBERT's
        # pre_classifier, which trains whole)
        self.pooler_lora = pooler_lora and config.pooler_takes_lora
        if pooling == "cls" and not self.train_pooler and self.pooler_lora:  # the checkpoint's
            modules[self.pooler] = (h, h)
        # the word embedding, which a LoRA may wrap as PEFT does (models/lora_tables.py)
        tables = {WORD_EMBEDDING: (EMBEDDING, config.vocab_size, config.embedding_size)}
        self.linears = Linears(modules, lora, "BERT model", adapter_prefix=self.prefix,
                               params=self._read_shapes(),
                               unprefixed=() if config.pooler_in_encoder else (self.pooler,),
                               passed_over=(self.pooler,), tables=tables)
        self.lora = self.linears.lora        # "all-linear" spelled out
        self.targets = self.linears.targets
        rates = {"hidden": config.hidden_dropout_prob,
                 "attention": config.attention_probs_dropout_prob,
                 "classifier": config.classifier_dropout_prob}
        if config.deberta:      # its ContextPooler's dropout, before the dense layer
            rates["pooler"] = config.pooler_dropout
        self.dropout = override_rates(rates, dropout, "BERT model")
        # Trainable parameters with their PEFT adapter-file names (base_model.model. prefix
        # added on save) and shapes.
        self.trainable = dict(self.linears.trainable)
        if self.train_pooler:
            w, b = self.pooler_names()
            self.trainable[w] = (h, h)
            self.trainable[b] = (h,)
        self.trainable[self.head_module + ".weight"] = (num_labels, h)
        self.trainable[self.head_module + ".bias"] = (num_labels,)

    @property
    def dense_module_parent(self):
        """The module holding the head's dense layer, as PEFT's modules_to_save names it:
        "bert.pooler", "pooler" (DeBERTa's), "pre_classifier", "albert.pooler" (ALBERT's pooler
        is the linear itself), "classifier" (RoBERTa's kind's head holds it)."""
        return self.dense_module.removesuffix(".dense")

    def _saved_head(self, lora, config):
        """The modules of the head (the classifier, the module of its dense layer) that
        modules_to_save names; an entry naming another module of the model is refused by name
        (saved_modules.named_whole)."""
        from .checkpoint import bert_parameter_shapes

        head = [self.head_module.split(".")[0], self.dense_module_parent]
        names = list(config.classifier_names(list(bert_parameter_shapes(config)))) + [
            self.dense_module + ".weight", self.head_module + ".weight"]
        return named_whole(lora.modules_to_save, names, sorted(set(head)), "BERT model")

    def peft_dict(self):
        """The adapter_config.json: where the head's dense layer trains whole and no entry of
        modules_to_save names it (BERT's and DeBERTa's pooler, trained where the checkpoint has
        none), its module is added, so that PEFT trains it too (as it would the classifier)."""
        out = self.lora.to_peft_dict()
        module = self.dense_module_parent
        saved = list(out.get("modules_to_save") or [])
        # PEFT wraps each module whose name ends with an entry ("pre_classifier" ends in
        # "classifier")
        if self.train_pooler and not any(module.endswith(m) for m in saved):
            out["modules_to_save"] = saved + [module.rsplit(".", 1)[-1]]
        return out

    def _read_shapes(self):
        """{name: shape} of the checkpoint tensors the model reads (bare BertModel names)."""
        from .checkpoint import bert_parameter_shapes

        from .checkpoint import TYPES_AND_TASK

        shapes = bert_parameter_shapes(self.config)
        if self.config.task_type_table:     # ERNIE's: one table with both rows added
            types = "embeddings.token_type_embeddings.weight"
            shapes = {TYPES_AND_TASK if n == types else n: s for n, s in shapes.items()
                      if n != self.config.task_type_table}
        reads_pooler = self.pooling == "cls" and not self.train_pooler
        return {n: s for n, s in shapes.items()
                if reads_pooler or not n.startswith(self.pooler + ".")}

    def frozen_names(self):
        """The checkpoint tensors the model reads as they are (bare BertModel names; a bias
        that trains is read from its trainable copy)."""
        return [n for n in self._read_shapes() if n not in self.linears.bias_keys]

    def head_sources(self):
        """{trainable name: checkpoint name} of the dense layer trained whole, which starts
        from the checkpoint's where it holds one, as transformers' from_pretrained starts it:
        BERT's pooler, a DistilBertForSequenceClassification checkpoint's pre_classifier, a
        fine-tuned RoBERTa's (ELECTRA's, MPNet's) classifier.dense (not RoBERTa's pooler,
        which is not its head's dense layer)."""
        if not self.train_pooler:
            return {}
        w, b = self.pooler_names()
        if self.config.head.from_pooler:
            return {w: self.pooler + ".weight", b: self.pooler + ".bias"}
        return {w: w, b: b}     # a fine-tuned checkpoint's own (RoBERTa's classifier.dense)

    def pooler_names(self):
        """The dense layer under the head's activation: trained whole ("bert.pooler.dense",
        RoBERTa's "classifier.dense", DistilBERT's "pre_classifier"), or the checkpoint's."""
        if self.train_pooler:
            return self.dense_module + ".weight", self.dense_module + ".bias"
        return self.pooler + ".weight", self.linears.param_name(self.pooler + ".bias")

    # --- forward ------------------------------------------------------------------------

    def forward(self, be, batch, train):
        """Logits [B, num_labels] and what the backward needs. `batch` holds backend tensors
        ids, type_ids, mask ([B, T]) and sizes B, T."""
        cfg = self.config
        p_hidden = self.dropout["hidden"] if train else 0.0
        p_attn = self.dropout["attention"] if train else 0.0
        saved = {"layers": []}
        x = self._embeddings(be, batch)
        # the word rows' LoRA term, added to the sum of the rows as it is to the word rows
        x = self.linears.tables.embed(be, x, batch.ids, saved)
        x, saved["emb_ln"] = self._layernorm(be, x, "embeddings.LayerNorm")
        x, saved["emb_drop"] = be.dropout(x, p_hidden)
        if cfg.projection:
            x = self.linears.forward(be, cfg.projection, x, saved, train)
        bias = saved["bias"] = self._position_bias(be, batch.T)
        rel = saved["rel"] = self._relative_embeddings(be, batch.T, saved)
        x, saved["layers"] = layers_forward(
            be, x, cfg.num_hidden_layers,
            lambda n, x: self._layer_forward(be, n, x, batch, p_hidden, p_attn, train, bias, rel),
            train, self.gradient_checkpointing, self._lowest_lora_layer)
        saved["x_final"] = x
        if self.pooling == "cls":
            first = be.cls_pool(x, batch.B, batch.T)
            if cfg.head.drop_first:     # RoBERTa's, ELECTRA's and DeBERTa's heads drop before the dense layer too
                p_first = self.dropout.get("pooler", self.dropout["classifier"])
                first, saved["head_drop"] = be.dropout(first, p_first if train else 0.0)
            if self.pooler in self.linears.modules:
                pre = self.linears.forward(be, self.pooler, first, saved, train)
            else:
                w, b = self.pooler_names()
                pre = be.linear(first, be.param(w), be.param(b))
            pooled = self._activation(be, pre)
            saved["first"], saved["pre"], saved["pooled"] = first, pre, pooled
        else:
            pooled = be.mean_pool(x, batch.mask, batch.B, batch.T)
        dropped, saved["cls_drop"] = be.dropout(pooled, self.dropout["classifier"] if train else 0.0)
        saved["dropped"] = dropped
        logits = be.linear(dropped, be.param(self.head_module + ".weight"),
                           be.param(self.head_module + ".bias"))
        return logits, saved

    def _embeddings(self, be, batch):
        """The word rows plus the token type and position rows where the family has them
        (DeBERTa-v3's embeddings hold words alone)."""
        cfg = self.config
        from .checkpoint import TYPES_AND_TASK

        word = be.param("embeddings.word_embeddings.weight")
        # ERNIE's token type rows each carry its task type row 0 (Checkpoint's TYPES_AND_TASK)
        types = be.param(TYPES_AND_TASK if cfg.task_type_table else
                         "embeddings.token_type_embeddings.weight") if cfg.token_types else None
        if cfg.position_table:
            position = be.param("embeddings.position_embeddings.weight")
        elif types is None:
            return be.gather_rows(word, batch.ids)
        else:                   # token types without positions: a table of zero rows
            e = cfg.embedding_size
            position = be.constant(("zero positions", batch.T, e), [0.0] * (batch.T * e), (batch.T, e))
        return be.embedding(batch.ids, batch.type_ids, word, position, types,
                            first_position=cfg.first_position)

    def _relative_embeddings(self, be, T, saved):
        """DeBERTa's relative embedding rows that a sequence of T tokens reads, normalised
        where config.json says (encoder.LayerNorm), with their RelativeRows; None for the other
        families."""
        cfg = self.config
        if not cfg.disentangled:
            return None
        rows = cfg.relative_rows(T)
        e = be.position_rows(be.param("encoder.rel_embeddings.weight"), 1, rows.rows, rows.first)
        if cfg.norm_rel_ebd:
            e, saved["rel_ln"] = self._layernorm(be, e, "encoder.LayerNorm")
        return e, rows

    def _position_bias(self, be, T):
        """MPNet's relative position bias [H, T, T] (None for the other families): the table's
        row for each query-key offset's bucket (T5's bidirectional buckets, MPNet's sizes)."""
        table = self.config.relative_attention_bias
        if table is None:
            return None
        buckets = relative_position_buckets(T, T, 0, True, MPNET_BUCKETS, MPNET_MAX_DISTANCE)
        return be.relative_position_bias(be.param(table), buckets, T, T)

    def _layer_forward(self, be, n, x, batch, p_hidden, p_attn, train, bias=None, rel=None):
        cfg, names = self.config, self._layer(n)
        s = {"x": x}
        q = self.linears.forward(be, names["query"], x, s, train)
        k = self.linears.forward(be, names["key"], x, s, train)
        v = self.linears.forward(be, names["value"], x, s, train)
        heads, scaling = cfg.num_attention_heads, cfg.attention_scaling
        if rel is not None:     # DeBERTa: the relative rows through this layer's own q and k linears
            e, rows = rel
            e, s["rel_drop"] = be.dropout(e, p_hidden)
            s["pos"] = {}
            pk, pq = (self.linears.forward(be, names[what], e, s["pos"], train)
                      if term in cfg.pos_att_type else None
                      for what, term in (("key", "c2p"), ("query", "p2c")))
            bias, s["disentangled"] = be.disentangled_bias(q, k, pq, pk, batch.B, heads, scaling, rows)
        ctx, s["attn"] = be.attention(q, k, v, batch.mask, batch.B, batch.T, heads, p_attn,
                                      scaling=scaling, bias=bias)
        s["ctx"] = ctx
        a = self.linears.forward(be, names["attention_output"], ctx, s, train)
        # DistilBERT drops nothing after its attention's output linear (EncoderFamily)
        a, s["attn_drop"] = be.dropout(a, p_hidden if cfg.encoder.attention_dropout else 0.0)
        a = be.add(a, x)
        a, s["attn_ln"] = self._layernorm(be, a, names["attention_norm"])
        s["a"] = a
        h = self.linears.forward(be, names["intermediate"], a, s, train)
        s["h_pre"] = h
        g = be.gelu(h, approximate=cfg.gelu_approximation)
        s["g"] = g
        o = self.linears.forward(be, names["output"], g, s, train)
        # ALBERT drops nothing after its feed-forward's output linear (EncoderFamily)
        o, s["out_drop"] = be.dropout(o, p_hidden if cfg.encoder.ffn_dropout else 0.0)
        o = be.add(o, a)
        o, s["out_ln"] = self._layernorm(be, o, names["output_norm"])
        return o, s

    def _relative_backward(self, be, names, dpq, dpk, s, drel):
        """The gradients of the relative rows' projections through this layer's q and k
        linears (their adapters', and their biases' with bias="all"); the rows' own gradient
        is appended to `drel` where their norm's bias trains."""
        wanted = self.linears.trains_other_biases and self.config.norm_rel_ebd
        grads = [self.linears.backward(be, names[what], grad, s["pos"], input_grad=wanted)
                 for what, grad in (("key", dpk), ("query", dpq)) if grad is not None]
        if wanted:
            total = grads[0] if len(grads) == 1 else be.add(*grads)
            drel.append(be.dropout_backward(total, s["rel_drop"]))

    def _activation(self, be, x):
        """The head's activation (ClassifierHead.activation): tanh, ReLU or GELU."""
        kind = self.config.head.activation
        return be.gelu(x) if kind == "gelu" else be.relu(x) if kind == "relu" else be.tanh(x)

    def _activation_backward(self, be, dy, x, y):
        """Its backward, from its input x (GELU) or output y (tanh, ReLU)."""
        kind = self.config.head.activation
        if kind == "gelu":
            return be.gelu_backward(dy, x)
        return be.relu_backward(y, dy) if kind == "relu" else be.tanh_backward(y, dy)

    def _layer(self, n):
        """{what: full name} of layer n's linears and norms (BertConfig.layer_names)."""
        prefix = self.config.layer_prefix(n)
        return {what: prefix + name for what, name in self.names.items()}

    def _layernorm(self, be, x, name):
        return be.layernorm(x, be.param(name + ".weight"),
                            be.param(self.linears.param_name(name + ".bias")),
                            self.config.layer_norm_eps)

    def _layernorm_backward(self, be, dy, saved, name):
        """dx; with bias="all" the norm's bias gradient is added too."""
        return be.layernorm_backward(dy, saved, None, self.linears.bias_grad(be, name + ".bias"))

    # --- backward -----------------------------------------------------------------------

    def backward(self, be, dlogits, saved, batch):
        """Accumulate the gradient of every trainable parameter into be.grad(name)."""
        be.linear_grad_params(dlogits, saved["dropped"], be.grad(self.head_module + ".weight"),
                              be.grad(self.head_module + ".bias"))
        dpooled = be.linear_grad_input(dlogits, be.param(self.head_module + ".weight"))
        dpooled = be.dropout_backward(dpooled, saved["cls_drop"])
        lowest = self._lowest_lora_layer()
        if self.pooling == "cls":
            dpre = self._activation_backward(be, dpooled, saved["pre"], saved["pooled"])
            layers_train = lowest < self.config.num_hidden_layers
            if self.pooler in self.linears.modules:
                dfirst = self.linears.backward(be, self.pooler, dpre, saved, input_grad=layers_train)
            else:
                w, b = self.pooler_names()
                frozen_bias_grad = self.linears.bias_grad(be, self.pooler + ".bias")   # bias="all"
                if self.train_pooler:
                    be.linear_grad_params(dpre, saved["first"], be.grad(w), be.grad(b))
                elif frozen_bias_grad is not None:
                    be.bias_grad(dpre, frozen_bias_grad)
                dfirst = be.linear_grad_input(dpre, be.param(w)) if layers_train else None
            if not layers_train:        # only the head (and the pooler's adapter) train
                return
            if self.config.head.drop_first:
                dfirst = be.dropout_backward(dfirst, saved["head_drop"])
            dx = be.cls_pool_backward(dfirst, batch.B, batch.T)
        else:
            dx = be.mean_pool_backward(dpooled, batch.mask, batch.B, batch.T)
        # the embeddings' norm's bias trains, or a LoRA wraps the word embedding
        below = self.linears.trains_other_biases or self.embedding_adapted
        projection = self.config.projection
        through = below or self._projection_trains()   # the layers' input gradient is needed
        drel = []           # the relative rows' gradients, where their norm's bias trains
        p_hidden, p_attn = self.dropout["hidden"], self.dropout["attention"]
        dx = layers_backward(
            be, dx, saved["layers"],
            lambda n, x: self._layer_forward(be, n, x, batch, p_hidden, p_attn, True,
                                             saved["bias"], saved["rel"]),
            lambda n, dx, s: self._layer_backward(be, n, dx, s, batch,
                                                  input_grad=through or n > lowest, drel=drel),
            lowest, kept=drel)
        if through and projection:
            dx = self.linears.backward(be, projection, dx, saved, input_grad=below)
        if below:
            dx = self._layernorm_backward(be, be.dropout_backward(dx, saved["emb_drop"]),
                                          saved["emb_ln"], "embeddings.LayerNorm")
            self.linears.tables.embed_backward(be, dx, batch.ids, saved, self.config.word_padding)
        if drel and "rel_ln" in saved:
            total = drel[0]
            for d in drel[1:]:
                total = be.add(total, d)
            self._layernorm_backward(be, total, saved["rel_ln"], "encoder.LayerNorm")

    def _lowest_lora_layer(self):
        """Layers below it need no backward at all: nothing trains there. Its own backward
        needs no input gradient (nothing below reads it), only its adapters' gradients."""
        if self.linears.trains_other_biases or self._projection_trains() or self.embedding_adapted:
            return 0
        layers = self.config.num_hidden_layers       # the pooler sits above every layer
        lowest = self.linears.lowest_layer(
            lambda m: layers if self.config.layer_of(m) is None else self.config.layer_of(m))
        return layers if lowest is None else lowest

    def _projection_trains(self):
        """Whether the embeddings' projection (ALBERT's, ELECTRA-small's) is wrapped or its
        bias trains: the backward then goes through every layer down to it."""
        projection = self.config.projection
        return projection is not None and self.linears.trains(projection)

    def _layer_backward(self, be, n, dout, s, batch, input_grad=True, drel=None):
        names = self._layer(n)
        do = self._layernorm_backward(be, dout, s["out_ln"], names["output_norm"])  # d(o + a)
        da = do
        do = be.dropout_backward(do, s["out_drop"])
        dg = self.linears.backward(be, names["output"], do, s)
        dh = be.gelu_backward(dg, s["h_pre"], approximate=self.config.gelu_approximation)
        da = be.add(da, self.linears.backward(be, names["intermediate"], dh, s))
        dsum = self._layernorm_backward(be, da, s["attn_ln"], names["attention_norm"])
        dx = dsum
        dattn = be.dropout_backward(dsum, s["attn_drop"])
        dctx = self.linears.backward(be, names["attention_output"], dattn, s)
        if "disentangled" in s:
            dq, dk, dv, dscores = be.attention_backward(dctx, s["attn"], score_grad=True)
            dq, dk, dpq, dpk = be.disentangled_bias_backward(dscores, s["disentangled"], dq, dk)
            self._relative_backward(be, names, dpq, dpk, s, drel)
        else:
            dq, dk, dv = be.attention_backward(dctx, s["attn"])
        if not input_grad:     # the lowest LoRA layer: its adapters' gradients, no dx
            for what, d in (("query", dq), ("key", dk), ("value", dv)):
                self.linears.backward(be, names[what], d, s, input_grad=False)
            return None
        for what, d in (("query", dq), ("key", dk), ("value", dv)):
            dx = be.add(dx, self.linears.backward(be, names[what], d, s))
        return dx
