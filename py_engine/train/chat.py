"""ChatModel: fine-tune a Llama-family chat checkpoint on conversations or text (LoRA, full, or
hybrid: LoRA until the validation loss plateaus, then every weight), score texts, generate, and
save PEFT adapters or whole checkpoints. The user-facing API for decoders.

    chat = await ChatModel.create("model_dir", backend="gpu")
    await chat.fit(examples, CausalTrainConfig(epochs=2, mode="lora"))   # EncodedExample list
    print((await chat.generate("Who are you?")).text)
    await chat.save("adapter_dir")

Examples are token ids with labels (transformers' convention: -100 = not trained), as
py_engine.data.chat encodes them (assistant turns only for conversations).
"""

import math
from pathlib import Path

from ..formats.model_dir import save_model_dir
from ..formats.peft_adapter import load_adapter, save_adapter
from ..models.checkpoint import DecoderCheckpoint
from ..models.llama import LlamaLoRA, shift_labels
from ..models.lora_config import LoraConfig
from .batch import Batch
from .batching import padded_length, plan_epoch
from .classifier import Step, TrainConfig
from .init import initial_trainable, merge_loaded
from .schedule import linear_warmup_decay

MODES = ("lora", "full", "hybrid")
DECODER_TARGET_MODULES = ("q_proj", "v_proj")      # PEFT's default for Llama-family models


class CausalTrainConfig(TrainConfig):
    """TrainConfig plus the decoder's options.

    mode: "lora", "full", or "hybrid" (LoRA, then full fine-tuning once the validation loss has
    not improved by `min_delta` for `patience` evaluations; the best state of the full phase is
    kept and restored if later full training makes the validation loss worse).
    full_lr: the learning rate of full fine-tuning (default lr / 10: every weight moves).
    eval_every: optimizer steps between validation evaluations (default: once per epoch).
    validation_ratio: the share of examples held out for validation when fit() is given none
    and the mode is hybrid.
    """

    def __init__(self, epochs=1, lr=2e-4, batch_size=4, mode="lora", full_lr=None, patience=2,
                 min_delta=0.0, eval_every=None, validation_ratio=0.1, max_length=512,
                 warmup_ratio=0.0, weight_decay=0.0, **kwargs):
        super().__init__(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                         warmup_ratio=warmup_ratio, weight_decay=weight_decay, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if eval_every is not None and eval_every < 1:
            raise ValueError(f"eval_every must be a positive number of steps, got {eval_every}")
        if not 0.0 < validation_ratio < 1.0:
            raise ValueError(f"validation_ratio must be in (0, 1), got {validation_ratio}")
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
        self.full_lr = lr / 10 if full_lr is None else full_lr
        self.eval_every, self.validation_ratio = eval_every, validation_ratio


class ChatModel:
    def __init__(self, checkpoint, tokenizer, template, model, runtime, source, max_length=512):
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.template = template
        self.model = model
        self.runtime = runtime
        self.source = source
        self.max_length = min(max_length, checkpoint.config.max_position_embeddings)
        self.history = []
        self.events = []

    # --- construction ---

    @classmethod
    async def create(cls, model_dir, lora=None, mode="lora", backend="numpy", seed=0,
                     max_length=512, device=None, base_dtype="f32", quant_group=64):
        """A fresh LoRA adapter (mode "lora" or "hybrid"), or every weight trainable ("full").
        base_dtype (GPU): "f32", "f16", or "int8" / "int4" quantized in groups of quant_group
        inputs (QLoRA-style: a frozen quantized base, f32 LoRA)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        checkpoint = DecoderCheckpoint.load(model_dir)
        if mode == "full":
            model = LlamaLoRA(checkpoint.config, None)
            values = {n: (s, checkpoint.floats(n)) for n, s in model.trainable.items()}
        else:
            lora = lora or LoraConfig(r=8, lora_alpha=16, target_modules=list(DECODER_TARGET_MODULES),
                                      task_type="CAUSAL_LM")
            lora.task_type = "CAUSAL_LM"
            lora.modules_to_save = []
            lora.base_model_name_or_path = lora.base_model_name_or_path or str(model_dir)
            model = LlamaLoRA(checkpoint.config, lora)
            values = initial_trainable(model, seed)
        runtime = await _runtime(backend, model, checkpoint, values, device, base_dtype, quant_group)
        tokenizer, template = load_tokenizer(model_dir)
        return cls(checkpoint, tokenizer, template, model, runtime, model_dir, max_length)

    @classmethod
    async def load(cls, model_dir, adapter_dir=None, backend="numpy", max_length=512,
                   device=None, base_dtype="f32", quant_group=64):
        """A checkpoint (a fine-tuned one saved by save() included), with a PEFT LoRA adapter
        (task CAUSAL_LM) when `adapter_dir` is given."""
        if adapter_dir is None:
            return await cls.create(model_dir, mode="lora", backend=backend, max_length=max_length,
                                    device=device, base_dtype=base_dtype, quant_group=quant_group)
        checkpoint = DecoderCheckpoint.load(model_dir)
        config, tensors, _ = load_adapter(adapter_dir)
        if config.get("task_type") not in (None, "CAUSAL_LM"):
            raise ValueError(f"{adapter_dir} is a {config.get('task_type')} adapter, not CAUSAL_LM")
        lora = LoraConfig.from_peft_dict(dict(config, modules_to_save=None))
        lora.modules_to_save = []
        model = LlamaLoRA(checkpoint.config, lora)
        values = merge_loaded(model, initial_trainable(model, 0), tensors, adapter_dir)
        runtime = await _runtime(backend, model, checkpoint, values, device, base_dtype, quant_group)
        tokenizer, template = load_tokenizer(model_dir)
        return cls(checkpoint, tokenizer, template, model, runtime, model_dir, max_length)

    async def save(self, out_dir):
        """A PEFT adapter while training LoRA; a whole checkpoint directory (config and tokenizer
        files copied) once every weight trains."""
        values = await self.runtime.trainable_values()
        if self.runtime.model.full:
            return save_model_dir(out_dir, self.source, values)
        return save_adapter(out_dir, self.runtime.model.lora.to_peft_dict(), values)

    # --- batches ---

    def _batch(self, examples, indices, multiple):
        T = padded_length(max(len(examples[i].ids) for i in indices), multiple, self.max_length)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        ids, mask, labels = [], [], []
        for i in indices:
            e = examples[i]
            n = min(len(e.ids), T)
            ids.append(list(e.ids[:n]) + [pad] * (T - n))
            mask.append([1] * n + [0] * (T - n))
            labels.append(list(e.labels[:n]) + [-100] * (T - n))
        return Batch(ids, None, mask, shift_labels(labels))

    # --- training ---

    async def fit(self, examples, config=None, validation=None, on_step=None):
        """Train on EncodedExample-like objects (`ids`, `labels`); returns the step log.
        Validation examples (or a held-out share in hybrid mode) are scored per evaluation."""
        config = config or CausalTrainConfig()
        examples = [e for e in examples if len(e.ids) > 1]
        if not examples:
            raise ValueError("the dataset is empty (no example has two or more tokens)")
        if not any(any(y != -100 for y in e.labels[1:self.max_length]) for e in examples):
            raise ValueError("no example has a token to train on (every label is -100)")
        if config.mode == "full" and not self.runtime.model.full:
            await self.runtime.to_full()
        if config.mode != "full" and self.runtime.model.full:
            raise ValueError(f"mode {config.mode!r} needs LoRA; this model already trains every weight")
        if validation is None and config.mode == "hybrid":
            held = max(1, int(len(examples) * config.validation_ratio))
            if held >= len(examples):
                raise ValueError("hybrid mode needs validation examples: give more than one example")
            examples, validation = examples[held:], examples[:held]
        self.runtime.model.merged = False
        lengths = [len(e.ids) for e in examples]
        per_epoch = math.ceil(len(examples) / config.batch_size)
        total = math.ceil(per_epoch / config.grad_accum) * config.epochs
        warmup = int(config.warmup_ratio * total)
        eval_every = config.eval_every or max(1, math.ceil(per_epoch / config.grad_accum))
        tracker = _Plateau(config) if validation else None
        step = len(self.history)
        for epoch in range(config.epochs):
            plan = plan_epoch(lengths, config.batch_size, config.seed, epoch)
            for start in range(0, len(plan), config.grad_accum):
                group = plan[start:start + config.grad_accum]
                base_lr = config.full_lr if self.runtime.model.full and config.mode == "hybrid" else config.lr
                lr = linear_warmup_decay(step, base_lr, warmup, total)
                seed = config.seed * 7919 + step * 131
                step += 1
                if len(group) == 1 and hasattr(self.runtime, "train_step"):
                    batch = self._batch(examples, group[0], config.pad_multiple)
                    loss, tokens, norm = await self.runtime.train_step(
                        batch, seed=seed, lr=lr, step=step, max_norm=config.max_grad_norm,
                        weight_decay=config.weight_decay)
                else:
                    loss = tokens = 0
                    for micro, indices in enumerate(group):
                        batch = self._batch(examples, indices, config.pad_multiple)
                        l, n = await self.runtime.accumulate(batch, seed=seed + micro,
                                                             loss_scale=1.0 / len(group))
                        loss += l / len(group)
                        tokens += n
                    norm = await self.runtime.update(lr=lr, step=step, max_norm=config.max_grad_norm,
                                                     weight_decay=config.weight_decay)
                record = Step(step, epoch, loss, None, norm, lr)
                record.tokens = tokens
                self._record(record, on_step)
                if tracker is not None and step % eval_every == 0:
                    if await self._evaluate(tracker, validation, step, config):
                        return await self._finish(tracker)
        if tracker is not None:
            if step % eval_every:
                await self._evaluate(tracker, validation, step, config)
            await self._finish(tracker)
        return self.history

    async def _evaluate(self, tracker, validation, step, config):
        """Score the validation set and act on a plateau; True when training should stop."""
        loss = _mean_loss(await self.score_encoded(validation))
        self.events.append({"step": step, "event": "validation", "loss": loss,
                            "mode": "full" if self.runtime.model.full else "lora"})
        plateau = tracker.update(loss)
        if self.runtime.model.full and tracker.improved:
            tracker.snapshot = await self.runtime.snapshot()
        if plateau and config.mode == "hybrid" and not self.runtime.model.full:
            await self.runtime.to_full()
            self.model = self.runtime.model
            tracker.reset(loss)
            tracker.snapshot = await self.runtime.snapshot()
            self.events.append({"step": step, "event": "switched to full fine-tuning", "loss": loss})
            return False
        return plateau and (config.mode != "hybrid" or self.runtime.model.full)

    async def _finish(self, tracker):
        if tracker.snapshot is not None and tracker.last > tracker.best:
            await self.runtime.restore(tracker.snapshot)
            self.events.append({"event": "restored the best full fine-tuning state",
                                "loss": tracker.best, "instead_of": tracker.last})
        return self.history

    def _record(self, record, on_step):
        self.history.append(record)
        if on_step is not None:
            on_step(record)

    # --- scoring ---

    async def score_encoded(self, examples):
        """[{"loss": mean next-token loss over the scored tokens, "tokens": count}] per example
        (one sequence at a time, so padding never changes a number)."""
        out = []
        for e in examples:
            batch = self._batch([e], [0], 8)
            total, counted = await self.runtime.score(batch)
            out.append({"loss": total / counted if counted else float("nan"), "tokens": counted})
        return out


    # --- generation ---

    def prompt_ids(self, prompt, raw=False):
        """Token ids of a prompt: a list of messages, or a string taken as one user turn, both
        rendered with the chat template and its generation prompt; with `raw` (or a checkpoint
        without a template) the string itself with the tokenizer's default special tokens."""
        if isinstance(prompt, str) and (raw or self.template is None):
            return self.tokenizer.encode(prompt).ids
        if self.template is None:
            raise ValueError("this checkpoint has no chat template: give the prompt as text")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = self.template.render(messages, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def eos_token_ids(self):
        """The ids that end a reply: config.json's eos_token_id(s) and the template's eos."""
        eos = self.checkpoint.config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if self.template is not None and self.template.special.get("eos_token"):
            found = self.tokenizer.token_to_id(self.template.special["eos_token"])
            if found is not None:
                ids.add(found)
        return sorted(ids)

    async def decoder(self, max_length=None):
        """A KV-cache decoder over the current weights (LoRA applied), made once per state."""
        model, be = self.runtime.model, self.runtime.be
        key = (id(model), len(self.history), max_length)
        if getattr(self, "_decoder_key", None) != key:
            names = set(self.checkpoint.config.parameter_shapes())
            if not model.full:
                names |= set(model.trainable)
            params = {n: be.params[n] for n in names}
            scaling = None if model.full else model.lora.scaling
            if self.runtime.name == "numpy":
                import numpy as np

                from ..generate.numpy_decoder import NumpyDecoder

                self._decoder = NumpyDecoder(model.config, params, lora_scaling=scaling,
                                             max_length=max_length, dtype=np.float32)
            else:
                from ..generate.gpu_decoder import GpuDecoder

                if getattr(self, "_decoder", None) is not None and hasattr(self._decoder, "release"):
                    self._decoder.release()
                self._decoder = await GpuDecoder.create(self.runtime.device, model.config, params,
                                                        kernels=self.runtime.k, lora_scaling=scaling,
                                                        max_length=max_length)
            self._decoder_key = key
        self._decoder.reset()
        return self._decoder

    async def generate(self, prompt, max_new_tokens=128, greedy=True, temperature=1.0, top_k=0,
                       top_p=1.0, stop=(), seed=0, on_token=None, raw=False):
        """Continue a prompt (see prompt_ids); returns a GenerationResult (ids, text,
        finish_reason). on_token(id, text piece) streams the reply as it is made."""
        from ..generate import generate

        ids = self.prompt_ids(prompt, raw)
        limit = self.checkpoint.config.max_position_embeddings
        if len(ids) + max_new_tokens > limit:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) "
                             f"exceeds the model's {limit} positions")
        decoder = await self.decoder()
        return await generate(decoder, self.tokenizer, ids, max_new_tokens=max_new_tokens,
                              greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
                              stop=stop, eos_token_ids=self.eos_token_ids(), seed=seed,
                              on_token=on_token)


class _Plateau:
    """Validation-loss bookkeeping: best so far, evaluations without improvement."""

    def __init__(self, config):
        self.patience, self.min_delta = config.patience, config.min_delta
        self.best = float("inf")
        self.last = float("inf")
        self.bad = 0
        self.improved = False
        self.snapshot = None

    def update(self, loss):
        self.last = loss
        self.improved = loss < self.best - self.min_delta
        if self.improved:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience

    def reset(self, loss):
        self.best, self.last, self.bad, self.improved = loss, loss, 0, False


def _mean_loss(scores):
    total = sum(s["loss"] * s["tokens"] for s in scores if s["tokens"])
    tokens = sum(s["tokens"] for s in scores)
    return total / tokens if tokens else float("nan")


def load_tokenizer(model_dir):
    """(BPETokenizer, ChatTemplate or None) from a checkpoint directory."""
    from ..tokenizers import BPETokenizer
    from ..tokenizers.chat_template import ChatTemplate

    model_dir = Path(model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json")
    tokenizer = BPETokenizer.from_file(path)
    template = None
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        import json

        config = json.loads(config_path.read_text(encoding="utf-8"))
        if tokenizer.pad_id is None:
            for key in ("pad_token", "eos_token"):
                token = config.get(key)
                token = token.get("content") if isinstance(token, dict) else token
                if token is not None and tokenizer.token_to_id(token) is not None:
                    tokenizer.pad_id = tokenizer.token_to_id(token)
                    break
        if config.get("chat_template") or (model_dir / "chat_template.jinja").is_file():
            template = ChatTemplate.from_pretrained(model_dir)
    return tokenizer, template


async def _runtime(backend, model, checkpoint, values, device, base_dtype, quant_group):
    if backend == "numpy":
        from .decoder_numpy import DecoderNumpyRuntime

        if base_dtype != "f32":
            raise ValueError(f"base_dtype {base_dtype!r} is a GPU storage mode; the NumPy backend keeps f32")
        return DecoderNumpyRuntime(model, checkpoint, values)
    if backend == "gpu":
        from .decoder_gpu import DecoderGpuRuntime

        return await DecoderGpuRuntime.create(model, checkpoint, values, device=device,
                                              base_dtype=base_dtype, quant_group=quant_group)
    raise ValueError(f"unknown backend {backend!r}; choose numpy or gpu")
