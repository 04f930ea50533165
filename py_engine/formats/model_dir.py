"""Writing a fine-tuned model as a Hugging Face checkpoint directory: the source checkpoint's
config and tokenizer files copied, model.safetensors with every weight (F32) written anew.
Written beside the destination and swapped in when complete, as adapters are."""

import shutil
import tempfile
from pathlib import Path

from . import safetensors
from .peft_adapter import _swap_in

COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "chat_template.jinja", "vocab.txt")


def save_model_dir(directory, source, tensors):
    """tensors: {name: (shape, array('f') or f32 bytes)}; source: the checkpoint trained from."""
    directory, source = Path(directory), Path(source)
    if directory.resolve() == source.resolve():
        raise ValueError(f"{directory} is the checkpoint being fine-tuned; write elsewhere")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name in COPIED:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        safetensors.save({name: ("F32", tuple(shape), data) for name, (shape, data) in tensors.items()},
                         staging / "model.safetensors", metadata={"format": "pt"})
        _swap_in(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
