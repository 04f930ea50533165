"""What a runtime is: a model and a task placed on one backend, with the trainable tensors and
their optimizer state. NumpyRuntime (host) and GpuRuntime (WebGPU, natively or in the browser)
implement the same coroutines, so the trainer, the public API and the tests drive either the
same way:

    metrics = await runtime.accumulate(batch, seed, loss_scale)   # forward, loss, backward
    norm = await runtime.update(lr, max_norm, weight_decay)       # clip, AdamW, zero the grads
    metrics = await runtime.train_step(batch, seed, lr, ...)      # both at once (+ "grad_norm")
    metrics = await runtime.evaluate(batch)                       # the loss, no gradients
    rows = await runtime.outputs(batch)                           # the task's outputs (logits)
    await runtime.trainable_values() / load_trainable(values)
    await runtime.optimizer_state() / load_optimizer_state(state) / reset_optimizer()
    handle = await runtime.snapshot(); await runtime.restore(handle); runtime.release(handle)
    values = await runtime.snapshot_values(handle); handle = await runtime.snapshot_from(values)
    await runtime.merge(); await runtime.to_full()
    weights = await runtime.merged_weights()                      # W + scaling * B.A, by name
    decoder = runtime.decoder(max_length)                         # KV-cache generation

metrics: {"loss", "correct", "counted", ...} as floats (the GPU reads them back in one buffer).
accumulate() adds the gradient of loss * loss_scale to the gradients held on the device; any
number of calls (micro-batches) may come before an update.
The optimizer is AdamW (torch's), its step count kept here: it starts at 0, each update
advances it, and a snapshot or a saved state carries it with the moments.
"""

import math


def check_lora_biases_fold(model, what):
    """ValueError where `what` (a merged model, the switch to full fine-tuning) cannot hold the
    adapter: a lora_B bias (lora_bias) on a linear without a bias of its own, as PEFT's merge
    refuses it."""
    layers = model.unmergeable()
    if layers:
        shown = ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
        raise ValueError(f"{what} adds each lora_B bias (lora_bias) to its layer's bias, and "
                         f"{shown} {'has' if len(layers) == 1 else 'have'} none (PEFT's merge "
                         "refuses it too); keep the adapter unmerged")


def check_foldable(model):
    """ValueError where the switch to full fine-tuning cannot fold the adapter into the
    weights: a LoRA on one table of a tied embedding and output layer changes it for that use
    alone, which one table cannot hold; a lora_B bias where its layer has no bias."""
    check_lora_biases_fold(model, "the switch to full fine-tuning")
    if getattr(model, "tokens", None) is not None and model.tokens.module is not None:
        raise ValueError("the switch to full fine-tuning with trainable tokens "
                         "(trainable_token_indices) is not built here; export the merged model "
                         "and fine-tune that")
    if getattr(model, "unties_when_merged", False):
        raise ValueError("the switch to full fine-tuning folds the LoRA into the weights, and a "
                         "LoRA on the tied embedding or output layer would untie them (not built "
                         "here); export the merged model, which unties them, and fine-tune that")


def check_trainable(model, values, what="trainable tensors"):
    """Every trainable tensor present with its shape, nothing else."""
    missing = sorted(set(model.trainable) - set(values))
    extra = sorted(set(values) - set(model.trainable))
    if missing or extra:
        hint = ""
        unwrapped = sorted({n.rsplit(".lora_", 1)[0] for n in extra if ".lora_" in n})
        if unwrapped:
            hint = f" (a LoRA on {', '.join(unwrapped)}, which this model does not wrap)"
        elif extra:             # whole tensors: PEFT's modules_to_save
            biases = model.bias_sources()
            whole = sorted({n.rsplit(".", 1)[0] for n in model.trainable
                            if ".lora_" not in n and n not in biases})
            hint = (" (modules trained whole beside the LoRA, as PEFT's modules_to_save trains "
                    f"them; this model trains whole only {', '.join(whole) or 'none'})")
        raise ValueError(f"{what} does not match the model: missing {missing}, unexpected "
                         f"{extra}{hint}")
    for name, (shape, data) in values.items():
        if tuple(shape) != tuple(model.trainable[name]):
            raise ValueError(f"{what}: tensor {name} has shape {tuple(shape)}, the model needs "
                             f"{tuple(model.trainable[name])}")
        if len(data) != math.prod(shape):
            raise ValueError(f"{what}: tensor {name} holds {len(data)} values for shape {tuple(shape)}")


class Runtime:
    """The parts every runtime shares."""

    name = None

    def __init__(self, model, task):
        self.model = model
        self.task = task
        self.optimizer_step = 0
        self.version = 0        # bumped when the set of trainable tensors changes (to_full)

    def use_task(self, task):
        """Train and evaluate with `task` from now on (a task's options, such as label
        smoothing, are recorded into the GPU's programs, which are then made anew)."""
        self.task = task
        self.forget_programs()

    def forget_programs(self):
        """Recorded programs (the GPU's) are made again when next needed."""

    def set_gradient_checkpointing(self, on):
        """Train with gradient checkpointing (models/checkpointing.py) or without; a family
        without it is refused by name."""
        if self.model.gradient_checkpointing != bool(on):
            self.model.gradient_checkpointing = on
            self.forget_programs()

    async def rebuilt(self, model, trainable, task=None):
        """A runtime like this one (backend, device, storage of the frozen weights, task unless
        another is given) over another structure of the same checkpoint, `model` (other LoRA
        options, another head), starting from `trainable` ({name: (shape, floats)}). The
        frozen weights both read as they are kept here are shared, not read again (on the
        GPU: not uploaded twice); this runtime is not used after."""
        raise NotImplementedError

    def shared_frozen(self, model):
        """{name: stored tensor} of this runtime's frozen weights that `model` reads frozen
        too, kept the same way (a weight the GPU may store compressed in both or neither)."""
        mine = set(self.model.frozen_names())
        return {n: self.be.params[n] for n in model.frozen_names()
                if n in mine and model.is_linear_weight(n) == self.model.is_linear_weight(n)}

    async def train_step(self, batch, seed, lr, max_norm=None, weight_decay=0.0, **adam):
        """accumulate() then update() for one batch; metrics with "grad_norm"."""
        metrics = dict(await self.accumulate(batch, seed=seed))
        metrics["grad_norm"] = await self.update(lr, max_norm, weight_decay, **adam)
        return metrics

    def _check_optimizer_state(self, state):
        for key in ("m", "v"):
            if set(state.get(key, {})) != set(self.model.trainable):
                raise ValueError(f"optimizer state {key!r} does not hold this model's trainable tensors")
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"optimizer state has no valid step count: {step!r}")


async def create_runtime(backend, model, task, checkpoint, trainable, device=None,
                         base_dtype="f32", quant_group=64):
    """A runtime on "numpy" or "gpu". base_dtype / quant_group: how the GPU stores the frozen
    linear weights (see GpuRuntime.create)."""
    if backend == "numpy":
        from .numpy_runtime import NumpyRuntime

        if base_dtype != "f32":
            raise ValueError(f"base_dtype {base_dtype!r} is a GPU storage mode; the NumPy backend "
                             "keeps f32")
        return NumpyRuntime(model, task, checkpoint, trainable)
    if backend == "gpu":
        from .gpu_runtime import GpuRuntime

        return await GpuRuntime.create(model, task, checkpoint, trainable, device=device,
                                       base_dtype=base_dtype, quant_group=quant_group)
    raise ValueError(f"unknown backend {backend!r}; choose numpy or gpu")
