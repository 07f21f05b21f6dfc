"""`rig status --verify`: rehash every file the run keeps against the size and sha256 its store recorded.

A photo deleted or edited on disk is otherwise noticed only when an export trips over it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rig.store import RunStore


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the run folder
    status: str  # the attempt's: accepted, rejected, dropped
    shows: str  # image, condition and repeat
    what: str  # "missing", "changed: ..."


def verify(store: RunStore, on_file: Callable[[int], None] = lambda n: None) -> tuple[int, int, list[Problem]]:
    """Returns (files checked, bytes read, problems). `on_file(bytes)` is called after each file."""
    def check(entry: tuple[str, str, dict[str, object]]) -> tuple[int, Problem | None]:
        status, shows, f = entry
        rel = str(f["path"])
        try:
            with open(store.root / rel, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256")
                size = fh.tell()
        except FileNotFoundError:
            return 0, Problem(rel, status, shows, "missing")
        except OSError as e:
            return 0, Problem(rel, status, shows, f"unreadable ({e.strerror})")
        if size != f["bytes"]:
            return size, Problem(rel, status, shows, f"changed: {size} bytes, recorded {f['bytes']}")
        if digest.hexdigest() != f["sha256"]:
            return size, Problem(rel, status, shows, "changed: same size, different sha256")
        return size, None

    problems: list[Problem] = []
    count = total = 0
    files = store.kept_files()
    with ThreadPoolExecutor(4) as pool:  # hashing releases the GIL: overlap disk reads
        while batch := list(itertools.islice(files, 256)):  # a page at a time: a run may keep millions
            for size, problem in pool.map(check, batch):
                count += 1
                total += size
                on_file(size)
                if problem is not None:
                    problems.append(problem)
    return count, total, problems
