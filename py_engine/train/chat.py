"""ChatModel: fine-tune a decoder chat checkpoint (Llama, GPT-2 or Phi-2 family) on conversations or text (LoRA, full, or
hybrid: LoRA until the validation loss plateaus, then every weight), score texts, generate, and
save PEFT adapters or whole checkpoints. The user-facing API for decoders.

    chat = await ChatModel.create("model_dir", backend="gpu")
    await chat.fit(examples, CausalTrainConfig(epochs=2, mode="lora"))   # EncodedExample list
    print((await chat.generate("Who are you?")).text)
    await chat.save("adapter_dir")

Examples are token ids with labels (transformers' convention: -100 = not trained), as
py_engine.data.chat encodes them (assistant turns only for conversations). Training in slices,
with held-out checks and rollback: chat.trainer(examples, config, validation, guard).
"""

import shutil
import warnings
import weakref
from dataclasses import replace
from pathlib import Path

from ..formats.model_dir import TOKENIZER_FILES, decoder_config_json, save_model_dir
from ..formats.output_dir import write_files
from ..formats import safetensors
from ..formats.finite import require_finite
from ..formats.peft_adapter import adapter_files, load_adapter, read_adapter_files
from ..labels import IGNORE_INDEX
from ..models.checkpoint import DecoderCheckpoint
from ..models.decoders import decoder_model
from ..models.llama_config import LlamaConfig
from ..models.lora_config import LoraConfig
from ..models.saved_modules import saved_vocabulary
from ..tokenizers.checkpoint import chat_tokenizer
from ..tokenizers.chat_template import check_template_args
from .config import MODES, CausalTrainConfig, TrainConfig  # noqa: F401 (TrainConfig: the API's)
from .base_init import check_same_base, residual_base
from .init import initial_trainable, merge_loaded
from . import state as training_state
from .runtime import check_foldable, create_runtime
from .tasks import CausalLMTask
from .trainer import Trainer

DECODER_TARGET_MODULES = LlamaConfig.lora_targets   # the Llama family's (each config has its own)
FULL_WEIGHTS = "model.safetensors"                 # a training state's weights in full fine-tuning


class ChatModel:
    task_type = "CAUSAL_LM"      # PEFT's task type of its adapters

    def __init__(self, checkpoint, tokenizer, template, runtime, source, max_length=512):
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.template = template
        self.runtime = runtime
        self.source = source
        self.max_length = min(max_length, checkpoint.config.max_position_embeddings)
        self.history = []
        self._trainer = None        # the last trainer made: its snapshots are released with it
        self.events = []
        self._decoder = None
        self._decoder_key = None
        self.tokenizer_dir = source     # where the tokenizer's files are (an adapter's own: _make)

    @property
    def model(self):
        return self.runtime.model

    # --- construction ---

    @classmethod
    async def create(cls, model_dir, lora=None, mode="lora", backend="numpy", seed=0,
                     max_length=512, device=None, base_dtype="f32", quant_group=64, dropout=None):
        """A fresh LoRA adapter (mode "lora" or "hybrid"), or every weight trainable ("full").
        base_dtype (GPU): "f32", "f16", or "int8" / "int4" quantized in groups of quant_group
        inputs (QLoRA-style: a frozen quantized base, f32 LoRA). dropout: the checkpoint's
        dropout in training (None), 0.0 for none, or rates by name (the GPT-2 family's
        "embedding", "residual", "attention"), as TextClassifier.create's."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        checkpoint = DecoderCheckpoint.load(model_dir)
        if mode == "full":
            model = decoder_model(checkpoint.config, None, dropout=dropout)
            values = {n: (s, checkpoint.floats(n)) for n, s in model.trainable.items()}
        else:
            lora = lora or LoraConfig(r=8, lora_alpha=16, target_modules=list(checkpoint.config.lora_targets),
                                      task_type=cls.task_type)
            if lora.task_type != cls.task_type:    # a classifier's default head to save
                lora.modules_to_save = []
            lora.task_type = cls.task_type
            lora.base_model_name_or_path = lora.base_model_name_or_path or str(model_dir)
            model = decoder_model(checkpoint.config, lora, dropout=dropout)
            checkpoint = residual_base(model, checkpoint)       # PiSSA's, OLoRA's
            values = initial_trainable(model, seed, checkpoint)
        return await cls._make(model_dir, checkpoint, model, values, backend, device, base_dtype,
                               quant_group, max_length)

    @classmethod
    async def load(cls, model_dir, adapter_dir=None, backend="numpy", max_length=512,
                   device=None, base_dtype="f32", quant_group=64, dropout=None):
        """A checkpoint (a fine-tuned one saved by save() included), with a PEFT LoRA adapter
        (task CAUSAL_LM) when `adapter_dir` is given; dropout as in create()."""
        if adapter_dir is None:
            return await cls.create(model_dir, mode="lora", backend=backend, max_length=max_length,
                                    device=device, base_dtype=base_dtype, quant_group=quant_group,
                                    dropout=dropout)
        config, tensors, _ = load_adapter(adapter_dir)
        return await cls._from_adapter(model_dir, adapter_dir, config, tensors, backend, device,
                                       base_dtype, quant_group, max_length, dropout,
                                       adapter_dir=adapter_dir)

    @classmethod
    async def _from_adapter(cls, model_dir, source, config, tensors, backend, device, base_dtype,
                            quant_group, max_length, dropout=None, adapter_dir=None):
        checkpoint = DecoderCheckpoint.load(model_dir)
        model = cls._adapter_model(checkpoint, config, tensors, source, dropout)
        checkpoint = residual_base(model, checkpoint)
        values = merge_loaded(model, initial_trainable(model, 0, fresh=False), tensors, source)
        return await cls._make(model_dir, checkpoint, model, values, backend, device, base_dtype,
                               quant_group, max_length, adapter_dir)

    @classmethod
    def _adapter_model(cls, checkpoint, config, tensors, source, dropout=None):
        """The model an adapter (its adapter_config.json `config`, its `tensors`) was made
        with on `checkpoint`: its LoRA options, the modules it trains whole, its vocabulary."""
        if config.get("task_type") not in (None, cls.task_type):
            raise ValueError(f"{source} is a {config.get('task_type')} adapter, not {cls.task_type}")
        lora = LoraConfig.from_language_model_dict(config, checkpoint.config.lora_targets,
                                                   checkpoint.config.whole_modules)
        return decoder_model(checkpoint.config, lora, dropout=dropout,
                             vocab_size=saved_vocabulary(checkpoint.config, tensors))

    @classmethod
    async def _make(cls, model_dir, checkpoint, model, values, backend, device, base_dtype,
                    quant_group, max_length, adapter_dir=None):
        """adapter_dir: the folder the adapter came from, whose chat template (if it carries
        one) is used (tokenizers.checkpoint.chat_tokenizer)."""
        if getattr(checkpoint.config, "encoder_decoder", False):
            raise ValueError(f"{model_dir} is a {checkpoint.config.model_type} encoder-decoder: use "
                             "Seq2SeqModel (py_engine.train.seq2seq)")
        # an adapter carrying its embedding and output layer brings its own tokenizer (tokens
        # added to it), saved beside it
        own = model.saves_vocabulary and adapter_dir is not None and \
            (Path(adapter_dir) / "tokenizer.json").is_file()
        if model.config.vocab_size != checkpoint.config.vocab_size and not own:
            warnings.warn(f"{adapter_dir or 'the adapter'} resized the vocabulary to "
                          f"{model.config.vocab_size} tokens (the checkpoint has "
                          f"{checkpoint.config.vocab_size}) and has no tokenizer.json beside it: the "
                          "checkpoint's tokenizer knows none of the tokens added; put the tokenizer "
                          "files it was trained with in the adapter's folder", RuntimeWarning,
                          stacklevel=3)
        tokenizer, template = chat_tokenizer(model_dir, adapter_dir, own_vocabulary=own)
        tokenizer.limit_ids(model.config.vocab_size)
        runtime = await create_runtime(backend, model, CausalLMTask(tokenizer.pad_id), checkpoint,
                                       values, device=device, base_dtype=base_dtype,
                                       quant_group=quant_group)
        chat = cls(checkpoint, tokenizer, template, runtime, model_dir, max_length)
        chat.tokenizer_dir = adapter_dir if own else model_dir
        return chat

    async def save(self, out_dir):
        """A PEFT adapter while training LoRA; a whole checkpoint directory (config and tokenizer
        files copied) once every weight trains."""
        values = await self.runtime.trainable_values()
        if self.model.full:
            return save_model_dir(out_dir, self.source, self.model.config.checkpoint_layout(values),
                                  config=decoder_config_json(self.source, self.model.config),
                                  tokenizer_dir=self.tokenizer_dir)
        return write_files(out_dir, self._adapter_files(values, out_dir), self._protected(),
                           kind="a model")

    def _adapter_files(self, values, where):
        """{name: bytes} of the adapter with trainable `values`: PEFT's files (with the copies
        PEFT writes of a tied table, DecoderModel.tied_copies) and an adapter's own tokenizer
        (tokens added with its saved embedding), which its saved copies carry beside them."""
        values = dict(values, **{copy: values[name] for copy, name in self.model.tied_copies().items()})
        files = adapter_files(self.model.lora.to_peft_dict(), values, where=where)
        if Path(self.tokenizer_dir) != Path(self.source):
            files.update({name: (Path(self.tokenizer_dir) / name).read_bytes()
                          for name in TOKENIZER_FILES if (Path(self.tokenizer_dir) / name).is_file()})
        return files

    def _protected(self):
        return [("the model directory", self.source)]

    async def adapter_files(self):
        """The LoRA adapter as {file name: bytes}: what save() writes while training LoRA."""
        if self.model.full:
            raise ValueError("every weight trains: there is no adapter, save the whole model")
        return self._adapter_files(await self.runtime.trainable_values(), "the adapter")

    async def load_adapter_files(self, files, source="the adapter"):
        """Take the trainable weights of a LoRA adapter given as {file name: bytes}. One made
        with other LoRA options (or modules trained whole) brings them: the model is rebuilt
        with them (the frozen weights kept, the optimizer's moments started again); its
        vocabulary must be this model's, whose tokenizer stays. Returns whether it was."""
        if self.model.full:
            raise ValueError("every weight trains: a LoRA adapter cannot be loaded into it")
        config, tensors, _ = read_adapter_files(files, source)
        if not training_state.adapter_differences(self.model, config):
            current = await self.runtime.trainable_values()
            await self.runtime.load_trainable(merge_loaded(self.model, current, tensors, source))
            return False
        await self._rebuild(config, tensors, source)
        return True

    async def _rebuild(self, config, tensors, source):
        """The runtime rebuilt over the model an adapter was made with, holding its weights."""
        model = self._adapter_model(self.checkpoint, config, tensors, source, self.model.dropout)
        check_same_base(self.model, model, source)
        if model.config.vocab_size != self.model.config.vocab_size:
            raise ValueError(f"{source} has a vocabulary of {model.config.vocab_size} tokens, this "
                             f"model {self.model.config.vocab_size}: load the model with the "
                             "adapter (and the tokenizer saved beside it) instead")
        values = merge_loaded(model, initial_trainable(model, 0, fresh=False), tensors, source)
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None
        if self._decoder is not None and hasattr(self._decoder, "release"):
            self._decoder.release()
        self._decoder = self._decoder_key = None
        self.runtime = await self.runtime.rebuilt(model, values)

    async def save_state(self, trainer, store, extra_files=None):
        """Save everything `trainer` needs to continue (the adapter's files, or every weight in
        full fine-tuning; the optimizer state; where training stands) into `store`: a host
        directory (written atomically, only where py_engine may write) or an IndexedDBStateStore in
        the browser. `extra_files` ({name: bytes}) are saved with them, in the same write."""
        values = await self.runtime.trainable_values()
        if self.model.full:
            weights = {n: ("F32", tuple(shape), data) for n, (shape, data) in values.items()}
            require_finite(weights, store)
            files = {FULL_WEIGHTS: safetensors.save_bytes(weights)}
        else:
            files = self._adapter_files(values, store)
        files = await training_state.capture(trainer, files, {"full": self.model.full,
                                                              "dropout": self.model.dropout})
        files.update(extra_files or {})
        return await training_state.as_store(store, self._protected()).save(files)

    @classmethod
    async def resume(cls, model_dir, store, examples, validation=None, backend="numpy",
                     device=None, base_dtype="f32", quant_group=64, max_length=512):
        """(chat model, trainer) continuing a state save_state() wrote, on the same examples
        (and validation examples) it was trained on; the trainer goes on exactly where it
        stopped. A hybrid run resumes in the phase it was in; the best full-phase state it
        kept on the device is not part of a saved state."""
        files, state, optimizer, train_config = await training_state.open_state(
            store, CausalTrainConfig)
        # the rates it trained with (a state from before they were recorded: the checkpoint's)
        dropout = (state.get("model") or {}).get("dropout")
        if (state.get("model") or {}).get("full"):
            checkpoint = DecoderCheckpoint.load(model_dir)
            model = decoder_model(checkpoint.config, None, dropout=dropout)
            chat = await cls._make(model_dir, checkpoint, model, _full_weights(files), backend,
                                   device, base_dtype, quant_group, max_length)
        else:
            config, tensors, _ = read_adapter_files(files, "the training state")
            folder = _tokenizer_folder(files)
            chat = await cls._from_adapter(model_dir, "the training state", config, tensors,
                                           backend, device, base_dtype, quant_group, max_length,
                                           dropout, adapter_dir=folder)
            if folder is not None:      # the tokenizer's files live as long as the model
                weakref.finalize(chat, shutil.rmtree, folder, ignore_errors=True)
        return await training_state.resume_training(chat, state, optimizer, train_config,
                                                    examples, validation)

    async def restore_state(self, store, examples, validation=None, plateau=None):
        """A trainer continuing a state save_state() wrote, on this chat model: its weights,
        optimizer state and position are loaded (a state made with other LoRA options, an
        adapter imported since, rebuilds the model with them)."""
        files, state, optimizer, train_config = await training_state.open_state(
            store, CausalTrainConfig)
        recorded = (state.get("model") or {}).get("dropout")
        if recorded is not None and recorded != self.model.dropout:
            raise ValueError(f"the training state was trained with dropout {recorded}; this model "
                             f"has {self.model.dropout} (make it with the same dropout option)")
        if (state.get("model") or {}).get("full"):
            if train_config.mode == "hybrid" and not self.model.full:
                await self.runtime.to_full()
            values = _full_weights(files)
        else:
            config, values, _ = read_adapter_files(files, "the training state")
            if training_state.adapter_differences(self.model, config):
                # made with other LoRA options (an adapter imported since): its model, rebuilt
                await self._rebuild(config, values, "the training state")
        _, trainer = await training_state.resume_training(self, state, optimizer, train_config,
                                                          examples, validation, values,
                                                          plateau=plateau)
        return trainer

    async def trainer(self, examples, config=None, validation=None, guard=None, plateau=None):
        """A Trainer over EncodedExample-like objects (`ids`, `labels`), to run in slices.
        Validation examples (or, in hybrid mode, a held-out share) are checked by a guard and
        scored every `eval_every` steps by the plateau hook (ValidationPlateau), which switches
        a hybrid run to full fine-tuning and, with `plateau` (fit's way), stops other runs."""
        config = CausalTrainConfig.of(config)
        if config.max_length > self.max_length:     # the checkpoint's positions bound it
            config = replace(config, max_length=self.max_length)
        examples = self._usable(examples, config.max_length)
        self.runtime.set_gradient_checkpointing(config.gradient_checkpointing)
        if config.mode == "full" and not self.model.full:
            await self.runtime.to_full()
        if config.mode == "lora" and self.model.full:
            raise ValueError("mode 'lora' needs LoRA; this model already trains every weight")
        if config.mode == "hybrid" and not self.model.full:
            check_foldable(self.model)      # before any step, not at the switch
        if not validation and config.mode == "hybrid":
            held = max(1, int(len(examples) * config.validation_ratio))
            if held >= len(examples):
                raise ValueError("hybrid mode needs validation examples: give more than one example")
            examples, validation = examples[held:], examples[:held]
        self.model.merged = False
        task = self.runtime.task.with_options(label_smoothing=config.label_smoothing,
                                              noise_alpha=config.neftune_noise_alpha)
        if task is not self.runtime.task:
            self.runtime.use_task(task)
        trainer = Trainer(self.runtime, self.runtime.task, examples, config,
                          validation=validation, guard=guard)
        trainer.history = self.history
        trainer.subscribe(lambda event: self.events.append(event)
                          if event["event"] not in ("step", "slice") else None)
        if validation and (plateau or config.mode == "hybrid"):
            trainer.eval_every = config.eval_every or trainer.steps_per_epoch
            trainer.on_evaluation(ValidationPlateau(config))
        if self._trainer is not None:
            self._trainer.close()
        self._trainer = trainer
        return trainer

    @staticmethod
    def _usable(examples, limit):
        """The examples that can train: two or more tokens, a label to learn within `limit`
        (the first token is never predicted)."""
        examples = [e for e in examples if len(e.ids) > 1]
        if not examples:
            raise ValueError("the dataset is empty (no example has two or more tokens)")
        if not any(any(y != IGNORE_INDEX for y in e.labels[1:limit]) for e in examples):
            raise ValueError("no example has a token to train on (every label is -100)")
        return examples

    async def fit(self, examples, config=None, validation=None, on_step=None, guard=None):
        """Train on EncodedExample-like objects (`ids`, `labels`); returns the step log.
        With validation examples (held out automatically in hybrid mode) training stops on a
        validation plateau, or in hybrid mode switches from LoRA to full fine-tuning there."""
        trainer = await self.trainer(examples, config, validation, guard, plateau=True)
        if on_step is not None:
            trainer.subscribe(lambda event: on_step(trainer.history[-1]) if event["event"] == "step" else None)
        await trainer.fit()
        return self.history

    # --- scoring ---

    async def score_encoded(self, examples):
        """[{"loss": mean next-token loss over the scored tokens, "tokens": count}] per example
        (one sequence at a time, so padding never changes a number; without the label
        smoothing a run trained with)."""
        task = self.runtime.task.with_options(label_smoothing=0.0)
        if task is not self.runtime.task:
            self.runtime.use_task(task)
        out = []
        for e in examples:
            m = await self.runtime.evaluate(task.batch([e], [0], 8, self.max_length))
            counted = int(m["counted"])
            out.append({"loss": m["loss"] if counted else float("nan"), "tokens": counted})
        return out

    # --- generation ---

    def prompt_ids(self, prompt, raw=False, template_args=None):
        """Token ids of a prompt: a list of messages, or a string taken as one user turn, both
        rendered with the chat template and its generation prompt (`template_args`: more
        variables for the template, such as Qwen3's enable_thinking); with `raw` (or a
        checkpoint without a template) the string itself with the tokenizer's default special
        tokens."""
        if template_args:
            template_args = check_template_args(template_args)
            if raw or self.template is None:
                raise ValueError("template_args: " + ("raw text is not rendered with the chat "
                                 "template" if raw else "this checkpoint has no chat template"))
        if isinstance(prompt, str) and (raw or self.template is None):
            return self.tokenizer.encode(prompt).ids
        if self.template is None:
            raise ValueError("this checkpoint has no chat template: give the prompt as text")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = self.template.render(messages, add_generation_prompt=True, **(template_args or {}))
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def eos_token_ids(self):
        """The ids that end a reply: the checkpoint's (config.json's and generation_config.json's
        eos_token_id) and the template's eos."""
        ids = set(self.checkpoint.eos_token_ids())
        if self.template is not None and self.template.special.get("eos_token"):
            found = self.tokenizer.token_to_id(self.template.special["eos_token"])
            if found is not None:
                ids.add(found)
        return sorted(ids)

    def decoder(self, max_length=None):
        """A KV-cache decoder over the current weights (it reads them in place, so it follows
        training), made once per set of trainable tensors. `max_length`: the tokens its cache
        must hold (prompt + reply), None for the model's positions. The cache is made for the
        next power of two from 256 up, and kept while it holds what is asked: a cache of the
        model's positions would take 1.2 GB for Gemma 3 270M's 32,768."""
        limit = self.checkpoint.config.max_position_embeddings
        needed = limit if max_length is None else max_length
        key = (id(self.runtime), self.runtime.version, self.model.merged)
        if self._decoder_key != key or self._decoder.max_length < needed:
            if self._decoder is not None and hasattr(self._decoder, "release"):
                self._decoder.release()
            self._decoder = self.runtime.decoder(min(limit, max(256, 1 << (needed - 1).bit_length())))
            self._decoder_key = key
        self._decoder.reset()
        return self._decoder

    def latest_turns(self, messages, max_new_tokens, template_args=None, as_prompt=None):
        """(kept, ids): the latest part of a conversation whose prompt leaves room for
        max_new_tokens in the model's positions, and that prompt's token ids (for generate's
        prompt_ids, so that it is not made twice). A leading system message is kept, the oldest
        exchanges dropped, each cut made before a user message so that the turns still start
        as templates expect. The whole conversation when it fits; its last user turn (and the
        system message) when nothing shorter does, for generate to refuse with the sizes.
        `as_prompt`: what generate is given for some messages (an encoder-decoder's input
        text), if not them."""
        messages = list(messages)
        limit = self.checkpoint.config.max_position_embeddings
        start = 1 if messages and messages[0].get("role") == "system" else 0
        made = {}

        def fits(k):
            kept = messages[:start] + messages[k:]
            made[k] = self.prompt_ids(as_prompt(kept) if as_prompt is not None else kept,
                                      template_args=template_args)
            return len(made[k]) + max_new_tokens <= limit

        cuts = [k for k in range(start + 1, len(messages)) if messages[k].get("role") == "user"]
        if fits(start) or not cuts:
            return messages, made[start]
        # fewer turns, a shorter prompt: the earliest cut that fits by bisection, so that a
        # long conversation is rendered a few times, not once per exchange
        low, high = 0, len(cuts) - 1
        while low < high:
            middle = (low + high) // 2
            if fits(cuts[middle]):
                high = middle
            else:
                low = middle + 1
        cut = cuts[low]
        if cut not in made:     # where the bisection settled without trying it
            fits(cut)
        return messages[:start] + messages[cut:], made[cut]

    async def generate(self, prompt, max_new_tokens=128, greedy=True, temperature=1.0, top_k=0,
                       top_p=1.0, stop=(), seed=0, on_token=None, raw=False, template_args=None,
                       prompt_ids=None, max_length=None):
        """Continue a prompt (see prompt_ids); returns a GenerationResult (ids, text,
        finish_reason). on_token(id, text piece) streams the reply as it is made. `prompt_ids`:
        the prompt's token ids where they are made already (latest_turns gives them); the
        prompt is then not rendered again. `max_length`: the most tokens of prompt and reply
        together (default: the model's positions)."""
        from ..generate import generate

        ids = self.prompt_ids(prompt, raw, template_args) if prompt_ids is None else list(prompt_ids)
        if not ids:
            raise ValueError("the prompt is empty: give some text to continue")
        limit = self.checkpoint.config.max_position_embeddings
        if len(ids) + max_new_tokens > limit:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) "
                             f"exceeds the model's {limit} positions")
        if max_length is not None and len(ids) + max_new_tokens > max_length:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) "
                             f"exceeds max_length {max_length}")
        decoder = self.decoder(len(ids) + max_new_tokens)
        return await generate(decoder, self.tokenizer, ids, max_new_tokens=max_new_tokens,
                              greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
                              stop=stop, eos_token_ids=self.eos_token_ids(), seed=seed,
                              on_token=on_token)


def _tokenizer_folder(files):
    """A folder holding the tokenizer files among a saved state's {name: bytes} (an adapter's
    own tokenizer, saved with it: ChatModel._adapter_files), or None where there are none."""
    if "tokenizer.json" not in files:
        return None
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="py_engine_tokenizer_"))
    for name in TOKENIZER_FILES:
        if name in files:
            (folder / name).write_bytes(bytes(files[name]))
    return folder


def _full_weights(files):
    """{name: (shape, floats)} of a full fine-tuning state's weights."""
    if FULL_WEIGHTS not in files:
        raise training_state.StateError(f"the training state has no {FULL_WEIGHTS}")
    weights = safetensors.load(bytes(files[FULL_WEIGHTS]))
    return {n: (tuple(weights.info(n)[1]), weights.floats(n)) for n in weights.keys()}


class ValidationPlateau:
    """An evaluation hook on the validation loss: a plateau is `patience` evaluations without
    an improvement of min_delta. In hybrid mode a plateau while training LoRA switches to full
    fine-tuning at full_lr; otherwise it stops training. While every weight trains, the best
    state is snapshotted and restored at the end if later training made the loss worse."""

    def __init__(self, config):
        self.config = config
        self.best = self.last = float("inf")
        self.bad = 0
        self.snapshot = None

    def _update(self, loss):
        self.last = loss
        improved = loss < self.best - self.config.min_delta
        if improved:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        return improved, self.bad >= self.config.patience

    async def __call__(self, trainer, quality):
        runtime, loss = trainer.runtime, quality["loss"]
        improved, plateau = self._update(loss)
        full = runtime.model.full
        if full and improved:
            await self._keep(runtime)
        if plateau and self.config.mode == "hybrid" and not full:
            await runtime.to_full()
            trainer.base_lr = self.config.full_lr
            self.best, self.last, self.bad = loss, loss, 0
            await self._keep(runtime)
            trainer.emit({"event": "switched to full fine-tuning", "step": trainer.progress.step,
                          "loss": loss})
            return False
        return plateau

    async def _keep(self, runtime):
        if self.snapshot is not None:
            runtime.release(self.snapshot)
        self.snapshot = await runtime.snapshot()

    async def finish(self, trainer):
        if self.snapshot is not None and self.last > self.best:
            await trainer.runtime.restore(self.snapshot)
            trainer.emit({"event": "restored the best full fine-tuning state", "loss": self.best,
                          "instead_of": self.last})
        if self.snapshot is not None:
            trainer.runtime.release(self.snapshot)
            self.snapshot = None
