"""What `py-engine` does with bad or hostile input: every option is range-checked and every path
checked before anything is loaded, outputs go only into new, empty or py_engine's own
directories, a diverged run saves nothing, NaN never reaches a file or stdout, and each error is
one line (`py-engine: error: ...`, exit 2) while bugs keep their traceback."""

import json
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch

import peft_oracle as po
from conftest import stopped_after_first_epoch
from py_engine.cli import main
from py_engine.data.datasets import export_dataset
from py_engine.data.record import Record
from py_engine.formats.head_config import HEAD_CONFIG
from py_engine.formats.output_dir import MARKER
from py_engine.train.chat import CausalTrainConfig, ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig, TrainConfig
from test_cli_classifier import TEXTS, write_jsonl
from test_output_dir import snapshot
from tiny_chat import tiny_chat_dir

DEEP = "[" * 100_000 + "]" * 100_000
CHAT_ROWS = [{"prompt": "Hello! How are you today?", "response": "I am fine, thank you."},
             {"messages": [{"role": "user", "content": "What is the capital of France?"},
                           {"role": "assistant", "content": "Paris."}]}]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Checkpoints, data and a trained adapter, shared by the tests (which only read them)."""
    root = tmp_path_factory.mktemp("cli-safety")
    bert = po.tiny_bert_dir(root / "bert", seed=41)
    llama = tiny_chat_dir(root, family="llama", initializer_range=0.2)
    base = root / "base"    # a base checkpoint: no chat template, no ChatML tokens to fall back on
    shutil.copytree(llama, base)
    (base / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    tokenizer = json.loads((base / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"]
                                 if t["content"] == "<|endoftext|>"]
    (base / "tokenizer.json").write_text(json.dumps(tokenizer))
    rows = [{"text": t, "label": label} for label, texts in TEXTS.items() for t in texts] * 2
    ws = dict(root=root, bert=bert, llama=llama, base=base,
              cls=write_jsonl(root / "cls.jsonl", rows),
              chat=write_jsonl(root / "chat.jsonl", CHAT_ROWS * 2),
              text=write_jsonl(root / "text.jsonl", [{"text": "Numbers: 0 1 2 3 4 5 6 7 8 9 10."},
                                                      {"text": "Hello! How are you today?"}]))
    assert main(["train", "--model", str(bert), "--data", str(ws["cls"]), "--out",
                 str(root / "adapter"), "--epochs", "1", "--pooling", "mean"]) == 0
    ws["adapter"] = root / "adapter"
    return ws


def run(capsys, *args):
    capsys.readouterr()         # only what this command prints
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(capsys, *args, match, progress=False):
    """The command exits with 2 and one line `py-engine: error: ...` matching `match`; before
    it, nothing else (or, with `progress`, only JSON step lines and one-line warnings)."""
    code, out, err = run(capsys, *args)
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert lines and lines[-1].startswith("py-engine: error: "), err
    if progress:
        assert all(line.startswith(("{", "py-engine: warning: ")) for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    assert re.search(match, lines[-1]), lines[-1]
    assert out == ""
    return lines[-1]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Make loading a model a failure: what these tests give must be refused before that."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    for cls in (TextClassifier, ChatModel):
        monkeypatch.setattr(cls, "create", loaded)
        monkeypatch.setattr(cls, "load", loaded)


# --- options -------------------------------------------------------------------------------------

TRAIN_OPTIONS = [("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "nan"), ("--lr", "inf"),
                 ("--lr", "fast"), ("--batch-size", "0"), ("--epochs", "0"), ("--r", "0"),
                 ("--lora-alpha", "0"), ("--lora-dropout", "1"), ("--lora-dropout", "-0.1"),
                 ("--max-grad-norm", "0"), ("--max-grad-norm", "-1"), ("--weight-decay", "-0.01"),
                 ("--label-smoothing", "1"), ("--grad-accum", "0"), ("--max-length", "2"),
                 ("--seed", "-1"), ("--target-modules", "query,,value"), ("--patience", "0"),
                 ("--full-lr", "0")]


@pytest.mark.parametrize("option, value", TRAIN_OPTIONS)
def test_train_options_are_range_checked(ws, capsys, nothing_loads, option, value):
    refused(capsys, "train", "--model", ws["bert"], "--data", ws["cls"], "--out",
            ws["root"] / "never", option, value, match=f"argument {option}: (must be|expected)")
    assert not (ws["root"] / "never").exists()


@pytest.mark.parametrize("option, value", [("--temperature", "0"), ("--temperature", "-1"),
                                           ("--top-p", "0"), ("--top-p", "1.5"), ("--top-k", "-1"),
                                           ("--max-new-tokens", "0"), ("--stop", ""),
                                           ("--max-length", "0")])
def test_generate_options_are_range_checked(ws, capsys, nothing_loads, option, value):
    refused(capsys, "generate", "--model", ws["llama"], "--prompt", "Hi", option, value,
            match=f"argument {option}: must")


@pytest.mark.parametrize("model, extra, match", [
    ("bert", ["--mode", "full"], "--mode: only for chat models; this trains a classifier"),
    ("bert", ["--patience", "3", "--full-lr", "1e-3"], "--patience, --full-lr: only for chat models"),
    ("bert", ["--validation", "cls"], "--validation: only for chat models"),
    ("bert", ["--modules-to-save", "classifier,LayerNorm"],
     "modules_to_save 'LayerNorm' names bert.embeddings.LayerNorm, .* only bert.pooler and classifier"),
    ("bert", ["--lora-bias", "--use-dora"], r"lora_bias \(a bias on lora_B\) with DoRA"),
    ("bert", ["--backend", "gpu", "--base-dtype", "int8"], "int8 is for chat models"),
    ("bert", ["--base-dtype", "f16"], "f16 is a storage mode of the GPU backend"),
    ("llama", ["--pooling", "mean"], "--pooling: only for classifiers; .* is a chat model"),
    ("llama", ["--problem-type", "regression"], "--problem-type: only for classifiers"),
    ("llama", ["--mode", "full", "--r", "4"], "--r: only for LoRA; --mode full"),
    ("llama", ["--mode", "full", "--use-dora"], "--use-dora: only for LoRA; --mode full"),
    ("llama", ["--patience", "2"], "--patience: only for --mode hybrid"),
    ("llama", ["--base-dtype", "int4"], "int4 is a storage mode of the GPU backend"),
    ("llama", ["--mode", "hybrid", "--backend", "gpu", "--base-dtype", "int8"],
     "--mode hybrid trains the base weights"),
    ("bert", ["--max-length", "65"], "--max-length 65 is more than the 64 positions"),
    ("llama", ["--max-length", "257"], "--max-length 257 is more than the 256 positions"),
])
def test_options_are_checked_against_the_model_and_backend(ws, capsys, nothing_loads, model,
                                                            extra, match):
    data = ws["cls"] if model == "bert" else ws["chat"]
    extra = [ws[x] if x == "cls" else x for x in extra]
    refused(capsys, "train", "--model", ws[model], "--data", data, "--out", ws["root"] / "never",
            *extra, match=match)


def test_commands_are_checked_against_the_model_and_adapter(ws, capsys, nothing_loads):
    # a SEQ_CLS adapter makes a decoder a classifier: this one (a BERT's) wraps none of its linears
    refused(capsys, "predict", "--model", ws["llama"], "--adapter", ws["adapter"], "--data",
            ws["cls"], match="does not fit .*: LoRA targets .* match no linear layer")
    refused(capsys, "score", "--model", ws["bert"], "--data", ws["chat"],
            match="is a classifier checkpoint .*: use predict or eval")
    refused(capsys, "generate", "--model", ws["llama"], "--adapter", ws["adapter"], "--prompt",
            "Hi", match="is a SEQ_CLS adapter; this command needs a CAUSAL_LM one")
    refused(capsys, "generate", "--model", ws["llama"], "--prompt", "Hi", "--greedy",
            "--top-k", "5", match="--greedy")
    refused(capsys, "train", "--model", ws["cls"], "--data", ws["cls"], "--out", "x",
            match="is not a directory")


def capture_training(monkeypatch, cls):
    """Replace cls.trainer by a recorder of its config; the run stops right after with Stop."""
    seen = {}

    class Stop(Exception):
        pass

    async def trainer(self, examples, config=None, *args, **kwargs):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(cls, "trainer", trainer)
    return seen, Stop


def test_defaults_are_the_python_apis(ws, capsys, monkeypatch):
    seen, stop = capture_training(monkeypatch, TextClassifier)
    with pytest.raises(stop):
        main(["train", "--model", str(ws["bert"]), "--data", str(ws["cls"]), "--out", "x"])
    assert vars(seen["config"]) == vars(ClassifierTrainConfig())
    with pytest.raises(stop):
        main(["train", "--model", str(ws["bert"]), "--data", str(ws["cls"]), "--out", "x",
              "--gradient-checkpointing"])
    assert vars(seen["config"]) == vars(ClassifierTrainConfig(gradient_checkpointing=True))
    seen, stop = capture_training(monkeypatch, ChatModel)
    with pytest.raises(stop):
        main(["train", "--model", str(ws["llama"]), "--data", str(ws["chat"]), "--out", "x"])
    assert vars(seen["config"]) == vars(CausalTrainConfig())
    with pytest.raises(stop):
        main(["train", "--model", str(ws["llama"]), "--data", str(ws["chat"]), "--out", "x",
              "--max-grad-norm", "none", "--lr", "3e-4", "--epochs", "2", "--adam-beta2", "0.98",
              "--adam-epsilon", "1e-6", "--gradient-checkpointing"])
    assert vars(seen["config"]) == vars(CausalTrainConfig(max_grad_norm=None, lr=3e-4, epochs=2,
                                                          adam_beta2=0.98, adam_epsilon=1e-6,
                                                          gradient_checkpointing=True))


# --- outputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, match", [
    (".", "it is the current directory"),
    ("..", "it holds the current directory"),
    ("model", r"it is the model directory"),
    ("data", r"it is the data file"),
    ("file", "exists and is not a directory"),
    ("under_file", "is a file, not a directory"),
    ("peft", "files py_engine did not write \\(a PEFT adapter made elsewhere\\)"),
    ("owned_with_notes", "besides py_engine's output it holds notes.txt"),
    ("dataset", "cannot write to dataset: it holds a dataset py_engine wrote, which writing a "
                "model there would delete"),
])
def test_out_is_refused_before_training(ws, tmp_path, capsys, monkeypatch, nothing_loads, case,
                                        match):
    work = tmp_path / "work"
    shutil.copytree(ws["bert"], work / "model")
    shutil.copy(ws["cls"], work / "data.jsonl")
    (work / "file.txt").write_text("my file")
    peft = po.peft_model(work / "model", 2, seed=5, dtype=torch.float32)
    po.save_adapter(peft, work / "peft", labels=["neg", "pos"])
    shutil.copytree(ws["adapter"], work / "owned_with_notes")
    (work / "owned_with_notes" / "notes.txt").write_text("why this adapter is good")
    export_dataset([Record("classification", "text", text="a", label="x")], work / "dataset")
    monkeypatch.chdir(work)
    out = {"model": "model", "data": "data.jsonl", "file": "file.txt",
           "under_file": "file.txt/adapter"}.get(case, case)
    before = snapshot(tmp_path)
    refused(capsys, "train", "--model", "model", "--data", "data.jsonl", "--out", out, match=match)
    assert snapshot(tmp_path) == before


def test_python_m_py_engine_is_the_command(ws, tmp_path):
    help = subprocess.run([sys.executable, "-m", "py_engine", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert help.returncode == 0 and help.stdout.startswith("usage: py-engine")
    out = subprocess.run([sys.executable, "-m", "py_engine", "train", "--model", str(ws["bert"]),
                          "--data", str(ws["cls"]), "--out", str(ws["bert"])],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == f"py-engine: error: cannot write to {ws['bert']}: it is the model " \
                         f"directory ({ws['bert']}); name a new directory\n"


# --- divergence and non-finite numbers -------------------------------------------------------------

def no_nan(text):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} printed: {text}"))


def test_a_diverged_run_keeps_the_good_adapter_byte_for_byte(ws, tmp_path, capsys):
    good = tmp_path / "good"
    shutil.copytree(ws["adapter"], good)
    before = snapshot(good)
    line = refused(capsys, "train", "--model", ws["bert"], "--data", ws["cls"], "--out", good,
                   "--lr", "1e9", "--epochs", "10", "--batch-size", "2", "--pooling", "mean",
                   match="training diverged at step [0-9]+: .*not finite; stopped without saving",
                   progress=True)
    assert str(good) in line
    assert snapshot(good) == before
    assert [p.name for p in tmp_path.iterdir()] == ["good"]     # no staging left behind


def test_a_run_diverged_by_its_lora_alpha_names_it(ws, tmp_path, capsys):
    line = refused(capsys, "train", "--model", ws["bert"], "--data", ws["cls"], "--out",
                   tmp_path / "out", "--lora-alpha", "1e300", "--epochs", "1", "--batch-size", "2",
                   match="training diverged at step [0-9]+: .*try a lower --lr, or a lower "
                         "--lora-alpha: 1e\\+300 scales the LoRA update by 1.25e\\+299",
                   progress=True)
    assert not (tmp_path / "out").exists(), line


def test_diverged_weights_are_never_saved_by_the_api(ws, tmp_path):
    from py_engine.data.classification import read_jsonl
    from py_engine.formats.finite import NonFiniteWeightsError
    from py_engine.gpu import run_sync
    from py_engine.train.trainer import TrainingDiverged

    good = tmp_path / "good"
    shutil.copytree(ws["adapter"], good)
    before = snapshot(good)
    clf = run_sync(TextClassifier.create(ws["bert"], ["neg", "pos"], pooling="mean"))
    with pytest.raises(TrainingDiverged, match="diverged at step [0-9]+: loss nan"):
        run_sync(clf.fit(read_jsonl(ws["cls"]), TrainConfig(lr=1e9, epochs=10, batch_size=2)))
    with pytest.raises(NonFiniteWeightsError, match="holds NaN .*nothing was written"):
        run_sync(clf.save(good))
    assert snapshot(good) == before


def test_predict_and_eval_never_print_non_finite_numbers(ws, capsys, monkeypatch):
    async def overflowing(self, texts, batch_size=32):
        return [{"neg": math.nan, "pos": math.nan} for _ in texts]

    monkeypatch.setattr(TextClassifier, "predict", overflowing)
    for command in ("predict", "eval"):
        refused(capsys, command, "--model", ws["bert"], "--adapter", ws["adapter"], "--data",
                ws["cls"], match="input 1 gets probabilities that are not finite")


def test_a_nan_adapter_is_refused(ws, tmp_path, capsys):
    from array import array

    from py_engine.formats import safetensors

    adapter = tmp_path / "nan"
    shutil.copytree(ws["adapter"], adapter)
    weights = safetensors.load(adapter / "adapter_model.safetensors")
    tensors = {k: ("F32", weights.info(k)[1], weights.floats(k)) for k in weights.keys()}
    name = next(k for k in tensors if "lora_B" in k)
    tensors[name] = ("F32", tensors[name][1], array("f", [math.nan] * len(tensors[name][2])))
    weights.close()
    safetensors.save(tensors, adapter / "adapter_model.safetensors")
    refused(capsys, "predict", "--model", ws["bert"], "--adapter", adapter, "--data", ws["cls"],
            match=f"tensor '{re.escape(name)}' holds NaN")


def test_progress_lines_and_outputs_are_json(ws, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--model", ws["bert"], "--data", ws["cls"], "--out",
                       tmp_path / "a", "--epochs", "1", "--max-grad-norm", "none")
    assert code == 0
    steps = [no_nan(line) for line in err.splitlines() if line.startswith("{")]
    assert steps and all(s["grad_norm"] > 0 for s in steps)
    code, out, _ = run(capsys, "predict", "--model", ws["bert"], "--adapter", tmp_path / "a",
                       "--data", ws["cls"])
    assert code == 0 and all(sum(no_nan(line)["probs"].values()) == pytest.approx(1)
                             for line in out.splitlines())


# --- malformed files are messages; bugs are tracebacks ----------------------------------------------

def broken_copy(tmp_path, source, name, text):
    target = tmp_path / source.name
    shutil.copytree(source, target)
    (target / name).write_text(text)
    return target


@pytest.mark.parametrize("what, name, text, match", [
    ("adapter", "adapter_config.json", "[1, 2]", "adapter_config.json must hold a JSON object"),
    ("adapter", "adapter_config.json", DEEP, "adapter_config.json: not usable JSON"),
    ("adapter", HEAD_CONFIG, '"mean"', "head_config.json must hold a JSON object"),
    ("adapter", HEAD_CONFIG, DEEP, "head_config.json: not usable JSON"),
    ("adapter", "labels.json", '{"neg": 0}', "labels.json must hold a JSON list"),
    ("bert", "config.json", DEEP, "config.json: not usable JSON"),
    ("bert", "config.json", "[]", "config.json must hold a JSON object"),
    ("bert", "vocab.txt", "hello\n", "vocab.txt: not a BERT vocabulary"),
])
def test_malformed_classifier_files_are_named(ws, tmp_path, capsys, what, name, text, match):
    broken = broken_copy(tmp_path, ws[what], name, text)
    model, adapter = (broken, ws["adapter"]) if what == "bert" else (ws["bert"], broken)
    refused(capsys, "predict", "--model", model, "--adapter", adapter, "--data", ws["cls"],
            match=f"{re.escape(str(broken))}/{match}")


@pytest.mark.parametrize("name, text, match", [
    ("tokenizer_config.json", DEEP, "tokenizer_config.json: not usable JSON"),
    ("tokenizer_config.json", "7", "tokenizer_config.json must hold a JSON object"),
    ("tokenizer.json", '{"model": ', "tokenizer.json: not valid JSON"),
    ("tokenizer.json", '{"model": {"type": "BPE", "vocab": []}}', 'tokenizer.json: "model.vocab"'),
])
def test_malformed_chat_model_files_are_named(ws, tmp_path, capsys, name, text, match):
    broken = broken_copy(tmp_path, ws["llama"], name, text)
    refused(capsys, "generate", "--model", broken, "--prompt", "Hi",
            match=f"{re.escape(str(broken))}/{match}")


def test_deeply_nested_data_lines_are_named(ws, tmp_path, capsys):
    for model, row in (("llama", CHAT_ROWS[0]), ("bert", {"text": "good", "label": "pos"})):
        data = tmp_path / f"deep-{model}.jsonl"
        data.write_text(json.dumps(row) + "\n" + DEEP + "\n")
        refused(capsys, "train", "--model", ws[model], "--data", data, "--out", tmp_path / "a",
                match=f"deep-{model}.jsonl:2: not usable JSON")
    refused(capsys, "predict", "--model", ws["bert"], "--adapter", ws["adapter"], "--data", data,
            match="deep-bert.jsonl:2: not usable JSON")


def test_a_template_that_refuses_is_a_message(ws, tmp_path, capsys):
    refusing = ("{% for m in messages %}{% if m['role'] == 'user' and m['content'].startswith("
                "'What') %}{{ raise_exception('Questions are not allowed here') }}{% endif %}"
                "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                "{% endif %}")
    model = tmp_path / "model"
    shutil.copytree(ws["llama"], model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(dict(config, chat_template=refusing)))
    line = refused(capsys, "train", "--model", model, "--data", ws["chat"], "--out",
                   tmp_path / "a", match="chat.jsonl:2: the chat template .* refused the "
                                         "conversation: Questions are not allowed here")
    assert str(model / "tokenizer_config.json") in line
    refused(capsys, "generate", "--model", model, "--prompt", "What now?",
            match="refused the conversation: Questions are not allowed here")
    assert not (tmp_path / "a").exists()


def test_bugs_keep_their_traceback(ws, capsys, monkeypatch):
    async def buggy(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(TextClassifier, "load", buggy)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["predict", "--model", str(ws["bert"]), "--adapter", str(ws["adapter"]),
              "--data", str(ws["cls"])])


# --- pooling -------------------------------------------------------------------------------------

def test_a_lost_head_config_is_an_error_not_another_pooling(ws, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    shutil.copytree(ws["adapter"], adapter)
    (adapter / HEAD_CONFIG).unlink()
    refused(capsys, "predict", "--model", ws["bert"], "--adapter", adapter, "--data", ws["cls"],
            match="written by py_engine but its head_config.json is missing")
    refused(capsys, "predict", "--model", ws["bert"], "--adapter", ws["adapter"], "--data",
            ws["cls"], "--pooling", "cls", match="trained with mean pooling, not cls")


def test_a_peft_adapter_is_taken_as_cls_with_a_note(ws, tmp_path, capsys):
    peft = po.save_adapter(po.peft_model(ws["bert"], 2, seed=7, dtype=torch.float32),
                           tmp_path / "peft", labels=["neg", "pos"])
    code, out, err = run(capsys, "predict", "--model", ws["bert"], "--adapter", peft, "--data",
                         ws["cls"])
    assert code == 0
    assert f"note: {peft} has no head_config.json (an adapter made by PEFT): using cls" in err
    import numpy as np
    from transformers import BertTokenizerFast

    texts = [json.loads(line)["text"] for line in ws["cls"].read_text().splitlines()]
    enc = BertTokenizerFast.from_pretrained(str(ws["bert"]))(texts, padding=True, return_tensors="np")
    theirs = po.probabilities(ws["bert"], peft, enc["input_ids"], enc["attention_mask"])
    ours = np.array([[no_nan(line)["probs"][k] for k in ("neg", "pos")] for line in out.splitlines()])
    assert np.abs(ours - theirs).max() <= 1e-5


# --- chat models: base checkpoints, quantized bases ----------------------------------------------

def test_continued_pretraining_on_a_base_checkpoint(ws, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter"
    code, _, err = run(capsys, "train", "--model", ws["base"], "--data", ws["text"], "--out", out,
                       "--epochs", "2", "--lr", "1e-2")
    assert code == 0, err
    code, reply, err = run(capsys, "generate", "--model", ws["base"], "--adapter", out, "--raw",
                           "--prompt", "Numbers:", "--max-new-tokens", "8")
    assert code == 0, err
    tok = AutoTokenizer.from_pretrained(ws["base"])
    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ws["base"]), out).eval()
    ids = tok("Numbers:").input_ids
    want = hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                       pad_token_id=tok.pad_token_id)
    assert reply.rstrip("\n") == tok.decode(want[0, len(ids):], skip_special_tokens=True)
    # Conversations do need a template: the message says so, naming the checkpoint.
    refused(capsys, "train", "--model", ws["base"], "--data", ws["chat"], "--out", tmp_path / "b",
            match=f"{re.escape(str(ws['base']))}: no chat template")


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_chat_training_takes_a_quantized_base_on_the_gpu(ws, tmp_path, capsys, dtype):
    model = tiny_chat_dir(tmp_path, family="llama", hidden_size=64, intermediate_size=128)
    out = tmp_path / "adapter"
    code, _, err = run(capsys, "train", "--model", model, "--data", ws["chat"], "--out", out,
                       "--backend", "gpu", "--base-dtype", dtype, "--epochs", "1")
    assert code == 0, err
    steps = [no_nan(line) for line in err.splitlines() if line.startswith('{"step"')]
    assert steps and all(s["loss"] > 0 for s in steps)
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    assert (out / MARKER).is_file()


# --- resumable runs ------------------------------------------------------------------------------

def test_a_run_with_state_continues_where_it_stopped(ws, tmp_path, capsys, monkeypatch):
    """--state keeps the training state after every epoch; the same command after an
    interruption continues from it and ends with the adapter an uninterrupted run writes."""
    common = ["train", "--model", ws["bert"], "--data", ws["cls"], "--epochs", "3",
              "--batch-size", "2", "--pooling", "mean", "--lr", "1e-2"]
    assert main([*map(str, common), "--out", str(tmp_path / "whole")]) == 0
    state = tmp_path / "state"
    with stopped_after_first_epoch(monkeypatch):
        assert main([*map(str, common), "--out", str(tmp_path / "resumed"), "--state", str(state)]) != 0
    assert not (tmp_path / "resumed").exists() and (state / "training_state.json").is_file()
    capsys.readouterr()
    assert main([*map(str, common), "--out", str(tmp_path / "resumed"), "--state", str(state)]) == 0
    assert "continuing from" in capsys.readouterr().err
    assert snapshot(tmp_path / "resumed") == snapshot(tmp_path / "whole")
    refused(capsys, *map(str, common[:-1]), "2e-2", "--out", str(tmp_path / "other"), "--state",
            str(state), match="other options: lr 0.01 \\(now 0.02\\)")
    refused(capsys, *map(str, common), "--out", str(state), "--state", str(state),
            match="--state and --out must be different|cannot write")
