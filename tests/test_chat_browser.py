"""ChatModel inside the browser (Pyodide + WebGPU): a tiny chat checkpoint fine-tuned with LoRA
for a few steps, then a greedy reply streamed token by token to a Python callback. The losses
match the host's NumPy runtime (1e-4 relative) and the reply is the host's, token for token."""

import json

import numpy as np
import pytest

from conftest import run
from py_engine.harness import put_files, run_json
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from test_chat_model import ALL, compared_run, random_examples
from tiny_chat import tiny_chat_dir

pytestmark = pytest.mark.browser

CHAT = """
import json
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import CausalTrainConfig, ChatModel

class Example:
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

I = json.loads(INPUTS)
chat = await ChatModel.create(I["path"], lora=LoraConfig(r=4, lora_alpha=8, target_modules=I["targets"],
                                                       use_dora=I.get("use_dora", False)),
                              backend="gpu", seed=1)
history = await chat.fit([Example(*e) for e in I["examples"]],
                         CausalTrainConfig.from_dict(json.loads(RUN_CONFIG)))
pieces = []
reply = await chat.generate(I["prompt"], max_new_tokens=10,
                            on_token=lambda token, piece: pieces.append([token, piece]))
json.dumps({"losses": [h.loss for h in history], "ids": reply.ids, "text": reply.text,
            "pieces": pieces})
""".replace("RUN_CONFIG", repr(json.dumps(compared_run().as_dict())))


@pytest.mark.parametrize("use_dora", [False, True])
def test_chat_model_trains_and_streams_in_the_browser(engine_page, tmp_path, use_dora):
    """LoRA, and DoRA (its fresh magnitudes computed in Pyodide, its norms kept for the
    reply's one-token steps)."""
    path = tiny_chat_dir(tmp_path, family="qwen2", initializer_range=0.2)
    put_files(engine_page, {f"/work/chat/{p.name}": p.read_bytes() for p in path.iterdir()})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=ALL, use_dora=use_dora)
    host = run(ChatModel.create(path, lora=lora, backend="numpy", seed=1))
    examples = random_examples(8, host.checkpoint.config.vocab_size)
    history = run(host.fit(examples, compared_run()))
    prompt = "What is the capital of France?"
    want = run(host.generate(prompt, max_new_tokens=10))

    inputs = {"path": "/work/chat", "targets": ALL, "prompt": prompt, "use_dora": use_dora,
              "examples": [[e.ids, e.labels] for e in examples]}
    got = run_json(engine_page, CHAT.replace("INPUTS", repr(json.dumps(inputs))))
    np.testing.assert_allclose(got["losses"], [h.loss for h in history], rtol=1e-4)
    assert got["ids"] == want.ids
    assert [t for t, _ in got["pieces"]] == got["ids"]
    assert "".join(p for _, p in got["pieces"]) == got["text"] == want.text
