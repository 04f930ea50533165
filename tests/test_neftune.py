"""NEFTune (neftune_noise_alpha, models/neftune.py) against transformers' own hook
(transformers.integrations.neftune): its draw, torch's uniform_, is made to give our noise (the
same bits as a dropout mask's, ops/dropout.py), so that the step's loss and every gradient can
be held to transformers + PEFT with the noise on, for a Llama and for a T5 (both stacks, each of
its own length); the GPU's noise and training against NumPy's; none in evaluation; the options
that set it, and who refuses it."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM
from transformers.integrations.neftune import activate_neftune

import peft_oracle as po
from conftest import run
from py_engine.models.lora_config import LoraConfig
from py_engine.ops.dropout import uniform_noise
from py_engine.train.chat import ChatModel
from py_engine.train.config import CausalTrainConfig, ClassifierTrainConfig, ConfigError
from test_chat_model import random_examples
from test_llama_lora_oracle import ALL, TINY, numpy_step, peft_decoder
from tiny_chat import tiny_chat_dir

ALPHA = 5.0


def our_noise_in_torch(monkeypatch, units):
    """transformers' hook draws torch.zeros_like(output).uniform_(-m, m): each call now gives
    m times the next of `units` (our unit noise, [-1, 1), flat) instead."""
    queue = list(units)

    def uniform_(self, a=0.0, b=1.0):
        unit = torch.from_numpy(queue.pop(0).reshape(tuple(self.shape)))
        return self.copy_(unit.to(self.dtype) * b)

    monkeypatch.setattr(torch.Tensor, "uniform_", uniform_)
    return queue


def test_a_llama_step_with_noise_matches_transformers_hook(tmp_path, monkeypatch):
    """A LoRA step of a tiny Llama with NEFTune (alpha 5) on the NumPy backend in float64: the
    loss and every LoRA gradient are transformers + PEFT's with activate_neftune's hook adding
    the same noise, whose magnitude (alpha / sqrt(T d)) is the hook's own; the noise matters."""
    peft = peft_decoder(tmp_path, LlamaForCausalLM, HFLlamaConfig(**TINY), ALL)
    rng = np.random.default_rng()
    B, T, seed = 3, 10, int(rng.integers(2**31))
    ids = rng.integers(0, 96, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[2, 7:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :3] = -100

    width = peft.config.hidden_size
    activate_neftune(peft, ALPHA)
    left = our_noise_in_torch(monkeypatch, [uniform_noise(B * T * width, 1.0, seed,
                                                          dtype=np.float64)])
    peft_loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    assert not left                                   # the hook drew once
    want = {name.replace("base_model.model.", ""): g for name, g in grads.items()}
    loss, got = numpy_step(tmp_path, ids, mask, labels, seed, ALPHA)
    assert abs(loss - peft_loss) <= 1e-6 * abs(loss)
    assert set(want) == set(got)
    po.check_gradients(got, want, 1e-5)
    assert abs(numpy_step(tmp_path, ids, mask, labels, seed)[0] - loss) > 1e-5 * abs(loss)


def test_a_t5_step_with_noise_matches_transformers_hook(tmp_path, monkeypatch):
    """T5's shared embedding feeds both stacks, so the noise goes on each, of its own length
    (the encoder's S, the decoder's T), as transformers' hook did while both stacks called the
    shared module (in transformers 5 each stack embeds with a module of its own, tied to it,
    which activate_neftune's hook on get_input_embeddings() never sees: the hook goes on both
    here): a LoRA step with the noise on matches transformers + PEFT (float64 norms; the noise
    is float32's, one rounding of its magnitude apart: loss 1e-8, gradients 1e-6)."""
    from transformers.integrations.neftune import neftune_post_forward_hook

    from test_t5_lora_oracle import ALL as T5_ALL
    from test_t5_lora_oracle import engine_step, peft_step, peft_t5
    from test_t5_reference import a_batch, float64_layer_norm, relative

    float64_layer_norm(monkeypatch)
    peft = peft_t5(tmp_path, T5_ALL)
    ids, mask, labels = a_batch()
    seed = int(np.random.default_rng().integers(2**31))
    width = peft.config.d_model
    (B, S), T = ids.shape, labels.shape[1]
    for stack in (peft.base_model.model.encoder, peft.base_model.model.decoder):
        stack.embed_tokens.neftune_noise_alpha = ALPHA
        stack.embed_tokens.register_forward_hook(neftune_post_forward_hook)
    left = our_noise_in_torch(monkeypatch, [uniform_noise(B * S * width, 1.0, seed, dtype=np.float64),
                                            uniform_noise(B * T * width, 1.0, seed, base=B * S * width,
                                                          dtype=np.float64)])
    want_loss, want = peft_step(peft, ids, mask, labels)
    assert not left
    model, loss, grads = engine_step(tmp_path, ids, mask, labels, seed=seed, noise_alpha=ALPHA)
    assert abs(loss - want_loss) <= 1e-8 * abs(want_loss)
    for name, ref in want.items():
        assert relative(grads[name], ref) <= 1e-6, name
    assert abs(engine_step(tmp_path, ids, mask, labels, seed=seed)[1] - loss) > 1e-6 * abs(loss)


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "phi"])
def test_training_with_noise_on_the_gpu_is_numpy_s(tmp_path, device, family):
    """ChatModel training with neftune_noise_alpha: the GPU's losses, gradient norms and
    adapter are NumPy's (the same noise, drawn on each), and not those of a run without it;
    evaluation adds no noise."""
    if family == "gpt2":
        from gpt2_checkpoints import tiny_dialogpt_dir

        model_dir, targets = tiny_dialogpt_dir(tmp_path / "m", seed=2), ["c_attn"]
    elif family == "phi":
        from phi_checkpoints import tiny_phi_dir

        model_dir, targets = tiny_phi_dir(tmp_path / "m", seed=2), ["q_proj", "dense"]
    else:
        model_dir, targets = tiny_chat_dir(tmp_path / "m", family="qwen2", seed=2), ["q_proj", "v_proj"]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    runs = {}
    for backend, alpha in (("numpy", ALPHA), ("gpu", ALPHA), ("numpy", None)):
        chat = run(ChatModel.create(model_dir, lora=lora, backend=backend, device=device, seed=1))
        examples = random_examples(8, chat.checkpoint.config.vocab_size, seed=3)
        before = run(chat.score_encoded(examples[:2]))
        history = run(chat.fit(examples, CausalTrainConfig(
            epochs=2, lr=1e-2, batch_size=4, neftune_noise_alpha=alpha, adam_epsilon=1e-6)))
        runs[backend, alpha] = ([h.loss for h in history], [h.grad_norm for h in history], before)
    (cpu, cpu_norms, cpu_before), (gpu, gpu_norms, gpu_before) = runs["numpy", ALPHA], runs["gpu", ALPHA]
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)
    np.testing.assert_allclose(gpu_norms, cpu_norms, rtol=1e-3)
    assert np.abs(np.array(runs["numpy", None][0]) - cpu).max() > 1e-5
    assert cpu_before == runs["numpy", None][2]                 # no noise in evaluation


def chat_train_config(tmp_path, monkeypatch, *options):
    """The training config `py-engine train` builds for a tiny chat model with `options` (the
    run stopped there)."""
    import py_engine.cli as cli
    from test_cli_classifier import write_jsonl

    seen = []

    def trained(args, model, examples, config, *rest, **kwargs):
        seen.append(config)
        raise SystemExit(0)

    data = write_jsonl(tmp_path / "chat.jsonl", [{"text": "one two three four"}] * 2)
    with monkeypatch.context() as patch:
        patch.setattr(cli, "_train", trained)
        with pytest.raises(SystemExit):
            cli.main(["train", "--model", str(tiny_chat_dir(tmp_path / "chat", seed=1)), "--data",
                      str(data), "--out", str(tmp_path / "o"), *options])
    return seen[0]


def test_the_options_that_set_it_and_who_refuses_it(tmp_path, monkeypatch, capsys):
    """CausalTrainConfig's neftune_noise_alpha (>= 0, finite); classifiers have none (their
    config refuses it); `py-engine train --neftune-noise-alpha` sets it for a chat model, and
    refuses it for a classifier by name; the API takes it for chat and T5 jobs."""
    import py_engine.cli as cli
    from peft_oracle import tiny_bert_dir
    from py_engine.api.jobs import CONFIGS
    from test_cli_classifier import write_jsonl

    for bad in (-1.0, float("nan"), "5"):
        with pytest.raises(ConfigError, match="neftune_noise_alpha must be"):
            CausalTrainConfig(neftune_noise_alpha=bad)
    with pytest.raises(TypeError):
        ClassifierTrainConfig(neftune_noise_alpha=5.0)
    assert chat_train_config(tmp_path, monkeypatch, "--neftune-noise-alpha", "5") \
        .neftune_noise_alpha == 5.0
    chat_data = tmp_path / "chat.jsonl"
    labelled = write_jsonl(tmp_path / "l.jsonl", [{"text": "a b", "label": "x"},
                                                  {"text": "c d", "label": "y"}])
    code = cli.main(["train", "--model", str(tiny_bert_dir(tmp_path / "bert")), "--data",
                     str(labelled), "--out", str(tmp_path / "o2"), "--neftune-noise-alpha", "5"])
    assert code == 2 and "--neftune-noise-alpha" in capsys.readouterr().err
    import json

    from t5_checkpoints import tiny_t5

    code = cli.main(["export-job", "--model", str(tiny_chat_dir(tmp_path / "chat", seed=1)),
                     "--data", str(chat_data), "--out", str(tmp_path / "job"),
                     "--neftune-noise-alpha", "5"])
    assert code == 0 and json.loads((tmp_path / "job" / "job.json").read_text())["train"][
        "neftune_noise_alpha"] == 5.0
    tiny_t5(tmp_path / "t5")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"input": "a b", "target": "c"}] * 2)
    code = cli.main(["export-job", "--model", str(tmp_path / "t5"), "--data", str(pairs), "--out",
                     str(tmp_path / "job-t5"), "--neftune-noise-alpha", "5"])
    assert code == 2 and "not for T5 jobs" in capsys.readouterr().err
    assert not (tmp_path / "job-t5").exists()
    assert "neftune_noise_alpha" in CONFIGS["causal_lm"][1] and "neftune_noise_alpha" in \
        CONFIGS["seq2seq"][1] and "neftune_noise_alpha" not in CONFIGS["classification"][1]
