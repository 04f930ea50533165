"""The trainer inside the browser (Pyodide + WebGPU in Chromium): slices of random sizes train
what one run trains, a NaN poisoned slice rolls back to the snapshot before it, and a training
state saved to IndexedDB survives a page reload: continuing after it equals never stopping."""

import json

import numpy as np
import pytest

from py_engine.harness import put_files, run_json, wait_for_engine
from test_trainer import ALL, SUBSET, sequences
from tiny_chat import tiny_chat_dir

pytestmark = pytest.mark.browser

SETUP = """
import json, random
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.config import CausalTrainConfig, GuardConfig

class Tokens:
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

I = json.loads(INPUTS)
train = [Tokens(*e) for e in I["train"]]
held = [Tokens(*e) for e in I["held"]]
config = CausalTrainConfig(epochs=3, lr=1e-2, batch_size=8, seed=5)
lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=I["targets"])

async def chat():
    return await ChatModel.create("/work/chat", lora=lora, backend="gpu", seed=2)

async def weights(model):
    return {n: list(v) for n, (_, v) in (await model.runtime.trainable_values()).items()}
"""

SLICES = SETUP + """
whole = await chat()
await whole.fit(train, config)
want = await weights(whole)

sliced = await chat()
trainer = await sliced.trainer(train, config)
rng, sizes = random.Random(), []
while not trainer.done:
    sizes.append((await trainer.run(max_steps=rng.randint(0, 3))).steps)

guarded = await chat()
trainer = await guarded.trainer(train, config, validation=held, guard=GuardConfig())
events = []
trainer.subscribe(lambda e: events.append(e["event"]))
await trainer.run(max_steps=2)
before = (await trainer.quality())["loss"]
table = guarded.runtime.be.params["model.embed_tokens.weight"]
row = 4 * I["nan_token"] * table.shape[1]
saved = bytes(await guarded.runtime.device.read(table.buffer, row, 4 * table.shape[1]))
table.buffer.write(bytes.fromhex("0000c07f") * table.shape[1], offset=row)    # NaN
poisoned = await trainer.run(max_steps=2)
table.buffer.write(saved, offset=row)
after = (await trainer.quality())["loss"]
json.dumps({"want": want, "got": await weights(sliced), "sizes": sizes,
            "rollbacks": [r["reason"] for r in poisoned.rollbacks], "before": before,
            "after": after, "events": events})
"""

SAVE = SETUP + """
from py_engine.train.state import IndexedDBStateStore

model = await chat()
trainer = await model.trainer(train, config, validation=held)
await trainer.run(max_steps=I["first"])
await model.save_state(trainer, IndexedDBStateStore("reload-test"))
json.dumps({"step": trainer.progress.step})
"""

RESUME = SETUP + """
from py_engine.train.state import IndexedDBStateStore

model, trainer = await ChatModel.resume("/work/chat", IndexedDBStateStore("reload-test"), train,
                                        validation=held, backend="gpu")
step = trainer.progress.step
await trainer.fit()
whole = await chat()
await whole.fit(train, config)
json.dumps({"step": step, "got": await weights(model), "want": await weights(whole)})
"""


def inputs(path):
    train, held = sequences(24, 1), sequences(8, 2)
    return json.dumps({"targets": ALL, "nan_token": SUBSET[0],
                       "train": [[e.ids, e.labels] for e in train],
                       "held": [[e.ids, e.labels] for e in held], "first": 4})


def close(got, want, bound=1e-6):
    assert set(got) == set(want)
    for name, value in want.items():
        value, mine = np.asarray(value, np.float64), np.asarray(got[name], np.float64)
        assert np.linalg.norm(mine - value) <= bound * np.linalg.norm(value), name


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    path = tiny_chat_dir(tmp_path_factory.mktemp("chat"), family="qwen2", initializer_range=0.5)
    return path, {f"/work/chat/{p.name}": p.read_bytes() for p in path.iterdir()}


def test_slices_and_rollback_in_the_browser(engine_page, chat_files):
    path, files = chat_files
    put_files(engine_page, files)
    got = run_json(engine_page, SLICES.replace("INPUTS", repr(inputs(path))))
    assert sum(got["sizes"]) == 9 and len(got["sizes"]) > 1
    close(got["got"], got["want"])
    assert len(got["rollbacks"]) == 1 and "not finite" in got["rollbacks"][0]
    assert abs(got["after"] - got["before"]) <= 1e-6 * got["before"]
    assert got["events"].count("rollback") == 1 and "snapshot" in got["events"]


def test_state_in_indexeddb_survives_a_reload(engine_page, chat_files):
    path, files = chat_files
    put_files(engine_page, files)
    code = inputs(path)
    assert run_json(engine_page, SAVE.replace("INPUTS", repr(code)))["step"] == 4
    engine_page.reload()
    wait_for_engine(engine_page)
    put_files(engine_page, files)
    got = run_json(engine_page, RESUME.replace("INPUTS", repr(code)))
    assert got["step"] == 4
    close(got["got"], got["want"])
