"""The fine-tuning API's data directory: what it holds, who owns it, and its admin token.

    data = DataDir.open("~/.py_engine/api")      # created, or checked to be ours
    data.token                                   # the admin bearer token (file mode 0600)
    data.adapter_dir("job-3")                    # a path inside it, from a checked id

Layout: MARKER (the directory is ours), admin_token, queue.sqlite (the training queue),
adapters/<id>/ (one PEFT adapter per finished job), and small JSON registries (jobs.json,
documents.json, adapters.json, counters.json) written atomically. A directory that exists and is not ours is
refused unless it is empty: the server never spreads its files among someone else's.

Every path comes from an id checked against ID_PATTERN here; nothing a request sends is ever
joined to a path as it is.
"""

import json
import os
import re
import secrets
import stat
from pathlib import Path

from ..formats.atomic_file import write_atomically

MARKER = ".py_engine-api"
TOKEN_FILE = "admin_token"
QUEUE_FILE = "queue.sqlite"
ID_PATTERN = re.compile(r"[a-z]+-[0-9]{1,9}")
DEFAULT_DATA_DIR = Path("~/.py_engine/api")


class DataDirError(ValueError):
    """A data directory that cannot be used; the message says why."""


class DataDir:
    def __init__(self, root, token):
        self.root, self.token = root, token

    @classmethod
    def open(cls, path=None):
        """The data directory at `path` (default ~/.py_engine/api): created (owner-only) when
        missing or empty, else it must carry MARKER. The admin token is made on first start."""
        root = Path(os.path.expanduser(os.fspath(path or DEFAULT_DATA_DIR))).absolute()
        if root.exists() and not root.is_dir():
            raise DataDirError(f"--data-dir {root} is a file, not a directory")
        if root.is_dir() and not (root / MARKER).is_file():
            if any(root.iterdir()):
                raise DataDirError(f"--data-dir {root} holds files that are not the API's (no "
                                   f"{MARKER}): give a new or empty directory")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "adapters").mkdir(exist_ok=True, mode=0o700)
        if not (root / MARKER).is_file():
            write_atomically(root / MARKER, [b'{"written_by": "py_engine serve-api"}\n'], mode=0o644)
        return cls(root, cls._token(root / TOKEN_FILE))

    @staticmethod
    def _token(path):
        """The admin token, made (random, 256 bits) and stored readable by the owner only on
        first start; a token file others can read is refused, not silently used."""
        if not path.exists():
            token = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            return token
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise DataDirError(f"{path} can be read by others (mode {mode:o}): run "
                               f"`chmod 600 {path}` or delete it for a new token")
        token = path.read_text().strip()
        if len(token) < 16:
            raise DataDirError(f"{path} does not hold a token: delete it for a new one")
        return token

    @property
    def token_path(self):
        return self.root / TOKEN_FILE

    @property
    def queue_path(self):
        return self.root / QUEUE_FILE

    def adapter_dir(self, adapter_id):
        return self.root / "adapters" / checked_id(adapter_id)

    def read_registry(self, name, default):
        path = self.root / f"{name}.json"
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataDirError(f"{path} cannot be read ({e}); move it away to start afresh") \
                from None

    def write_registry(self, name, value):
        write_atomically(self.root / f"{name}.json",
                         [(json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode()], mode=0o644)


def checked_id(value):
    """`value` when it is an id this API makes ("job-3", "doc-12"), else a KeyError: ids are the
    only request values that name files."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise KeyError(f"no such id {value!r:.40}")
    return value
