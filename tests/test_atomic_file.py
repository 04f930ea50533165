"""formats.atomic_file.write_atomically: the file holds the pieces in order, replaces what was
there, and a write that fails partway leaves the old file whole and no temporary file behind."""

import os
import stat

import pytest

from py_engine.formats.atomic_file import write_atomically


def test_pieces_are_written_in_order_and_replace_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old contents")
    write_atomically(path, [b"ab", bytearray(b"cd"), memoryview(b"ef")], mode=0o600)
    assert path.read_bytes() == b"abcdef"
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_write_that_fails_partway_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"the good file")

    def pieces():
        yield b"half of a new "
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, pieces())
    assert path.read_bytes() == b"the good file"
    assert os.listdir(tmp_path) == ["out.bin"]
