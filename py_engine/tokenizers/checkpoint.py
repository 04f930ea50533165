"""A checkpoint directory's tokenizer: tokenizer.json (or BERT's vocab.txt), and for chat models
tokenizer_config.json's padding token and chat template (or chat_template.jinja).

    tokenizer = wordpiece_tokenizer(model_dir)               # BERT family
    tokenizer, template = chat_tokenizer(model_dir)          # decoders; template may be None
    tokenizer = seq2seq_tokenizer(model_dir)                 # T5 family (Unigram)
"""

from pathlib import Path

from ..formats.json_file import read_json_object
from .bpe import SubwordTokenizer
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
    """(SubwordTokenizer, ChatTemplate or None). Without a pad token of its own, the tokenizer
    pads with tokenizer_config.json's pad_token, else its eos_token (as transformers' users do)."""
    model_dir = Path(model_dir)
    tokenizer, config = _tokenizer_and_config(model_dir)
    template = None
    if (model_dir / "tokenizer_config.json").is_file() and (
            config.get("chat_template") or (model_dir / "chat_template.jinja").is_file()):
        template = ChatTemplate.from_pretrained(model_dir)
    return tokenizer, template or family_template(model_dir, config)


def seq2seq_tokenizer(model_dir):
    """The SubwordTokenizer of an encoder-decoder checkpoint (T5, FLAN-T5, mT5: a Unigram
    tokenizer.json with a SentencePiece charsmap), pure Python. pad_id: tokenizer.json's, else
    tokenizer_config.json's pad_token (T5's "<pad>", id 0), else its eos_token; eos_id: what
    the template appends ("</s>")."""
    return _tokenizer_and_config(Path(model_dir))[0]


def _tokenizer_and_config(model_dir):
    """tokenizer.json's tokenizer, padding as chat_tokenizer says, and tokenizer_config.json
    ({} where there is none)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json")
    tokenizer = SubwordTokenizer.from_file(path)
    config_path = model_dir / "tokenizer_config.json"
    config = read_json_object(config_path) if config_path.is_file() else {}
    if tokenizer.pad_id is None:
        for key in ("pad_token", "eos_token"):
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if token is not None and tokenizer.token_to_id(token) is not None:
                tokenizer.pad_id = tokenizer.token_to_id(token)
                break
    return tokenizer, config


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
