"""A Phi-3 family checkpoint (fused qkv_proj and gate_up_proj, LongRoPE switching to its long
factors at 16 tokens) fine-tuned with LoRA on every projection inside the browser (Pyodide +
WebGPU) through ChatModel, then a greedy reply: the losses match the host's NumPy runtime (1e-4
relative) and the reply is the host's, token for token."""

import json

import numpy as np
import pytest

from py_engine.harness import put_files, run_json
from test_chat_browser import CHAT      # the in-page run, the checkpoint given by path
from test_chat_model import assert_same_greedy, host_run, random_examples
from test_phi3_lora_oracle import ALL
from tiny_chat import tiny_chat_dir

pytestmark = pytest.mark.browser


def test_phi3_chat_model_trains_and_replies_in_the_browser(engine_page, tmp_path):
    path = tiny_chat_dir(tmp_path, "phi3", initializer_range=0.2)
    put_files(engine_page, {f"/work/phi3/{p.name}": p.read_bytes() for p in path.iterdir()})
    examples = random_examples(8, 320)
    prompt = "What is the capital of France?"
    losses, want, chat = host_run(path, examples, prompt, "numpy", ALL)

    inputs = {"path": "/work/phi3", "targets": ALL, "prompt": prompt,
              "examples": [[e.ids, e.labels] for e in examples]}
    got = run_json(engine_page, CHAT.replace("INPUTS", repr(json.dumps(inputs))))
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-4)
    assert_same_greedy(chat, prompt, want, got["ids"])
