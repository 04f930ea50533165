"""An adapter made with other LoRA options than the loaded model's (rank, targets, rsLoRA, DoRA,
pooling, bias) comes in with them: the model is rebuilt over the same frozen weights, predicts
as the adapter loaded on its own does, trains, is saved and put back after a restart with
those options, and reset goes back to what the model was loaded with. A bad adapter changes
nothing. On the GPU the rebuilt runtime keeps the frozen weights already uploaded (the same
buffers) where it stores them the same way."""

import json

import numpy as np
import pytest

import peft_oracle as po
from service_calls import call, error
from event_loop import run as run_async
from test_trainer import sentiment as trainer_sentiment
from tiny_chat import tiny_chat_dir
from py_engine.app.learner import LearnerConfig
from py_engine.app.scheduler import SchedulerConfig
from py_engine.app.service import EngineService
from py_engine.data.classification import Example
from py_engine.gpu import run_sync
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.config import ClassifierTrainConfig

LABELS = ["neg", "pos"]
TEXTS = ["the film was great", "awful plot", "a scene and an actor", "it is this"]


def files_of(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in directory.rglob("*") if p.is_file()}


def write(directory, files):
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("import") / "bert", seed=8)


def service(tmp_path, backend="numpy"):
    config = LearnerConfig(save_every_s=0.0, train={"lr": 1e-2, "epochs": 2})
    return EngineService(queue=str(tmp_path / "queue.sqlite"), states=str(tmp_path / "states"),
                         backend=backend, learner=config,
                         scheduler=SchedulerConfig(idle_fraction=1.0))


def as_arrays(values):
    return {n: np.asarray(v, np.float64).reshape(s) for n, (s, v) in values.items()}


def trainable(svc):
    return as_arrays(run_async(svc.model.runtime.trainable_values()))


async def randomised(model, seed):
    """`model`'s adapter files with every trainable tensor drawn at random (LoRA B included, so
    the adapter changes the outputs)."""
    rng = np.random.default_rng(seed)
    values = await model.runtime.trainable_values()
    await model.runtime.load_trainable({n: (s, (0.3 * rng.standard_normal(len(v))).tolist())
                                        for n, (s, v) in values.items()})
    return await model.adapter_files()


def other_adapter(bert, seed, **lora):
    """An adapter made elsewhere with options the service does not default to."""
    options = dict(r=4, lora_alpha=8, lora_dropout=0.0,
                   target_modules=["query", "key", "value", "dense"])
    clf = run_sync(TextClassifier.create(bert, LABELS, lora=LoraConfig(**dict(options, **lora)),
                                         pooling="cls", seed=seed))
    return run_sync(randomised(clf, seed))


def check_predicts_as(svc, reference, tol=1e-6):
    expected = run_sync(reference.predict(TEXTS))
    got = call(svc, "predict_many", texts=TEXTS)
    for g, w in zip(got, expected):
        assert max(abs(g["probs"][k] - w[k]) for k in w) < tol, (g, w)


@pytest.mark.parametrize("lora", [{}, dict(use_rslora=True, bias="all"), dict(use_dora=True)])
def test_a_classifier_adapter_with_other_options_comes_in_with_them(tmp_path, bert, lora):
    adapter = other_adapter(bert, 5, **lora)
    reference = run_sync(TextClassifier.load(bert, write(tmp_path / "adapter", adapter)))
    svc = service(tmp_path)
    loaded = call(svc, "load_model", files=files_of(bert), labels=LABELS)
    initial = trainable(svc)
    assert loaded["pooling"] == "mean"
    summary = call(svc, "import_adapter", files=adapter)
    assert summary["trainable"] == sum(int(np.prod(s)) for s in reference.model.trainable.values())
    assert summary["pooling"] == "cls" and summary["trainable"] != loaded["trainable"]
    check_predicts_as(svc, reference)
    exported = call(svc, "export_adapter")["files"]
    config = json.loads(exported["adapter_config.json"])
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["dense", "key", "query", "value"]
    assert config["use_dora"] is bool(lora.get("use_dora"))

    # it trains with them, and its state comes back with them after a restart
    call(svc, "import_text", name="a.jsonl", data="".join(
        json.dumps({"text": e.text, "label": e.label}) + "\n" for e in trainer_sentiment(24, 3)).encode())
    assert call(svc, "force_slice", budget_ms=60_000)["ran"]
    trained = trainable(svc)
    imported = as_arrays(run_sync(reference.runtime.trainable_values()))
    assert any(not np.array_equal(trained[n], v) for n, v in imported.items())
    call(svc, "save")
    svc.close()
    svc = service(tmp_path)
    back = call(svc, "load_model", files=files_of(bert), labels=LABELS)
    assert back["restored"] is True and back["trainable"] == summary["trainable"]
    assert "set_aside" not in back
    for name, value in trainable(svc).items():
        np.testing.assert_array_equal(value, trained[name], err_msg=name)

    # reset: the options and weights it was loaded with
    reset = call(svc, "reset")
    assert reset["trainable"] == loaded["trainable"] and reset["pooling"] == "mean"
    assert set(trainable(svc)) == set(initial)
    svc.close()


def test_a_bad_adapter_changes_nothing(tmp_path, bert):
    """Options the tensors do not fit, a target the model lacks, a damaged file: refused by
    name, the model as it was (options, weights)."""
    adapter = other_adapter(bert, 6)
    svc = service(tmp_path)
    call(svc, "load_model", files=files_of(bert), labels=LABELS)
    before, summary = trainable(svc), call(svc, "status")["model"]
    config = json.loads(adapter["adapter_config.json"])
    wrong_rank = dict(adapter, **{"adapter_config.json": json.dumps(dict(config, r=8)).encode()})
    no_such = dict(adapter, **{"adapter_config.json": json.dumps(
        dict(config, target_modules=["query", "nothing_here"])).encode()})
    damaged = dict(adapter, **{"adapter_model.safetensors": adapter["adapter_model.safetensors"][:64]})
    for files, words in ((wrong_rank, "has shape (4, 32), the model needs (8, 32)"),
                         (no_such, "which this model does not wrap"),
                         (damaged, "adapter_model.safetensors")):
        found = error(svc, "import_adapter", files=files)
        assert found["kind"] == "user" and words in found["message"], found
        after = trainable(svc)
        assert set(after) == set(before)
        for name, value in after.items():
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert call(svc, "status")["model"] == summary
    svc.close()


def test_a_chat_adapter_with_other_options_comes_in_with_them(tmp_path):
    chat_dir = tiny_chat_dir(tmp_path / "chat", family="qwen2")
    lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=True)
    made = run_sync(ChatModel.create(chat_dir, lora=lora, seed=2))
    adapter = run_sync(randomised(made, 2))
    reference = run_sync(ChatModel.load(chat_dir, write(tmp_path / "adapter", adapter)))
    svc = service(tmp_path)
    loaded = call(svc, "load_model", files=files_of(chat_dir), kind="causal_lm")
    summary = call(svc, "import_adapter", files=adapter)
    assert summary["trainable"] != loaded["trainable"]
    expected = as_arrays(run_sync(reference.runtime.trainable_values()))
    got = trainable(svc)
    assert set(got) == set(expected)
    for name, value in got.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    text = reference.tokenizer.encode("a short text to score", add_special_tokens=False).ids
    example = [type("E", (), {"ids": text, "labels": text})()]
    ours = run_sync(svc.model.model.score_encoded(example))[0]["loss"]
    assert abs(ours - run_sync(reference.score_encoded(example))[0]["loss"]) < 1e-6
    config = json.loads(call(svc, "export_adapter")["files"]["adapter_config.json"])
    assert config["r"] == 2 and config["use_rslora"] is True
    call(svc, "save")
    svc.close()
    svc = service(tmp_path)
    back = call(svc, "load_model", files=files_of(chat_dir), kind="causal_lm")
    assert back["restored"] is True and back["trainable"] == summary["trainable"]
    svc.close()


@pytest.mark.parametrize("base_dtype", ["f32", "f16"])
def test_the_gpu_runtime_rebuilt_keeps_the_frozen_weights_it_can(tmp_path, bert, device, base_dtype):
    """The frozen weights both models read the same way are the same buffers (not uploaded
    again); DoRA's wrapped linears, kept f32 under f16, are read from the checkpoint. The
    rebuilt classifier predicts as the adapter loaded on its own (same storage), and trains."""
    dora = other_adapter(bert, 7, use_dora=True)
    reference = run_sync(TextClassifier.load(bert, write(tmp_path / "dora", dora), backend="gpu",
                                             device=device, base_dtype=base_dtype))
    clf = run_sync(TextClassifier.create(bert, LABELS, pooling="cls", backend="gpu", device=device,
                                         base_dtype=base_dtype, seed=1))
    before, old = dict(clf.runtime.be.params), clf.model
    assert run_sync(clf.load_adapter_files(dora)) is True
    after = clf.runtime.be.params
    kept = [n for n in clf.model.frozen_names() if after[n] is before.get(n)]
    # DoRA's wrapped linears: stored compressed before (under f16), f32 now
    restored = [n for n in clf.model.frozen_names()
                if old.is_linear_weight(n) and not clf.model.is_linear_weight(n)]
    assert "embeddings.word_embeddings.weight" in kept
    if base_dtype == "f16":
        assert restored and not set(restored) & set(kept)
        assert after[restored[0]].half is False and before[restored[0]].half is True
    expected = run_sync(reference.predict(TEXTS))
    got = run_sync(clf.predict(TEXTS))
    for g, w in zip(got, expected):
        assert max(abs(g[k] - w[k]) for k in w) < 1e-5, (g, w)
    start = run_sync(clf.runtime.trainable_values())
    run_sync(clf.fit([Example(t, LABELS[i % 2]) for i, t in enumerate(TEXTS)],
                     ClassifierTrainConfig(epochs=1, batch_size=4, lr=1e-2)))
    end = run_sync(clf.runtime.trainable_values())
    assert any(list(end[n][1]) != list(start[n][1]) for n in start)


def test_an_encoder_decoder_adapter_with_other_options_comes_in_with_them(tmp_path):
    """FLAN-T5's kind: the task (its decoder start) stays, the LoRA is the adapter's."""
    from t5_tokenizer import t5_dir
    from py_engine.train.seq2seq import Seq2SeqModel

    model_dir = t5_dir(tmp_path / "t5")[0]
    lora = LoraConfig(r=2, lora_alpha=8, lora_dropout=0.0, task_type="SEQ_2_SEQ_LM",
                      target_modules=["q", "k", "wo"])
    adapter = run_sync(randomised(run_sync(Seq2SeqModel.create(model_dir, lora=lora, seed=4)), 4))
    reference = run_sync(Seq2SeqModel.load(model_dir, adapter_dir=write(tmp_path / "adapter", adapter)))
    svc = service(tmp_path)
    loaded = call(svc, "load_model", files=files_of(model_dir))
    assert loaded["kind"] == "seq2seq"
    summary = call(svc, "import_adapter", files=adapter)
    assert summary["trainable"] != loaded["trainable"]
    expected = as_arrays(run_sync(reference.runtime.trainable_values()))
    got = trainable(svc)
    assert set(got) == set(expected)
    prompt = "translate: a short text"
    want = run_sync(reference.generate(prompt, max_new_tokens=5)).ids
    assert run_sync(svc.model.model.generate(prompt, max_new_tokens=5)).ids == want
    svc.close()
