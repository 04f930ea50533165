"""GGUF export of the Phi-2 family (llama.cpp's "phi2" architecture), checked with code we did
not write: the `gguf` package's own phi2 tensor map names every tensor (q, k and v separate,
the biases, the head's bias) and GGUFReader reads each back against PEFT's merged
PhiForCausalLM; the metadata holds every key llama.cpp's phi2 loader reads, with the
checkpoint's values (partial rotary as rope.dimension_count).

transformers has no GGUF loader for phi2 (its GGUF support covers phi3, not phi), so no logits
come back through it here; tests/llama_cpp_check.py runs such files in llama.cpp by hand."""

import json

import numpy as np
import pytest
from gguf import MODEL_ARCH, GGUFReader, dequantize, get_tensor_name_map, quants
from transformers import PhiForCausalLM

import export_models as em
from phi_checkpoints import tiny_phi, tiny_phi_dir
from test_export_gguf import assert_lora_gives_the_merged_weights, LIBRARY_TYPES, field, write
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer
from py_engine.export.merged import ExportError, load_merged

TYPES = [gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0]
LINEARS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


def library_tensors(hf, arch, transform=None, skip=()):
    """{GGUF name: float32 array}: the merged state dict (less `skip`) under the gguf package's
    names for `arch` (convert_hf_to_gguf.py's map); transform(gguf name, array) -> the array
    written."""
    names = get_tensor_name_map(arch, hf.config.num_hidden_layers)
    out = {}
    for name, value in hf.state_dict().items():
        if name in skip:
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert target is not None, name
        value = value.float().numpy()
        out[target] = value if transform is None else transform(target, value)
    return out


def check_tensors(reader, want, ggml_type):
    """Every tensor of the file is `want`'s, in the type the export picks (1-D and norms F32;
    rows that make no 32-value block F16; with Q4_0 the embedding and output Q8_0), equal after
    dequantizing: F32 to float32 rounding, F16 to half a step, the block types within 1% of the
    gguf package's own quantization of the same values."""
    assert {t.name for t in reader.tensors} == set(want)
    for t in reader.tensors:
        w = want[t.name]
        assert list(reversed(t.shape.tolist())) == list(w.shape), t.name
        kind = gguf.F32 if w.ndim == 1 or t.name.endswith("_norm.weight") else ggml_type
        if kind == gguf.Q4_0 and t.name in ("token_embd.weight", "output.weight"):
            kind = gguf.Q8_0
        if kind in (gguf.Q8_0, gguf.Q4_0) and w.shape[-1] % 32:
            kind = gguf.F16
        assert t.tensor_type == LIBRARY_TYPES[kind], t.name
        got = np.asarray(dequantize(t.data, t.tensor_type)).reshape(w.shape)
        if kind in (gguf.F32, gguf.F16):
            ref = w.astype(np.float16).astype(np.float32) if kind == gguf.F16 else w
            # the merge is ours (W + s.B.A), PEFT's is torch's: float32 rounding apart, then
            # half an F16 step
            bound = (1e-6 if kind == gguf.F32 else 2 ** -10) * np.abs(ref).max()
            assert np.abs(got - ref).max() <= bound, t.name
        else:
            theirs = dequantize(quants.quantize(w, LIBRARY_TYPES[kind]), LIBRARY_TYPES[kind]).reshape(w.shape)
            assert em.relative_error(got, theirs) <= 1e-2, t.name


@pytest.fixture(scope="module")
def phi(tmp_path_factory):
    path = tmp_path_factory.mktemp("phi2-gguf")
    model = tiny_phi_dir(path / "phi")
    adapter, merged_hf = em.merged_with_adapter(PhiForCausalLM, model, path, LINEARS)
    return path, model, merged_hf, load_merged(model, adapter)


@pytest.mark.parametrize("ggml_type", TYPES)
def test_phi2_gguf_reads_back_tensor_for_tensor(phi, ggml_type):
    path, model, merged_hf, merged = phi
    reader = GGUFReader(write(model_writer(merged, ggml_type, "tiny"), path / f"read-{ggml_type}.gguf"))
    want = library_tensors(merged_hf, MODEL_ARCH.PHI2)
    assert {"blk.1.attn_q.bias", "blk.0.attn_norm.bias", "output.bias", "output_norm.bias"} <= set(want)
    check_tensors(reader, want, ggml_type)


def test_phi2_gguf_holds_what_llama_cpps_phi2_loader_reads(phi):
    path, model, merged_hf, merged = phi
    reader = GGUFReader(write(model_writer(merged, gguf.F16, "tiny"), path / "meta.gguf"))
    config = merged_hf.config
    assert field(reader, "general.architecture") == "phi2"
    assert field(reader, "general.file_type") == 1
    # transformers' own values: PhiAttention rotates int(head_dim * partial_rotary_factor)
    head_dim = config.hidden_size // config.num_attention_heads
    rotary = int(head_dim * config.rope_parameters["partial_rotary_factor"])
    assert rotary == 4
    for key, want in (("context_length", config.max_position_embeddings),
                      ("embedding_length", config.hidden_size),
                      ("feed_forward_length", config.intermediate_size),
                      ("block_count", config.num_hidden_layers),
                      ("attention.head_count", config.num_attention_heads),
                      ("attention.head_count_kv", config.num_key_value_heads),
                      ("rope.dimension_count", rotary)):
        assert field(reader, f"phi2.{key}") == want, key
    assert field(reader, "phi2.attention.layer_norm_epsilon") == pytest.approx(config.layer_norm_eps, rel=1e-6)
    assert field(reader, "phi2.rope.freq_base") == config.rope_parameters["rope_theta"]
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    eos = config.eos_token_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == eos
    assert field(reader, "tokenizer.ggml.tokens")[eos] == "<|endoftext|>"


def test_a_tied_phi_head_is_written_as_output(tmp_path):
    """llama.cpp's phi2 needs output.weight: a tied checkpoint's embedding is written again."""
    model = tiny_phi_dir(tmp_path / "phi", tie_word_embeddings=True)
    hf = PhiForCausalLM.from_pretrained(model).eval()
    reader = GGUFReader(write(model_writer(load_merged(model), gguf.F32, "tiny"), tmp_path / "tied.gguf"))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    np.testing.assert_array_equal(tensors["output.weight"], hf.model.embed_tokens.weight.detach().numpy())
    np.testing.assert_array_equal(tensors["output.bias"], hf.lm_head.bias.detach().numpy())


def test_a_phi_model_llama_cpp_would_run_differently_is_refused(tmp_path):
    tiny_phi(tmp_path, hidden_act="gelu")          # exact GELU: llama.cpp's phi2 runs the tanh form
    with pytest.raises(ExportError, match="hidden_act 'gelu' is not supported: llama.cpp's phi2 "
                                          "runs the MLP with GELU's tanh form"):
        model_writer(load_merged(tmp_path), gguf.F16, "tiny")


def test_a_phi_adapter_over_the_base_gives_the_merged_weights(phi, tmp_path):
    _, model, _, _ = phi
    adapter, _ = em.merged_with_adapter(PhiForCausalLM, model, tmp_path, LINEARS)
    n_layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=len(LINEARS) * n_layers)
