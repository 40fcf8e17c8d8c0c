"""Writing files and directories so that a reader never sees half of one: everything is written under a
temporary name beside the target and renamed into place at the end (a rename is atomic on one filesystem).
An interruption (Ctrl-C, a full disk, a crash) leaves at most a temporary ``.tmp`` entry, never a broken target.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import LiftError


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling file and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: str | Path, if_exists: str = "keep") -> Iterator[Path]:
    """Yield a new temporary directory beside ``final``; when the block ends without an error, it becomes
    ``final``. It is removed on any error. ``if_exists`` says what happens when ``final`` exists by then:
    ``"keep"`` keeps it and drops the new one (same inputs, same content: another process finished first),
    ``"replace"`` swaps the new one in (the old one is moved aside first, then deleted), ``"error"`` raises
    ``FileExistsError``."""
    if if_exists not in ("keep", "replace", "error"):
        raise ValueError(f"if_exists must be keep, replace or error (got {if_exists!r})")
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        _move_into_place(tmp, final, if_exists)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, final: Path, if_exists: str) -> None:
    try:
        tmp.rename(final)  # fails when final exists (a non-empty directory)
        return
    except OSError:
        if not final.exists():
            raise
    if if_exists == "keep":
        shutil.rmtree(tmp, ignore_errors=True)
    elif if_exists == "error":
        raise FileExistsError(f"{final} already exists")
    else:
        old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
        final.rename(old / final.name)  # aside, in one rename; then the new one in, in another
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)


def read_jsonl(path: Path, flag: str = "--out") -> list[dict]:
    """The records of a JSONL file we append to. A torn last line (an interrupted write) is cut off the
    file; any other bad line is an error (naming ``flag``, the option that points at the file)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    records: list[dict] = []
    good_end = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            records.append(json.loads(line))
            good_end += len(line) + 1
        except json.JSONDecodeError:
            if number == len(lines):  # the unterminated last line: an interrupted write
                with path.open("r+b") as fh:
                    fh.truncate(good_end)
                break
            raise LiftError(f"{flag}: {path}:{number} is not valid JSON; fix or delete that file") from None
    return records


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as a line and flush it (a reader sees whole lines, or a torn last one)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
