"""GGUF export of the GPT-2 family (llama.cpp's "gpt2" architecture), checked with code we did
not write: the `gguf` package reads the file back tensor for tensor against PEFT's merged model
(convert_hf_to_gguf.py's names, Conv1D weights transposed to [out, in], the tied head written
again as output.weight), and transformers loads the file (from_pretrained(..., gguf_file=)) with
PEFT's logits and greedy tokens. tests/llama_cpp_check.py runs the same files in llama.cpp."""

import json

import numpy as np
import pytest
import torch
from gguf import GGUFReader, dequantize, quants
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

import export_models as em
from gpt2_checkpoints import tiny_dialogpt_dir
from test_export_gguf import assert_lora_gives_the_merged_weights, LIBRARY_TYPES, LOGIT_BOUNDS, PROMPT, field, write
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer
from py_engine.export.merged import load_merged
from py_engine.models.gpt2_config import Gpt2Config

CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
LAYER = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
         "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def dialogpt_with_adapter(path, seed=0):
    """(model_dir, adapter_dir, PEFT's merged GPT2LMHeadModel in float32): a tiny DialoGPT-like
    checkpoint (n_embd 32: rows split into 32-value blocks; GPT-2's 1024 positions, the only
    count transformers' GGUF loader gives a gpt2 model) and a PEFT adapter on every Conv1D
    (fan_in_fan_out) with lora_B drawn at random."""
    model_dir = tiny_dialogpt_dir(path / "dialogpt", seed=seed, n_positions=1024)
    adapter, merged = em.merged_with_adapter(GPT2LMHeadModel, model_dir, path,
                                             ["c_attn", "c_proj", "c_fc"], seed=seed,
                                             fan_in_fan_out=True)
    return model_dir, adapter, merged


@pytest.fixture(scope="module")
def dialogpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2-gguf")
    model, adapter, merged_hf = dialogpt_with_adapter(path)
    return path, model, adapter, merged_hf, load_merged(model, adapter)


def converter_tensors(hf):
    """{GGUF name: float32 array} as convert_hf_to_gguf.py's GPT2Model makes them from a
    GPT2LMHeadModel's state dict."""
    out = {}
    for name, value in hf.state_dict().items():
        value = value.float().numpy()
        parts = name.split(".")
        if name == "lm_head.weight":
            continue
        if name.startswith("transformer.h."):
            module = ".".join(parts[3:-1])
            if module in CONV1D and parts[-1] == "weight":
                value = value.T
            out[f"blk.{parts[2]}.{LAYER[module]}.{parts[-1]}"] = value
        else:
            target = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
                      "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}[name]
            out[target] = value
    out["output.weight"] = out["token_embd.weight"]
    return out


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0])
def test_gpt2_gguf_reads_back_tensor_for_tensor(dialogpt, ggml_type):
    path, model, _, merged_hf, merged = dialogpt
    reader = GGUFReader(write(model_writer(merged, ggml_type, "tiny"), path / f"read-{ggml_type}.gguf"))
    config = Gpt2Config.from_file(model)
    assert field(reader, "general.architecture") == "gpt2"
    assert field(reader, "general.file_type") == {0: 0, 1: 1, 8: 7, 2: 2}[ggml_type]
    for key, want in (("block_count", config.num_hidden_layers), ("context_length", 1024),
                      ("embedding_length", 32), ("feed_forward_length", 128), ("attention.head_count", 4)):
        assert field(reader, f"gpt2.{key}") == want, key
    assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5, rel=1e-6)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"

    want = converter_tensors(merged_hf)
    assert {t.name for t in reader.tensors} == set(want)
    for t in reader.tensors:
        w = want[t.name]
        assert list(reversed(t.shape.tolist())) == list(w.shape), t.name
        kind = ggml_type if w.ndim == 2 and t.name != "position_embd.weight" else gguf.F32
        if kind == gguf.Q4_0 and t.name in ("token_embd.weight", "output.weight"):
            kind = gguf.Q8_0
        assert t.tensor_type == LIBRARY_TYPES[kind], t.name
        if kind in (gguf.F32, gguf.F16):
            got = np.asarray(dequantize(t.data, t.tensor_type)).reshape(w.shape)
            ref = w.astype(np.float16).astype(np.float32) if kind == gguf.F16 else w
            # the merge is ours (W + s.B.A), PEFT's is torch's: float32 rounding apart, then
            # half an F16 step
            bound = (1e-6 if kind == gguf.F32 else 2 ** -10) * np.abs(ref).max()
            assert np.abs(got - ref).max() <= bound, t.name
        else:
            ours = dequantize(np.asarray(t.data), t.tensor_type).reshape(w.shape)
            theirs = dequantize(quants.quantize(w, LIBRARY_TYPES[kind]), LIBRARY_TYPES[kind]).reshape(w.shape)
            assert em.relative_error(ours, theirs) <= 1e-2, t.name


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0])
def test_transformers_loads_the_gpt2_gguf_with_peft_logits(dialogpt, ggml_type):
    path, model, _, merged_hf, merged = dialogpt
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"hf-{ggml_type}.gguf")
    hf = AutoModelForCausalLM.from_pretrained(path, gguf_file=out.name).eval()
    ids = AutoTokenizer.from_pretrained(model)(PROMPT)["input_ids"]
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].double().numpy()
        want = merged_hf(torch.tensor([ids])).logits[0].double().numpy()
    assert em.relative_error(theirs, want) <= LOGIT_BOUNDS[ggml_type]
    if ggml_type == gguf.F32:      # greedy generation: the same 32 tokens
        kwargs = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            a = hf.generate(torch.tensor([ids]), **kwargs)[0, len(ids):].tolist()
            b = merged_hf.generate(torch.tensor([ids]), **kwargs)[0, len(ids):].tolist()
        assert len(a) == 32 and a == b


def test_transformers_reads_the_gpt2_gguf_tokenizer(dialogpt):
    path, model, _, _, merged = dialogpt
    out = write(model_writer(merged, gguf.F32, "tiny"), path / "tok.gguf")
    theirs = AutoTokenizer.from_pretrained(path, gguf_file=out.name)
    ours = AutoTokenizer.from_pretrained(model)
    for text in (PROMPT, "Grüße aus München! 你好", "  spaces   and\ttabs\n"):
        assert theirs(text)["input_ids"] == ours(text)["input_ids"], text


def test_a_gpt2_adapter_over_the_base_gives_the_merged_weights(dialogpt, tmp_path):
    """GPT-2's Conv1D LoRA (fan_in_fan_out) on the fused attn_qkv and the others, for --lora."""
    _, model, adapter, _, _ = dialogpt
    n_layers = json.loads((model / "config.json").read_text())["n_layer"]
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=4 * n_layers)
