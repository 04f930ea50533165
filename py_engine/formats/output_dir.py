"""Output directories: where py_engine may write an adapter or a checkpoint, and how.

The rule: a directory is written only if it does not exist, is empty, or was written by
py_engine before and still holds only what py_engine put there. It is never written if it is,
or holds, the model being fine-tuned, an input of the run, or the current directory (replacing
it would delete them); paths are compared with symlinks resolved. A PEFT adapter that PEFT made
(no marker) is the user's and is never replaced.

The marker: every directory py_engine writes holds a file MARKER (".py_engine-output"), JSON
{"written_by": "py_engine", "files": [the names written beside it], "kind": what it is}. A
directory holding the marker and nothing but the files it lists may be replaced by output of
the same kind (KINDS: a model, a training state, a dataset, ...); one with other files too (say,
notes the user added), or of another kind (a dataset export where a training state would go),
may not. A marker without a kind (written before kinds were recorded) does not restrict.

Writing is atomic: the new directory is filled beside the destination (".NAME.XXXX" in the same
parent), then swapped in by renames, and the old one is removed last; a save that fails or is
interrupted leaves the old directory as it was.

    check_output_dir("my_adapter", protected=[model_dir, data_file])   # before training
    write_output_dir("my_adapter", fill, protected=[...])               # fill(staging_path)
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".py_engine-output"
# What a py_engine output directory holds; an adapter, a checkpoint and a merged export are all
# "a model" (one may replace another), the GGUF and ONNX files "an export".
KINDS = ("a model", "a training state", "a dataset", "an export", "a training job",
         "the extension's model")


class OutputDirError(ValueError):
    """A directory py_engine must not (or cannot) write; the message names it and says why."""


def _resolved(path):
    return Path(os.path.abspath(os.fspath(path))).resolve()


def written_by_py_engine(directory):
    """The file names MARKER lists when `directory` holds a readable marker, else None."""
    marker = _marker(directory)
    return None if marker is None else set(marker["files"])


def _marker(directory):
    """MARKER's content when `directory` holds a readable one, else None."""
    path = Path(directory) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if not (isinstance(marker, dict) and isinstance(files, list)
            and all(isinstance(f, str) for f in files)):
        return None
    return marker


def check_output_dir(path, protected=(), kind=None):
    """The resolved output path, after checking that py_engine may write a directory there
    (see the module docstring); OutputDirError naming the path and the reason otherwise.
    `protected`: paths of the run's inputs (the model directory, data files, an adapter read),
    none of which the output may be or contain: paths, (description, path) pairs for the
    messages (say ("the model directory", model_dir)), or a {description: path} dict; None
    paths are skipped. The current directory is always protected. `kind` (one of KINDS): what
    will be written, which an earlier output of another kind may not be replaced by."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = _resolved(path)
    shown = os.fspath(path)
    if out.parent == out:
        raise OutputDirError(f"cannot write to {shown}: it is the filesystem root")
    cwd = _resolved(os.getcwd())
    if out == cwd or out in cwd.parents:
        raise OutputDirError(f"cannot write to {shown}: it {'is' if out == cwd else 'holds'} "
                             "the current directory, which writing there would replace; name "
                             "a new directory")
    for what, item in _described(protected):
        if item is None:
            continue
        kept = _resolved(item)
        if out == kept:
            raise OutputDirError(f"cannot write to {shown}: it is {what} ({item}); name a new "
                                 "directory")
        if out in kept.parents:
            raise OutputDirError(f"cannot write to {shown}: it holds {what} ({item}), which "
                                 "writing there would delete; name a new directory")
    if out.exists() or out.is_symlink():
        _check_existing(out, shown, kind)
        writable = out.parent
    else:
        writable = out.parent
        while not writable.exists():
            writable = writable.parent
        if not writable.is_dir():
            raise OutputDirError(f"cannot write to {shown}: {writable} is a file, not a "
                                 "directory")
    if not os.access(writable, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot write to {shown}: no permission to write in {writable}")
    return out


def _described(protected):
    """(description, path) pairs of a `protected` argument (see check_output_dir)."""
    items = protected.items() if isinstance(protected, dict) else protected
    return [item if isinstance(item, tuple) else ("an input of this run", item) for item in items]


def _check_existing(out, shown, kind):
    if not out.is_dir():
        raise OutputDirError(f"cannot write to {shown}: it exists and is not a directory")
    try:
        entries = set(os.listdir(out))
    except OSError as e:
        raise OutputDirError(f"cannot write to {shown}: {e.strerror}") from None
    if not entries:
        return
    marker = _marker(out)
    if marker is None:
        what = " (a PEFT adapter made elsewhere)" if "adapter_config.json" in entries else \
            " (a model checkpoint)" if "config.json" in entries else ""
        raise OutputDirError(f"cannot write to {shown}: it holds files py_engine did not "
                             f"write{what}; name a new or empty directory")
    foreign = sorted(entries - set(marker["files"]) - {MARKER})
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputDirError(f"cannot write to {shown}: besides py_engine's output it holds "
                             f"{listed}, which writing there would delete; name a new "
                             "directory or move them")
    held = marker.get("kind")      # None in a marker written before kinds were recorded
    if kind is not None and held in KINDS and held != kind:
        raise OutputDirError(f"cannot write to {shown}: it holds {held} py_engine wrote, which "
                             f"writing {kind} there would delete; name a new directory")


def remove_output_dir(path, kind):
    """Delete a directory py_engine wrote as `kind` (its marker says so) and holding nothing
    but what the marker lists; anything else (a directory py_engine did not write, one with
    the user's files added, one of another kind) is refused and left as it is."""
    out = _resolved(path)
    shown = os.fspath(path)
    if not out.is_dir():
        raise OutputDirError(f"cannot remove {shown}: it is not a directory")
    marker = _marker(out)
    if marker is None:
        raise OutputDirError(f"cannot remove {shown}: py_engine did not write it")
    if marker.get("kind") != kind:
        raise OutputDirError(f"cannot remove {shown}: it holds {marker.get('kind') or 'output'} "
                             f"py_engine wrote, not {kind}")
    foreign = sorted(set(os.listdir(out)) - set(marker["files"]) - {MARKER})
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputDirError(f"cannot remove {shown}: besides py_engine's output it holds "
                             f"{listed}, which removing it would delete")
    shutil.rmtree(out)


def write_output_dir(path, fill, protected=(), kind=None):
    """Check `path` (check_output_dir), create a staging directory beside it, call
    fill(staging: Path) to write the files, add the marker (with `kind`), and swap it in.
    Returns the path."""
    out = check_output_dir(path, protected, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(staging, _mode_for(out))
        fill(staging)
        files = sorted(os.listdir(staging))
        marker = {"written_by": "py_engine", "files": files}
        if kind is not None:
            marker["kind"] = kind
        (staging / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        check_output_dir(path, protected, kind)   # unchanged while the files were written
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Path(path)


def _mode_for(out):
    """The permissions the written directory gets: an existing directory's own, else what
    mkdir gives under the umask (mkdtemp's staging directory is private, 0700)."""
    try:
        return out.stat().st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o777 & ~mask


def write_files(path, files, protected=(), kind=None):
    """write_output_dir for a directory of {file name: bytes}."""
    def fill(staging):
        for name, data in files.items():
            (staging / name).write_bytes(bytes(data))

    return write_output_dir(path, fill, protected, kind)


def _swap_in(staging, directory):
    """Replace `directory` by `staging` with renames only; the old one is removed last."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    try:
        os.replace(staging, directory)
    except BaseException:
        if old is not None:
            os.replace(old, directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
