"""Llama-family decoder (Llama 2/3, TinyLlama, SmolLM 1-3, Qwen2, Qwen3, Mistral, Gemma 1/2/3, Phi-3): the one
forward pass used for training, scoring and generation, and its explicit backward, written once
against a backend's op interface (py_engine/backends), like models/bert.py.

    x = embed[ids]                                    (Gemma: times sqrt(hidden_size))
    per layer:  h = RMSNorm(x);  q, k, v = LoRA/Linear(h);  q, k = RoPE(q), RoPE(k)  (not on SmolLM3's NoPE layers)
                                                      (Qwen3, Gemma 3: RMSNorm of each head of q
                                                       and k first; Gemma 3's sliding layers
                                                       rotate by their own base)
                x = x + o_proj(CausalAttention(q, k, v))          (grouped-query; Mistral, Phi-3,
                                                                   Qwen2/3 and Gemma 2/3 may slide a window;
                                                                   Gemma 2 soft-caps the scores)
                h = RMSNorm(x);  x = x + down_proj(SiLU(gate_proj(h)) * up_proj(h))
                                                      (Gemma: GELU-tanh, RMSNorm by 1 + weight;
                                                       Gemma 2/3: the attention's and the MLP's
                                                       outputs RMS-normalised before each add)
    loss = CrossEntropy(RMSNorm(x) . head^T, labels shifted by one)   (vocabulary in chunks;
                                                      Gemma 2 soft-caps the logits)

LoRA may wrap any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (PEFT's
names and its suffix rule), and the token embedding and the head (models/lora_tables.py); the
base weights and the head stay frozen, but for what PEFT's
modules_to_save trains whole beside the LoRA: the embedding (a scatter-add of the input
gradient, as in full fine-tuning) and the head (its gradient from the loss), which an adapter
trained after adding tokens carries with its resized vocabulary (DecoderModel.whole). Phi-3's fused
projections (config.fused_projections) replace q, k, v by one qkv_proj and gate, up by one
gate_up_proj, whose outputs are split by columns (and their gradients put side by side), as
GPT-2's c_attn: a LoRA on qkv_proj or gate_up_proj is one adapter on the fused matrix, as PEFT
wraps it. With `lora=None` every
weight trains instead (full fine-tuning): the backward then also gives each linear's weight and
bias gradient, each RMSNorm weight's, the head's (from the loss) and the embedding table's (a
scatter-add of the input gradient; with tied embeddings it adds to the head's).

With a KV cache (`cache`, made by the backend's kv_cache op) the forward runs inference over
new tokens at `inputs.position`: their keys and values are appended to each layer's cache and
the queries attend to everything cached before them. Generation is this forward, one prompt
then one token at a time.
"""

from ..labels import IGNORE_INDEX, IGNORE_LABEL
from .checkpointing import layers_backward, layers_forward
from .decoder import DecoderModel
from .neftune import noised_embeddings


class LlamaModel(DecoderModel):
    supports_gradient_checkpointing = True

    def __init__(self, config, lora, dropout=None):
        """lora: a LoraConfig, or None to train every weight (full fine-tuning)."""
        self.embedding_padding = config.pad_token_id     # transformers' padding_idx
        shapes = config.parameter_shapes()
        modules = {f"model.layers.{n}.{p}": shapes[f"model.layers.{n}.{p}.weight"]
                   for n in range(config.num_hidden_layers) for p in config.projections}
        self._build(config, lora, modules, "decoder", dropout=dropout)

    @property
    def logit_softcap(self):
        """The final logits' soft cap: Gemma 2's final_logit_softcapping, else None."""
        return self.config.final_logit_softcapping

    # --- forward ---

    def forward(self, be, inputs, train=True, cache=None):
        """Final hidden states [B*T, hidden] and what the backward needs. `inputs`: backend
        tensors ids and mask ([B, T]; mask may be None), sizes B and T, and `position`, where
        the tokens start (0, or with a cache the number of tokens cached before them: an int,
        or on the GPU a Variable set per replay); with a cache also `rope_length`, the length
        of the sequence whose rope tables to use (longrope's factors depend on it)."""
        c = self.config
        T = inputs.T
        ropes = self._rope_tables(be, cache.length if cache else T, inputs.rope_length if cache else T)
        saved = {"ids": inputs.ids, "ropes": ropes, "T": T}
        x = noised_embeddings(be, self._embed_tokens(be, inputs.ids, saved),
                              getattr(inputs, "noise_alpha", None), T, train)
        if c.embedding_scale is not None:
            x = be.scale(x, c.embedding_scale)
        x, saved["layers"] = layers_forward(
            be, x, c.num_hidden_layers, lambda n, x: self._layer(be, n, x, inputs, ropes, train, cache),
            train, self.gradient_checkpointing, self._lowest_layer)
        out, saved["final"] = self._norm(be, x, "model.norm.weight")
        return out, saved

    def _layer(self, be, n, x, inputs, ropes, train, cache=None):
        """Layer n's forward: its output and what its backward needs."""
        c, linear = self.config, self.linears.forward
        B, T, position = inputs.B, inputs.T, inputs.position
        p = f"model.layers.{n}."
        s = {}
        h, s["ln1"] = self._norm(be, x, p + "input_layernorm.weight")
        q, k, v = self._qkv(be, p, h, s, train)
        if c.qk_norm:
            q, s["q_norm"] = self._norm(be, q, p + "self_attn.q_norm.weight", c.head_dim)
            k, s["k_norm"] = self._norm(be, k, p + "self_attn.k_norm.weight", c.head_dim)
        rope = ropes[n]
        if c.layer_rope_used[n]:          # SmolLM3's NoPE layers do not rotate
            q = be.rope(q, rope, c.num_attention_heads, T, position)
            k = be.rope(k, rope, c.num_key_value_heads, T, position)
        if c.query_scale is not None:
            q = be.scale(q, c.query_scale)
        if cache is not None:
            k, v = be.kv_cache_append(cache, n, k, v, position)
        a, s["attn"] = be.causal_attention(q, k, v, inputs.mask, B, c.num_attention_heads,
                                           c.num_key_value_heads, past=position,
                                           window=c.layer_windows[n],
                                           softcap=c.attn_logit_softcapping)
        a = linear(be, p + "self_attn.o_proj", a, s, train)
        if c.sandwich_norms:
            a, s["attn_out"] = self._norm(be, a, p + "post_attention_layernorm.weight")
        x = be.add(x, a)
        h, s["ln2"] = self._norm(be, x, p + self._mlp_norm + ".weight")
        g, u = self._gate_up(be, p, h, s, train)
        s["g"], s["u"] = g, u
        m = linear(be, p + "mlp.down_proj", be.swiglu(g, u, c.mlp_activation), s, train)
        if c.sandwich_norms:
            m, s["mlp_out"] = self._norm(be, m, p + "post_feedforward_layernorm.weight")
        return be.add(x, m), s

    def _rope_tables(self, be, positions, seq_len):
        """Each layer's rotary tables (Gemma 3's sliding layers have their own base), made once
        per distinct setting."""
        made = {}
        for rope in self.config.layer_rope:
            if id(rope) not in made:
                made[id(rope)] = be.rope_tables(self.config.head_dim, rope, positions, seq_len)
        return [made[id(rope)] for rope in self.config.layer_rope]

    @property
    def _mlp_norm(self):
        """The RMSNorm before the MLP: Gemma 3 names it pre_feedforward_layernorm (its
        post_attention_layernorm normalises the attention's output)."""
        return "pre_feedforward_layernorm" if self.config.sandwich_norms else "post_attention_layernorm"

    def _norm(self, be, x, name, width=None):
        """RMSNorm by the weight `name` (Gemma's by 1 + weight); with `width` each block of that
        many columns on its own (QK-norm: a block per head)."""
        c = self.config
        return be.rmsnorm(x, be.param(name), c.rms_norm_eps, c.norm_offset, width=width)

    def _qkv(self, be, p, h, s, train):
        """q, k, v of layer prefix `p`: three projections, or Phi-3's one qkv_proj split."""
        linear, c = self.linears.forward, self.config
        if not c.fused_projections:
            return [linear(be, p + f"self_attn.{m}_proj", h, s, train) for m in "qkv"]
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        return be.split_columns(linear(be, p + "self_attn.qkv_proj", h, s, train), (q, kv, kv))

    def _gate_up(self, be, p, h, s, train):
        """The MLP's gate and up: two projections, or Phi-3's one gate_up_proj split (gate first)."""
        linear, c = self.linears.forward, self.config
        if not c.fused_projections:
            return [linear(be, p + f"mlp.{m}_proj", h, s, train) for m in ("gate", "up")]
        i = c.intermediate_size
        return be.split_columns(linear(be, p + "mlp.gate_up_proj", h, s, train), (i, i))

    # --- backward ---

    def _qkv_backward(self, be, p, dq, dk, dv, s, input_grad):
        """The input gradient of _qkv (None without input_grad), its weights' gradients kept."""
        back = self.linears.backward
        if self.config.fused_projections:
            return back(be, p + "self_attn.qkv_proj", be.concat_columns([dq, dk, dv]), s,
                        input_grad=input_grad)
        dh = [back(be, p + f"self_attn.{m}", d, s, input_grad=input_grad)
              for m, d in (("q_proj", dq), ("k_proj", dk), ("v_proj", dv))]
        return be.add(be.add(dh[0], dh[1]), dh[2]) if input_grad else None

    def _gate_up_backward(self, be, p, dg, du, s):
        back = self.linears.backward
        if self.config.fused_projections:
            return back(be, p + "mlp.gate_up_proj", be.concat_columns([dg, du]), s)
        return be.add(back(be, p + "mlp.gate_proj", dg, s), back(be, p + "mlp.up_proj", du, s))

    def backward(self, be, dhidden, saved, inputs):
        """Gradients of the loss whose gradient with respect to the final hidden states is
        `dhidden` (with full fine-tuning the head's own gradient comes from the loss). Layers
        below the lowest adapter get no backward; that layer computes no input gradient."""
        c = self.config
        ropes, T = saved["ropes"], saved["T"]
        dx = self._norm_backward(be, dhidden, saved["final"], "model.norm.weight")
        lowest = self._lowest_layer()
        dx = layers_backward(be, dx, saved["layers"],
                             lambda n, x: self._layer(be, n, x, inputs, ropes, True),
                             lambda n, dx, s: self._layer_backward(be, n, dx, s, ropes, T, lowest),
                             lowest)
        if self.embedding_trains or self.embedding_adapted:
            if c.embedding_scale is not None:
                dx = be.scale(dx, c.embedding_scale)
            self._embed_tokens_backward(be, dx, saved)


    def _layer_backward(self, be, n, dx, s, ropes, T, lowest):
        """Layer n's backward from its output's gradient `dx`: its input's (the layer `lowest`,
        below which nothing trains, computes none: dx as given), its weights' kept."""
        c, back = self.config, self.linears.backward
        p = f"model.layers.{n}."
        dm = dx
        if c.sandwich_norms:
            dm = self._norm_backward(be, dm, s["mlp_out"], p + "post_feedforward_layernorm.weight")
        dm = back(be, p + "mlp.down_proj", dm, s)
        dg, du = be.swiglu_backward(dm, s["g"], s["u"], c.mlp_activation)
        dh = self._gate_up_backward(be, p, dg, du, s)
        dx = be.add(dx, self._norm_backward(be, dh, s["ln2"], p + self._mlp_norm + ".weight"))
        da = dx
        if c.sandwich_norms:
            da = self._norm_backward(be, da, s["attn_out"], p + "post_attention_layernorm.weight")
        da = back(be, p + "self_attn.o_proj", da, s)
        dq, dk, dv = be.causal_attention_backward(da, s["attn"])
        if c.query_scale is not None:
            dq = be.scale(dq, c.query_scale)
        rope = ropes[n]
        if c.layer_rope_used[n]:
            dq = be.rope_backward(dq, rope, c.num_attention_heads, T)
            dk = be.rope_backward(dk, rope, c.num_key_value_heads, T)
        if c.qk_norm:
            dq = self._norm_backward(be, dq, s["q_norm"], p + "self_attn.q_norm.weight")
            dk = self._norm_backward(be, dk, s["k_norm"], p + "self_attn.k_norm.weight")
        needed = self.backward_to_inputs or n > lowest    # nothing below the lowest adapter trains
        dh = self._qkv_backward(be, p, dq, dk, dv, s, needed)
        if needed:
            dx = be.add(dx, self._norm_backward(be, dh, s["ln1"], p + "input_layernorm.weight"))
        return dx


def shift_labels(labels):
    """Causal-LM targets: position t predicts labels[t + 1]; IGNORE_INDEX (transformers' -100)
    and the last position become IGNORE_LABEL. labels: [B][T] lists -> flat list of B*T."""
    out = []
    for row in labels:
        out.extend([IGNORE_LABEL if y == IGNORE_INDEX else y for y in row[1:]] + [IGNORE_LABEL])
    return out
