"""Writing captures exactly once: an attempt is journalled, its files written, then one transaction
marks it accepted (or rejected, or failed) and moves its item on.

The attempt row is committed as `writing` *before* its files are written, naming them, so recovery
after a crash finds every half-written file from a handful of rows (rig/store/recovery.py) instead
of walking a tree of a million photos. Each file goes through rig.files.atomic_write (temp file,
fsync, rename, fsync of the folder) before the commit that makes it count.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from rig.devices import CameraFile
from rig.files import atomic_write, temp_name
from rig.store.base import StoreBase
from rig.store.records import Capture, Item
from rig.store.schema import count_kinds


def write_photo_file(final: Path, data: bytes) -> str:
    """One file of an attempt, durably, at its recorded name; returns the sha256 of what was written."""
    atomic_write(final, data, make_dirs=True, tmp=temp_name(final))
    return hashlib.sha256(data).hexdigest()


class CaptureWrites(StoreBase):
    def retry_failed(self) -> int:
        """Re-queue every failed item with a fresh set of retakes; its failed attempts stay on record."""
        with self.transaction():
            return self.db.execute("UPDATE items SET state = 'pending', attempts = 0 WHERE state = 'failed'").rowcount

    def record_failure(self, seq: int, reason: str, max_attempts: int | None,
                       capture: Capture | None = None) -> bool:
        """Keep a failed attempt with its reason; after `max_attempts` the item fails and the run goes on.

        `max_attempts` None: the attempt is kept but not counted against the item (a camera that went
        away is not the item's fault). Returns True when the item is now failed for good.
        """
        now = time.time()
        recorded = ((capture.commanded, capture.readback, capture.lights, capture.timing or None)
                    if capture else (None, None, None, None))
        with self.transaction():
            self.db.execute(
                """INSERT INTO attempts(seq, status, reason, started_at, finished_at, frame_id, commanded, readback,
                                       lights, timing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (seq, "failed" if max_attempts is not None else "lost", reason, capture.started_at if capture else now,
                 now, capture.frame_id if capture else None, *(_json_or_none(x) for x in recorded)))
            count_kinds(self.db, "failed" if max_attempts is not None else "lost", reason)
            if max_attempts is not None:
                self.db.execute(
                    """UPDATE items SET attempts = attempts + 1, reason = ?,
                       state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END WHERE seq = ?""",
                    (reason, max_attempts, seq))
            state = self.db.execute("SELECT state FROM items WHERE seq = ?", (seq,)).fetchone()[0]
        return bool(state == "failed")

    def commit_photo(self, item: Item, capture: Capture, files: Sequence[CameraFile],
                     qa: dict[str, object] | None = None, registered: bytes | None = None) -> Path:
        """Write the camera's files atomically and mark the item done; returns the main photo's path.

        `registered` (PNG bytes) is the x-ray area rectified to the source image, kept beside the photo.
        """
        started = time.monotonic()
        attempt_id, rels, hashes = self._write_attempt(item, capture, files, qa, registered)
        with self.transaction():
            self.db.execute(
                """UPDATE attempts SET status = 'accepted', finished_at = ?, bytes = ?, sha256 = ?, file_hashes = ?,
                   timing = ? WHERE attempt_id = ?""",
                (time.time(), len(files[0].data), hashes[0], _file_hashes(rels, hashes, files, registered),
                 _timing(capture, started), attempt_id))
            self.db.execute("UPDATE items SET state = 'done', attempts = attempts + 1, reason = NULL WHERE seq = ?",
                            (item.seq,))
        return self.root / rels[0]

    def commit_rejected(self, item: Item, capture: Capture, files: Sequence[CameraFile], reason: str,
                        max_attempts: int, qa: dict[str, object] | None = None) -> bool:
        """Keep a photo that failed QA (written atomically, like an accepted one) with its reasons.

        Returns True when the item is now failed for good, False when it should be retaken.
        """
        started = time.monotonic()
        attempt_id, rels, hashes = self._write_attempt(item, capture, files, qa, None, tree="rejected")
        with self.transaction():
            self.db.execute(
                """UPDATE attempts SET status = 'rejected', reason = ?, finished_at = ?, bytes = ?, sha256 = ?,
                   file_hashes = ?, timing = ? WHERE attempt_id = ?""",
                (reason, time.time(), len(files[0].data), hashes[0], _file_hashes(rels, hashes, files, None),
                 _timing(capture, started), attempt_id))
            count_kinds(self.db, "rejected", reason)
            self.db.execute(
                """UPDATE items SET attempts = attempts + 1, reason = ?,
                   state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END WHERE seq = ?""",
                (reason, max_attempts, item.seq))
            state = self.db.execute("SELECT state FROM items WHERE seq = ?", (item.seq,)).fetchone()[0]
        return bool(state == "failed")

    def _write_attempt(self, item: Item, capture: Capture, files: Sequence[CameraFile],
                       qa: dict[str, object] | None, registered: bytes | None,
                       tree: str = "photos") -> tuple[int, list[str], list[str]]:
        """Journal the attempt as `writing` naming its files, then write them; returns (id, names, hashes).

        Accepted photos go under `photos/`, rejected ones under `rejected/` (`tree`): browsing
        `photos/` never shows a photo that must not be used. Each attempt row names its own files,
        so recovery, `status --verify` and export follow the recorded paths of old runs too.
        """
        if not files:
            raise ValueError("a capture without files cannot be committed")
        all_files = list(files)
        if registered is not None:
            all_files.append(CameraFile("registered.png", registered))
        with self.transaction():
            attempt_id = int(self.db.execute(
                """INSERT INTO attempts(seq, status, started_at, commanded, readback, lights, frame_id, qa)
                   VALUES (?, 'writing', ?, ?, ?, ?, ?, ?) RETURNING attempt_id""",
                (item.seq, capture.started_at, json.dumps(capture.commanded), json.dumps(capture.readback),
                 json.dumps(capture.lights), capture.frame_id, _json_or_none(qa))).fetchone()[0])
            rels = _photo_names(item, attempt_id, files, tree)
            if registered is not None:
                rels.append(rels[0] + ".registered.png")
            self.db.execute("UPDATE attempts SET files = ?, photo = ?, registered = ? WHERE attempt_id = ?",
                            (json.dumps(rels), rels[0], rels[-1] if registered is not None else None, attempt_id))
        hashes = [write_photo_file(self.root / rel, f.data) for rel, f in zip(rels, all_files)]
        return attempt_id, rels, hashes


def _photo_names(item: Item, attempt_id: int, files: Sequence[CameraFile], tree: str) -> list[str]:
    """<tree>/<study>/<view>/<condition>_r<rep>_a<attempt><suffix>, one per file of the shot."""
    view = PurePosixPath(item.image_id).stem
    base = f"{tree}/{item.study_id}/{view}/{item.condition.label}_r{item.rep}_a{attempt_id}"
    names: list[str] = []
    for f in files:
        suffix = PurePosixPath(f.name).suffix.lower() or ".bin"
        name = base + suffix
        while name in names:  # two files of one shot with the same suffix
            name = f"{base}_{len(names)}{suffix}"
        names.append(name)
    return names


def _file_hashes(rels: list[str], hashes: list[str], files: Sequence[CameraFile], registered: bytes | None) -> str:
    """Every file of an attempt (a RAW+JPEG pair, a registered crop) with its size and sha256."""
    sizes = [len(f.data) for f in files] + ([len(registered)] if registered is not None else [])
    return json.dumps([{"path": r, "bytes": n, "sha256": h} for r, n, h in zip(rels, sizes, hashes)])


def _timing(capture: Capture, write_started: float) -> str:
    """The attempt's stage durations with the write (journal, files, fsyncs) measured up to now."""
    return json.dumps({**capture.timing, "write": round(time.monotonic() - write_started, 6)})


def _json_or_none(value: object) -> str | None:
    return None if value is None else json.dumps(value)
