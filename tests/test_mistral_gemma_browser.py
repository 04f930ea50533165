"""Mistral (sliding window shorter than the chats), Gemma (GeGLU, (1 + weight) RMSNorm,
scaled embeddings, one KV head of 256), Qwen3 (QK-norm), Gemma 3 (text), Gemma 2 (soft caps) and SmolLM3 (a layer without rotary
embedding) chat checkpoints fine-tuned with LoRA inside the browser
(Pyodide + WebGPU) through ChatModel, then a greedy reply: the losses match the host's NumPy
runtime (1e-4 relative) and the reply is the host's, token for token."""

import json

import numpy as np
import pytest

from py_engine.harness import put_files, run_json
from test_chat_browser import CHAT      # the in-page run, the checkpoint given by path
from test_chat_model import assert_same_greedy, host_run, random_examples
from test_mistral_gemma_lora_oracle import ALL
from tiny_chat import tiny_chat_dir

pytestmark = pytest.mark.browser


def test_mistral_gemma_qwen3_gemma3_gemma2_and_smollm3_chat_models_train_and_reply_in_the_browser(engine_page, tmp_path):
    examples = random_examples(8, 320)
    prompt = "What is the capital of France?"
    for family in ("mistral", "gemma", "qwen3", "gemma3", "gemma2", "smollm3"):
        path = tiny_chat_dir(tmp_path, family=family, initializer_range=0.2)
        put_files(engine_page, {f"/work/{family}/{p.name}": p.read_bytes() for p in path.iterdir()})
        losses, want, chat = host_run(path, examples, prompt, "numpy", ALL)
        inputs = {"path": f"/work/{family}", "targets": ALL, "prompt": prompt,
                  "examples": [[e.ids, e.labels] for e in examples]}
        got = run_json(engine_page, CHAT.replace("INPUTS", repr(json.dumps(inputs))))
        np.testing.assert_allclose(got["losses"], losses, rtol=1e-4, err_msg=family)
        assert_same_greedy(chat, prompt, want, got["ids"], got["text"])
