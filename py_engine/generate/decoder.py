"""Generation decoders: the decoder model's own forward pass (models/llama.py, models/gpt2.py)
with a KV cache, one prompt and then one token at a time, on either backend. The interface
generation.generate drives:

    logits = await decoder.prefill(prompt_ids)    # empty the cache, run the prompt: V floats
    logits = await decoder.step(token)            # append one token
    decoder.reset(); decoder.max_length

A decoder with greedy_on_device (the GPU ones) also takes greedy=True in prefill and step and
returns the likeliest token, chosen on the GPU, as (token, problem) instead of the logits; and
sampling=Sampling(...) (generate/sampling.py), returning the row's likeliest tokens as the GPU
picked them, (RowCandidates, problem), to draw from with sampling.sample_candidates; when they
cannot decide, `await decoder.last_logits()` brings back the whole row of that run.

NumpyDecoder runs the forward eagerly (host only). GpuDecoder records it into programs replayed
per call: prefill programs per length bucket (powers of two from 16, capped at max_length: the
prompt is right-padded with token 0, causal attention keeps the real rows independent of the
padding, and the padded rows' cache entries are overwritten before any query can see them; the
last real row is gathered by an index written per run) and one single-token decode program.
Each program's position (the RoPE offset, the cache row its keys and values land at, the
attention's count of cached keys) is a Variable set per replay; each run reads back the V
logits, the 8 bytes of the likeliest token, or a sampled token's candidates (Readout).

LongRoPE (Phi-3) switches from its short to its long factors once the sequence is longer than
original_max_position_embeddings; as transformers' Phi3ForCausalLM generates, the token that
crosses the switch re-runs the whole sequence with the long factors (the cached keys were
rotated with the short ones), so every step's logits are those of the whole sequence run
afresh. Programs are recorded per side of the switch.

Both decoders read the weights in place: a decoder made from a runtime follows its training.
Standalone decoders come from a checkpoint directory (`load`) or a {name: tensor} dict
(`from_params`), optionally with PEFT LoRA tensors applied unmerged with `lora_scaling`.
"""

from array import array

from ..formats.peft_adapter import PREFIX
from ..gpu import Variable
from ..kernels.argmax import decode_candidates, decode_choices
from ..kernels.rope import uses_long_factor
from ..models.decoders import decoder_model
from ..models.lora_config import LoraConfig
from ..models.saved_modules import HEAD_WEIGHT

MIN_BUCKET = 16
CANDIDATES = 4096     # a sampled token's candidates read back at most (32 KB): more, and the
                      # whole row is read (a flat row, or plain sampling at a high temperature)


class Tokens:
    """The forward's inputs for one sequence of new tokens at `position`; rope_length: the
    length of the whole sequence whose rotary tables to use (see rope_length)."""

    __slots__ = ("ids", "mask", "B", "T", "position", "rope_length")

    def __init__(self, ids, T, position, rope_length):
        self.ids, self.mask, self.B, self.T, self.position = ids, None, 1, T, position
        self.rope_length = rope_length


def cache_length(config, max_length):
    limit = config.max_position_embeddings
    length = limit if max_length is None else int(max_length)
    if not 1 <= length <= limit:
        raise ValueError(f"max_length must be in 1..{limit} (max_position_embeddings), got {max_length}")
    return length


class History:
    """The tokens in a decoder's cache, and whether appending some crosses LongRoPE's switch
    from short to long factors (then the whole sequence runs again)."""

    def __init__(self, config):
        self.rope = config.rope_parameters if hasattr(config, "rope_parameters") else None
        self.ids = []

    def long(self, length):
        return uses_long_factor(self.rope, length)

    def crosses(self, new):
        """Whether appending `new` more tokens to a non-empty history crosses the switch."""
        n = len(self.ids)
        return n > 0 and not self.long(n) and self.long(n + new)


def model_for_params(config, names, lora_scaling):
    """A decoder model whose LoRA wraps exactly the modules that `names` hold adapter tensors for
    (names without PEFT's prefix), applied with `lora_scaling`; DoRA where they hold magnitude
    vectors (lora_magnitude_vector) for them, lora_bias where they hold lora_B biases."""
    modules = sorted(n[:-len(".lora_A.weight")] for n in names if n.endswith(".lora_A.weight"))
    for m in modules:
        if m + ".lora_B.weight" not in names:
            raise ValueError(f"{m}.lora_A.weight has no matching {m}.lora_B.weight")
    if any(n.endswith(".lora_B.weight") and n[:-len(".lora_B.weight")] not in modules for n in names):
        raise ValueError("a lora_B weight has no matching lora_A weight")
    if not modules:
        return decoder_model(config, None)
    if lora_scaling is None:
        raise ValueError("params hold LoRA weights: pass lora_scaling (lora_alpha / r)")
    r = names[modules[0] + ".lora_A.weight"][0]
    lora = LoraConfig(r=r, lora_alpha=lora_scaling * r, target_modules=modules, task_type="CAUSAL_LM",
                      use_dora=any(n.endswith(".lora_magnitude_vector") for n in names),
                      lora_bias=any(n.endswith(".lora_B.bias") for n in names))
    model = decoder_model(config, lora)
    for name, shape in model.trainable.items():
        if tuple(names[name]) != tuple(shape):
            raise ValueError(f"parameter {name!r} has shape {tuple(names[name])}, expected {tuple(shape)}")
    return model


def check_params(config, shapes):
    """Every parameter of the config present with its shape ({name: shape}). An output layer of
    its own beside a tied embedding (an adapter's modules_to_save) would not be read here:
    refused by name."""
    for name, shape in config.parameter_shapes().items():
        if name not in shapes:
            raise ValueError(f"parameter {name!r} is missing")
        if tuple(shapes[name]) != tuple(shape):
            raise ValueError(f"parameter {name!r} has shape {tuple(shapes[name])}, expected {tuple(shape)}")
    if HEAD_WEIGHT in shapes and HEAD_WEIGHT not in config.parameter_shapes():
        raise ValueError("params hold lm_head.weight while the checkpoint ties its output layer to "
                         "the embedding (an adapter that trained the output layer whole: "
                         "modules_to_save); load such an adapter with ChatModel.load")


def without_prefix(params):
    """`params` with PEFT's "base_model.model." prefix taken off the adapter tensors' names. A
    bias an adapter trained beside a wrapped layer (PEFT's bias option saves it as
    "<module>.base_layer.bias") replaces the checkpoint's "<module>.bias": generation reads it
    there."""
    out = {n[len(PREFIX):] if n.startswith(PREFIX) else n: t for n, t in params.items()}
    for name in [n for n in out if n.endswith(".base_layer.bias")]:
        out[name[:-len(".base_layer.bias")] + ".bias"] = out.pop(name)
    return out


def _not_encoder_decoder(model, instead):
    if getattr(model, "encoder_decoder", False):
        raise ValueError(f"{model.config.model_type} is an encoder-decoder: generate with {instead} "
                         "(py_engine.generate.seq2seq)")


class NumpyDecoder:
    """Generation on the NumPy backend (host only)."""

    encoder_decoder = False     # NumpySeq2SeqDecoder's is True

    def __init__(self, model, be, max_length=None):
        if not self.encoder_decoder:
            _not_encoder_decoder(model, "NumpySeq2SeqDecoder")
        c = model.config
        self.model, self.be, self.config = model, be, c
        self.max_length = cache_length(c, max_length)
        self.cache = be.kv_cache(c.num_hidden_layers, self.max_length,
                                 c.num_key_value_heads * c.head_dim)
        self.length = 0
        self.history = History(c)

    @classmethod
    def from_params(cls, config, params, lora_scaling=None, max_length=None, dtype=None):
        """params: {name: array} with the checkpoint's names and shapes, and optionally LoRA
        tensors "{module}.lora_A.weight" / ".lora_B.weight" (PEFT names, with or without
        "base_model.model.")."""
        import numpy as np

        from ..backends.numpy_backend import NumpyBackend

        params = without_prefix(params)
        check_params(config, {n: np.shape(v) for n, v in params.items()})
        model = model_for_params(config, {n: np.shape(v) for n, v in params.items()}, lora_scaling)
        be = NumpyBackend(np.float64 if dtype is None else dtype)
        for name, value in params.items():
            be.set_param(name, value, np.shape(value))
        return cls(model, be, max_length)

    @classmethod
    def load(cls, directory, max_length=None, dtype=None):
        """From a Hugging Face checkpoint directory (config.json + model.safetensors)."""
        import numpy as np

        from ..models.checkpoint import DecoderCheckpoint

        checkpoint = DecoderCheckpoint.load(directory)
        params = {n: np.frombuffer(checkpoint.floats(n), np.float32).reshape(checkpoint.shape(n))
                  for n in checkpoint.names()}
        return cls.from_params(checkpoint.config, params, max_length=max_length, dtype=dtype)

    def reset(self):
        self.length = 0
        self.history.ids = []

    def _run(self, ids):
        import numpy as np

        if self.length + len(ids) > self.max_length:
            raise ValueError(f"{self.length + len(ids)} tokens do not fit the cache of {self.max_length}")
        if self.history.crosses(len(ids)):
            ids = self.history.ids + ids
            self.reset()
        self.history.ids += ids
        # DoRA's norms: a prompt's pass keeps them, the one-token passes after it read them
        self.be.dora_norms = "write" if self.length == 0 else "read"
        try:
            hidden = self._hidden(Tokens(np.asarray([ids], np.int64), len(ids), self.length,
                                         self.length + len(ids)))
        finally:
            self.be.dora_norms = None
        logits = self.model.head_logits(self.be, hidden[-1:])[0]
        self.length += len(ids)
        return logits

    def _hidden(self, inputs):
        """The final hidden states of the new tokens `inputs`, appended to the cache."""
        return self.model.forward(self.be, inputs, train=False, cache=self.cache)[0]

    async def prefill(self, ids):
        """Empty the cache, run the prompt `ids`; returns the next token's logits [V]."""
        ids = [int(i) for i in ids]
        if not 1 <= len(ids) <= self.max_length:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit the cache of {self.max_length}")
        self.reset()
        return self._run(ids)

    async def step(self, token):
        """Append one token at the current position; returns the logits after it."""
        if self.length == 0:
            raise ValueError("step needs a prefilled prompt")
        if self.length >= self.max_length:
            raise ValueError(f"the cache of {self.max_length} tokens is full")
        return self._run([int(token)])


class Readout:
    """What a recorded decoding program brings back per run: the likeliest token, chosen on the
    GPU (8 bytes: greedy decoding), a sampled token's candidates (the row's likeliest tokens,
    at most CANDIDATES of them), or all the logits, each from its own copy of the same
    program. Reading a token or a few instead of the vocabulary spares the transfer and, above
    all, a scan of it in Python (bench/generation.py measures what that saves).

    Make it while `be` records `program`, right after the logits [1, V]. The copies are taken
    before the argmax is recorded, so each runs no choice it would not read."""

    __slots__ = ("choice", "logits", "candidates", "settings", "_device", "_logits", "_out",
                 "_params", "_capacity")

    def __init__(self, be, program, logits, capacity=None):
        self._device, self._logits = be.device, logits
        self.logits = program.replica(f"{program.label} (logits)")
        self.logits.read(logits.buffer, size=4 * logits.size)
        # sampling's settings, set per run: 1 / temperature, top_k, the tail left out
        self.settings = (Variable(1.0, "f", "1 / temperature"), Variable(0, name="top_k"),
                         Variable(1.0, "f", "candidates' tail"))
        self._capacity = capacity or CANDIDATES
        self.candidates = program.replica(f"{program.label} (candidates)")
        self._out, self._params = be.sampling_candidates(self.candidates, logits, self._capacity,
                                                         *self.settings)
        self.candidates.read(self._out)
        chosen = be.argmax_rows(logits)
        self.choice = program
        self.choice.read(chosen.buffer)

    async def run(self, greedy=False, sampling=None):
        """(token, problem) with `greedy` (problem: None, or "NaN" / "inf" when the logits
        hold one and the token means nothing); (RowCandidates, problem) with `sampling` (a
        generate.sampling.Sampling); else the logits as array("f")."""
        if greedy:
            (data,) = await self.choice.run()
            return decode_choices(data)[0]
        if sampling is not None:
            inv_temperature, top_k, tail = self.settings
            inv_temperature.set(1.0 / sampling.temperature)
            top_k.set(sampling.top_k)
            tail.set(sampling.tail)
            (data,) = await self.candidates.run()
            row = decode_candidates(data, self._logits.shape[1], self._capacity)[0]
            return row, row.problem
        (data,) = await self.logits.run()
        return array("f", bytes(data))

    async def last_logits(self):
        """The logits of the last run, whichever way it read (the buffer still holds them)."""
        logits = self._logits
        return array("f", bytes(await self._device.read(logits.buffer, size=4 * logits.size)))

    def release(self):
        self.choice.release()
        self.logits.release()
        self.candidates.release()
        for variable in self.settings:
            variable.forget([self._params])
        self._out.destroy()
        self._params.destroy()


class _Recorded:
    __slots__ = ("program", "readout", "ids", "last", "position", "buffers")


class GpuDecoder:
    """Generation on WebGPU (natively or in the browser); no NumPy.

    Weight storage follows the backend's tensors: projections and an untied head may be f16
    (Tensor(..., half=True)) or quantized; the embedding table (gathered, and the head when
    tied), norms and biases are f32. The cache holds 2 * layers * max_length * kv_heads *
    head_dim floats."""

    greedy_on_device = True
    samples_on_device = True

    def __init__(self, model, be, max_length=None):
        _not_encoder_decoder(model, "GpuSeq2SeqDecoder")
        c = model.config
        self.model, self.be, self.config, self.device = model, be, c, be.device
        self.max_length = cache_length(c, max_length)
        for table in c.embedding_tables:
            if be.params[table].half:
                raise ValueError(f"{table} must be f32 (the embedding gather reads f32)")
        self.cache = be.kv_cache(c.num_hidden_layers, self.max_length,
                                 c.num_key_value_heads * c.head_dim)
        self.length = 0
        self.history = History(c)
        self._prefill = {}       # (bucket, long rope) -> recorded program
        self._decode = {False: self._record(1, 1, prefill=False)}
        self._last = None        # the program of the last run
        self.rows_read = 0       # whole rows of logits read back (last_logits): what sampling costs

    @classmethod
    async def create(cls, device, config, params, kernels=None, lora_scaling=None, max_length=None):
        """params: {name: py_engine.backends.gpu_backend.Tensor} with the checkpoint's names
        and shapes, and optionally f32 LoRA tensors (PEFT names, with or without
        "base_model.model.")."""
        from ..backends.gpu_backend import GpuBackend, Kernels

        params = without_prefix(params)
        shapes = {n: t.shape for n, t in params.items()}
        check_params(config, shapes)
        model = model_for_params(config, shapes, lora_scaling)
        be = GpuBackend(device, kernels or await Kernels.load(device, decoder=True,
                                                              head_dim=getattr(config, "head_dim", None)))
        be.params = dict(params)
        return cls(model, be, max_length)

    @classmethod
    async def load(cls, device, directory, half=False, kernels=None, **kwargs):
        """From a Hugging Face checkpoint directory; with `half`, the projection weights and an
        untied head are uploaded as f16."""
        from ..backends.gpu_backend import Tensor
        from ..models.checkpoint import DecoderCheckpoint

        checkpoint = DecoderCheckpoint.load(directory)
        params = {}
        for name in checkpoint.names():
            shape = checkpoint.shape(name)
            if half and len(shape) == 2 and name not in checkpoint.config.embedding_tables:
                params[name] = Tensor(device.buffer_from(checkpoint.f16_bits(name), label=name),
                                      shape, half=True)
            else:
                params[name] = Tensor(device.buffer_from(checkpoint.floats(name), label=name), shape)
        return await cls.create(device, checkpoint.config, params, kernels=kernels, **kwargs)

    def _record(self, T, rope_length, prefill=True):
        """The program for T new tokens (a prompt's, or with prefill=False one token's after
        it), its rope tables those of sequences of rope_length (the same for every length on
        the same side of longrope's switch)."""
        from ..backends.gpu_backend import Tensor

        be, device = self.be, self.device
        r = _Recorded()
        r.program = device.program(f"decode {T}")
        be.record(r.program, reuse=True)
        r.ids = Tensor(device.create_buffer(4 * T, label="token ids"), (1, T))
        r.last = Tensor(device.create_buffer(4, label="last row"), (1, 1))
        r.position = Variable(0, name="cache position")
        # DoRA's norms: the prompt's programs compute and keep them, the one-token ones read
        # them (every reply starts with a prompt, after any change of the weights)
        be.dora_norms = "read" if prefill is False else "write"
        try:
            hidden, _ = self.model.forward(be, Tokens(r.ids, T, r.position, rope_length),
                                           train=False, cache=self.cache)
        finally:
            be.dora_norms = None
        if T > 1:    # the last real row of a right-padded prompt, chosen per run
            hidden = be.gather_rows(hidden, r.last)
        r.readout = Readout(be, r.program, self.model.head_logits(be, hidden))
        r.buffers = [r.ids.buffer, r.last.buffer] + be.finish()
        return r

    def reset(self):
        self.length = 0
        self.history.ids = []

    def release(self):
        """Free the prefill programs and their buffers (they are recorded again when needed)."""
        for r in self._prefill.values():
            r.readout.release()
            for b in r.buffers:
                b.destroy()
        if self._last in self._prefill.values():
            self._last = None
        self._prefill = {}

    def bucket(self, n):
        b = MIN_BUCKET
        while b < n:
            b *= 2
        return min(b, self.max_length)

    async def _run(self, r, ids, last, greedy, sampling):
        r.ids.buffer.write(array("I", ids))
        r.last.buffer.write(array("I", [last]))
        r.position.set(self.length)
        self._last = r
        return await r.readout.run(greedy, sampling)

    async def last_logits(self):
        """The logits of the last prefill or step, whatever it read back."""
        if self._last is None:
            raise ValueError("nothing has run yet")
        self.rows_read += 1
        return await self._last.readout.last_logits()

    async def prefill(self, ids, greedy=False, sampling=None):
        """Empty the cache, run the prompt `ids` through it; returns the next token's logits,
        or with `greedy` its likeliest token as (token, problem), or with `sampling` its
        candidates (see Readout.run)."""
        ids = [int(i) for i in ids]
        if not 1 <= len(ids) <= self.max_length:
            raise ValueError(f"a prompt of {len(ids)} tokens does not fit the cache of {self.max_length}")
        self.reset()
        T, long = self.bucket(len(ids)), self.history.long(len(ids))
        if (T, long) not in self._prefill:
            self._prefill[T, long] = self._record(T, len(ids))
        out = await self._run(self._prefill[T, long], ids + [0] * (T - len(ids)), len(ids) - 1,
                              greedy, sampling)
        self.length = len(ids)
        self.history.ids = ids
        return out

    async def step(self, token, greedy=False, sampling=None):
        """Append one token at the current position; returns the logits after it (or, with
        `greedy` or `sampling`, what prefill returns with them)."""
        if self.length >= self.max_length:
            raise ValueError(f"the cache of {self.max_length} tokens is full")
        if self.length == 0:
            raise ValueError("step needs a prefilled prompt")
        if self.history.crosses(1):
            return await self.prefill(self.history.ids + [int(token)], greedy, sampling)
        long = self.history.long(self.length + 1)
        if long not in self._decode:
            self._decode[long] = self._record(1, self.length + 1, prefill=False)
        out = await self._run(self._decode[long], [int(token)], 0, greedy, sampling)
        self.length += 1
        self.history.ids.append(int(token))
        return out
