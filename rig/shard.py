"""Split a session across rigs: N session files, each with its own manifest of whole patients.

A patient's images all go to one shard (a patient never appears in two data sets' splits), and
shards are balanced by image count: patients largest first, each onto the lightest shard so far.
Each shard is a copy of the session file with its own CheXpert-form CSV manifest and its own
`output:`, written together into `<session-stem>.shards/` beside the session file; paths inside are
written relative to that folder when the session gave them relative, so the files work from there.
`rig export SHARD --merge OTHER...` puts the shards' runs back together as one data set.
"""

from __future__ import annotations

import csv
import heapq
import io
import os
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rig.errors import ConfigError
from rig.files import atomic_write, fsync_dir
from rig.manifest import Manifest
from rig.session import Session

# A folder's image path that is already in CheXpert form, so a CSV manifest can list it unchanged.
_CHEXPERT_RELATIVE = re.compile(r"^patient\d+/study\d+/[^/]+$")


@dataclass(frozen=True)
class Shard:
    session: Path  # the shard's session file
    manifest: Path  # its CSV manifest
    images: int
    patients: int


def shard_name(k: int, n: int) -> str:
    return f"shard-{k}-of-{n}"


def shards_folder(session_path: Path) -> Path:
    return session_path.parent / f"{session_path.stem}.shards"


def balance(patients: dict[str, int], n: int) -> dict[str, int]:
    """Patient -> shard index (0-based): largest patient first onto the lightest shard (ties: the
    lower index; patients of equal size in the order given)."""
    heap = [(0, k) for k in range(n)]
    shard_of = {}
    for patient, count in sorted(patients.items(), key=lambda pc: -pc[1]):  # stable: manifest order in ties
        load, k = heapq.heappop(heap)
        shard_of[patient] = k
        heapq.heappush(heap, (load + count, k))
    return shard_of


def _csv_line(writer: Any, buffer: io.StringIO, record: list[str]) -> str:
    buffer.seek(0)
    buffer.truncate()
    writer.writerow(record)
    return buffer.getvalue()


def _rows_by_patient(session: Session, manifest: Manifest) -> tuple[str, list[tuple[str, str]]]:
    """The shard manifests' header and every image as (patient, CSV line) in manifest order. A folder's
    images must already lie in CheXpert form (patientNNNNN/studyN/<file>) for a CSV to list them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if session.manifest_csv is None and manifest.label_columns:
        raise ConfigError(f"{session.path}: manifest.folder holds DICOM files, identified by their tags; sharding "
                          "needs a CheXpert-form CSV manifest (manifest.csv with Path patientNNNNN/studyN/<file>)")
    header = ["Path", *manifest.label_columns]
    rows = []
    for row in manifest.rows():
        if session.manifest_csv is None and not _CHEXPERT_RELATIVE.match(row.source):
            raise ConfigError(f"{session.path}: manifest.folder: {row.source} is not patientNNNNN/studyN/<file>; "
                              "sharding needs a CheXpert-form CSV manifest (manifest.csv with a 'Path' column)")
        rows.append((row.study_id.split("/", 1)[0], _csv_line(writer, buffer, [row.source, *row.labels])))
    return _csv_line(writer, buffer, header), rows


def _path_for(original: Path | None, resolved: Path, folder: Path) -> str:
    """`resolved` as the shard file should name it: absolute if the session named it absolute, else
    relative to the shard folder (so the whole tree can move to another machine)."""
    if original is not None and original.is_absolute():
        return str(resolved)
    return os.path.relpath(resolved, folder.resolve())


def _shard_session(session: Session, folder: Path, name: str, shard: dict[str, Any]) -> dict[str, Any]:
    """The session file's settings (its `extends:` already merged in) with this shard's paths and identity."""
    config = session.config
    data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
    root = session.image_root or session.image_folder
    assert root is not None
    data["rig"] = _path_for(config.rig, session.rig_path, folder)
    data["manifest"] = {"csv": f"{name}.csv",
                        "image_root": _path_for(config.manifest.image_root or config.manifest.csv
                                                or config.manifest.folder, root, folder)}
    output = session.output.with_name(f"{session.output.name}.{name}")
    data["output"] = _path_for(config.output, output, folder)
    data["shard"] = shard
    return data


def shard(session: Session, n: int, replace: bool = False) -> list[Shard]:
    """Write the N shard session files and manifests into `<stem>.shards/`; returns them in order."""
    folder = shards_folder(session.path)
    if n < 1:
        raise ConfigError(f"--rigs {n}: give at least 1")
    if folder.exists() and not replace:
        raise ConfigError(f"{folder}: already exists (shards written before); pass --replace to rewrite it, "
                          "or remove it")
    manifest = Manifest(session.manifest_csv, session.image_root, session.image_folder)
    header, rows = _rows_by_patient(session, manifest)
    sizes: dict[str, int] = {}
    for patient, _ in rows:
        sizes[patient] = sizes.get(patient, 0) + 1
    if n > len(sizes):
        raise ConfigError(f"--rigs {n}: {session.path}'s manifest has only {len(sizes)} patients, and a patient "
                          f"is never split; give at most {len(sizes)}")
    shard_of = balance(sizes, n)
    lines: list[list[str]] = [[] for _ in range(n)]
    for patient, line in rows:
        lines[shard_of[patient]].append(line)
    del rows
    patients = Counter(shard_of.values())

    split = uuid.uuid4().hex[:12]  # shards of one call merge; a re-shard's never mix with these
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shards = []
    try:
        for k in range(n):
            name = shard_name(k + 1, n)
            atomic_write(partial / f"{name}.csv", "".join([header, *lines[k]]))
            data = _shard_session(session, folder, name, {"index": k + 1, "of": n, "split": split})
            text = (f"# Shard {k + 1} of {n} of {session.path.name} (written by `rig shard`): "
                    f"{len(lines[k])} images of {patients[k]} patients.\n"
                    + yaml.safe_dump(data, sort_keys=False))
            atomic_write(partial / f"{name}.yaml", text)
            shards.append(Shard(folder / f"{name}.yaml", folder / f"{name}.csv", len(lines[k]), patients[k]))
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(partial, folder)
        fsync_dir(folder.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return shards
