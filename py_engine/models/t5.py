"""T5 encoder-decoder (T5ForConditionalGeneration: FLAN-T5, T5 v1.1): the forward pass used for
training, scoring and generation, and its explicit backward, over a backend's op interface as
models/llama.py is; LoRA (models/lora.py) and the loss (the backend's lm_head_loss) are the
decoders' own.

    encoder:  x = Dropout(shared[input_ids])
              per layer:  x = x + Dropout(o(Attention(q, k, v of RMSNorm(x); + bias_enc, mask)))
                          x = x + Dropout(wo(Dropout(act(wi_0 h) * wi_1 h))),  h = RMSNorm(x)
              enc = Dropout(RMSNorm(x))
    decoder:  x = Dropout(shared[decoder_input_ids])     (labels shifted right after
                                                          decoder_start_token_id)
              per layer:  self-attention as above, causal, + bias_dec
                          x = x + Dropout(o(Attention(q of RMSNorm(x), k, v of enc, mask)))
                          the feed-forward as above
    loss = CrossEntropy(Dropout(RMSNorm(x)) . lm_head^T, labels)          (no shift: the
                                                                          decoder input is)
    (with a tied head, the original T5's: Dropout(RMSNorm(x)) * d_model ** -0.5 . shared^T)

As transformers computes it: the RMS norms are T5LayerNorm (no mean, no bias), the attention has
no 1/sqrt(d) scale, and the relative position bias (relative_attention_bias of each stack's
first layer, looked up by bucket: bidirectional in the encoder, looking back only in the
decoder) is added to every layer's self-attention scores; cross attention has none. Dropout
(the backend's counter-based dropout) runs at dropout_rate only when training.

LoRA may wrap any of q, k, v, o (self and cross attention: PEFT's suffix rule matches both)
and wi_0, wi_1, wo, and a head of its own (lm_head: logits = h W^T + s (dropout(h) A^T) B^T,
the loss adding the low-rank term chunk by chunk, as a decoder's); the base weights and the
head stay frozen. With `lora=None` every weight
trains instead (full fine-tuning): the backward then also gives each linear's and RMSNorm's
weight gradient, the head's (from the loss), the shared embedding's (a scatter-add of both
stacks' input gradients; with the tied head it adds to the head's) and each stack's relative
position bias table's (the score gradients of every layer of the stack summed by bucket).

For generation the encoder runs once (`encode`), each decoder layer's cross-attention keys and
values are computed once from its output (`cross_keys_values`), and the decoder runs one token
at a time against its self-attention KV cache (`decode`).
"""

import math

from .checkpointing import layers_backward, layers_forward
from .dropout_rates import override_rates
from .lora import AdaptedModel, Linears
from .lora_tables import HEAD
from .neftune import noised_embeddings
from .relative_position import relative_position_buckets
from .saved_modules import named_whole

ATTENTION = ("q", "k", "v", "o")
FEED_FORWARD = ("wi_0", "wi_1", "wo")


def linear_modules(config):
    """{module name: (out, in)} of every linear, in model order (encoder, then decoder)."""
    shapes = config.parameter_shapes()
    modules = {}
    for name in shapes:
        module = name[:-len(".weight")]
        if module.rsplit(".", 1)[-1] in ATTENTION + FEED_FORWARD:
            modules[module] = shapes[name]
    return modules


class T5Model(AdaptedModel):
    supports_gradient_checkpointing = True
    decoder = True              # the GPU loads the decoder kernel families
    encoder_decoder = True

    def __init__(self, config, lora, dropout=None):
        """lora: a LoraConfig, or None to train every weight (full fine-tuning); dropout: None
        for the config's dropout_rate, a float for another (0.0: none)."""
        if lora is not None:    # T5's adapters train their LoRA alone: nothing trains whole
            modules = ["lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
            named_whole(lora.modules_to_save, list(config.parameter_shapes()) + modules, [],
                        "T5 model")
        self.config = config
        self.dropout = override_rates({"dropout_rate": config.dropout_rate}, dropout, "T5 model")
        self.full = lora is None
        # a head of its own (FLAN-T5's) may take a LoRA as PEFT wraps it (models/lora_tables.py);
        # the tied one is the shared table, scaled, and stays refused with the embeddings
        tables = {} if config.tie_word_embeddings else {
            "lm_head": (HEAD, config.vocab_size, config.hidden_size)}
        self.linears = Linears(linear_modules(config), lora, "T5 model", full=self.full,
                               params=config.parameter_shapes(),
                               others=("encoder.embed_tokens", "decoder.embed_tokens", "lm_head"),
                               tables=tables)
        self.lora = self.linears.lora        # "all-linear" spelled out
        self.targets = self.linears.targets
        self.trainable = dict(config.parameter_shapes()) if self.full else dict(self.linears.trainable)

    @property
    def head_name(self):
        return self.config.head_name

    def _rate(self, train):
        return self.dropout["dropout_rate"] if train else 0.0

    @staticmethod
    def bias_table(stack):
        """The name of `stack`'s relative position bias table [num_buckets, H]."""
        return f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"

    def buckets(self, stack, queries, keys, past):
        """The relative position buckets [Tq * Tk] of `stack` for queries at past.. against keys
        at 0.. (see relative_position_buckets)."""
        c = self.config
        return relative_position_buckets(queries, keys, past, stack == "encoder",
                                         c.relative_attention_num_buckets, c.relative_attention_max_distance)

    def _bias(self, be, stack, queries, keys, past):
        """(bias [H, Tq, Tk], its buckets)."""
        buckets = self.buckets(stack, queries, keys, past)
        return be.relative_position_bias(be.param(self.bias_table(stack)), buckets, queries, keys), buckets

    def _norm(self, be, x, name):
        return be.rmsnorm(x, be.param(name + ".weight"), self.config.layer_norm_epsilon)

    def _feed_forward(self, be, x, p, s, train):
        """x + Dropout(wo(Dropout(act(wi_0 h) * wi_1 h))), h = RMSNorm(x); p: the sublayer's
        prefix ("encoder.block.0.layer.1.")."""
        linear, rate = self.linears.forward, self._rate(train)
        h, s["ln_ff"] = self._norm(be, x, p + "layer_norm")
        s["gate"] = linear(be, p + "DenseReluDense.wi_0", h, s, train)
        s["up"] = linear(be, p + "DenseReluDense.wi_1", h, s, train)
        m, s["act_drop"] = be.dropout(be.swiglu(s["gate"], s["up"], activation=self.config.activation), rate)
        m, s["ff_drop"] = be.dropout(linear(be, p + "DenseReluDense.wo", m, s, train), rate)
        return be.add(x, m)

    def _attention(self, be, x, kv, p, s, key, train, *, mask, B, T, bias, causal=False, cache=None,
                   layer=0, position=0):
        """x + Dropout(o(Attention)) of the sublayer at prefix p (its "SelfAttention" or
        "EncDecAttention" module is `key`); kv: the cross attention's precomputed (k, v), the
        encoder output to project them from, or None for self-attention."""
        linear, c = self.linears.forward, self.config
        h, s["ln_" + key] = self._norm(be, x, p + "layer_norm")
        m = f"{p}{key}."
        q = linear(be, m + "q", h, s, train)
        if isinstance(kv, tuple):
            k, v = kv
        else:
            source = h if kv is None else kv
            k, v = linear(be, m + "k", source, s, train), linear(be, m + "v", source, s, train)
        if cache is not None:
            k, v = be.kv_cache_append(cache, layer, k, v, position)
        a, s[key] = be.attention(q, k, v, mask, B, T, c.num_attention_heads, self._rate(train),
                                 scaling=1.0, bias=bias, causal=causal)
        a, s[key + "_drop"] = be.dropout(linear(be, m + "o", a, s, train), self._rate(train))
        return be.add(x, a)

    # --- forward ---

    def _stack(self, be, stack, ids, count, train, layer, buckets=None, noise_alpha=None):
        """Run `stack` ("encoder" or "decoder") over ids: the shared embedding (with NEFTune's
        noise for `noise_alpha` in training), `count` layers (layer(x, prefix, saved, n) -> x),
        the final norm; returns (output, saved), saved holding the layers' run (n, x) -> (x,
        saved) for gradient checkpointing's recompute. buckets: those of the stack's relative
        position bias, kept for the backward."""
        x = noised_embeddings(be, be.gather_rows(be.param("shared.weight"), ids), noise_alpha,
                              ids.shape[-1], train)
        x, drop = be.dropout(x, self._rate(train))

        def run(n, x):
            s = {}
            return layer(x, f"{stack}.block.{n}.layer.", s, n), s

        def lowest():       # the encoder's None: no backward through it at all
            n = self._lowest_trained()[stack == "decoder"]
            return count if n is None else n

        x, layers = layers_forward(be, x, count, run, train, self.gradient_checkpointing, lowest)
        out, final = self._norm(be, x, f"{stack}.final_layer_norm")
        out, final_drop = be.dropout(out, self._rate(train))
        return out, {"layers": layers, "final": final, "final_drop": final_drop, "emb_drop": drop,
                     "ids": ids, "buckets": buckets, "run": run}

    def encode(self, be, ids, mask, B, S, train=True, noise_alpha=None):
        """The encoder's output [B*S, d_model] of ids [B, S] (mask [B, S] of 0/1 or None), and
        what its backward needs; noise_alpha: NEFTune's (training)."""
        bias, buckets = self._bias(be, "encoder", S, S, 0)

        def layer(x, p, s, n):
            x = self._attention(be, x, None, p + "0.", s, "SelfAttention", train, mask=mask, B=B, T=S,
                                bias=bias)
            return self._feed_forward(be, x, p + "1.", s, train)

        return self._stack(be, "encoder", ids, self.config.num_encoder_layers, train, layer, buckets,
                           noise_alpha)

    def cross_keys_values(self, be, enc):
        """Each decoder layer's cross-attention keys and values of the encoder output (made
        once per input for generation; LoRA-wrapped k or v included)."""
        out = []
        for n in range(self.config.num_hidden_layers):
            m = f"decoder.block.{n}.layer.1.EncDecAttention."
            out.append(tuple(self.linears.forward(be, m + x, enc, {}, False) for x in ("k", "v")))
        return out

    def decode(self, be, ids, B, T, enc, enc_mask, train=True, cache=None, position=0, cached=None,
               noise_alpha=None):
        """The decoder's final hidden states [B*T, d_model] for ids [B, T] at `position` (0, or
        with a KV cache the tokens cached before them), and what its backward needs. enc: the
        encoder output [B*S, d_model], or per layer its cross keys and values (see
        cross_keys_values); enc_mask: the encoder's mask [B, S] or None. cached: for one token
        against a whole cache whose position is set per run (the GPU decoder), the cache rows'
        mask [1, L] (1 up to the token) and its relative position bias [H, 1, L], instead of
        the causal limit and a bias computed here. noise_alpha: NEFTune's (training)."""
        c = self.config
        buckets = None
        if cached is None:
            (bias, buckets), self_mask, causal = self._bias(be, "decoder", T, position + T, position), None, True
        else:
            (self_mask, bias), causal = cached, False

        def layer(x, p, s, n):
            x = self._attention(be, x, None, p + "0.", s, "SelfAttention", train, mask=self_mask, B=B,
                                T=T, bias=bias, causal=causal, cache=cache, layer=n, position=position)
            kv = enc[n] if isinstance(enc, list) else enc
            x = self._attention(be, x, kv, p + "1.", s, "EncDecAttention", train, mask=enc_mask, B=B,
                                T=T, bias=None)
            return self._feed_forward(be, x, p + "2.", s, train)

        out, saved = self._stack(be, "decoder", ids, c.num_hidden_layers, train, layer, buckets,
                                 noise_alpha)
        if c.output_scale != 1.0:           # the tied head's rescaling
            out = be.scale(out, c.output_scale)
        return out, saved

    def forward(self, be, inputs, train=True):
        """The decoder's final hidden states [B*T, d_model] and what the backward needs.
        `inputs`: a Seq2SeqBatch's fields as backend tensors: ids and mask [B, S] (the
        encoder's), decoder_ids [B, T], sizes B and T (the decoder's)."""
        B, alpha = inputs.B, getattr(inputs, "noise_alpha", None)
        enc, encoder = self.encode(be, inputs.ids, inputs.mask, B, inputs.ids.shape[-1], train,
                                   noise_alpha=alpha)
        out, decoder = self.decode(be, inputs.decoder_ids, B, inputs.T, enc, inputs.mask, train,
                                   noise_alpha=alpha)
        return out, {"encoder": encoder, "decoder": decoder}

    # --- backward ---

    def _lowest(self, stack):
        """The lowest layer of `stack` holding an adapter (None: none there)."""
        lowest = self.linears.lowest_layer(lambda m: int(m.split(".")[2]) if m.startswith(stack + ".")
                                           else math.inf)
        return None if lowest in (None, math.inf) else lowest

    def _feed_forward_backward(self, be, dx, p, s):
        back = self.linears.backward
        dm = back(be, p + "DenseReluDense.wo", be.dropout_backward(dx, s["ff_drop"]), s)
        dg, du = be.swiglu_backward(be.dropout_backward(dm, s["act_drop"]), s["gate"], s["up"],
                                    activation=self.config.activation)
        dh = be.add(back(be, p + "DenseReluDense.wi_0", dg, s), back(be, p + "DenseReluDense.wi_1", du, s))
        return be.add(dx, self._norm_backward(be, dh, s["ln_ff"], p + "layer_norm.weight"))

    def _attention_backward(self, be, dx, p, s, key, input_grad=True, kv_grad=True, bias_grad=None):
        """dx through the sublayer's attention; for cross attention (kv_grad) also the encoder
        output's gradient from k and v (None where not needed). bias_grad: (the bias table's
        gradient, the buckets) where the table trains."""
        back, m = self.linears.backward, f"{p}{key}."
        da = back(be, m + "o", be.dropout_backward(dx, s[key + "_drop"]), s)
        dq, dk, dv = be.attention_backward(da, s[key], bias_grad=bias_grad)
        norm = lambda dh: self._norm_backward(be, dh, s["ln_" + key], p + "layer_norm.weight")
        if key == "EncDecAttention":
            dh = back(be, m + "q", dq, s)
            denc = [back(be, m + x, d, s, input_grad=kv_grad) for x, d in (("k", dk), ("v", dv))]
            return be.add(dx, norm(dh)), (be.add(denc[0], denc[1]) if kv_grad else None)
        dh = [back(be, m + x, d, s, input_grad=input_grad) for x, d in (("q", dq), ("k", dk), ("v", dv))]
        if not input_grad:
            return dx, None
        dh = be.add(be.add(dh[0], dh[1]), dh[2])
        return be.add(dx, norm(dh)), None

    def _bias_grad(self, be, stack, saved):
        """(the bias table's gradient, the buckets) of `stack` in full fine-tuning, else None."""
        return (be.grad(self.bias_table(stack)), saved["buckets"]) if self.full else None

    def _embedding_backward(self, be, dx, saved):
        """Full fine-tuning: the shared embedding's gradient from a stack's input gradient (every
        row, the padding's too: T5's embedding has no padding_idx)."""
        be.gather_rows_backward(be.dropout_backward(dx, saved["emb_drop"]), saved["ids"],
                                be.grad("shared.weight"))

    def backward(self, be, dhidden, saved, inputs):
        """Gradients of the loss whose gradient with respect to the decoder's final hidden
        states is `dhidden` (with full fine-tuning the head's own gradient comes from the
        loss). With LoRA the encoder's output gradient (from every decoder layer's
        cross-attention keys and values) is only formed when the encoder holds an adapter, and
        no layer below the lowest adapter of its stack gets a backward."""
        c = self.config
        dec, enc = saved["decoder"], saved["encoder"]
        encoder_lowest, decoder_lowest = self._lowest_trained()
        if c.output_scale != 1.0:
            dhidden = be.scale(dhidden, c.output_scale)
        dx = self._norm_backward(be, be.dropout_backward(dhidden, dec["final_drop"]), dec["final"],
                                 "decoder.final_layer_norm.weight")
        denc = []           # the encoder output's gradient, summed over the decoder layers

        def decoder_layer(n, dx, s):
            p = f"decoder.block.{n}.layer."
            dx = self._feed_forward_backward(be, dx, p + "2.", s)
            dx, d = self._attention_backward(be, dx, p + "1.", s, "EncDecAttention",
                                             kv_grad=encoder_lowest is not None)
            if d is not None:
                denc[:] = [be.add(denc[0], d) if denc else d]
            dx, _ = self._attention_backward(be, dx, p + "0.", s, "SelfAttention",
                                            input_grad=self.full or n > decoder_lowest,
                                            bias_grad=self._bias_grad(be, "decoder", dec))
            return dx

        dx = layers_backward(be, dx, dec["layers"], dec["run"], decoder_layer, decoder_lowest,
                             kept=denc)
        if self.full:
            self._embedding_backward(be, dx, dec)
        if encoder_lowest is None:
            return

        def encoder_layer(n, dx, s):
            p = f"encoder.block.{n}.layer."
            dx = self._feed_forward_backward(be, dx, p + "1.", s)
            dx, _ = self._attention_backward(be, dx, p + "0.", s, "SelfAttention",
                                            input_grad=self.full or n > encoder_lowest,
                                            bias_grad=self._bias_grad(be, "encoder", enc))
            return dx

        dx = self._norm_backward(be, be.dropout_backward(denc[0], enc["final_drop"]), enc["final"],
                                 "encoder.final_layer_norm.weight")
        dx = layers_backward(be, dx, enc["layers"], enc["run"], encoder_layer, encoder_lowest)
        if self.full:
            self._embedding_backward(be, dx, enc)

    def _lowest_trained(self):
        """(encoder, decoder): the lowest layer of each stack the backward visits (None: no
        backward through the encoder at all). With LoRA the decoder's every layer is visited
        when the encoder's output gradient is wanted (it comes through each cross attention)."""
        if self.full:
            return 0, 0
        encoder_lowest, decoder_lowest = self._lowest("encoder"), self._lowest("decoder")
        if decoder_lowest is None or encoder_lowest is not None:
            decoder_lowest = 0
        return encoder_lowest, decoder_lowest
