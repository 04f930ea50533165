"""The GGUF exports run by llama.cpp itself, through llama-cpp-python (not a test dependency:
it compiles llama.cpp, minutes on two cores). Run by hand:

    python3 -m venv /tmp/llcpp && /tmp/llcpp/bin/pip install llama-cpp-python numpy
    .venv/bin/python tests/llama_cpp_check.py /tmp/llcpp/bin/python [WORKDIR]

Phase one (this interpreter): tiny Llama, Qwen2, Qwen3, SmolLM3, Gemma, Gemma 2, Gemma 3 and Phi-3 checkpoints with PEFT adapters, their
merged GGUF in every type, the base GGUF and the adapter GGUF, a SentencePiece-style
checkpoint, a tiny DialoGPT-like GPT-2 checkpoint and a tiny Phi-2 one with PEFT adapters
(merged in every type for GPT-2, F32 for Phi-2; the base and the adapter GGUF for both), a tiny FLAN-T5-like
one with an adapter on every linear and its head (merged, base and adapter F32), our logits, PEFT's greedy tokens and the
tokenizers' ids; a LoRA on the token embedding and the output layer of an untied Llama and
of a GPT-2 (base and adapter F32). Phase two (the other interpreter, `--llama`): llama.cpp's logits (merged files,
and base + --lora adapter; T5 teacher-forced through llama.cpp's encode and decode calls),
greedy tokens and tokenization, compared.
"""

import json
import subprocess
import sys
from pathlib import Path

PROMPT = "Hello! How are you today? The capital of France is Paris. 2026"
F32_CACHE = 0          # GGML_TYPE_F32, for the KV cache
TYPES = ("F32", "F16", "Q8_0", "Q4_0")


def prepare(work):
    sys.path.insert(0, str(Path(__file__).parent))
    import numpy as np
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    import export_models as em
    import test_tokenizer_bpe as tb
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import adapter_writer, model_writer
    from py_engine.export.merged import load_merged
    from py_engine.formats.peft_adapter import load_adapter
    from py_engine.models.llama_config import LlamaConfig as OurConfig
    from py_engine.models.lora_config import LoraConfig

    def write(writer, path):
        with open(path, "wb") as f:
            writer.write(f)

    corpus = tb.make_corpus()[:3000]
    for family in ("llama", "qwen2", "qwen3", "smollm3", "gemma", "gemma2", "gemma3", "phi3"):
        d = work / family
        d.mkdir(parents=True, exist_ok=True)
        model, adapter = em.chat_with_adapter(d, family)
        tok = Tokenizer.from_file(str(model / "tokenizer.json"))
        ids = tok.encode(PROMPT).ids
        if family == "phi3":
            # LongRoPE past its switch: llama.cpp takes the long factors for every position when
            # n_ctx exceeds the original context, as transformers' forward over the whole
            # prompt does (and our generate, which runs the sequence again at the switch); the
            # decoder's own step calls keep the first positions' keys rotated by the short
            # factors. So the reference here is transformers' whole-prompt forward.
            np.save(d / "ours.npy", whole_prompt_logits(model, adapter, ids))
            np.save(d / "base.npy", whole_prompt_logits(model, None, ids))
        else:
            np.save(d / "ours.npy", em.our_decoder_logits(model, adapter, ids))
            np.save(d / "base.npy", em.our_decoder_logits(model, None, ids))
        merged = load_merged(model, adapter)
        for name in TYPES:
            write(model_writer(merged, gguf.TYPE_IDS[name], "m"), d / f"merged-{name}.gguf")
        write(model_writer(load_merged(model), gguf.F32, "base"), d / "base-F32.gguf")
        config, tensors, _ = load_adapter(adapter)
        lora = LoraConfig.from_peft_dict(dict(config, modules_to_save=None))
        write(adapter_writer(OurConfig.from_file(model), lora, tensors, gguf.F32, "a"),
              d / "adapter.gguf")
        (d / "ids.json").write_text(json.dumps(
            {"ids": ids, "text": {t: tok.encode(t, add_special_tokens=False).ids for t in corpus}}))
    # SentencePiece style; llama.cpp reads tokens as C strings, so none may hold NUL.
    original = tb.training_texts
    tb.training_texts = lambda: [t.replace("\0", "") for t in original()]
    d = work / "spm"
    d.mkdir(exist_ok=True)
    tok = tb.sentencepiece_tokenizer()
    tok.save(str(d / "tokenizer.json"))
    LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                 max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
                     ).save_pretrained(d)
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    write(model_writer(load_merged(d), gguf.F16, "spm"), d / "spm.gguf")
    (d / "ids.json").write_text(json.dumps({"text": {t: tok.encode(t).ids for t in corpus}}))
    prepare_gpt2(work / "gpt2", corpus, write)
    prepare_phi2(work / "phi2", write)
    prepare_t5(work / "t5", write)
    prepare_tables(work, write)


def prepare_tables(work, write):
    """A LoRA on the token embedding and the output layer beside one on linears (PEFT's
    lora_embedding_A/B and lm_head's lora_A/B, perturbed off their start): an untied Llama,
    and a GPT-2 (tied; its GGUF writes the head out as output.weight)."""
    import numpy as np

    import export_models as em
    from test_lora_tables import peft_on
    from test_saved_modules import gpt2_without_chat_tokens
    from tiny_chat import tiny_chat_dir

    for name, targets in (("tables-llama", ["embed_tokens", "lm_head", "q_proj", "v_proj"]),
                          ("tables-gpt2", ["wte", "lm_head", "c_fc"])):
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        model = gpt2_without_chat_tokens(d) if name == "tables-gpt2" else tiny_chat_dir(d, family="llama")
        peft_on(model, d / "adapter", targets)
        ids = [int(i) for i in np.random.default_rng(3).integers(0, 300, 12)]
        (d / "ids.json").write_text(json.dumps({"ids": ids}))
        np.save(d / "ours.npy", em.our_decoder_logits(model, d / "adapter", ids))
        base_and_adapter(d, model, d / "adapter", write)


def whole_prompt_logits(model, adapter, ids):
    """transformers' (PEFT's, with an adapter) logits of one forward over all of `ids`, float64."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(model).double()
        if adapter is not None:
            hf = PeftModel.from_pretrained(hf, adapter)
        return hf.eval()(torch.tensor([ids])).logits[0].numpy()


def base_and_adapter(d, model, adapter, write, base_logits=None):
    """base-F32.gguf and adapter.gguf beside the checkpoint, and our base logits (a decoder's,
    unless given)."""
    import numpy as np

    import export_models as em
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import adapter_writer, model_writer
    from py_engine.export.merged import load_merged
    from py_engine.formats.peft_adapter import load_adapter
    from py_engine.models.checkpoint import DecoderCheckpoint
    from py_engine.models.lora_config import LoraConfig

    config, tensors, _ = load_adapter(adapter)
    ours = DecoderCheckpoint.read_config(model)
    lora = LoraConfig.from_language_model_dict(config, ours.lora_targets)
    write(model_writer(load_merged(model), gguf.F32, "base"), d / "base-F32.gguf")
    write(adapter_writer(ours, lora, tensors, gguf.F32, "a"), d / "adapter.gguf")
    if base_logits is None:
        base_logits = em.our_decoder_logits(model, None, json.loads((d / "ids.json").read_text())["ids"])
    np.save(d / "base.npy", base_logits)


def prepare_phi2(d, write):
    import numpy as np
    from tokenizers import Tokenizer
    from transformers import PhiForCausalLM

    import export_models as em
    from phi_checkpoints import tiny_phi_dir
    from test_phi2_gguf import LINEARS
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import model_writer
    from py_engine.export.merged import load_merged

    d.mkdir(parents=True, exist_ok=True)
    model = tiny_phi_dir(d / "phi")
    adapter, _ = em.merged_with_adapter(PhiForCausalLM, model, d, LINEARS)
    write(model_writer(load_merged(model, adapter), gguf.F32, "m"), d / "merged-F32.gguf")
    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(PROMPT).ids
    np.save(d / "ours.npy", em.our_decoder_logits(model, adapter, ids))
    (d / "ids.json").write_text(json.dumps({"ids": ids}))
    base_and_adapter(d, model, adapter, write)


def prepare_t5(d, write):
    """Teacher-forced logits: the decoder's after its start token and each target token but
    the last, our NumPy decoder's with and without the adapter."""
    import numpy as np

    from conftest import run
    from test_t5_gguf import t5_with_adapter
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import model_writer
    from py_engine.export.merged import load_merged
    from py_engine.train.seq2seq import Seq2SeqModel

    d.mkdir(parents=True, exist_ok=True)
    model, adapter, _ = t5_with_adapter(d, seed=3, head=True, num_decoder_layers=2)
    write(model_writer(load_merged(model, adapter), gguf.F32, "m"), d / "merged-F32.gguf")

    def logits(adapter_dir):
        m = run(Seq2SeqModel.load(str(model), adapter_dir=adapter_dir))
        ids = m.tokenizer.encode("translate: the quick brown fox").ids
        target = m.tokenizer.encode("der schnelle braune fuchs").ids
        decoder = m.decoder()
        rows = [run(decoder.prefill(ids))] + [run(decoder.step(t)) for t in target[:-1]]
        return ids, target, np.array(rows, np.float64), m.checkpoint.config.decoder_start_token_id

    ids, target, ours, start = logits(str(adapter))
    np.save(d / "ours.npy", ours)
    (d / "ids.json").write_text(json.dumps({"ids": ids, "target": target, "start": start}))
    base_and_adapter(d, model, adapter, write, base_logits=logits(None)[2])


def prepare_gpt2(d, corpus, write):
    import numpy as np
    import torch
    from tokenizers import Tokenizer

    import export_models as em
    from test_gpt2_gguf import dialogpt_with_adapter
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import model_writer
    from py_engine.export.merged import load_merged

    d.mkdir(parents=True, exist_ok=True)
    model, adapter, merged_hf = dialogpt_with_adapter(d)
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    np.save(d / "ours.npy", em.our_decoder_logits(model, adapter, ids))
    with torch.no_grad():
        greedy = merged_hf.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32,
                                    do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    merged = load_merged(model, adapter)
    for name in TYPES:
        write(model_writer(merged, gguf.TYPE_IDS[name], "m"), d / f"merged-{name}.gguf")
    (d / "ids.json").write_text(json.dumps(
        {"ids": ids, "greedy": greedy,
         "text": {t: tok.encode(t, add_special_tokens=False).ids for t in corpus}}))
    base_and_adapter(d, model, adapter, write)


def check(work):
    import numpy as np
    from llama_cpp import Llama

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    # an F32 KV cache (llama.cpp's default is F16, which alone moves Phi-3's logits by 1.4e-3):
    # what is compared is the file
    def logits(path, ids, lora=None):
        m = Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False,
                  lora_path=lora, n_threads=1, type_k=F32_CACHE, type_v=F32_CACHE)
        m.eval(ids)
        return np.array(m.scores[:len(ids)], np.float64), m

    for family in ("llama", "qwen2", "qwen3", "smollm3", "gemma", "gemma2", "gemma3", "phi3"):
        d = work / family
        data = json.loads((d / "ids.json").read_text())
        ids, ours, base = data["ids"], np.load(d / "ours.npy"), np.load(d / "base.npy")
        for name in TYPES:
            got, m = logits(d / f"merged-{name}.gguf", ids)
            print(f"{family} merged {name}: logits rel error {rel(got, ours):.2e}")
        got, _ = logits(d / "base-F32.gguf", ids)
        print(f"{family} base F32: logits rel error {rel(got, base):.2e}")
        got, _ = logits(d / "base-F32.gguf", ids, lora=str(d / "adapter.gguf"))
        print(f"{family} base F32 + --lora adapter.gguf: logits rel error {rel(got, ours):.2e}")
        bad = sum(m.tokenize(t.encode(), add_bos=False, special=True) != want
                  for t, want in data["text"].items())
        print(f"{family} tokenizer: {bad} of {len(data['text'])} strings differ")
    check_gpt2(work, logits, rel)
    for family in ("gpt2", "phi2", "tables-llama", "tables-gpt2"):
        check_lora(work / family, family, logits, rel)
    check_t5(work / "t5", rel)
    m = Llama(model_path=str(work / "spm" / "spm.gguf"), vocab_only=True, verbose=False)
    data = json.loads((work / "spm" / "ids.json").read_text())
    bad = sum(m.tokenize(t.encode(), add_bos=True, special=True) != want
              for t, want in data["text"].items())
    print(f"sentencepiece-style tokenizer: {bad} of {len(data['text'])} strings differ")


def check_lora(d, family, logits, rel):
    import numpy as np

    ids = json.loads((d / "ids.json").read_text())["ids"]
    if (d / "merged-F32.gguf").exists():
        got, _ = logits(d / "merged-F32.gguf", ids)
        print(f"{family} merged F32: logits rel error {rel(got, np.load(d / 'ours.npy')):.2e}")
    got, _ = logits(d / "base-F32.gguf", ids)
    print(f"{family} base F32: logits rel error {rel(got, np.load(d / 'base.npy')):.2e}")
    got, _ = logits(d / "base-F32.gguf", ids, lora=str(d / "adapter.gguf"))
    print(f"{family} base F32 + --lora adapter.gguf: logits rel error "
          f"{rel(got, np.load(d / 'ours.npy')):.2e}")


def check_t5(d, rel):
    """llama-cpp-python's Llama runs no encoder-decoder: its low-level calls, as llama.cpp's
    own T5 example does (encode the input, then decode from the decoder start token)."""
    import llama_cpp as cpp
    import numpy as np

    data = json.loads((d / "ids.json").read_text())
    cpp.llama_backend_init()

    def teacher_forced(path, lora=None):
        model = cpp.llama_model_load_from_file(str(path).encode(), cpp.llama_model_default_params())
        params = cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = 128
        params.n_threads = params.n_threads_batch = 1
        params.type_k = params.type_v = F32_CACHE
        ctx = cpp.llama_init_from_model(model, params)
        if lora:
            adapter = cpp.llama_adapter_lora_init(model, str(lora).encode())
            assert adapter, f"llama.cpp did not load {lora}"
            cpp.llama_set_adapter_lora(ctx, adapter, 1.0)
        ids = (cpp.llama_token * len(data["ids"]))(*data["ids"])
        assert cpp.llama_encode(ctx, cpp.llama_batch_get_one(ids, len(data["ids"]))) == 0
        start = cpp.llama_model_decoder_start_token(model)
        assert start == data["start"], (start, data["start"])
        vocab = cpp.llama_vocab_n_tokens(cpp.llama_model_get_vocab(model))
        rows = []
        for token in [start] + data["target"][:-1]:
            one = (cpp.llama_token * 1)(token)
            assert cpp.llama_decode(ctx, cpp.llama_batch_get_one(one, 1)) == 0
            rows.append(np.ctypeslib.as_array(cpp.llama_get_logits_ith(ctx, -1), shape=(vocab,))
                        .astype(np.float64))
        return np.array(rows)

    ours, base = np.load(d / "ours.npy"), np.load(d / "base.npy")
    print(f"t5 merged F32: logits rel error {rel(teacher_forced(d / 'merged-F32.gguf'), ours):.2e}")
    print(f"t5 base F32: logits rel error {rel(teacher_forced(d / 'base-F32.gguf'), base):.2e}")
    got = teacher_forced(d / "base-F32.gguf", d / "adapter.gguf")
    print(f"t5 base F32 + --lora adapter.gguf: logits rel error {rel(got, ours):.2e}")


def check_gpt2(work, logits, rel):
    import numpy as np

    d = work / "gpt2"
    data = json.loads((d / "ids.json").read_text())
    ids, ours = data["ids"], np.load(d / "ours.npy")
    for name in TYPES:
        got, m = logits(d / f"merged-{name}.gguf", ids)
        print(f"gpt2 merged {name}: logits rel error {rel(got, ours):.2e}")
        if name == "F32":
            m.reset()
            greedy = []
            for token in m.generate(ids, temp=0.0, top_k=1, reset=True):
                greedy.append(token)
                if len(greedy) == len(data["greedy"]):
                    break
            print(f"gpt2 merged F32: greedy {len(greedy)} tokens equal to PEFT's: "
                  f"{greedy == data['greedy']}")
    bad = sum(m.tokenize(t.encode(), add_bos=False, special=True) != want
              for t, want in data["text"].items())
    print(f"gpt2 tokenizer: {bad} of {len(data['text'])} strings differ")


if __name__ == "__main__":
    if sys.argv[1] == "--llama":
        check(Path(sys.argv[2]))
    else:
        work = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/llama_cpp_check")
        prepare(work)
        subprocess.run([sys.argv[1], __file__, "--llama", str(work)], check=True)
