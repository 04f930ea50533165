"""PEFT's modules_to_save on a language model: its embedding and output layer trained whole
beside the LoRA, as adapters trained after adding tokens carry them (TRL's setup_chat_format
resizes the vocabulary; the adapter saves both tables, the tokenizer is saved beside it). On an
encoder classifier it names what of its head trains whole, and on T5 nothing (named_whole).

A family's config takes SavedModulesConfig and names its whole_modules (modules_to_save's
entries name them by PEFT's rule: saved_modules); models/decoder.py trains them
(DecoderModel.whole), the chat model reads the adapter's own tokenizer
(train/chat.py), and the merged exports carry the tables, the vocabulary and the untied head.
"""

import copy

from .bert_config import ConfigError
from .lora_config import LoraConfigError

HEAD = "lm_head"                # the output layer's module, in every family that saves it
HEAD_WEIGHT = HEAD + ".weight"


def _saves(entry, module):
    """Whether modules_to_save entry `entry` names `module` (a full name): PEFT's rule, the
    name whole or its last dotted parts."""
    return module == entry or module.endswith("." + entry)


def check_saved_modules(entries, modules, where=""):
    """LoraConfigError unless every modules_to_save entry names one of `modules` (full names:
    a language model's that may train whole)."""
    unread = [e for e in entries if not any(_saves(e, m) for m in modules)]
    if unread:
        readable = (f"only {', '.join(modules)} of this model may train whole here" if modules
                    else "only the LoRA tensors of this model's adapters are read here")
        raise LoraConfigError(f"{where}modules_to_save {unread!r} trains those modules in full "
                              f"beside the LoRA (such as a new embedding or output layer); {readable}")


def named_whole(entries, names, whole, family):
    """The modules of `whole` (full names: those a classifier may train whole, its head's;
    none in T5) that modules_to_save `entries` name by PEFT's rule for them
    (ModulesToSaveWrapper wraps every module whose full name ends with an entry: "classifier"
    names "pre_classifier" too), one naming a module inside one of them naming that one. An entry naming any other module
    of the model, whose tensors' full names are `names`, would train it whole beside the
    LoRA, which is not built here: LoraConfigError naming it. An entry naming nothing is
    passed over, as PEFT passes it over ("score", PEFT's default, on an encoder)."""
    modules = {name.rsplit(".", i)[0] for name in names for i in range(1, name.count(".") + 1)}
    inside = lambda module, w: module == w or module.startswith(w + ".")
    named = set()
    for entry in entries:
        hits = sorted(m for m in modules if m.endswith(entry))
        others = [m for m in hits if not any(inside(m, w) for w in whole)]
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            trains = (f"of this {family} only {' and '.join(whole)} (its head) train whole here"
                      if whole else f"nothing of this {family} trains whole here")
            raise LoraConfigError(f"modules_to_save {entry!r} names {shown}, which would train "
                                  f"whole beside the LoRA; {trains}, and LoRA may wrap the "
                                  "others (target_modules)")
        named.update(w for w in whole if any(inside(m, w) for m in hits))
    return named


def saved_modules(lora, modules):
    """Those of `modules` (full names) that `lora`'s modules_to_save trains whole."""
    return [m for m in modules if any(_saves(e, m) for e in lora.modules_to_save)]


class SavedModulesConfig:
    """What a language model's config says of modules_to_save. whole_modules: {module: its
    tensors} that an adapter may train whole (the embedding's module first; none for T5)."""

    whole_modules = {}
    head_copies_embedding = False   # the head trains as a copy of the tied embedding (with_saved)
    saved_fields = {}       # config.json's fields with_saved changed

    def with_saved(self, modules, vocab_size=None, keep_tied=False):
        """This config for a model whose adapter trains `modules` (of whole_modules) whole.
        PEFT trains a copy of each such module; where the head is tied to the embedding, the
        head's copy is a tensor of its own (the head untied here, starting from the embedding:
        head_copies_embedding), unless `keep_tied` (PEFT's ensure_weight_tying: one table for
        both). vocab_size: the rows of the adapter's saved embedding and head, where the
        vocabulary was resized (tokens added), which needs both of them saved."""
        if not modules and vocab_size in (None, self.vocab_size):
            return self
        embedding = next(iter(self.whole_modules))
        split = self.tie_word_embeddings and not keep_tied
        if split and embedding in modules and HEAD not in modules:
            raise ConfigError("modules_to_save trains the embedding whole while the output layer, "
                              "tied to it, stays the checkpoint's: PEFT's split of a tied pair is "
                              "not read here; save 'lm_head' too (or set ensure_weight_tying)")
        one_table = self.tie_word_embeddings and keep_tied
        if vocab_size not in (None, self.vocab_size) and len(set(modules)) < 2 and not one_table:
            raise ConfigError(f"the adapter's vocabulary has {vocab_size} tokens and the "
                              f"checkpoint's {self.vocab_size}: a resized vocabulary needs both "
                              "the embedding and the output layer in modules_to_save")
        config = copy.copy(self)
        config.vocab_size = vocab_size or self.vocab_size
        config.saved_fields = {"vocab_size": config.vocab_size} \
            if config.vocab_size != self.vocab_size else {}
        if split and HEAD in modules:
            config.tie_word_embeddings = False
            config.head_copies_embedding = True
            config.saved_fields["tie_word_embeddings"] = False
        return config

    def untied(self):
        """This config with its output layer a table of its own (a merged model whose LoRA
        changed one of a tied pair)."""
        if not self.tie_word_embeddings:
            return self
        config = copy.copy(self)
        config.tie_word_embeddings = False
        config.saved_fields = dict(self.saved_fields, tie_word_embeddings=False)
        return config


def saved_vocabulary(config, tensors):
    """The rows of the embedding or output layer an adapter's tensors carry (PEFT's
    modules_to_save: a resized vocabulary's), or None."""
    table = next((tensors[n] for n in (config.embedding_tables[0], HEAD_WEIGHT) if n in tensors),
                 None)
    return None if table is None or not config.whole_modules else int(table[0][0])
