"""`py-engine export`: each format end to end (progress on stderr, the files, what reads them
back), and every bad path and option refused in one line before anything is loaded, with what
was there left as it was."""

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
from gguf import GGUFReader

import export_models as em
from py_engine.cli import main
from py_engine.export import merged as merged_module
from py_engine.formats import safetensors
from py_engine.formats.output_dir import MARKER
from test_output_dir import snapshot


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    path = tmp_path_factory.mktemp("export-cli")
    chat, chat_adapter = em.chat_with_adapter(path, "llama")
    bert, bert_adapter = em.classifier_with_adapter(path)
    return {"path": path, "chat": chat, "chat_adapter": chat_adapter, "bert": bert,
            "bert_adapter": bert_adapter}


def export(capsys, *argv):
    code = main(["export", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.err


def test_gguf_with_progress_and_modelfile(ws, tmp_path, capsys):
    code, err = export(capsys, "--format", "gguf", "--model", ws["chat"], "--adapter",
                       ws["chat_adapter"], "--out", tmp_path / "gguf", "--quant", "q8_0")
    assert code == 0, err
    lines = err.splitlines()
    assert lines[:4] == ["export: embeddings", "export: layer 1/2", "export: layer 2/2",
                         "export: head"]
    assert lines[-1].startswith(f"wrote {tmp_path / 'gguf'} (Modelfile ")
    out = tmp_path / "gguf"
    assert {p.name for p in out.iterdir()} == {"model.gguf", "Modelfile", MARKER}
    reader = GGUFReader(out / "model.gguf")
    assert bytes(reader.fields["general.name"].parts[-1]).decode() == "gguf"
    assert (out / "Modelfile").read_text().startswith("FROM ./model.gguf\nTEMPLATE")
    # Written by py_engine: the same command may replace it.
    code, err = export(capsys, "--format", "gguf", "--model", ws["chat"], "--out", out,
                       "--name", "base")
    assert code == 0, err
    assert bytes(GGUFReader(out / "model.gguf").fields["general.name"].parts[-1]).decode() == "base"


def test_gguf_lora_merged_and_onnx(ws, tmp_path, capsys):
    code, err = export(capsys, "--format", "gguf-lora", "--model", ws["chat"], "--adapter",
                       ws["chat_adapter"], "--out", tmp_path / "lora")
    assert code == 0, err
    reader = GGUFReader(tmp_path / "lora" / "adapter.gguf")
    assert len(reader.tensors) == 28
    code, err = export(capsys, "--format", "merged", "--model", ws["chat"], "--adapter",
                       ws["chat_adapter"], "--out", tmp_path / "merged")
    assert code == 0, err
    assert len(safetensors.load(tmp_path / "merged" / "model.safetensors").keys()) == 21
    code, err = export(capsys, "--format", "onnx", "--model", ws["bert"], "--adapter",
                       ws["bert_adapter"], "--out", tmp_path / "onnx", "--quant", "int8")
    assert code == 0, err
    assert "export: onnx: weights quantized to int8" in err
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    ids = np.array([[2, 10, 11, 3]], np.int64)
    probs = session.run(["probabilities"], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                            "token_type_ids": np.zeros_like(ids)})[0]
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-5


@pytest.fixture
def nothing_loads(monkeypatch):
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(merged_module, "load_merged", loaded)


BAD = [
    (["--format", "gguf", "--model", "{bert}", "--adapter", "{bert_adapter}"],
     "is a classifier checkpoint: GGUF holds chat models"),
    (["--format", "onnx", "--model", "{chat}"], "is a chat model checkpoint: the ONNX export is "
                                                "for classifiers"),
    (["--format", "onnx", "--model", "{bert}"], "--format onnx needs --adapter"),
    (["--format", "merged", "--model", "{bert}"], "--format merged needs --adapter"),
    (["--format", "gguf-lora", "--model", "{chat}"], "--format gguf-lora needs --adapter"),
    (["--format", "gguf", "--model", "{chat}", "--quant", "int8"],
     "--quant int8 is not a choice for --format gguf (choose f16, q8_0, q4_0, f32)"),
    (["--format", "merged", "--model", "{chat}", "--quant", "q8_0"], "--quant q8_0 is not a choice"),
    (["--format", "onnx", "--model", "{bert}", "--adapter", "{bert_adapter}", "--name", "x"],
     "--name is for --format gguf"),
    (["--format", "gguf", "--model", "{chat}", "--adapter", "{bert_adapter}"],
     "a sequence classifier (a SEQ_CLS adapter): --format merged exports it"),
    (["--format", "gguf", "--model", "{path}/nowhere"], "no model directory at"),
    (["--format", "gguf", "--model", "{chat}", "--adapter", "{path}/nowhere"],
     "no adapter directory at"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_options_are_one_line_before_loading(ws, tmp_path, capsys, nothing_loads, argv,
                                                 message):
    argv = [a.format(**{k: str(v) for k, v in ws.items()}) for a in argv]
    code, err = export(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith("py-engine: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_outputs_that_would_destroy_something_are_refused(ws, tmp_path, capsys, nothing_loads):
    before = snapshot(ws["path"])
    for out, message in ((ws["chat"], "it is the model directory"),
                         (ws["chat_adapter"], "it is the adapter"),
                         (ws["path"], "it holds the model directory")):
        code, err = export(capsys, "--format", "gguf", "--model", ws["chat"], "--adapter",
                           ws["chat_adapter"], "--out", out)
        assert code == 2 and message in err, err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, err = export(capsys, "--format", "gguf", "--model", ws["chat"], "--out", foreign)
    assert code == 2 and "holds files py_engine did not write" in err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert snapshot(ws["path"]) == before


def test_mean_pooled_classifier_merged_is_refused_before_loading(ws, tmp_path, capsys,
                                                                 nothing_loads):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in ws["bert_adapter"].iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    (adapter / "head_config.json").write_text(json.dumps({"pooling": "mean"}))
    code, err = export(capsys, "--format", "merged", "--model", ws["bert"], "--adapter", adapter,
                       "--out", tmp_path / "out")
    assert code == 2 and "--format onnx" in err


def test_a_diverged_adapter_writes_nothing(ws, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in ws["chat_adapter"].iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    tensors = safetensors.load(ws["chat_adapter"] / "adapter_model.safetensors")
    values = {k: (tensors.info(k)[0], tensors.info(k)[1], bytearray(tensors.raw(k)))
              for k in tensors.keys()}
    name = next(k for k in values if "lora_B" in k)
    values[name][2][0:4] = np.array([np.nan], np.float32).tobytes()
    safetensors.save(values, adapter / "adapter_model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"written_by": "py_engine", "files": ["model.gguf"]}))
    (out / "model.gguf").write_bytes(b"the good one")
    code, err = export(capsys, "--format", "gguf", "--model", ws["chat"], "--adapter", adapter,
                       "--out", out)
    assert code == 2 and "NaN" in err, err
    assert (out / "model.gguf").read_bytes() == b"the good one"


def test_a_chat_adapter_that_trains_whole_modules_exports_merged_only(ws, tmp_path, capsys):
    """modules_to_save on a language model's adapter (an output layer or embedding trained in
    full, as when tokens were added): the GGUF adapter, which llama.cpp reads as lora_a and
    lora_b pairs only, is refused by name (it used to leave the trained output layer out
    without a word); the merged exports carry it (tests/test_saved_modules.py compares them
    with PEFT)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(ws["chat"]),
                          PeftLoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"],
                                         modules_to_save=["lm_head"]))
    peft.save_pretrained(tmp_path / "adapter")
    assert "base_model.model.lm_head.weight" in safetensors.load(
        tmp_path / "adapter" / "adapter_model.safetensors").keys()
    code, err = export(capsys, "--format", "gguf-lora", "--model", ws["chat"], "--adapter",
                       tmp_path / "adapter", "--out", tmp_path / "gguf-lora")
    assert code != 0 and re.search(r"modules_to_save \['lm_head'\] trains those modules in full "
                                   r"beside the LoRA, and llama.cpp's LoRA adapters hold lora_a "
                                   r"and lora_b only; export the merged model", err), err
    assert not (tmp_path / "gguf-lora").exists()
    for fmt, made in (("gguf", "model.gguf"), ("merged", "model.safetensors")):
        code, err = export(capsys, "--format", fmt, "--model", ws["chat"], "--adapter",
                           tmp_path / "adapter", "--out", tmp_path / fmt)
        assert code == 0 and (tmp_path / fmt / made).is_file(), (fmt, err)


@pytest.mark.parametrize("table, gguf_name", [("embed_tokens", "token_embd"),
                                               ("lm_head", "output")])
def test_a_chat_adapter_with_a_lora_on_a_table_exports_in_every_format(ws, tmp_path, capsys,
                                                                       table, gguf_name):
    """A LoRA on the embedding or the output layer (PEFT's, models/lora_tables.py) loads and
    exports merged, as GGUF and as a llama.cpp adapter holding the table's pair
    (tests/test_lora_tables.py compares each with PEFT's model)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(6)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(ws["chat"]),
                          PeftLoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", table]))
    peft.save_pretrained(tmp_path / "adapter")
    for fmt, made in (("gguf-lora", "adapter.gguf"), ("gguf", "model.gguf"),
                      ("merged", "model.safetensors")):
        code, err = export(capsys, "--format", fmt, "--model", ws["chat"], "--adapter",
                           tmp_path / "adapter", "--out", tmp_path / fmt)
        assert code == 0 and (tmp_path / fmt / made).is_file(), (fmt, err)
    names = {t.name for t in GGUFReader(tmp_path / "gguf-lora" / "adapter.gguf").tensors}
    assert {f"{gguf_name}.weight.lora_a", f"{gguf_name}.weight.lora_b"} <= names, names
