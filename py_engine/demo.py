"""The demo's main job: fine-tune MiniLM with LoRA on the embedded sentiment examples, on the
GPU the runtime has (WebGPU in the page, wgpu-native on a desktop), and report held-out
accuracy and a few predictions. `python build.py demo` runs it inside headless Chromium.
"""

import time

from .data.examples import LABELS, sentiment_examples
from .train.classifier import TextClassifier
from .train.config import TrainConfig

MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors")
SAMPLES = ["what a wonderful evening, truly superb", "the service was awful and the food dull"]


async def fetch_model(base_url, directory):
    """Fetch a checkpoint's files from `base_url` into `directory` (the browser's in-memory
    filesystem), so the ordinary loaders read them."""
    from pathlib import Path

    from pyodide.http import pyfetch

    Path(directory).mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        response = await pyfetch(base_url + name)
        if not response.ok:
            raise FileNotFoundError(f"{base_url}{name}: HTTP {response.status}")
        (Path(directory) / name).write_bytes(await response.bytes())


async def fine_tune(model_dir, backend="gpu", epochs=3, on_step=None, device=None):
    """Train on 64 examples, evaluate on 32 others; returns a JSON-ready report."""
    examples = sentiment_examples(96)
    train, held_out = examples[:64], examples[64:]
    clf = await TextClassifier.create(model_dir, LABELS, backend=backend, pooling="mean",
                                      max_length=32, device=device)
    started = time.perf_counter()
    history = await clf.fit(train, TrainConfig(epochs=epochs, batch_size=16, lr=3e-3), on_step)
    seconds = time.perf_counter() - started
    report = await clf.evaluate(held_out)
    adapter = clf.runtime.device.info.as_dict() if backend == "gpu" else {"backend": "numpy"}
    return {
        "adapter": adapter,
        "steps": len(history),
        "train_seconds": seconds,
        "first_loss": history[0].loss,
        "last_loss": history[-1].loss,
        "held_out_accuracy": report["accuracy"],
        "held_out": len(held_out),
        "predictions": dict(zip(SAMPLES, await clf.predict(SAMPLES))),
    }
