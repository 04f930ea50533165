"""GGUF export checked with libraries we did not write: the `gguf` package (llama.cpp's
gguf-py) quantizes the same bytes and reads the file back tensor for tensor, and transformers
loads the file (from_pretrained(..., gguf_file=)) and reproduces the merged model's logits and
the checkpoint's tokenizer."""

import json
import math

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, dequantize, quants
from tokenizers import AddedToken
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import export_models as em
from test_tokenizer_bpe import byte_level_tokenizer, make_corpus, sentencepiece_tokenizer
from py_engine.export import gguf
from py_engine.export.gguf_llama import adapter_writer, model_writer
from py_engine.export.gguf_vocab import pre_tokenizer_name
from py_engine.export.merged import ExportError, load_merged
from py_engine.formats.finite import NonFiniteWeightsError
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.lora_config import LoraConfig

PROMPT = "Hello! How are you today? The capital of France is Paris. 2026"
LIBRARY_TYPES = {gguf.F32: GGMLQuantizationType.F32, gguf.F16: GGMLQuantizationType.F16,
                 gguf.Q8_0: GGMLQuantizationType.Q8_0, gguf.Q4_0: GGMLQuantizationType.Q4_0}
# Relative error of transformers' logits from the GGUF against our logits from the unquantized
# merged model: float32 is the same numbers (rounding only); each other bound is about three
# times what the tiny random models measure (F16 5e-4, Q8_0 0.9e-2-1.8e-2, Q4_0 0.08-0.13:
# 32-value blocks of 8 and 4 bits over weights of random scale).
LOGIT_BOUNDS = {gguf.F32: 1e-5, gguf.F16: 2e-3, gguf.Q8_0: 6e-2, gguf.Q4_0: 0.4}


def write(writer, path):
    with open(path, "wb") as f:
        writer.write(f)
    return path


def library_permute(w, heads):
    """convert_hf_to_gguf.py's LlamaModel.permute, in NumPy."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def field(reader, key):
    f = reader.fields[key]
    values = [f.parts[i] for i in f.data]
    if f.types[0].name == "STRING" or (f.types[0].name == "ARRAY" and f.types[-1].name == "STRING"):
        values = [bytes(v).decode("utf-8") for v in values]
    else:
        values = [v.tolist()[0] if len(v) == 1 else v.tolist() for v in values]
    return values if f.types[0].name == "ARRAY" else values[0]


# --- the quantizers ------------------------------------------------------------------------------

@pytest.mark.parametrize("ggml_type", [gguf.F16, gguf.Q8_0, gguf.Q4_0])
def test_quantizers_make_the_libraries_bytes(ggml_type):
    rng = np.random.default_rng()
    scales = rng.uniform(1e-3, 50, size=(512, 1)).repeat(32, 1)
    x = (rng.standard_normal((512, 32)) * scales).astype(np.float32)
    x[0] = 0.0                                   # an all-zero block: scale 0
    x[1] = 0.5                                   # ties between quantization levels
    x[2] = np.float32(0.25) * (np.arange(32) - 16)
    x[3, 7], x[3, 9] = -9.0, 9.0                 # the largest magnitude twice, negative first
    x[4] = rng.standard_normal(32).astype(np.float32) * 1e-6
    x = x.reshape(64, 256)
    ours = gguf.encode(x.ravel(), ggml_type)
    theirs = quants.quantize(x, LIBRARY_TYPES[ggml_type]).tobytes()
    assert ours == theirs
    back = dequantize(np.frombuffer(ours, np.uint8).reshape(64, -1), LIBRARY_TYPES[ggml_type])
    blocks, rebuilt = x.reshape(-1, 32), back.reshape(-1, 32)
    top = np.abs(blocks).max(axis=1)
    err = np.abs(rebuilt - blocks).max(axis=1)
    # Q8_0: half a step between levels; Q4_0: a whole step (levels -8..7 with the largest
    # magnitude at -8: its opposite is clipped at 7); both plus the half-precision rounding of
    # the scale times the largest level. F16: half an ulp, 2**-25 below its normal range.
    if ggml_type == gguf.F16:
        bound = 2 ** -11 * top + 2 ** -25
    else:
        step, levels, part = (top / 127, 127, 0.5) if ggml_type == gguf.Q8_0 else (top / 8, 8, 1.0)
        bound = part * step + levels * (step * 2 ** -11 + 2 ** -25)
    assert (err <= bound * (1 + 1e-6)).all()


@pytest.mark.parametrize("ggml_type", [gguf.F16, gguf.Q8_0, gguf.Q4_0])
def test_quantizers_on_the_edges_of_float32(ggml_type):
    """Blocks of -0.0, of values past float16's range, of exact ties, of powers of ten from
    1e-40 to 1e38: the library's bytes. Blocks of subnormal values (under ~1e-38), whose
    scale's inverse passes float32's range, raised OverflowError; their half-precision scale
    is 0, so they decode to zeros whatever the quants (ggml multiplies by infinity there and
    converts to an integer, which C leaves undefined): Q8_0's bytes are still the library's
    here, Q4_0's decode to the library's zeros."""
    rng = np.random.default_rng()
    x = (rng.standard_normal((96, 32)) * 10.0 ** rng.uniform(-40, 38, (96, 1))).astype(np.float32)
    x[0] = -0.0
    x[1] = 1e5                                   # past float16: inf, as the library's astype
    x[2] = rng.integers(-254, 255, 32) / 2 / 127
    subnormal = rng.standard_normal((8, 32)).astype(np.float32) * np.float32(1e-42)
    x[3:11] = subnormal
    x = x.reshape(12, 256)
    ours = gguf.encode(x.ravel(), ggml_type)
    theirs = quants.quantize(x, LIBRARY_TYPES[ggml_type]).tobytes()
    decoded = [np.asarray(dequantize(np.frombuffer(b, np.uint8).reshape(12, -1), LIBRARY_TYPES[ggml_type]))
               for b in (ours, theirs)]
    assert np.array_equal(decoded[0], decoded[1], equal_nan=True)
    if ggml_type != gguf.Q4_0:
        assert ours == theirs
    else:                                        # the quants of blocks whose scale is 0 may differ
        kept = np.repeat(np.abs(x.reshape(-1, 32)).max(axis=1) / 8 >= 1 / np.finfo(np.float32).max, 18)
        kept[0::18] = kept[1::18] = True         # the scales themselves always agree
        assert np.array_equal(np.frombuffer(ours, np.uint8)[kept], np.frombuffer(theirs, np.uint8)[kept])
        assert not kept.all()


def test_block_types_need_whole_blocks():
    assert gguf.block_type_for((64, 48), gguf.Q8_0) == gguf.F16
    assert gguf.block_type_for((48, 64), gguf.Q4_0) == gguf.Q4_0
    writer = gguf.GGUFWriter()
    with pytest.raises(gguf.GGUFError, match="blocks of 32"):
        writer.add_tensor("w", (4, 48), gguf.Q8_0, lambda: [0.0] * 192)


# --- whole models --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3"])
def chat(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model, adapter = em.chat_with_adapter(path, request.param)
    ids = AutoTokenizer.from_pretrained(model)(PROMPT)["input_ids"]
    return request.param, path, model, adapter, load_merged(model, adapter), \
        em.our_decoder_logits(model, adapter, ids), ids


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0])
def test_gguf_reads_back_tensor_for_tensor(chat, ggml_type):
    family, path, model, _, merged, _, _ = chat
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"read-{ggml_type}.gguf")
    reader = GGUFReader(out)
    config = merged.config
    arch = family
    assert field(reader, "general.architecture") == arch
    assert field(reader, "general.file_type") == {0: 0, 1: 1, 8: 7, 2: 2}[ggml_type]
    assert field(reader, f"{arch}.block_count") == config.num_hidden_layers
    assert field(reader, f"{arch}.context_length") == config.max_position_embeddings
    assert field(reader, f"{arch}.attention.head_count") == config.num_attention_heads
    assert field(reader, f"{arch}.attention.head_count_kv") == config.num_key_value_heads
    assert math.isclose(field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
                        config.rms_norm_eps, rel_tol=1e-6)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == [vocab[i] for i in range(len(tokens))]
    assert field(reader, "tokenizer.ggml.merges") == [" ".join(m) for m in tokenizer["model"]["merges"]]
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("<|im_end|>")
    assert field(reader, "tokenizer.chat_template") == \
        json.loads((model / "tokenizer_config.json").read_text())["chat_template"]

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    for n in range(config.num_hidden_layers):
        for hf, ours in (("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"),
                         ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                         ("self_attn.o_proj", "attn_output"), ("self_attn.q_norm", "attn_q_norm"),
                         ("self_attn.k_norm", "attn_k_norm"), ("post_attention_layernorm", "ffn_norm"), ("mlp.gate_proj", "ffn_gate"),
                         ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")):
            for kind in ("weight", "bias"):
                names[f"model.layers.{n}.{hf}.{kind}"] = f"blk.{n}.{ours}.{kind}"
    expected = {names[n]: n for n in merged.names()}
    assert {t.name for t in reader.tensors} == set(expected)
    for t in reader.tensors:
        hf = expected[t.name]
        want = np.asarray(merged.floats(hf), np.float32).reshape(merged.shape(hf))
        if family == "llama" and ".attn_q." in t.name:
            want = library_permute(want, config.num_attention_heads)
        if family == "llama" and ".attn_k." in t.name:
            want = library_permute(want, config.num_key_value_heads)
        assert list(reversed(t.shape.tolist())) == list(want.shape), t.name
        kind = ggml_type if want.ndim == 2 and t.name.endswith(".weight") and \
            "_norm" not in t.name else gguf.F32
        if kind == gguf.Q4_0 and t.name in ("token_embd.weight", "output.weight"):
            kind = gguf.Q8_0
        assert t.tensor_type == LIBRARY_TYPES[kind], t.name
        if kind in (gguf.F32, gguf.F16):
            got = np.asarray(dequantize(t.data, t.tensor_type)).reshape(want.shape)
            assert np.array_equal(got, want.astype(np.float16).astype(np.float32)
                                  if kind == gguf.F16 else want), t.name
        else:
            assert np.array_equal(np.asarray(t.data).ravel(),
                                  quants.quantize(want, LIBRARY_TYPES[kind]).ravel()), t.name


@pytest.mark.parametrize("ggml_type", [gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0])
def test_transformers_loads_the_gguf_with_our_logits(chat, ggml_type):
    family, path, _, _, merged, ours, ids = chat
    out = write(model_writer(merged, ggml_type, "tiny"), path / f"hf-{ggml_type}.gguf")
    hf = AutoModelForCausalLM.from_pretrained(path, gguf_file=out.name).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].double().numpy()
    assert em.relative_error(theirs, ours) <= LOGIT_BOUNDS[ggml_type]


def test_transformers_reads_the_byte_level_tokenizer(tmp_path):
    # A llama GGUF: transformers reads a qwen2 one's tokenizer as Qwen2's own (its own split of
    # digits), whatever the file says.
    model, _ = em.chat_with_adapter(tmp_path, "llama")
    out = write(model_writer(load_merged(model), gguf.F16, "tiny"), tmp_path / "tok.gguf")
    path = tmp_path
    want = AutoTokenizer.from_pretrained(model)
    got = AutoTokenizer.from_pretrained(path, gguf_file=out.name)
    for text in make_corpus()[:1500] + ["<|im_start|>user\nHi<|im_end|>"]:
        assert got(text)["input_ids"] == want(text)["input_ids"], text


def test_sentencepiece_style_tokenizer_reads_back(tmp_path):
    # Llama 2 / TinyLlama style: BPE with byte fallback, "▁" for spaces, <s> added in front.
    tok = sentencepiece_tokenizer()
    model = tmp_path / "spm"
    model.mkdir()
    tok.save(str(model / "tokenizer.json"))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                                 intermediate_size=64, max_position_embeddings=64, bos_token_id=1,
                                 eos_token_id=2)).save_pretrained(model)
    (model / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "tokenizer_class": "LlamaTokenizerFast"}))
    out = write(model_writer(load_merged(model), gguf.F16, "spm"), tmp_path / "spm.gguf")
    reader = GGUFReader(out)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[:3] == [3, 3, 3] and set(types[3:259]) == {6} and set(types[259:]) == {1}
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    assert field(reader, "tokenizer.ggml.add_space_prefix") is True
    # transformers rebuilds the merges from the scores (as SentencePiece orders them).
    got = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    want = AutoTokenizer.from_pretrained(model)
    bad = [t for t in make_corpus()[:1500] if got(t)["input_ids"] != want(t)["input_ids"]]
    assert not bad, bad[:5]


def test_pre_tokenizers_are_recognized():
    def spec(tok):
        return json.loads(tok.to_str())["pre_tokenizer"]

    assert pre_tokenizer_name(spec(byte_level_tokenizer("gpt2"))) == "gpt-2"
    assert pre_tokenizer_name(spec(byte_level_tokenizer("llama3"))) == "llama-bpe"
    assert pre_tokenizer_name(spec(byte_level_tokenizer("qwen2"))) == "qwen2"
    smollm = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    assert pre_tokenizer_name(smollm) == "smollm"
    assert pre_tokenizer_name({"type": "Whitespace"}) is None


def test_an_unknown_pre_tokenizer_is_warned_about(tmp_path):
    model, _ = em.chat_with_adapter(tmp_path, "llama")
    spec = json.loads((model / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "ByteLevel", "add_prefix_space": False,
                                      "trim_offsets": True, "use_regex": True}]}
    (model / "tokenizer.json").write_text(json.dumps(spec))
    warnings = []
    writer = model_writer(load_merged(model), gguf.F16, "tiny", warn=warnings.append)
    assert len(warnings) == 1 and "may split some text differently" in warnings[0]
    assert writer.metadata["tokenizer.ggml.pre"] == (gguf.STRING, "default")


def test_non_finite_weights_stop_the_write(chat, tmp_path):
    _, _, _, _, merged, _, _ = chat
    name = "model.layers.0.mlp.up_proj.weight"
    shape, data = merged.replaced[name]
    bad = np.array(data)
    bad[3] = np.nan
    merged.replaced[name] = (shape, bad)
    try:
        with pytest.raises(NonFiniteWeightsError, match="blk.0.ffn_up.weight"):
            write(model_writer(merged, gguf.Q8_0, "tiny"), tmp_path / "bad.gguf")
    finally:
        merged.replaced[name] = (shape, data)


# --- LoRA adapters for --lora --------------------------------------------------------------------

# some modules with a rank and alpha of their own (PEFT's rank_pattern and alpha_pattern)
PATTERNS = dict(rank_pattern={"k_proj": 2, r"layers\.1\.mlp\.down_proj": 6},
                alpha_pattern={"^model.layers.0.self_attn.o_proj": 20, "gate_proj": 3, "k_proj": 5})


@pytest.mark.parametrize("options", [{}, dict(use_rslora=True), PATTERNS,
                                     dict(PATTERNS, use_rslora=True)])
def test_lora_adapter_applied_to_the_base_gives_the_merged_weights(tmp_path, options):
    """llama.cpp's --lora computes W + (alpha / r) * B.A from the two files, r from each
    tensor: done here in NumPy on what the gguf package reads, it must give the merged model's
    weights (q and k in llama.cpp's layout)."""
    model, adapter = em.chat_with_adapter(tmp_path, "llama", **options)
    assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted=2 * 7)


def test_lora_adapter_whose_tensors_disagree_with_its_config_is_refused(tmp_path):
    model, adapter = em.chat_with_adapter(tmp_path, "llama")
    config, tensors, _ = load_adapter(adapter)
    lora = LoraConfig.from_peft_dict(dict(config, modules_to_save=None, rank_pattern={"v_proj": 3}))
    with pytest.raises(ExportError, match=r"model.layers.0.self_attn.v_proj tensors have rank 4 "
                                          r"and 4, its adapter_config.json says 3"):
        adapter_writer(DecoderCheckpoint.read_config(model), lora, tensors, gguf.F32, "x")


def assert_lora_gives_the_merged_weights(model, adapter, tmp_path, adapted, r=4):
    """The adapter GGUF of `adapter` over the base GGUF of `model`, as llama.cpp's --lora
    applies it, gives the GGUF of the merged model: every one of the `adapted` tensors, and the
    others unchanged. A linear's W + (alpha / rank) * B.A; token_embd's row t gains
    (alpha / rank) * B @ A[t] (build_inp_embd: lora_a's rows gathered by token id, lora_b not
    transposed); the rank is lora_b's, each pair's shapes pass llama.cpp's checks
    (llama_adapter_lora_init). The architecture is the base's; alpha / r is the scale of a
    module at the adapter's r."""
    config, tensors, _ = load_adapter(adapter)
    ours = DecoderCheckpoint.read_config(model)
    lora = LoraConfig.from_language_model_dict(config, ours.lora_targets)
    adapter_file = write(adapter_writer(ours, lora, tensors, gguf.F32, "tiny-lora"),
                         tmp_path / "adapter.gguf")
    base_file = write(model_writer(load_merged(model), gguf.F32, "base"), tmp_path / "base.gguf")
    merged_file = write(model_writer(load_merged(model, adapter), gguf.F32, "m"),
                        tmp_path / "merged.gguf")
    reader = GGUFReader(adapter_file)
    assert field(reader, "general.type") == "adapter"
    assert field(reader, "adapter.type") == "lora"
    assert field(reader, "general.architecture") == field(GGUFReader(base_file), "general.architecture")
    alpha = field(reader, "adapter.lora.alpha")
    assert math.isclose(alpha / r, lora.scaling, rel_tol=1e-6)

    def tensors_of(path):
        return {t.name: np.asarray(dequantize(t.data, t.tensor_type)).reshape(
            list(reversed(t.shape.tolist()))) for t in GGUFReader(path).tensors}

    lora_t, base, merged = tensors_of(adapter_file), tensors_of(base_file), tensors_of(merged_file)
    assert len(lora_t) == 2 * adapted
    assert {n.rsplit(".", 1)[0] for n in lora_t} <= set(base)         # every one names a tensor
    for name, w in base.items():
        if name + ".lora_a" not in lora_t:
            assert np.array_equal(w, merged[name]), name
            continue
        a, b = lora_t[name + ".lora_a"], lora_t[name + ".lora_b"]
        rank = b.shape[1]                                 # llama.cpp: lora_b's ne[0]
        # llama.cpp's checks, in ne order (ne = the reversed shape)
        (w0, w1), (a0, a1), (b0, b1) = (tuple(reversed(x.shape)) for x in (w, a, b))
        if name == "token_embd.weight":
            assert (w0, w1) == (b1, a1) and a0 == b0 == rank, (w.shape, a.shape, b.shape)
            delta = a.astype(np.float64) @ b.T            # row t: B @ A[t]
        else:
            assert (w0, w1) == (a0, b1) and a1 == b0 == rank, (w.shape, a.shape, b.shape)
            delta = b.astype(np.float64) @ a
        rebuilt = w + (alpha / rank) * delta
        assert np.abs(rebuilt - merged[name]).max() <= 1e-5 * np.abs(merged[name]).max(), name
        assert np.abs(w - merged[name]).max() > 1e-3 * np.abs(merged[name]).max(), name  # it moved


def test_gguf_export_runs_without_numpy(tmp_path):
    """The page and the extension write GGUF in Pyodide, where there is no NumPy: the same file
    comes out of a process where importing NumPy fails."""
    import subprocess
    import sys

    model, adapter = em.chat_with_adapter(tmp_path, "llama")
    script = (
        "import sys; sys.modules['numpy'] = None\n"
        "from py_engine.export import gguf\n"
        "from py_engine.export.gguf_llama import model_writer\n"
        "from py_engine.export.merged import load_merged\n"
        "from py_engine.export.modelfile import modelfile\n"
        f"with open({str(tmp_path / 'pure.gguf')!r}, 'wb') as f:\n"
        f"    model_writer(load_merged({str(model)!r}), gguf.Q4_0, 'tiny').write(f)\n"
        f"print(modelfile({str(model)!r}, 'pure.gguf').splitlines()[0])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "FROM ./pure.gguf\n"
    write(model_writer(load_merged(model), gguf.Q4_0, "tiny"), tmp_path / "host.gguf")
    assert (tmp_path / "pure.gguf").read_bytes() == (tmp_path / "host.gguf").read_bytes()
