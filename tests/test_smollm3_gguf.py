"""GGUF export of SmolLM3 (SmolLM3ForCausalLM, llama.cpp's "smollm3" architecture, whose
converter is Llama's): every tensor under the `gguf` package's own smollm3 names, q and k rows in
llama.cpp's interleaved order as for Llama, the tied head not written, Llama's metadata under
"smollm3."; a model whose layers without rotary embedding are not every 4th (llama.cpp fixes
that) or with a window is refused. transformers has no GGUF reader for smollm3, so no logits
come back through it here; tests/llama_cpp_check.py runs the files in llama.cpp by hand."""

import numpy as np
import pytest
from gguf import MODEL_ARCH, GGUFReader

import export_models as em
from test_export_gguf import assert_lora_gives_the_merged_weights, field, write
from test_gemma_gguf import assert_export_refused, gemma_dir
from test_phi2_gguf import library_tensors
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer, permuted_heads
from py_engine.export.merged import load_merged

LLAMA_CPP_SHAPE = dict(num_hidden_layers=4, no_rope_layer_interval=4, use_sliding_window=False)


def test_smollm3_gguf_reads_back_under_llama_cpps_names(tmp_path):
    from transformers import SmolLM3ForCausalLM

    model = gemma_dir(tmp_path / "smollm3", "smollm3", **LLAMA_CPP_SHAPE)
    adapter, merged_hf = em.merged_with_adapter(SmolLM3ForCausalLM, model, tmp_path,
                                                ["q_proj", "k_proj", "v_proj", "o_proj"])
    merged = load_merged(model, adapter)
    assert merged.config.layer_rope_used == (True, True, True, False)
    reader = GGUFReader(write(model_writer(merged, gguf.F32, "tiny"), tmp_path / "m.gguf"))
    config = merged_hf.config
    assert field(reader, "general.architecture") == "smollm3"
    for key, want in (("block_count", 4), ("embedding_length", config.hidden_size),
                      ("attention.head_count", config.num_attention_heads),
                      ("attention.head_count_kv", config.num_key_value_heads),
                      ("rope.dimension_count", config.hidden_size // config.num_attention_heads)):
        assert field(reader, f"smollm3.{key}") == want, key
    want = library_tensors(merged_hf, MODEL_ARCH.SMOLLM3, skip=("lm_head.weight",))
    tensors = {t.name: np.asarray(t.data).reshape(want[t.name].shape) for t in reader.tensors}
    assert set(tensors) == set(want) and "output.weight" not in tensors
    for name, value in want.items():
        if name.endswith(("attn_q.weight", "attn_k.weight")):   # llama.cpp's pair order
            heads = config.num_attention_heads if "attn_q" in name else config.num_key_value_heads
            value = np.asarray(permuted_heads(value.ravel(), value.shape[0], heads)).reshape(value.shape)
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)


@pytest.mark.parametrize("overrides, message", [
    (dict(no_rope_layer_interval=2), "not every 4th"),
    (dict(use_sliding_window=True, sliding_window=5), "sliding-window model"),
])
def test_a_smollm3_llama_cpp_would_run_differently_is_refused(tmp_path, overrides, message):
    assert_export_refused(tmp_path, "smollm3", dict(LLAMA_CPP_SHAPE, **overrides), message)


def test_a_smollm3_adapter_over_the_base_gives_the_merged_weights(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "smollm3")
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=4 * 7)
