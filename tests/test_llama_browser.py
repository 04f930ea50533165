"""The decoder's LoRA step inside the browser (Pyodide + WebGPU): a tiny Qwen2-style config
(GQA, q/k/v bias, all seven projections adapted) gives the host's float64 loss and gradients,
with gradient checkpointing (each layer recomputed in the backward, its buffers handed on) as
without, and with a LoRA on the embedding and the output layer beside them (the transpose
kernel, the loss's low-rank term)."""

import json

import numpy as np
import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM

from test_llama_lora_oracle import ALL, TINY, check_against, numpy_step, peft_decoder
from py_engine.harness import put_files, run_json

pytestmark = pytest.mark.browser

STEP = """
import json
from array import array
from py_engine.backends.gpu_backend import GpuBackend, Kernels, Tensor
from py_engine.formats import safetensors
from py_engine.formats.peft_adapter import load_adapter
from py_engine.gpu import open_device
from py_engine.kernels.cross_entropy import decode_metrics
from py_engine.models.llama import LlamaModel, shift_labels
from py_engine.models.llama_config import LlamaConfig
from py_engine.models.lora_config import LoraConfig
from py_engine.train.batch import Batch

I = json.loads(INPUTS)
device = await open_device()
config = LlamaConfig.from_file("/work/model")
adapter_config, tensors, _ = load_adapter("/work/adapter")
model = LlamaModel(config, LoraConfig.from_peft_dict(adapter_config))
model.gradient_checkpointing = I["checkpointing"]
file = safetensors.load("/work/model/model.safetensors")
kernels = await Kernels.load(device, decoder=True)
be = GpuBackend(device, kernels)
for name, shape in config.parameter_shapes().items():
    be.params[name] = Tensor(device.buffer_from(file.floats(name)), shape)
names = [n for n in tensors if ".base_layer." not in n]    # PEFT's copies of the base tables
for name in names:
    shape, values = tensors[name]
    be.params[name] = Tensor(device.buffer_from(values), shape)
    be.grads[name] = be.new(*shape)
B, T = len(I["ids"]), len(I["ids"][0])
u32 = lambda rows, shape: Tensor(device.buffer_from(array("I", [v for r in rows for v in r])), shape)
batch = Batch(I["ids"], [[0] * T] * B, I["mask"])
batch.ids, batch.mask = u32(I["ids"], (B, T)), u32(I["mask"], (B, T))
labels = Tensor(device.buffer_from(array("I", shift_labels(I["labels"]))), (B * T,))
program = device.program()
be.record(program)
hidden, saved = model.forward(be, batch)
if I["tables"]:
    metrics, dh = model.head_loss(be, hidden, labels)
else:
    metrics, dh = be.lm_head_loss(hidden, be.param(model.head_name), labels, chunk=40)
model.backward(be, dh, saved, batch)
program.read(metrics)
for name in names:
    program.read(be.grads[name].buffer)
values = await program.run()
json.dumps({"loss": decode_metrics(values[0])["loss"],
            "grads": {n: list(array("f", bytes(v))) for n, v in zip(names, values[1:])}})
"""


@pytest.mark.parametrize("checkpointing, tables", [(False, False), (True, False), (False, True)])
def test_qwen2_lora_step_in_the_browser(engine_page, tmp_path, checkpointing, tables):
    if tables:
        from test_lora_tables import tables_adapter

        tables_adapter(tmp_path, Qwen2ForCausalLM, Qwen2Config(**TINY),
                       ALL + ["embed_tokens", "lm_head"])
    else:
        peft_decoder(tmp_path, Qwen2ForCausalLM, Qwen2Config(**TINY), ALL)
    files = {f"/work/model/{p.name}": p.read_bytes() for p in (tmp_path / "model").iterdir()}
    files.update({f"/work/adapter/{p.name}": p.read_bytes() for p in (tmp_path / "adapter").iterdir()})
    put_files(engine_page, files)
    rng = np.random.default_rng()
    B, T = 2, 9
    ids = rng.integers(0, 96, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :2] = -100
    want, grads = numpy_step(tmp_path, ids, mask, labels)
    inputs = {"ids": ids.tolist(), "mask": mask.tolist(), "labels": labels.tolist(),
              "checkpointing": checkpointing, "tables": tables}
    got = run_json(engine_page, STEP.replace("INPUTS", repr(json.dumps(inputs))))
    check_against(want, grads, got["loss"], got["grads"])
