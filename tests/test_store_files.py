"""A RAW+JPEG pair is kept byte for byte, both files hashed and recorded with the capture."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from conftest import rig_file, session_file

from rig.devices import CameraFile
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import load_session
from rig.store import Capture, RunStore


def test_every_file_of_a_raw_plus_jpeg_shot_is_written_and_hashed(tmp_path: Path, phantoms: Path) -> None:
    session = load_session(session_file(tmp_path, phantoms, rig_file(tmp_path)))
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
    item = store.pending_after(-1, 1)[0]
    jpeg, raw = b"\xff\xd8 a jpeg \xff\xd9", bytes(range(256)) * 64
    photo = store.commit_photo(item, Capture(item.seq, time.time(), {0: 1500}, {}, {0: 10}),
                               [CameraFile("DSC_0001.JPG", jpeg), CameraFile("DSC_0001.NEF", raw)])
    store.close()
    assert photo.read_bytes() == jpeg
    with sqlite3.connect(session.output / "run.sqlite") as db:
        recorded = json.loads(db.execute("SELECT file_hashes FROM attempts WHERE status = 'accepted'").fetchone()[0])
    assert [Path(r["path"]).suffix for r in recorded] == [".jpg", ".nef"]
    for r, data in zip(recorded, (jpeg, raw)):
        on_disk = (session.output / r["path"]).read_bytes()
        assert on_disk == data and r["bytes"] == len(data) and r["sha256"] == hashlib.sha256(data).hexdigest()
