"""GGUF export of a Phi-3 family model, llama.cpp's "phi3" architecture as its converter writes
it: tensor names as gguf-py's own tensor map gives them (fused attn_qkv, gate_up_proj as ffn_up,
no row permutation), LongRoPE's factors as the rope_factors_long / rope_factors_short tensors
and its switch and attention factor as metadata; transformers loads the file back as a
Phi3ForCausalLM with our logits; a PEFT adapter on the fused projections as llama.cpp's --lora
file applies to the base as the merged weights."""

import math

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, GGUFReader, TensorNameMap
from transformers import AutoModelForCausalLM, AutoTokenizer

import export_models as em
from py_engine.export import gguf
from py_engine.export.gguf_llama import adapter_writer, model_writer
from py_engine.export.merged import load_merged
from py_engine.formats.peft_adapter import load_adapter
from py_engine.kernels.rope import rope_attention_scaling
from py_engine.models.lora_config import LoraConfig
from test_export_gguf import LOGIT_BOUNDS, PROMPT, field, write


@pytest.fixture(scope="module")
def phi3(tmp_path_factory):
    path = tmp_path_factory.mktemp("phi3")
    model, adapter = em.chat_with_adapter(path, "phi3")
    return path, model, adapter, load_merged(model, adapter)


def library_name(hf_name, blocks):
    """gguf-py's name for a transformers tensor of a phi3 model."""
    base, kind = hf_name.rsplit(".", 1)
    return TensorNameMap(MODEL_ARCH.PHI3, blocks).get_name(base) + "." + kind


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.Q8_0])
def test_gguf_reads_back_as_llama_cpp_names_it(phi3, ggml_type):
    path, model, _, merged = phi3
    config = merged.config
    reader = GGUFReader(write(model_writer(merged, ggml_type, "tiny"), path / f"r-{ggml_type}.gguf"))
    assert field(reader, "general.architecture") == "phi3"
    assert field(reader, "phi3.rope.dimension_count") == config.head_dim
    assert field(reader, "phi3.attention.sliding_window") == 0
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope"
    assert field(reader, "phi3.rope.scaling.original_context_length") == 16
    # the converter's default attention factor: sqrt(1 + ln(256 / 16) / ln(16))
    assert math.isclose(field(reader, "phi3.rope.scaling.attn_factor"),
                        math.sqrt(1 + math.log(256 / 16) / math.log(16)), rel_tol=1e-6)
    assert math.isclose(rope_attention_scaling(rope), math.sqrt(1 + math.log(16) / math.log(16)))
    tensors = {t.name: t for t in reader.tensors}
    for kind in ("long", "short"):
        got = np.asarray(tensors[f"rope_factors_{kind}.weight"].data)
        np.testing.assert_array_equal(got, np.float32(rope[f"{kind}_factor"]))
    expected = {library_name(n, config.num_hidden_layers): n for n in merged.names()}
    assert set(tensors) - {"rope_factors_long.weight", "rope_factors_short.weight"} == set(expected)
    assert "blk.0.attn_qkv.weight" in tensors and "blk.1.ffn_up.weight" in tensors
    for name, hf in expected.items():
        want = np.asarray(merged.floats(hf), np.float32).reshape(merged.shape(hf))
        assert list(reversed(tensors[name].shape.tolist())) == list(want.shape), name
        if ggml_type == gguf.F32:
            assert np.array_equal(np.asarray(tensors[name].data).reshape(want.shape), want), name


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16, gguf.Q8_0])
def test_transformers_loads_the_gguf_with_our_logits(phi3, ggml_type):
    """transformers reads the file's weights as a Phi3ForCausalLM (its GGUF reader takes no
    rope scaling: the weights go under the checkpoint's own config, LongRoPE included, which
    test_gguf_reads_back_as_llama_cpp_names_it checks the metadata against), with our logits
    on the merged model past LongRoPE's switch."""
    path, model, adapter, merged = phi3
    ids = AutoTokenizer.from_pretrained(model)(PROMPT)["input_ids"]
    assert len(ids) > 16
    ours = em.our_decoder_logits(model, adapter, ids)[-1]
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"hf-{ggml_type}.gguf")
    read = AutoModelForCausalLM.from_pretrained(path, gguf_file=out.name)
    assert type(read).__name__ == "Phi3ForCausalLM"
    hf = AutoModelForCausalLM.from_pretrained(model)
    hf.load_state_dict(read.state_dict())
    with torch.no_grad():
        theirs = hf.eval()(torch.tensor([ids])).logits[0, -1].double().numpy()
    assert em.relative_error(theirs, ours) <= LOGIT_BOUNDS[ggml_type]


def test_adapter_on_the_fused_projections(phi3):
    """llama.cpp applies W + alpha / r * B.A per tensor: the adapter file's lora_a / lora_b under
    attn_qkv and ffn_up give the merged weights."""
    path, model, adapter, merged = phi3
    config, tensors, _ = load_adapter(adapter)
    lora = LoraConfig.from_peft_dict(config)
    reader = GGUFReader(write(adapter_writer(merged.config, lora, tensors, gguf.F32, "tiny"),
                              path / "adapter.gguf"))
    assert field(reader, "general.architecture") == "phi3"
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    base = load_merged(model)
    alpha = field(reader, "adapter.lora.alpha")
    for hf in ("model.layers.0.self_attn.qkv_proj.weight", "model.layers.1.mlp.gate_up_proj.weight"):
        name = library_name(hf, merged.config.num_hidden_layers)
        a, b = got[name + ".lora_a"], got[name + ".lora_b"]
        shape = merged.shape(hf)
        w = np.asarray(base.floats(hf), np.float32).reshape(shape).astype(np.float64)
        want = np.asarray(merged.floats(hf), np.float32).reshape(shape)
        applied = w + alpha / lora.r * (b.astype(np.float64) @ a.astype(np.float64))
        assert em.relative_error(applied, want) <= 1e-6, hf


def test_a_partial_rotary_phi3_writes_its_rotated_dimensions(tmp_path):
    """Phi-4-mini's partial rotary embedding: rope.dimension_count is the rotated dimensions
    (convert_hf_to_gguf.py's int(partial_rotary_factor * hidden / heads)), and LongRoPE's factor
    tensors hold one number per rotated pair."""
    from phi3_checkpoints import CASES, tiny_phi3
    from tiny_chat import train_tokenizer

    tok = train_tokenizer()
    tiny_phi3(tmp_path, vocab_size=tok.get_vocab_size(), **CASES["partial-longrope"])
    tok.save(str(tmp_path / "tokenizer.json"))
    merged = load_merged(tmp_path)
    assert (merged.config.head_dim, merged.config.rotary_dim) == (8, 4)
    reader = GGUFReader(write(model_writer(merged, gguf.F32, "tiny"), tmp_path / "partial.gguf"))
    assert field(reader, "phi3.rope.dimension_count") == 4
    tensors = {t.name: t for t in reader.tensors}
    for kind in ("long", "short"):
        got = np.asarray(tensors[f"rope_factors_{kind}.weight"].data)
        np.testing.assert_array_equal(got, np.float32(merged.config.rope_parameters[f"{kind}_factor"]))
        assert got.size == 2
