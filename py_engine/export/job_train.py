"""The training script of a job folder written by `py-engine export-job` (copied there as
train.py): LoRA fine-tuning with transformers' Trainer and PEFT, launched by accelerate on one
process or many (GPUs, or CPU processes over gloo), with nothing about the device written in.

    accelerate launch --config_file accelerate.yaml train.py            # its num_processes GPUs
    accelerate launch --config_file accelerate.yaml --num_processes 4 train.py     # four GPUs
    accelerate launch --cpu train.py                                    # one CPU process
    accelerate launch train.py --base llama-3-8b                        # a preset's base

On a machine without a GPU, the config's processes run on the CPU and talk over gloo.

It reads job.json beside it (the base model, the task, py_engine's hyperparameters, the data
files) and the LoRA adapter in adapter/ (adapter_config.json, and the starting weights when the
job has them), and writes OUTPUT/adapter (a PEFT adapter: PeftModel.from_pretrained loads it,
and so do py_engine and its page) and OUTPUT/log.jsonl (one line per optimizer step: loss,
grad_norm, learning_rate, epoch; an eval_loss line per epoch with validation data).

It trains what py_engine would train on the same data and seed, so a job continues a run from
the page (or the page continues a job's) without a jump:
  - data: `messages` conversations ({"messages": [{"role", "content"}, ...]}, as TRL's
    SFTTrainer reads them) or {"text"} lines for chat models, {"text", "label"} lines for
    classifiers (a multi-label job's, job.json's problem_type, also "targets": one in
    [0, 1] per label, a sigmoid each), {"input", "target"} pairs for a T5 encoder-decoder
    (job.json's task "seq2seq"). A conversation is rendered with the tokenizer's chat
    template and only the assistant turns are trained: each assistant content as the template
    prints it, and the end-of-turn token right after it (job.json's end_tokens, after spaces
    or tabs); a token is trained when its characters overlap that span. A text trains every token. A pair's
    input and target are each tokenized by the base's tokenizer.json as it is written (T5's
    appends </s>), each cut to max_length; every target token is trained, the decoder fed the
    target shifted right after decoder_start_token_id, as T5 shifts its labels.
  - batches: py_engine's epoch plan (batching.py beside this file: shuffled by the seed,
    grouped by length, a pair's length its input's and target's together, padded to a
    multiple of 8: a pair's input and target each on its own); each planned batch is the
    global batch, split across the processes, so 1 or N processes take the same optimizer
    steps.
  - the loss: each planned batch's is the mean over its trained tokens (rows, for a
    classifier; a multi-label one's logits, its binary cross-entropy) on every process, an
    optimizer step's the mean over its accumulated batches;
    AdamW decaying every trainable tensor, transformers' schedule (lr_scheduler_type and its
    lr_scheduler_kwargs, after its warmup; max_steps where given), clipping.
Dropout (a checkpoint's hidden_dropout_prob or T5's dropout_rate, lora_dropout) draws torch's
masks, not py_engine's: with it, runs agree in distribution rather than step for step.
job.json's "dropout" (export-job --dropout, as train's) sets every dropout of the base model
(0: none).
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IGNORE_INDEX = -100
MULTI_LABEL = "multi_label_classification"


class JobError(ValueError):
    """Something in the job folder or the data that cannot be trained; one line."""


# ---- data --------------------------------------------------------------------------------------

def read_jsonl(path):
    """(line number, object) of each non-blank line."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as e:
                raise JobError(f"{path}:{number}: not valid JSON ({e})") from None
            if not isinstance(value, dict):
                raise JobError(f"{path}:{number}: expected a JSON object")
            rows.append((number, value))
    if not rows:
        raise JobError(f"{path}: the dataset is empty")
    return rows


MARK = "\U000f0000\U000f0001"     # private-use characters no template trims or transforms


def assistant_spans(render, messages, end_tokens):
    """(text, spans): the conversation rendered by render(messages, add_generation_prompt) and
    the character spans trained in it. An assistant content starts where a marker put in its
    place lands when the conversation is rendered with it; what follows there is the content
    as the template printed it (as is, or trimmed); the span covers it and the end-of-turn
    token after it (past spaces or tabs)."""
    from turn_spans import add_turn_span

    text = render(messages, False)
    ends = sorted(set(end_tokens), key=len, reverse=True)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        marked = render(messages[:k] + [dict(message, content=MARK)] + messages[k + 1:], False)
        a = marked.find(MARK)
        if a < 0:
            continue              # printed only through something else (tool calls)
        if marked[:a] != text[:a]:
            raise JobError("the chat template prints the turns before an answer differently "
                           "depending on the answer, so the answer cannot be located")
        content = message["content"]
        printed = [form for form in (content, content.strip(), content.lstrip(),
                                     content.rstrip()) if text.startswith(form, a)]
        if not printed:
            continue              # transformed (upper-cased...): not the answer's own text
        add_turn_span(spans, text, a, a + max(map(len, printed)), ends)
    return text, spans


def encode_chat(tokenizer, row, end_tokens, max_length, where):
    """{"input_ids", "labels"} of one chat-model line, or None when nothing is left to train."""
    import jinja2

    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise JobError(f"{where}: \"messages\" must be a list of {{\"role\", \"content\"}} "
                           "objects")

        def render(turns, generation_prompt):
            return tokenizer.apply_chat_template(turns, tokenize=False,
                                                 add_generation_prompt=generation_prompt)

        try:
            text, spans = assistant_spans(render, messages, end_tokens)
        except jinja2.TemplateError as e:       # raise_exception(...) in the template
            raise JobError(f"{where}: the chat template refuses the conversation: {e}") from None
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoding["input_ids"]
        labels = [i if any(a < end and start < b for a, b in spans) and start < end
                  else IGNORE_INDEX for i, (start, end) in zip(ids, encoding["offset_mapping"])]
    elif isinstance(row.get("text"), str):
        ids = tokenizer(row["text"])["input_ids"]
        labels = list(ids)
    else:
        raise JobError(f"{where}: expected {{\"messages\": [...]}} or {{\"text\": ...}}")
    ids, labels = ids[:max_length], labels[:max_length]
    if len(ids) < 2 or all(y == IGNORE_INDEX for y in labels[1:]):
        return None
    labels[0] = IGNORE_INDEX      # never predicted: the loss shifts labels by one
    return {"input_ids": ids, "labels": labels}


def encode_seq2seq(tokenizer, row, max_length, where):
    """{"input_ids", "labels"} of one {"input", "target"} pair, or None when a side has no
    token."""
    source, target = row.get("input"), row.get("target")
    if not isinstance(source, str) or not isinstance(target, str):
        raise JobError(f"{where}: expected {{\"input\": str, \"target\": str}}")
    ids = tokenizer(source)["input_ids"][:max_length]
    labels = tokenizer(target)["input_ids"][:max_length]
    if not ids or not labels:
        return None
    return {"input_ids": ids, "labels": labels}


def encode_classification(tokenizer, row, labels, max_length, where, multi=False):
    """A classifier's row: its label's index, or a multi-label row's targets (floats)."""
    text, label, targets = row.get("text"), row.get("label"), row.get("targets")
    if multi:
        if not isinstance(text, str) or not isinstance(targets, list) or \
                len(targets) != len(labels) or not all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1
                    for t in targets):
            raise JobError(f"{where}: expected {{\"text\": str, \"targets\": {len(labels)} "
                           f"numbers in [0, 1], for {labels}}}")
    elif not isinstance(text, str) or label not in labels:
        raise JobError(f"{where}: expected {{\"text\": str, \"label\": one of {labels}}}")
    encoding = tokenizer(text, row.get("text_pair"), truncation=True, max_length=max_length)
    item = {"input_ids": encoding["input_ids"],
            "labels": [float(t) for t in targets] if multi else labels.index(label)}
    if "token_type_ids" in encoding:
        item["token_type_ids"] = encoding["token_type_ids"]
    return item


def encode_file(path, job, tokenizer):
    """The encoded examples of a data file, in file order (skipped lines are counted)."""
    train = job["train"]
    if job["task"] == "causal_lm":
        end_tokens = job["end_tokens"] + ([tokenizer.eos_token] if tokenizer.eos_token else [])
    items, skipped = [], 0
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if job["task"] == "causal_lm":
            item = encode_chat(tokenizer, row, end_tokens, train["max_length"], where)
        elif job["task"] == "seq2seq":
            item = encode_seq2seq(tokenizer, row, train["max_length"], where)
        else:
            item = encode_classification(tokenizer, row, job["labels"], train["max_length"],
                                         where, job.get("problem_type") == MULTI_LABEL)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    if skipped:
        print(f"note: {path}: skipped {skipped} examples with nothing to train on within "
              f"{train['max_length']} tokens", file=sys.stderr)
    if not items:
        raise JobError(f"{path}: no example has a token to train on")
    return items


# ---- batches -----------------------------------------------------------------------------------

def sizes(item, task):
    """The lengths a batch pads for an example: its tokens' (a pair's input's and target's,
    each padded on its own)."""
    if task == "seq2seq":
        return len(item["input_ids"]), len(item["labels"])
    return (len(item["input_ids"]),)


class PlannedBatches:
    """A batch sampler over py_engine's epoch plan (by each example's sizes added up): each
    planned batch is cut into one share per process (contiguous rows); a process whose share is
    short gets rows that train nothing (index -1), so every process runs every step. Items are
    (index, padded lengths, the loss's denominator): as py_engine's, an optimizer step's loss
    is the mean of its planned batches' losses, each the mean over that whole batch's trained
    tokens (rows), so a batch's summed loss is divided by its count times the number of
    batches in its step."""

    def __init__(self, sizes, counts, batch_size, grad_accum, seed, multiple, cap, rank, world):
        from batching import padded_length, plan_epoch

        self.plan, self.padded_length = plan_epoch, padded_length
        self.sizes, self.lengths = sizes, [sum(size) for size in sizes]
        self.counts, self.seed = counts, seed
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.multiple, self.cap, self.rank, self.world = multiple, cap, rank, world
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        batches = self.plan(self.lengths, self.batch_size, self.seed, self.epoch)
        for k, batch in enumerate(batches):
            widths = tuple(self.padded_length(max(size), self.multiple, self.cap)
                           for size in zip(*(self.sizes[i] for i in batch)))
            group = k - k % self.grad_accum
            in_step = min(self.grad_accum, len(batches) - group)
            denominator = max(1, sum(self.counts[i] for i in batch)) * in_step
            share = math.ceil(len(batch) / self.world)
            rows = batch[self.rank * share:(self.rank + 1) * share]
            yield [(i, widths, denominator) for i in rows] + \
                [(-1, widths, denominator)] * (share - len(rows))


def trained_count(item, task):
    """What an example adds to its batch's loss denominator: its trained tokens (chat models,
    T5's targets), 1 (a classifier's row) or its logits (a multi-label row's targets)."""
    labels = item["labels"]
    if task == "classification":
        return len(labels) if isinstance(labels, list) else 1
    return sum(y != IGNORE_INDEX for y in labels)


def collate(task, pad_id, decoder_start_id=None, num_targets=None):
    """The batch of planned items: right-padded to the batch's lengths (a pair's input to the
    first, its target to the second); a seq2seq batch's decoder input is its labels shifted
    right after decoder_start_id, as transformers' T5 makes it from labels (the Trainer hands
    the model no labels when it computes the loss itself). A multi-label classifier's rows
    hold `num_targets` float targets; a row that trains nothing, IGNORE_INDEX each."""
    import torch

    if task != "classification":
        empty = [IGNORE_INDEX]                      # a sequence of one ignored token
    elif num_targets is None:
        empty = IGNORE_INDEX                        # an ignored row's label
    else:
        empty = [float(IGNORE_INDEX)] * num_targets  # an ignored multi-label row's targets

    def pad(rows, key, value, width):
        return torch.tensor([row[key] + [value] * (width - len(row[key])) for row in rows])

    def make(items):
        widths = items[0][1]
        S, T = widths[0], widths[-1]
        rows = []
        for item, _, _ in items:
            row = item if item is not None else {"input_ids": [pad_id], "labels": empty}
            rows.append(dict(row, attention_mask=[1] * len(row["input_ids"])))
        batch = {"input_ids": pad(rows, "input_ids", pad_id, S),
                 "attention_mask": pad(rows, "attention_mask", 0, S),
                 "loss_denominator": torch.tensor(float(items[0][2]))}
        if task == "classification":
            batch["labels"] = torch.tensor([row["labels"] for row in rows])
            if any("token_type_ids" in row for row in rows):
                batch["token_type_ids"] = pad(
                    [dict(row, token_type_ids=row.get("token_type_ids", [0])) for row in rows],
                    "token_type_ids", 0, S)
        else:
            batch["labels"] = pad(rows, "labels", IGNORE_INDEX, T)
        if task == "seq2seq":
            batch["decoder_input_ids"] = shift_right(batch["labels"], decoder_start_id, pad_id)
        return batch

    return make


def shift_right(labels, start_id, pad_id):
    """The decoder's input: start_id, then the labels but the last; ignored ones as pad_id."""
    shifted = labels.new_full(labels.shape, start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)


class Rows:
    """The encoded examples, indexed by (index, padded lengths, loss denominator); -1 is a row
    that trains nothing."""

    def __init__(self, items):
        self.items = items

    def __getitem__(self, key):
        index, widths, denominator = key
        return (None if index < 0 else self.items[index]), widths, denominator

    def __len__(self):
        return len(self.items)


# ---- the loss ----------------------------------------------------------------------------------

def scored(task, labels):
    """The labels the loss scores: a causal LM's from the second token on (position t predicts
    token t + 1), every one for a pair's target (the decoder input is shifted instead) and a
    classifier's rows."""
    return labels[:, 1:] if task == "causal_lm" else labels


def loss_function(task, label_smoothing, multi=False):
    """compute_loss_func for transformers' Trainer: the summed loss over the rows' trained
    tokens (rows, for a classifier; a multi-label one's logits, each its binary cross-entropy
    with logits, transformers' BCEWithLogitsLoss), divided by `num_items_in_batch`, which
    JobTrainer sets to the planned batch's denominator (see PlannedBatches); the Trainer then
    scales it by the number of processes, which DDP's averaging of gradients undoes."""
    import torch.nn.functional as F

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        if task == "causal_lm":
            logits = logits[:, :-1]
        labels = scored(task, labels)
        if multi:
            kept = labels.ne(IGNORE_INDEX)
            total = F.binary_cross_entropy_with_logits(logits[kept], labels[kept].float(),
                                                       reduction="sum")
        else:
            total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                    ignore_index=IGNORE_INDEX, reduction="sum",
                                    label_smoothing=label_smoothing)
        count = num_items_in_batch if num_items_in_batch is not None else \
            labels.ne(IGNORE_INDEX).sum()
        return total / count

    return loss


# ---- the model ---------------------------------------------------------------------------------

def base_settings(job, base):
    """(model name or path, preset or None): --base names a preset of presets.json (one of
    the job's task), a directory or a Hub id; by default the job's own base (and preset)."""
    presets = json.loads((HERE / "presets.json").read_text(encoding="utf-8"))
    name = base if base is not None else job.get("preset")
    if name in presets:
        task = presets[name].get("task", "causal_lm")
        if task != job["task"]:
            raise JobError(f"--base {name}: a {task} base; this job trains {job['task']}")
        return presets[name]["model_id"], presets[name]
    return base or job["base"], None


def load_model(job, base, preset, switched, torch):
    """The base with the job's LoRA: adapter/'s weights when it has them (an adapter to
    continue, or py_engine's start for the seed), unless --base `switched` to a preset that
    names its projections otherwise; PEFT's fresh start then."""
    import peft
    import transformers

    dtype = getattr(torch, (preset or {}).get("dtype") or job["dtype"])
    if job["task"] == "causal_lm":
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    elif job["task"] == "seq2seq":
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(base, dtype=dtype)
    else:
        # the kind of head in its config, as transformers' pipelines and loss read it
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            base, dtype=dtype, num_labels=len(job["labels"]),
            problem_type=job.get("problem_type") or "single_label_classification")
    if job.get("dropout") is not None:      # before PEFT adds its own (lora_dropout)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = job["dropout"]
    adapter = HERE / "adapter"
    config = peft.LoraConfig.from_pretrained(adapter)
    targets = set(preset["target_modules"]) if preset and switched else \
        set(config.target_modules)
    weights = ("adapter_model.safetensors", "adapter_model.bin")      # PEFT reads either
    if targets == set(config.target_modules) and any((adapter / w).is_file() for w in weights):
        return peft.PeftModel.from_pretrained(model, adapter, is_trainable=True)
    config.target_modules = targets
    return peft.get_peft_model(model, config)


def load_tokenizer(base, job):
    import transformers

    if job["task"] == "seq2seq":
        # tokenizer.json as written, as py_engine reads it: transformers' T5Tokenizer builds
        # its own pre-tokenizer (splitting at every whitespace), which cuts some texts apart
        # otherwise (runs of spaces, tabs)
        return transformers.PreTrainedTokenizerFast.from_pretrained(base)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    if job["task"] == "causal_lm" and job.get("chat_template"):
        tokenizer.chat_template = job["chat_template"]    # the continued adapter's own
    elif job["task"] == "causal_lm" and tokenizer.chat_template is None:
        tokenizer.chat_template = job["fallback_chat_template"]
    return tokenizer


# ---- training ----------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Fine-tune the job's base with LoRA (see job.json).")
    p.add_argument("--output", default=str(HERE / "output"),
                   help="where the adapter and log.jsonl go (default: output/ beside this file)")
    p.add_argument("--base", help="a preset of presets.json, a model directory or a Hub id "
                                  "(default: the job's base)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    job = json.loads((HERE / "job.json").read_text(encoding="utf-8"))
    try:
        return train(job, args)
    except JobError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2


def train(job, args):
    import torch
    import transformers

    EpochLoader, JobTrainer, StepLog, Validation = _torch_classes()
    base, preset = base_settings(job, args.base)
    settings = job["train"]
    tokenizer = load_tokenizer(base, job)
    items = encode_file(HERE / job["data"]["train"], job, tokenizer)
    validation = encode_file(HERE / job["data"]["validation"], job, tokenizer) \
        if job["data"].get("validation") else None
    steps_per_epoch = math.ceil(math.ceil(len(items) / settings["batch_size"])
                                / settings["grad_accum"])
    total = settings.get("max_steps") or steps_per_epoch * settings["epochs"]
    checkpointing = bool((preset or {}).get("gradient_checkpointing",
                                            job["gradient_checkpointing"]))
    output = Path(args.output)
    precision = job["precision"]
    training_args = transformers.TrainingArguments(
        output_dir=str(output / "trainer"), num_train_epochs=settings["epochs"],
        max_steps=args.max_steps or settings.get("max_steps") or -1,
        per_device_train_batch_size=settings["batch_size"],
        gradient_accumulation_steps=settings["grad_accum"], learning_rate=settings["lr"],
        weight_decay=settings["weight_decay"], adam_beta1=settings["adam_beta1"],
        adam_beta2=settings["adam_beta2"], adam_epsilon=settings["adam_epsilon"],
        optim="adamw_torch", max_grad_norm=settings["max_grad_norm"] or 0.0,
        lr_scheduler_type=settings.get("lr_scheduler_type", "linear"),
        lr_scheduler_kwargs=settings.get("lr_scheduler_kwargs") or {},
        neftune_noise_alpha=settings.get("neftune_noise_alpha"),
        warmup_steps=settings.get("warmup_steps") or int(settings["warmup_ratio"] * total),
        logging_steps=1, save_strategy="no", report_to="none", seed=settings["seed"],
        bf16=precision == "bf16", fp16=precision == "fp16", gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, dataloader_num_workers=0,
        ddp_find_unused_parameters=False, disable_tqdm=True,
        # On the CPU where the machine has no accelerator: the same launch runs anywhere.
        use_cpu=not torch.accelerator.is_available())
    transformers.set_seed(settings["seed"])
    model = load_model(job, base, preset, args.base is not None, torch)
    if job["task"] == "seq2seq":        # the base's own, as its _shift_right reads them
        pad_id, start_id = model.config.pad_token_id, model.config.decoder_start_token_id
    else:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
            (tokenizer.eos_token_id or 0)
        start_id = None

    multi = job.get("problem_type") == MULTI_LABEL

    def loader(rows, seed):
        sampler = PlannedBatches([sizes(r, job["task"]) for r in rows],
                                 [trained_count(r, job["task"]) for r in rows],
                                 settings["batch_size"],
                                 settings["grad_accum"], seed, settings["pad_multiple"],
                                 settings["max_length"], training_args.process_index,
                                 training_args.world_size)
        return EpochLoader(Rows(rows), batch_sampler=sampler,
                           collate_fn=collate(job["task"], pad_id, start_id,
                                              len(job["labels"]) if multi else None))

    if checkpointing:
        model.enable_input_require_grads()
    main_process = training_args.process_index == 0
    if main_process:
        print(f"train.py: {training_args.world_size} process(es) on "
              f"{training_args.device.type} ({training_args.parallel_mode.value}); "
              f"{len(items)} examples, {total} optimizer steps", file=sys.stderr, flush=True)
    log = StepLog(output / "log.jsonl", main_process)
    trainer = JobTrainer(model=model, args=training_args,
                         train_loader=loader(items, settings["seed"]),
                         compute_loss_func=loss_function(job["task"],
                                                         settings.get("label_smoothing", 0.0),
                                                         multi),
                         callbacks=[log])
    if validation:
        trainer.add_callback(Validation(trainer, loader(validation, 0), log, job["task"], multi))
    trainer.train()
    if main_process:
        save_adapter(trainer.model, job, output / "adapter")
    trainer.accelerator.wait_for_everyone()
    if training_args.world_size > 1:
        leave_the_process_group()
    return 0


def leave_the_process_group():
    """End a distributed process once every rank has passed the last barrier, and all is
    written: at once, neither destroying the process group nor tearing Python down, as either
    can fail a launch whose training went well. A process that exits with the group alive can
    abort in gloo's threads as Python is torn down ("terminate called without an active
    exception", SIGABRT). Destroying the group can deadlock: it joins gloo's worker threads
    holding the GIL, while one of them, freeing the last gather's tensors under its queue's
    lock, waits for the GIL (seen: rank 1 hung for good after its last step, on a busy
    machine)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def save_adapter(model, job, out):
    """The PEFT adapter, with what py_engine reads beside it for a classifier (labels.json;
    head_config.json: how transformers' classifier pools, [CLS] but where its config says
    otherwise, as ModernBERT's classifier_pooling may; a multi-label head's kind)."""
    model.save_pretrained(out)
    if job["task"] == "classification":
        (out / "labels.json").write_text(json.dumps(job["labels"], ensure_ascii=False) + "\n",
                                         encoding="utf-8")
        pooling = model.config.to_dict().get("classifier_pooling", "cls")
        head = {"pooling": pooling}
        if job.get("problem_type") == MULTI_LABEL:
            head["problem_type"] = MULTI_LABEL
        (out / "head_config.json").write_text(json.dumps(head) + "\n", encoding="utf-8")


def _torch_classes():
    """The Trainer subclass, loader and callbacks, made once torch is imported."""
    import torch
    import transformers

    class EpochLoader(torch.utils.data.DataLoader):
        def set_epoch(self, epoch):
            self.batch_sampler.set_epoch(epoch)

    class JobTrainer(transformers.Trainer):
        """Trains on the planned batches; weight decay on every trainable tensor, as
        py_engine's AdamW decays them all."""

        def __init__(self, train_loader, **kwargs):
            super().__init__(**kwargs)
            self.train_loader = train_loader

        def get_train_dataloader(self):
            return self.train_loader

        def get_decay_parameter_names(self, model):
            return [name for name, _ in model.named_parameters()]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            denominator = inputs.pop("loss_denominator")
            return super().compute_loss(model, inputs, return_outputs,
                                        num_items_in_batch=denominator)

    class StepLog(transformers.TrainerCallback):
        def __init__(self, path, main):
            self.path, self.main = Path(path), main
            if main:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text("", encoding="utf-8")

        def write(self, record):
            if self.main:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.write({"step": state.global_step, **logs})

    class Validation(transformers.TrainerCallback):
        """The mean loss over the validation set's trained tokens (rows) after each epoch,
        without label smoothing (py_engine's held-out loss)."""

        def __init__(self, trainer, loader, log, task, multi=False):
            self.trainer, self.loader, self.log, self.task = trainer, loader, log, task
            self.loss = loss_function(task, 0.0, multi)

        def on_epoch_end(self, args, state, control, **kwargs):
            model, device = self.trainer.model, self.trainer.args.device
            loss = self.loss
            total = torch.zeros(2, dtype=torch.float64, device=device)
            model.eval()
            with torch.no_grad():
                for batch in self.loader:
                    batch = {k: v.to(device) for k, v in batch.items()}
                    batch.pop("loss_denominator")
                    labels = batch.pop("labels")
                    count = scored(self.task, labels).ne(IGNORE_INDEX).sum()
                    if count:
                        total[0] += loss(model(**batch), labels).double() * count
                        total[1] += count
            model.train()
            total = self.trainer.accelerator.reduce(total, reduction="sum")
            self.log.write({"epoch": state.epoch, "step": state.global_step,
                            "eval_loss": (total[0] / total[1]).item()})

    return EpochLoader, JobTrainer, StepLog, Validation


if __name__ == "__main__":
    sys.exit(main())
