"""ModernBERT for sequence classification with LoRA: forward and explicit backward over a
backend's op interface, as models/bert.py is. The math is transformers'
ModernBertForSequenceClassification with PEFT LoRA on the chosen linears:

    x = Dropout(LayerNorm(tok_embeddings[ids]))                      (no position table;
                                          a LoRA on tok_embeddings adds s A^T[ids] B^T)
    per layer n:  h = LayerNorm_attn(x)            (layer 0: h = x)
                  q, k, v = split(Wqkv h);  q, k = RoPE(q), RoPE(k)
                  x = x + Dropout(Wo Attention(q, k, v; mask, window))
                  a, g = split(Wi LayerNorm_mlp(x))
                  x = x + Wo' Dropout(GELU(a) * g)
    x = LayerNorm_final(x);  pooled = x[:, 0] (cls) or the mean over real tokens (mean)
    logits = classifier(Dropout(LayerNorm_head(GELU(head.dense pooled))))

Global layers (every third by default) attend to every token, with RoPE at rope_theta
160,000; the others only within config.window tokens either side (a score bias beyond it
that leaves those keys no weight, as transformers' mask does), with RoPE at 10,000. The norms have no
bias unless norm_bias; the linears none unless attention_bias, mlp_bias, classifier_bias. The
pooling is config.json's classifier_pooling (or the one asked for), applied before the head,
as transformers applies it.

LoRA may wrap any of Wqkv, Wo, Wi (and head.dense); the classifier trains whole (PEFT's
modules_to_save "classifier"); everything else is frozen.
"""

from .bert import check_classifier
from .checkpointing import layers_backward, layers_forward
from .dropout_rates import override_rates
from .lora import AdaptedModel, Linears
from .lora_tables import EMBEDDING
from .modernbert_config import HEAD
from .saved_modules import named_whole

TOKEN_EMBEDDING = "model.embeddings.tok_embeddings"
# The score bias beyond a sliding layer's window: every weight there is exactly 0 after the
# softmax (as under transformers' mask), and added to the padding mask's float32 lowest it
# stays finite (two lowest values would overflow to -inf)
BEYOND_WINDOW = -1e30


class ModernBertClassifier(AdaptedModel):
    """Structure of the model: which parameters exist, which train, and the step's math."""

    decoder = False
    decoder_kernels = True       # the GPU loads RoPE, the gated MLP and column copies
    head_module = HEAD
    train_pooler = pooler_lora = False      # BertClassifier's pooler options: no pooler here
    supports_gradient_checkpointing = True

    def __init__(self, config, lora, num_labels, pooling=None, dropout=None):
        """pooling: "cls" or "mean" (None: config.json's classifier_pooling); dropout: as
        BertClassifier's (a float for every rate, or a dict of "embedding", "attention",
        "mlp", "classifier")."""
        pooling = config.classifier_pooling if pooling is None else pooling
        check_classifier(lora, num_labels, pooling)
        # its head's dense layer and norm do not train whole here (LoRA may wrap head.dense)
        named_whole(lora.modules_to_save, list(config.parameter_shapes()) + [HEAD + ".weight"],
                    [HEAD], "ModernBERT model")
        self.config = config
        self.full = False
        self.num_labels = num_labels
        self.pooling = pooling
        # the token embedding, which a LoRA may wrap as PEFT does (models/lora_tables.py)
        tables = {TOKEN_EMBEDDING: (EMBEDDING, config.vocab_size, config.hidden_size)}
        self.linears = Linears(config.linear_shapes(), lora, "ModernBERT model",
                               params=config.parameter_shapes(), tables=tables)
        self.lora = self.linears.lora
        self.targets = self.linears.targets
        rates = config.dropout
        self.dropout = override_rates({"embedding": rates["embedding_dropout"],
                                       "attention": rates["attention_dropout"],
                                       "mlp": rates["mlp_dropout"],
                                       "classifier": rates["classifier_dropout"]},
                                      dropout, "ModernBERT model")
        self.trainable = dict(self.linears.trainable)
        self.trainable[self.head_module + ".weight"] = (num_labels, config.hidden_size)
        self.trainable[self.head_module + ".bias"] = (num_labels,)

    def head_sources(self):
        """The classifier starts fresh (a fine-tuned checkpoint's is not PEFT's starting point)."""
        return {}

    # --- forward ------------------------------------------------------------------------

    def forward(self, be, batch, train):
        """Logits [B, num_labels] and what the backward needs. `batch` holds backend tensors
        ids, mask ([B, T]) and sizes B, T."""
        c, B, T = self.config, batch.B, batch.T
        rate = {k: (p if train else 0.0) for k, p in self.dropout.items()}
        linear = self.linears.forward
        saved = {}
        x = be.gather_rows(be.param(TOKEN_EMBEDDING + ".weight"), batch.ids)
        x = self.linears.tables.embed(be, x, batch.ids, saved)     # its LoRA term, if wrapped
        x, saved["emb_ln"] = self._norm(be, x, "model.embeddings.norm")
        x, saved["emb_drop"] = be.dropout(x, rate["embedding"])
        ropes = saved["ropes"] = {kind: be.rope_tables(c.head_dim, c.rope_parameters[kind], T)
                                  for kind in set(c.layer_types)}
        window = saved["window"] = self._window_bias(be, T)
        x, saved["layers"] = layers_forward(
            be, x, c.num_hidden_layers,
            lambda n, x: self._layer(be, n, x, batch, rate, ropes, window, train),
            train, self.gradient_checkpointing, self._lowest_layer)
        x, saved["final_ln"] = self._norm(be, x, "model.final_norm")
        pooled = be.cls_pool(x, B, T) if self.pooling == "cls" else be.mean_pool(x, batch.mask, B, T)
        saved["pre"] = linear(be, "head.dense", pooled, saved, train)
        head, saved["head_ln"] = self._norm(be, be.gelu(saved["pre"]), "head.norm")
        saved["dropped"], saved["cls_drop"] = be.dropout(head, rate["classifier"])
        logits = be.linear(saved["dropped"], be.param(self.head_module + ".weight"),
                           be.param(self.head_module + ".bias"))
        return logits, saved

    def _layer(self, be, n, x, batch, rate, ropes, window, train):
        """Layer n's forward: its output and what its backward needs."""
        c, linear, T = self.config, self.linears.forward, batch.T
        h_size, heads = c.hidden_size, c.num_attention_heads
        p, kind, s = f"model.layers.{n}.", c.layer_types[n], {}
        h = x
        if n:
            h, s["attn_ln"] = self._norm(be, x, p + "attn_norm")
        q, k, v = be.split_columns(linear(be, p + "attn.Wqkv", h, s, train), [h_size] * 3)
        q = be.rope(q, ropes[kind], heads, T)
        k = be.rope(k, ropes[kind], heads, T)
        ctx, s["attn"] = be.attention(q, k, v, batch.mask, batch.B, T, heads, rate["attention"],
                                      bias=window if kind == "sliding_attention" else None)
        a, s["attn_drop"] = be.dropout(linear(be, p + "attn.Wo", ctx, s, train), rate["attention"])
        x = be.add(x, a)
        h, s["mlp_ln"] = self._norm(be, x, p + "mlp_norm")
        s["input"], s["gate"] = be.split_columns(linear(be, p + "mlp.Wi", h, s, train),
                                                 [c.intermediate_size] * 2)
        g, s["mlp_drop"] = be.dropout(be.swiglu(s["input"], s["gate"], "gelu"), rate["mlp"])
        return be.add(x, linear(be, p + "mlp.Wo", g, s, train)), s

    def _window_bias(self, be, T):
        """The sliding layers' score bias [H, T, T]: 0 within config.window of the query,
        BEYOND_WINDOW beyond (None when every key is within it)."""
        c = self.config
        if "sliding_attention" not in c.layer_types or T <= c.window + 1:
            return None
        heads = c.num_attention_heads
        table = be.constant(("window rows", heads), [0.0] * heads + [BEYOND_WINDOW] * heads, (2, heads))
        buckets = [int(abs(i - j) > c.window) for i in range(T) for j in range(T)]
        return be.relative_position_bias(table, buckets, T, T)

    def _norm(self, be, x, name):
        bias = self.linears.param_name(name + ".bias") if self.config.norm_bias else None
        return be.layernorm(x, be.param(name + ".weight"), bias and be.param(bias), self.config.norm_eps)

    def _norm_backward(self, be, dy, saved, name):
        """dx; with bias="all" the norm's bias gradient is added too."""
        return be.layernorm_backward(dy, saved, None, self.linears.bias_grad(be, name + ".bias"))

    # --- backward -----------------------------------------------------------------------

    def backward(self, be, dlogits, saved, batch):
        """Accumulate the gradient of every trainable parameter into be.grad(name)."""
        c, B, T = self.config, batch.B, batch.T
        w = self.head_module
        be.linear_grad_params(dlogits, saved["dropped"], be.grad(w + ".weight"), be.grad(w + ".bias"))
        d = be.dropout_backward(be.linear_grad_input(dlogits, be.param(w + ".weight")), saved["cls_drop"])
        d = be.gelu_backward(self._norm_backward(be, d, saved["head_ln"], "head.norm"), saved["pre"])
        lowest = self._lowest_layer()
        d = self.linears.backward(be, "head.dense", d, saved, input_grad=lowest < c.num_hidden_layers)
        if lowest == c.num_hidden_layers:      # only the head trains
            return
        dx = be.cls_pool_backward(d, B, T) if self.pooling == "cls" else \
            be.mean_pool_backward(d, batch.mask, B, T)
        dx = self._norm_backward(be, dx, saved["final_ln"], "model.final_norm")
        # the embeddings' norm's bias trains, or a LoRA wraps the token embedding
        ropes, below = saved["ropes"], self.linears.trains_other_biases or self.embedding_adapted
        rate = dict(self.dropout)
        dx = layers_backward(
            be, dx, saved["layers"],
            lambda n, x: self._layer(be, n, x, batch, rate, ropes, saved["window"], True),
            lambda n, dx, s: self._layer_backward(be, n, dx, s, ropes, T, below or n > lowest),
            lowest)
        if below:
            dx = self._norm_backward(be, be.dropout_backward(dx, saved["emb_drop"]),
                                     saved["emb_ln"], "model.embeddings.norm")
            self.linears.tables.embed_backward(be, dx, batch.ids, saved, c.pad_token_id)

    def _layer_backward(self, be, n, dx, s, ropes, T, needed):
        """Layer n's backward from its output's gradient `dx`: its input's where `needed` (else
        dx as given), its weights' kept."""
        c = self.config
        p, kind, heads = f"model.layers.{n}.", c.layer_types[n], c.num_attention_heads
        dg = be.dropout_backward(self.linears.backward(be, p + "mlp.Wo", dx, s), s["mlp_drop"])
        dinput, dgate = be.swiglu_backward(dg, s["input"], s["gate"], "gelu")
        dh = self.linears.backward(be, p + "mlp.Wi", be.concat_columns([dinput, dgate]), s)
        dx = be.add(dx, self._norm_backward(be, dh, s["mlp_ln"], p + "mlp_norm"))
        da = be.dropout_backward(dx, s["attn_drop"])
        dq, dk, dv = be.attention_backward(self.linears.backward(be, p + "attn.Wo", da, s), s["attn"])
        dq = be.rope_backward(dq, ropes[kind], heads, T)
        dk = be.rope_backward(dk, ropes[kind], heads, T)
        dh = self.linears.backward(be, p + "attn.Wqkv", be.concat_columns([dq, dk, dv]), s,
                                   input_grad=needed)
        if needed:
            dx = be.add(dx, self._norm_backward(be, dh, s["attn_ln"], p + "attn_norm") if n else dh)
        return dx

    def _lowest_layer(self):
        """Layers below it need no backward: nothing trains there."""
        layers = self.config.num_hidden_layers
        if self.linears.trains_other_biases or self.embedding_adapted:
            return 0
        lowest = self.linears.lowest_layer(
            lambda m: int(m.split(".")[2]) if m.startswith("model.layers.") else layers)
        return layers if lowest is None else lowest
