"""Seq2SeqModel: fine-tuning of an encoder-decoder checkpoint (T5: FLAN-T5, T5 v1.1) on
input/target pairs (LoRA, full or hybrid, as ChatModel's modes), generation, and PEFT adapters
(task SEQ_2_SEQ_LM) or whole checkpoints: ChatModel's API, its trainer, runtimes, adapter and
checkpoint files, with the sequence-to-sequence task.

    model = await Seq2SeqModel.create("flan-t5-dir")
    pairs, _ = encode_seq2seq_examples(read_seq2seq_jsonl("pairs.jsonl"), model.tokenizer)
    await model.fit(pairs, CausalTrainConfig(epochs=2))
    print((await model.generate("Translate to German: Hello")).text)
    await model.save("adapter_dir")

`tokenizer`: left out (CHECKPOINT_TOKENIZER), the checkpoint's own tokenizer.json read by the
engine's pure-Python Unigram tokenizer (tokenizers.checkpoint.seq2seq_tokenizer, which runs in
the browser too); any object with encode(text).ids, decode(ids, skip_special_tokens) and
token_to_id (a Hugging Face `tokenizers.Tokenizer`, say); or None for a model driven by token
ids alone (encoded pairs, decoder()), whose directory needs no tokenizer.json.
"""

from ..formats.peft_adapter import load_adapter
from ..tokenizers.checkpoint import seq2seq_tokenizer
from .chat import ChatModel
from .runtime import create_runtime
from .tasks import Seq2SeqTask


CHECKPOINT_TOKENIZER = "checkpoint"     # the tokenizer argument's default: the checkpoint's own


class Seq2SeqModel(ChatModel):
    task_type = "SEQ_2_SEQ_LM"

    @classmethod
    async def create(cls, model_dir, tokenizer=CHECKPOINT_TOKENIZER, lora=None, mode="lora",
                     backend="numpy", seed=0, max_length=512, device=None, dropout=None):
        """A fresh LoRA adapter (PEFT's default targets for the family unless `lora` names
        others; mode "lora" or "hybrid") on the checkpoint in `model_dir`, or every weight
        trainable (mode "full"); dropout as ChatModel.create's (T5 has one rate)."""
        tokenizer = _tokenizer(model_dir, tokenizer)
        model = await super().create(model_dir, lora=lora, mode=mode, backend=backend, seed=seed,
                                     max_length=max_length, device=device, dropout=dropout)
        return _with_tokenizer(model, tokenizer)

    @classmethod
    async def load(cls, model_dir, tokenizer=CHECKPOINT_TOKENIZER, adapter_dir=None,
                   backend="numpy", max_length=512, device=None, dropout=None):
        """The checkpoint, with a PEFT LoRA adapter (task SEQ_2_SEQ_LM) when `adapter_dir` is
        given."""
        if adapter_dir is None:
            return await cls.create(model_dir, tokenizer, backend=backend, max_length=max_length,
                                    device=device, dropout=dropout)
        tokenizer = _tokenizer(model_dir, tokenizer)
        config, tensors, _ = load_adapter(adapter_dir)
        model = await cls._from_adapter(model_dir, adapter_dir, config, tensors, backend, device, "f32",
                                        64, max_length, dropout)
        return _with_tokenizer(model, tokenizer)

    @classmethod
    async def _make(cls, model_dir, checkpoint, model, values, backend, device, base_dtype,
                    quant_group, max_length, adapter_dir=None):
        """adapter_dir: unused (a T5 has no chat template)."""
        config = checkpoint.config
        if not getattr(config, "encoder_decoder", False):
            raise ValueError(f"{model_dir} is a {config.model_type} decoder, not an encoder-decoder: "
                             "use ChatModel")
        task = Seq2SeqTask(config.pad_token_id, config.decoder_start_token_id)
        runtime = await create_runtime(backend, model, task, checkpoint, values, device=device,
                                       base_dtype=base_dtype, quant_group=quant_group)
        return cls(checkpoint, None, None, runtime, model_dir, max_length)

    @staticmethod
    def _usable(examples, limit):
        """Pairs with an input and a target token to learn (within `limit`)."""
        from ..labels import IGNORE_INDEX

        examples = [e for e in examples if len(e.ids) and any(y != IGNORE_INDEX for y in e.labels[:limit])]
        if not examples:
            raise ValueError("the dataset is empty (no pair has an input and a target token to train on)")
        return examples

    def prompt_ids(self, prompt, raw=False, template_args=None):
        """The input's token ids (the tokenizer's special tokens appended, as T5 is fed); there
        is no chat template, so no `template_args`."""
        if not isinstance(prompt, str):
            raise ValueError("an encoder-decoder's input is a text")
        if template_args:
            raise ValueError("an encoder-decoder has no chat template: template_args do not apply")
        return self.tokenizer.encode(prompt).ids

    def eos_token_ids(self):
        return self.checkpoint.eos_token_ids()



def _with_tokenizer(model, tokenizer):
    """`model` with `tokenizer`, which (when it is the engine's own) refuses ids the model's
    embedding has no row for."""
    if hasattr(tokenizer, "limit_ids"):
        tokenizer.limit_ids(model.checkpoint.config.vocab_size)
    model.tokenizer = tokenizer
    return model


def _tokenizer(model_dir, tokenizer):
    """The tokenizer given (None included), else the checkpoint's own (read before any weight
    is loaded, so a directory without tokenizer.json is refused at once)."""
    if isinstance(tokenizer, str) and tokenizer == CHECKPOINT_TOKENIZER:
        return seq2seq_tokenizer(model_dir)
    return tokenizer
