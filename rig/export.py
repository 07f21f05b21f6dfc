"""Export a run as a data set a CheXpert user can load: photos in the CheXpert tree plus captures.csv.

The export is built in a sibling temp folder and renamed into place at the end, so an interrupted
export never leaves a half-written data set under the requested name.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from rig.errors import ConfigError
from rig.store import RunStore


def export(store: RunStore, out: Path) -> int:
    """Write every accepted capture under `out`; returns how many. Replaces an earlier export."""
    out = out.resolve()
    if out.exists() and not (out / "captures.csv").is_file():
        raise ConfigError(f"{out}: exists and is not a rig export; choose another --out or remove it")
    label_columns = json.loads(store.meta("label_columns") or "[]")
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it ({e.strerror}); choose a writable place") from None
    try:
        count = _write(store, partial, label_columns)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise ConfigError(f"--out {out}: export failed ({e.strerror or e}); nothing was replaced; "
                          "free space or choose another place") from None
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)
    return count


def _write(store: RunStore, partial: Path, label_columns: list[str]) -> int:
    count = 0
    with open(partial / "captures.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Path", "Study", "Source", *label_columns, "Condition", "Attempt", "SHA256", "Registered"])
        used: set[str] = set()
        for study, image_id, source, labels, condition, rep, attempt, photo, sha, registered in store.accepted():
            image = PurePosixPath(str(image_id))
            base = f"{image.with_suffix('')}_{condition}_{rep}"
            if base in used:  # e.g. img.jpg and img.png of one folder: keep both, never overwrite
                base = f"{base}_a{attempt}"
            used.add(base)
            rel = base + PurePosixPath(str(photo)).suffix
            _link_or_copy(store.root / str(photo), partial / rel)
            crop = ""
            if registered:  # the x-ray area rectified to the source image: a pixel-aligned pair
                crop = f"{base}.registered.png"
                _link_or_copy(store.root / str(registered), partial / crop)
            writer.writerow([rel, study, source, *json.loads(str(labels)), condition, attempt, sha, crop])
            count += 1
    return count


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when on the same file system (instant, no extra space), else copy; never overwrite."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        with open(src, "rb") as f_in, open(dst, "xb") as f_out:
            shutil.copyfileobj(f_in, f_out)
