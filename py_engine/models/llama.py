"""Llama-family decoder (Llama 2/3, TinyLlama, SmolLM, Qwen2) for causal-LM training with LoRA:
forward and explicit backward, written once against a backend's op interface
(py_engine/backends), like models/bert.py.

    x = embed[ids]
    per layer:  h = RMSNorm(x);  q, k, v = LoRA/Linear(h);  q, k = RoPE(q), RoPE(k)
                x = x + o_proj(CausalAttention(q, k, v))          (grouped-query)
                h = RMSNorm(x);  x = x + down_proj(SiLU(gate_proj(h)) * up_proj(h))
    loss = CrossEntropy(RMSNorm(x) . head^T, labels shifted by one)   (vocabulary in chunks)

LoRA may wrap any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (PEFT's
names and its suffix rule); the base weights and the head stay frozen. With `lora=None` every
weight trains instead (full fine-tuning): the backward then also gives each linear's weight and
bias gradient, each RMSNorm weight's, the head's (from the loss) and the embedding table's (a
scatter-add of the input gradient; with tied embeddings it adds to the head's).
"""

from ..kernels.cross_entropy import IGNORE_LABEL as IGNORE
from .lora_config import LoraConfig

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class LlamaLoRA:
    def __init__(self, config, lora):
        if lora is not None and not isinstance(lora, LoraConfig):
            raise TypeError("lora must be a LoraConfig, or None for full fine-tuning")
        self.config = config
        self.lora = lora
        self.full = lora is None
        self.merged = False
        modules = [f"model.layers.{n}.{p}" for n in range(config.num_hidden_layers) for p in PROJECTIONS]
        shapes = config.parameter_shapes()
        self.trainable = {}
        self.targets = []
        if self.full:
            self.trainable = dict(shapes)
            return
        chosen = set()
        for target in lora.target_modules:
            hits = [m for m in modules if m == target or m.endswith("." + target)]
            if not hits:
                raise ValueError(f"LoRA target {target!r} matches no projection of this decoder")
            chosen.update(hits)
        self.targets = [m for m in modules if m in chosen]
        for m in self.targets:
            out_f, in_f = shapes[m + ".weight"]
            self.trainable[f"{m}.lora_A.weight"] = (lora.r, in_f)
            self.trainable[f"{m}.lora_B.weight"] = (out_f, lora.r)

    def frozen_names(self):
        return [] if self.full else list(self.config.parameter_shapes())

    def merge_names(self):
        """(merged name, base weight, lora_A, lora_B) per LoRA-wrapped projection."""
        return [(m + ".merged.weight", m + ".weight", m + ".lora_A.weight", m + ".lora_B.weight")
                for m in self.targets]

    def is_linear_weight(self, name):
        """Whether `name` is a projection's weight (the tensors the GPU may store compressed)."""
        return name.endswith(".weight") and any(name.endswith(p + ".weight") for p in PROJECTIONS)

    @property
    def head_name(self):
        return "model.embed_tokens.weight" if self.config.tie_word_embeddings else "lm_head.weight"

    # --- forward ---

    def _linear(self, be, module, x, saved):
        w = be.param(module + ".weight")
        b = be.params.get(module + ".bias")
        if self.merged and module in self.targets:
            return be.linear(x, be.param(module + ".merged.weight"), b)
        if module not in self.targets:
            if self.full:
                saved[module] = x
            return be.linear(x, w, b)
        xd, drop = be.dropout(x, self.lora.lora_dropout if self._training else 0.0)
        y, h = be.lora_linear(x, xd, w, b, be.param(module + ".lora_A.weight"),
                              be.param(module + ".lora_B.weight"), self.lora.scaling)
        saved[module] = (xd, drop, h)
        return y

    def hidden(self, be, batch, tables, train=True):
        """Final hidden states [B*T, hidden] and what the backward needs."""
        c = self.config
        self._training = train
        x = be.gather_rows(be.param("model.embed_tokens.weight"), batch.ids)
        layers = []
        for n in range(c.num_hidden_layers):
            p = f"model.layers.{n}."
            s = {}
            h, s["ln1"] = be.rmsnorm(x, be.param(p + "input_layernorm.weight"), c.rms_norm_eps)
            s["h1"] = h
            q = be.rope(self._linear(be, p + "self_attn.q_proj", h, s), tables, c.num_attention_heads)
            k = be.rope(self._linear(be, p + "self_attn.k_proj", h, s), tables, c.num_key_value_heads)
            v = self._linear(be, p + "self_attn.v_proj", h, s)
            a, s["attn"] = be.causal_attention(q, k, v, batch.mask, batch.B, c.num_attention_heads,
                                               c.num_key_value_heads)
            s["a"] = a
            x = be.add(x, self._linear(be, p + "self_attn.o_proj", a, s))
            h, s["ln2"] = be.rmsnorm(x, be.param(p + "post_attention_layernorm.weight"), c.rms_norm_eps)
            s["h2"] = h
            g = self._linear(be, p + "mlp.gate_proj", h, s)
            u = self._linear(be, p + "mlp.up_proj", h, s)
            s["g"], s["u"] = g, u
            m = be.swiglu(g, u)
            s["m"] = m
            x = be.add(x, self._linear(be, p + "mlp.down_proj", m, s))
            layers.append(s)
        out, final = be.rmsnorm(x, be.param("model.norm.weight"), c.rms_norm_eps)
        return out, {"layers": layers, "final": final, "ids": batch.ids}

    # --- backward ---

    def _linear_backward(self, be, module, dy, saved):
        w = be.param(module + ".weight")
        if self.full:
            bias = module + ".bias"
            be.linear_grad_params(dy, saved[module], be.grad(module + ".weight"),
                                  be.grad(bias) if bias in be.grads else None)
        if module not in self.targets:
            return be.linear_grad_input(dy, w)
        xd, drop, h = saved[module]
        dx, dxd = be.lora_linear_backward(
            dy, xd, w, be.param(module + ".lora_A.weight"), be.param(module + ".lora_B.weight"),
            h, self.lora.scaling, be.grad(module + ".lora_A.weight"),
            be.grad(module + ".lora_B.weight"), separate=drop is not None)
        return dx if dxd is None else be.add(dx, be.dropout_backward(dxd, drop))

    def _norm_backward(self, be, dy, saved, name):
        return be.rmsnorm_backward(dy, saved, be.grad(name) if self.full else None)

    def backward(self, be, dhidden, saved, tables):
        """Gradients of the loss whose gradient with respect to the final hidden states is
        `dhidden` (with full fine-tuning the head's own gradient comes from the loss)."""
        c = self.config
        dx = self._norm_backward(be, dhidden, saved["final"], "model.norm.weight")
        lowest = 0 if self.full else min(int(m.split(".")[2]) for m in self.targets)
        for n in reversed(range(lowest, c.num_hidden_layers)):
            p = f"model.layers.{n}."
            s = saved["layers"][n]
            dm = self._linear_backward(be, p + "mlp.down_proj", dx, s)
            dg, du = be.swiglu_backward(dm, s["g"], s["u"])
            dh = be.add(self._linear_backward(be, p + "mlp.gate_proj", dg, s),
                        self._linear_backward(be, p + "mlp.up_proj", du, s))
            dx = be.add(dx, self._norm_backward(be, dh, s["ln2"], p + "post_attention_layernorm.weight"))
            da = self._linear_backward(be, p + "self_attn.o_proj", dx, s)
            dq, dk, dv = be.causal_attention_backward(da, s["attn"])
            dq = be.rope_backward(dq, tables, c.num_attention_heads)
            dk = be.rope_backward(dk, tables, c.num_key_value_heads)
            dh = be.add(be.add(self._linear_backward(be, p + "self_attn.q_proj", dq, s),
                               self._linear_backward(be, p + "self_attn.k_proj", dk, s)),
                        self._linear_backward(be, p + "self_attn.v_proj", dv, s))
            dx = be.add(dx, self._norm_backward(be, dh, s["ln1"], p + "input_layernorm.weight"))
        if self.full:
            be.gather_rows_backward(dx, saved["ids"], be.grad("model.embed_tokens.weight"))

    def head_grad(self, be):
        """Where the loss puts the head's gradient: None unless fine-tuning every weight."""
        return be.grad(self.head_name) if self.full else None


def shift_labels(labels):
    """Causal-LM targets: position t predicts labels[t + 1]; -100 (transformers' ignore) and the
    last position become IGNORE. labels: [B][T] lists -> flat list of B*T."""
    out = []
    for row in labels:
        nxt = [IGNORE if y == -100 else y for y in row[1:]] + [IGNORE]
        out.extend(nxt)
    return out
