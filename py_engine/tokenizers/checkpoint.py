"""A checkpoint directory's tokenizer: tokenizer.json (or BERT's vocab.txt), and for chat models
tokenizer_config.json's padding token and chat template (or chat_template.jinja).

    tokenizer = wordpiece_tokenizer(model_dir)               # BERT family
    tokenizer, template = chat_tokenizer(model_dir)          # decoders; template may be None
"""

from pathlib import Path

from ..formats.json_file import read_json_object
from .bpe import BPETokenizer
from .chat_template import ChatTemplate
from .wordpiece import WordPieceTokenizer


def wordpiece_tokenizer(model_dir):
    model_dir = Path(model_dir)
    if (model_dir / "tokenizer.json").is_file():
        return WordPieceTokenizer.from_file(model_dir / "tokenizer.json")
    if (model_dir / "vocab.txt").is_file():
        return WordPieceTokenizer.from_vocab(model_dir / "vocab.txt")
    raise FileNotFoundError(f"{model_dir} has neither tokenizer.json nor vocab.txt")


def chat_tokenizer(model_dir):
    """(BPETokenizer, ChatTemplate or None). Without a pad token of its own, the tokenizer pads
    with tokenizer_config.json's pad_token, else its eos_token (as transformers' users do)."""
    model_dir = Path(model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json")
    tokenizer = BPETokenizer.from_file(path)
    template = None
    config_path = model_dir / "tokenizer_config.json"
    config = {}
    if config_path.is_file():
        config = read_json_object(config_path)
        if tokenizer.pad_id is None:
            for key in ("pad_token", "eos_token"):
                token = config.get(key)
                token = token.get("content") if isinstance(token, dict) else token
                if token is not None and tokenizer.token_to_id(token) is not None:
                    tokenizer.pad_id = tokenizer.token_to_id(token)
                    break
        if config.get("chat_template") or (model_dir / "chat_template.jinja").is_file():
            template = ChatTemplate.from_pretrained(model_dir)
    return tokenizer, template or family_template(model_dir, config)


# DialoGPT's conversation format (GPT-2 family checkpoints carry no chat template): each turn's
# text followed by the end-of-text token, the turns joined with nothing between them, as
# DialoGPT was trained and as transformers' former GPT-2 default chat template renders it. The
# generation prompt adds nothing: the reply follows the last turn's end-of-text.
DIALOGPT_TEMPLATE = "{% for message in messages %}{{ message['content'] + eos_token }}{% endfor %}"
DIALOGPT_EOS = "<|endoftext|>"


def family_template(model_dir, tokenizer_config):
    """The conversation format of a checkpoint whose files hold no chat template, where its
    family has one (config.json's model_type "gpt2": DialoGPT's, with tokenizer_config.json's
    eos_token); None otherwise."""
    path = Path(model_dir) / "config.json"
    if not path.is_file() or read_json_object(path).get("model_type") != "gpt2":
        return None
    eos = tokenizer_config.get("eos_token") or DIALOGPT_EOS
    eos = eos.get("content") if isinstance(eos, dict) else eos
    return ChatTemplate(DIALOGPT_TEMPLATE, eos_token=eos, end_tokens=[eos])
