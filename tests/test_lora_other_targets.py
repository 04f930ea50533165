"""A LoRA target naming a module LoRA does not wrap here (a norm; an encoder's or T5's embedding
or output layer: a decoder's are wrapped, test_lora_tables) is refused by name in every family,
as a list entry or matched by a regular expression; PEFT wraps the embedding and the output
layer (and refuses a norm), so passing such a target over, as a target naming nothing is passed
over, would train something other than asked."""

import pytest

import peft_oracle as po
from conftest import run
from t5_checkpoints import tiny_t5
from tiny_chat import tiny_chat_dir
from py_engine.models.lora import LoraTargetError
from py_engine.models.lora_config import LoraConfig
from py_engine.train.chat import ChatModel
from py_engine.train.classifier import TextClassifier
from py_engine.train.seq2seq import Seq2SeqModel


def make(tmp_path, family):
    """(checkpoint directory, its model's maker for a LoraConfig)."""
    if family in ("llama", "qwen2"):        # Qwen2's tiny one ties its head: no lm_head.weight
        path = tiny_chat_dir(tmp_path, family=family)
        return lambda lora: ChatModel.create(path, lora=lora)
    if family == "t5":
        tiny_t5(tmp_path / "t5")
        return lambda lora: Seq2SeqModel.create(tmp_path / "t5", tokenizer=None, lora=lora)
    path = {"bert": po.tiny_bert_dir, "modernbert": po.tiny_modernbert_dir}[family](tmp_path / family)
    return lambda lora: TextClassifier.create(path, ["a", "b"], lora=lora)


@pytest.mark.parametrize("family, targets, named", [
    ("llama", ["q_proj", "norm"], "model.norm"),
    ("llama", r".*(q_proj|embed_tokens|\.norm)", "model.norm"),
    ("qwen2", ["q_proj", "input_layernorm"], "model.layers.0.input_layernorm"),
    ("bert", ["query", "position_embeddings"], "bert.embeddings.position_embeddings"),
    ("bert", ["query", "LayerNorm"], "bert.embeddings.LayerNorm"),
    ("modernbert", ["Wqkv", "final_norm"], "model.final_norm"),
    ("t5", ["q", "shared"], "shared"),
    ("t5", ["q", "relative_attention_bias"], "decoder.block.0.layer.0.SelfAttention.relative_attention_bias"),
    ("t5", ["q", "embed_tokens"], "decoder.embed_tokens, encoder.embed_tokens"),
])
def test_a_target_naming_a_module_lora_does_not_wrap_is_refused(tmp_path, family, targets, named):
    create = make(tmp_path, family)
    with pytest.raises(LoraTargetError, match=rf"name {named}\b.*, which LoRA does not wrap here "
                                              r"\(it wraps this .*'s linear layers: .*\); an "
                                              r"embedding or output layer trains whole beside the "
                                              r"LoRA with modules_to_save"):
        run(create(LoraConfig(r=4, lora_alpha=8, target_modules=targets)))


@pytest.mark.parametrize("family, targets", [("llama", ["q_proj", "query", "wo"]),
                                             ("bert", ["query", "q_proj", "dense"]),
                                             ("t5", ["q", "q_proj", "query"])])
def test_targets_naming_no_module_are_still_passed_over(tmp_path, family, targets):
    """Lists written for several families name modules this one lacks: passed over, as PEFT
    passes them over, beside the ones it wraps (BERT's pooler included through "dense")."""
    model = run(make(tmp_path, family)(LoraConfig(r=4, lora_alpha=8, target_modules=targets)))
    assert model.model.targets
