"""GGUF export of Gemma (v1, llama.cpp's "gemma" architecture), checked with code we did not
write: the `gguf` package's own gemma tensor map names every tensor and GGUFReader reads each
back against PEFT's merged GemmaForCausalLM, with every norm weight as 1 + the checkpoint's
(convert_hf_to_gguf.py's GemmaModel adds the 1 that transformers' GemmaRMSNorm adds at run
time), the tied head not written (llama.cpp reuses token_embd) and no row permutation; the
metadata holds every key llama.cpp's gemma loader reads. The sqrt(hidden_size) embedding scale
is llama.cpp's to apply, so nothing of it is in the file.

transformers reads GGUF for gemma2 and gemma3 but not gemma, so no logits come back through it
here."""


import numpy as np
import pytest
from gguf import MODEL_ARCH, GGUFReader
from transformers import GemmaForCausalLM

import export_models as em
from mistral_gemma_checkpoints import tiny_checkpoint
from test_export_gguf import assert_lora_gives_the_merged_weights, field, write
from test_phi2_gguf import TYPES, check_tensors, library_tensors
from tiny_chat import train_tokenizer
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer
from py_engine.export.merged import ExportError, load_merged

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def gemma_dir(path, family="gemma", **overrides):
    """A tiny Gemma (or Gemma 3: family "gemma3") checkpoint with a byte-level BPE
    tokenizer.json (its vocabulary the embedding's rows)."""
    tok = train_tokenizer()
    tiny_checkpoint(family, path, **dict(dict(vocab_size=tok.get_vocab_size()), **overrides))
    tok.save(str(path / "tokenizer.json"))
    return path


def assert_export_refused(path, family, fields, message):
    """A tiny `family` checkpoint with `fields` that llama.cpp would run differently: its GGUF
    export is refused with a message matching `message`."""
    gemma_dir(path, family, **fields)
    with pytest.raises(ExportError, match=message):
        model_writer(load_merged(path), gguf.F16, "tiny")


def merged_gemma(tmp_path_factory, family, model_class, **overrides):
    """(path, model_dir, PEFT's merged model, our MergedModel) of a tiny `family` checkpoint
    with a random adapter on every projection."""
    path = tmp_path_factory.mktemp(f"{family}-gguf")
    model = gemma_dir(path / family, family, **overrides)
    adapter, merged_hf = em.merged_with_adapter(model_class, model, path, LINEARS)
    return path, model, merged_hf, load_merged(model, adapter)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return merged_gemma(tmp_path_factory, "gemma", GemmaForCausalLM)


def plus_one_on_norms(name, value):
    return value + 1 if name.endswith("_norm.weight") else value


def check_read_back(merged_family, arch, ggml_type, names):
    """The GGUF of a merged Gemma-family model (merged_gemma's tuple), read back, holds every
    tensor of PEFT's merged model under the gguf package's names for `arch` (norms as 1 +
    weight; the tied head, the embedding, not written again), `names` among them."""
    path, _, merged_hf, merged = merged_family
    reader = GGUFReader(write(model_writer(merged, ggml_type, "tiny"), path / f"read-{ggml_type}.gguf"))
    want = library_tensors(merged_hf, arch, plus_one_on_norms, skip=("lm_head.weight",))
    assert set(names) <= set(want) and "output.weight" not in want
    check_tensors(reader, want, ggml_type)


@pytest.mark.parametrize("ggml_type", TYPES)
def test_gemma_gguf_reads_back_tensor_for_tensor(gemma, ggml_type):
    merged_hf = gemma[2]
    # the head is the embedding (tied), which the converter does not write again
    assert merged_hf.lm_head.weight.data_ptr() == merged_hf.model.embed_tokens.weight.data_ptr()
    check_read_back(gemma, MODEL_ARCH.GEMMA, ggml_type, ["blk.1.ffn_gate.weight"])


def test_gemma_norms_are_written_as_the_scale_itself(gemma):
    """What llama.cpp multiplies by is what transformers multiplies by: 1 + the stored weight."""
    path, _, merged_hf, merged = gemma
    reader = GGUFReader(write(model_writer(merged, gguf.F32, "tiny"), path / "norms.gguf"))
    norm = merged_hf.model.layers[1].post_attention_layernorm
    scale = (1 + norm.weight).detach().numpy()
    written = next(np.asarray(t.data) for t in reader.tensors if t.name == "blk.1.ffn_norm.weight")
    np.testing.assert_array_equal(written, scale.astype(np.float32))
    assert np.abs(norm.weight.detach().numpy()).max() > 0.05        # not the trivial offsets


def check_gemma_metadata(merged_gemma_fixture, arch, rope_theta, extra=()):
    """The F16 file's metadata: what llama.cpp's `arch` loader reads, from the config."""
    path, _, merged_hf, merged = merged_gemma_fixture
    reader = GGUFReader(write(model_writer(merged, gguf.F16, "tiny"), path / "meta.gguf"))
    config = merged_hf.config
    assert field(reader, "general.architecture") == arch
    for key, want in (("context_length", config.max_position_embeddings),
                      ("embedding_length", config.hidden_size),
                      ("block_count", config.num_hidden_layers),
                      ("feed_forward_length", config.intermediate_size),
                      ("attention.head_count", config.num_attention_heads),
                      ("attention.head_count_kv", config.num_key_value_heads),
                      ("attention.key_length", config.head_dim),
                      ("attention.value_length", config.head_dim), *extra):
        assert field(reader, f"{arch}.{key}") == want, key
    assert field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps, rel=1e-6)
    assert field(reader, f"{arch}.rope.freq_base") == rope_theta(config)
    return config


def test_gemma_gguf_holds_what_llama_cpps_gemma_loader_reads(gemma):
    config = check_gemma_metadata(gemma, "gemma", lambda c: c.rope_parameters["rope_theta"])
    assert (config.head_dim, config.num_key_value_heads) == (256, 1)    # not hidden / heads, MQA


def test_a_gemma_llama_cpp_would_run_differently_is_refused(tmp_path):
    assert_export_refused(tmp_path, "gemma", dict(hidden_act="silu"),
                          r"hidden_act 'silu' is not supported: llama.cpp's gemma runs the MLP with "
                          r"GELU \(the tanh form\)")


def test_a_gemma_adapter_over_the_base_gives_the_merged_weights(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "gemma")
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=2 * 7)
