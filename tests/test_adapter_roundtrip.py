"""Adapters round-trip with PEFT: ours load in PeftModel.from_pretrained and give the same
probabilities, PEFT's load in py_engine and give the same probabilities, and a failed save never
replaces a good adapter."""

import json
import math

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertForSequenceClassification, BertTokenizerFast

import peft_oracle as po
from conftest import run
from py_engine.data.classification import Example
from py_engine.formats import peft_adapter, safetensors
from py_engine.formats.output_dir import MARKER
from py_engine.train.classifier import TextClassifier, TrainConfig

TEXTS = ["the film was great", "a very bad plot", "not good, really awful!", "fine actor",
         "the scene", "it is this that"]
LABELS = ["neg", "neutral", "pos"]


def peft_probabilities(model_dir, adapter_dir, texts):
    # from_pretrained: transformers 5 ignores BertTokenizerFast(vocab_file=...) and keeps 5 tokens.
    # ModernBERT's (byte-level BPE), DeBERTa's and ALBERT's (Unigram) tokenizer.json: their own
    # class reads them
    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    tok = (AutoTokenizer if model_type in ("modernbert", "deberta-v2", "albert") else
           BertTokenizerFast).from_pretrained(str(model_dir))
    enc = tok(texts, padding=True, return_tensors="np")
    return po.probabilities(model_dir, adapter_dir, enc["input_ids"], enc["attention_mask"])


def peft_bert_adapter(tiny_dir, path, seed, scale=0.1, **lora):
    """A PEFT SEQ_CLS adapter (r 4, alpha 8 unless `lora` says otherwise) on the tiny BERT,
    lora_B and the head drawn at random times `scale` (DoRA's magnitudes and the biases that
    train, bias "lora_only" or "all", moved by as much), saved to `path` with LABELS."""
    torch.manual_seed(seed)
    base = BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=3, attn_implementation="eager")
    peft = get_peft_model(base, PeftLoraConfig(task_type="SEQ_CLS", **dict(dict(r=4, lora_alpha=8), **lora)))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(scale * torch.randn_like(p))
            elif "lora_magnitude_vector" in name:        # DoRA's, off their initial norms
                p.mul_(1 + scale * torch.randn_like(p))
            elif name.endswith(".bias") and p.requires_grad:
                p.add_(scale * torch.randn_like(p))
    return po.save_adapter(peft, path, labels=LABELS)


def our_probabilities(clf):
    """[text, label] of `clf`'s probabilities of TEXTS, in LABELS order."""
    return np.array([[p[label] for label in LABELS] for p in run(clf.predict(TEXTS))])


def check_round_trip(tiny_dir, adapter, saved_dir, device):
    """A PEFT adapter gives PEFT's probabilities here on both backends and merged on the GPU;
    trained here (NumPy) and saved to `saved_dir`, its probabilities moved and PEFT reads them
    from it. Returns (trainable values before, after, the saved adapter's directory)."""
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.load(tiny_dir, adapter, backend=backend, device=device))
        assert np.abs(our_probabilities(clf) - theirs).max() <= 1e-5, backend
    run(clf.runtime.merge())
    assert clf.model.merged and np.abs(our_probabilities(clf) - theirs).max() <= 1e-5

    clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
    values = lambda: {k: np.asarray(v, np.float64)
                      for k, (_, v) in run(clf.runtime.trainable_values()).items()}
    before = values()
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    saved = run(clf.save(saved_dir))
    trained = our_probabilities(clf)
    assert np.abs(trained - theirs).max() > 1e-3
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - trained).max() <= 1e-5
    return before, values(), saved


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return po.tiny_bert_dir(tmp_path_factory.mktemp("tiny") / "model", seed=31)


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_trained_adapter_loads_in_peft(tmp_path, tiny_dir, device, backend):
    clf = run(TextClassifier.create(tiny_dir, LABELS, backend=backend, seed=3, device=device))
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    adapter = run(clf.save(tmp_path / "adapter"))
    assert {p.name for p in adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                   "labels.json", "head_config.json", MARKER}
    assert json.loads((adapter / "head_config.json").read_text()) == {"pooling": "cls"}
    ours = our_probabilities(clf)
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    assert np.abs(ours - theirs).max() <= 1e-5, (ours, theirs)
    # Trained: the LoRA B matrices moved away from zero.
    config, tensors, labels = peft_adapter.load_adapter(adapter)
    assert labels == LABELS
    assert any(np.abs(np.asarray(v)).max() > 0 for k, (s, v) in tensors.items() if "lora_B" in k)
    loaded = PeftLoraConfig.from_pretrained(str(adapter))
    assert (loaded.r, loaded.lora_alpha, sorted(loaded.target_modules)) == (8, 8, ["query", "value"])
    assert loaded.task_type == "SEQ_CLS"


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_peft_adapter_loads_in_engine(tmp_path, tiny_dir, device, backend):
    peft = po.peft_model(tiny_dir, 3, seed=32, dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    clf = run(TextClassifier.load(tiny_dir, adapter, backend=backend, device=device))
    ours = our_probabilities(clf)
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    assert np.abs(ours - theirs).max() <= 1e-5, (ours, theirs)


def test_failed_save_keeps_the_good_adapter(tmp_path, tiny_dir, monkeypatch):
    clf = run(TextClassifier.create(tiny_dir, LABELS, seed=4))
    target = run(clf.save(tmp_path / "adapter"))
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        run(clf.save(target))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]   # no staging left behind


def test_adapter_with_wrong_shapes_is_refused(tmp_path, tiny_dir):
    peft = po.peft_model(tiny_dir, 3, r=2, seed=5, dtype=torch.float32)
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["r"] = 4                                            # lies about the rank
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        run(TextClassifier.load(tiny_dir, adapter))


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_merged_inference_equals_unmerged(tmp_path, tiny_dir, device, backend):
    peft = po.peft_model(tiny_dir, 3, seed=33, dtype=torch.float32,
                         target_modules=("query", "value", "intermediate.dense"))
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    clf = run(TextClassifier.load(tiny_dir, adapter, backend=backend, device=device))
    unmerged = our_probabilities(clf)
    run(clf.merge())
    merged = our_probabilities(clf)
    assert np.abs(merged - unmerged).max() <= 1e-5
    assert np.abs(merged - peft_probabilities(tiny_dir, adapter, TEXTS)).max() <= 1e-5
    # The merged path really reads the merged weights: zeroing lora_B changes nothing now ...
    for name in clf.model.trainable:
        if "lora_B" in name:
            param = clf.runtime.be.params[name]
            if backend == "numpy":
                param[...] = 0.0
            else:
                param.buffer.write(bytes(param.buffer.size))
    again = our_probabilities(clf)
    assert np.abs(again - merged).max() <= 1e-6
    clf.unmerge()                     # ... and the unmerged path sees the zeroed adapter.
    base_only = our_probabilities(clf)
    assert np.abs(base_only - merged).max() > 1e-4


def test_mean_pooling_is_remembered_by_the_adapter(tmp_path, tiny_dir):
    clf = run(TextClassifier.create(tiny_dir, LABELS, pooling="mean", seed=6))
    adapter = run(clf.save(tmp_path / "adapter"))
    assert json.loads((adapter / "head_config.json").read_text()) == {"pooling": "mean"}
    loaded = run(TextClassifier.load(tiny_dir, adapter))
    assert loaded.model.pooling == "mean"
    matrix = lambda c: np.array([[p[label] for label in LABELS] for p in run(c.predict(TEXTS))])
    assert np.abs(matrix(loaded) - matrix(clf)).max() <= 1e-6
    with pytest.raises(ValueError, match="mean pooling"):
        run(TextClassifier.load(tiny_dir, adapter, pooling="cls"))


def test_targets_of_other_families_are_passed_over_as_peft_does(tmp_path, tiny_dir):
    """An adapter_config.json listing targets this model lacks beside ones it has (a list
    written for several families) loads in PEFT, wrapping the ones it has: here too. Targets
    that match nothing at all are refused, as PEFT refuses them, naming the model's linears."""
    peft = po.peft_model(tiny_dir, 3, seed=33, dtype=torch.float32,
                         target_modules=("query", "value", "q_proj", "gate_proj"))
    adapter = po.save_adapter(peft, tmp_path / "adapter", labels=LABELS)
    clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
    ours = our_probabilities(clf)
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    assert np.abs(ours - theirs).max() <= 1e-5, (ours, theirs)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, target_modules=["q_proj", "gate_proj"])))
    with pytest.raises(ValueError, match=r"LoRA targets \['q_proj', 'gate_proj'\] match no linear layer of "
                                         r"this .*\(its linear layers: .*query.*value"):
        run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))


@pytest.mark.parametrize("pattern", [r".*\.(query|value)", r"bert\.encoder\.layer\.0\.attention\.self\.key"])
def test_a_target_modules_string_is_a_regular_expression_as_in_peft(tmp_path, tiny_dir, pattern):
    """PEFT reads a target_modules string as a regular expression each module's full name in
    the base model must match whole: the same modules are wrapped here, the adapter gives
    PEFT's probabilities, and one saved here keeps the string."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 34, target_modules=pattern)
    clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
    ours = our_probabilities(clf)
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    assert np.abs(ours - theirs).max() <= 1e-5, (ours, theirs)
    saved = run(clf.save(tmp_path / "again"))
    assert json.loads((saved / "adapter_config.json").read_text())["target_modules"] == pattern
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - theirs).max() <= 1e-5
    with pytest.raises(ValueError, match=r"match no linear layer"):
        config = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps(dict(config, target_modules="query")))
        run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))


def _tiny_bert_linears(shape):
    """transformers' tiny BERT classifier (po.TINY), and the linears our BERT classifier has,
    {name: shape} with the pooler."""
    from transformers import BertConfig, BertForSequenceClassification

    from py_engine.models.bert import LINEAR_NAMES, POOLER

    modules = {f"encoder.layer.{n}.{name}": shape for n in range(po.TINY["num_hidden_layers"])
               for name in LINEAR_NAMES}
    modules[POOLER] = shape
    return BertForSequenceClassification(BertConfig(**po.TINY, num_labels=3)), modules


def _random_narrowing(rng):
    """adapter_config.json fields that choose the wrapped modules, drawn at random (regular
    expressions that match only linears: PEFT refuses one that matches a block, which is not
    a layer it wraps)."""
    names = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense",
             "self.query", "bert.encoder.layer.1.attention.self.value", "encoder.layer.0.output.dense",
             "q_proj", "gate_proj"]
    fields = {"target_modules": rng.sample(names, rng.randint(1, 4))}
    if rng.random() < 0.2:
        fields["target_modules"] = rng.choice([r".*\.(query|value)", r".*layer\.1\..*(query|dense)", r"bert\..*self\.key"])
    if rng.random() < 0.4:
        fields["exclude_modules"] = rng.choice([rng.sample(names, rng.randint(1, 2)), r".*layer\.0\..*query",
                                                r".*\.value"])
    if rng.random() < 0.5:
        fields["layers_to_transform"] = rng.choice([0, 1, 5, [0], [1], [0, 1], [3]])
        fields["layers_pattern"] = rng.choice([None, "layer", ["layers", "layer"], "h", ["encoder"]])
    return fields


def test_targets_exclusions_and_layers_choose_the_modules_peft_chooses():
    """target_modules (names, full names, suffixes, a regular expression), exclude_modules and
    layers_to_transform with or without layers_pattern, drawn at random: the modules wrapped
    here are the ones get_peft_model wraps in transformers' BERT (its pooler among them), and
    where PEFT finds none this refuses too."""
    import random

    from py_engine.models.lora import Linears
    from py_engine.models.lora_config import LoraConfig

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    base, modules = _tiny_bert_linears((1, 1))
    Bert = type(base)
    compared = 0
    for _ in range(60):
        fields = _random_narrowing(rng)
        try:
            peft = get_peft_model(Bert(base.config), PeftLoraConfig(task_type="SEQ_CLS", r=2, **fields))
            theirs = sorted(n[len("base_model.model."):-len(".lora_A")] for n, _ in peft.named_modules()
                            if n.endswith(".lora_A"))
        except ValueError:
            theirs = "refused"
        try:
            ours = sorted("bert." + m for m in Linears(modules, LoraConfig(**fields), "BERT model",
                                                       adapter_prefix="bert.").targets)
        except ValueError:
            ours = "refused"
        assert ours == theirs, f"seed {seed}: {fields}"
        compared += 1
    assert compared == 60


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "phi", "t5"])
def test_all_linear_wraps_the_linears_peft_wraps(family):
    """target_modules="all-linear" (PEFT's keyword, any case): the modules wrapped here are
    the ones get_peft_model wraps (every linear but the output layer and a classifier's head;
    BERT's pooler included), and, as PEFT does, the
    saved adapter_config.json lists them, so that PEFT wraps exactly these."""
    import warnings

    from transformers import (BertConfig as HfBert, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM, PhiConfig, PhiForCausalLM, T5Config as HfT5,
                              T5ForConditionalGeneration)

    from py_engine.models.bert import BertClassifier
    from py_engine.models.bert_config import BertConfig
    from py_engine.models.decoders import decoder_config, decoder_model
    from py_engine.models.lora_config import LoraConfig
    from py_engine.models.t5 import T5Model
    from py_engine.models.t5_config import T5Config

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vocab_size=100)
    if family == "bert":
        hf, task = BertForSequenceClassification(HfBert(**small, num_labels=3)), "SEQ_CLS"
        ours = BertClassifier(BertConfig(**hf.config.to_dict()), LoraConfig(target_modules="ALL-LINEAR"), 3)
    elif family == "t5":
        hf = T5ForConditionalGeneration(HfT5(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                                             vocab_size=100, feed_forward_proj="gated-gelu"))
        task = "SEQ_2_SEQ_LM"
        ours = T5Model(T5Config(**hf.config.to_dict()), LoraConfig(target_modules="all-linear", task_type=task))
    else:
        kind = {"llama": (LlamaForCausalLM, LlamaConfig(**small)),
                "gpt2": (GPT2LMHeadModel, GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100)),
                "phi": (PhiForCausalLM, PhiConfig(**small))}[family]
        hf, task = kind[0](kind[1]), "CAUSAL_LM"
        ours = decoder_model(decoder_config(hf.config.to_dict()),
                             LoraConfig(target_modules="all-linear", task_type=task))

    def wrapped(peft):
        return sorted(n[len("base_model.model."):-len(".lora_A")] for n, _ in peft.named_modules()
                      if n.endswith(".lora_A"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = wrapped(get_peft_model(hf, PeftLoraConfig(task_type=task, r=2, target_modules="all-linear")))
    prefix = ours.linears.prefix
    mine = sorted(prefix + m for m in ours.linears.targets)
    assert mine == theirs and len(mine) >= 8, (mine, theirs)
    saved = ours.lora.to_peft_dict()["target_modules"]
    assert sorted(saved) == mine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = type(hf)(hf.config)
        assert wrapped(get_peft_model(again, PeftLoraConfig(task_type=task, r=2, target_modules=saved))) == mine


def _random_patterns(rng):
    """rank_pattern and alpha_pattern keys as adapters write them: a module's short name, a
    longer suffix, a full name (with PEFT's conversions' "^" or not), a regular expression; two
    keys of one dict may both match a module (the first in the file's order wins)."""
    keys = ["query", "value", "key", "dense", "self.query", "attention.output.dense",
            "encoder.layer.1.attention.self.value", "^bert.encoder.layer.0.attention.self.query",
            r".*layer\.1\..*", r"(query|value)", "uery", "layer.0.output.dense"]
    rank_pattern = {k: rng.randint(1, 6) for k in rng.sample(keys, rng.randint(0, 4))}
    alpha_pattern = {k: rng.choice([1, 3, 8, 16, 2.5]) for k in rng.sample(keys, rng.randint(0, 4))}
    return dict(rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                use_rslora=rng.random() < 0.3, r=rng.choice([2, 4]), lora_alpha=rng.choice([4, 8]))


def test_rank_and_alpha_patterns_give_each_module_peft_s_rank_and_scale():
    """rank_pattern and alpha_pattern, drawn at random over BERT's linears (with rsLoRA now and
    then): each module's rank and scale here are those of get_peft_model's LoRA layer on it,
    the adapter tensors' shapes follow, and the keys that match no module are warned of."""
    import random
    import re
    import warnings

    from py_engine.models.lora import Linears
    from py_engine.models.lora_config import LoraConfig

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    base, modules = _tiny_bert_linears((5, 7))
    Bert = type(base)
    patterned = warned = 0
    for _ in range(40):
        fields = dict(_random_patterns(rng), target_modules=["query", "key", "value", "dense"])
        with warnings.catch_warnings(record=True) as peft_warned:
            warnings.simplefilter("always")
            peft = get_peft_model(Bert(base.config), PeftLoraConfig(task_type="SEQ_CLS", **fields))
        theirs = {n[len("base_model.model."):]: (m.r["default"], m.scaling["default"])
                  for n, m in peft.named_modules() if hasattr(m, "lora_A") and "default" in m.r}
        with warnings.catch_warnings(record=True) as we_warned:
            warnings.simplefilter("always")
            linears = Linears(modules, LoraConfig(**fields), "BERT model", adapter_prefix="bert.")
        # the keys matching no wrapped module, which both pass over with a warning
        unmatched = lambda caught: sorted(re.findall(r"(rank_pattern|alpha_pattern) keys [^[]*(\[.*?\])",
                                                     " ".join(str(w.message) for w in caught)))
        assert unmatched(we_warned) == unmatched(peft_warned), f"seed {seed}: {fields}"
        warned += bool(unmatched(we_warned))
        ours = {"bert." + m: (linears.ranks[m], linears.scalings[m]) for m in linears.targets}
        assert set(ours) == set(theirs), f"seed {seed}: {fields}"
        for name, (rank, scaling) in theirs.items():
            assert ours[name][0] == rank and math.isclose(ours[name][1], scaling, rel_tol=1e-12), \
                f"seed {seed}: {fields}, {name}: ours {ours[name]}, PEFT's {(rank, scaling)}"
            m = name[len("bert."):]
            assert linears.trainable[linears.lora_a(m)] == (rank, 7)
            assert linears.trainable[linears.lora_b(m)] == (5, rank)
        patterned += len({r for r, _ in ours.values()}) > 1
    assert patterned > 10 and warned >= 1


def test_an_adapter_with_rank_and_alpha_patterns_round_trips_with_peft(tmp_path, tiny_dir, device):
    """An adapter whose modules have ranks and alphas of their own (as PEFT's EVA
    initialisation and its conversions write them): ours gives PEFT's probabilities on both
    backends, merged on the GPU too; trained here and saved, it keeps its patterns and PEFT
    reads the same probabilities from it."""
    fields = dict(target_modules=["query", "key", "value"],
                  rank_pattern={"key": 2, r"layer\.1\.attention\.self\.value": 6},
                  alpha_pattern={"^bert.encoder.layer.0.attention.self.query": 3, "value": 16})
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 35, **fields)
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.load(tiny_dir, adapter, backend=backend, device=device))
        ours = our_probabilities(clf)
        assert np.abs(ours - theirs).max() <= 1e-5, (backend, ours, theirs)
    run(clf.runtime.merge())                            # the GPU's merged weights, per-module scale
    merged = our_probabilities(clf)
    assert clf.model.merged and np.abs(merged - theirs).max() <= 1e-5, (merged, theirs)

    clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    saved = run(clf.save(tmp_path / "trained"))
    config = json.loads((saved / "adapter_config.json").read_text())
    assert (config["rank_pattern"], config["alpha_pattern"]) == (fields["rank_pattern"], fields["alpha_pattern"])
    trained = our_probabilities(clf)
    assert np.abs(trained - theirs).max() > 1e-3                          # it trained
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - trained).max() <= 1e-5


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_an_adapter_for_a_changed_base_and_its_conversion_load(tmp_path, init):
    """PiSSA and OLoRA adapters are trained on a base with the initial adapter taken out of it,
    which PEFT redoes whenever such an adapter loads, and so is it here (train/base_init.py):
    one saved as it is, and PEFT's conversion of it into a plain LoRA adapter (twice the
    rank), give here the logits of the trained PEFT model."""
    import warnings

    from transformers import AutoModelForCausalLM

    import export_models as em
    from py_engine.train.chat import ChatModel
    from tiny_chat import tiny_chat_dir

    model_dir = tiny_chat_dir(tmp_path, family="llama", **em.CHAT_SIZES)
    torch.manual_seed(36)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft = get_peft_model(base, PeftLoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                               target_modules=em.PROJECTIONS, init_lora_weights=init))
    peft.save_pretrained(tmp_path / "start")                # the initial adapter, as PEFT's guide
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn_like(p))                         # "trained"
    peft.save_pretrained(tmp_path / "as-saved")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.save_pretrained(tmp_path / "converted",
                             path_initial_model_for_weight_conversion=str(tmp_path / "start"))
    assert json.loads((tmp_path / "converted" / "adapter_config.json").read_text())["r"] == 8
    ids = [5, 17, 2, 40, 33, 8, 21]
    peft.eval()
    with torch.no_grad():
        trained = peft(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    ours = em.our_decoder_logits(model_dir, tmp_path / "converted", ids)
    unadapted = em.our_decoder_logits(model_dir, None, ids)
    assert em.relative_error(unadapted, trained) > 1e-2                 # the adapter matters
    assert em.relative_error(ours, trained) <= 1e-5
    as_saved = em.our_decoder_logits(model_dir, tmp_path / "as-saved", ids)
    assert em.relative_error(as_saved, trained) <= 1e-5


@pytest.mark.parametrize("targets", [["query", "value", "dense"], "all-linear", ["pooler.dense"]])
def test_an_adapter_on_bert_s_pooler_gives_peft_s_probabilities(tmp_path, tiny_dir, device, targets):
    """PEFT wraps BERT's pooler (bert.pooler.dense) wherever a target names it: "dense", as in
    the common ["query", "value", "dense"], or "all-linear". Such an adapter gives PEFT's
    probabilities on both backends (merged on the GPU too), and trained here its pooler's
    adapter moves and PEFT reads what it gives."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 37, scale=0.3, target_modules=targets)
    assert "base_model.model.bert.pooler.dense.lora_A.weight" in safetensors.load(
        adapter / "adapter_model.safetensors").keys()
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    for backend in ("numpy", "gpu"):
        clf = run(TextClassifier.load(tiny_dir, adapter, backend=backend, device=device))
        ours = our_probabilities(clf)
        assert np.abs(ours - theirs).max() <= 1e-5, (backend, ours, theirs)
    run(clf.runtime.merge())
    merged = our_probabilities(clf)
    assert np.abs(merged - theirs).max() <= 1e-5, (merged, theirs)

    clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
    before = run(clf.runtime.trainable_values())["bert.pooler.dense.lora_B.weight"][1]
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    after = run(clf.runtime.trainable_values())["bert.pooler.dense.lora_B.weight"][1]
    assert np.abs(np.asarray(after) - np.asarray(before)).max() > 1e-4
    saved = run(clf.save(tmp_path / "trained"))
    trained = our_probabilities(clf)
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - trained).max() <= 1e-5


def test_an_adapter_saved_before_the_pooler_took_a_lora_still_loads(tmp_path, tiny_dir):
    """Targets naming the pooler ("dense") in an adapter saved when it could not be wrapped, so
    without tensors for it: it loads, gives what PEFT gives (PEFT leaves the missing LoRA at
    zero), and saved again it is the same adapter."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 38, target_modules=["query", "value", "dense"])
    weights = adapter / "adapter_model.safetensors"
    kept = {k: v for k, v in load_file(weights).items() if ".pooler.dense.lora_" not in k}
    save_file(kept, weights)
    theirs = peft_probabilities(tiny_dir, adapter, TEXTS)
    clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
    assert np.abs(our_probabilities(clf) - theirs).max() <= 1e-5
    saved = run(clf.save(tmp_path / "again"))
    assert set(load_file(saved / "adapter_model.safetensors")) == set(kept)


@pytest.mark.parametrize("saved", [["classifier", "pooler"], ["classifier", "LayerNorm"]])
def test_modules_to_save_beside_the_head(tmp_path, tiny_dir, saved):
    """PEFT's modules_to_save trains whole modules beside the LoRA: the pooler (trained whole
    here too) gives PEFT's probabilities; others (the layer norms) are refused, named as
    modules trained whole, with what this model trains whole."""
    adapter = peft_bert_adapter(tiny_dir, tmp_path / "adapter", 39, scale=0.3,
                                target_modules=["query", "value"], modules_to_save=list(saved))
    if saved[1] == "pooler":
        clf = run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))
        assert np.abs(our_probabilities(clf) - peft_probabilities(tiny_dir, adapter, TEXTS)).max() <= 1e-5
        return
    with pytest.raises(ValueError, match=r"modules_to_save 'LayerNorm' names bert.embeddings."
                                         r"LayerNorm, .* which would train whole beside the LoRA; "
                                         r"of this BERT model only bert.pooler and classifier \(its "
                                         r"head\) train whole here"):
        run(TextClassifier.load(tiny_dir, adapter, backend="numpy"))


@pytest.mark.parametrize("backend", ["numpy", "gpu"])
def test_a_new_adapter_trains_the_pooler_modules_to_save_names(tmp_path, tiny_dir, device, backend):
    """modules_to_save naming BERT's pooler trains it whole, from the checkpoint's values, as
    PEFT's ModulesToSaveWrapper does: trained here, saved under PEFT's names, PEFT reads our
    probabilities. An entry naming other modules (every layer norm, a layer, every "dense")
    is refused by name before anything is loaded; one naming nothing ("score") is passed
    over, as PEFT passes it over."""
    from py_engine.models.checkpoint import Checkpoint
    from py_engine.models.lora_config import LoraConfig, LoraConfigError

    lora = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier", "pooler"])
    clf = run(TextClassifier.create(tiny_dir, LABELS, lora=lora, backend=backend, seed=3,
                                    device=device))
    values = lambda: {k: np.asarray(v, np.float64)
                      for k, (_, v) in run(clf.runtime.trainable_values()).items()}
    before = values()
    pooler = np.asarray(Checkpoint.load(tiny_dir).floats("pooler.dense.weight"), np.float64)
    assert np.array_equal(before["bert.pooler.dense.weight"], pooler)
    examples = [Example(t, LABELS[i % 3]) for i, t in enumerate(TEXTS * 4)]
    run(clf.fit(examples, TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=1)))
    assert np.abs(values()["bert.pooler.dense.weight"] - pooler).max() > 1e-4
    saved = run(clf.save(tmp_path / "trained"))
    assert "base_model.model.bert.pooler.dense.weight" in load_file(saved / "adapter_model.safetensors")
    assert np.abs(peft_probabilities(tiny_dir, saved, TEXTS) - our_probabilities(clf)).max() <= 1e-5

    for entry, named in (("LayerNorm", "bert.embeddings.LayerNorm, "), ("encoder.layer.1", "bert.encoder.layer.1,"),
                         ("dense", "bert.encoder.layer.0.attention.output.dense, ")):
        lora = LoraConfig(target_modules=["query"], modules_to_save=["classifier", entry])
        with pytest.raises(LoraConfigError, match=f"modules_to_save '{entry}' names {named}"):
            run(TextClassifier.create(tiny_dir, LABELS, lora=lora, backend=backend, device=device))
    lora = LoraConfig(target_modules=["query"], modules_to_save=["classifier", "score"])
    assert run(TextClassifier.create(tiny_dir, LABELS, lora=lora)).model.train_pooler is False
