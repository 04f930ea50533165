"""A T5 checkpoint (FLAN-T5's layout) fine-tuned inside the browser (Pyodide + WebGPU) through
Seq2SeqModel on encoded input/target pairs, with LoRA and with every weight, then a greedy reply
from the GPU decoder: every step's loss equals the host's NumPy run (1e-4 relative), the reply
is the host's token for token, and what it trained (the adapter; in full fine-tuning each
weight's change, the relative position bias tables' and the shared embedding's included) is
the host's within 2e-2, the chat models' bound (AdamW turns float32 sign flips of near-zero
gradients into whole steps; measured 1.5e-3). No NumPy in the page."""

import json

import numpy as np
import pytest

from conftest import run
from py_engine.data.seq2seq import Seq2SeqExample, encode_seq2seq_examples
from py_engine.generate.generation import generate
from py_engine.harness import put_files, run_json
from py_engine.models.lora_config import LoraConfig
from py_engine.train.config import CausalTrainConfig
from py_engine.train.seq2seq import Seq2SeqModel
from t5_checkpoints import tiny_t5
from t5_tokenizer import t5_tokenizer
from test_t5_generate import _Ids as Ids
from test_t5_lora_oracle import ALL
from test_t5_training import PAIRS

pytestmark = pytest.mark.browser

SEQ2SEQ = """
import json
from py_engine.models.lora_config import LoraConfig
from py_engine.train.config import CausalTrainConfig
from py_engine.train.seq2seq import Seq2SeqModel
from py_engine.generate.generation import generate

class Ids:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))

class Pair:
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

I = json.loads(INPUTS)
lora = LoraConfig(r=4, lora_alpha=8, target_modules=I["targets"]) if I["mode"] == "lora" else None
model = await Seq2SeqModel.create(I["path"], None, lora=lora, mode=I["mode"], backend="gpu", seed=1)
history = await model.fit([Pair(*e) for e in I["examples"]],
                          CausalTrainConfig(epochs=3, lr=I["lr"], batch_size=2, mode=I["mode"]))
values = await model.runtime.trainable_values()
reply = await generate(model.decoder(max_length=64), Ids(), I["source"], max_new_tokens=12)
json.dumps({"losses": [h.loss for h in history], "ids": reply.ids,
            "adapter": {n: list(v) for n, (s, v) in values.items()}})
"""


@pytest.mark.parametrize("mode, lr", [("lora", 1e-2), ("full", 1e-3)])
def test_t5_trains_in_the_browser_as_on_the_host(engine_page, tmp_path, mode, lr):
    path = tmp_path / "t5"
    tiny_t5(path)
    put_files(engine_page, {f"/work/t5/{p.name}": p.read_bytes() for p in path.iterdir()})
    encoded, _ = encode_seq2seq_examples([Seq2SeqExample(*p) for p in PAIRS], t5_tokenizer())
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=ALL) if mode == "lora" else None
    host = run(Seq2SeqModel.create(path, None, lora=lora, mode=mode, backend="numpy", seed=1))
    before = run(host.runtime.trainable_values())
    history = run(host.fit(encoded, CausalTrainConfig(epochs=3, lr=lr, batch_size=2, mode=mode)))
    want = run(host.runtime.trainable_values())
    source = encoded[0].ids
    reply = run(generate(host.decoder(max_length=64), Ids(), source, max_new_tokens=12))

    inputs = {"path": "/work/t5", "targets": ALL, "source": source, "mode": mode, "lr": lr,
              "examples": [[e.ids, e.labels] for e in encoded]}
    got = run_json(engine_page, SEQ2SEQ.replace("INPUTS", repr(json.dumps(inputs))))
    assert len(got["losses"]) == 6
    np.testing.assert_allclose(got["losses"], [h.loss for h in history], rtol=1e-4)
    assert got["ids"] == reply.ids          # the GPU decoder's greedy reply is the host's
    assert set(got["adapter"]) == set(want)
    for name, (shape, values) in want.items():
        start = np.asarray(before[name][1], np.float64) if mode == "full" else 0.0  # full: the change
        ref = np.asarray(values, np.float64) - start
        assert np.linalg.norm(ref) > 0, name
        assert np.linalg.norm(np.asarray(got["adapter"][name]) - start - ref) <= 2e-2 * np.linalg.norm(ref), name
