"""Writing a fine-tuned model as a Hugging Face checkpoint directory: the source checkpoint's
config and tokenizer files copied, model.safetensors with every weight (F32) written anew.
Written where output_dir allows (never over the source checkpoint), beside the destination and
swapped in when complete, as adapters are; non-finite weights are refused before anything is
written."""

import json
import shutil
from pathlib import Path

from . import safetensors
from .finite import require_finite
from .output_dir import write_output_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.txt", "spiece.model", "spm.model")
COPIED = ("config.json", "generation_config.json") + TOKENIZER_FILES


def decoder_config_json(source, config):
    """config.json of a decoder trained from checkpoint `source` with model config `config`:
    the source's, with the fields an adapter's saved embedding and output layer changed
    (config.saved_fields: a resized vocabulary, an untied head); None where none changed."""
    fields = config.saved_fields
    if not fields:
        return None
    from .json_file import read_json_object

    return dict(read_json_object(Path(source) / "config.json"), **fields)


def write_config_json(directory, config):
    """config (a dict) as directory/config.json, as transformers writes it."""
    (Path(directory) / "config.json").write_text(json.dumps(config, indent=2) + "\n",
                                                 encoding="utf-8")


def save_model_dir(directory, source, tensors, protected=(), config=None, tokenizer_dir=None):
    """tensors: {name: (shape, array('f') or f32 bytes)}; source: the checkpoint trained from,
    which (with `protected`, see output_dir.check_output_dir) the directory must not be or hold.
    config: a dict written as config.json instead of the source's (another architecture's
    fields, as a classifier with its labels). tokenizer_dir: where the tokenizer files are
    copied from, where not the source (an adapter's own, tokens added)."""
    source = Path(source)
    tokenizer_dir = Path(tokenizer_dir or source)
    weights = {name: ("F32", tuple(shape), data) for name, (shape, data) in tensors.items()}
    require_finite(weights, directory)

    def fill(staging):
        for name in COPIED:
            origin = (tokenizer_dir if name in TOKENIZER_FILES else source) / name
            if origin.is_file():
                shutil.copyfile(origin, staging / name)
        if config is not None:
            write_config_json(staging, config)
        safetensors.save(weights, staging / "model.safetensors", metadata={"format": "pt"})

    kept = protected.items() if isinstance(protected, dict) else protected
    return write_output_dir(directory, fill, [("the checkpoint being fine-tuned", source), *kept],
                            kind="a model")
