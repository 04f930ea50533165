"""`py-engine train` on encoder-decoders: a T5 checkpoint is recognised from config.json and
pointed to the Python API (its Unigram tokenizer is not one the command line reads); another
encoder-decoder is refused naming the supported one, rather than taken for a BERT encoder."""

import json

from t5_checkpoints import tiny_t5
from test_cli_classifier import cli, write_jsonl


def test_t5_is_recognised_and_pointed_to_the_python_api(tmp_path):
    tiny_t5(tmp_path / "t5")
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"input": "a", "target": "b"}])
    out = cli("train", "--model", tmp_path / "t5", "--data", data, "--out", tmp_path / "x", check=False)
    assert out.returncode == 2
    assert "T5 encoder-decoders train through the Python API (py_engine.train.seq2seq.Seq2SeqModel" \
           in out.stderr
    assert not (tmp_path / "x").exists()


def test_another_encoder_decoder_is_refused_naming_t5(tmp_path):
    model = tmp_path / "bart"
    tiny_t5(model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="bart", architectures=["BartForConditionalGeneration"])
    (model / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"input": "a", "target": "b"}])
    out = cli("train", "--model", model, "--data", data, "--out", tmp_path / "x", check=False)
    assert out.returncode == 2
    assert "model_type 'bart' is an encoder-decoder py_engine does not run; supported " \
           "encoder-decoders: T5 (t5)" in out.stderr
