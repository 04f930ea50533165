"""GGUF export of a T5 encoder-decoder (llama.cpp's "t5" architecture, FLAN-T5's layout),
checked with code we did not write: the `gguf` package's own T5 tensor map names every tensor
and GGUFReader reads each back against PEFT's merged T5ForConditionalGeneration, and
transformers' GGUF loader (T5ForConditionalGeneration.from_pretrained(..., gguf_file=)) gives
PEFT's merged logits and the checkpoint's tokenization.

Two things transformers' T5 GGUF loader does not read, so the tests hand them over: the
activation (the file has none: llama.cpp runs GELU on a gated T5; the loader sets the gate but
leaves T5Config's default relu, so dense_act_fn="gelu_new" is given), and the decoder's layer
count (decoder_block_count: the loader builds as many decoder layers as encoder layers, so the
model it loads has equal counts; the reader test has more decoder than encoder layers)."""

import json

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, GGUFReader, get_tensor_name_map
from peft import TaskType
from tokenizers import Tokenizer
from transformers import AutoTokenizer, T5ForConditionalGeneration

import export_models as em
from t5_checkpoints import tiny_t5
from t5_tokenizer import t5_tokenizer
from test_export_gguf import assert_lora_gives_the_merged_weights, LOGIT_BOUNDS, field, write
from test_phi2_gguf import check_tensors
from py_engine.export import gguf
from py_engine.export.gguf_llama import model_writer
from py_engine.export.merged import ExportError, load_merged
from py_engine.models.t5_config import T5Config

TYPES = [gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0]
LINEARS = ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]
# llama.cpp's t5 fixes the buckets' max distance at 128, so the checkpoints use it; 8 buckets
# still put distances past 2 in the logarithmic ones.
LLAMA_CPP = dict(relative_attention_max_distance=128)
SOURCE = "translate to german: the quick brown fox jumps over the lazy dog"
TARGET = "hallo welt, a cat on a mat"


def t5_with_adapter(path, seed=0, head=False, **overrides):
    """(model_dir, PEFT's merged T5ForConditionalGeneration in float32, the tokenizer): a tiny
    FLAN-T5-like checkpoint with its Unigram tokenizer, and a PEFT adapter on every linear of
    both stacks (and with `head` on lm_head) with lora_B drawn at random."""
    model_dir = path / "t5"
    tiny_t5(model_dir, seed=seed, **dict(LLAMA_CPP, **overrides))
    tok = t5_tokenizer()
    tok.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}), encoding="utf-8")
    adapter, merged = em.merged_with_adapter(T5ForConditionalGeneration, model_dir, path,
                                             LINEARS + (["lm_head"] if head else []),
                                             seed=seed, task_type=TaskType.SEQ_2_SEQ_LM)
    return model_dir, adapter, merged


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Two encoder and three decoder layers (t5_checkpoints' layout)."""
    path = tmp_path_factory.mktemp("t5-gguf-uneven")
    model, adapter, merged_hf = t5_with_adapter(path)
    return path, model, merged_hf, load_merged(model, adapter)


@pytest.fixture(scope="module")
def even(tmp_path_factory):
    """Two layers in each stack: the model transformers' GGUF loader builds."""
    path = tmp_path_factory.mktemp("t5-gguf-even")
    model, adapter, merged_hf = t5_with_adapter(path, seed=3, num_decoder_layers=2)
    return path, model, merged_hf, load_merged(model, adapter)


def library_tensors(hf):
    """{GGUF name: float32 array}: the merged state dict under the gguf package's T5 names (the
    converter's map), the duplicate embed_tokens left out as the converter leaves them."""
    config = hf.config
    names = get_tensor_name_map(MODEL_ARCH.T5, max(config.num_layers, config.num_decoder_layers))
    out = {}
    for name, value in hf.state_dict().items():
        if name.endswith("embed_tokens.weight"):
            continue
        target = names.get_name(name, try_suffixes=(".weight",))
        assert target is not None, name
        out[target] = value.float().numpy()
    return out


@pytest.mark.parametrize("ggml_type", TYPES)
def test_t5_gguf_reads_back_tensor_for_tensor(uneven, ggml_type):
    path, model, merged_hf, merged = uneven
    reader = GGUFReader(write(model_writer(merged, ggml_type, "tiny"), path / f"read-{ggml_type}.gguf"))
    config = T5Config.from_file(model / "config.json")
    assert field(reader, "general.architecture") == "t5"
    assert field(reader, "general.file_type") == {0: 0, 1: 1, 8: 7, 2: 2}[ggml_type]
    for key, want in (("context_length", 512), ("embedding_length", 32), ("feed_forward_length", 40),
                      ("block_count", 2), ("decoder_block_count", 3), ("attention.head_count", 4),
                      ("attention.key_length", 12), ("attention.value_length", 12),
                      ("attention.relative_buckets_count", 8), ("decoder_start_token_id", 0)):
        assert field(reader, f"t5.{key}") == want, key
    for key in ("attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon"):
        assert field(reader, f"t5.{key}") == pytest.approx(config.layer_norm_epsilon, rel=1e-6)
    assert field(reader, "tokenizer.ggml.model") == "t5"
    assert (field(reader, "tokenizer.ggml.eos_token_id"), field(reader, "tokenizer.ggml.padding_token_id"),
            field(reader, "tokenizer.ggml.unknown_token_id")) == (1, 0, 2)

    want = library_tensors(merged_hf)
    assert "dec.blk.2.cross_attn_k.weight" in want and "enc.blk.0.attn_rel_b.weight" in want
    check_tensors(reader, want, ggml_type)      # the bias table's rows (4 heads) make no block


def logits(model, tok, **kwargs):
    ids = torch.tensor([tok.encode(SOURCE).ids])
    decoder = torch.tensor([[0] + tok.encode(TARGET).ids])
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=decoder, **kwargs).logits[0].double().numpy()


# The tiny T5's tokenizer is trained anew each run and the Unigram trainer is not deterministic
# (another vocabulary in every process), so the texts' ids, and q4_0's error on them, differ run
# to run: 0.32 to 0.41 measured (a fresh-clone run gave 0.406), over LOGIT_BOUNDS' 0.4.
T5_LOGIT_BOUNDS = {**LOGIT_BOUNDS, gguf.Q4_0: 0.5}


@pytest.mark.parametrize("ggml_type", TYPES)
def test_transformers_loads_the_t5_gguf_with_peft_logits(even, ggml_type):
    path, model, merged_hf, merged = even
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"hf-{ggml_type}.gguf")
    hf = T5ForConditionalGeneration.from_pretrained(path, gguf_file=out.name, dense_act_fn="gelu_new").eval()
    assert (hf.config.d_kv, hf.config.relative_attention_num_buckets, hf.config.is_gated_act) == (12, 8, True)
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    got, want = logits(hf, tok), logits(merged_hf, tok)
    assert em.relative_error(got, want) <= T5_LOGIT_BOUNDS[ggml_type]
    if ggml_type == gguf.F32:       # greedy generation: the same 12 tokens
        ids = torch.tensor([tok.encode(SOURCE).ids])
        kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)
        with torch.no_grad():
            assert hf.generate(ids, **kwargs).tolist() == merged_hf.generate(ids, **kwargs).tolist()


def test_transformers_reads_the_t5_gguf_tokenizer(even):
    """The pieces, scores and special tokens make transformers' T5 tokenizer split as the
    checkpoint's does (runs of spaces aside: T5Tokenizer always splits on whitespace, where the
    tiny tokenizer keeps each space; the file says so as remove_extra_whitespaces false)."""
    path, model, _, merged = even
    out = write(model_writer(merged, gguf.F32, "tiny"), path / "tok.gguf")
    assert field(GGUFReader(out), "tokenizer.ggml.remove_extra_whitespaces") is False
    theirs = AutoTokenizer.from_pretrained(path, gguf_file=out.name)
    ours = Tokenizer.from_file(str(model / "tokenizer.json"))
    for text in (SOURCE, TARGET, "question: what is two plus two? answer, 4!"):
        assert theirs(text)["input_ids"] == ours.encode(text).ids, text


def test_a_tied_t5_head_is_written_scaled(tmp_path):
    """The original T5 layout (tie_word_embeddings true, no lm_head): output.weight is the shared
    embedding times d_model ** -0.5, which gives transformers' tied logits."""
    model, _, _ = t5_with_adapter(tmp_path, seed=5, num_decoder_layers=2, tied=True)
    tied = T5ForConditionalGeneration.from_pretrained(model).eval()
    out = write(model_writer(load_merged(model), gguf.F32, "tiny"), tmp_path / "tied.gguf")
    head = next(t for t in GGUFReader(out).tensors if t.name == "output.weight")
    shared = tied.shared.weight.detach().numpy()
    assert np.abs(np.asarray(head.data) - shared * 32 ** -0.5).max() <= 1e-6 * np.abs(shared).max()
    hf = T5ForConditionalGeneration.from_pretrained(tmp_path, gguf_file=out.name, dense_act_fn="gelu_new").eval()
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    assert em.relative_error(logits(hf, tok), logits(tied, tok)) <= LOGIT_BOUNDS[gguf.F32]


@pytest.mark.parametrize("overrides, message", [
    (dict(relative_attention_max_distance=20),
     r"relative_attention_max_distance 20 is not supported: llama.cpp's t5 fixes it at 128"),
    (dict(feed_forward_proj="gated-silu"),
     r"feed_forward_proj 'gated-silu' is not supported: llama.cpp's t5 runs the gated "
     r"feed-forward with GELU"),
])
def test_what_llama_cpp_would_run_differently_is_refused(tmp_path, overrides, message):
    tiny_t5(tmp_path, **dict(LLAMA_CPP, **overrides))
    with pytest.raises(ExportError, match=message):
        model_writer(load_merged(tmp_path), gguf.F16, "tiny")


@pytest.mark.parametrize("head", [False, True])
def test_a_t5_adapter_over_the_base_gives_the_merged_weights(tmp_path, head):
    """Both stacks' linears (self and cross attention, the gated MLP), under enc./dec. names;
    a LoRA on FLAN-T5's head of its own as output.weight's pair."""
    model, adapter, merged_hf = t5_with_adapter(tmp_path, head=head)
    config = json.loads((model / "config.json").read_text())
    stacks = config["num_layers"] * (4 + 3) + config["num_decoder_layers"] * (8 + 3)
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=stacks + head)
    # the merged model's head is PEFT's merge_and_unload's
    head_weight = load_merged(model, adapter).floats("lm_head.weight")
    want = merged_hf.state_dict()["lm_head.weight"].numpy()
    assert np.abs(np.asarray(head_weight).reshape(want.shape) - want).max() <= 1e-6 * np.abs(want).max()
    base = T5ForConditionalGeneration.from_pretrained(model).lm_head.weight.detach().numpy()
    assert bool(np.abs(want - base).max() > 1e-3) == head


def test_cli_exports_the_merged_t5_without_a_modelfile(even, tmp_path):
    """`py-engine export --format gguf` on a T5: model.gguf only (a T5 is no Ollama chat
    model), progress per stack's layer, the adapter folded in."""
    from test_cli_classifier import cli

    path, model, merged_hf, _ = even
    out = cli("export", "--format", "gguf", "--model", model, "--adapter", path / "adapter",
              "--out", tmp_path / "gguf", "--quant", "f32")
    assert "export: encoder layer 1/2" in out.stderr and "export: decoder layer 2/2" in out.stderr
    written = tmp_path / "gguf"
    assert {p.name for p in written.iterdir() if not p.name.startswith(".")} == {"model.gguf"}
    tensors = {t.name: np.asarray(t.data) for t in GGUFReader(written / "model.gguf").tensors}
    want = merged_hf.state_dict()["decoder.block.1.layer.1.EncDecAttention.v.weight"].numpy()
    assert np.abs(tensors["dec.blk.1.cross_attn_v.weight"] - want).max() <= 1e-6 * np.abs(want).max()


def test_cli_refuses_a_t5_llama_cpp_would_run_differently_in_one_line(tmp_path):
    from test_cli_classifier import cli

    model, adapter, _ = t5_with_adapter(tmp_path, relative_attention_max_distance=20)
    out = cli("export", "--format", "gguf", "--model", model, "--adapter", adapter,
              "--out", tmp_path / "gguf", check=False)
    assert out.returncode != 0 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "llama.cpp's t5 fixes it at 128" in out.stderr
    assert not (tmp_path / "gguf").exists()
