"""`py-engine train | score | generate` on a T5 encoder-decoder (FLAN-T5 layout): a tiny
checkpoint directory with its own Unigram tokenizer.json, no tokenizer given anywhere. The
adapter trained from the command line loads in PEFT (task SEQ_2_SEQ_LM) with the engine's
logits, score gives transformers + PEFT's mean target loss, generate prints the learned target,
`export --format merged` writes a checkpoint transformers loads with PEFT's merged logits
(--format gguf: tests/test_t5_gguf.py); `--mode full` and `--mode hybrid` write whole
checkpoints transformers loads with the engine's logits, and a full run kept with --state continues
after an interruption to the checkpoint an uninterrupted run writes; options that do not apply to T5 are
refused by name; another encoder-decoder is refused naming the supported one."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer, T5ForConditionalGeneration

from conftest import run, stopped_after_first_epoch
from py_engine.train.seq2seq import Seq2SeqModel
from t5_checkpoints import tiny_t5
from t5_tokenizer import t5_dir
from test_cli_classifier import cli, write_jsonl
from test_t5_reference import relative

PAIRS = [("translate to german: hello world", "hallo welt"),
         ("summarize: the cat sat on the mat", "a cat on a mat"),
         ("question: what is two plus two? answer", "four"),
         ("the quick brown fox", "jumps over the lazy dog")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA adapter trained by `py-engine train` on the pairs (the one command-line run the
    tests below share)."""
    root = tmp_path_factory.mktemp("t5-cli")
    model, tok = t5_dir(root / "t5")
    data = write_jsonl(root / "pairs.jsonl", [{"input": s, "target": t} for s, t in PAIRS])
    out = cli("train", "--model", model, "--data", data, "--out", root / "adapter",
              "--epochs", 60, "--lr", 1e-2, "--batch-size", 4, "--max-length", 64, "--r", 8,
              "--lora-alpha", 16, "--target-modules", "q,v,wo", "--seed", 3, "--dropout", 0)
    steps = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    return root, model, tok, data, steps


def peft_model(model_dir, adapter):
    base = tiny_t5(model_dir.parent / "base").float()
    return PeftModel.from_pretrained(base, adapter).double().eval()


def test_train_writes_a_peft_seq2seq_adapter_with_the_engines_logits(trained):
    root, model, tok, _, steps = trained
    assert len(steps) == 60 and steps[-1]["loss"] < 0.05 * steps[0]["loss"]
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert sorted(config["target_modules"]) == ["q", "v", "wo"]
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    peft = peft_model(model, root / "adapter")
    engine = run(Seq2SeqModel.load(model, adapter_dir=root / "adapter"))
    ids, target = tok.encode(PAIRS[0][0]).ids, tok.encode(PAIRS[0][1]).ids
    decoder = engine.decoder()
    got = [run(decoder.prefill(ids))] + [run(decoder.step(t)) for t in target]
    with torch.no_grad():
        want = peft(input_ids=torch.as_tensor([ids]),
                    decoder_input_ids=torch.as_tensor([[0] + target])).logits[0].numpy()
    assert relative(np.stack(got), want) <= 1e-5        # float32 engine


@pytest.mark.parametrize("source, target", PAIRS[:2])
def test_generate_prints_the_learned_target(trained, source, target):
    root, model, *_ = trained
    out = cli("generate", "--model", model, "--adapter", root / "adapter", "--prompt", source,
              "--max-new-tokens", 32)
    assert out.stdout == target + "\n"


def test_score_gives_transformers_mean_target_loss(trained):
    root, model, tok, data, _ = trained
    out = cli("score", "--model", model, "--adapter", root / "adapter", "--data", data)
    scores = [json.loads(line) for line in out.stdout.splitlines()]
    peft = peft_model(model, root / "adapter")
    assert len(scores) == len(PAIRS)
    for score, (source, target) in zip(scores, PAIRS):
        labels = tok.encode(target).ids
        with torch.no_grad():
            want = peft(input_ids=torch.as_tensor([tok.encode(source).ids]),
                        labels=torch.as_tensor([labels])).loss.item()
        assert score["tokens"] == len(labels)
        assert abs(score["loss"] - want) <= 1e-4 * max(want, 1e-2)    # float32 engine


def test_export_merged_loads_in_transformers_with_pefts_merged_logits(trained):
    root, model, tok, *_ = trained
    out = cli("export", "--format", "merged", "--model", model, "--adapter", root / "adapter",
              "--out", root / "merged")
    assert "merged: encoder layer 1/" in out.stderr and "merged: decoder layer 1/" in out.stderr
    merged = T5ForConditionalGeneration.from_pretrained(root / "merged").double().eval()
    folded = peft_model(model, root / "adapter").merge_and_unload()
    ids = torch.as_tensor([tok.encode(PAIRS[1][0]).ids])
    decoder_ids = torch.as_tensor([[0] + tok.encode(PAIRS[1][1]).ids])
    with torch.no_grad():
        got = merged(input_ids=ids, decoder_input_ids=decoder_ids).logits[0].numpy()
        want = folded(input_ids=ids, decoder_input_ids=decoder_ids).logits[0].numpy()
        base = tiny_t5(root / "base").double()(input_ids=ids, decoder_input_ids=decoder_ids).logits[0].numpy()
    assert relative(got, want) <= 1e-6              # float32 weights both ways
    assert relative(base, want) > 1e-2              # the adapter is in it
    # the tokenizer travels with it: transformers generates the learned target from it alone
    tokenizer = AutoTokenizer.from_pretrained(root / "merged")
    # (use_cache=False: transformers' cache of a saved T5 with fewer encoder than decoder layers
    # is made for the encoder's count)
    generated = merged.generate(**tokenizer(PAIRS[0][0], return_tensors="pt"), max_new_tokens=16,
                                use_cache=False)
    assert tokenizer.decode(generated[0], skip_special_tokens=True) == PAIRS[0][1]


def engine_against_transformers(checkpoint, tok, pair):
    """The engine's logits (Seq2SeqModel.load of `checkpoint`, its KV-cache decoder) for a pair,
    transformers' from the same directory, and transformers' model."""
    hf = T5ForConditionalGeneration.from_pretrained(checkpoint).double().eval()
    decoder = run(Seq2SeqModel.load(checkpoint)).decoder()
    ids, target = tok.encode(pair[0]).ids, tok.encode(pair[1]).ids
    got = [run(decoder.prefill(ids))] + [run(decoder.step(t)) for t in target]
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor([ids]), decoder_input_ids=torch.as_tensor([[0] + target])).logits[0]
    return np.stack(got), want.numpy(), hf


@pytest.mark.parametrize("mode, options", [("full", ["--lr", 3e-3]),
                                           ("hybrid", ["--lr", 1e-9, "--full-lr", 3e-3, "--patience", 1])])
def test_full_and_hybrid_write_a_checkpoint_transformers_loads(tmp_path, mode, options):
    """Every weight trains (the shared embedding and both relative position bias tables
    included; hybrid after its LoRA phase, too slow to learn, plateaus): OUT is a whole checkpoint whose logits in
    transformers are the engine's, which generates the learned targets with the tokenizer that
    travelled with it."""
    from safetensors.numpy import load_file

    model, tok = t5_dir(tmp_path / "t5")
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"input": s, "target": t} for s, t in PAIRS])
    out = cli("train", "--model", model, "--data", data, "--out", tmp_path / "out", "--mode", mode,
              *options, "--epochs", 40, "--batch-size", 4, "--max-length", 64, "--seed", 3,
              "--dropout", 0, *(["--validation", data] if mode == "hybrid" else []))
    assert f"saved checkpoint to {tmp_path / 'out'} (4 pairs, mode {mode})" in out.stderr, out.stderr
    steps = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert steps[-1]["loss"] < 0.05 * steps[0]["loss"]
    if mode == "hybrid":
        assert "switched to full fine-tuning" in out.stderr, out.stderr
    before, after = load_file(model / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert set(after) == set(before)
    unchanged = [n for n in before if np.array_equal(before[n], after[n])]
    assert not unchanged, unchanged         # bias tables, embedding, head and norms included
    got, want, hf = engine_against_transformers(tmp_path / "out", tok, PAIRS[1])
    assert relative(got, want) <= 1e-5      # float32 engine
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    for source, target in PAIRS[:2]:
        generated = hf.generate(**tokenizer(source, return_tensors="pt"), max_new_tokens=16, use_cache=False)
        assert tokenizer.decode(generated[0], skip_special_tokens=True) == target


def test_a_full_run_with_state_continues_where_it_stopped(tmp_path, monkeypatch, capsys):
    """--mode full --state keeps every weight and the optimizer after each epoch: the same
    command after an interruption continues from it and writes the checkpoint an uninterrupted
    run writes, tensor for tensor."""
    from safetensors.numpy import load_file

    from py_engine.cli import main

    model, _ = t5_dir(tmp_path / "t5")
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"input": s, "target": t} for s, t in PAIRS])
    common = [str(a) for a in ("train", "--model", model, "--data", data, "--mode", "full",
                               "--lr", 3e-3, "--epochs", 3, "--batch-size", 2, "--max-length", 64,
                               "--seed", 3, "--dropout", 0)]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    state = tmp_path / "state"
    with stopped_after_first_epoch(monkeypatch):
        assert main([*common, "--out", str(tmp_path / "resumed"), "--state", str(state)]) != 0
    assert not (tmp_path / "resumed").exists() and (state / "training_state.json").is_file()
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "resumed"), "--state", str(state)]) == 0
    assert "continuing from" in capsys.readouterr().err
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    base = load_file(model / "model.safetensors")
    assert set(resumed) == set(whole)
    for name in whole:
        assert np.array_equal(resumed[name], whole[name]), name
    assert not any(np.array_equal(base[n], whole[n]) for n in base)   # every tensor trained


def test_onnx_is_refused_naming_gguf_and_merged(trained, tmp_path):
    root, model, *_ = trained
    out = cli("export", "--format", "onnx", "--model", model, "--adapter", root / "adapter",
              "--out", tmp_path / "x", check=False)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "is a T5 encoder-decoder checkpoint" in out.stderr, out.stderr
    assert "export a chat model or a T5 with --format gguf or merged" in out.stderr, out.stderr
    assert not (tmp_path / "x").exists()


def test_the_adapter_exports_for_llama_cpps_lora(trained, tmp_path):
    """`--format gguf-lora` on a T5: OUT/adapter.gguf of t5 architecture, a pair per linear
    the adapter wraps (tests/test_t5_gguf.py checks the weights it gives)."""
    from gguf import GGUFReader

    root, model, *_ = trained
    out = cli("export", "--format", "gguf-lora", "--model", model, "--adapter", root / "adapter",
              "--out", tmp_path / "lora", check=False)
    assert out.returncode == 0, out.stderr
    reader = GGUFReader(tmp_path / "lora" / "adapter.gguf")
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "t5"
    names = [t.name for t in reader.tensors]
    assert names and all(n.startswith(("enc.blk.", "dec.blk.")) for n in names), names[:4]
    assert len(names) % 2 == 0 and {n.rsplit(".", 1)[1] for n in names} == {"lora_a", "lora_b"}


@pytest.mark.parametrize("command, options, message", [
    ("train", ["--mode", "full", "--r", "4"], "--r: only for LoRA; --mode full trains every weight"),
    ("train", ["--patience", "2"], "--patience: only for --mode hybrid"),
    ("train", ["--pooling", "mean"], "--pooling: only for classifiers; .* is a T5 encoder-decoder"),
    ("train", ["--backend", "gpu", "--base-dtype", "int8"],
     "--base-dtype int8: T5 encoder-decoders keep f32 base weights"),
    ("generate", ["--prompt", "hi", "--raw"], "--raw: .* is a T5 encoder-decoder"),
    ("generate", ["--prompt", "hi", "--adapter", "CAUSAL"],
     "is a CAUSAL_LM adapter; this command needs a SEQ_2_SEQ_LM one"),
])
def test_options_that_do_not_apply_are_refused_by_name(tmp_path, command, options, message):
    import re

    model, _ = t5_dir(tmp_path / "t5")
    (tmp_path / "CAUSAL").mkdir()
    (tmp_path / "CAUSAL" / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    options = [str(tmp_path / o) if o == "CAUSAL" else o for o in options]
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"input": "a", "target": "b"}])
    given = ["--data", data, "--out", tmp_path / "x"] if command == "train" else []
    out = cli(command, "--model", model, *given, *options, check=False)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_without_tokenizer_json_is_refused(tmp_path):
    tiny_t5(tmp_path / "t5")
    out = cli("generate", "--model", tmp_path / "t5", "--prompt", "hi", check=False)
    assert out.returncode == 2 and "has no tokenizer.json" in out.stderr


def test_another_encoder_decoder_is_refused_naming_t5(tmp_path):
    model = tmp_path / "bart"
    tiny_t5(model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="bart", architectures=["BartForConditionalGeneration"])
    (model / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"input": "a", "target": "b"}])
    out = cli("train", "--model", model, "--data", data, "--out", tmp_path / "x", check=False)
    assert out.returncode == 2
    assert "model_type 'bart' is an encoder-decoder py_engine does not run; supported " \
           "encoder-decoders: T5 (t5)" in out.stderr
