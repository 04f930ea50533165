"""PEFT's LoRA on a language model's token embedding (lora_embedding_A / lora_embedding_B) and
on its output layer (lora_A / lora_B on lm_head), beside or without the LoRA on its linears
(models/lora_tables.py).

Against transformers + PEFT: one step's loss and every gradient on the NumPy backend in float64
(bounds as test_saved_modules': 1e-6 loss, 1e-5 gradients) for untied and tied Llama and Qwen2
checkpoints, Gemma (its embedding scaled), Phi-2 (the head's bias) and GPT-2 (tied, Conv1D);
the GPU's (lavapipe) against NumPy's; through ChatModel, an adapter PEFT saved (its copies of
the base tables included) read, generating as PEFT does, trained and saved for PEFT to read;
fresh adapters started as PEFT starts them; what is refused, by name.
"""

import re

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import GemmaConfig, GemmaForCausalLM
from transformers import LlamaConfig as HFLlamaConfig
from transformers import (GPT2LMHeadModel, LlamaForCausalLM, PhiConfig, PhiForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

import peft_oracle as po
from test_saved_modules import GPT2, PHI, TINY, a_batch, our_step, peft_logits

GEMMA = dict(TINY, head_dim=8, hidden_activation="gelu_pytorch_tanh")


def perturbed_peft(base, adapter_dir, seed=0, **options):
    """PEFT's LoRA (r=4, lora_alpha=8, the other LoraConfig `options`) on `base`, every
    trainable tensor moved off its start (PEFT starts lora_B, and an embedding's
    lora_embedding_A, at zero: the other's gradient would be zero), saved to adapter_dir as
    PEFT saves it (the wrapped tables' base_layer copies included); returned in float64."""
    torch.manual_seed(seed)
    peft = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, **options))
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(adapter_dir)
    return peft.double()


def tables_adapter(path, model_class, config, targets, seed=0, **options):
    """perturbed_peft of a fresh checkpoint (saved under path / "model") with a LoRA on
    `targets` (a list, or a regular expression), the adapter under path / "adapter"."""
    torch.manual_seed(seed)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    return perturbed_peft(base, path / "adapter", seed,
                          target_modules=targets if isinstance(targets, str) else list(targets),
                          **options)


CASES = [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["q_proj", "v_proj", "embed_tokens", "lm_head"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["embed_tokens"], {}),
    # a padding token: its row of lora_embedding_A gets no gradient (nn.Embedding's padding_idx)
    (LlamaForCausalLM, HFLlamaConfig(**TINY, pad_token_id=5), ["embed_tokens", "q_proj"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["lm_head"], {}),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True),
     ["v_proj", "embed_tokens", "lm_head"], {}),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["lm_head"],
     dict(rank_pattern={"lm_head": 2}, alpha_pattern={"lm_head": 6})),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["embed_tokens", "o_proj"],
     dict(use_rslora=True)),
    (GemmaForCausalLM, GemmaConfig(**GEMMA), ["embed_tokens", "lm_head", "down_proj"], {}),
    (PhiForCausalLM, PHI, ["embed_tokens", "lm_head", "dense"], dict(bias="lora_only")),
    (PhiForCausalLM, PhiConfig(**dict(PHI.to_dict(), pad_token_id=7)), ["embed_tokens"], {}),
    (GPT2LMHeadModel, GPT2, ["c_attn", "wte", "lm_head"], dict(fan_in_fan_out=True)),
    (GPT2LMHeadModel, GPT2, "^(transformer.wte|lm_head)$", {}),
    # PEFT's lora_bias: the output layer's lora_B bias adds s b_B to the logits, beside a head
    # without a bias (Llama, GPT-2's tied one) or with one trained too (Phi-2, bias="all")
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["lm_head", "q_proj"], dict(lora_bias=True)),
    (PhiForCausalLM, PHI, ["lm_head", "dense"], dict(lora_bias=True, bias="all")),
    (GPT2LMHeadModel, GPT2, ["lm_head"], dict(lora_bias=True)),
]


@pytest.mark.parametrize("model_class, hf_config, targets, options", CASES)
def test_step_matches_peft(tmp_path, model_class, hf_config, targets, options):
    peft = tables_adapter(tmp_path, model_class, hf_config, targets, **options)
    ids, mask, labels = a_batch(96)
    pad = getattr(hf_config, "pad_token_id", None)
    if pad is not None:
        ids[2, 7:] = pad              # the padded tail holds the padding token, as tokenizers pad
        ids[1, 2] = pad
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}

    loss, grads, model = our_step(tmp_path, ids, mask, labels)
    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    assert any("lora_embedding" in n or n.startswith("lm_head.lora") for n in want)
    po.check_gradients(grads, want, 1e-5)


# --- through ChatModel: PEFT's adapters read, ours read by PEFT, both backends, the merged model


def peft_on(model_dir, adapter_dir, targets, seed=1, **options):
    """perturbed_peft (in eval mode) of the checkpoint with a LoRA on `targets`, task
    CAUSAL_LM."""
    from transformers import AutoModelForCausalLM

    return perturbed_peft(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir, seed,
                          task_type="CAUSAL_LM", target_modules=list(targets), **options).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2-tied", "gpt2-tied"])
def adapted(request, tmp_path_factory):
    """(checkpoint, adapter dir, PEFT model, ids): a LoRA on the embedding, the output layer and
    one linear of an untied Llama, a tied Qwen2 and a tied GPT-2 checkpoint (Qwen2's with LoRA
    dropout, which the output layer's LoRA path goes through in training)."""
    from test_saved_modules import gpt2_without_chat_tokens
    from tiny_chat import tiny_chat_dir

    path = tmp_path_factory.mktemp("tables")
    if request.param == "gpt2-tied":
        model_dir, targets = gpt2_without_chat_tokens(path), ["wte", "lm_head", "c_fc"]
    else:
        model_dir = tiny_chat_dir(path, family=request.param.split("-")[0])
        targets = ["embed_tokens", "lm_head", "v_proj"]
    options = dict(lora_dropout=0.1) if request.param == "qwen2-tied" else {}
    peft = peft_on(model_dir, path / "adapter", targets, **options)
    ids = [int(i) for i in np.random.default_rng(3).integers(0, 300, 12)]
    return model_dir, path / "adapter", peft, ids


def test_a_peft_adapter_generates_as_peft(adapted):
    """PEFT's adapter (its base_layer copies of the tables read as the checkpoint's): the
    decoder's next-token logits, a prompt then one token at a time, are PEFT's (1e-5)."""
    from export_models import our_decoder_logits, relative_error

    model_dir, adapter, peft, ids = adapted
    assert relative_error(our_decoder_logits(model_dir, adapter, ids), peft_logits(peft, ids)) <= 1e-5


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_gpu_trains_and_generates_as_numpy_does(adapted, checkpointing):
    """Four AdamW steps on lavapipe against the NumPy runtime in float32 (with gradient
    checkpointing as without): losses 1e-4, every trained tensor 1e-3 relative; the GPU
    decoder's logits NumPy's (1e-4)."""
    from conftest import run
    from export_models import relative_error
    from test_chat_model import compared_run, random_examples
    from py_engine.train.chat import ChatModel

    model_dir, adapter, _, ids = adapted
    results = []
    for backend in ("numpy", "gpu"):
        chat = run(ChatModel.load(model_dir, adapter, backend=backend))
        decoder = chat.decoder()
        logits = np.asarray(run(decoder.prefill(ids)), np.float64)
        examples = random_examples(8, chat.checkpoint.config.vocab_size, seed=5)
        history = run(chat.fit(examples, compared_run(lr=5e-3, max_grad_norm=0.5,
                                                       gradient_checkpointing=checkpointing)))
        results.append((logits, [h.loss for h in history], run(chat.runtime.trainable_values())))
    (np_logits, np_losses, np_values), (gpu_logits, gpu_losses, gpu_values) = results
    assert relative_error(gpu_logits, np_logits) <= 1e-4
    np.testing.assert_allclose(gpu_losses, np_losses, rtol=1e-4)
    assert any("lora_embedding_A" in n for n in np_values)
    for name, (_, ref) in np_values.items():
        ref = np.asarray(ref, np.float64)
        got = np.asarray(gpu_values[name][1], np.float64)
        assert np.linalg.norm(got - ref) <= 1e-3 * np.linalg.norm(ref), name


def test_the_merged_model_is_the_adapter_s(adapted, tmp_path):
    """The merged checkpoint (each LoRA folded into its table: E + s (B.A)^T, W + s B.A)
    and its GGUF give PEFT's logits in transformers (1e-5); a tied pair is written untied (PEFT's
    merge_and_unload would fold both LoRAs into the one table); untied, every tensor is
    merge_and_unload's (1e-6). The hybrid switch keeps the outputs where the pair is untied
    and is refused by name where it would untie them."""
    import copy
    import json

    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from conftest import run
    from export_models import check_switch_to_full_keeps_outputs, relative_error
    from py_engine.export.merged import load_merged, save_merged
    from py_engine.train.chat import ChatModel

    model_dir, adapter, peft, ids = adapted
    merged = load_merged(model_dir, adapter)
    save_merged(merged, tmp_path / "merged")
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").double().eval()
    with torch.no_grad():
        merged_logits = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert relative_error(merged_logits, peft_logits(peft, ids)) <= 1e-5
    # the merged GGUF too (a tied pair's output.weight written out): transformers reads it back
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import model_writer

    with open(tmp_path / "model.gguf", "wb") as f:
        model_writer(merged, gguf.F32, "tiny").write(f)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf").double().eval()
    with torch.no_grad():
        gguf_logits = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert relative_error(gguf_logits, peft_logits(peft, ids)) <= 1e-5
    tied = peft.base_model.model.config.tie_word_embeddings
    got = load_file(tmp_path / "merged" / "model.safetensors")
    if not tied:
        theirs = copy.deepcopy(peft).merge_and_unload()
        want = {n: p.detach().numpy() for n, p in theirs.state_dict().items()}
        assert set(got) == set(want)
        for name, value in got.items():
            assert relative_error(value, want[name]) <= 1e-6, name
    # the GPU's merge is NumPy's
    chat = run(ChatModel.load(model_dir, adapter, backend="gpu"))
    for name, (_, value) in run(chat.runtime.merged_weights()).items():
        assert relative_error(np.asarray(value), np.asarray(merged.floats(name))) <= 1e-6, name

    chat = run(ChatModel.load(model_dir, adapter))
    if tied:
        with pytest.raises(ValueError, match="untie"):
            run(chat.runtime.to_full())
        assert not chat.runtime.model.full
        from py_engine.train.config import CausalTrainConfig
        from test_chat_model import random_examples

        examples = random_examples(6, chat.checkpoint.config.vocab_size, seed=4)
        with pytest.raises(ValueError, match="untie"):     # a hybrid run: before any step
            run(chat.trainer(examples, CausalTrainConfig(mode="hybrid")))
        assert not chat.history
    else:
        check_switch_to_full_keeps_outputs(chat, ids)


def test_the_llama_cpp_adapter_over_the_base_gives_the_merged_model(adapted, tmp_path, capsys):
    """`--format gguf-lora`: the tables' LoRAs written as llama.cpp reads them (token_embd's
    lora_a the rows it gathers by id, output.weight's a linear's pair), applied to the base
    GGUF as llama.cpp applies them, give the merged GGUF (whose logits are PEFT's, above):
    untied Llama, and GPT-2, whose GGUF writes its tied head out as output.weight. A tied
    Qwen2's GGUF has token_embd alone, which llama.cpp would give the embedding's LoRA in the
    output product too: refused by name, nothing written."""
    from test_export_gguf import assert_lora_gives_the_merged_weights

    from py_engine.cli import main

    model_dir, adapter, peft, _ = adapted
    config = peft.base_model.model.config
    if config.model_type == "qwen2":
        out = tmp_path / "gguf-lora"
        code = main(["export", "--format", "gguf-lora", "--model", str(model_dir), "--adapter",
                     str(adapter), "--out", str(out)])
        assert code != 0 and not out.exists()
        assert re.search(r"tied token embedding and output layer \(lm_head, model.embed_tokens\)"
                         r".*applies a LoRA on it to both uses", capsys.readouterr().err)
        return
    layers = config.num_hidden_layers if config.model_type != "gpt2" else config.n_layer
    assert_lora_gives_the_merged_weights(model_dir, adapter, tmp_path, adapted=2 + layers)


def test_a_new_adapter_starts_as_peft_s_and_peft_reads_what_trained(tmp_path):
    """A fresh LoRA on the embedding, the output layer and q_proj starts as PEFT starts one
    (lora_embedding_A zeros, lora_embedding_B from N(0, 1), lm_head's lora_B zeros: the base
    model's scores), trains, saves an adapter PEFT loads and scores as we do (1e-5), and which
    loads back here alike."""
    from transformers import AutoModelForCausalLM

    from conftest import run
    from test_chat_model import hf_losses, random_examples
    from tiny_chat import tiny_chat_dir
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.chat import ChatModel
    from py_engine.train.config import CausalTrainConfig

    model_dir = tiny_chat_dir(tmp_path, family="llama")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "embed_tokens", "lm_head"])
    chat = run(ChatModel.create(model_dir, lora=lora, backend="numpy", seed=3))
    values = {n: np.asarray(v) for n, (_, v) in run(chat.runtime.trainable_values()).items()}
    a, b = "model.embed_tokens.lora_embedding_A", "model.embed_tokens.lora_embedding_B"
    assert not values[a].any() and 0.8 < values[b].std() < 1.2
    assert not values["lm_head.lora_B.weight"].any() and values["lm_head.lora_A.weight"].any()
    vocab = chat.checkpoint.config.vocab_size
    examples = random_examples(4, vocab, seed=2)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for got, (loss, _) in zip(run(chat.score_encoded(examples)), hf_losses(base, examples)):
        assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)

    run(chat.fit(random_examples(8, vocab, seed=1), CausalTrainConfig(epochs=2, lr=1e-2, batch_size=4)))
    trained = {n: np.asarray(v) for n, (_, v) in run(chat.runtime.trainable_values()).items()}
    assert trained[a].any() and np.abs(trained[b] - values[b]).max() > 0
    check_saved_reads_in_peft_and_back(chat, model_dir, tmp_path / "adapter", examples)


def check_saved_reads_in_peft_and_back(chat, model_dir, adapter_dir, examples):
    """The chat model's saved adapter loads in PEFT, scoring `examples` as we do (1e-5), and
    loads back here alike (1e-6); returns the PEFT model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from conftest import run
    from test_chat_model import hf_losses
    from py_engine.train.chat import ChatModel

    run(chat.save(adapter_dir))
    ours = run(chat.score_encoded(examples))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir),
                                     adapter_dir).eval()
    for got, (loss, _) in zip(ours, hf_losses(peft, examples)):
        assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)
    again = run(ChatModel.load(model_dir, adapter_dir))
    for got, want in zip(run(again.score_encoded(examples)), ours):
        assert abs(got["loss"] - want["loss"]) <= 1e-6 * abs(want["loss"])
    return peft


def test_what_is_refused_by_name(tmp_path):
    """DoRA on a table, a module both wrapped and saved whole, an output layer LoRA on a
    decoder classifier, a PEFT copy of a resized table (the encoders' and T5's tables stay
    refused: test_lora_other_targets)."""
    from py_engine.models.decoders import decoder_model
    from py_engine.models.decoder_classifier import DecoderClassifier, DecoderClassifierConfig
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.models.lora_config import LoraConfig, LoraConfigError
    from py_engine.train.init import initial_trainable, merge_loaded

    config = LlamaConfig(model_type="llama", **TINY)
    lora = lambda **o: LoraConfig(r=4, lora_alpha=8, **dict(dict(task_type="CAUSAL_LM"), **o))
    with pytest.raises(LoraConfigError, match="DoRA on model.embed_tokens"):
        decoder_model(config, lora(target_modules=["q_proj", "embed_tokens"], use_dora=True))
    with pytest.raises(LoraConfigError, match="both target_modules and modules_to_save"):
        decoder_model(config, lora(target_modules=["q_proj", "lm_head"], modules_to_save=["lm_head"]))
    head = DecoderClassifierConfig(config)
    seq_cls = lambda targets: LoraConfig(r=4, lora_alpha=8, target_modules=targets)
    with pytest.raises(LoraConfigError, match="has none"):
        DecoderClassifier(head, seq_cls(["q_proj", "lm_head"]), num_labels=3)
    # an embedding LoRA alone trains a classifier's body as PEFT's would
    assert "model.embed_tokens.lora_embedding_A" in DecoderClassifier(
        head, seq_cls(["embed_tokens"]), num_labels=3).trainable

    model = decoder_model(config, lora(target_modules=["embed_tokens"]))
    values = initial_trainable(model, 0)
    copy = {"model.embed_tokens.base_layer.weight": ((TINY["vocab_size"] + 4, 32), [0.0])}
    with pytest.raises(ValueError, match="resized"):
        merge_loaded(model, values, dict(values, **copy), "adapter")
    same = {"model.embed_tokens.base_layer.weight": ((TINY["vocab_size"], 32), [0.0])}
    assert set(merge_loaded(model, values, dict(values, **same), "adapter")) == set(model.trainable)

