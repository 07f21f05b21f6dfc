"""Export a run as a data set a CheXpert user can load: photos in the CheXpert tree plus captures.csv.

The export is built in a sibling folder `.<out>.partial` and swapped into place with renames, so a
kill at any moment leaves either the previous export or the new one under the requested name, and
the next export cleans up whatever the kill left (see `_recover`). `export.json` in the export says
which run it came from and how complete the run was, so a later export never silently replaces the
data set of another run.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from rig.command import rig_command
from rig.errors import ConfigError, RigError
from rig.store import Counts, RunStore, _fsync_dir

INFO = "export.json"


class ExportRefused(RigError):
    """`--out` holds something this export must not replace."""


class MissingPhoto(RigError):
    """A file the run store lists as accepted is gone or was changed on disk."""


@dataclass(frozen=True)
class Exported:
    photos: int
    counts: Counts  # the run's state when it was exported (the same snapshot as the photos)


def export(store: RunStore, out: Path, replace: bool = False) -> Exported:
    """Write every accepted capture under `out` (replacing an earlier export of this run)."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it ({e.strerror}); choose a writable place") from None
    with _locked(out.parent):
        try:
            _recover(out)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot clean up after an interrupted export ({e.strerror}: "
                              f"{e.filename}); fix that, or remove it, then export again") from None
        _check_replace(store, out, replace)
        partial = _sibling(out, "partial")
        try:
            partial.mkdir()
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot create it ({e.strerror}); choose a writable place") from None
        try:
            store.db.execute("BEGIN")  # one snapshot: the counts describe exactly the photos exported
            try:
                counts = store.counts()
                photos = _write(store, partial, json.loads(store.meta("label_columns") or "[]"))
                _write_info(store, partial, counts, photos)
            finally:
                store.db.execute("COMMIT")
        except BaseException as e:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(e, OSError):
                what = "free space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "check that place"
                raise ConfigError(f"--out {out}: export failed ({e.strerror or e}"
                                  f"{': ' + str(e.filename) if e.filename else ''}); nothing was replaced; "
                                  f"{what} or choose another --out") from None
            raise
        try:
            _swap(partial, out)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot put the export in place ({e.strerror}: {e.filename}); "
                              "fix that, then export again") from None
    return Exported(photos, counts)


def _sibling(out: Path, kind: str) -> Path:
    return out.with_name(f".{out.name}.{kind}")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One export at a time per parent folder (the kernel drops the lock if the process dies)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise ConfigError(f"--out: cannot open {folder} ({e.strerror}); choose a place you can write") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportRefused(f"{folder}: another 'rig export' is writing here; wait for it") from None
        yield
    finally:
        os.close(fd)


def _swap(partial: Path, out: Path) -> None:
    """partial -> out; the previous export goes to `.old`, then to `.trash`, and is removed last.

    Only `.trash` is ever removed file by file, so a kill never leaves a half-removed folder under a
    name recovery would put back.
    """
    old, trash = _sibling(out, "old"), _sibling(out, "trash")
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    _fsync_dir(out.parent)
    if old.exists():
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)  # what a failure leaves, the next export removes


def _recover(out: Path) -> None:
    """Finish or undo what a killed export left beside `out`.

    `.partial` is always incomplete or unused: removed. `.old` without `out` means the kill fell
    between the two renames of `_swap`: `.old` is the previous complete export and goes back. `.old`
    beside `out` and any `.trash` are leftovers of a finished swap: removed.
    """
    partial, old, trash = _sibling(out, "partial"), _sibling(out, "old"), _sibling(out, "trash")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)
    if old.exists() and not out.exists():
        os.replace(old, out)
    if old.exists() and not trash.exists():
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    _fsync_dir(out.parent)
    for leftover in (partial, old, trash):
        if leftover.exists():
            raise ConfigError(f"{leftover}: left by an interrupted export and cannot be removed; "
                              "remove it, then export again")


def _check_replace(store: RunStore, out: Path, replace: bool) -> None:
    """An existing `out` must be an export of this same run, unless the operator said --replace."""
    if not out.exists():
        return
    if not (out / "captures.csv").is_file():
        raise ConfigError(f"{out}: exists and is not a rig export; choose another --out or remove it")
    if replace:
        return
    try:
        info = json.loads((out / INFO).read_text())
        theirs, session = info["run_created"], info.get("session", "?")
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportRefused(f"--out {out}: holds an export that does not say which run it came from; "
                            "pass --replace to overwrite it, or choose another --out") from None
    if theirs != store.meta("created"):
        raise ExportRefused(f"--out {out}: holds the export of another run (session {session}); "
                            "pass --replace to overwrite it, or choose another --out")


def _write_info(store: RunStore, partial: Path, counts: Counts, photos: int) -> None:
    info = {"session": store.meta("session"), "run": str(store.root), "run_created": store.meta("created"),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "photos": photos,
            "planned": counts.planned, "done": counts.done, "failed": counts.failed, "pending": counts.pending,
            "complete": counts.done == counts.planned}
    with open(partial / INFO, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _write(store: RunStore, partial: Path, label_columns: list[str]) -> int:
    count = 0
    with open(partial / "captures.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Path", "Study", "Source", *label_columns, "Condition", "Attempt", "SHA256", "Registered"])
        used: set[str] = set()
        for (study, image_id, source, labels, condition, rep, attempt, photo, sha, registered,
             file_hashes) in store.accepted():
            sizes = {f["path"]: f["bytes"] for f in json.loads(str(file_hashes or "[]"))}
            image = PurePosixPath(str(image_id))
            base = f"{image.with_suffix('')}_{condition}_{rep}"
            if base in used:  # e.g. img.jpg and img.png of one folder: keep both, never overwrite
                base = f"{base}_a{attempt}"
            used.add(base)
            rel = base + PurePosixPath(str(photo)).suffix
            what = f"the accepted photo of {image_id} ({condition} r{rep})"
            _link_or_copy(store, str(photo), sizes.get(str(photo)), partial / rel, what)
            crop = ""
            if registered:  # the x-ray area rectified to the source image: a pixel-aligned pair
                crop = f"{base}.registered.png"
                _link_or_copy(store, str(registered), sizes.get(str(registered)), partial / crop,
                              f"the registered crop of {image_id} ({condition} r{rep})")
            writer.writerow([rel, study, source, *json.loads(str(labels)), condition, attempt, sha, crop])
            count += 1
        f.flush()
        os.fsync(f.fileno())
    return count


def _link_or_copy(store: RunStore, rel: str, size: int | None, dst: Path, what: str) -> None:
    """Hard-link when on the same file system (instant, no extra space), else copy; never overwrite.

    A file the store lists but the disk no longer has (or has at another size) stops the export
    with its name: a data set must not silently lack a photo its run accepted.
    """
    src = store.root / rel
    try:
        actual = src.stat().st_size
    except FileNotFoundError:
        actual = None
    if actual is None or (size is not None and actual != size):
        state = "is missing" if actual is None else f"has {actual} bytes, the run store says {size}"
        raise MissingPhoto(f"{src}: {what} {state}; nothing was exported; restore it from a backup "
                           f"('{rig_command()} status {store.meta('session')} --verify' lists every missing or changed file)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        with open(src, "rb") as f_in, open(dst, "xb") as f_out:
            shutil.copyfileobj(f_in, f_out)
            f_out.flush()
            os.fsync(f_out.fileno())

