"""Writing a file so that a write that fails partway never leaves a truncated file where a good
one was: the bytes go to a new temporary file in the same folder, are flushed to disk, then
os.replace puts it in place. Pure Python: this runs in the browser too.

    write_atomically(path, [header, body])       # any bytes-like pieces, written in order
"""

import os


def write_atomically(path, pieces, mode=0o666):
    """Write the bytes-like `pieces` one after another to `path`, atomically. `mode` is the new
    file's (before the umask; 0o666 lets the umask decide, as open() would)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    # O_EXCL: never reuse an existing file.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in pieces:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable where the platform allows opening a folder (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
