"""The Llama-family decoder for generation on WebGPU, with the KV cache in GPU buffers. No NumPy:
this runs in the browser.

    decoder = await GpuDecoder.create(device, config, params, max_length=512)
    logits = await decoder.prefill(prompt_ids)    # array("f") of V: the next token's logits
    logits = await decoder.step(token)            # one recorded program, replayed per token
    decoder.reset()

Programs, recorded once and replayed:
  - prefill, one per length bucket (powers of two from 16, capped at max_length): the prompt,
    right-padded with token 0 to the bucket, runs through every layer and its keys and values
    are copied into cache rows 0 .. bucket-1. Causal attention keeps the real rows independent
    of the padding; the padded rows' cache entries are overwritten by the steps that follow
    before any query can see them. The last real row is gathered by an index written per run.
  - decode, one token: its id is written into a buffer, the position (RoPE offset, the cache
    row its keys and values are appended at, the attention's `past`) into uniforms, then one
    replay; only the V logits are read back.
"""

import math
import struct
from array import array

from ..backends.gpu_backend import GpuBackend, Kernels, Tensor
from ..gpu import Variable
from ..kernels.kv_cache import KVCacheKernels

PEFT_PREFIX = "base_model.model."
MIN_BUCKET = 16


class _Backend(GpuBackend):
    """The GPU backend with a buffer pool: a layer's intermediates are handed to the next layer
    (`recycle`), so a program holds one layer's worth of activations, not one per layer.
    Reuse is safe because a program's dispatches run in order. `owned` lists every buffer
    allocated, for release."""

    def __init__(self, device, kernels):
        super().__init__(device, kernels)
        self.owned, self.live, self.free = [], [], {}

    def new(self, *shape, label=None):
        size = 4 * max(1, math.prod(shape))
        pool = self.free.get(size)
        if pool:
            t = Tensor(pool.pop(), shape)
        else:
            t = super().new(*shape, label=label)
            self.owned.append(t.buffer)
        self.live.append(t)
        return t

    def recycle(self, keep):
        """Every tensor allocated since the last recycle, except `keep`, may be reused."""
        for t in self.live:
            if t.buffer is not keep.buffer:
                self.free.setdefault(t.buffer.size, []).append(t.buffer)
        self.live = [keep]


class _Recorded:
    __slots__ = ("program", "ids", "last", "position", "buffers")


class GpuDecoder:
    """Constructor (after `kernels = await Kernels.load(device, decoder=True)` and
    `kv = await KVCacheKernels.load(device)`; GpuDecoder.create does both):

        GpuDecoder(device, kernels, kv, config, params, lora_scaling=None, max_length=None)

    config: py_engine.models.llama_config.LlamaConfig.
    params: {name: py_engine.backends.gpu_backend.Tensor} with the checkpoint's names and shapes
      (config.parameter_shapes()). Projection weights and an untied "lm_head.weight" may be f16
      (Tensor(buffer, shape, half=True), packed pairs); "model.embed_tokens.weight" (gathered
      by the embedding kernel, and the head when tied), the norms and the biases are f32.
      Optional LoRA: "{module}.lora_A.weight" [r, in] and "{module}.lora_B.weight" [out, r]
      (f32, PEFT names, with or without "base_model.model."), applied unmerged with
      `lora_scaling` (PEFT's lora_alpha / r) by the LoRA linear kernel.
    max_length: cache length in tokens (prompt + generated), default and upper bound
      config.max_position_embeddings. The cache holds 2 * layers * max_length * kv_heads *
      head_dim floats.
    """

    def __init__(self, device, kernels, kv, config, params, lora_scaling=None, max_length=None):
        self.device, self.k, self.kv, self.config = device, kernels, kv, config
        limit = config.max_position_embeddings
        self.max_length = limit if max_length is None else int(max_length)
        if not 1 <= self.max_length <= limit:
            raise ValueError(f"max_length must be in 1..{limit} (max_position_embeddings), "
                             f"got {max_length}")
        self.params = {}
        for name, t in params.items():
            self.params[name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name] = t
        for name, shape in config.parameter_shapes().items():
            if name not in self.params:
                raise ValueError(f"parameter {name!r} is missing")
            if tuple(self.params[name].shape) != tuple(shape):
                raise ValueError(f"parameter {name!r} has shape {self.params[name].shape}, "
                                 f"expected {tuple(shape)}")
        if self.params["model.embed_tokens.weight"].half:
            raise ValueError("model.embed_tokens.weight must be f32 (the embedding gather reads f32)")
        self.lora = sorted(n[:-len(".lora_A.weight")] for n in self.params if n.endswith(".lora_A.weight"))
        for m in self.lora:
            if m + ".lora_B.weight" not in self.params:
                raise ValueError(f"{m}.lora_A.weight has no matching {m}.lora_B.weight")
        if self.lora and lora_scaling is None:
            raise ValueError("params hold LoRA weights: pass lora_scaling (lora_alpha / r)")
        self.scaling = lora_scaling
        c = config
        self.kv_width = c.num_key_value_heads * c.head_dim
        self.keys = [device.create_buffer(4 * self.max_length * self.kv_width, label=f"k cache {n}")
                     for n in range(c.num_hidden_layers)]
        self.values = [device.create_buffer(4 * self.max_length * self.kv_width, label=f"v cache {n}")
                       for n in range(c.num_hidden_layers)]
        self.cos, self.sin = kernels.rope.tables(c.head_dim, self.max_length, c.rope_parameters)
        self.length = 0
        self._prefill = {}
        self._decode = self._record(1, decode=True)

    @classmethod
    async def create(cls, device, config, params, kernels=None, **kwargs):
        kernels = kernels or await Kernels.load(device, decoder=True)
        kv = await KVCacheKernels.load(device)
        return cls(device, kernels, kv, config, params, **kwargs)

    @classmethod
    async def load(cls, device, directory, half=False, kernels=None, **kwargs):
        """From a Hugging Face checkpoint directory (config.json + model.safetensors); with
        `half`, the projection weights and an untied head are uploaded as f16."""
        from ..formats import safetensors
        from ..models.llama_config import LlamaConfig

        config = LlamaConfig.from_file(f"{directory}/config.json")
        file = safetensors.load(f"{directory}/model.safetensors")
        params = {}
        for name, shape in config.parameter_shapes().items():
            if half and len(shape) == 2 and name != "model.embed_tokens.weight":
                params[name] = Tensor(device.buffer_from(file.f16_bits(name), label=name), shape, half=True)
            else:
                params[name] = Tensor(device.buffer_from(file.floats(name), label=name), shape)
        return await cls.create(device, config, params, kernels=kernels, **kwargs)

    @property
    def head(self):
        c = self.config
        return self.params["model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]

    # --- recording ---

    def _linear(self, be, module, x):
        w, b = self.params[module + ".weight"], self.params.get(module + ".bias")
        if module not in self.lora:
            return be.linear(x, w, b)
        return be.lora_linear(x, x, w, b, self.params[module + ".lora_A.weight"],
                              self.params[module + ".lora_B.weight"], self.scaling)[0]

    def _attention(self, be, program, q, layer, seq, position):
        """Causal GQA attention of `seq` queries against the cache (`position` keys before them)."""
        c = self.config
        out, lse = be.new(*q.shape), be.new(c.num_attention_heads * seq).buffer
        self.k.causal_attention.forward(program, q.buffer, self.keys[layer], self.values[layer],
                                        None, out.buffer, lse, batch=1, seq=seq,
                                        heads=c.num_attention_heads,
                                        kv_heads=c.num_key_value_heads, head_dim=c.head_dim,
                                        past=position)
        return out

    def _record(self, T, decode):
        c, device = self.config, self.device
        r = _Recorded()
        be = _Backend(device, self.k)
        be.params = self.params
        r.program = device.program(f"decode {T}")
        be.record(r.program)
        r.ids = Tensor(device.create_buffer(4 * T, label="token ids"), (1, T))
        r.last = Tensor(device.create_buffer(4, label="last row"), (1, 1))
        r.position = Variable(0, name="cache position") if decode else 0
        extra = [r.ids.buffer, r.last.buffer]
        x = be.gather_rows(self.params["model.embed_tokens.weight"], r.ids)
        rope = self.k.rope
        for n in range(c.num_hidden_layers):
            p = f"model.layers.{n}."
            h = be.rmsnorm(x, self.params[p + "input_layernorm.weight"], c.rms_norm_eps)[0]
            q, k = self._linear(be, p + "self_attn.q_proj", h), self._linear(be, p + "self_attn.k_proj", h)
            v = self._linear(be, p + "self_attn.v_proj", h)
            qr, kr = be.new(*q.shape), be.new(*k.shape)
            rope.forward(r.program, q.buffer, self.cos, self.sin, qr.buffer, T, c.num_attention_heads,
                         c.head_dim, T, offset=r.position)
            rope.forward(r.program, k.buffer, self.cos, self.sin, kr.buffer, T, c.num_key_value_heads,
                         c.head_dim, T, offset=r.position)
            for src, cache in ((kr, self.keys[n]), (v, self.values[n])):
                if decode:
                    self.kv.append(r.program, src.buffer, cache, 1, self.kv_width, row=r.position)
                else:
                    r.program.copy(src.buffer, cache, size=4 * T * self.kv_width)
            a = self._attention(be, r.program, qr, n, T, r.position)
            x = be.add(x, self._linear(be, p + "self_attn.o_proj", a))
            h = be.rmsnorm(x, self.params[p + "post_attention_layernorm.weight"], c.rms_norm_eps)[0]
            m = be.swiglu(self._linear(be, p + "mlp.gate_proj", h), self._linear(be, p + "mlp.up_proj", h))
            x = be.add(x, self._linear(be, p + "mlp.down_proj", m))
            be.recycle(x)
        if T > 1:    # the last real row of a right-padded prompt, chosen per run
            x = be.gather_rows(x, r.last)
        x = be.rmsnorm(x, self.params["model.norm.weight"], c.rms_norm_eps)[0]
        logits = be.linear(x, self.head, None)
        r.program.read(logits.buffer, size=4 * c.vocab_size)
        r.buffers = extra + be.owned + [b for zeros in be._zeros.values() for b in zeros]
        return r

    # --- running ---

    def reset(self):
        self.length = 0

    def release(self):
        """Free the prefill programs and their buffers (they are recorded again when needed)."""
        for r in self._prefill.values():
            r.program.release()
            for b in r.buffers:
                b.destroy()
        self._prefill = {}

    def bucket(self, n):
        b = MIN_BUCKET
        while b < n:
            b *= 2
        return min(b, self.max_length)

    async def prefill(self, ids):
        """Empty the cache, run the prompt `ids` through it; returns the next token's logits."""
        ids = [int(i) for i in ids]
        if not 1 <= len(ids) <= self.max_length:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit the cache of {self.max_length}")
        self.reset()
        T = self.bucket(len(ids))
        if T not in self._prefill:
            self._prefill[T] = self._record(T, decode=False)
        r = self._prefill[T]
        r.ids.buffer.write(array("I", ids + [0] * (T - len(ids))))
        r.last.buffer.write(array("I", [len(ids) - 1]))
        (logits,) = await r.program.run()
        self.length = len(ids)
        return array("f", bytes(logits))

    async def step(self, token):
        """Append one token at the current position; returns the logits after it."""
        if self.length >= self.max_length:
            raise ValueError(f"the cache of {self.max_length} tokens is full")
        if self.length == 0:
            raise ValueError("step needs a prefilled prompt")
        r = self._decode
        r.ids.buffer.write(struct.pack("<I", int(token)))
        r.position.set(self.length)
        (logits,) = await r.program.run()
        self.length += 1
        return array("f", bytes(logits))
