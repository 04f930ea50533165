"""The whole training state as a set of files, and where they are kept.

A state is what continuing needs: the trainable weights (as the model's usual files: a PEFT
adapter, or a checkpoint's model.safetensors in full fine-tuning), the optimizer's moments and
step count (optimizer.safetensors), and training_state.json: the config, where the loop stands
(epoch, step, the batch group within the epoch), the guard's memory, the recent history and
events, and a fingerprint of the training data, so that resuming on other data is refused
rather than silently wrong. Everything random in training is a function of the config's seed
and the position, so this is enough for a resumed run to equal one that never stopped.

    files = await capture(trainer, weight_files)       # {file name: bytes}
    await DirectoryStore(path).save(files)              # host: a directory, written atomically
    await IndexedDBStateStore("my-run").save(files)          # browser: one IndexedDB transaction
    files = await store.load()
    state = parse(files)                                # config, trainer state, optimizer state

Pure Python (hashlib, json, struct): this runs in the browser.
"""

import hashlib
import json

from ..formats import safetensors
from ..formats.finite import require_finite
from ..formats.peft_adapter import ADAPTER_FILES
from .base_init import base_init

STATE_FILE = "training_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
SNAPSHOTS_FILE = "snapshots.safetensors"
FORMAT = 1


class StateError(ValueError):
    """A training state that cannot be used; the message says which file and why."""


def data_fingerprint(examples):
    """sha256 over the encoded examples (ids and labels), in order."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([list(e.ids), getattr(e, "labels", None), getattr(e, "label", None),
                             list(getattr(e, "type_ids", None) or [])]).encode())
    return h.hexdigest()


async def capture(trainer, weight_files, extra=None):
    """{file name: bytes} of the trainer's whole state; `weight_files` are the trainable
    weights as the model saves them (their own file names), `extra` JSON-ready settings the
    model needs to be rebuilt (e.g. labels, pooling, the mode). Only between optimizer steps:
    gradients accumulated by a step under way are not part of a state."""
    if trainer.mid_step:
        raise StateError("a training step is under way (its micro-batches ran, its update has "
                         "not): finish it first (await trainer.finish_step()), then save")
    optimizer = await trainer.runtime.optimizer_state()
    tensors = {}
    for key in ("m", "v"):
        for name, data in optimizer[key].items():
            tensors[f"{key}.{name}"] = ("F32", tuple(trainer.runtime.model.trainable[name]), data)
    require_finite(tensors, "the optimizer state")
    config = trainer.config
    state = {
        "format": FORMAT,
        "task": trainer.task.name,
        "config": {"class": type(config).__name__, "values": config.as_dict()},
        "guard": None if trainer.guard is None else trainer.guard.config.as_dict(),
        "trainer": trainer.state(),
        "optimizer_step": optimizer["step"],
        "data": {"examples": len(trainer.examples), "fingerprint": data_fingerprint(trainer.examples),
                 "validation": len(trainer.validation),
                 "validation_fingerprint": data_fingerprint(trainer.validation)},
        "model": extra or {},
    }
    files = dict(weight_files)
    files[OPTIMIZER_FILE] = safetensors.save_bytes(tensors, {"format": "py_engine-adamw"})
    files[STATE_FILE] = (json.dumps(state, indent=1, sort_keys=True) + "\n").encode()
    return files


async def capture_snapshots(guard):
    """The bytes of SNAPSHOTS_FILE: every snapshot of the guard's ring read back from the
    device (weights and moments, f32) with its listing."""
    tensors, listings = {}, []
    for s in guard.ring.snapshots:
        values = await guard.trainer.runtime.snapshot_values(s.handle)
        listings.append(dict(s.as_dict(), optimizer_step=values["step"]))
        for name, (shape, *arrays) in values["tensors"].items():
            for kind, data in zip(("w", "m", "v"), arrays):
                tensors[f"{s.index}.{kind}.{name}"] = ("F32", tuple(shape), data)
    require_finite(tensors, "the snapshots")
    return safetensors.save_bytes(tensors, {"format": "py_engine-snapshots",
                                            "snapshots": json.dumps(listings)})


async def restore_snapshots(guard, data):
    """Put SNAPSHOTS_FILE's snapshots back into the guard's ring (on the device)."""
    try:
        file = safetensors.load(bytes(data))
        listings = json.loads((file.metadata or {}).get("snapshots", "[]"))
    except (safetensors.SafeTensorsError, json.JSONDecodeError, AttributeError) as e:
        raise StateError(f"{SNAPSHOTS_FILE}: {e}") from None
    runtime = guard.trainer.runtime
    guard.ring.clear()
    for listing in listings:
        tensors = {}
        for name, shape in runtime.model.trainable.items():
            keys = [f"{listing['index']}.{kind}.{name}" for kind in ("w", "m", "v")]
            if any(k not in file.keys() for k in keys):
                raise StateError(f"{SNAPSHOTS_FILE}: snapshot {listing['index']} has no {name}")
            tensors[name] = (shape,) + tuple(file.floats(k) for k in keys)
        handle = await runtime.snapshot_from({"step": listing.pop("optimizer_step"),
                                              "tensors": tensors})
        guard.ring.add(listing, handle)


def parse(files):
    """(state dict, optimizer state {"step", "m", "v"}) from capture()'s files."""
    for name in (STATE_FILE, OPTIMIZER_FILE):
        if name not in files:
            raise StateError(f"the training state has no {name}")
    try:
        state = json.loads(bytes(files[STATE_FILE]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(f"{STATE_FILE} is not valid JSON: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StateError(f"{STATE_FILE} is not a py_engine training state (format {FORMAT})")
    try:
        file = safetensors.load(bytes(files[OPTIMIZER_FILE]))
    except safetensors.SafeTensorsError as e:
        raise StateError(f"{OPTIMIZER_FILE}: {e}") from None
    optimizer = {"step": state.get("optimizer_step"), "m": {}, "v": {}}
    for key in file.keys():
        kind, _, name = key.partition(".")
        if kind not in ("m", "v") or not name:
            raise StateError(f"{OPTIMIZER_FILE}: unexpected tensor {key!r}")
        optimizer[kind][name] = file.floats(key)
    return state, optimizer


def check_data(state, examples, validation):
    """Refuse to resume on data other than the state was trained on."""
    data = state["data"]
    if data["examples"] != len(examples) or data["fingerprint"] != data_fingerprint(examples):
        raise StateError(f"the training data differ from the data this state was trained on "
                         f"({len(examples)} examples now, {data['examples']} then); resume with "
                         "the same examples")
    if data["validation"] != len(validation or []) or \
            data["validation_fingerprint"] != data_fingerprint(validation or []):
        raise StateError("the validation examples differ from those this state was checked on")


async def restore(trainer, state, optimizer):
    """Put a parsed state's optimizer state and position into `trainer` (whose runtime already
    holds the state's weights), after checking it trains on the same data."""
    check_data(state, trainer.examples, trainer.validation)
    await trainer.runtime.load_optimizer_state(optimizer)
    trainer.load_state(state["trainer"])


async def open_state(store, config_class):
    """(files, state, optimizer state, training config) of a saved state, the config checked
    to be a `config_class`."""
    files = await as_store(store).load()
    state, optimizer = parse(files)
    return files, state, optimizer, config_of(state, config_class)


async def resume_training(model, state, optimizer, config, examples, validation, weights=None,
                          **trainer_options):
    """(model, trainer): `model`'s trainer (TextClassifier / ChatModel) put back where the
    state left it; `weights` ({name: (shape, floats)}) are loaded into it first, when the model
    does not hold the state's weights already."""
    trainer = await model.trainer(examples, config, validation, guard=guard_of(state),
                                  **trainer_options)
    if weights is not None:
        await model.runtime.load_trainable(weights)
    await restore(trainer, state, optimizer)
    return model, trainer


def adapter_differences(model, saved_config):
    """The LoRA options (adapter_config.json's names) in which an adapter's `saved_config`
    differs from `model`'s: [] when it was made with the same."""
    ours = model.lora.to_peft_dict()
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "task_type")
    patterns = ("rank_pattern", "alpha_pattern")      # {} when a state's file predates them
    differ = [k for k in keys if saved_config.get(k) != ours.get(k)]
    differ += [k for k in ("use_dora", "lora_bias") if bool(saved_config.get(k)) != ours[k]]
    differ += ["bias"] if saved_config.get("bias", "none") != ours["bias"] else []
    differ += [k for k in patterns if (saved_config.get(k) or {}) != ours[k]]
    # PiSSA's, OLoRA's residual base weights are another model's than a plain LoRA's
    differ += ["init_lora_weights"] if base_init(saved_config) != base_init(model.lora) else []
    # the same number of trained rows of other tokens would load into the wrong rows
    differ += ["trainable_token_indices"] if saved_config.get("trainable_token_indices") != \
        ours["trainable_token_indices"] else []
    return differ


def config_of(state, config_class):
    """The training config a state was made with, as `config_class` (checked on the way)."""
    saved = state.get("config") or {}
    if saved.get("class") != config_class.__name__:
        raise StateError(f"this state was trained with a {saved.get('class')}, not a "
                         f"{config_class.__name__}")
    return config_class.from_dict(saved.get("values") or {})


def guard_of(state):
    from .config import GuardConfig

    return None if state.get("guard") is None else GuardConfig(**state["guard"])


def as_store(target, protected=()):
    """A store: one given (IndexedDBStateStore, DirectoryStore, anything with save/load), or a
    host directory path (which must not be or hold `protected` paths, see
    formats.output_dir.check_output_dir)."""
    if hasattr(target, "save") and hasattr(target, "load"):
        return target
    return DirectoryStore(target, protected)


class DirectoryStore:
    """A training state in a host directory, replaced atomically: the files are written into a
    new directory beside it, which is then swapped in by renames."""

    def __init__(self, path, protected=()):
        from pathlib import Path

        self.path = Path(path)
        self.protected = protected

    async def save(self, files):
        from ..formats.output_dir import write_files

        return write_files(self.path, files, self.protected, kind="a training state")

    async def delete(self):
        """Remove the state, if py_engine wrote it as one (formats.output_dir.remove_output_dir)."""
        from ..formats.output_dir import remove_output_dir

        remove_output_dir(self.path, "a training state")

    async def load(self):
        if not self.path.is_dir():
            raise StateError(f"no training state at {self.path}")
        from ..formats.output_dir import MARKER

        # the marker is the directory's (who wrote it), not a file of the state
        files = {p.name: p.read_bytes() for p in self.path.iterdir()
                 if p.is_file() and p.name != MARKER}
        # an adapter alone is a state too (a model saved before it trained), as in IndexedDB;
        # parse() still wants STATE_FILE of a state to resume training from
        if STATE_FILE not in files and ADAPTER_FILES[0] not in files:
            raise StateError(f"{self.path} holds no {STATE_FILE}: not a training state")
        return files


def directory_state_keys(root):
    """The keys of the training states a DirectoryStore keeps under `root` (the directories
    py_engine wrote there as training states)."""
    from pathlib import Path

    from ..formats.output_dir import MARKER

    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MARKER).is_file())


async def indexeddb_state_keys(prefix):
    """The keys of the training states in the browser's IndexedDB under `prefix`, without it."""
    from py_engine_state_store import listKeys

    keys = (await listKeys()).to_py()
    return sorted(k[len(prefix):] for k in keys if isinstance(k, str) and k.startswith(prefix))


class IndexedDBStateStore:
    """A training state in the browser's IndexedDB (database "py_engine", store "states"),
    under `key`; a save is one transaction, so a reload mid-save keeps the previous state."""

    PREFIX = "app/"         # the app's states (EngineService), under "app/<model key>"

    def __init__(self, key):
        self.key = key

    async def save(self, files):
        from pyodide.ffi import to_js

        from py_engine_state_store import putFiles

        await putFiles(self.key, to_js({name: to_js(bytes(data)) for name, data in files.items()},
                                       dict_converter=_js_object))
        return self.key

    async def delete(self):
        from py_engine_state_store import deleteFiles

        await deleteFiles(self.key)

    async def load(self):
        from pyodide.ffi import jsnull

        from py_engine_state_store import getFiles

        found = await getFiles(self.key)
        if found is None or found is jsnull:     # JS null (a missing key) is not None
            lost = lost_by_the_browser()
            raise StateError(f"no training state {self.key!r} in IndexedDB" + (
                f": the browser found its databases corrupt, deleted them and started them "
                f"empty ({lost})" if lost else ""))
        return {name: bytes(value.to_py()) for name, value in found.to_py(depth=1).items()}


def lost_by_the_browser():
    """Chromium's message when it found this origin's IndexedDB corrupt, deleted it and
    started it empty (web/src/storage_loss.mjs), else None."""
    from py_engine_state_store import lost

    return lost()


def _js_object(entries):
    from js import Object

    return Object.fromEntries(entries)
