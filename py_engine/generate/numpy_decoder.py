"""The Llama-family decoder for generation in NumPy (host only), with a KV cache: a prompt is
prefilled in one pass, then each new token costs one row through every layer, attending to the
keys and values cached for the tokens before it.

    decoder = NumpyDecoder.load(checkpoint_dir)              # or NumpyDecoder(config, params)
    logits = await decoder.prefill(prompt_ids)               # [vocab] for the next token
    logits = await decoder.step(token)                       # after appending `token`
    decoder.reset()                                          # empty the cache

Same math as py_engine/models/llama_reference.py (which recomputes the whole sequence per
token): RMSNorm, RoPE at positions past .. past + T - 1, causal GQA attention with a KV-cache
offset, SwiGLU, all from py_engine/ops.
"""

import numpy as np

from ..ops import causal_attention as attn_ops
from ..ops import matmul as mm_ops
from ..ops import rmsnorm as rms_ops
from ..ops import rope as rope_ops
from ..ops import swiglu as swiglu_ops

PEFT_PREFIX = "base_model.model."


def merge_lora(params, scaling):
    """A params dict with every `{module}.lora_A.weight` / `{module}.lora_B.weight` pair folded
    into a copy of `{module}.weight` (W + scaling * B . A) and the LoRA tensors dropped; PEFT's
    "base_model.model." prefix is accepted on the LoRA names. The input dict is not modified."""
    merged, lora = {}, {}
    for name, value in params.items():
        key = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
        if ".lora_A." in key or ".lora_B." in key:
            lora[key] = value
        else:
            merged[name] = value
    for key in lora:
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        b = lora.get(module + ".lora_B.weight")
        if b is None:
            raise ValueError(f"{key} has no matching {module}.lora_B.weight")
        if module + ".weight" not in merged:
            raise ValueError(f"LoRA module {module!r} has no base weight {module}.weight")
        if scaling is None:
            raise ValueError("params hold LoRA weights: pass lora_scaling (lora_alpha / r)")
        w = merged[module + ".weight"]
        merged[module + ".weight"] = w + scaling * (np.asarray(b, w.dtype) @ np.asarray(lora[key], w.dtype))
    return merged


class NumpyDecoder:
    """Constructor:

        NumpyDecoder(config, params, lora_scaling=None, max_length=None, dtype=np.float64)

    config: py_engine.models.llama_config.LlamaConfig.
    params: {name: numpy array} with the checkpoint's names and shapes (config.parameter_shapes():
      "model.embed_tokens.weight" [V, H], "model.layers.{n}.self_attn.q_proj.weight" [out, in],
      biases where the config has them, norms, "lm_head.weight" unless tied), optionally with LoRA
      tensors "{module}.lora_A.weight" [r, in] and "{module}.lora_B.weight" [out, r] (PEFT names,
      with or without PEFT's "base_model.model." prefix), merged once here with `lora_scaling`
      (PEFT's lora_alpha / r).
    max_length: the cache length in tokens (prompt + generated); default and upper bound
      config.max_position_embeddings.
    The arrays are cast to `dtype` (float64: the reference; float32 for speed).
    """

    def __init__(self, config, params, lora_scaling=None, max_length=None, dtype=np.float64):
        self.config = config
        self.dtype = dtype
        limit = config.max_position_embeddings
        self.max_length = limit if max_length is None else int(max_length)
        if not 1 <= self.max_length <= limit:
            raise ValueError(f"max_length must be in 1..{limit} (max_position_embeddings), "
                             f"got {max_length}")
        merged = merge_lora(params, lora_scaling)
        self.p = {}
        for name, shape in config.parameter_shapes().items():
            if name not in merged:
                raise ValueError(f"parameter {name!r} is missing")
            value = np.asarray(merged[name], dtype)
            if value.shape != tuple(shape):
                raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {tuple(shape)}")
            self.p[name] = value
        self.inv_freq = rope_ops.rope_inv_freq(config.head_dim, config.rope_parameters)
        kv_width = config.num_key_value_heads * config.head_dim
        self.keys = [np.zeros((self.max_length, kv_width), dtype) for _ in range(config.num_hidden_layers)]
        self.values = [np.zeros((self.max_length, kv_width), dtype) for _ in range(config.num_hidden_layers)]
        self.length = 0

    @classmethod
    def load(cls, directory, **kwargs):
        """From a Hugging Face checkpoint directory (config.json + model.safetensors)."""
        from ..models.llama_reference import LlamaReference

        ref = LlamaReference.load(directory, dtype=kwargs.get("dtype", np.float64))
        return cls(ref.config, ref.p, **kwargs)

    @property
    def head(self):
        c = self.config
        return self.p["model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]

    def reset(self):
        self.length = 0

    async def prefill(self, ids):
        """Empty the cache, run the prompt `ids` through it; returns the next token's logits [V]."""
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("prefill needs at least one token")
        self.reset()
        return self._forward(ids)

    async def step(self, token):
        """Append one token; returns the logits [V] for the token after it."""
        return self._forward([int(token)])

    def _linear(self, x, name):
        return mm_ops.linear_forward(x, self.p[name + ".weight"], self.p.get(name + ".bias"))

    def _forward(self, ids):
        c = self.config
        past, T = self.length, len(ids)
        if past + T > self.max_length:
            raise ValueError(f"{past + T} tokens do not fit the cache of {self.max_length}")
        cos, sin = rope_ops.rope_tables(self.inv_freq, T, offset=past)
        x = self.p["model.embed_tokens.weight"][ids]
        for n in range(c.num_hidden_layers):
            pre = f"model.layers.{n}."
            h = rms_ops.rmsnorm_forward(x, self.p[pre + "input_layernorm.weight"], c.rms_norm_eps)[0]
            q = rope_ops.rope_forward(self._linear(h, pre + "self_attn.q_proj"), cos, sin, c.num_attention_heads)
            self.keys[n][past:past + T] = rope_ops.rope_forward(
                self._linear(h, pre + "self_attn.k_proj"), cos, sin, c.num_key_value_heads)
            self.values[n][past:past + T] = self._linear(h, pre + "self_attn.v_proj")
            a = attn_ops.causal_attention_forward(
                q, self.keys[n][:past + T], self.values[n][:past + T], batch=1,
                heads=c.num_attention_heads, kv_heads=c.num_key_value_heads, past=past)[0]
            x = x + self._linear(a, pre + "self_attn.o_proj")
            h = rms_ops.rmsnorm_forward(x, self.p[pre + "post_attention_layernorm.weight"], c.rms_norm_eps)[0]
            m = swiglu_ops.swiglu_forward(self._linear(h, pre + "mlp.gate_proj"), self._linear(h, pre + "mlp.up_proj"))
            x = x + self._linear(m, pre + "mlp.down_proj")
        self.length = past + T
        last = rms_ops.rmsnorm_forward(x[-1:], self.p["model.norm.weight"], c.rms_norm_eps)[0]
        return mm_ops.linear_forward(last, self.head)[0]
