"""Phi-2 family decoder (PhiForCausalLM: microsoft/phi-2, phi-1.5): the one forward pass used for
training, scoring and generation, and its explicit backward, over a backend's op interface as
models/llama.py is; the trainer, runtimes, LoRA (models/lora.py) and generation are shared.

    x = Dropout_embd(embed[ids])
    per layer:  h = LayerNorm(x)                                  (one norm feeds both branches)
                q, k, v = q_proj(h), k_proj(h), v_proj(h);  q, k = RoPE(q), RoPE(k)  (partial)
                a = Dropout_resid(dense(CausalAttention(q, k, v)))
                m = Dropout_resid(fc2(GELU_tanh(fc1(h))))
                x = x + a + m                                     (attention and MLP in parallel)
    loss = CrossEntropy(LayerNorm(x) . lm_head^T + lm_head.bias, labels shifted by one)

RoPE rotates only the first rotary_dim = int(head_dim * partial_rotary_factor) dimensions of
each head (the tables the backend makes from the config's rope_parameters say how many).
Dropout, as in models/gpt2.py, is the backend's counter-based dropout at the config's rates and
only in training: embd_pdrop on the embeddings, resid_pdrop on each branch's output,
attention_dropout on the attention probabilities; the model's `dropout` option overrides them
("embedding", "residual", "attention"; 0.0 turns all three off).

Every linear has a bias, the head too (`head_bias`: the loss adds it to the logits; full
fine-tuning trains it). LoRA may wrap q_proj, k_proj, v_proj, dense, fc1, fc2 (PEFT's names).
With `lora=None` every weight trains.
"""

from .checkpointing import layers_backward, layers_forward
from .decoder import DecoderModel
from .neftune import noised_embeddings

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense",
               "mlp.fc1", "mlp.fc2")


class PhiModel(DecoderModel):
    supports_gradient_checkpointing = True
    head_bias = "lm_head.bias"

    def __init__(self, config, lora, dropout=None):
        """lora: a LoraConfig, or None to train every weight (full fine-tuning); dropout: as
        DecoderModel._build's."""
        self.embedding_padding = config.pad_token_id     # transformers' padding_idx
        shapes = config.parameter_shapes()
        modules = {f"model.layers.{n}.{p}": shapes[f"model.layers.{n}.{p}.weight"]
                   for n in range(config.num_hidden_layers) for p in PROJECTIONS}
        self._build(config, lora, modules, "Phi decoder", dropout=dropout)

    @staticmethod
    def dropout_rates(config):
        return {"embedding": config.embd_pdrop, "residual": config.resid_pdrop,
                "attention": config.attention_dropout}

    # --- forward ---

    def forward(self, be, inputs, train=True, cache=None):
        """Final hidden states [B*T, hidden] and what the backward needs; `inputs` as for
        LlamaModel.forward (ids, mask, B, T, position)."""
        c = self.config
        T = inputs.T
        rope = be.rope_tables(c.head_dim, c.rope_parameters, cache.length if cache else T)
        p_embd = self.dropout["embedding"] if train else 0
        saved = {"ids": inputs.ids, "rope": rope, "T": T}
        x = noised_embeddings(be, self._embed_tokens(be, inputs.ids, saved),
                              getattr(inputs, "noise_alpha", None), T, train)
        x, saved["emb_drop"] = be.dropout(x, p_embd)
        x, saved["layers"] = layers_forward(
            be, x, c.num_hidden_layers, lambda n, x: self._layer(be, n, x, inputs, rope, train, cache),
            train, self.gradient_checkpointing, self._lowest_layer)
        out, saved["final"] = self._layernorm(be, x, "model.final_layernorm", c.layer_norm_eps)
        return out, saved

    def _layer(self, be, n, x, inputs, rope, train, cache=None):
        """Layer n's forward: its output and what its backward needs."""
        c, linear = self.config, self.linears.forward
        B, T, position = inputs.B, inputs.T, inputs.position
        H, Hkv = c.num_attention_heads, c.num_key_value_heads
        p_resid, p_attn = (self.dropout["residual"], self.dropout["attention"]) if train else (0, 0)
        p = f"model.layers.{n}."
        s = {}
        h, s["ln"] = self._layernorm(be, x, p + "input_layernorm", c.layer_norm_eps)
        q = be.rope(linear(be, p + "self_attn.q_proj", h, s, train), rope, H, T, position)
        k = be.rope(linear(be, p + "self_attn.k_proj", h, s, train), rope, Hkv, T, position)
        v = linear(be, p + "self_attn.v_proj", h, s, train)
        if cache is not None:
            k, v = be.kv_cache_append(cache, n, k, v, position)
        a, s["attn"] = be.causal_attention(q, k, v, inputs.mask, B, H, Hkv, past=position, p=p_attn)
        a, s["attn_drop"] = be.dropout(linear(be, p + "self_attn.dense", a, s, train), p_resid)
        f = linear(be, p + "mlp.fc1", h, s, train)
        s["fc"] = f
        m, s["mlp_drop"] = be.dropout(linear(be, p + "mlp.fc2", be.gelu(f, c.gelu_approximate), s, train),
                                      p_resid)
        return be.add(be.add(x, a), m), s

    # --- backward ---

    def backward(self, be, dhidden, saved, inputs):
        """Gradients of the loss whose gradient with respect to the final hidden states is
        `dhidden` (with full fine-tuning the head's own gradients come from the loss). Layers
        below the lowest adapter get no backward; that layer computes no input gradient (both
        branches read the same norm, whose input gradient only the layers below need)."""
        rope, T = saved["rope"], saved["T"]
        dx = self._layernorm_backward(be, dhidden, saved["final"], "model.final_layernorm")
        lowest = self._lowest_layer()
        dx = layers_backward(be, dx, saved["layers"],
                             lambda n, x: self._layer(be, n, x, inputs, rope, True),
                             lambda n, dx, s: self._layer_backward(be, n, dx, s, rope, T, lowest),
                             lowest)
        if self.embedding_trains or self.embedding_adapted:
            dx = be.dropout_backward(dx, saved["emb_drop"])
            self._embed_tokens_backward(be, dx, saved)

    def _layer_backward(self, be, n, dx, s, rope, T, lowest):
        """Layer n's backward from its output's gradient `dx`: its input's (the layer `lowest`,
        below which nothing trains, computes none: dx as given), its weights' kept."""
        c, back = self.config, self.linears.backward
        H, Hkv = c.num_attention_heads, c.num_key_value_heads
        p = f"model.layers.{n}."
        needed = self.backward_to_inputs or n > lowest    # nothing below the lowest adapter trains
        dm = back(be, p + "mlp.fc2", be.dropout_backward(dx, s["mlp_drop"]), s)
        df = be.gelu_backward(dm, s["fc"], c.gelu_approximate)
        dh = [back(be, p + "mlp.fc1", df, s, input_grad=needed)]
        da = back(be, p + "self_attn.dense", be.dropout_backward(dx, s["attn_drop"]), s)
        dq, dk, dv = be.causal_attention_backward(da, s["attn"])
        dq = be.rope_backward(dq, rope, H, T)
        dk = be.rope_backward(dk, rope, Hkv, T)
        dh += [back(be, p + f"self_attn.{m}", d, s, input_grad=needed)
               for m, d in (("q_proj", dq), ("k_proj", dk), ("v_proj", dv))]
        if needed:
            dh = be.add(be.add(dh[0], dh[1]), be.add(dh[2], dh[3]))
            dx = be.add(dx, self._layernorm_backward(be, dh, s["ln"], p + "input_layernorm"))
        return dx
