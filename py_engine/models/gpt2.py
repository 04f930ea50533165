"""GPT-2 family decoder (GPT2LMHeadModel: GPT-2, DialoGPT, distilgpt2): the one forward pass used
for training, scoring and generation, and its explicit backward, over a backend's op interface
as models/llama.py is; the trainer, runtimes, LoRA (models/lora.py) and generation are the
Llama family's own.

    x = Dropout_embd(wte[ids] + wpe[positions])
    per layer:  h = LayerNorm(x);  q, k, v = split(c_attn(h))          (one fused projection)
                x = x + Dropout_resid(attn.c_proj(CausalAttention(q, k, v)))
                h = LayerNorm(x);  x = x + Dropout_resid(mlp.c_proj(GELU_tanh(c_fc(h))))
    loss = CrossEntropy(LayerNorm(x) . wte^T, labels shifted by one)   (tied head; an adapter may
                                                                    train lm_head as a copy: modules_to_save)

Dropout (the backend's counter-based dropout, as models/bert.py uses it) is applied only when
training, at the config's rates where transformers applies them: embd_pdrop on the embeddings,
resid_pdrop before each residual add, attn_pdrop on the attention probabilities (inside the
causal attention op, which never stores them). The model's `dropout` option overrides them
("embedding", "residual", "attention"; 0.0 turns all three off).

Every linear has a bias. LoRA may wrap c_attn, c_proj (attention's and the MLP's: PEFT's suffix
rule matches both) and c_fc; a LoRA on c_attn is one adapter on the fused [3h, h] projection,
whose output is then split, as PEFT wraps the Conv1D. Weights are held as [out, in] (the
checkpoint's Conv1D [in, out] is transposed on load), so PEFT's fan_in_fan_out lora_A / lora_B
have the shapes they have for a Linear. With `lora=None` every weight trains.
"""

from .checkpointing import layers_backward, layers_forward
from .decoder import DecoderModel
from .neftune import noised_embeddings

PROJECTIONS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class Gpt2Model(DecoderModel):
    supports_gradient_checkpointing = True

    @property
    def head_name(self):
        """The head's weight: the token embedding (GPT-2 ties them), or an adapter's copy of
        its own (modules_to_save)."""
        return "transformer.wte.weight" if self.config.tie_word_embeddings else "lm_head.weight"

    def __init__(self, config, lora, dropout=None):
        """lora: a LoraConfig (its fan_in_fan_out is set, as PEFT sets it for Conv1D), or None
        to train every weight (full fine-tuning); dropout: as DecoderModel._build's."""
        if lora is not None:
            lora.fan_in_fan_out = True
        shapes = config.parameter_shapes()
        modules = {f"transformer.h.{n}.{p}": shapes[f"transformer.h.{n}.{p}.weight"]
                   for n in range(config.num_hidden_layers) for p in PROJECTIONS}
        self._build(config, lora, modules, "GPT-2 decoder", conv1d=True, dropout=dropout)

    @staticmethod
    def dropout_rates(config):
        return {"embedding": config.embd_pdrop, "residual": config.resid_pdrop, "attention": config.attn_pdrop}

    # --- forward ---

    def forward(self, be, inputs, train=True, cache=None):
        """Final hidden states [B*T, hidden] and what the backward needs; `inputs` as for
        LlamaModel.forward (ids, mask, B, T, position)."""
        c = self.config
        B, T, position = inputs.B, inputs.T, inputs.position
        p_embd = self.dropout["embedding"] if train else 0
        saved = {"ids": inputs.ids, "B": B, "T": T}
        x = be.add(noised_embeddings(be, self._embed_tokens(be, inputs.ids, saved),
                                     getattr(inputs, "noise_alpha", None), T, train),
                   be.position_rows(be.param("transformer.wpe.weight"), B, T, position))
        x, saved["emb_drop"] = be.dropout(x, p_embd)
        x, saved["layers"] = layers_forward(
            be, x, c.num_hidden_layers, lambda n, x: self._layer(be, n, x, inputs, train, cache),
            train, self.gradient_checkpointing, self._lowest_layer)
        out, saved["final"] = self._layernorm(be, x, "transformer.ln_f", c.layer_norm_epsilon)
        return out, saved

    def _layer(self, be, n, x, inputs, train, cache=None):
        """Layer n's forward: its output and what its backward needs."""
        c, linear, h = self.config, self.linears.forward, self.config.hidden_size
        p_resid, p_attn = (self.dropout["residual"], self.dropout["attention"]) if train else (0, 0)
        p = f"transformer.h.{n}."
        s = {}
        a, s["ln1"] = self._layernorm(be, x, p + "ln_1", c.layer_norm_epsilon)
        q, k, v = be.split_columns(linear(be, p + "attn.c_attn", a, s, train), (h, h, h))
        if cache is not None:
            k, v = be.kv_cache_append(cache, n, k, v, inputs.position)
        a, s["attn"] = be.causal_attention(q, k, v, inputs.mask, inputs.B, c.num_attention_heads,
                                           c.num_attention_heads, past=inputs.position, p=p_attn)
        a, s["attn_drop"] = be.dropout(linear(be, p + "attn.c_proj", a, s, train), p_resid)
        x = be.add(x, a)
        a, s["ln2"] = self._layernorm(be, x, p + "ln_2", c.layer_norm_epsilon)
        f = linear(be, p + "mlp.c_fc", a, s, train)
        s["fc"] = f
        m = linear(be, p + "mlp.c_proj", be.gelu(f, c.gelu_approximate), s, train)
        m, s["mlp_drop"] = be.dropout(m, p_resid)
        return be.add(x, m), s

    # --- backward ---

    def backward(self, be, dhidden, saved, inputs):
        """Gradients of the loss whose gradient with respect to the final hidden states is
        `dhidden` (with full fine-tuning the head's own gradient comes from the loss). Layers
        below the lowest adapter get no backward; that layer computes no input gradient."""
        dx = self._layernorm_backward(be, dhidden, saved["final"], "transformer.ln_f")
        lowest = self._lowest_layer()
        dx = layers_backward(be, dx, saved["layers"],
                             lambda n, x: self._layer(be, n, x, inputs, True),
                             lambda n, dx, s: self._layer_backward(be, n, dx, s, lowest), lowest)
        if self.embedding_trains or self.embedding_adapted:
            dx = be.dropout_backward(dx, saved["emb_drop"])
            self._embed_tokens_backward(be, dx, saved)
        if self.full:
            be.position_rows_backward(dx, saved["B"], saved["T"], be.grad("transformer.wpe.weight"))

    def _layer_backward(self, be, n, dx, s, lowest):
        """Layer n's backward from its output's gradient `dx`: its input's (the layer `lowest`,
        below which nothing trains, computes none: dx as given), its weights' kept."""
        c, back = self.config, self.linears.backward
        p = f"transformer.h.{n}."
        dm = back(be, p + "mlp.c_proj", be.dropout_backward(dx, s["mlp_drop"]), s)
        df = be.gelu_backward(dm, s["fc"], c.gelu_approximate)
        dh = back(be, p + "mlp.c_fc", df, s)
        dx = be.add(dx, self._layernorm_backward(be, dh, s["ln2"], p + "ln_2"))
        da = back(be, p + "attn.c_proj", be.dropout_backward(dx, s["attn_drop"]), s)
        dqkv = be.concat_columns(be.causal_attention_backward(da, s["attn"]))
        needed = self.backward_to_inputs or n > lowest    # nothing below the lowest adapter trains
        da = back(be, p + "attn.c_attn", dqkv, s, input_grad=needed)
        if needed:
            dx = be.add(dx, self._layernorm_backward(be, da, s["ln1"], p + "ln_1"))
        return dx
