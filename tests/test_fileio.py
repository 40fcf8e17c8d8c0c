"""Atomic writes: a reader sees the old content or the new one, never half; failures leave nothing behind."""
from __future__ import annotations

import pytest

from liftlm.fileio import atomic_directory, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_write_text_atomic_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old")
    with pytest.raises(TypeError):
        write_text_atomic(path, None)  # fails while writing
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _entries(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_directory_appears_only_when_complete(tmp_path):
    final = tmp_path / "adapter"
    with atomic_directory(final) as tmp:
        (tmp / "w.bin").write_bytes(b"x")
        assert not final.exists()
    assert _entries(final) == ["w.bin"] and _entries(tmp_path) == ["adapter"]


def test_atomic_directory_error_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "adapter") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("disk full")
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("if_exists, kept", [("keep", "old"), ("replace", "new")])
def test_atomic_directory_when_the_target_exists(tmp_path, if_exists, kept):
    final = tmp_path / "adapter"
    final.mkdir()
    (final / "v").write_text("old")
    with atomic_directory(final, if_exists=if_exists) as tmp:
        (tmp / "v").write_text("new")
    assert (final / "v").read_text() == kept
    assert _entries(tmp_path) == ["adapter"]  # no temporary or set-aside directory is left


def test_atomic_directory_error_mode_refuses_an_existing_target(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "v").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_directory(final, if_exists="error") as tmp:
            (tmp / "v").write_text("new")
    assert (final / "v").read_text() == "old" and _entries(tmp_path) == ["out"]
