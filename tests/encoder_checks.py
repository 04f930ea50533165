"""Checks every classifier family shares (BERT's, RoBERTa's kind, DistilBERT, ELECTRA, MPNet):
the GPU step against NumPy with the model's dropout on, the merged and ONNX exports against
transformers and onnxruntime, through the checkpoint's own tokenizer, and a fine-tuned
classifier checkpoint read as its encoder."""

import json

import numpy as np
import torch

import peft_oracle as po
from conftest import run
from py_engine.export.merged import load_merged, save_merged
from py_engine.train.batch import Batch
from py_engine.train.classifier import TextClassifier
from test_bert_gpu import check_gradients, runtimes


def peft_adapter(model_dir, path, targets=("query", "value"), seed=3, dtype=torch.float32, **lora):
    """PEFT's SEQ_CLS adapter of 3 labels on the checkpoint (peft_oracle.peft_model, `lora` its
    other LoraConfig options), saved to `path` with test_adapter_roundtrip's LABELS; and the
    PEFT model."""
    from test_adapter_roundtrip import LABELS

    peft = po.peft_model(model_dir, 3, target_modules=targets, seed=seed, dtype=dtype, **lora)
    return po.save_adapter(peft, path, labels=LABELS), peft


def encoded(tokenizer_dir, texts):
    """(input_ids, attention_mask) of `texts`, padded, by transformers' tokenizer of the folder."""
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(str(tokenizer_dir))(texts, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def check_gpu_step(device, model_dir, adapter, ids, types, mask, labels):
    """With dropout on (the masks drawn from one seed on both), the GPU's loss and gradients
    are NumPy's."""
    reference, gpu = runtimes(device, model_dir, adapter, 3, dropout=0.1)
    batch = Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())
    want = run(reference.accumulate(batch, seed=9))
    got = run(gpu.accumulate(batch, seed=9))
    assert abs(got["loss"] - want["loss"]) <= 1e-5 * abs(want["loss"])
    check_gradients(run(gpu.gradients()), run(reference.gradients()))


def check_exports(model_dir, adapter, out, architecture, texts, labels):
    """The merged classifier is transformers' `architecture` and gives our probabilities of
    `texts`; so does the ONNX graph in onnxruntime (fed token types where the family has
    them)."""
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification

    from py_engine.export.onnx_export import save_onnx

    clf = run(TextClassifier.load(model_dir, adapter, backend="numpy"))
    ours = np.array([[p[label] for label in labels] for p in run(clf.predict(texts))])
    merged = save_merged(load_merged(model_dir, adapter), out / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == [architecture]
    assert config["model_type"] == json.loads((model_dir / "config.json").read_text())["model_type"]
    ids, mask = encoded(merged, texts)
    hf = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    with torch.no_grad():
        logits = hf(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits
    assert np.abs(torch.softmax(logits, -1).numpy() - ours).max() <= 1e-5

    onnx_dir = save_onnx(load_merged(model_dir, adapter), out / "onnx")
    assert json.loads((onnx_dir / "config.json").read_text()) == config   # the merged export's
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    names = [i.name for i in session.get_inputs()]
    assert names[:2] == ["input_ids", "attention_mask"]
    theirs = session.run(["probabilities"], {name: feeds[name] for name in names})[0]
    assert np.abs(theirs - ours).max() <= 1e-5
    # padded on the left, the graph numbers positions as transformers does (RoBERTa's kind and
    # MPNet count the tokens that are not padding)
    pad = int(ids[mask == 0][0])
    left_ids, left_mask = np.full_like(ids, pad), np.zeros_like(mask)
    for row, n in enumerate(mask.sum(1)):
        left_ids[row, ids.shape[1] - n:], left_mask[row, ids.shape[1] - n:] = ids[row, :n], 1
    with torch.no_grad():
        want = torch.softmax(hf(input_ids=torch.as_tensor(left_ids),
                                attention_mask=torch.as_tensor(left_mask)).logits, -1).numpy()
    feeds = {"input_ids": left_ids, "attention_mask": left_mask, "token_type_ids": np.zeros_like(ids)}
    got = session.run(["probabilities"], {name: feeds[name] for name in names})[0]
    assert np.abs(got - want).max() <= 1e-5
    return names


def check_classifier_checkpoint(model_dir, architecture, out):
    """transformers' `architecture` saved from the bare checkpoint at `model_dir` (its encoder
    under the family's prefix, a head beside it) reads as the same tensors (but the pooler,
    which MPNet's sequence classifier leaves out)."""
    import transformers

    from py_engine.models.checkpoint import Checkpoint

    getattr(transformers, architecture).from_pretrained(model_dir, num_labels=3).save_pretrained(out)
    bare, fine_tuned = Checkpoint.load(model_dir), Checkpoint.load(out)
    pooler = bare.config.pooler_module + "."
    assert fine_tuned.names() == [n for n in bare.names() if not n.startswith(pooler)]
    for name in fine_tuned.names():
        assert np.array_equal(np.asarray(fine_tuned.floats(name)), np.asarray(bare.floats(name))), name


def check_peft_step(model_dir, adapter, peft, ids, types, mask, labels, token_type_ids=None,
                    head=("classifier.dense.weight", "classifier.out_proj.weight"),
                    bounds=(1e-12, 1e-10)):
    """In float64, one step's loss and every gradient (`bounds`: 1e-12 and 1e-10) of PEFT's
    model `peft` (saved as `adapter`) here, the `head` trained whole among them; PEFT's
    gradients by name."""
    from test_bert_oracle import engine_from_peft

    loss, grads, _ = po.step_gradients(peft, ids, mask, labels, token_type_ids=token_type_ids)
    engine = engine_from_peft(model_dir, adapter, 3)
    ours = run(engine.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))
    assert abs(ours["loss"] - loss) <= bounds[0] * abs(loss)
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    got = run(engine.gradients())
    assert set(got) == set(want) and set(head) <= set(want)
    po.check_gradients(got, want, bounds[1])
    return want
