"""Atomic writes: the file appears whole or not at all, and no temporary is left behind."""

import os

import pytest

from jaxvision.fileio import atomic_path, write_atomic


def test_write_atomic_text_and_bytes(tmp_path):
    write_atomic(str(tmp_path / "sub" / "a.txt"), "hello")
    write_atomic(str(tmp_path / "b.bin"), b"\x00\x01")
    assert (tmp_path / "sub" / "a.txt").read_text() == "hello"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "sub"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
