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

import copy

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM

import export_models as em
from test_export_gguf import assert_lora_gives_the_merged_weights, write
from test_gemma_gguf import assert_export_refused, check_gemma_metadata, check_read_back, merged_gemma
from test_phi2_gguf import TYPES
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer

# as llama.cpp's gemma3 runs it: five sliding layers then a full one, the default rotary bases,
# scores scaled by head_dim^-1/2; heads of 256, as transformers' GGUF reader assumes (it leaves
# query_pre_attn_scalar at its default, 256)
LLAMA_CPP_SHAPE = dict(num_hidden_layers=6, layer_types=None, rope_parameters=None, head_dim=256,
                       query_pre_attn_scalar=256)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    return merged_gemma(tmp_path_factory, "gemma3", Gemma3ForCausalLM, **LLAMA_CPP_SHAPE)


@pytest.mark.parametrize("ggml_type", TYPES)
def test_gemma3_gguf_reads_back_tensor_for_tensor(gemma3, ggml_type):
    check_read_back(gemma3, MODEL_ARCH.GEMMA3, ggml_type, ["blk.1.attn_q_norm.weight", "blk.1.post_attention_norm.weight",
                                                          "blk.1.ffn_norm.weight", "blk.1.post_ffw_norm.weight"])


def test_gemma3_gguf_holds_what_llama_cpps_gemma3_loader_reads(gemma3):
    config = gemma3[2].config
    check_gemma_metadata(gemma3, "gemma3", lambda c: c.rope_parameters["full_attention"]["rope_theta"],
                         extra=[("attention.sliding_window", config.sliding_window)])


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16])
def test_transformers_loads_the_gemma3_gguf_with_our_logits(gemma3, ggml_type):
    """F32: our logits (float32, NumPy), against transformers computing in float64 on the
    file's weights, so that the bound is our rounding alone: Gemma 3's norms after the
    attention and the MLP amplify it, to 1.7e-5 at most over 1,900 random prompts (0.4% over
    1e-5; transformers in float32 tripled that), hence 5e-5; the same file in F16 is 2e-3
    to 1e-2 from our logits. F16: PEFT's merged model with its matrices rounded to float16, as
    the file stores them (norms stay F32), to float32 precision: the file holds nothing else."""
    check_logits_through_transformers(gemma3, ggml_type, f32_bound=5e-5)


def check_logits_through_transformers(fixture, ggml_type, f32_bound):
    """transformers' GGUF reader on the `ggml_type` file of a merged_gemma fixture: in F32 (and
    float64) our logits within f32_bound, in F16 PEFT's merged model with its matrices rounded
    to float16 within 1e-5."""
    path, model, merged_hf, merged = fixture
    ids = np.random.default_rng().integers(0, merged.config.vocab_size, 17).tolist()
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"hf-{ggml_type}.gguf")
    hf = AutoModelForCausalLM.from_pretrained(path, gguf_file=out.name).eval()
    assert type(hf) is type(merged_hf)
    if ggml_type == gguf.F32:
        hf = hf.double()
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].double().numpy()
    if ggml_type == gguf.F32:
        want, bound = em.our_decoder_logits(model, path / "adapter", ids), f32_bound
    else:
        rounded = copy.deepcopy(merged_hf)
        with torch.no_grad():
            for name, p in rounded.named_parameters():
                if p.ndim == 2:
                    p.copy_(p.half().float())
            want = rounded(torch.tensor([ids])).logits[0].double().numpy()
        bound = 1e-5
    assert em.relative_error(theirs, want) <= bound, ids


@pytest.mark.parametrize("overrides, message", [
    (dict(layer_types=["sliding_attention", "full_attention"] * 3),
     "sliding layers are not all but every 6th"),
    (dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}}),
     "rotary base is not 10000"),
    (dict(query_pre_attn_scalar=24), "query_pre_attn_scalar is not head_dim"),
])
def test_a_gemma3_llama_cpp_would_run_differently_is_refused(tmp_path, overrides, message):
    assert_export_refused(tmp_path, "gemma3", dict(LLAMA_CPP_SHAPE, **overrides), message)


def test_a_gemma3_adapter_over_the_base_gives_the_merged_weights(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "gemma3")
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=6 * 7)
