"""What every decoder family's model shares (models/llama.py, models/gpt2.py, models/phi.py): which weights
train in LoRA or full fine-tuning, the head's name, and which layers the backward visits (what
T5 shares with them, where full fine-tuning puts the head's gradient included, is
lora.AdaptedModel's). A family sets config, lora, full and linears, and names its tensors."""

from .dropout_rates import override_rates
from .lora import AdaptedModel, Linears, Merge
from .lora_tables import EMBEDDING, HEAD
from .trainable_tokens import TrainableTokens
from .saved_modules import HEAD_WEIGHT, saved_modules


class DecoderModel(AdaptedModel):
    decoder = True     # the GPU loads the decoder kernel families

    def _build(self, config, lora, modules, family, conv1d=False, dropout=None):
        """lora: a LoraConfig, or None to train every weight (full fine-tuning); modules: the
        family's linears, {name: (out, in)} in model order (see Linears); dropout: None for the
        checkpoint's rates (dropout_rates(config)), a float for all of them (0.0: none while
        training), or a dict naming some of them."""
        self.config = config
        self.dropout = override_rates(self.dropout_rates(config), dropout, family)
        self.full = lora is None
        shapes = config.parameter_shapes()
        # the embedding and the output layer ([vocab, hidden] both, a tied head among them),
        # which a LoRA may wrap as PEFT does (models/lora_tables.py) or modules_to_save train whole
        table = shapes[config.embedding_tables[0]]
        tables = {m: (EMBEDDING if i == 0 else HEAD, *table)
                  for i, m in enumerate(config.whole_modules)}
        self.linears = Linears(modules, lora, family, full=self.full, conv1d=conv1d, params=shapes,
                               others=config.whole_modules, tables=tables, trainable_tokens=True)
        self.lora = self.linears.lora        # "all-linear" spelled out
        self.targets = self.linears.targets
        self.trainable = dict(shapes) if self.full else dict(self.linears.trainable)
        # modules trained whole beside the LoRA (PEFT's modules_to_save: the embedding, the
        # output layer), {tensor: module}, shaped as the config says (with_saved's); a head
        # tied to the embedding is the embedding's table (ensure_weight_tying)
        whole = config.whole_modules
        self.whole = {} if self.full else {
            tensor if tensor in shapes else self.head_name: m
            for m in saved_modules(self.lora, whole) for tensor in whole[m]}
        self.trainable.update({w: shapes[w] for w in self.whole})
        # PEFT's trainable tokens: rows of the embedding (models/trainable_tokens.py)
        embedding, head = list(whole)[:2] if len(whole) >= 2 else (None, None)
        self.tokens = TrainableTokens.of(
            self.lora, embedding, head, config.embedding_tables[0], *table,
            config.tie_word_embeddings,
            self.embedding_padding, self.linears.full_name,
            others=set(self.linears.tables.targets) | set(self.whole.values()))
        self.trainable.update(self.tokens.trainable())

    @property
    def head_name(self):
        """The head's weight: the token embedding when tied (transformers' names)."""
        return "model.embed_tokens.weight" if self.config.tie_word_embeddings else "lm_head.weight"

    def head_sources(self):
        """{tensor: checkpoint tensor} each module trained whole starts from: its own, but a
        head trained as a copy of the tied embedding (SavedModulesConfig.with_saved) starts
        from it."""
        copied = self.config.head_copies_embedding
        return {w: self.config.embedding_tables[0] if copied and w == self.head_name else w
                for w in self.whole}

    def whole_names(self):
        return {w: w for w in self.whole}

    def table_merge_names(self):
        """A Merge of the embedding and the output layer where a LoRA wraps them: the head's
        result is "lm_head.weight" (its own tensor, the tied table's too)."""
        tables = {m: self.config.embedding_tables[0] if kind == EMBEDDING else self.head_name
                  for m, kind in self.linears.tables.kinds.items()}
        return self.linears.tables.merges(tables.get, Merge, HEAD_WEIGHT, self.head_bias_name)

    @property
    def unties_when_merged(self):
        """Whether the merged model's embedding and output layer are two tables where the
        checkpoint ties them: a LoRA wraps one of the pair (or both, each its own)."""
        return bool(self.config.tie_word_embeddings and self.linears.tables.targets)

    def token_sources(self):
        """{trained tensor: (table, token ids)} of the trainable tokens (TrainableTokens.sources)."""
        return self.tokens.sources()

    def merged_config(self):
        """The config of the merged model: this one, untied where unties_when_merged."""
        return self.config.untied() if self.unties_when_merged else self.config

    def tied_copies(self):
        """{name: trained table} of the copies PEFT writes of a table trained whole for a tied
        pair (ensure_weight_tying: the output layer's, the embedding's values): an adapter file
        holds them, the model reads the one table."""
        if not self.config.tie_word_embeddings or self.head_name not in self.whole:
            return {}
        return {HEAD_WEIGHT: self.head_name}

    @property
    def saves_vocabulary(self):
        """Whether the adapter carries the embedding and the output layer whole: its vocabulary
        is its own (tokens added), its tokenizer the one saved with it."""
        return self.embedding_trains and self.head_name in self.trainable and not self.full

    @property
    def embedding_trains(self):
        """Whether the token embedding trains (full fine-tuning, or modules_to_save): its
        gradient is a scatter-add of the input gradient, so the backward visits every layer."""
        return self.config.embedding_tables[0] in self.trainable

    @property
    def embedding_adapted(self):
        """Whether a LoRA wraps the token embedding, or rows of it train (trainable tokens):
        their gradient needs the embedding's output gradient, so the backward visits every
        layer."""
        return super().embedding_adapted or self.tokens.module is not None

    @property
    def backward_to_inputs(self):
        return super().backward_to_inputs or self.embedding_trains or self.embedding_adapted

    embedding_padding = None    # the embedding row nn.Embedding's padding_idx gives no gradient

    def _embed_tokens(self, be, ids, saved):
        """The token embedding's rows of `ids`, plus its LoRA term where one wraps it, the
        trained rows in place of theirs where trainable tokens train."""
        table = self.config.embedding_tables[0]
        x = self.linears.tables.embed(be, be.gather_rows(be.param(table), ids), ids, saved)
        return self.tokens.embed(be, x, ids, saved)

    def _embed_tokens_backward(self, be, dx, saved):
        """The gradients of what trains in the token embedding (its LoRA's, the table's when
        it trains whole) from its output's gradient dx."""
        self.linears.tables.embed_backward(be, dx, saved["ids"], saved, self.embedding_padding)
        self.tokens.embed_backward(be, dx, saved)
        if self.embedding_trains:
            be.gather_rows_backward(dx, saved["ids"], be.grad(self.config.embedding_tables[0]),
                                    padding=self.embedding_padding)

    @staticmethod
    def dropout_rates(config):
        """{name: probability} of the dropout the family applies in training: none unless a
        family says otherwise."""
        return {}

    def _lowest_layer(self):
        """The lowest layer the backward visits: 0 in full fine-tuning, else the lowest one
        holding an adapter (module names "<prefix>.<layers>.<n>....")."""
        if self.backward_to_inputs:
            return 0
        lowest = self.linears.lowest_layer(lambda m: int(m.split(".")[2]))
        # a LoRA on the output layer alone: no layer's backward is needed
        return self.config.num_hidden_layers if lowest is None else lowest

    def _layernorm(self, be, x, name, eps):
        """LayerNorm with weight and bias (GPT-2, Phi-2): the output and what its backward needs."""
        return be.layernorm(x, be.param(name + ".weight"),
                            be.param(self.linears.param_name(name + ".bias")), eps)

    def _layernorm_backward(self, be, dy, saved, name):
        """dx; in full fine-tuning the norm's weight and bias gradients are added too, with
        bias="all" its bias's."""
        return be.layernorm_backward(dy, saved, be.grad(name + ".weight") if self.full else None,
                                     self.linears.bias_grad(be, name + ".bias"))
