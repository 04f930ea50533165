"""PEFT's trainable tokens (LoraConfig's trainable_token_indices, models/trainable_tokens.py):
rows of a decoder's embedding trained beside the LoRA, a tied output layer reading them too.

Against transformers + PEFT: one step's loss and every gradient on the NumPy backend in float64
(1e-6 loss, 1e-5 gradients) for untied and tied Llama, tied Qwen2 with its padding token among
the rows, Gemma (its embedding scaled), GPT-2 (named by a dict) and Phi-2; through ChatModel,
PEFT's adapter generating as PEFT does, the GPU's training NumPy's, ours read by PEFT, the merged
model merge_and_unload's; what is refused, by name.
"""

import numpy as np
import pytest
import torch
from transformers import GemmaConfig, GemmaForCausalLM
from transformers import LlamaConfig as HFLlamaConfig
from transformers import GPT2LMHeadModel, LlamaForCausalLM, PhiForCausalLM, Qwen2Config, Qwen2ForCausalLM

import peft_oracle as po
from test_lora_tables import GEMMA, peft_on, tables_adapter
from test_saved_modules import GPT2, PHI, TINY, a_batch, our_step, peft_logits

ROWS = [3, 7, 9, 95]


CASES = [
    (LlamaForCausalLM, HFLlamaConfig(**TINY), ["q_proj"], ROWS),
    (LlamaForCausalLM, HFLlamaConfig(**TINY, tie_word_embeddings=True), ["v_proj"], ROWS),
    (Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True, pad_token_id=7), ["q_proj"],
     {"embed_tokens": ROWS}),
    (GemmaForCausalLM, GemmaConfig(**GEMMA), ["down_proj"], ROWS),
    (GPT2LMHeadModel, GPT2, ["c_attn"], {"wte": ROWS}),
    (PhiForCausalLM, PHI, ["dense"], ROWS),
]


@pytest.mark.parametrize("model_class, hf_config, targets, indices", CASES)
def test_step_matches_peft(tmp_path, model_class, hf_config, targets, indices):
    peft = tables_adapter(tmp_path, model_class, hf_config, targets, trainable_token_indices=indices)
    ids, mask, labels = a_batch(96)
    ids[0, :4] = ROWS                     # the trained rows read, and predicted
    ids[2, 7:] = 7                        # (Qwen2's padding token among them)
    labels = np.where(mask == 1, ids, -100)
    labels[:, :2] = -100
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}

    loss, grads, model = our_step(tmp_path, ids, mask, labels)
    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(model.trainable)
    assert any(".token_adapter." in n for n in want)
    po.check_gradients(grads, want, 1e-5)


# --- through ChatModel


@pytest.fixture(scope="module", params=["llama", "qwen2-tied"])
def tokened(request, tmp_path_factory):
    """(checkpoint, adapter dir, PEFT model (float64, eval), ids) of an untied Llama and a tied
    Qwen2 chat checkpoint with a LoRA on v_proj and four trainable tokens."""
    from tiny_chat import tiny_chat_dir

    path = tmp_path_factory.mktemp("tokens")
    model_dir = tiny_chat_dir(path, family=request.param.split("-")[0])
    peft = peft_on(model_dir, path / "adapter", ["v_proj"], seed=2, trainable_token_indices=ROWS)
    ids = ROWS + [int(i) for i in np.random.default_rng(4).integers(0, 300, 8)]
    return model_dir, path / "adapter", peft, ids


def test_a_peft_adapter_generates_as_peft(tokened):
    from export_models import our_decoder_logits, relative_error

    model_dir, adapter, peft, ids = tokened
    assert relative_error(our_decoder_logits(model_dir, adapter, ids), peft_logits(peft, ids)) <= 1e-5


def test_the_gpu_trains_and_generates_as_numpy_does(tokened):
    """Four AdamW steps on lavapipe against NumPy in float32 (losses 1e-4, tensors 1e-3); the
    GPU decoder's logits NumPy's (1e-4)."""
    from conftest import run
    from export_models import relative_error
    from test_chat_model import compared_run, random_examples
    from py_engine.train.chat import ChatModel

    model_dir, adapter, _, ids = tokened
    results = []
    for backend in ("numpy", "gpu"):
        chat = run(ChatModel.load(model_dir, adapter, backend=backend))
        logits = np.asarray(run(chat.decoder().prefill(ids)), np.float64)
        examples = random_examples(8, chat.checkpoint.config.vocab_size, seed=5)
        for e in examples[:4]:
            e.ids[1:5] = ROWS           # the trained rows read and predicted
            e.labels[1:5] = ROWS
        history = run(chat.fit(examples, compared_run(lr=5e-3, max_grad_norm=0.5)))
        results.append((logits, [h.loss for h in history], run(chat.runtime.trainable_values())))
    (np_logits, np_losses, np_values), (gpu_logits, gpu_losses, gpu_values) = results
    assert relative_error(gpu_logits, np_logits) <= 1e-4
    np.testing.assert_allclose(gpu_losses, np_losses, rtol=1e-4)
    for name, (_, ref) in np_values.items():
        ref = np.asarray(ref, np.float64)
        got = np.asarray(gpu_values[name][1], np.float64)
        assert np.linalg.norm(got - ref) <= 1e-3 * np.linalg.norm(ref), name


def test_the_merged_model_is_merge_and_unload_s(tokened, tmp_path):
    """The merged checkpoint holds the trained rows in the table (a tied pair stays tied, as
    PEFT's tied rows are one): every tensor merge_and_unload's (1e-6); transformers' logits
    PEFT's (1e-5). The switch to full fine-tuning is refused by name, a hybrid run before any
    step."""
    import copy
    import json

    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from conftest import run
    from export_models import relative_error
    from test_chat_model import random_examples
    from py_engine.export.merged import load_merged, save_merged
    from py_engine.train.chat import ChatModel
    from py_engine.train.config import CausalTrainConfig

    model_dir, adapter, peft, ids = tokened
    save_merged(load_merged(model_dir, adapter), tmp_path / "merged")
    theirs = copy.deepcopy(peft).merge_and_unload()
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["tie_word_embeddings"] == theirs.config.tie_word_embeddings
    want = {n: p.detach().numpy() for n, p in theirs.state_dict().items()}
    got = load_file(tmp_path / "merged" / "model.safetensors")
    tied = theirs.config.tie_word_embeddings
    assert set(got) == set(want) - ({"lm_head.weight"} if tied else set())
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").double().eval()
    with torch.no_grad():
        merged_logits = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert relative_error(merged_logits, peft_logits(peft, ids)) <= 1e-5

    chat = run(ChatModel.load(model_dir, adapter))
    with pytest.raises(ValueError, match="trainable tokens"):
        run(chat.runtime.to_full())
    examples = random_examples(6, chat.checkpoint.config.vocab_size, seed=4)
    with pytest.raises(ValueError, match="trainable tokens"):
        run(chat.trainer(examples, CausalTrainConfig(mode="hybrid")))


def test_a_new_adapter_starts_from_the_rows_and_peft_reads_what_trained(tmp_path):
    """trainable_token_indices in a fresh LoraConfig: the rows start as the checkpoint's (the
    base model's scores), train, and the saved adapter (adapter_config.json naming them) loads
    in PEFT scoring as we do (1e-5), and back here alike."""
    from transformers import AutoModelForCausalLM

    from conftest import run
    from test_chat_model import hf_losses, random_examples
    from test_lora_tables import check_saved_reads_in_peft_and_back
    from tiny_chat import tiny_chat_dir
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.chat import ChatModel
    from py_engine.train.config import CausalTrainConfig

    model_dir = tiny_chat_dir(tmp_path, family="qwen2")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM",
                      trainable_token_indices=ROWS)
    chat = run(ChatModel.create(model_dir, lora=lora, backend="numpy", seed=3))
    vocab = chat.checkpoint.config.vocab_size
    examples = random_examples(4, vocab, seed=2)
    for e in examples:
        e.ids[1:5] = ROWS
        e.labels[1:5] = ROWS
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for got, (loss, _) in zip(run(chat.score_encoded(examples)), hf_losses(base, examples)):
        assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)
    name = "model.embed_tokens.token_adapter.trainable_tokens_delta"
    start = np.asarray(run(chat.runtime.trainable_values())[name][1])
    run(chat.fit(examples * 2, CausalTrainConfig(epochs=2, lr=1e-2, batch_size=4)))
    assert np.abs(np.asarray(run(chat.runtime.trainable_values())[name][1]) - start).max() > 0
    peft = check_saved_reads_in_peft_and_back(chat, model_dir, tmp_path / "adapter", examples)
    assert peft.peft_config["default"].trainable_token_indices == ROWS


def test_what_is_refused_by_name(tmp_path):
    from py_engine.models.decoder_classifier import DecoderClassifier, DecoderClassifierConfig
    from py_engine.models.decoders import decoder_model
    from py_engine.models.llama_config import LlamaConfig
    from py_engine.models.lora_config import LoraConfig, LoraConfigError

    config = LlamaConfig(model_type="llama", **TINY)
    tied = LlamaConfig(model_type="llama", **dict(TINY, tie_word_embeddings=True))
    lora = lambda **o: LoraConfig(r=4, lora_alpha=8, **dict(dict(task_type="CAUSAL_LM"), **o))
    for bad, words in (([], "non-empty list"), ([3, 3], "twice"), ([-1], "non-empty list of token ids"),
                       ({"embed_tokens": []}, "non-empty")):
        with pytest.raises(LoraConfigError, match=words):
            lora(target_modules=["q_proj"], trainable_token_indices=bad)
    cases = [
        (config, dict(trainable_token_indices=[96]), "names token 96; the embedding has 96 rows"),
        (config, dict(trainable_token_indices={"lm_head": [3]}), "untied output layer's own rows"),
        (tied, dict(trainable_token_indices={"lm_head": [3]}), "tied to the embedding"),
        (config, dict(trainable_token_indices={"norm": [3]}), "only this model's embedding"),
        (config, dict(target_modules=["q_proj", "embed_tokens"], trainable_token_indices=[3]),
         "a table trains one way"),
        (config, dict(modules_to_save=["embed_tokens", "lm_head"], trainable_token_indices=[3]),
         "a table trains one way"),
        # a tied head reads the rows: a LoRA on it too is not built
        (tied, dict(target_modules=["q_proj", "lm_head"], trainable_token_indices=[3]),
         r"trains rows of lm_head, which target_modules"),
    ]
    for cfg, options, words in cases:
        with pytest.raises(LoraConfigError, match=words):
            decoder_model(cfg, lora(**dict(dict(target_modules=["q_proj"]), **options)))
    with pytest.raises(LoraConfigError, match="not a decoder read as a classifier"):
        DecoderClassifier(DecoderClassifierConfig(config),
                          LoraConfig(r=4, target_modules=["q_proj"], trainable_token_indices=[3]), 3)
    from py_engine.models.bert import BertClassifier
    from py_engine.models.bert_config import BertConfig

    bert = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=48, max_position_embeddings=16)
    with pytest.raises(LoraConfigError, match="takes none"):
        BertClassifier(bert, LoraConfig(r=4, target_modules=["query"], trainable_token_indices=[3]), 2)


def test_the_command_line_trains_rows_peft_reads(tmp_path):
    """--trainable-token-indices: the adapter holds the rows and names them, PEFT scores as
    the CLI does (1e-5), the merged GGUF exports (the GGUF adapter is refused by name); rows
    past the vocabulary are refused by name before anything is written."""
    import json

    from test_cli_chat import (ROWS as CHAT_ROWS, check_exports_merged_only, check_scores_as_peft,
                               cli, write_jsonl)
    from tiny_chat import tiny_chat_dir

    model = tiny_chat_dir(tmp_path, family="llama-tied", initializer_range=0.2)
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS * 2)
    out = tmp_path / "out"
    cli("train", "--model", model, "--data", data, "--out", out, "--epochs", 1, "--lr", 1e-2,
        "--batch-size", 4, "--trainable-token-indices", "3,7,9")
    assert json.loads((out / "adapter_config.json").read_text())["trainable_token_indices"] == [3, 7, 9]
    check_scores_as_peft(model, out, data, CHAT_ROWS * 2)
    check_exports_merged_only(model, out, tmp_path, "trainable tokens")
    past = cli("train", "--model", model, "--data", data, "--out", tmp_path / "no",
               "--trainable-token-indices", "3,100000", check=False)
    assert past.returncode == 2 and "names token 100000" in past.stderr, past.stderr
    assert not (tmp_path / "no").exists()
    bad = cli("train", "--model", model, "--data", data, "--out", tmp_path / "no",
              "--trainable-token-indices", "3,x", check=False)
    assert bad.returncode == 2 and "token ids separated by commas" in bad.stderr


def test_an_adapter_training_other_rows_comes_in_with_them(tmp_path):
    """A chat model training rows [3, 7] takes in an adapter (its files, as the app imports
    one) training as many other rows [4, 8]: the model is rebuilt with the adapter's rows, not
    given its values under the old ones, and scores as the adapter loaded on its own."""
    from conftest import run
    from test_chat_model import random_examples
    from tiny_chat import tiny_chat_dir
    from py_engine.models.lora_config import LoraConfig
    from py_engine.train.chat import ChatModel

    model_dir = tiny_chat_dir(tmp_path, family="qwen2")
    peft_on(model_dir, tmp_path / "adapter", ["q_proj"], trainable_token_indices=[4, 8])
    files = {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM",
                      trainable_token_indices=[3, 7])
    chat = run(ChatModel.create(model_dir, lora=lora, seed=1))
    assert run(chat.load_adapter_files(files)) is True
    assert chat.model.tokens.indices == {"model.embed_tokens": [4, 8]}
    examples = random_examples(3, chat.checkpoint.config.vocab_size, seed=1)
    for e in examples:
        e.ids[1:3] = [4, 8]
    want = run(run(ChatModel.load(model_dir, tmp_path / "adapter")).score_encoded(examples))
    for got, ref in zip(run(chat.score_encoded(examples)), want):
        assert abs(got["loss"] - ref["loss"]) <= 1e-6 * abs(ref["loss"])
