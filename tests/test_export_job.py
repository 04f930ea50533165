"""`py-engine export-job`: the job folder runs under `accelerate launch` on the CPU (one
process, and two over gloo), trains what py_engine trains (each step's loss and gradient norm
equal py_engine's for the same data and seed: chat models, classifiers, T5), and writes a PEFT
adapter that loads back into py_engine (logits as PEFT's) and trains on there. The folder's
masking of assistant turns equals py_engine's for every chat template py_engine renders, its
T5 pairs and batches are py_engine's; every bad path and option is refused in one line before
anything is written."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

import export_models as em
import peft_oracle as po
from conftest import run
from test_chat_template import CONVERSATIONS, TEMPLATES, _ours, _reference
from test_cli_chat import ROWS
from test_cli_classifier import write_jsonl
from test_output_dir import snapshot
from gpt2_checkpoints import tiny_dialogpt_dir
from t5_checkpoints import tiny_t5
from t5_tokenizer import t5_dir
from test_cli_t5 import PAIRS
from test_t5_reference import relative
from tiny_chat import tiny_chat_dir
from py_engine.cli import main
from py_engine.data.chat import encode_chat_examples, read_chat_jsonl
from py_engine.data.classification import label_names, read_jsonl
from py_engine.data.seq2seq import encode_seq2seq_examples, read_seq2seq_jsonl
from py_engine.models.lora_config import LoraConfig
from py_engine.tokenizers.chat_template import DEFAULT_END_TOKENS
from py_engine.train.chat import CausalTrainConfig, ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig
from py_engine.train.seq2seq import Seq2SeqModel
from py_engine.train.tasks import Seq2SeqTask

ACCELERATE = [str(Path(sys.executable).parent / "accelerate"), "launch"]
CHATS = ROWS + [
    {"messages": [{"role": "user", "content": "And my name?"},
                  {"role": "assistant", "content": "  Ada, and you like tea.  "}]},
] + [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                   {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(6)]
WORDS = po.WORDS
TARGETS = "q_proj,k_proj,v_proj,o_proj"
# T5 pairs in each record format py_engine reads; one with runs of spaces and a tab, which
# transformers' T5Tokenizer would cut otherwise than tokenizer.json (and py_engine) does.
SPACED = "the  lazy\tdog  jumps"
T5_ROWS = [{"input": s, "target": t} for s, t in PAIRS] + [
    {"instruction": "translate to german:", "input": "good morning", "output": "hallo welt"},
    {"prompt": "hello there", "response": "general kenobi"},
    {"messages": [{"role": "user", "content": "what is on the mat?"},
                  {"role": "assistant", "content": "a cat"}]},
    {"input": SPACED, "target": "over  the fox"},
    {"source": "summarize: good morning to you, the quick brown fox and the lazy dog",
     "output": "good morning"},
    {"input": "hello world", "target": "four"},
]
T5_TARGETS = "q,k,v,o,wi_0,wi_1,wo"
REL = 1e-4          # each step's loss and gradient norm against py_engine's
# Trained adapters after a few AdamW steps, one float32 run against another (one process against
# two, torch against py_engine): the runs sum the same gradients in a different order, measured
# up to 8e-5 by relative error over repeated runs (1e-5 failed now and then). A wrong batch
# split shows first in the step logs, each step's loss and gradient norm held to REL.
ADAPTER_REL = 1e-3


def assert_same_adapter(got, want, name, lr, steps):
    """The same trained weights, up to the one thing float32 runs of Adam can disagree on: an
    element whose gradient is near zero (terms that cancel) has its step set by Adam's
    per-element normalisation, g / (sqrt(v) + eps), so a rounding difference in g can move it by
    up to about lr per step in either direction (seen once in a few dozen runs: one element of a
    T5 adapter 1.5e-3 off, 1.4e-3 by relative error over its tensor; and once 7 of the 192
    elements of a T5 lora_B, which starts at zero, between one process and two). Up to a tenth
    of the elements may be such, each within 2 * lr * steps; the rest are held to ADAPTER_REL.
    A wrong name, transpose, scale or batch moves most elements, and fails."""
    got = np.asarray(got, np.float64).ravel()
    want = np.asarray(want, np.float64).ravel()
    diff = np.abs(got - want)
    rms = np.linalg.norm(want) / np.sqrt(want.size)
    stray = diff > ADAPTER_REL * rms
    assert stray.sum() <= max(2, want.size // 10), (name, int(stray.sum()), want.size)
    assert diff.max() <= 2 * lr * steps, (name, float(diff.max()))
    assert np.linalg.norm(diff[~stray]) / np.linalg.norm(want) < ADAPTER_REL, name


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-job")
    rng = np.random.default_rng(5)
    texts = [{"text": " ".join(rng.choice(WORDS, rng.integers(3, 14))),
              "label": str(rng.choice(em.LABELS))} for _ in range(14)]
    return {"root": root, "chat": tiny_chat_dir(root, family="llama", initializer_range=0.2),
            "bert": po.tiny_bert_dir(root / "bert", seed=3, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0),
            "t5": t5_dir(root / "t5")[0],
            "chats": write_jsonl(root / "chats.jsonl", CHATS),
            "texts": write_jsonl(root / "texts.jsonl", texts),
            "pairs": write_jsonl(root / "pairs.jsonl", T5_ROWS)}


def export_job(capsys, *argv):
    """(exit status, stderr) of `py-engine export-job ARGV`."""
    try:
        code = main(["export-job", *map(str, argv)])
    except SystemExit as e:         # argparse's errors
        code = e.code
    return code, capsys.readouterr().err


def launch(job, *argv, output):
    """`accelerate launch ... train.py --output OUTPUT`; (stderr, the step log)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([*ACCELERATE, *map(str, argv), str(job / "train.py"), "--output",
                           str(output)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return done.stderr, log


def assert_trains_on(loaded, examples):
    """py_engine trains on from a job's adapter: one finite step that moves the weights."""
    before = run(loaded.runtime.trainable_values())
    trainer = run(loaded.trainer(examples, CausalTrainConfig(epochs=1, lr=5e-3, batch_size=4)))
    run(trainer.run(max_steps=1))
    assert len(loaded.history) == 1 and np.isfinite(loaded.history[0].loss)
    after = run(loaded.runtime.trainable_values())
    assert any(bytes(after[n][1]) != bytes(before[n][1]) for n in before)


def launch_one_and_two(job, tmp_path, history):
    """The job on one process (output tmp_path/one) and on two over gloo (tmp_path/two), each
    step as py_engine's `history`; (the two step logs)."""
    err1, log1 = launch(job, "--cpu", output=tmp_path / "one")
    assert "train.py: 1 process(es) on cpu" in err1
    err2, log2 = launch(job, "--config_file", job / "accelerate.yaml", "--num_processes", 2,
                        output=tmp_path / "two")
    assert "train.py: 2 process(es) on cpu (distributed)" in err2
    assert_same_steps(log1, history)
    assert_same_steps(log2, history)
    return log1, log2


def assert_same_steps(log, history):
    """The job's steps are py_engine's: loss and gradient norm within REL, the same rates."""
    steps = [line for line in log if "loss" in line]
    assert [s["step"] for s in steps] == [s.step for s in history]
    for ours, theirs in zip(history, steps):
        assert abs(theirs["loss"] - ours.loss) <= REL * abs(ours.loss), (theirs, ours)
        assert abs(theirs["grad_norm"] - ours.grad_norm) <= REL * ours.grad_norm, (theirs, ours)
        assert theirs["learning_rate"] == pytest.approx(ours.lr, rel=1e-12)


def job_script(folder):
    """The folder's train.py as a module (its HERE is the folder, the modules beside it
    importable, as when it runs)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"train_{folder.name}", folder / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def adapter_weights(adapter):
    from safetensors.numpy import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def test_chat_job_on_one_and_two_processes(ws, tmp_path, capsys):
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", ws["chat"], "--data", ws["chats"], "--out", job,
                           "--batch-size", 2, "--grad-accum", 2, "--epochs", 2, "--lr", 5e-3,
                           "--seed", 3, "--r", 4, "--target-modules", TARGETS)
    assert code == 0, err
    assert "accelerate launch --config_file" in err
    rows = [json.loads(line) for line in (job / "data" / "train.jsonl").read_text().splitlines()]
    assert all(set(r) in ({"messages"}, {"text"}) for r in rows) and len(rows) == len(CHATS)
    spec = json.loads((job / "job.json").read_text())
    assert spec["train"]["max_length"] == 256       # the checkpoint's positions bound it

    # py_engine on the same data and seed, the adapter the job starts from included.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS.split(","), task_type="CAUSAL_LM")
    chat = run(ChatModel.create(ws["chat"], lora=lora, seed=3))
    examples, _ = encode_chat_examples(read_chat_jsonl(ws["chats"]), chat.tokenizer,
                                       chat.template, max_length=chat.max_length)
    config = CausalTrainConfig(epochs=2, lr=5e-3, batch_size=2, grad_accum=2, seed=3)
    run(run(chat.trainer(examples, config)).run())
    assert len(chat.history) == 6

    log1, log2 = launch_one_and_two(job, tmp_path, chat.history)

    # The adapters: one process, two processes and py_engine trained the same weights.
    ours = {f"base_model.model.{name}": np.frombuffer(bytes(data), np.float32)
            for name, (_, data) in run(chat.runtime.trainable_values()).items()}
    one, two = adapter_weights(tmp_path / "one" / "adapter"), adapter_weights(tmp_path / "two" / "adapter")
    assert set(one) == set(two) == set(ours)
    steps = len(chat.history)
    for name in ours:
        assert_same_adapter(two[name], one[name], name, lr=5e-3, steps=steps)
        assert_same_adapter(one[name], ours[name], name, lr=5e-3, steps=steps)

    # It loads back into py_engine with PEFT's logits, and training goes on from it there.
    adapter = tmp_path / "one" / "adapter"
    ids = AutoTokenizer.from_pretrained(ws["chat"]).apply_chat_template(
        CHATS[0]["messages"], tokenize=True, return_dict=False)
    with torch.no_grad():
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ws["chat"]),
                                         adapter).eval()
        want = peft(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    assert em.relative_error(em.our_decoder_logits(ws["chat"], adapter, ids), want) < 1e-5
    loaded = run(ChatModel.load(ws["chat"], adapter))
    assert_trains_on(loaded, examples)


ADAM = {"adam_beta1": 0.8, "adam_beta2": 0.99, "adam_epsilon": 1e-6}


SCHEDULE = {"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.2},
            "warmup_steps": 2, "max_steps": 21, "label_smoothing": 0.1}


@pytest.mark.parametrize("use_dora, bias, other", [(False, "none", False), (True, "none", False),
                                                   (False, "all", True)])
def test_dialogpt_job_trains_as_py_engine(ws, tmp_path, capsys, use_dora, bias, other):
    """A GPT-2 family checkpoint without a chat template (DialoGPT's): the job renders DialoGPT's
    format (turns joined by the end-of-text token) as py_engine does, trains the Conv1D LoRA
    (fan_in_fan_out; DoRA with --use-dora, its magnitudes starting from py_engine's; every bias
    beside it with --bias all, the norms' too, starting from the checkpoint's; lora_B's biases
    with --lora-bias) on c_attn, and each step's loss, gradient norm and learning rate are
    py_engine's (a cosine schedule down to a fifth of the rate after two warmup steps over 21
    steps, past the epochs asked for, with --lr-scheduler-type, --lr-scheduler-kwargs,
    --warmup-steps and --max-steps, transformers' names; and --label-smoothing); with --dropout 0 on a checkpoint whose config has
    dropout, both train without it; AdamW's options other than transformers' defaults reach
    both."""
    from py_engine.tokenizers.checkpoint import DIALOGPT_TEMPLATE

    model = tiny_dialogpt_dir(tmp_path / "dialogpt", embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", model, "--data", ws["chats"], "--out", job,
                           "--batch-size", 2, "--epochs", 2, "--lr", 5e-3, "--seed", 3, "--dropout", 0,
                           *(f"--{k.replace('_', '-')}={v}" for k, v in ADAM.items()),
                           *(["--use-dora"] if use_dora else []),
                           *(["--bias", bias] if bias != "none" else []),
                           *([f"--{k.replace('_', '-')}={json.dumps(v) if isinstance(v, dict) else v}"
                              for k, v in SCHEDULE.items()]
                             + ["--lora-bias"] if other else []))
    assert code == 0, err
    spec = json.loads((job / "job.json").read_text())
    assert spec["fallback_chat_template"] == DIALOGPT_TEMPLATE and spec["dropout"] == 0.0
    assert spec["train"]["max_length"] == 64        # GPT-2's n_positions bound it
    assert {k: spec["train"][k] for k in ADAM} == ADAM
    config = json.loads((job / "adapter" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["target_modules"] == ["c_attn"]
    assert config["use_dora"] is use_dora and config["bias"] == bias
    assert config["lora_bias"] is other and (spec["train"]["lr_scheduler_type"] == SCHEDULE["lr_scheduler_type"]) is other

    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], use_dora=use_dora,
                      bias=bias, lora_bias=other) if use_dora or bias != "none" or other else None
    chat = run(ChatModel.create(model, seed=3, dropout=0.0, lora=lora))
    assert chat.max_length == 64
    examples, _ = encode_chat_examples(read_chat_jsonl(ws["chats"]), chat.tokenizer,
                                       chat.template, max_length=chat.max_length, skip_untrainable=True)
    run(run(chat.trainer(examples, CausalTrainConfig(epochs=2, lr=5e-3, batch_size=2, seed=3, **ADAM,
                                                     **(SCHEDULE if other else {})))).run())
    if other:       # max_steps: past the two epochs asked for
        assert len(chat.history) == 21 and chat.history[-1].epoch >= 2, [s.epoch for s in chat.history]
    _, log = launch(job, "--cpu", output=tmp_path / "out")
    assert_same_steps(log, chat.history)
    ours = {f"base_model.model.{name}": np.frombuffer(bytes(data), np.float32)
            for name, (_, data) in run(chat.runtime.trainable_values()).items()}
    theirs = adapter_weights(tmp_path / "out" / "adapter")
    assert set(theirs) == set(ours)
    for name in ours:
        assert_same_adapter(theirs[name], ours[name], name, lr=5e-3, steps=len(chat.history))


def test_classifier_job_and_back(ws, tmp_path, capsys):
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", ws["bert"], "--data", ws["texts"], "--out", job,
                           "--batch-size", 4, "--epochs", 2, "--lr", 2e-3, "--seed", 7,
                           "--label-smoothing", 0.1, "--weight-decay", 0.05,
                           "--max-grad-norm", "none",
                           "--validation", ws["texts"])
    assert code == 0, err
    data = read_jsonl(ws["texts"])
    labels = label_names(data)
    assert json.loads((job / "job.json").read_text())["labels"] == labels
    assert json.loads((job / "adapter" / "labels.json").read_text()) == labels

    clf = run(TextClassifier.create(ws["bert"], labels, seed=7))
    config = ClassifierTrainConfig(epochs=2, lr=2e-3, batch_size=4, seed=7, label_smoothing=0.1,
                                   weight_decay=0.05, max_grad_norm=None)
    run(run(clf.trainer(data, config)).run())
    _, log = launch(job, "--cpu", output=tmp_path / "out")
    assert_same_steps(log, clf.history)
    # The validation loss after the last epoch: py_engine's held-out loss (no smoothing).
    evaluations = [line for line in log if "eval_loss" in line]
    assert [e["epoch"] for e in evaluations] == [1, 2]
    held_out = run(clf.runtime.task.evaluate(clf.runtime, clf.encode_examples(data), 8, 128))
    assert evaluations[-1]["eval_loss"] == pytest.approx(held_out["loss"], rel=REL)

    adapter = tmp_path / "out" / "adapter"
    assert json.loads((adapter / "head_config.json").read_text()) == {"pooling": "cls"}
    texts = [r["text"] for r in map(json.loads, ws["texts"].read_text().splitlines())][:6]
    loaded = run(TextClassifier.load(ws["bert"], adapter))
    enc = loaded.encode(texts)
    T = max(len(e.ids) for e in enc)
    ids = [e.ids + [0] * (T - len(e.ids)) for e in enc]
    mask = [[1] * len(e.ids) + [0] * (T - len(e.ids)) for e in enc]
    want = po.probabilities(ws["bert"], adapter, ids, mask)
    got = np.array([[p[name] for name in labels] for p in run(loaded.predict(texts))])
    assert np.abs(got - want).max() < 1e-6
    trainer = run(loaded.trainer(data, ClassifierTrainConfig(epochs=1, batch_size=4)))
    run(trainer.run(max_steps=1))
    assert len(loaded.history) == 1 and np.isfinite(loaded.history[0].loss)


MULTI = "multi_label_classification"


def test_multi_label_classifier_job_trains_as_py_engine(ws, tmp_path, capsys):
    """--problem-type multi_label_classification: lines whose label is a list of names (none
    too) or soft targets; each step's loss and gradient norm are py_engine's (its BCE per
    label, mean over the logits) on two processes, the validation loss too, and the
    adapter loads back as a
    multi-label classifier (head_config.json) whose sigmoid probabilities are PEFT's, and
    trains on."""
    rng = np.random.default_rng(8)
    rows = []
    for k in range(14):
        names = [str(x) for x in em.LABELS if rng.random() < 0.5]
        rows.append({"text": " ".join(rng.choice(WORDS, rng.integers(3, 14))),
                     "label": {names[0]: 0.7} if k % 5 == 4 and names else names})
    data = write_jsonl(tmp_path / "tags.jsonl", rows)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", ws["bert"], "--data", data, "--out", job,
                           "--problem-type", MULTI, "--batch-size", 3, "--epochs", 2,
                           "--lr", 2e-3, "--seed", 7, "--validation", data)
    assert code == 0, err
    examples = read_jsonl(data, problem_type=MULTI)
    labels = label_names(examples, problem_type=MULTI)
    spec = json.loads((job / "job.json").read_text())
    assert spec["problem_type"] == MULTI and spec["labels"] == labels
    clf = run(TextClassifier.create(ws["bert"], labels, seed=7, problem_type=MULTI))
    run(run(clf.trainer(examples, ClassifierTrainConfig(epochs=2, lr=2e-3, batch_size=3,
                                                        seed=7))).run())
    # batches of 3 on two processes: one process's share of each holds a row training nothing
    # (one process takes the same steps: test_classifier_job_and_back)
    err, log = launch(job, "--config_file", job / "accelerate.yaml", "--num_processes", 2,
                      output=tmp_path / "two")
    assert "train.py: 2 process(es) on cpu (distributed)" in err
    assert_same_steps(log, clf.history)
    evaluations = [line for line in log if "eval_loss" in line]
    held_out = run(clf.runtime.task.evaluate(clf.runtime, clf.encode_examples(examples), 8, 128))
    assert evaluations[-1]["eval_loss"] == pytest.approx(held_out["loss"], rel=REL)

    adapter = tmp_path / "two" / "adapter"
    assert json.loads((adapter / "head_config.json").read_text()) == {"pooling": "cls",
                                                                      "problem_type": MULTI}
    loaded = run(TextClassifier.load(ws["bert"], adapter))
    assert loaded.problem_type == MULTI
    texts = [r["text"] for r in rows[:6]]
    enc = loaded.encode(texts)
    T = max(len(e.ids) for e in enc)
    ids = [e.ids + [0] * (T - len(e.ids)) for e in enc]
    mask = [[1] * len(e.ids) + [0] * (T - len(e.ids)) for e in enc]
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(ws["bert"], num_labels=len(labels))
    peft = PeftModel.from_pretrained(hf, adapter).double().eval()
    with torch.no_grad():
        want = torch.sigmoid(peft(input_ids=torch.tensor(ids),
                                  attention_mask=torch.tensor(mask)).logits).numpy()
    got = np.array([[p[name] for name in labels] for p in run(loaded.predict(texts))])
    assert np.abs(got - want).max() < 1e-6
    trainer = run(loaded.trainer(examples, ClassifierTrainConfig(epochs=1, batch_size=4)))
    run(trainer.run(max_steps=1))
    assert len(loaded.history) == 1 and np.isfinite(loaded.history[0].loss)


def check_classifier_job(ws, model, job, tmp_path, head, **create):
    """The job, launched on the CPU, takes py_engine's steps (loss and gradient norm) on the
    texts, and its adapter holds py_engine's weights (the head's `head` among them), trained
    here with the same options (TextClassifier.create's `create`)."""
    data = read_jsonl(ws["texts"])
    clf = run(TextClassifier.create(model, label_names(data), seed=7, **create))
    run(run(clf.trainer(data, ClassifierTrainConfig(epochs=2, lr=2e-3, batch_size=4, seed=7))).run())
    _, log = launch(job, "--cpu", output=tmp_path / "out")
    assert_same_steps(log, clf.history)
    ours = {f"base_model.model.{name}": np.frombuffer(bytes(data), np.float32)
            for name, (_, data) in run(clf.runtime.trainable_values()).items()}
    theirs = {k: v for k, v in adapter_weights(tmp_path / "out" / "adapter").items()
              if ".original_module." not in k and ".modules_to_save." not in k}
    assert set(theirs) == set(ours) and f"base_model.model.{head}" in ours
    for name in ours:
        assert_same_adapter(theirs[name], ours[name], name, lr=2e-3, steps=len(clf.history))


def test_roberta_classifier_job_trains_as_py_engine(ws, tmp_path, capsys):
    """An XLM-RoBERTa checkpoint (its Unigram tokenizer, positions after the padding row,
    RobertaForSequenceClassification's head trained whole beside the LoRA, every bias too with
    --bias all): each step's loss and gradient norm are py_engine's, and so are the trained
    weights, under PEFT's names."""
    from roberta_checkpoints import tiny_roberta_dir

    model = tiny_roberta_dir(tmp_path / "xlmr", "xlm-roberta", seed=3)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", model, "--data", ws["texts"], "--out", job,
                           "--batch-size", 4, "--epochs", 2, "--lr", 2e-3, "--seed", 7,
                           "--bias", "all", "--dropout", 0)
    assert code == 0, err
    check_classifier_job(ws, model, job, tmp_path, "classifier.dense.weight", dropout=0.0,
                         lora=LoraConfig(target_modules=["query", "value"], bias="all"))


def test_albert_classifier_job_trains_as_py_engine(ws, tmp_path, capsys):
    """An ALBERT checkpoint (one layer read at every depth, its LoRA's gradient summed over
    them; the embeddings' projection wrapped too): each step's loss and gradient norm are
    py_engine's, and so are the trained weights, under PEFT's names."""
    model = po.tiny_albert_dir(tmp_path / "albert", seed=3)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", model, "--data", ws["texts"], "--out", job,
                           "--batch-size", 4, "--epochs", 2, "--lr", 2e-3, "--seed", 7,
                           "--target-modules", "query,value,embedding_hidden_mapping_in",
                           "--dropout", 0)
    assert code == 0, err
    check_classifier_job(ws, model, job, tmp_path, "classifier.weight", dropout=0.0,
                         lora=LoraConfig(target_modules=["query", "value",
                                                         "embedding_hidden_mapping_in"]))


def test_deberta_classifier_job_trains_as_py_engine(ws, tmp_path, capsys):
    """A DeBERTa-v3 checkpoint (its Unigram tokenizer, the disentangled attention, no pooler:
    the pooler trains whole beside the LoRA and the classifier): each step's loss and gradient
    norm are py_engine's, and so are the trained weights, under PEFT's names."""
    model = po.tiny_deberta_dir(tmp_path / "deberta", seed=6)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", model, "--data", ws["texts"], "--out", job,
                           "--batch-size", 4, "--epochs", 2, "--lr", 2e-3, "--seed", 7,
                           "--dropout", 0)
    assert code == 0, err
    check_classifier_job(ws, model, job, tmp_path, "pooler.dense.weight", dropout=0.0,
                         lora=LoraConfig(target_modules=["query_proj", "value_proj"]))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_modernbert_classifier_job_trains_as_py_engine(ws, tmp_path, capsys, pooling):
    """A ModernBERT checkpoint (byte-level BPE, RoPE, sliding layers, its head; cls or mean
    pooling as config.json's classifier_pooling says): each step's loss and gradient norm are
    py_engine's, so are the trained weights, and the adapter comes back pooling as trained."""
    model = po.tiny_modernbert_dir(tmp_path / "modernbert", seed=5, classifier_pooling=pooling)
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", model, "--data", ws["texts"], "--out", job,
                           "--batch-size", 4, "--epochs", 2, "--lr", 2e-3, "--seed", 7)
    assert code == 0, err
    check_classifier_job(ws, model, job, tmp_path, "classifier.weight")
    adapter = tmp_path / "out" / "adapter"
    assert json.loads((adapter / "head_config.json").read_text()) == {"pooling": pooling}
    loaded = run(TextClassifier.load(model, adapter))
    assert loaded.model.pooling == pooling


def test_t5_job_on_one_and_two_processes(ws, tmp_path, capsys):
    """A T5 encoder-decoder (FLAN-T5's layout): the folder's pairs are py_engine's whatever
    their record format; each step's loss and gradient norm are `train`'s on one process and
    on two (the last planned batch has one row: the second process gets one that trains
    nothing), each side of a pair cut to --max-length; the adapter (SEQ_2_SEQ_LM) loads back
    into py_engine with PEFT's logits, and training goes on from it there."""
    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", ws["t5"], "--data", ws["pairs"], "--out", job,
                           "--batch-size", 3, "--grad-accum", 2, "--epochs", 2, "--lr", 5e-3,
                           "--seed", 3, "--r", 4, "--target-modules", T5_TARGETS,
                           "--max-length", 24, "--validation", ws["pairs"])
    assert code == 0, err
    pairs = read_seq2seq_jsonl(ws["pairs"])
    rows = [json.loads(line) for line in (job / "data" / "train.jsonl").read_text().splitlines()]
    assert rows == [{"input": e.input, "target": e.target} for e in pairs]
    spec = json.loads((job / "job.json").read_text())
    assert spec["task"] == "seq2seq" and spec["train"]["max_length"] == 24
    assert "end_tokens" not in spec and "fallback_chat_template" not in spec
    config = json.loads((job / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert config["target_modules"] == T5_TARGETS.split(",") and config["r"] == 4
    assert '{"input", "target"} pairs' in (job / "README.md").read_text()

    # py_engine's train on the same pairs and seed (cli.cmd_train_seq2seq's calls).
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=T5_TARGETS.split(","),
                      task_type="SEQ_2_SEQ_LM")
    model = run(Seq2SeqModel.create(ws["t5"], lora=lora, seed=3, max_length=24))
    examples, skipped = encode_seq2seq_examples(pairs, model.tokenizer, model.max_length)
    assert skipped == 0
    assert max(len(model.tokenizer.encode(e.input).ids) for e in pairs) > 24    # some are cut
    config = CausalTrainConfig(epochs=2, lr=5e-3, batch_size=3, grad_accum=2, seed=3,
                               max_length=24)
    run(run(model.trainer(examples, config)).run())
    assert len(model.history) == 4

    log1, log2 = launch_one_and_two(job, tmp_path, model.history)
    # The validation loss after the last epoch: py_engine's mean over the target tokens.
    held_out = run(model.runtime.task.evaluate(model.runtime, examples, 8, 24))
    for log in (log1, log2):
        evaluations = [line for line in log if "eval_loss" in line]
        assert [e["epoch"] for e in evaluations] == [1, 2]
        assert evaluations[-1]["eval_loss"] == pytest.approx(held_out["loss"], rel=REL)

    ours = {f"base_model.model.{name}": np.frombuffer(bytes(data), np.float32)
            for name, (_, data) in run(model.runtime.trainable_values()).items()}
    one = adapter_weights(tmp_path / "one" / "adapter")
    two = adapter_weights(tmp_path / "two" / "adapter")
    assert set(one) == set(two) == set(ours)
    steps = len(model.history)
    for name in ours:
        assert_same_adapter(two[name], one[name], name, lr=5e-3, steps=steps)
        assert_same_adapter(one[name], ours[name], name, lr=5e-3, steps=steps)

    # It loads back into py_engine with PEFT's logits (teacher-forced, the target's tokens).
    adapter = tmp_path / "one" / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_2_SEQ_LM"
    loaded = run(Seq2SeqModel.load(ws["t5"], adapter_dir=adapter))
    ids, target = examples[0].ids, examples[0].labels
    decoder = loaded.decoder()
    got = np.stack([run(decoder.prefill(ids))] + [run(decoder.step(t)) for t in target])
    peft = PeftModel.from_pretrained(tiny_t5(tmp_path / "base").float(), adapter).double().eval()
    with torch.no_grad():
        want = peft(input_ids=torch.tensor([ids]),
                    decoder_input_ids=torch.tensor([[0] + target])).logits[0].numpy()
    assert relative(got, want) <= 1e-5
    assert_trains_on(loaded, examples)


def test_t5_pairs_and_batches_are_py_engines(ws, tmp_path, capsys):
    """The job's T5 tokens (tokenizer.json as written, not transformers' T5Tokenizer, which
    cuts SPACED otherwise) and batches (the epoch plan over input + target lengths, each side
    padded on its own, the decoder input transformers' shift of the labels) are py_engine's."""
    from py_engine.labels import IGNORE_LABEL

    job = tmp_path / "job"
    assert export_job(capsys, "--model", ws["t5"], "--data", ws["pairs"], "--out", job,
                      "--max-length", 24)[0] == 0
    script = job_script(job)
    spec = json.loads((job / "job.json").read_text())
    tokenizer = script.load_tokenizer(spec["base"], spec)
    items = script.encode_file(job / "data" / "train.jsonl", spec, tokenizer)
    model = run(Seq2SeqModel.create(ws["t5"], max_length=24))
    examples, _ = encode_seq2seq_examples(read_seq2seq_jsonl(ws["pairs"]), model.tokenizer, 24)
    assert [(i["input_ids"], i["labels"]) for i in items] == [(e.ids, e.labels) for e in examples]
    assert AutoTokenizer.from_pretrained(ws["t5"])(SPACED)["input_ids"] != \
        model.tokenizer.encode(SPACED).ids
    assert isinstance(tokenizer, PreTrainedTokenizerFast)

    task = Seq2SeqTask(pad_id=0, decoder_start_id=0)
    sizes = [script.sizes(item, "seq2seq") for item in items]
    assert [sum(size) for size in sizes] == task.lengths(examples)
    sampler = script.PlannedBatches(sizes, [script.trained_count(i, "seq2seq") for i in items], 3, 1, 3,
                                    8, 24, 0, 1)
    collate, rows = script.collate("seq2seq", 0, 0), script.Rows(items)
    hf = tiny_t5(tmp_path / "hf")
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        for planned in sampler:
            batch = collate([rows[key] for key in planned])
            want = task.batch(examples, [i for i, _, _ in planned], 8, 24)
            assert batch["input_ids"].tolist() == want.ids
            assert batch["attention_mask"].tolist() == want.mask
            assert batch["decoder_input_ids"].tolist() == want.decoder_ids
            assert batch["labels"].flatten().tolist() == [
                -100 if y == IGNORE_LABEL else y for y in want.labels]
            assert torch.equal(batch["decoder_input_ids"], hf._shift_right(batch["labels"]))
            assert batch["loss_denominator"].item() == task.denominator(want)


@pytest.fixture(scope="module")
def script(ws, tmp_path_factory):
    """The train.py of a job folder written for the tiny chat model."""
    folder = tmp_path_factory.mktemp("job-script") / "job"
    assert main(["export-job", "--model", str(ws["chat"]), "--data", str(ws["chats"]),
                 "--out", str(folder)]) == 0
    return job_script(folder)


def test_chat_encoding_is_py_engines(ws, script):
    """The job's tokens and labels (transformers' tokenizer and template) are py_engine's."""
    tok = AutoTokenizer.from_pretrained(ws["chat"])
    chat = run(ChatModel.create(ws["chat"]))
    rows = [json.loads(r) for r in ws["chats"].read_text().splitlines()]
    examples = read_chat_jsonl(ws["chats"])
    ours, _ = encode_chat_examples(examples, chat.tokenizer, chat.template, max_length=256)
    end_tokens = list(DEFAULT_END_TOKENS) + [tok.eos_token]
    for row, example, want in zip(rows, examples, ours):
        row = {"messages": example.messages} if example.messages else row
        got = script.encode_chat(tok, row, end_tokens, 256, "row")
        assert got["input_ids"] == want.ids
        assert got["labels"] == [-100] + want.labels[1:]


def test_a_refused_conversation_is_named(ws, script):
    tok = AutoTokenizer.from_pretrained(ws["chat"])
    tok.chat_template = TEMPLATES["llama2"][0]
    tok.bos_token, tok.eos_token = "<|im_start|>", "<|im_end|>"
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                        {"role": "assistant", "content": "c"}]}
    with pytest.raises(script.JobError, match="^data.jsonl:3: the chat template refuses the "
                                              "conversation: Conversation roles must alternate"):
        script.encode_chat(tok, row, [], 64, "data.jsonl:3")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_assistant_spans_are_py_engines(name, script):
    """For every template py_engine renders (ChatML, Qwen2/2.5, SmolLM2, Llama 2/3/3.1, Zephyr,
    TinyLlama) and 80 conversations: the text transformers renders and the spans the job
    trains are py_engine's render_with_spans."""
    ours = _ours(name)
    eos = TEMPLATES[name][2]
    checked = 0
    for messages in CONVERSATIONS:
        try:
            want = ours.render_with_spans(messages)
        except ValueError:
            continue                    # the template refuses it (roles that do not alternate)

        def render(turns, generation_prompt):
            return _reference(name, turns, generation_prompt)

        assert script.assistant_spans(render, messages,
                                         list(DEFAULT_END_TOKENS) + [eos]) == want, messages
        checked += 1
    assert checked >= 40


def test_presets_need_no_local_model(ws, tmp_path, capsys):
    code, err = export_job(capsys, "--model", "smollm2-135m", "--data", ws["chats"], "--out",
                           tmp_path / "smol")
    assert code == 0, err
    spec = json.loads((tmp_path / "smol" / "job.json").read_text())
    assert spec["base"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and spec["precision"] == "bf16"
    assert sorted(p.name for p in (tmp_path / "smol" / "adapter").iterdir()) == \
        ["adapter_config.json"]                 # PEFT draws the start: no local weights to shape it
    presets = json.loads((tmp_path / "smol" / "presets.json").read_text())
    assert {"llama-3-8b", "mistral-7b", "phi-3-mini", "tinyllama", "smollm2-135m"} <= set(presets)
    code, err = export_job(capsys, "--model", "phi-3-mini", "--data", ws["chats"], "--out",
                           tmp_path / "phi")
    assert code == 0, err
    config = json.loads((tmp_path / "phi" / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["qkv_proj"] and config["task_type"] == "CAUSAL_LM"
    assert "py_engine does not run it" not in (tmp_path / "phi" / "README.md").read_text()
    # The folder's script resolves its base from the job, or from --base.
    script = job_script(tmp_path / "smol")
    job = json.loads((tmp_path / "smol" / "job.json").read_text())
    assert script.base_settings(job, None) == ("HuggingFaceTB/SmolLM2-135M-Instruct",
                                               presets["smollm2-135m"])
    assert script.base_settings(job, "phi-3-mini")[1]["target_modules"] == ["qkv_proj"]
    assert script.base_settings(job, "/models/mine") == ("/models/mine", None)
    with pytest.raises(script.JobError, match="^--base flan-t5-base: a seq2seq base; this job "
                                              "trains causal_lm$"):
        script.base_settings(job, "flan-t5-base")

    # FLAN-T5 (an encoder-decoder) from the Hub: pairs, its q and v, weights in float32.
    code, err = export_job(capsys, "--model", "flan-t5-small", "--data", ws["pairs"], "--out",
                           tmp_path / "flan")
    assert code == 0, err
    spec = json.loads((tmp_path / "flan" / "job.json").read_text())
    assert (spec["task"], spec["base"], spec["dtype"], spec["precision"]) == \
        ("seq2seq", "google/flan-t5-small", "float32", "bf16")
    config = json.loads((tmp_path / "flan" / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q", "v"] and config["task_type"] == "SEQ_2_SEQ_LM"
    assert "--base flan-t5-small" in (tmp_path / "flan" / "README.md").read_text()
    flan = job_script(tmp_path / "flan")
    assert flan.base_settings(spec, "flan-t5-base")[0] == "google/flan-t5-base"
    with pytest.raises(flan.JobError, match="^--base llama-3-8b: a causal_lm base; this job "
                                            "trains seq2seq$"):
        flan.base_settings(spec, "llama-3-8b")


def test_continues_an_adapter(ws, tmp_path, capsys):
    """--adapter: the job starts from an adapter trained elsewhere (here by PEFT), its LoRA
    settings kept."""
    model, adapter = em.chat_with_adapter(tmp_path, "llama")
    code, err = export_job(capsys, "--model", model, "--data", ws["chats"], "--out",
                           tmp_path / "job", "--adapter", adapter)
    assert code == 0, err
    copied = tmp_path / "job" / "adapter"
    assert (copied / "adapter_model.safetensors").read_bytes() == \
        (adapter / "adapter_model.safetensors").read_bytes()
    # The folder's script starts from it; a --base preset naming other projections starts
    # afresh there.
    script = job_script(tmp_path / "job")
    job = json.loads((tmp_path / "job" / "job.json").read_text())
    started = script.load_model(job, job["base"], None, False, torch)
    want = adapter_weights(adapter)
    got = {k.replace(".default", ""): v.detach().numpy()
           for k, v in started.named_parameters() if "lora_" in k}
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    preset = {"target_modules": ["q_proj"], "dtype": "float32"}
    fresh = script.load_model(job, job["base"], preset, True, torch)
    names = [k for k, _ in fresh.named_parameters() if "lora_B" in k]
    assert names and all(".q_proj." in k for k in names)
    assert all(not p.detach().any() for k, p in fresh.named_parameters() if "lora_B" in k)
    code, err = export_job(capsys, "--model", model, "--data", ws["chats"], "--out",
                           tmp_path / "job2", "--adapter", adapter, "--r", 16)
    assert code == 2 and "--r: the job continues" in err
    assert "chat_template" not in job           # the folder carries none: the base's

    # An adapter folder with its own chat template (TRL saves the tokenizer it trained with):
    # the job's tokenizer renders conversations with it, as py_engine does.
    from transformers import AutoTokenizer

    from test_chat_model import CUSTOM_TEMPLATE, _template_ids

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = CUSTOM_TEMPLATE
    tokenizer.save_pretrained(adapter)
    code, err = export_job(capsys, "--model", model, "--data", ws["chats"], "--out",
                           tmp_path / "job3", "--adapter", adapter)
    assert code == 0, err
    job = json.loads((tmp_path / "job3" / "job.json").read_text())
    assert job["chat_template"] == CUSTOM_TEMPLATE
    messages = [{"role": "user", "content": "Hi there"}]
    ours = run(ChatModel.load(model, adapter)).prompt_ids(messages)
    assert _template_ids(script.load_tokenizer(job["base"], job), messages) == ours


def test_a_validation_file_of_one_label_is_read(ws, tmp_path, capsys):
    """Validation lines need not hold every label (one will do), single-label or multi-label;
    a label the training data lacks is refused by name."""
    rows = [json.loads(line) for line in ws["texts"].read_text().splitlines()]
    one = write_jsonl(tmp_path / "one.jsonl", [r for r in rows if r["label"] == rows[0]["label"]])
    tags = write_jsonl(tmp_path / "tags.jsonl", [dict(r, label=[r["label"]]) for r in rows])
    tag = write_jsonl(tmp_path / "tag.jsonl", [dict(rows[0], label={rows[0]["label"]: 0.5})])
    for k, options in enumerate((["--data", ws["texts"], "--validation", one],
                                 ["--data", tags, "--validation", tag, "--problem-type", MULTI])):
        code, err = export_job(capsys, "--model", ws["bert"], "--out", tmp_path / f"job{k}",
                               *options)
        assert code == 0, err
    other = write_jsonl(tmp_path / "other.jsonl", [dict(rows[0], label="elsewhere")])
    code, err = export_job(capsys, "--model", ws["bert"], "--data", ws["texts"], "--out",
                           tmp_path / "never", "--validation", other)
    assert code == 2 and "labels ['elsewhere'] are not among the training data's" in err, err


def test_refusals_write_nothing(ws, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    bert_model, bert_adapter = em.classifier_with_adapter(tmp_path)
    mean_adapter = tmp_path / "mean-adapter"
    mean_adapter.mkdir()
    for f in bert_adapter.iterdir():
        (mean_adapter / f.name).write_bytes(f.read_bytes())
    (mean_adapter / "head_config.json").write_text('{"pooling": "mean"}')
    chat, texts, bert, t5 = ws["chat"], ws["texts"], ws["bert"], ws["t5"]
    bad_pairs = write_jsonl(tmp_path / "bad-pairs.jsonl", [
        {"input": "a", "target": "b"},
        {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}])
    causal = tmp_path / "causal-adapter"
    causal.mkdir()
    (causal / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    tiny_t5(tmp_path / "t5-without-tokenizer")
    cases = [
        (("--model", tmp_path / "nothing", "--data", ws["chats"], "--out", tmp_path / "o"),
         "no model directory there, and not a preset"),
        (("--model", chat, "--data", tmp_path / "none.jsonl", "--out", tmp_path / "o"),
         "no data file at"),
        (("--model", chat, "--data", ws["chats"], "--out", tmp_path / "o", "--problem-type",
          "multi_label_classification"), "--problem-type: only for classifiers"),
        (("--model", chat, "--data", ws["chats"], "--out", foreign), "py_engine did not write"),
        (("--model", chat, "--data", ws["chats"], "--out", chat), "it is the model directory"),
        (("--model", bert_model, "--data", texts, "--out", tmp_path / "o", "--adapter",
          mean_adapter), "pools with mean, and transformers' classifier"),
        (("--model", bert, "--data", ws["chats"], "--out", tmp_path / "o"), "chats.jsonl:1"),
        (("--model", chat, "--data", ws["chats"], "--out", tmp_path / "o", "--adapter",
          bert_adapter), "is a SEQ_CLS adapter"),
        (("--model", chat, "--data", ws["chats"], "--out", tmp_path / "o", "--max-length",
          1000), "--max-length 1000 is more than the 256 positions"),
        (("--model", chat, "--data", ws["chats"], "--out", tmp_path / "o", "--lr", "nan"),
         "--lr: must be a number > 0"),
        (("--model", t5, "--data", texts, "--out", tmp_path / "o"),
         'texts.jsonl:1: a "text" record has no target'),
        (("--model", t5, "--data", bad_pairs, "--out", tmp_path / "o"),
         "bad-pairs.jsonl:2: the conversation must end on an assistant message"),
        (("--model", "flan-t5-base", "--data", texts, "--out", tmp_path / "o"),
         'texts.jsonl:1: a "text" record has no target'),
        (("--model", t5, "--data", ws["pairs"], "--out", tmp_path / "o", "--problem-type",
          "multi_label_classification"), f"--problem-type: only for classifiers; {t5} is a T5 "
         "encoder-decoder"),
        (("--model", t5, "--data", ws["pairs"], "--out", tmp_path / "o", "--adapter", causal),
         "is a CAUSAL_LM adapter; this command needs a SEQ_2_SEQ_LM one"),
        (("--model", tmp_path / "t5-without-tokenizer", "--data", ws["pairs"], "--out",
          tmp_path / "o"), "has no tokenizer.json"),
        (("--model", bert, "--data", texts, "--out", tmp_path / "o", "--problem-type",
          "regression"), "argument --problem-type: invalid choice: 'regression'"),
        (("--model", chat, "--data", ws["chats"], "--out", tmp_path / "o", "--problem-type",
          MULTI), "--problem-type: only for classifiers"),
        (("--model", bert, "--data", texts, "--out", tmp_path / "o", "--problem-type", MULTI,
          "--label-smoothing", 0.1), "--label-smoothing: only for single-label classifiers"),
        (("--model", bert, "--data", texts, "--out", tmp_path / "o", "--problem-type", MULTI),
         'texts.jsonl:1: a multi_label_classification "label" is a list of label names'),
        (("--model", bert_model, "--data", texts, "--out", tmp_path / "o", "--adapter",
          bert_adapter, "--problem-type", MULTI), "holds a single_label_classification head, "
                                                  "not a multi_label_classification one"),
    ]
    before = snapshot(tmp_path)
    capsys.readouterr()
    for argv, message in cases:
        code, err = export_job(capsys, *argv)
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("py-engine: error:"), err
        assert message in err, (message, err)
    assert snapshot(tmp_path) == before


def test_a_job_holding_a_run_is_never_replaced(ws, tmp_path, capsys):
    job = tmp_path / "job"
    assert export_job(capsys, "--model", ws["chat"], "--data", ws["chats"], "--out", job)[0] == 0
    assert export_job(capsys, "--model", ws["chat"], "--data", ws["chats"], "--out", job,
                      "--epochs", 2)[0] == 0        # py_engine's own folder: replaced
    (job / "output").mkdir()
    (job / "output" / "log.jsonl").write_text("a run's log\n")
    code, err = export_job(capsys, "--model", ws["chat"], "--data", ws["chats"], "--out", job)
    assert code == 2 and "output" in err
    assert (job / "output" / "log.jsonl").read_text() == "a run's log\n"


IN_THE_PAGE = """
import json
from py_engine.data.chat import encode_chat_examples, read_chat_jsonl
from py_engine.train.chat import CausalTrainConfig, ChatModel

chat = await ChatModel.load("/work/chat", "/work/adapter", backend="gpu")
examples, _ = encode_chat_examples(read_chat_jsonl("/work/chats.jsonl"), chat.tokenizer,
                                   chat.template, max_length=chat.max_length)
reply = await chat.generate("What is 2 + 2?", max_new_tokens=8)
trainer = await chat.trainer(examples, CausalTrainConfig(epochs=1, lr=5e-3, batch_size=4))
await trainer.run(max_steps=1)
json.dumps({"ids": reply.ids, "loss": chat.history[0].loss})
"""


@pytest.mark.browser
def test_the_jobs_adapter_loads_and_trains_on_in_the_browser(ws, engine_page, tmp_path, capsys):
    """The adapter a job wrote, carried into the page (Pyodide + WebGPU): the greedy reply is
    the host's with the same adapter, and a training step there starts from it (its loss is the
    host's first step's on the same examples)."""
    from py_engine.harness import put_files, run_json

    job = tmp_path / "job"
    code, err = export_job(capsys, "--model", ws["chat"], "--data", ws["chats"], "--out", job,
                           "--batch-size", 4, "--epochs", 1, "--lr", 2e-2, "--seed", 4, "--r", 4,
                           "--target-modules", TARGETS)
    assert code == 0, err
    launch(job, "--cpu", output=tmp_path / "out")
    adapter = tmp_path / "out" / "adapter"

    host = run(ChatModel.load(ws["chat"], adapter))
    want = run(host.generate("What is 2 + 2?", max_new_tokens=8))
    examples, _ = encode_chat_examples(read_chat_jsonl(ws["chats"]), host.tokenizer,
                                       host.template, max_length=host.max_length)
    run(run(host.trainer(examples, CausalTrainConfig(epochs=1, lr=5e-3, batch_size=4))).run(max_steps=1))

    files = {f"/work/chat/{p.name}": p.read_bytes() for p in Path(ws["chat"]).iterdir() if p.is_file()}
    files.update({f"/work/adapter/{p.name}": p.read_bytes() for p in adapter.iterdir() if p.is_file()})
    files["/work/chats.jsonl"] = Path(ws["chats"]).read_bytes()
    put_files(engine_page, files)
    got = run_json(engine_page, IN_THE_PAGE)
    assert got["ids"] == want.ids
    assert abs(got["loss"] - host.history[0].loss) <= 1e-4 * abs(host.history[0].loss)


def test_same_adapter_allows_an_adam_flip_not_a_wrong_weight():
    """assert_same_adapter's allowance: one element a few learning rates off passes, and a tenth
    of them slightly off (the seen T5 cases); a transposed, rescaled, shifted or other-layer
    tensor does not, nor does one more stray than a tenth."""
    rng = np.random.default_rng()
    want = rng.normal(0, 0.1, (4, 32)).astype(np.float32)
    noisy = want * (1 + rng.normal(0, 1e-5, want.shape)).astype(np.float32)
    flipped = noisy.copy()
    flipped[2, 7] += 1.5e-3 * rng.choice([-1, 1])
    assert_same_adapter(flipped, want, "k.lora_A", lr=5e-3, steps=4)
    several = noisy.copy()          # a tenth of the elements, as the one-against-two T5 run saw
    several.flat[rng.choice(want.size, want.size // 10, replace=False)] += 2e-4
    assert_same_adapter(several, want, "k.lora_B", lr=5e-3, steps=4)
    wrong = {"transposed": want.reshape(32, 4).T, "rescaled": want * 1.02,
             "shifted": want + 2e-3, "other layer": rng.normal(0, 0.1, want.shape),
             "far flip": flipped + np.where(np.arange(want.size).reshape(want.shape) == 9, 0.05, 0)}
    too_many = several.copy()
    too_many.flat[np.flatnonzero(several == noisy)[0]] += 2e-4
    wrong["a stray over a tenth"] = too_many
    for what, got in wrong.items():
        with pytest.raises(AssertionError):
            assert_same_adapter(got, want, what, lr=5e-3, steps=4)
