"""A GPT-2 family checkpoint (DialoGPT-like) fine-tuned with LoRA inside the browser (Pyodide +
WebGPU) through ChatModel, dropout on, then a greedy reply in DialoGPT's format: the losses match the host's
NumPy runtime (1e-4 relative) and the reply is the host's, token for token. The checkpoint's
Conv1D weights are transposed in Pyodide, with no NumPy."""

import json

import numpy as np
import pytest

from gpt2_checkpoints import tiny_dialogpt_dir
from py_engine.harness import put_files, run_json
from test_chat_browser import CHAT      # the in-page run, the checkpoint given by path
from test_chat_model import assert_same_greedy, host_run, random_examples
from test_gpt2_lora_oracle import ALL, DROPOUT

pytestmark = pytest.mark.browser


def test_gpt2_chat_model_trains_and_replies_in_the_browser(engine_page, tmp_path):
    path = tiny_dialogpt_dir(tmp_path / "dialogpt", initializer_range=0.2, **DROPOUT)
    put_files(engine_page, {f"/work/dialogpt/{p.name}": p.read_bytes() for p in path.iterdir()})
    examples = random_examples(8, 320)
    prompt = "What is the capital of France?"
    losses, want, chat = host_run(path, examples, prompt, "numpy", ALL)

    inputs = {"path": "/work/dialogpt", "targets": ALL, "prompt": prompt, "examples": [[e.ids, e.labels] for e in examples]}
    got = run_json(engine_page, CHAT.replace("INPUTS", repr(json.dumps(inputs))))
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-4)
    assert_same_greedy(chat, prompt, want, got["ids"], got["text"])

