"""GGUF export of Gemma 3 (text: Gemma3ForCausalLM, llama.cpp's "gemma3" architecture),
checked with code we did not write: the `gguf` package's own gemma3 tensor map names every
tensor (its sandwich norms and QK-norm included) and GGUFReader reads each back against PEFT's
merged model, every norm weight as 1 + the checkpoint's (convert_hf_to_gguf.py's Gemma3Model
adds the 1 that Gemma3RMSNorm adds at run time) and the tied head not written; the metadata
holds what llama.cpp's gemma3 loader reads (the window included); transformers' own GGUF
reader loads the file and gives our logits; an adapter for --lora applied to the base file
gives the merged one. llama.cpp's gemma3 fixes the layer pattern (every sixth layer full), the
sliding layers' rotary base (10000) and the score scale (head_dim^-1/2): the tiny model here is
made that way, and a model that differs is refused."""

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, GGUFReader
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM

import export_models as em
from mistral_gemma_checkpoints import tiny_checkpoint
from test_export_gguf import assert_lora_gives_the_merged_weights, field, write
from test_phi2_gguf import TYPES, check_tensors, library_tensors
from tiny_chat import train_tokenizer
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer
from py_engine.export.merged import ExportError, load_merged

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# as llama.cpp's gemma3 runs it: five sliding layers then a full one, the default rotary bases,
# scores scaled by head_dim^-1/2; heads of 256, as transformers' GGUF reader assumes (it leaves
# query_pre_attn_scalar at its default, 256)
LLAMA_CPP_SHAPE = dict(num_hidden_layers=6, layer_types=None, rope_parameters=None, head_dim=256,
                       query_pre_attn_scalar=256)


def gemma3_dir(path, **overrides):
    """A tiny Gemma 3 checkpoint with a byte-level BPE tokenizer.json (its vocabulary the
    embedding's rows)."""
    tok = train_tokenizer()
    tiny_checkpoint("gemma3", path, **dict(LLAMA_CPP_SHAPE, vocab_size=tok.get_vocab_size(),
                                           **overrides))
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma3-gguf")
    model = gemma3_dir(path / "gemma3")
    adapter, merged_hf = em.merged_with_adapter(Gemma3ForCausalLM, model, path, LINEARS)
    return path, model, merged_hf, load_merged(model, adapter)


def plus_one_on_norms(name, value):
    return value + 1 if name.endswith("_norm.weight") else value


@pytest.mark.parametrize("ggml_type", TYPES)
def test_gemma3_gguf_reads_back_tensor_for_tensor(gemma3, ggml_type):
    path, _, merged_hf, merged = gemma3
    reader = GGUFReader(write(model_writer(merged, ggml_type, "tiny"), path / f"read-{ggml_type}.gguf"))
    want = library_tensors(merged_hf, MODEL_ARCH.GEMMA3, plus_one_on_norms, skip=("lm_head.weight",))
    assert {"blk.1.attn_q_norm.weight", "blk.1.post_attention_norm.weight", "blk.1.ffn_norm.weight",
            "blk.1.post_ffw_norm.weight"} <= set(want) and "output.weight" not in want
    check_tensors(reader, want, ggml_type)


def test_gemma3_gguf_holds_what_llama_cpps_gemma3_loader_reads(gemma3):
    path, _, merged_hf, merged = gemma3
    reader = GGUFReader(write(model_writer(merged, gguf.F16, "tiny"), path / "meta.gguf"))
    config = merged_hf.config
    assert field(reader, "general.architecture") == "gemma3"
    for key, want in (("context_length", config.max_position_embeddings),
                      ("embedding_length", config.hidden_size),
                      ("block_count", config.num_hidden_layers),
                      ("feed_forward_length", config.intermediate_size),
                      ("attention.head_count", config.num_attention_heads),
                      ("attention.head_count_kv", config.num_key_value_heads),
                      ("attention.key_length", config.head_dim),
                      ("attention.value_length", config.head_dim),
                      ("attention.sliding_window", config.sliding_window)):
        assert field(reader, f"gemma3.{key}") == want, key
    assert field(reader, "gemma3.rope.freq_base") == config.rope_parameters["full_attention"]["rope_theta"]
    assert field(reader, "gemma3.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps, rel=1e-6)


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16])
def test_transformers_loads_the_gemma3_gguf_with_our_logits(gemma3, ggml_type):
    path, model, _, merged = gemma3
    ids = np.random.default_rng().integers(0, merged.config.vocab_size, 17).tolist()
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"hf-{ggml_type}.gguf")
    hf = AutoModelForCausalLM.from_pretrained(path, gguf_file=out.name).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].double().numpy()
    ours = em.our_decoder_logits(model, path / "adapter", ids)
    assert em.relative_error(theirs, ours) <= {gguf.F32: 1e-5, gguf.F16: 5e-3}[ggml_type]


@pytest.mark.parametrize("overrides, message", [
    (dict(layer_types=["sliding_attention", "full_attention"] * 3),
     "sliding layers are not all but every 6th"),
    (dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}}),
     "rotary base is not 10000"),
    (dict(query_pre_attn_scalar=24), "query_pre_attn_scalar is not head_dim"),
])
def test_a_gemma3_llama_cpp_would_run_differently_is_refused(tmp_path, overrides, message):
    gemma3_dir(tmp_path, **overrides)
    with pytest.raises(ExportError, match=message):
        model_writer(load_merged(tmp_path), gguf.F16, "tiny")


def test_a_gemma3_adapter_over_the_base_gives_the_merged_weights(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "gemma3")
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=6 * 7)
