"""ModernBERT as a classifier, against transformers + PEFT: a pre-norm encoder without position
table (RoPE at two bases), global and sliding-window layers, fused Wqkv, a GeGLU MLP with the
exact GELU, norms and linears without bias (or with, where config.json says), and
ModernBertForSequenceClassification's head (head.dense, GELU, head.norm, classifier) on the
first token or the mean, as config.json's classifier_pooling says: one LoRA step's loss and
every gradient, the checkpoint's tokenizer, PEFT's adapters read here on both backends and ours
read by PEFT, the GPU step against NumPy with dropout, the merged export, the CLI.

transformers makes the rotary tables in float32 whatever the model's dtype, so the float64
gradients agree to 1e-7 (as the Llama family's do), the loss to 1e-9."""

import json

import numpy as np
import pytest
import torch

import peft_oracle as po
from conftest import run
from encoder_checks import check_gpu_step
from py_engine.formats.peft_adapter import load_adapter
from py_engine.models.checkpoint import Checkpoint, CheckpointError
from py_engine.models.lora_config import LoraConfig
from py_engine.models.modernbert import ModernBertClassifier
from py_engine.train.batch import Batch
from py_engine.train.init import initial_trainable, merge_loaded
from py_engine.train.numpy_runtime import NumpyRuntime
from py_engine.train.tasks import ClassificationTask
from test_adapter_roundtrip import LABELS, TEXTS, check_round_trip, peft_probabilities

PAD, CLS = 0, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return po.tiny_modernbert_dir(tmp_path_factory.mktemp("modernbert") / "model", seed=43)


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    """Every bias config.json may turn on, and mean pooling."""
    return po.tiny_modernbert_dir(tmp_path_factory.mktemp("modernbert_biased") / "model", seed=44,
                                  norm_bias=True, attention_bias=True, mlp_bias=True,
                                  classifier_bias=True, classifier_pooling="mean")


def peft_adapter(model_dir, path, targets=("Wqkv",), seed=3, dtype=torch.float32, **lora):
    peft = po.peft_model(model_dir, 3, target_modules=targets, seed=seed, dtype=dtype, **lora)
    return po.save_adapter(peft, path, labels=LABELS), peft


def engine(model_dir, adapter):
    checkpoint = Checkpoint.load(model_dir)
    config, tensors, _ = load_adapter(adapter)
    model = ModernBertClassifier(checkpoint.config, LoraConfig.from_peft_dict(config), 3, dropout=0.0)
    values = merge_loaded(model, initial_trainable(model, 0), tensors, adapter)
    return NumpyRuntime(model, ClassificationTask(3), checkpoint, values, dtype=np.float64)


def modernbert_batch(rng, B, T, vocab=200):
    """[CLS] and ids past the specials, rows after the first padded: T over the window (4 either
    side) so that sliding layers cut, and padded queries far from any real key."""
    ids = rng.integers(5, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, rng.integers(3, T):] = 0
    ids[mask == 0] = PAD
    ids[:, 0] = CLS
    return ids, np.zeros_like(ids), mask, rng.integers(0, 3, B)


@pytest.mark.parametrize("fixture, targets, bias", [
    ("tiny", ("Wqkv",), "none"),
    ("tiny", ("Wqkv", "Wo", "Wi", "dense"), "none"),
    ("biased", ("Wqkv", "Wi"), "lora_only"),
    ("biased", ("Wo",), "all"),
    ("tiny", ("tok_embeddings", "Wqkv"), "none"),
])
def test_step_matches_peft(request, tmp_path, fixture, targets, bias):
    """Float64: the loss and every gradient (LoRA on each linear and the head's dense layer,
    or on the token embedding, whose padding row takes no gradient; the classifier trained
    whole, the biases that train: with "all" the norms' too)."""
    model_dir = request.getfixturevalue(fixture)
    adapter, peft = peft_adapter(model_dir, tmp_path / "adapter", targets, dtype=torch.float64,
                                 bias=bias)
    ids, types, mask, labels = modernbert_batch(np.random.default_rng(), 4, 20)
    ids[0, 5] = PAD                 # among the real tokens: its embedding row's LoRA stays put
    loss, grads, _ = po.step_gradients(peft, ids, mask, labels)
    ours = engine(model_dir, adapter)
    got_loss = run(ours.accumulate(Batch(ids.tolist(), types.tolist(), mask.tolist(), labels.tolist())))["loss"]
    assert abs(got_loss - loss) <= 1e-9 * abs(loss)
    want = {k.removeprefix("base_model.model."): g for k, g in grads.items()}
    got = run(ours.gradients())
    assert set(got) == set(want) and {"classifier.weight", "classifier.bias"} <= set(want)
    po.check_gradients(got, want, 1e-7)
    assert ("model.final_norm.bias" in want) is (bias == "all")
    embedding_a = want.get("model.embeddings.tok_embeddings.lora_embedding_A")
    assert (embedding_a is not None) is ("tok_embeddings" in targets)
    if embedding_a is not None:
        assert np.abs(embedding_a).max() > 1e-3 and not embedding_a[:, PAD].any()


def test_the_checkpoint_s_tokenizer_encodes_as_transformers(tiny):
    from transformers import AutoTokenizer

    from py_engine.tokenizers.checkpoint import classifier_tokenizer

    ours, theirs = classifier_tokenizer(tiny), AutoTokenizer.from_pretrained(str(tiny))
    for text in TEXTS + ["The FILM was ünbelievable!", ""]:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
    assert ours.encode("not bad", "a fine plot").ids == theirs("not bad", "a fine plot")["input_ids"]
    assert ours.pad_id == theirs.pad_token_id == PAD


@pytest.mark.parametrize("fixture", ["tiny", "biased"])
def test_a_peft_adapter_round_trips(request, tmp_path, fixture, device):
    """PEFT's adapter gives PEFT's probabilities on both backends and merged; trained and saved
    here, PEFT reads it; pooled as config.json's classifier_pooling says (cls, mean)."""
    model_dir = request.getfixturevalue(fixture)
    adapter, _ = peft_adapter(model_dir, tmp_path / "adapter", ("Wqkv", "Wi"), seed=4)
    before, after, saved = check_round_trip(model_dir, adapter, tmp_path / "trained", device)
    assert np.abs(after["classifier.weight"] - before["classifier.weight"]).max() > 1e-4
    pooling = json.loads((model_dir / "config.json").read_text())["classifier_pooling"]
    assert json.loads((saved / "head_config.json").read_text()) == {"pooling": pooling}


@pytest.mark.parametrize("fixture", ["tiny", "biased"])
def test_gpu_step_matches_numpy_with_dropout(request, tmp_path, fixture, device):
    model_dir = request.getfixturevalue(fixture)
    adapter, _ = peft_adapter(model_dir, tmp_path / "adapter", ("Wqkv", "Wo", "Wi", "dense"), seed=6)
    check_gpu_step(device, model_dir, adapter, *modernbert_batch(np.random.default_rng(), 4, 18))


def test_merged_export_is_transformers_classifier(tmp_path, biased):
    """The merged classifier is ModernBertForSequenceClassification, pooling as trained (its
    config.json's classifier_pooling), with our probabilities; the LoRA on tok_embeddings
    folded into the table."""
    from transformers import AutoModelForSequenceClassification

    from encoder_checks import encoded
    from py_engine.export.merged import load_merged, save_merged
    from py_engine.train.classifier import TextClassifier

    adapter, _ = peft_adapter(biased, tmp_path / "adapter", ("tok_embeddings", "Wqkv", "Wo"), seed=7)
    clf = run(TextClassifier.load(biased, adapter, backend="numpy"))
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])
    merged = save_merged(load_merged(biased, adapter), tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForSequenceClassification"]
    assert config["classifier_pooling"] == "mean"
    ids, mask = encoded(merged, TEXTS)
    hf = AutoModelForSequenceClassification.from_pretrained(merged, attn_implementation="sdpa").eval()
    with torch.no_grad():
        logits = hf(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits
    assert np.abs(torch.softmax(logits, -1).numpy() - ours).max() <= 1e-5
    assert np.abs(peft_probabilities(biased, adapter, TEXTS) - ours).max() <= 1e-5


@pytest.mark.parametrize("fixture", ["tiny", "biased"])
def test_the_onnx_graph_gives_our_probabilities(request, tmp_path, fixture):
    """onnxruntime on the exported graph (rotary tables, sliding layers masked beyond the
    window, the exact GeGLU, the head; cls or mean pooling, biases or none) gives our
    probabilities, texts long enough for the window included; mean-pooled, left-padded input
    too (against transformers on the merged checkpoint); it takes input_ids and attention_mask."""
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification

    from encoder_checks import encoded
    from py_engine.export.merged import load_merged, save_merged
    from py_engine.export.onnx_export import save_onnx
    from py_engine.train.classifier import TextClassifier

    model_dir = request.getfixturevalue(fixture)
    adapter, _ = peft_adapter(model_dir, tmp_path / "adapter", ("Wqkv", "Wo", "Wi", "dense"), seed=8)
    texts = TEXTS + [" ".join(TEXTS[:3])]
    clf = run(TextClassifier.load(model_dir, adapter, backend="numpy"))
    ours = np.array([[p[label] for label in LABELS] for p in run(clf.predict(texts))])
    onnx_dir = save_onnx(load_merged(model_dir, adapter), tmp_path / "onnx")
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    ids, mask = encoded(model_dir, texts)
    assert ids.shape[1] > 9                     # past the window of 4 either side
    theirs = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]
    assert np.abs(theirs - ours).max() <= 1e-5
    if fixture == "tiny":
        # cls pooling: a left-padded row's first token is padding, whose state is no one's
        # (transformers' sdpa unmasks a query that sees no real key within its window)
        return
    left_ids, left_mask = np.full_like(ids, PAD), np.zeros_like(mask)
    for row, n in enumerate(mask.sum(1)):
        left_ids[row, ids.shape[1] - n:], left_mask[row, ids.shape[1] - n:] = ids[row, :n], 1
    hf = AutoModelForSequenceClassification.from_pretrained(
        save_merged(load_merged(model_dir, adapter), tmp_path / "merged"), attn_implementation="sdpa").eval()
    with torch.no_grad():
        want = torch.softmax(hf(input_ids=torch.as_tensor(left_ids),
                                attention_mask=torch.as_tensor(left_mask)).logits, -1).numpy()
    got = session.run(["probabilities"], {"input_ids": left_ids, "attention_mask": left_mask})[0]
    assert np.abs(got - want).max() <= 1e-5


def test_the_cli_trains_and_predicts(tmp_path, tiny):
    """`py-engine train` on a ModernBERT folder: LoRA on Wqkv (PEFT names no default), the
    adapter PEFT reads with our probabilities; predict reads it back."""
    from py_engine.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": LABELS[i % 3]}) + "\n"
                            for i, t in enumerate(TEXTS * 2)))
    assert main(["train", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--epochs", "1", "--batch-size", "4"]) == 0
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["target_modules"] == ["Wqkv"]
    from py_engine.train.classifier import TextClassifier

    clf = run(TextClassifier.load(tiny, tmp_path / "a", backend="numpy"))
    texts = sorted(set(TEXTS))
    ours = np.array([[p[label] for label in clf.labels] for p in run(clf.predict(texts))])
    assert np.abs(peft_probabilities(tiny, tmp_path / "a", texts) - ours).max() <= 1e-5
    assert main(["predict", "--model", str(tiny), "--adapter", str(tmp_path / "a"),
                 "--data", str(data)]) == 0


def test_a_checkpoint_without_the_prediction_head_is_refused_by_name(tmp_path):
    """A bare ModernBertModel has no head.dense and head.norm, which the sequence classifier
    reads (PEFT would draw them at random on every load)."""
    from transformers import ModernBertConfig, ModernBertModel

    config = ModernBertConfig(vocab_size=60, hidden_size=16, intermediate_size=24,
                              num_hidden_layers=1, num_attention_heads=2, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    ModernBertModel(config).save_pretrained(tmp_path / "bare")
    with pytest.raises(CheckpointError, match="no prediction head"):
        Checkpoint.load(tmp_path / "bare")


def test_a_fine_tuned_classifier_checkpoint_reads_as_the_released_one(tmp_path, tiny):
    """ModernBertForSequenceClassification saved (a classifier fine-tuned elsewhere: its
    classifier beside the encoder and head) reads as the same tensors as the masked-LM one."""
    from transformers import ModernBertForSequenceClassification

    ModernBertForSequenceClassification.from_pretrained(tiny, num_labels=3).save_pretrained(tmp_path / "ft")
    released, fine_tuned = Checkpoint.load(tiny), Checkpoint.load(tmp_path / "ft")
    assert fine_tuned.names() == released.names()
    for name in released.names():
        assert np.array_equal(np.asarray(fine_tuned.floats(name)), np.asarray(released.floats(name))), name


def test_modules_to_save_trains_only_the_classifier_whole(tiny):
    """modules_to_save may name the classifier (trained whole); its head's dense layer and norm
    ("head", which LoRA may wrap) or the norms would train whole in PEFT, and are refused by
    name here; "score" names nothing and is passed over, as PEFT passes it over."""
    from py_engine.models.lora_config import LoraConfigError

    config = Checkpoint.load(tiny).config
    model = ModernBertClassifier(config, LoraConfig(target_modules=["Wqkv"],
                                                    modules_to_save=["classifier", "score"]), 3)
    assert [k for k in model.trainable if ".lora_" not in k] == ["classifier.weight", "classifier.bias"]
    for entry, named in (("head", "head,"), ("norm", "head.norm, model.embeddings.norm, ")):
        with pytest.raises(LoraConfigError, match=f"modules_to_save '{entry}' names {named}.* of "
                                                  r"this ModernBERT model only classifier \(its head\)"):
            ModernBertClassifier(config, LoraConfig(target_modules=["Wqkv"],
                                                    modules_to_save=["classifier", entry]), 3)
