"""GGUF export of Gemma 2 (Gemma2ForCausalLM, llama.cpp's "gemma2" architecture), checked with
code we did not write: the `gguf` package's own gemma2 tensor map names every tensor (its
sandwich norms included) and GGUFReader reads each back against PEFT's merged model, every norm
weight as 1 + the checkpoint's (convert_hf_to_gguf.py's Gemma2Model adds the 1 that
Gemma2RMSNorm adds at run time) and the tied head not written; the metadata holds what
llama.cpp's gemma2 loader reads (the window and both soft caps included); transformers' own
GGUF reader loads the file and gives our logits; an adapter for --lora applied to the base file
gives the merged one. llama.cpp's gemma2 fixes the layer pattern (every other layer slides,
from the first), always caps, and scales scores by head_dim^-1/2: the tiny model here is made
that way, and a model that differs is refused.

transformers' GGUF reader takes neither soft cap nor query_pre_attn_scalar from the file: it
keeps Gemma2Config's defaults (50, 30, 256), so the model compared through it has those and
heads of 256."""

import pytest
from gguf import MODEL_ARCH
from transformers import Gemma2ForCausalLM

import export_models as em
from test_export_gguf import assert_lora_gives_the_merged_weights
from test_gemma3_gguf import check_logits_through_transformers
from test_gemma_gguf import assert_export_refused, check_gemma_metadata, check_read_back, merged_gemma
from test_phi2_gguf import TYPES
from py_engine.export import gguf

# as llama.cpp's gemma2 runs it and transformers' GGUF reader reads it back
LLAMA_CPP_SHAPE = dict(num_hidden_layers=3, head_dim=256, query_pre_attn_scalar=256,
                       attn_logit_softcapping=50.0, final_logit_softcapping=30.0)


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    return merged_gemma(tmp_path_factory, "gemma2", Gemma2ForCausalLM, **LLAMA_CPP_SHAPE)


@pytest.mark.parametrize("ggml_type", TYPES)
def test_gemma2_gguf_reads_back_tensor_for_tensor(gemma2, ggml_type):
    check_read_back(gemma2, MODEL_ARCH.GEMMA2, ggml_type, ["blk.1.post_attention_norm.weight",
                                                          "blk.1.ffn_norm.weight", "blk.1.post_ffw_norm.weight"])


def test_gemma2_gguf_holds_what_llama_cpps_gemma2_loader_reads(gemma2):
    config = gemma2[2].config
    check_gemma_metadata(gemma2, "gemma2", lambda c: c.rope_parameters["rope_theta"],
                         extra=[("attention.sliding_window", config.sliding_window),
                                ("attn_logit_softcapping", config.attn_logit_softcapping),
                                ("final_logit_softcapping", config.final_logit_softcapping)])


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16])
def test_transformers_loads_the_gemma2_gguf_with_our_logits(gemma2, ggml_type):
    """F32: our logits (float32, NumPy) against transformers computing in float64 on the file's
    weights; F16: PEFT's merged model with its matrices rounded to float16, as the file stores
    them (norms stay F32), to float32 precision."""
    check_logits_through_transformers(gemma2, ggml_type, f32_bound=5e-5)


@pytest.mark.parametrize("overrides, message", [
    (dict(layer_types=["full_attention", "sliding_attention", "full_attention"]),
     "sliding layers are not every other one from the first"),
    (dict(final_logit_softcapping=None), "without final_logit_softcapping"),
    (dict(attn_logit_softcapping=None), "without attn_logit_softcapping"),
    (dict(query_pre_attn_scalar=24), "query_pre_attn_scalar is not head_dim"),
])
def test_a_gemma2_llama_cpp_would_run_differently_is_refused(tmp_path, overrides, message):
    assert_export_refused(tmp_path, "gemma2", dict(LLAMA_CPP_SHAPE, **overrides), message)


def test_a_gemma2_adapter_over_the_base_gives_the_merged_weights(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "gemma2")
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=3 * 7)
