"""A decoder as a sequence classifier (models/decoder_classifier.py) held to transformers'
*ForSequenceClassification + PEFT (SEQ_CLS): one step's loss and every gradient in float64
(GPT-2 to 1e-12 and 1e-10; the Llama family to 1e-6 and 1e-5, transformers computing its norms
and rotary tables in float32), for a Qwen2 (tied head), a Llama (its own lm_head, not read) and GPT-2 (Conv1D layers), with
LoRA on a few linears, on all of them, and with bias "all"; PEFT's adapter predicted on both
backends, trained here and read back by PEFT; the GPU step against NumPy; mean pooling against
its definition; relabelling; the merged export read by transformers; and what is refused by
name."""

import json

import numpy as np
import pytest
import torch

import peft_oracle as po
from conftest import run
from service_calls import call, error
from tiny_chat import tiny_chat_dir
from py_engine.data.classification import Example
from py_engine.export.merged import load_merged, save_merged
from py_engine.train.batch import Batch
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig

LABELS = ["neg", "neutral", "pos"]
TEXTS = ["the film was great", "an awful plot and a worse ending", "it is a film", "really"]
TARGETS = {"qwen2": ("q_proj", "v_proj"), "llama": ("q_proj", "v_proj"), "gpt2": ("c_attn",)}
ALL = {"qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
       "gpt2": ("c_attn", "c_proj", "c_fc")}


def model_dir(tmp_path, family):
    if family == "gpt2":
        from gpt2_checkpoints import tiny_dialogpt_dir

        return tiny_dialogpt_dir(tmp_path / "gpt2")
    return tiny_chat_dir(tmp_path, family=family)


def batch(directory, rng, B=4, T=9):
    """Ids past the specials, right-padded with the pad id (rows after the first shorter)."""
    config = json.loads((directory / "config.json").read_text())
    pad = config.get("pad_token_id")
    pad = config["eos_token_id"] if pad is None else pad
    ids = rng.integers(3, config["vocab_size"] - 4, (B, T))
    ids[ids == pad] = 3
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, rng.integers(2, T):] = 0
    ids[mask == 0] = pad
    return ids, mask, rng.integers(0, len(LABELS), B)


def peft_classifier(directory, path, targets, seed=3, **lora):
    peft = po.peft_model(directory, len(LABELS), target_modules=targets, seed=seed, **lora)
    if peft.config.pad_token_id is None:        # GPT-2: transformers needs one to batch
        peft.config.pad_token_id = peft.config.eos_token_id
    return po.save_adapter(peft, path, labels=LABELS), peft


def engine(directory, adapter):
    from test_bert_gpu import runtimes

    return runtimes(None, directory, adapter, len(LABELS), gpu=False, last_token=True)


@pytest.mark.parametrize("family, targets, bias", [
    ("qwen2", TARGETS["qwen2"], "none"),
    ("qwen2", ALL["qwen2"], "all"),
    ("llama", TARGETS["llama"], "lora_only"),
    ("gpt2", TARGETS["gpt2"], "none"),
    ("gpt2", ALL["gpt2"], "all"),
    # a LoRA on the embedding (models/lora_tables.py): the tied Qwen2's, GPT-2's wte
    ("qwen2", TARGETS["qwen2"] + ("embed_tokens",), "none"),
    ("gpt2", ("wte", "c_fc"), "none"),
])
def test_one_step_matches_peft(tmp_path, family, targets, bias):
    directory = model_dir(tmp_path, family)
    adapter, peft = peft_classifier(directory, tmp_path / "adapter", targets, bias=bias)
    ids, mask, labels = batch(directory, np.random.default_rng())
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    runtime = engine(directory, adapter)
    ours = run(runtime.accumulate(Batch(ids.tolist(), np.zeros_like(ids).tolist(), mask.tolist(),
                                        labels.tolist())))
    # transformers keeps the Llama family's RMSNorm and rotary tables in float32 even in a
    # float64 model (tests/test_llama_lora_oracle.py): near float32 precision there
    loss_bound, grad_bound = (1e-12, 1e-10) if family == "gpt2" else (1e-6, 1e-5)
    assert abs(ours["loss"] - loss) <= loss_bound * abs(loss)
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    got = run(runtime.gradients())
    assert set(got) == set(want) and "score.weight" in want
    po.check_gradients(got, want, grad_bound)


def test_a_peft_adapter_round_trips_and_the_gpu_steps_as_numpy(tmp_path, device):
    from test_bert_gpu import check_gradients, runtimes
    from transformers import AutoTokenizer

    directory = model_dir(tmp_path, "qwen2")
    adapter, _ = peft_classifier(directory, tmp_path / "adapter", ALL["qwen2"], seed=5)
    enc = AutoTokenizer.from_pretrained(str(directory))(TEXTS, padding=True, return_tensors="np")
    theirs = po.probabilities(directory, adapter, enc["input_ids"], enc["attention_mask"])
    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.load(directory, adapter, backend=backend, device=device))
        assert clf.model.pooling == "last"
        ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
        assert np.abs(ours - theirs).max() <= 1e-5, backend
    run(clf.runtime.merge())
    merged = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    assert clf.model.merged and np.abs(merged - theirs).max() <= 1e-5

    reference, gpu = runtimes(device, directory, adapter, len(LABELS), last_token=True)
    ids, mask, labels = batch(directory, np.random.default_rng())
    step = Batch(ids.tolist(), np.zeros_like(ids).tolist(), mask.tolist(), labels.tolist())
    want, got = run(reference.accumulate(step)), run(gpu.accumulate(step))
    assert abs(got["loss"] - want["loss"]) <= 1e-5 * abs(want["loss"])
    check_gradients(run(gpu.gradients()), run(reference.gradients()))

    # trained here, read by PEFT as trained
    clf = run(TextClassifier.load(directory, adapter, backend="numpy"))
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 3)]
    run(clf.fit(examples, ClassifierTrainConfig(epochs=2, batch_size=4, lr=1e-2, seed=1)))
    saved = run(clf.save(tmp_path / "trained"))
    trained = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    assert np.abs(trained - theirs).max() > 1e-3
    assert json.loads((saved / "head_config.json").read_text()) == {"pooling": "last"}
    assert json.loads((saved / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert np.abs(po.probabilities(directory, saved, enc["input_ids"], enc["attention_mask"])
                  - trained).max() <= 1e-5


def test_mean_pooling_is_the_mean_of_the_real_tokens_final_states(tmp_path):
    """Our own option (a sentence encoder's pooling): the score of the mean of the final hidden
    states over each text's real tokens, as transformers' base model gives them."""
    from transformers import AutoModel, AutoTokenizer

    directory = model_dir(tmp_path, "llama")
    clf = run(TextClassifier.create(directory, LABELS, pooling="mean", seed=2))
    values = run(clf.runtime.trainable_values())
    score = np.asarray(values["score.weight"][1], np.float64).reshape(values["score.weight"][0])
    enc = AutoTokenizer.from_pretrained(str(directory))(TEXTS, padding=True, return_tensors="pt")
    base = AutoModel.from_pretrained(directory, attn_implementation="eager").double().eval()
    with torch.no_grad():
        hidden = base(**enc).last_hidden_state.numpy()
    mask = enc["attention_mask"].numpy()[:, :, None]
    logits = ((hidden * mask).sum(1) / mask.sum(1)) @ score.T
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    assert np.abs(ours - want).max() <= 1e-5


def test_relabel_and_what_is_refused(tmp_path):
    from py_engine.export.merged import MergedModel, save_merged
    from py_engine.models.lora_config import LoraConfig

    directory = model_dir(tmp_path, "qwen2")
    with pytest.raises(ValueError, match="first token"):
        run(TextClassifier.create(directory, LABELS, pooling="cls"))
    with pytest.raises(ValueError, match="trains only its head"):
        run(TextClassifier.create(directory, LABELS, lora=LoraConfig(
            target_modules=["q_proj"], modules_to_save=["score", "embed_tokens"])))
    clf = run(TextClassifier.create(directory, LABELS, seed=4))
    before = {p["neg"] for p in run(clf.predict(TEXTS))}
    run(clf.relabel(["neg", "pos", "neutral", "mixed"], {}))
    after = run(clf.predict(TEXTS))
    assert {p["neg"] for p in after} != before and set(after[0]) == {"neg", "pos", "neutral", "mixed"}
    mean = run(TextClassifier.create(directory, LABELS, pooling="mean"))
    with pytest.raises(ValueError, match="last token.*--format onnx"):
        save_merged(run(MergedModel.of(mean)), tmp_path / "merged")


@pytest.mark.parametrize("family, extra", [("qwen2", ()), ("gpt2", ()), ("qwen2", ("embed_tokens",))])
def test_the_merged_classifier_is_transformers(tmp_path, family, extra):
    """load_merged reads a decoder's SEQ_CLS adapter as a classifier; the merged folder is
    transformers' *ForSequenceClassification (GPT-2's Conv1D weights laid out as it stores
    them, a padding id where config.json had none) and gives our probabilities, padded."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = model_dir(tmp_path, family)
    adapter, _ = peft_classifier(directory, tmp_path / "adapter", ALL[family] + extra, seed=6)
    clf = run(TextClassifier.load(directory, adapter, backend="numpy"))
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    merged = save_merged(load_merged(directory, adapter), tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == [{"qwen2": "Qwen2ForSequenceClassification",
                                        "gpt2": "GPT2ForSequenceClassification"}[family]]
    assert config["pad_token_id"] == clf.tokenizer.pad_id
    hf = AutoModelForSequenceClassification.from_pretrained(merged).double().eval()
    tok = AutoTokenizer.from_pretrained(str(merged))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.softmax(hf(**enc).logits, -1).numpy()
    assert np.abs(theirs - ours).max() <= 1e-5


def test_the_export_command_merges_a_decoder_classifier(tmp_path, capsys):
    """`py-engine export --format merged` takes the decoder and its SEQ_CLS adapter (--format
    onnx too: tests/test_onnx_decoder_classifier.py); GGUF is refused in one line, nothing
    written."""
    from py_engine.cli import main

    directory = model_dir(tmp_path, "qwen2")
    adapter, _ = peft_classifier(directory, tmp_path / "adapter", TARGETS["qwen2"], seed=7)
    assert main(["export", "--model", str(directory), "--adapter", str(adapter), "--format",
                 "merged", "--out", str(tmp_path / "merged")]) == 0
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]
    capsys.readouterr()
    for fmt in ("gguf",):
        assert main(["export", "--model", str(directory), "--adapter", str(adapter), "--format",
                     fmt, "--out", str(tmp_path / fmt)]) == 2
        assert "--format merged exports it" in capsys.readouterr().err
        assert not (tmp_path / fmt).exists()


def test_the_service_loads_a_decoder_as_a_classifier_and_learns_a_correction(tmp_path):
    from test_adapter_import import files_of, service

    directory = model_dir(tmp_path, "qwen2")
    svc = service(tmp_path)
    summary = call(svc, "load_model", files=files_of(directory), kind="classification",
                   labels=["news", "code"])
    assert summary["kind"] == "classification" and summary["family"] == "qwen2"
    assert summary["pooling"] == "last"
    text = "an awful plot and a worse ending"
    for _ in range(3):
        call(svc, "correct", text=text, label="code")
        call(svc, "force_slice", budget_ms=60_000)
        if call(svc, "predict", text=text)["label"] == "code":
            break
    assert call(svc, "predict", text=text)["label"] == "code"
    assert "pools with" in error(svc, "load_model", files=files_of(directory), kind="classification",
                              labels=["news", "code"], pooling="cls")["message"]
    svc.close()


def test_the_command_line_trains_predicts_and_evaluates_a_decoder_classifier(tmp_path, capsys):
    """`py-engine train --task classification` on a decoder, then predict and eval with its
    SEQ_CLS adapter; options of the other task or pooling refused in one line before any
    work."""
    from py_engine.cli import main

    directory = model_dir(tmp_path, "qwen2")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": LABELS[i % 3]}) + "\n"
                            for i, t in enumerate(TEXTS * 3)), encoding="utf-8")
    adapter = tmp_path / "adapter"
    assert main(["train", "--model", str(directory), "--task", "classification", "--data",
                 str(data), "--out", str(adapter), "--epochs", "1"]) == 0
    assert json.loads((adapter / "head_config.json").read_text()) == {"pooling": "last"}
    clf = run(TextClassifier.load(directory, adapter))
    capsys.readouterr()
    assert main(["predict", "--model", str(directory), "--adapter", str(adapter), "--data",
                 str(data)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = run(clf.predict([e["text"] for e in map(json.loads, data.read_text().splitlines())]))
    assert len(lines) == len(want)
    for line, probs in zip(lines, want):
        assert max(abs(line["probs"][k] - probs[k]) for k in LABELS) < 1e-9
    assert main(["eval", "--model", str(directory), "--adapter", str(adapter), "--data",
                 str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == len(TEXTS) * 3
    for argv, words in ((["--pooling", "cls"], "first token has seen nothing else"),
                        (["--mode", "full"], "only for chat models; this trains a classifier"),
                        (["--task", "chat", "--pooling", "last"], "only for classifiers")):
        assert main(["train", "--model", str(directory), "--task", "classification", "--data",
                     str(data), "--out", str(tmp_path / "other"), *argv]) == 2
        assert words in capsys.readouterr().err
        assert not (tmp_path / "other").exists()
