"""How a new adapter starts: PEFT's init_lora_weights (LoraConfig.fresh_init, train/init.py).
True draws lora_A from kaiming_uniform and lora_B zeros, "gaussian" lora_A from N(0, 1/r),
False lora_B from kaiming_uniform too, "orthogonal" both from halves of one orthogonal basis
(B.A zero); an embedding's LoRA (A zeros, B N(0, 1); without init both N(0, 1)) follows.

Our generator is not torch's, so our draw and PEFT's own for the same model and options are
both held to what defines the draw: zeros where it draws zeros, each kind of tensor's spread
the distribution's (its elements over their expected deviation: within 4 standard errors of
1), a uniform draw's bound, B.A zero and the halved ranks of the orthogonal draw; a new adapter then scores as the base model where B.A is zero and as PEFT
reads it where it is not; adapter_config.json says how it was drawn; what is not drawn here is
refused by name."""

import json

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from transformers import AutoModelForCausalLM

from conftest import run
from export_models import relative_error
from tiny_chat import tiny_chat_dir
from py_engine.models.lora_config import LoraConfig, LoraConfigError
from py_engine.train.chat import ChatModel

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
           "embed_tokens"]
INITS = [True, False, "gaussian", "orthogonal"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_chat_dir(tmp_path_factory.mktemp("init"), family="llama")


def expected_std(name, shape, init):
    """The standard deviation of an element of the tensor `name` as init_lora_weights `init`
    draws it (0: zeros): kaiming_uniform's bound / sqrt(3), 1/r, N(0, 1), and the orthogonal
    draw's 1/sqrt(200) (each element sums r/2 unit normals times a row of an orthonormal basis,
    its squares averaging 1/2 over the basis, over 10^2)."""
    if name.endswith("lora_embedding_A"):
        return 1.0 if init is False else 0.0
    if name.endswith("lora_embedding_B"):
        return 1.0
    if init == "orthogonal":
        return 1 / np.sqrt(200)
    if name.endswith("lora_A.weight"):
        return 1 / shape[0] if init == "gaussian" else 1 / np.sqrt(3 * shape[1])
    return 1 / np.sqrt(3 * shape[1]) if init is False else 0.0


def standardized(values, init):
    """{kind: the elements of its tensors over their expected_std (None: all zeros)}."""
    out = {}
    for name, value in values.items():
        kind = name.rsplit(".", 2)[-2] if name.endswith(".weight") else name.rsplit(".", 1)[-1]
        std = expected_std(name, value.shape, init)
        if std == 0:
            assert not value.any(), name
            out.setdefault(kind, None)
        else:
            assert kind not in out or out[kind] is not None
            out[kind] = np.concatenate([out.get(kind) if out.get(kind) is not None else [],
                                        np.asarray(value, np.float64).ravel() / std])
    return out


def pairs(values):
    """[(lora_A, lora_B)] of every wrapped linear, as matrices."""
    return [(values[n], values[n.replace("lora_A", "lora_B")]) for n in values
            if n.endswith("lora_A.weight")]


def ours(model_dir, init, targets=TARGETS, **options):
    chat = run(ChatModel.create(model_dir, backend="numpy", seed=3, lora=LoraConfig(
        r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=targets,
        init_lora_weights=init, **options)))
    values = {n: np.frombuffer(bytes(v), np.float32).reshape(shape)
              for n, (shape, v) in run(chat.runtime.trainable_values()).items()}
    return chat, values


def peft_draw(model_dir, init):
    torch.manual_seed(3)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), PeftLoraConfig(
        r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=TARGETS, init_lora_weights=init))
    return {k.removeprefix("base_model.model."): v.detach().numpy()
            for k, v in get_peft_model_state_dict(peft, save_embedding_layers=False).items()}


@pytest.mark.parametrize("init", INITS)
def test_a_new_adapter_is_drawn_as_peft_draws_it(model_dir, init):
    _, mine = ours(model_dir, init)
    theirs = peft_draw(model_dir, init)
    assert set(mine) == set(theirs)
    assert all(mine[n].shape == theirs[n].shape for n in mine)
    got, want = standardized(mine, init), standardized(theirs, init)
    assert set(got) == {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"}
    for kind in got:
        assert (got[kind] is None) == (want[kind] is None), (init, kind)
        if got[kind] is None:
            continue
        # each draw's spread is the distribution's, within 4 standard errors (1/sqrt(2n))
        for z in (got[kind], want[kind]):
            bound = 4 / np.sqrt(2 * z.size)
            assert abs(z.std() - 1) < bound and abs(z.mean()) < 2 * bound, (init, kind, z.std())
    for (a, b), (pa, pb) in zip(pairs(mine), pairs(theirs)):
        if init in (True, False):       # kaiming_uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            assert np.abs(a).max() <= 1 / np.sqrt(a.shape[1]) + 1e-7
        if init is False:
            assert np.abs(b).max() <= 1 / np.sqrt(b.shape[1]) + 1e-7
        if init == "orthogonal":        # B.A is zero; A's rows and B's columns span r/2
            for x, y in ((a, b), (pa, pb)):
                assert np.abs(y.astype(np.float64) @ x).max() < 1e-6 * np.abs(y).max() * np.abs(x).max()
                assert np.linalg.matrix_rank(x) == np.linalg.matrix_rank(y) == 2


@pytest.mark.parametrize("init", INITS)
def test_a_new_adapter_scores_as_the_base_or_as_peft_reads_it(model_dir, init, tmp_path):
    """Where B.A is zero (all but False), the base model's logits; with False (and the
    embedding's A drawn too) other ones, which PEFT reads back from the saved adapter, whose
    adapter_config.json says how it was drawn."""
    chat, _ = ours(model_dir, init)
    run(chat.save(tmp_path / "adapter"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] == init
    ids = [int(i) for i in np.random.default_rng(1).integers(0, 300, 10)]
    decoder = chat.decoder()
    logits = np.array([np.asarray(run(decoder.prefill(ids)), np.float64)])
    base = AutoModelForCausalLM.from_pretrained(model_dir).double().eval()
    with torch.no_grad():
        plain = base(input_ids=torch.tensor([ids])).logits[0, -1:].numpy()
        peft = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        adapted = peft(input_ids=torch.tensor([ids])).logits[0, -1:].numpy()
    assert relative_error(logits, adapted) <= 1e-5
    if init is False:
        assert relative_error(logits, plain) > 1e-2
    else:
        assert relative_error(logits, plain) <= 1e-5


@pytest.mark.parametrize("init", [False, "orthogonal"])
def test_dora_magnitudes_start_from_the_adapted_rows(model_dir, init, tmp_path):
    """DoRA's magnitude starts as each row's norm of W + s B.A (PEFT's get_weight_norm at
    update_layer): with init False B.A is not zero, and both draws, ours and PEFT's, hold the
    identity (1e-5); PEFT reads our new adapter with our logits (1e-5)."""
    from safetensors.numpy import load_file

    chat, mine = ours(model_dir, init, TARGETS[:-1], use_dora=True)
    torch.manual_seed(3)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), PeftLoraConfig(
        r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=TARGETS[:-1],
        init_lora_weights=init, use_dora=True))
    theirs = {k.removeprefix("base_model.model."): v.detach().numpy()
              for k, v in get_peft_model_state_dict(peft).items()}
    weights = load_file(model_dir / "model.safetensors")
    for values in (mine, theirs):
        magnitudes = [n for n in values if n.endswith("lora_magnitude_vector")]
        assert len(magnitudes) == 14
        for name in magnitudes:
            module = name.removesuffix(".lora_magnitude_vector")
            a = values[module + ".lora_A.weight"].astype(np.float64)
            b = values[module + ".lora_B.weight"].astype(np.float64)
            adapted = weights[module + ".weight"].astype(np.float64) + 2.0 * b @ a
            assert relative_error(values[name], np.linalg.norm(adapted, axis=1)) <= 1e-5, name
            if init is False:       # B.A moved them off the base rows' norms
                plain = np.linalg.norm(weights[module + ".weight"].astype(np.float64), axis=1)
                assert relative_error(values[name], plain) > 1e-4, name
    run(chat.save(tmp_path / "adapter"))
    ids = [int(i) for i in np.random.default_rng(2).integers(0, 300, 8)]
    logits = np.asarray(run(chat.decoder().prefill(ids)), np.float64)[None]
    base = AutoModelForCausalLM.from_pretrained(model_dir).double().eval()
    with torch.no_grad():
        peft = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        want = peft(input_ids=torch.tensor([ids])).logits[0, -1:].numpy()
    assert relative_error(logits, want) <= 1e-5


def test_what_is_not_drawn_here_is_refused_by_name(model_dir, tmp_path):
    """A draw from data or the base weights (EVA, LoRA-GA) for a new adapter; an odd rank for
    the orthogonal draw (as PEFT); a value of another type. Loading an adapter trained with EVA
    reads it (its values replace any draw)."""
    from test_cli_classifier import cli

    for init, options, words in (("eva", {}, "init_lora_weights 'eva' draws a new adapter's"),
                                 ("lora_ga", {}, "init_lora_weights 'lora_ga' draws"),
                                 ("orthogonal", dict(r=3), "needs an even rank, as PEFT's; got 3"),
                                 ("orthogonal", dict(rank_pattern={"q_proj": 5}), "got 5")):
        lora = LoraConfig(**dict(dict(r=4, task_type="CAUSAL_LM", target_modules=["q_proj"]), **options),
                          init_lora_weights=init)
        with pytest.raises(LoraConfigError, match=words):
            run(ChatModel.create(model_dir, backend="numpy", lora=lora))
    with pytest.raises(LoraConfigError, match="init_lora_weights must be true, false or"):
        LoraConfig(init_lora_weights=3)
    chat, _ = ours(model_dir, True)
    run(chat.save(tmp_path / "adapter"))
    path = tmp_path / "adapter" / "adapter_config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), init_lora_weights="eva")))
    assert run(ChatModel.load(model_dir, tmp_path / "adapter")).model.linears.lora.init_lora_weights == "eva"
    bad = cli("train", "--model", model_dir, "--data", tmp_path / "none.jsonl", "--out",
              tmp_path / "o", "--init-lora-weights", "eva", check=False)
    assert bad.returncode == 2 and "choose true, false, gaussian, orthogonal, pissa or olora" in bad.stderr


def test_the_command_line_draws_as_asked(model_dir, tmp_path):
    from test_cli_chat import ROWS
    from test_cli_classifier import cli, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", ROWS)
    cli("train", "--model", model_dir, "--data", data, "--out", tmp_path / "out", "--epochs", 1,
        "--init-lora-weights", "Gaussian", "--target-modules", "q_proj,v_proj")
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] == "gaussian" and config["target_modules"] == ["q_proj", "v_proj"]
