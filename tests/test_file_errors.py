"""Malformed files are messages naming the file, never a traceback from deep inside: JSON that
is invalid, nested too deeply, NaN, not UTF-8 or the wrong kind of value; tokenizer.json,
vocab.txt and labels.json; a chat template that refuses a conversation; head_config.json, whose
absence is never a silent change of pooling."""

import json

import pytest

from py_engine.data.chat import (ChatExample, DataError, encode_chat_examples, parse_chat_jsonl,
                                 read_chat_jsonl, template_for)
from py_engine.data.classification import parse_jsonl
from py_engine.formats.head_config import HEAD_CONFIG, HeadConfigError, resolve_pooling
from py_engine.formats.json_file import JsonFileError, read_json, read_json_object
from py_engine.formats.output_dir import MARKER
from py_engine.formats.peft_adapter import load_adapter, save_adapter
from py_engine.tokenizers import BPETokenizer, ChatTemplate, WordPieceTokenizer
from py_engine.tokenizers.chat_template import TemplateError
from test_output_dir import CONFIG, TENSORS

DEEP = "[" * 100_000 + "]" * 100_000

BAD_JSON = {
    "invalid": ('{"a": ', "not valid JSON"),
    "deep": (DEEP, "nested too deeply"),
    "nan": ('{"lora_alpha": NaN}', "NaN is not a JSON value"),
    "long int": ('{"r": ' + "9" * 5000 + "}", "not usable JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_json_errors_name_the_file(tmp_path, case):
    text, reason = BAD_JSON[case]
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(JsonFileError, match=reason) as e:
        read_json(path)
    assert str(path) in str(e.value)


def test_json_object_kind_encoding_and_missing_files(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text("[1, 2]")
    with pytest.raises(JsonFileError, match=f"{path} must hold a JSON object, got a list"):
        read_json_object(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(JsonFileError, match=f"{path}: not UTF-8"):
        read_json_object(path)
    with pytest.raises(JsonFileError, match="no file at"):
        read_json_object(tmp_path / "missing.json")
    with pytest.raises(JsonFileError, match="is not a file"):
        read_json_object(tmp_path)


def fine_line(parse, text):
    """A good line for `parse`: chat data has no label (a label makes it classifier data)."""
    return json.dumps({"text": text, "label": "a"} if parse is parse_jsonl else {"text": text})


@pytest.mark.parametrize("parse", [parse_jsonl, parse_chat_jsonl])
def test_data_lines_nested_too_deeply_name_file_and_line(parse):
    lines = [fine_line(parse, "fine"), DEEP]
    with pytest.raises(DataError, match="data.jsonl:2: not usable JSON"):
        parse(lines, "data.jsonl")


def test_adapter_files_of_the_wrong_kind_are_named(tmp_path):
    adapter = tmp_path / "adapter"
    save_adapter(adapter, CONFIG, TENSORS, labels=["a", "b"])
    for name, text, reason in [("adapter_config.json", '"r=8"', "must hold a JSON object"),
                               ("adapter_config.json", DEEP, "nested too deeply"),
                               ("labels.json", '{"a": 1}', "must hold a JSON list of label names"),
                               ("labels.json", '["a", 1]', "must hold a JSON list of label names"),
                               ("labels.json", '["a", "a"]', "must name distinct labels"),
                               ("labels.json", "[", "not valid JSON")]:
        saved = (adapter / name).read_text()
        (adapter / name).write_text(text)
        with pytest.raises(ValueError, match=reason) as e:
            load_adapter(adapter)
        assert str(adapter / name) in str(e.value)
        (adapter / name).write_text(saved)


def test_tokenizer_files_name_the_file(tmp_path):
    from tiny_chat import train_tokenizer

    good = json.loads(train_tokenizer().to_str())
    cases = [("{", "not valid JSON"),
             (json.dumps(dict(good, model=[])), '"model" must be an object'),
             (json.dumps(dict(good, added_tokens=[5])), r'"added_tokens"\[0\]'),
             (json.dumps(dict(good, pre_tokenizer="ByteLevel")), '"pre_tokenizer" must be an object'),
             (json.dumps(dict(good, model=dict(good["model"], merges=7))), '"model.merges"'),
             (json.dumps(dict(good, model=dict(good["model"], type="Unigram"))),
              'Unigram "model.vocab" must be a non-empty list of \\[piece, score\\]'),
             (json.dumps(dict(good, model=dict(good["model"], type="WordLevel"))), "'WordLevel'")]
    path = tmp_path / "tokenizer.json"
    for text, reason in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=reason) as e:
            BPETokenizer.from_file(path)
        assert str(path) in str(e.value), e.value
    path.write_text(json.dumps(dict(good, decoder=[1])))
    with pytest.raises(ValueError, match=f'{path}: "decoder" must be an object'):
        WordPieceTokenizer.from_file(path)
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(ValueError, match=f"{vocab}: not UTF-8"):
        WordPieceTokenizer.from_vocab(vocab)
    vocab.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=f"{vocab}: not a BERT vocabulary"):
        WordPieceTokenizer.from_vocab(vocab)


REFUSING = ("{% for m in messages %}{% if m['role'] == 'system' %}"
            "{{ raise_exception('System messages are not supported') }}{% endif %}"
            "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")


def test_a_template_that_refuses_names_itself_and_the_example(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": REFUSING}))
    template = ChatTemplate.from_pretrained(tmp_path)
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"}]
    with pytest.raises(TemplateError) as e:
        template.render(messages)
    assert isinstance(e.value, ValueError)      # a user error, not a bug
    assert e.value.message == "System messages are not supported"
    assert str(tmp_path / "tokenizer_config.json") in str(e.value)
    examples = parse_chat_jsonl([json.dumps({"messages": messages})], "chats.jsonl")
    with pytest.raises(DataError, match="chats.jsonl:1: the chat template .*System messages"):
        encode_chat_examples(examples, train_tokenizer_once(), template, skip_untrainable=True)
    (tmp_path / "chat_template.jinja").write_text("{% for %}")
    with pytest.raises(ValueError, match="chat_template.jinja"):
        ChatTemplate.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": 1}]}))
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="tokenizer_config.json: a list of chat templates"):
        ChatTemplate.from_pretrained(tmp_path)


def train_tokenizer_once():
    from tiny_chat import train_tokenizer

    return BPETokenizer.from_json(train_tokenizer().to_str())


def test_plain_text_needs_no_template(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "plain text"}\n')
    texts = read_chat_jsonl(tmp_path / "data.jsonl")
    # A base checkpoint: no tokenizer_config.json, no chat template, no ChatML tokens.
    assert template_for(texts, tmp_path, train_tokenizer_once()) is None
    encoded, _ = encode_chat_examples(texts, train_tokenizer_once(), None)
    assert encoded[0].ids == encoded[0].labels and len(encoded[0].ids) > 1
    chat = [ChatExample(messages=[{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": "b"}])]
    given = ChatTemplate(REFUSING)
    assert template_for(chat + texts, tmp_path, None, given) is given
    assert template_for(chat, tmp_path, None).render(chat[0].messages).startswith("<|im_start|>")


def head_adapter(tmp_path, pooling=None, marker=True):
    adapter = tmp_path / "adapter"
    extra = {HEAD_CONFIG: {"pooling": pooling}} if pooling else None
    save_adapter(adapter, CONFIG, TENSORS, labels=["a", "b"], extra_json=extra)
    if not marker:
        (adapter / MARKER).unlink()
    return adapter


def test_py_engine_classifier_adapters_always_record_their_pooling(tmp_path):
    adapter = head_adapter(tmp_path)
    assert json.loads((adapter / HEAD_CONFIG).read_text()) == {"pooling": "cls"}
    assert resolve_pooling(adapter) == ("cls", None)
    chat = save_adapter(tmp_path / "chat", dict(CONFIG, task_type="CAUSAL_LM"), TENSORS)
    assert not (chat / HEAD_CONFIG).exists()       # decoders have no head


def test_pooling_is_never_changed_silently(tmp_path):
    mean = head_adapter(tmp_path, "mean")
    assert resolve_pooling(mean) == ("mean", None)
    assert resolve_pooling(mean, "mean") == ("mean", None)
    with pytest.raises(HeadConfigError, match="trained with mean pooling, not cls"):
        resolve_pooling(mean, "cls")
    (mean / HEAD_CONFIG).unlink()               # lost: py_engine wrote it, so that is an error
    with pytest.raises(HeadConfigError, match=f"{HEAD_CONFIG} is missing"):
        resolve_pooling(mean)
    assert resolve_pooling(mean, "mean") == ("mean", None)       # unless the user says


def test_peft_adapters_without_head_config_are_cls_with_a_note(tmp_path):
    peft = head_adapter(tmp_path, marker=False)
    (peft / HEAD_CONFIG).unlink()
    pooling, note = resolve_pooling(peft)
    assert pooling == "cls" and f"{peft} has no {HEAD_CONFIG}" in note
    assert resolve_pooling(peft, "mean") == ("mean", None)


@pytest.mark.parametrize("text, reason", [("[]", "must hold a JSON object, got a list"),
                                          ('{"pooling": "max"}', "unknown pooling 'max'"),
                                          (DEEP, "nested too deeply")])
def test_bad_head_config_is_named(tmp_path, text, reason):
    adapter = head_adapter(tmp_path)
    (adapter / HEAD_CONFIG).write_text(text)
    with pytest.raises(ValueError, match=reason) as e:
        resolve_pooling(adapter)
    assert str(adapter / HEAD_CONFIG) in str(e.value)


@pytest.mark.parametrize("field, value, reason", [
    ("target_modules", 5, "target_modules must be a list of module names, got 5"),
    ("target_modules", ["query", 5], "target_modules must be a list of module names"),
    ("target_modules", ["all-linear"], "names a module 'all-linear'; PEFT's keyword for every linear layer is the string"),
    ("target_modules", [".*query"], "regular expressions are not supported"),     # in a list
    ("target_modules", "(query", "target_modules '.query' is not a regular expression"),
    ("exclude_modules", 5, "exclude_modules must be a list of module names, got 5"),
    ("layers_to_transform", [0, "1"], "layers_to_transform must be a layer index or a list of them"),
    ("layers_pattern", "layer", "layers_pattern needs layers_to_transform"),
    ("modules_to_save", 5, "modules_to_save must be a list of module names"),
    ("lora_dropout", "x", "lora_dropout must be a number in"),
    ("fan_in_fan_out", "no", "fan_in_fan_out must be true or false, got 'no'"),
    ("use_rslora", 1, "use_rslora must be true or false"),
    ("r", True, "r must be a positive int, got True"),
    ("rank_pattern", ["query"], "rank_pattern must be an object of module name patterns"),
    ("rank_pattern", {"query": 2.0}, r"rank_pattern\['query'\] must be a positive int, got 2.0"),
    ("rank_pattern", {"(query": 2}, "rank_pattern key '.query' is not a regular expression"),
    ("alpha_pattern", {"value": float("inf")}, r"alpha_pattern\['value'\] must be a positive finite"),
    ("alpha_pattern", {"value": 0}, r"alpha_pattern\['value'\] must be a positive finite"),
])
def test_adapter_config_fields_of_the_wrong_kind_are_named(field, value, reason):
    from py_engine.models.lora_config import LoraConfig, LoraConfigError
    with pytest.raises(LoraConfigError, match=reason):
        LoraConfig.from_peft_dict(dict(CONFIG, **{field: value}))
    assert LoraConfig.from_peft_dict(CONFIG).target_modules == ["query"]


def test_adapter_config_options_are_read_refused_or_passed_over_as_they_change_the_adapter():
    """Options that change what the adapter computes and are not built here are refused by
    name (layer replication, an init PEFT applies to the base weights as it loads but for
    pissa's and olora's, lora_bias with DoRA as PEFT refuses it); those that only drew the first values, or that PEFT itself
    drops (runtime_config), are passed over; DoRA and lora_bias are read."""
    from py_engine.models.lora_config import LoraConfig, LoraConfigError
    assert LoraConfig.from_peft_dict(dict(CONFIG, use_dora=True)).use_dora is True
    assert LoraConfig.from_peft_dict(dict(CONFIG, lora_bias=True)).lora_bias is True
    for fields in ({"lora_bias": True, "use_dora": True}, {"layer_replication": [[0, 2]]},
                   {"init_lora_weights": "pissa_niter_4"},
                   {"init_lora_weights": "LoftQ"}, {"init_lora_weights": "corda"}):
        with pytest.raises(LoraConfigError, match=next(iter(fields))):
            LoraConfig.from_peft_dict(dict(CONFIG, **fields))
    for fields in ({"init_lora_weights": False}, {"init_lora_weights": "gaussian"},
                   {"init_lora_weights": "eva", "eva_config": None},
                   {"init_lora_weights": "orthogonal"},
                   {"runtime_config": {"ephemeral_gpu_offload": False}}):
        assert LoraConfig.from_peft_dict(dict(CONFIG, **fields)).target_modules == ["query"]


@pytest.mark.parametrize("field, value, reason", [
    ("type_vocab_size", None, "'type_vocab_size' is null; it should be int .or left out for 2."),
    ("max_position_embeddings", None, "'max_position_embeddings' is null"),
    ("vocab_size", None, "config.json is missing 'vocab_size'"),
    ("num_hidden_layers", 1.5, "'num_hidden_layers' should be int, got 1.5"),
    ("num_hidden_layers", True, "'num_hidden_layers' should be int, got True"),
    ("hidden_act", 3, "'hidden_act' should be str, got 3"),
])
def test_bert_config_fields_of_the_wrong_kind_are_named(field, value, reason):
    from py_engine.models.bert_config import BertConfig, ConfigError
    good = dict(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=16, layer_norm_eps=1e-12, hidden_dropout_prob=0)
    assert BertConfig(**good).hidden_dropout_prob == 0.0
    with pytest.raises(ConfigError, match=reason):
        BertConfig(**dict(good, **{field: value}))


@pytest.mark.parametrize("family, why", [
    # ALBERT with two groups of layers (no released checkpoint has them)
    ("albert", "'num_hidden_groups' \\(2\\): ALBERT with other than one group of one layer"),
    ("megatron-bert", "it normalises before each sub-layer"),
])
def test_encoders_that_are_not_bert_are_refused_by_name(tmp_path, family, why):
    """Checkpoints transformers writes for encoders with BERT's tensor names that compute
    otherwise, or need a layer not read here, are refused by name, by the Python API and the CLI,
    before any work, rather than read as BERT."""
    import transformers

    from py_engine.cli import main
    from py_engine.models.checkpoint import Checkpoint, CheckpointError

    sizes = dict(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=40)
    classes = {"albert": "Albert", "megatron-bert": "MegatronBert"}
    config_class = getattr(transformers, classes[family] + "Config")
    if family == "albert":
        sizes.update(embedding_size=8, num_hidden_layers=2, num_hidden_groups=2)
    model = getattr(transformers, classes[family] + "Model")(config_class(**sizes))
    model.save_pretrained(tmp_path / family)
    with pytest.raises(CheckpointError, match=why):
        Checkpoint.load(tmp_path / family)
    code = main(["train", "--model", str(tmp_path / family), "--data", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "out")])
    assert code != 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_checkpoints_with_non_finite_weights_or_more_layers_than_their_config_are_named(
        tmp_path, family):
    """A NaN in the base weights would otherwise surface as a diverged run or an unusable
    adapter, and layers config.json leaves out would be dropped without a word."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from peft_oracle import tiny_bert_dir
    from py_engine.models.checkpoint import Checkpoint, CheckpointError, DecoderCheckpoint
    from tiny_chat import tiny_chat_dir
    good = tiny_bert_dir(tmp_path / "bert") if family == "bert" else \
        tiny_chat_dir(tmp_path, family="qwen2")
    load = Checkpoint.load if family == "bert" else DecoderCheckpoint.load
    assert load(good).names()
    rng = np.random.default_rng()
    tensors = load_file(good / "model.safetensors")
    name = rng.choice(sorted(n for n in tensors if ".1." in n and n.endswith("weight")))
    for value, shown in ((np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")):
        bad = tmp_path / f"bad-{shown}"
        shutil.copytree(good, bad)
        broken = dict(tensors)
        broken[name] = tensors[name].copy()
        index = int(rng.integers(broken[name].size))
        broken[name].reshape(-1)[index] = value
        save_file(broken, bad / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match=f"holds {shown} .element {index}.; the "
                                                  "checkpoint is damaged"):
            load(bad)
    fewer = tmp_path / "fewer"
    shutil.copytree(good, fewer)
    config = json.loads((fewer / "config.json").read_text())
    config["num_hidden_layers"] = 1
    config.pop("layer_types", None)
    (fewer / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"layers?\.1\..* is in a layer config.json does not "
                                              "have: the checkpoint has more layers"):
        load(fewer)


@pytest.mark.parametrize("parse", [parse_jsonl, parse_chat_jsonl])
def test_a_lone_surrogate_is_named_with_its_line_before_any_work(parse):
    fine = fine_line(parse, "a pair \ud83d\ude00 is an emoji")    # json.dumps escapes both
    assert "\\ud83d\\ude00" in fine and "\U0001F600" in str(parse([fine], "data.jsonl"))
    for field in ("text", "label") if parse is parse_jsonl else ("text",):
        bad = json.dumps({**json.loads(fine_line(parse, "x")), field: "half \ud800 of a pair"})
        with pytest.raises(DataError, match=r"data.jsonl:2: not usable JSON \(a lone surrogate "
                                            r"\\ud800, half of a UTF-16 pair, is not text\)"):
            parse([fine, bad], "data.jsonl")


def test_an_imported_record_with_a_lone_surrogate_is_named():
    from py_engine.data.importers.text import record_from_object
    assert record_from_object({"text": "\U0001F600", "label": "a"}, "x.json:3", {}).text == \
        "\U0001F600"
    for obj in ({"text": "\udc00", "label": "a"},
                {"messages": [{"role": "user", "content": "hi \ud800"},
                              {"role": "assistant", "content": "ok"}]},
                {"kind": "causal_lm", "source": "text", "text": "b \udfff"}):
        with pytest.raises(DataError, match=r"x.json:3: a lone surrogate \\ud[89a-f][0-9a-f]{2}, "
                                            "half of a UTF-16 pair, is not text"):
            record_from_object(obj, "x.json:3", {})


def test_a_token_the_model_has_no_row_for_is_refused_on_the_text_that_uses_it(tmp_path):
    """Gemma 3's tokenizer.json holds <image_soft_token> past its 262,144 rows: the model
    loads, texts without it encode, and one with it is refused instead of reading past the
    embedding table."""
    from conftest import run
    from py_engine.train.chat import ChatModel
    from tiny_chat import tiny_chat_dir
    model = tiny_chat_dir(tmp_path, family="qwen2")
    spec = json.loads((model / "tokenizer.json").read_text())
    rows = json.loads((model / "config.json").read_text())["vocab_size"]
    spec["added_tokens"].append({"id": rows, "content": "<|tool|>", "single_word": False,
                                 "lstrip": False, "rstrip": False, "normalized": False,
                                 "special": True})
    (model / "tokenizer.json").write_text(json.dumps(spec))
    chat = run(ChatModel.create(model, backend="numpy"))
    assert max(chat.tokenizer.encode("Hello world").ids) < rows
    with pytest.raises(ValueError, match=f"'Hello <\\|tool\\|>' gives the token '<\\|tool\\|>' "
                                         f"\\(id {rows}\\), which the model does not have: its "
                                         f"embedding has {rows} rows"):
        chat.tokenizer.encode("Hello <|tool|>")
    with pytest.raises(ValueError, match="which the model does not have"):
        run(chat.generate("<|tool|>", max_new_tokens=2, raw=True))


def test_classifier_lines_given_to_a_chat_model_are_refused_not_stripped_of_their_label():
    lines = ['{"text": "plain text to learn"}', '{"text": "the film was great", "label": "pos"}']
    with pytest.raises(DataError, match='data.jsonl:2: a "text" with a "label" is a classifier '
                                        'example; a chat model learns plain "text" or '
                                        'conversations'):
        parse_chat_jsonl(lines, "data.jsonl")
    assert parse_chat_jsonl(lines[:1] + ['{"text": "x", "label": null}'], "data.jsonl")


def test_a_classifier_line_without_text_or_with_an_empty_label_is_named():
    with pytest.raises(DataError, match='data.jsonl:2: missing "text" .the line has label, txt.'):
        parse_jsonl(['{"text": "a", "label": "x"}', '{"txt": "b", "label": "y"}'], "data.jsonl")
    with pytest.raises(DataError, match='data.jsonl:1: "label" is empty'):
        parse_jsonl(['{"text": "a", "label": " "}'], "data.jsonl")
    assert [e.label for e in parse_jsonl(['{"text": "a", "label": 0}'], "d")] == ["0"]
