"""PEFT's modules_to_save on a chat model: the embedding and the output layer trained whole
beside the LoRA, as adapters trained after adding tokens carry them (TRL's setup_chat_format
resizes the vocabulary; the adapter saves both tables and the tokenizer beside them).

Against transformers + PEFT: one step's loss and every gradient (the tables' included) on the
NumPy backend in float64 (bounds as test_llama_lora_oracle's: 1e-6 loss, 1e-5 gradients), for
an untied and a tied Llama checkpoint (PEFT trains a copy of each: the tied head becomes a
tensor of its own; with ensure_weight_tying one table), Phi-2 (the head's bias trains with
it) and GPT-2 (tied, Conv1D), with the vocabulary resized or not. Through ChatModel, an adapter made as TRL makes one
(ChatML's tokens added): its tokenizer, logits, training on both backends, saving, training
state, the merged checkpoint and GGUF, each against PEFT, transformers or the gguf package.
"""

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import LlamaConfig as HFLlamaConfig
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, PhiConfig, PhiForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import DecoderCheckpoint
from py_engine.models.decoders import decoder_model
from py_engine.models.llama import shift_labels
from py_engine.models.bert_config import ConfigError
from py_engine.models.llama_config import LlamaConfig
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.batch import Batch
from py_engine.train.tasks import CausalLMTask
from py_engine.models.saved_modules import saved_vocabulary
import peft_oracle as po
from gpt2_checkpoints import TINY as GPT2_TINY
from phi_checkpoints import TINY as PHI_TINY

TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64)
BOTH = ("embed_tokens", "lm_head")      # PEFT may rewrite the list it is given: a tuple, copied
GPT2 = GPT2Config(**GPT2_TINY)
# Phi-2's kind (phi_checkpoints.TINY: half of each head rotates)
PHI = PhiConfig(**{k: v for k, v in PHI_TINY.items() if k != "partial_rotary_factor"},
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "partial_rotary_factor": PHI_TINY["partial_rotary_factor"]})


def saved_modules_adapter(path, model_class, config, saved, vocab=None, seed=0,
                          targets=("q_proj", "v_proj"), **options):
    """A float64 PEFT model of a fresh checkpoint (saved under path / "model") with a LoRA on
    q_proj and v_proj and `saved` in modules_to_save, the vocabulary resized to `vocab` rows
    first where given; lora_B and the saved tables moved off their starting values; the
    adapter saved under path / "adapter"."""
    torch.manual_seed(seed)
    base = model_class(config)
    base.save_pretrained(path / "model", safe_serialization=True)
    if vocab is not None:
        base.resize_token_embeddings(vocab)
    peft = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules=list(targets),
                                              modules_to_save=list(saved), **options))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if p.requires_grad and ("lora_B" in name or "modules_to_save" in name):
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(path / "adapter")
    return peft.double()


def our_step(path, ids, mask, labels):
    """(loss, gradients, model) of one step of the adapter under path on the NumPy backend in
    float64, the model built as ChatModel builds it (decoder_model with the adapter's
    vocabulary)."""
    checkpoint = DecoderCheckpoint.load(path / "model")
    adapter_config, tensors, _ = load_adapter(path / "adapter")
    lora = LoraConfig.from_language_model_dict(adapter_config, checkpoint.config.lora_targets,
                                               checkpoint.config.whole_modules)
    model = decoder_model(checkpoint.config, lora,
                          vocab_size=saved_vocabulary(checkpoint.config, tensors))
    be = NumpyBackend(np.float64)
    for name in model.frozen_names():
        be.set_param(name, np.frombuffer(checkpoint.floats(name), np.float32), checkpoint.shape(name))
    for name, (shape, values) in tensors.items():
        be.set_param(name, np.asarray(values, np.float64), shape)
        be.add_grad(name)
    B, T = ids.shape
    batch = Batch(ids.tolist(), [[0] * T] * B, mask.tolist(),
                  np.asarray(shift_labels(labels.tolist())))
    metrics = CausalLMTask().loss(be, model, batch, train=True)     # the trainer's step
    return metrics["loss"], be.grads, model


def a_batch(vocab):
    rng = np.random.default_rng()
    B, T = 3, 10
    ids = rng.integers(0, vocab, (B, T))
    ids[0, 4] = vocab - 1                  # an added token (the resized rows) in the input
    mask = np.ones((B, T), np.int64)
    mask[2, 7:] = 0                        # a right-padded row
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100
    labels[1, 5] = vocab - 2               # and as a target
    return ids, mask, labels


@pytest.mark.parametrize("model_class, hf_config, saved, vocab", [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), BOTH, 100),             # tokens added
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["lm_head"], None),
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["model.embed_tokens"], None),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True), BOTH, 100),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["lm_head"], None),
    (Qwen2ForCausalLM, Qwen2Config(**TINY), BOTH, None),
    # PEFT's ensure_weight_tying: one table for a tied pair (PEFT saves it under both names)
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True), [*BOTH, "tied"], 100),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True), ["lm_head", "tied"], None),
    # Phi-2: the output layer has a bias, which trains with it
    (PhiForCausalLM, PHI, BOTH, 100),
    (PhiForCausalLM, PHI, ["lm_head"], None),
    # GPT-2: tied, its embedding is "wte" (Conv1D LoRA on c_attn)
    (GPT2LMHeadModel, GPT2, ["wte", "lm_head"], 100),
    (GPT2LMHeadModel, GPT2, ["lm_head"], None),
])
def test_saved_modules_step_matches_peft(tmp_path, model_class, hf_config, saved, vocab):
    options = dict(ensure_weight_tying=True) if "tied" in saved else {}
    if model_class is GPT2LMHeadModel:
        options["targets"] = ["c_attn"]
    saved = [m for m in saved if m != "tied"]
    peft = saved_modules_adapter(tmp_path, model_class, hf_config, saved, vocab, **options)
    ids, mask, labels = a_batch(vocab or 96)
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}

    loss, grads, model = our_step(tmp_path, ids, mask, labels)
    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    po.check_gradients(grads, want, 1e-5)


def test_what_modules_to_save_may_name(tmp_path):
    """Only the embedding and the output layer train whole in a chat model; a tied pair
    split (the embedding trained, the head the checkpoint's) and a resized vocabulary missing
    one of its tables are refused by name."""
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM",
                  peft_type="LORA")
    whole = ("model.embed_tokens", "lm_head")
    with pytest.raises(LoraConfigError, match=r"modules_to_save \['norm'\] trains those modules "
                                              r"in full .* only model.embed_tokens, lm_head"):
        LoraConfig.from_language_model_dict(dict(config, modules_to_save=["norm"]), (), whole)
    with pytest.raises(LoraConfigError, match=r"modules_to_save \['lm_head'\] .* only the LoRA "
                                              "tensors of this model's adapters are read here"):
        LoraConfig.from_language_model_dict(dict(config, modules_to_save=["lm_head"]), ())
    lora = LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    untied, tied = LlamaConfig(**TINY), LlamaConfig(**TINY, tie_word_embeddings=True)
    lora.modules_to_save = ["embed_tokens"]
    with pytest.raises(ConfigError, match="trains the embedding whole while the output layer, "
                                          "tied to it, stays the checkpoint's"):
        decoder_model(tied, lora)
    with pytest.raises(ConfigError, match="the adapter's vocabulary has 100 tokens and the "
                                          "checkpoint's 96: a resized vocabulary needs both"):
        decoder_model(untied, lora, vocab_size=100)
    lora.modules_to_save = ["lm_head", "norm"]
    with pytest.raises(LoraConfigError, match=r"modules_to_save \['norm'\]"):
        decoder_model(untied, lora)
    lora.modules_to_save = ["lm_head"]
    model = decoder_model(tied, lora)
    assert model.config.tie_word_embeddings is False and tied.tie_word_embeddings is True
    assert model.head_sources() == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "model.embed_tokens.weight" in model.frozen_names() and not model.saves_vocabulary

    # the standalone decoder reads a tied checkpoint's head from the embedding: an output layer
    # of its own among its params is refused, not passed over
    from py_engine.generate.decoder import NumpyDecoder

    params = {n: np.zeros(shape) for n, shape in tied.parameter_shapes().items()}
    with pytest.raises(ValueError, match="params hold lm_head.weight while the checkpoint ties"):
        NumpyDecoder.from_params(tied, dict(params, **{"lm_head.weight": np.zeros((96, 32))}))


# --- an adapter trained after adding tokens (TRL's setup_chat_format), through ChatModel ---

CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
MESSAGES = [{"role": "user", "content": "Hello! How are you today?"}]


def base_without_chat_tokens(path, tied):
    """A tiny Llama checkpoint whose tokenizer has no chat tokens and no chat template (a base
    model), under path / "base"."""
    import json

    from tiny_chat import TINY as CHAT, train_tokenizer

    out = path / "base"
    out.mkdir(parents=True)
    tok = train_tokenizer(special=["<|endoftext|>"])
    tok.save(str(out / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    LlamaForCausalLM(HFLlamaConfig(**CHAT, vocab_size=tok.get_vocab_size(),
                                   eos_token_id=eos, bos_token_id=None, pad_token_id=None,
                                   tie_word_embeddings=tied)).save_pretrained(out)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|endoftext|>", "bos_token": None, "unk_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}))
    return out


def gpt2_without_chat_tokens(path):
    """A tiny GPT-2 checkpoint whose tokenizer has no chat tokens (DialoGPT's files), under
    path / "base" (1024 positions: transformers reads a gpt2 GGUF with no other count)."""
    import json

    from gpt2_checkpoints import tiny_gpt2
    from tiny_chat import train_tokenizer

    out = path / "base"
    out.mkdir(parents=True)
    tok = train_tokenizer(special=["<|endoftext|>"])
    tok.save(str(out / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    tiny_gpt2(out, vocab_size=tok.get_vocab_size(), bos_token_id=eos, eos_token_id=eos,
              n_positions=1024)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "tokenizer_class": "GPT2TokenizerFast", "add_prefix_space": False}))
    return out


def chat_tokens_added(model_dir, adapter_dir, resized_to=16, **options):
    """(PEFT model in float64, its tokenizer): what TRL's setup_chat_format does to a base
    model, then a LoRA with the embedding and the output layer in modules_to_save: ChatML's
    tokens added (and made end of turn and padding), its template set, the vocabulary resized
    to a multiple of `resized_to` rows; lora_B and the tables moved off their starting values;
    the adapter and the tokenizer saved to adapter_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny_chat import CHATML

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": CHATML_TOKENS})
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    base.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=resized_to, mean_resizing=False)
    torch.manual_seed(1)
    gpt2 = base.config.model_type == "gpt2"
    peft = get_peft_model(base, PeftLoraConfig(
        r=4, lora_alpha=8, task_type="CAUSAL_LM",
        target_modules=["c_attn", "c_fc"] if gpt2 else ["q_proj", "v_proj", "down_proj"],
        modules_to_save=["wte", "lm_head"] if gpt2 else list(BOTH), **options))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    peft.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return peft.double().eval(), tokenizer


def peft_logits(peft, ids):
    with torch.no_grad():
        return peft(input_ids=torch.tensor([ids])).logits[0].double().numpy()


@pytest.fixture(scope="module", params=["untied", "tied", "tied-ensure", "phi", "gpt2"])
def added_tokens(request, tmp_path_factory):
    """(checkpoint, adapter, PEFT model, tokenizer): an untied or a tied Llama checkpoint, the
    tied one's pair trained as two copies or (PEFT's ensure_weight_tying) as one table; a
    Phi-2 checkpoint (its output layer's bias trains with it)."""
    from phi_checkpoints import tiny_phi_dir

    path = tmp_path_factory.mktemp("added")
    if request.param == "phi":
        model_dir = path / "base"
        tiny_phi_dir(model_dir)
    elif request.param == "gpt2":
        model_dir = gpt2_without_chat_tokens(path)
    else:
        model_dir = base_without_chat_tokens(path, request.param != "untied")
    options = dict(ensure_weight_tying=True) if request.param == "tied-ensure" else {}
    peft, tokenizer = chat_tokens_added(model_dir, path / "adapter", **options)
    return model_dir, path / "adapter", peft, tokenizer


def test_an_adapter_with_tokens_added_reads_as_peft(added_tokens):
    """The adapter's own tokenizer renders the chat as transformers' does (ChatML's tokens one
    id each), and the model's logits at every position are PEFT's (1e-5)."""
    from conftest import run
    from export_models import relative_error, our_decoder_logits
    from py_engine.train.chat import ChatModel

    model_dir, adapter, peft, tokenizer = added_tokens
    chat = run(ChatModel.load(model_dir, adapter))
    ids = chat.prompt_ids(MESSAGES)
    want = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert ids == list(want["input_ids"] if hasattr(want, "keys") else want)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids
    assert chat.model.config.vocab_size == peft.get_input_embeddings().weight.shape[0] > \
        chat.checkpoint.config.vocab_size
    assert relative_error(our_decoder_logits(model_dir, adapter, ids), peft_logits(peft, ids)) <= 1e-5


def chat_examples(chat):
    """Two conversations encoded with the adapter's template (ChatML's added tokens in them)."""
    from py_engine.data.chat import ChatExample, encode_chat_example

    turns = [[{"role": "user", "content": "Hello! How are you today?"},
              {"role": "assistant", "content": "I am fine, thank you. And you?"}],
             [{"role": "user", "content": "What is the capital of France?"},
              {"role": "assistant", "content": "The capital of France is Paris."}]]
    return [encode_chat_example(ChatExample(m), chat.tokenizer, chat.template) for m in turns] * 2


def peft_of(model_dir, adapter_dir, vocab):
    """PEFT's model of an adapter saved here, on the checkpoint resized to `vocab` rows (as
    one loads an adapter trained with tokens added), in float64."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    base.resize_token_embeddings(vocab, mean_resizing=False)
    return PeftModel.from_pretrained(base, adapter_dir).double().eval()


def test_training_saves_an_adapter_peft_reads_with_its_tokenizer(added_tokens, tmp_path):
    """Two epochs through ChatModel move the tables; the saved adapter carries them and the
    tokenizer beside them; PEFT scores the examples as we do (1e-5), and the saved folder
    loads here again with its tokens."""
    from conftest import run
    from export_models import relative_error
    from py_engine.train.chat import CausalTrainConfig, ChatModel

    model_dir, adapter, _, tokenizer = added_tokens
    chat = run(ChatModel.load(model_dir, adapter))
    examples = chat_examples(chat)
    before = run(chat.runtime.trainable_values())
    run(chat.fit(examples, CausalTrainConfig(epochs=2, lr=1e-2, batch_size=2)))
    after = run(chat.runtime.trainable_values())
    config = chat.model.config       # the head: the tied table, or one of its own (and its bias)
    embedding = config.embedding_tables[0]
    assert set(chat.model.whole) == {embedding} | (
        set() if config.tie_word_embeddings else {"lm_head.weight"}) | (
        {"lm_head.bias"} if config.model_type == "phi" else set())
    for name in chat.model.whole:
        assert relative_error(after[name][1], before[name][1]) > 1e-4, name
    run(chat.save(tmp_path / "out"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (adapter / name).read_bytes()
    # the tables under PEFT's names (PEFT's files hold more copies of them beside: the
    # wrapper's copy and, with a resized vocabulary, the resized checkpoint's table)
    from py_engine.formats import safetensors
    keys = lambda d: {k for k in safetensors.load(d / "adapter_model.safetensors").keys()
                      if "lora_" not in k}
    tables = {"base_model.model.lm_head.weight", "base_model.model." + embedding}
    assert tables <= keys(tmp_path / "out") < keys(adapter)
    assert keys(tmp_path / "out") == tables | {"base_model.model." + n for n in chat.model.whole}
    ours = run(chat.score_encoded(examples))
    peft = peft_of(model_dir, tmp_path / "out", chat.model.config.vocab_size)
    with torch.no_grad():
        for got, e in zip(ours, examples):
            loss = peft(input_ids=torch.tensor([e.ids]), labels=torch.tensor([e.labels])).loss.item()
            assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)
    again = run(ChatModel.load(model_dir, tmp_path / "out"))
    assert again.prompt_ids(MESSAGES) == chat.prompt_ids(MESSAGES)
    assert [s["loss"] for s in run(again.score_encoded(examples))] == pytest.approx(
        [s["loss"] for s in ours], rel=1e-6)


def test_the_gpu_trains_the_tables_as_numpy_does(added_tokens):
    """Four AdamW steps on lavapipe against the NumPy runtime in float32: losses 1e-4, every
    trained tensor (the tables included) 1e-3 relative."""
    from conftest import run
    from test_chat_model import compared_run
    from py_engine.train.chat import ChatModel

    model_dir, adapter, _, _ = added_tokens
    results = []
    for backend in ("numpy", "gpu"):
        chat = run(ChatModel.load(model_dir, adapter, backend=backend))
        history = run(chat.fit(chat_examples(chat), compared_run(lr=5e-3, max_grad_norm=0.5)))
        results.append(([h.loss for h in history], run(chat.runtime.trainable_values())))
    (np_losses, np_values), (gpu_losses, gpu_values) = results
    np.testing.assert_allclose(gpu_losses, np_losses, rtol=1e-4)
    assert set(chat.model.whole) <= set(gpu_values) and chat.model.whole
    for name, (_, ref) in np_values.items():
        ref = np.asarray(ref, np.float64)
        got = np.asarray(gpu_values[name][1], np.float64)
        assert np.linalg.norm(got - ref) <= 1e-3 * np.linalg.norm(ref), name


def test_the_merged_model_and_the_switch_to_full_keep_the_tables(added_tokens, tmp_path):
    """The merged export is PEFT's merge_and_unload (every tensor 1e-6) with the resized
    vocabulary and an untied head in config.json and the adapter's tokenizer beside it;
    transformers loads it and gives PEFT's logits; the hybrid switch keeps the outputs."""
    import copy
    import json

    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import run
    from export_models import check_switch_to_full_keeps_outputs, our_decoder_logits, relative_error
    from py_engine.export.merged import load_merged, save_merged
    from py_engine.train.chat import ChatModel

    model_dir, adapter, peft, tokenizer = added_tokens
    save_merged(load_merged(model_dir, adapter), tmp_path / "merged")
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    theirs = copy.deepcopy(peft).merge_and_unload()
    tied = theirs.config.tie_word_embeddings       # PEFT unties a pair trained as two copies
    assert config["vocab_size"] == theirs.config.vocab_size > 300
    assert config["tie_word_embeddings"] == tied
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").get_vocab() == tokenizer.get_vocab()
    want = {n: p.detach().numpy() for n, p in theirs.state_dict().items()}
    got = load_file(tmp_path / "merged" / "model.safetensors")
    assert set(got) == set(want) - ({"lm_head.weight"} if tied else set())   # as transformers saves
    for name, value in got.items():
        assert relative_error(value, want[name]) <= 1e-6, name
    ids = run(ChatModel.load(model_dir, adapter)).prompt_ids(MESSAGES)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").double().eval()
    with torch.no_grad():
        merged_logits = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert relative_error(merged_logits, peft_logits(peft, ids)) <= 1e-5
    # and it loads here as a checkpoint of its own (GPT-2's untied head included)
    assert relative_error(our_decoder_logits(tmp_path / "merged", None, ids),
                          peft_logits(peft, ids)) <= 1e-5

    chat = run(ChatModel.load(model_dir, adapter))
    check_switch_to_full_keeps_outputs(chat, ids)
    run(chat.save(tmp_path / "full"))       # the whole model after the switch: transformers reads it
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "full").double().eval()
    with torch.no_grad():
        full_logits = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert relative_error(full_logits, peft_logits(peft, ids)) <= 1e-5
    assert AutoTokenizer.from_pretrained(tmp_path / "full").get_vocab() == tokenizer.get_vocab()


def test_a_saved_state_keeps_the_tokenizer(added_tokens, tmp_path):
    """A training state of such an adapter holds its tokenizer: the resumed model renders the
    chat with the added tokens and goes on from the same weights."""
    from conftest import run
    from py_engine.train.chat import CausalTrainConfig, ChatModel

    model_dir, adapter, _, _ = added_tokens

    async def main():
        chat = await ChatModel.load(model_dir, adapter)
        examples = chat_examples(chat)
        trainer = await chat.trainer(examples, CausalTrainConfig(epochs=2, lr=1e-2, batch_size=2))
        await trainer.run(max_steps=1)
        await chat.save_state(trainer, tmp_path / "state")
        resumed, _ = await ChatModel.resume(model_dir, tmp_path / "state", examples)
        return chat, resumed, await chat.runtime.trainable_values(), \
            await resumed.runtime.trainable_values()

    chat, resumed, values, again = run(main())
    assert resumed.prompt_ids(MESSAGES) == chat.prompt_ids(MESSAGES)
    folder = resumed.tokenizer_dir                # a copy of the state's tokenizer files ...
    assert (folder / "tokenizer.json").is_file()
    del resumed
    import gc
    gc.collect()
    assert not folder.exists()                    # ... gone with the model
    assert (tmp_path / "state" / "tokenizer.json").is_file()
    for name, (_, data) in values.items():
        assert np.array_equal(np.asarray(again[name][1]), np.asarray(data)), name


def test_a_resized_vocabulary_without_its_tokenizer_warns(added_tokens, tmp_path):
    """An adapter folder holding the tables but not the tokenizer they were trained with: the
    checkpoint's tokenizer is used, with a warning saying what is missing."""
    import shutil

    from conftest import run
    from py_engine.train.chat import ChatModel

    model_dir, adapter, _, _ = added_tokens
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(adapter / name, bare / name)
    with pytest.warns(RuntimeWarning, match="resized the vocabulary to .* and has no "
                                            "tokenizer.json beside it"):
        chat = run(ChatModel.load(model_dir, bare))
    assert chat.tokenizer.token_to_id("<|im_start|>") is None


def test_the_merged_gguf_holds_the_added_tokens(added_tokens, tmp_path):
    """The merged GGUF (F32) carries the resized vocabulary with the adapter's tokenizer:
    its tokens are the adapter tokenizer's; transformers reads a Llama one back with PEFT's
    logits (1e-5) and encodes ChatML as the adapter's tokenizer does (a GPT-2 one with its
    untied head too); a Phi-2 one (transformers reads no phi2 GGUF) holds PEFT's merged
    tensors, as test_phi2_gguf checks them."""
    import copy

    from gguf import MODEL_ARCH, GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import run
    from export_models import relative_error
    from test_export_gguf import field
    from test_phi2_gguf import check_tensors, library_tensors
    from py_engine.export import gguf
    from py_engine.export.gguf_llama import model_writer
    from py_engine.export.merged import load_merged
    from py_engine.train.chat import ChatModel

    model_dir, adapter, peft, tokenizer = added_tokens
    out = tmp_path / "model.gguf"
    with open(out, "wb") as f:
        model_writer(load_merged(model_dir, adapter), gguf.F32, "tiny").write(f)
    tokens = field(GGUFReader(out), "tokenizer.ggml.tokens")
    assert len(tokens) == peft.get_input_embeddings().weight.shape[0]
    for token in CHATML_TOKENS:
        assert tokens[tokenizer.convert_tokens_to_ids(token)] == token
    if peft.config.model_type == "phi":
        merged = copy.deepcopy(peft).merge_and_unload().float()
        check_tensors(GGUFReader(out), library_tensors(merged, MODEL_ARCH.PHI2), gguf.F32)
        return
    ids = run(ChatModel.load(model_dir, adapter)).prompt_ids(MESSAGES)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name).double().eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert relative_error(theirs, peft_logits(peft, ids)) <= 1e-5
    text = "<|im_start|>user\nHello! How are you today?<|im_end|>\n"
    got = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert got(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_a_new_adapter_trains_the_tied_head_as_a_copy(tmp_path):
    """ChatModel.create with modules_to_save ["lm_head"] on a tied checkpoint: the head starts
    as the embedding's copy (PEFT's), trains, and PEFT scores the saved adapter as we do."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from conftest import run
    from test_chat_model import hf_losses, random_examples
    from tiny_chat import tiny_chat_dir
    from py_engine.train.chat import CausalTrainConfig, ChatModel

    model_dir = tiny_chat_dir(tmp_path, family="qwen2")          # tied
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM", modules_to_save=["lm_head"])
    chat = run(ChatModel.create(model_dir, lora=lora))
    start = run(chat.runtime.trainable_values())
    checkpoint = chat.checkpoint
    assert np.array_equal(np.asarray(start["lm_head.weight"][1]),
                          np.asarray(checkpoint.floats("model.embed_tokens.weight")))
    examples = random_examples(8, checkpoint.config.vocab_size, seed=4)
    run(chat.fit(examples, CausalTrainConfig(epochs=2, lr=1e-2, batch_size=4)))
    run(chat.save(tmp_path / "adapter"))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir),
                                     tmp_path / "adapter").eval()
    for got, (loss, _) in zip(run(chat.score_encoded(examples)), hf_losses(peft, examples)):
        assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)
