"""Atomic writes (stress._files.replace_atomically), shared by every file the package writes."""

from __future__ import annotations

import os

import pytest

from stress._files import replace_atomically


def test_the_file_appears_whole_with_the_umask_mode(tmp_path):
    target = tmp_path / "out.csv"
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert not target.exists()  # nothing at the target while it is written
        tmp.write_text("a,b\n1,2\n")

    assert replace_atomically(target, write) == target
    assert target.read_text() == "a,b\n1,2\n"
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".out.csv.")
    assert seen[0].name.endswith(".tmp") and not seen[0].exists()
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")

    def half(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        replace_atomically(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
