"""Files written whole or not at all: a crash, a full disk or a kill mid-write leaves the previous
file (or directory) in place, never half of a new one.

    write to a temporary sibling -> flush and fsync -> rename over the target (atomic on POSIX)

The bottom of the house: it imports nothing of minilm, and everything that writes a file uses it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """`write(tmp)` writes a temporary sibling of `path`, which then takes its place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_json(path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_gzip(path, pieces) -> None:
    """The text `pieces` (an iterable of str) gzipped with mtime 0 (the same text gives the same
    bytes), written atomically."""
    def write(tmp):
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for piece in pieces:
                gz.write(piece.encode("utf-8"))

    atomic_write(path, write)


def write_directory(directory, fill) -> None:
    """Write a whole directory atomically: `fill(tmp)` writes into a temporary sibling, which then
    takes the directory's place (the old one moved aside to .<name>.old until the swap is done)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
