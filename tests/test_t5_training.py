"""Sequence-to-sequence data and T5 LoRA training through the one trainer (Seq2SeqModel, the
NumPy runtime): records of each format mapped onto (input, target) pairs, batches as
transformers' T5 reads labels, the first step's loss equal to transformers', a run that learns
its pairs, and its adapter loading in PEFT with the engine's logits."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel

from conftest import run
from py_engine.data.classification import DataError
from py_engine.data.seq2seq import (Seq2SeqExample, Seq2SeqIds, encode_seq2seq_examples, parse_seq2seq_jsonl,
                                    read_seq2seq_jsonl)
from py_engine.labels import IGNORE_LABEL
from py_engine.models.lora_config import LoraConfig
from py_engine.train.config import CausalTrainConfig
from py_engine.train.chat import ChatModel
from py_engine.train.seq2seq import Seq2SeqModel
from py_engine.train.tasks import Seq2SeqTask
from t5_checkpoints import tiny_t5
from t5_tokenizer import t5_dir, t5_tokenizer
from test_t5_reference import relative

PAIRS = [("translate to german: hello world", "hallo welt"),
         ("summarize: the cat sat on the mat", "a cat on a mat"),
         ("question: what is two plus two? answer", "four"),
         ("the quick brown fox", "jumps over the lazy dog")]


def test_records_map_onto_pairs(tmp_path):
    lines = [json.dumps(r) for r in (
        {"input": "a", "target": "b"},
        {"source": "c", "output": "d"},
        {"instruction": "Translate.", "input": "hello", "output": "hallo"},
        {"instruction": "Say hi.", "output": "hi"},
        {"prompt": "p", "completion": "q"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "t"}]},
        {"messages": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
                      {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]})]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n\n")
    got = [(e.input, e.target) for e in read_seq2seq_jsonl(tmp_path / "d.jsonl")]
    assert got == [("a", "b"), ("c", "d"), ("Translate.\n\nhello", "hallo"), ("Say hi.", "hi"),
                   ("p", "q"), ("s\nu", "t"), ("user: u1\nassistant: a1\nuser: u2", "a2")]


@pytest.mark.parametrize("record, message", [
    ({"text": "plain"}, r"d:1: a \"text\" record has no target"),
    ({"input": "a", "target": 3}, "d:1: 'target' must be a string, got int"),
    ({"input": "a", "target": "b", "output": "c"}, "d:1: give one target field"),
    ({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
     "d:1: the conversation must end on an assistant message"),
    ({"foo": 1}, "d:1: not a known record format")])
def test_bad_records_name_the_line(record, message):
    with pytest.raises(DataError, match=message):
        parse_seq2seq_jsonl([json.dumps(record)], "d")


def test_batches_are_transformers_labels_and_shifted_decoder_ids(tmp_path):
    hf = tiny_t5(tmp_path)
    tok = t5_tokenizer()
    encoded, skipped = encode_seq2seq_examples([Seq2SeqExample(*p) for p in PAIRS], tok)
    assert skipped == 0 and all(e.labels[-1] == 1 for e in encoded)      # </s> ends each side
    batch = Seq2SeqTask(pad_id=0, decoder_start_id=0).batch(encoded, [0, 1, 2], 8, 64)
    targets = [e.labels + [-100] * (batch.T - len(e.labels)) for e in encoded[:3]]
    assert batch.decoder_ids == hf._shift_right(torch.as_tensor(targets)).tolist()
    assert batch.labels == [IGNORE_LABEL if y == -100 else y for row in targets for y in row]
    assert batch.mask[2] == [1] * len(encoded[2].ids) + [0] * (batch.S - len(encoded[2].ids))
    half = batch.rows(1, 3)
    assert half.decoder_ids == batch.decoder_ids[1:] and half.labels == batch.labels[batch.T:]


@pytest.mark.parametrize("targets", [["q", "v", "wo"], ["q", "v", "wo", "lm_head"]])
def test_training_learns_the_pairs_and_its_adapter_loads_in_peft(tmp_path, targets):
    """With a LoRA on the layers, and on FLAN-T5's head of its own too (a fresh pair: A drawn,
    B zeros, as PEFT starts a linear's)."""
    hf = tiny_t5(tmp_path / "model")
    tok = t5_tokenizer()
    encoded, _ = encode_seq2seq_examples([Seq2SeqExample(*p) for p in PAIRS], tok)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=targets)
    model = run(Seq2SeqModel.create(tmp_path / "model", tok, lora=lora, seed=3))
    assert model.model.lora.task_type == "SEQ_2_SEQ_LM"
    history = run(model.fit(encoded, CausalTrainConfig(epochs=60, lr=1e-2, batch_size=4,
                                                        max_length=64)))
    # Step 1 runs the base model (lora_B starts at 0): transformers' loss on the same pairs.
    batch = Seq2SeqTask().batch(encoded, list(range(4)), 8, 64)
    labels = np.asarray([[y if y != IGNORE_LABEL else -100 for y in batch.labels[i * batch.T:(i + 1) * batch.T]]
                         for i in range(4)])
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor(batch.ids), attention_mask=torch.as_tensor(batch.mask),
                  labels=torch.as_tensor(labels)).loss.item()
    assert abs(history[0].loss - want) <= 1e-5 * want          # float32 training
    assert history[-1].loss < 0.05 * history[0].loss
    for source, target in PAIRS:
        result = run(model.generate(source, max_new_tokens=32))
        assert result.text == target and result.finish_reason == "eos"

    run(model.save(tmp_path / "adapter"))
    from py_engine.formats.peft_adapter import load_adapter

    saved = load_adapter(tmp_path / "adapter")[1]
    assert ("lm_head.lora_B.weight" in saved) is ("lm_head" in targets)
    assert all(np.abs(np.asarray(v)).max() > 1e-4 for k, (_, v) in saved.items() if "lora_B" in k)
    peft = PeftModel.from_pretrained(tiny_t5(tmp_path / "base").float(), tmp_path / "adapter").double().eval()
    ids = tok.encode(PAIRS[0][0]).ids
    decoder = model.decoder()
    got = [run(decoder.prefill(ids))] + [run(decoder.step(t)) for t in tok.encode(PAIRS[0][1]).ids]
    with torch.no_grad():
        logits = peft(input_ids=torch.as_tensor([ids]),
                      decoder_input_ids=torch.as_tensor([[0] + tok.encode(PAIRS[0][1]).ids])).logits[0].numpy()
    assert relative(np.stack(got), logits) <= 1e-5                # float32 engine, float32 norm variance

    again = run(Seq2SeqModel.load(tmp_path / "model", tok, tmp_path / "adapter"))
    assert run(again.generate(PAIRS[1][0], max_new_tokens=32)).text == PAIRS[1][1]


def test_without_a_tokenizer_the_checkpoints_own_is_read_and_trains(tmp_path):
    """No tokenizer given: the checkpoint's Unigram tokenizer.json through the engine's own
    tokenizer gives Hugging Face tokenizers' ids for every pair, and the model learns them."""
    model_dir, hf_tok = t5_dir(tmp_path / "model")
    model = run(Seq2SeqModel.create(model_dir, seed=3))
    examples = [Seq2SeqExample(*p) for p in PAIRS]
    ours, _ = encode_seq2seq_examples(examples, model.tokenizer)
    theirs, _ = encode_seq2seq_examples(examples, hf_tok)
    assert [(e.ids, e.labels) for e in ours] == [(e.ids, e.labels) for e in theirs]
    history = run(model.fit(ours, CausalTrainConfig(epochs=30, lr=1e-2, batch_size=4)))
    assert history[-1].loss < 0.2 * history[0].loss
    assert run(model.generate(PAIRS[2][0], max_new_tokens=8)).text == \
        hf_tok.decode(theirs[2].labels, skip_special_tokens=True)


def test_modes_other_than_the_models_and_decoders_are_refused(tmp_path):
    from gpt2_checkpoints import tiny_gpt2

    tiny_t5(tmp_path / "t5")
    model = run(Seq2SeqModel.create(tmp_path / "t5", t5_tokenizer(), mode="full"))
    with pytest.raises(ValueError, match="mode 'lora' needs LoRA; this model already trains every weight"):
        run(model.fit([Seq2SeqIds([5, 6], [7])], CausalTrainConfig(mode="lora")))
    with pytest.raises(ValueError, match="mode must be one of"):
        run(Seq2SeqModel.create(tmp_path / "t5", t5_tokenizer(), mode="partial"))
    with pytest.raises(ValueError, match="is a t5 encoder-decoder: use Seq2SeqModel"):
        run(ChatModel.create(tmp_path / "t5"))
    from py_engine.generate import NumpyDecoder
    with pytest.raises(ValueError, match="t5 is an encoder-decoder: generate with NumpySeq2SeqDecoder"):
        NumpyDecoder.load(tmp_path / "t5")
    tiny_gpt2(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="is a gpt2 decoder, not an encoder-decoder: use ChatModel"):
        run(Seq2SeqModel.create(tmp_path / "gpt2", t5_tokenizer()))
