"""Writing a file so that a crash or a power cut leaves either the old file or the whole new one.

The one recipe every writer uses: a temp file beside the target (same file system, so the rename is
atomic), fsync of its data, rename over the target, fsync of the folder so the rename itself survives
a power cut. `make_dirs` also creates missing folders durably (each new folder's parent is fsynced).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file, a new subfolder) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(folder: Path) -> None:
    """mkdir -p, then fsync the parent of every folder it created, so a power cut keeps the path."""
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    folder.mkdir(parents=True, exist_ok=True)
    for f in reversed(missing):
        fsync_dir(f.parent)


def temp_name(final: Path) -> Path:
    """The hidden temp file beside `final` that atomic_write writes first (recovery may remove it)."""
    return final.with_name(f".{final.name}.tmp")


def atomic_write(path: Path, content: bytes | str | Callable[[BinaryIO], object], *,
                 make_dirs: bool = False, tmp: Path | None = None) -> None:
    """Replace `path` with `content` (bytes, text as UTF-8, or a function that writes to the open
    binary file) all at once: temp file -> fsync -> rename -> fsync folder. On an error the temp file
    is removed and `path` is untouched. `tmp` names the temp file (default: temp_name(path))."""
    if make_dirs:
        make_dirs_durable(path.parent)
    tmp = tmp or temp_name(path)
    try:
        with open(tmp, "wb") as f:
            if isinstance(content, bytes):
                f.write(content)
            elif isinstance(content, str):
                f.write(content.encode("utf-8"))
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # any end, Ctrl-C included: no temp file left behind; re-raised
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
