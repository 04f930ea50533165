"""A second, independent Llama-family forward in plain NumPy, without the backend interface or
a KV cache: the test fixture the model's own forward (py_engine/models/llama.py, through the
generation decoders) is checked against, itself checked against transformers
(tests/test_llama_reference.py).

    model = LlamaReference.load(checkpoint_dir)          # float64 by default
    logits = model.logits(ids)                           # [B, T, V]
    loss = model.loss(ids, labels)                       # labels: -100 where ignored
    tokens = model.generate_greedy(prompt_ids, 32)       # no KV cache: recomputes each step

RMSNorm, RoPE, SwiGLU and causal grouped-query attention come from py_engine/ops.
"""

import numpy as np

from py_engine.formats import safetensors
from py_engine.ops import causal_attention as attn_ops
from py_engine.ops import lm_head_loss as lm_ops
from py_engine.ops import matmul as mm_ops
from py_engine.ops import rmsnorm as rms_ops
from py_engine.ops import rope as rope_ops
from py_engine.ops import swiglu as swiglu_ops
from py_engine.models.llama_config import LlamaConfig


class LlamaReference:
    def __init__(self, config, params, dtype=np.float64):
        self.config = config
        self.dtype = dtype
        self.p = params
        self.inv_freq = rope_ops.rope_inv_freq(config.head_dim, config.rope_parameters)

    @classmethod
    def load(cls, directory, dtype=np.float64):
        from pathlib import Path

        config = LlamaConfig.from_file(directory)
        file = safetensors.load(Path(directory) / "model.safetensors")
        params = {}
        for name, shape in config.parameter_shapes().items():
            if name not in file:
                raise ValueError(f"{directory}: tensor {name!r} is missing")
            found = tuple(file.info(name)[1])
            if found != shape:
                raise ValueError(f"{directory}: tensor {name!r} has shape {found}, config.json implies {shape}")
            params[name] = np.frombuffer(file.floats(name), np.float32).reshape(shape).astype(dtype)
        return cls(config, params, dtype)

    def _linear(self, x, name):
        return mm_ops.linear_forward(x, self.p[name + ".weight"], self.p.get(name + ".bias"))

    def hidden(self, ids):
        """Final hidden states [B*T, hidden] (after the last RMSNorm) for token ids [B, T]."""
        c = self.config
        ids = np.asarray(ids)
        B, T = ids.shape
        cos, sin = rope_ops.rope_tables(self.inv_freq, T)
        x = self.p["model.embed_tokens.weight"][ids].reshape(B * T, c.hidden_size)
        for n in range(c.num_hidden_layers):
            pre = f"model.layers.{n}."
            h = rms_ops.rmsnorm_forward(x, self.p[pre + "input_layernorm.weight"], c.rms_norm_eps)[0]
            q = rope_ops.rope_forward(self._linear(h, pre + "self_attn.q_proj"), cos, sin, c.num_attention_heads)
            k = rope_ops.rope_forward(self._linear(h, pre + "self_attn.k_proj"), cos, sin, c.num_key_value_heads)
            v = self._linear(h, pre + "self_attn.v_proj")
            a = attn_ops.causal_attention_forward(q, k, v, batch=B, heads=c.num_attention_heads,
                                                  kv_heads=c.num_key_value_heads)[0]
            x = x + self._linear(a, pre + "self_attn.o_proj")
            h = rms_ops.rmsnorm_forward(x, self.p[pre + "post_attention_layernorm.weight"], c.rms_norm_eps)[0]
            m = swiglu_ops.swiglu_forward(self._linear(h, pre + "mlp.gate_proj"), self._linear(h, pre + "mlp.up_proj"))
            x = x + self._linear(m, pre + "mlp.down_proj")
        return rms_ops.rmsnorm_forward(x, self.p["model.norm.weight"], c.rms_norm_eps)[0]

    @property
    def head(self):
        return self.p["model.embed_tokens.weight" if self.config.tie_word_embeddings else "lm_head.weight"]

    def logits(self, ids):
        """Logits [B, T, V] for token ids [B, T] (every position real, causal)."""
        B, T = np.asarray(ids).shape
        return mm_ops.linear_forward(self.hidden(ids), self.head).reshape(B, T, self.config.vocab_size)

    def loss(self, ids, labels, chunk=None):
        """Causal-LM loss as transformers computes it with `labels` [B, T] (-100 = ignored):
        position t predicts labels[t + 1], through the chunked LM-head loss."""
        labels = np.asarray(labels)
        shifted = np.full(labels.shape, lm_ops.IGNORE, np.int64)
        shifted[:, :-1] = np.where(labels[:, 1:] == -100, lm_ops.IGNORE, labels[:, 1:])
        return lm_ops.lm_head_loss_forward(self.hidden(ids), self.head, shifted.ravel(), chunk=chunk)[0]

    def generate_greedy(self, prompt, max_new_tokens, eos_token_id=None):
        """Greedy continuation of one prompt (list of ids); stops early at eos_token_id."""
        ids = list(prompt)
        for _ in range(max_new_tokens):
            token = int(np.argmax(self.logits(np.asarray([ids]))[0, -1]))
            ids.append(token)
            if eos_token_id is not None and token == eos_token_id:
                break
        return ids[len(prompt):]
