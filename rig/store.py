"""The run store: SQLite (WAL) beside a photo tree, with exactly-once captures across kill -9.

A photo is written to a temp name, fsynced, renamed and its folder fsynced; only then does one
transaction mark the attempt accepted and the item done. The attempt row is committed as `writing`
*before* its files are written, naming them, so recovery after a crash finds every half-written
file from a handful of rows instead of walking a tree of a million photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rig.devices import CameraFile
from rig.errors import ConfigError
from rig.manifest import Manifest, ManifestRow

SCHEMA_VERSION = "4"  # 2: attempts carry the shown frame id, QA verdict and registered crop; 3: every file's hash;
#                        4: every attempt's stage durations (timing) and the pauses table
DB_NAME = "run.sqlite"

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images(image_no INTEGER PRIMARY KEY, image_id TEXT NOT NULL UNIQUE, study_id TEXT NOT NULL,
                    source TEXT NOT NULL, file TEXT NOT NULL, labels TEXT NOT NULL);
CREATE TABLE conditions(condition_no INTEGER PRIMARY KEY, label TEXT NOT NULL UNIQUE, pose TEXT NOT NULL,
                        lighting TEXT NOT NULL, targets TEXT NOT NULL, lights TEXT NOT NULL);
CREATE TABLE items(seq INTEGER PRIMARY KEY, image_no INTEGER NOT NULL, condition_no INTEGER NOT NULL,
                   rep INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                   attempts INTEGER NOT NULL DEFAULT 0, reason TEXT);
CREATE INDEX items_pending ON items(seq) WHERE state = 'pending';
CREATE TABLE attempts(attempt_id INTEGER PRIMARY KEY, seq INTEGER, status TEXT NOT NULL, reason TEXT,
                      started_at REAL NOT NULL, finished_at REAL, photo TEXT, files TEXT,
                      bytes INTEGER, sha256 TEXT, commanded TEXT, readback TEXT, lights TEXT,
                      frame_id INTEGER, qa TEXT, registered TEXT, file_hashes TEXT, timing TEXT);
CREATE UNIQUE INDEX one_accepted_per_item ON attempts(seq) WHERE status = 'accepted';
CREATE INDEX attempts_writing ON attempts(status) WHERE status = 'writing';
CREATE INDEX attempts_by_item ON attempts(seq);
CREATE TABLE pauses(pause_id INTEGER PRIMARY KEY, paused_at REAL NOT NULL, reason TEXT NOT NULL, resumed_at REAL);
"""

# Additive upgrades from a schema this rig can still resume: each step's statements, in one transaction.
_UPGRADES: dict[str | None, list[str]] = {
    "3": ["ALTER TABLE attempts ADD COLUMN timing TEXT",
          "CREATE TABLE pauses(pause_id INTEGER PRIMARY KEY, paused_at REAL NOT NULL, reason TEXT NOT NULL, "
          "resumed_at REAL)",
          "UPDATE meta SET value = '4' WHERE key = 'schema'"],
}


@dataclass(frozen=True)
class PlannedCondition:
    """A condition as planned: its label plus the resolved servo targets and light levels."""

    label: str
    pose: str
    lighting: str
    targets: dict[int, int]
    lights: dict[int, int]

    def key(self) -> str:
        return json.dumps([self.label, self.pose, self.lighting, sorted(self.targets.items()),
                           sorted(self.lights.items())])


@dataclass(frozen=True)
class Item:
    """One planned capture joined with its image and condition (loaded a page at a time)."""

    seq: int
    rep: int
    attempts: int
    image_id: str
    study_id: str
    file: Path
    condition: PlannedCondition


@dataclass(frozen=True)
class Counts:
    planned: int
    done: int
    failed: int
    pending: int
    failed_attempts: int


@dataclass(frozen=True)
class Capture:
    """Where an attempt's files go and what was recorded about the rig when it was taken."""

    seq: int
    started_at: float
    commanded: dict[int, int]
    readback: dict[str, object]
    lights: dict[int, int]
    frame_id: int | None = None  # the id the display's markers spelled for this attempt
    # Seconds per stage (move, settle, trigger, download, qa; the store adds write): where the time went.
    timing: dict[str, float] = field(default_factory=dict)


def _digest_row(h: hashlib._Hash, row: ManifestRow) -> None:
    h.update("\x1e".join((row.image_id, row.source, *row.labels)).encode() + b"\x1d")


def manifest_digest(manifest: Manifest) -> tuple[str, int]:
    """Hash of every row's identity, source path and labels, plus the row count."""
    h = hashlib.sha256("\x1f".join(manifest.label_columns).encode())
    n = 0
    for row in manifest.rows():
        _digest_row(h, row)
        n += 1
    return h.hexdigest(), n


def _checked_schema(path: Path, scan: bool = True) -> str | None:
    """The store's schema version, read through a read-only connection after SQLite's quick_check:
    an empty, foreign or damaged file is refused without a byte of it (or a WAL file) written.
    `scan=False` skips quick_check (it reads the whole file, about 1 s per million items) for a
    store this process has already checked."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            damage = conn.execute("PRAGMA quick_check(1)").fetchone()[0] if scan else "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path}: not a readable run store ({e}); restore it from a backup "
                          "or set a new 'output:'") from None
    if damage != "ok":
        detail = " ".join(str(damage).replace("*** in database main ***", "").split())
        raise ConfigError(f"{path}: the run store is damaged ({detail}); restore it from a backup "
                          "or set a new 'output:'")
    return None if row is None else str(row[0])


def _let_signals_in() -> int:
    """SQLite progress handler: running Python code during a long statement lets a signal handler run;
    one that raises (a stop) aborts the statement as `sqlite3.OperationalError: interrupted`."""
    return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """One run's database and photo tree. Only one thread writes; readers open their own RunStore."""

    def __init__(self, root: Path, checked: bool = False) -> None:
        """Open a run store; `checked`: this process already opened it once, skip the full-file scan."""
        self.root = root
        self.photos = root / "photos"
        schema = _checked_schema(root / DB_NAME, scan=not checked)  # read-only first: a file that is refused stays untouched
        if schema not in (SCHEMA_VERSION, *_UPGRADES):
            raise ConfigError(f"{root}: this run store has schema {schema}, this rig writes schema {SCHEMA_VERSION}; "
                              "finish it with the rig version that started it, or set a new 'output:'")
        self.db = sqlite3.connect(root / DB_NAME, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self.db.set_progress_handler(_let_signals_in, 100_000)  # a long --replan stays stoppable
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a power cut must not lose a committed capture
            while schema in _UPGRADES:  # a run started by the previous rig version: add what this one records
                with self.transaction():
                    for stmt in _UPGRADES[schema]:
                        self.db.execute(stmt)
                    schema = self.meta("schema")
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise ConfigError(f"{root / DB_NAME}: not a readable run store ({e}); restore it from a backup "
                              "or set a new 'output:'") from None

    def rebase_images(self, root: Path) -> None:
        """Point every image at the session's current image root: an image folder that moved (same
        images, same manifest) is not a plan change, and its items must find their files there."""
        prefix = f"{root.resolve()}/"
        first = self.db.execute("SELECT file, source FROM images LIMIT 1").fetchone()
        if first is not None and first[0] != prefix + first[1]:
            with self.transaction():
                self.db.execute("UPDATE images SET file = ? || source", (prefix,))

    def kept_by_replan(self, manifest: Manifest, conditions: Sequence[PlannedCondition], repeats: int) -> int:
        """How many done captures `replan` with this plan would keep (same image, unchanged condition, repeat)."""
        old_keys = dict(self._condition_keys())
        unchanged = [c.label for c in conditions if old_keys.get(c.label) == c.key()]
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS new_ids(image_id TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.new_ids")
        self.db.executemany("INSERT OR IGNORE INTO temp.new_ids VALUES (?)", ((r.image_id,) for r in manifest.rows()))
        kept = self.db.execute(
            f"""SELECT COUNT(*) FROM items it JOIN images im ON im.image_no = it.image_no
                JOIN conditions c ON c.condition_no = it.condition_no
                WHERE it.state = 'done' AND it.rep < ? AND c.label IN ({",".join("?" * len(unchanged))})
                AND im.image_id IN (SELECT image_id FROM temp.new_ids)""", (repeats, *unchanged)).fetchone()[0]
        self.db.execute("DROP TABLE temp.new_ids")
        return int(kept)

    @staticmethod
    def exists(root: Path) -> bool:
        return (root / DB_NAME).is_file()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------ plan

    @classmethod
    def create(cls, root: Path, session_file: Path, manifest: Manifest,
               conditions: Sequence[PlannedCondition], repeats: int) -> RunStore:
        """Create the store with its whole plan; on any error no database is left behind.

        The run folder is the caller's (`rig run` creates, locks and, if the run never starts, removes it).
        """
        root.mkdir(parents=True, exist_ok=True)
        tmp_db = root / (DB_NAME + ".new")
        try:
            for p in (tmp_db, Path(str(tmp_db) + "-wal"), Path(str(tmp_db) + "-shm")):
                p.unlink(missing_ok=True)
            conn = sqlite3.connect(tmp_db, isolation_level=None)
            conn.set_progress_handler(_let_signals_in, 100_000)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN")
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            _write_plan(conn, manifest, conditions, repeats)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", {
                "schema": SCHEMA_VERSION, "session": str(session_file), "created": str(time.time())}.items())
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        except BaseException as e:
            for p in (tmp_db, Path(str(tmp_db) + "-wal"), Path(str(tmp_db) + "-shm")):
                if not p.is_dir():
                    p.unlink(missing_ok=True)
            if isinstance(e, sqlite3.OperationalError) and "interrupted" in str(e):
                raise  # a stop signal cut the build short: the caller reports a stop, not a bad folder
            if isinstance(e, (OSError, sqlite3.OperationalError)):  # read-only folder, disk full, ...
                raise ConfigError(f"output {root}: cannot write the run store there ({getattr(e, 'strerror', None) or e}); "
                                  "make the folder writable, free space or set another 'output:'") from None
            raise
        # The database appears under its real name only once the plan is complete, and never over another.
        Path(str(tmp_db) + "-wal").unlink(missing_ok=True)
        Path(str(tmp_db) + "-shm").unlink(missing_ok=True)
        try:
            os.link(tmp_db, root / DB_NAME)
        except FileExistsError:
            raise ConfigError(f"{root}: another run created this run store first; run again to resume it") from None
        finally:
            tmp_db.unlink(missing_ok=True)
        _fsync_dir(root)
        store = cls(root)
        store.photos.mkdir(exist_ok=True)
        return store

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def record_context(self, context: dict[str, object]) -> None:
        """Keep what describes the rig from now on (rig/calibration/file.py capture_context), stamped with the
        time: each photo is described by the newest context from before it was taken."""
        contexts = [*self.contexts(), {"at": time.time(), **context}]
        with self.transaction():
            self.db.execute("INSERT INTO meta(key, value) VALUES ('contexts', ?) ON CONFLICT(key) "
                            "DO UPDATE SET value = excluded.value", (json.dumps(contexts),))

    def contexts(self) -> list[dict[str, Any]]:
        """Every recorded context, oldest first (JSON as written by `record_context`)."""
        return list(json.loads(self.meta("contexts") or "[]"))

    def add_retransmissions(self, n: int, reasons: dict[str, int] | None = None) -> None:
        """Count commands the controller link had to resend (a noisy serial line shows here first),
        in all and by reason ("no reply in time", "damaged reply", ...)."""
        with self.transaction():
            self.db.execute("""INSERT INTO meta(key, value) VALUES ('retransmissions', ?) ON CONFLICT(key)
                               DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value""", (str(n),))
            if reasons:
                total = self.retransmission_reasons()
                for why, k in reasons.items():
                    total[why] = total.get(why, 0) + k
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('retransmission_reasons', ?)",
                                (json.dumps({w: k for w, k in total.items() if k}),))

    def retransmissions(self) -> int:
        return int(self.meta("retransmissions") or 0)

    def retransmission_reasons(self) -> dict[str, int]:
        return json.loads(self.meta("retransmission_reasons") or "{}")

    def record_pause(self, reason: str) -> None:
        """Keep why the run paused or stopped (shown by `rig report`); the next run's start ends it."""
        with self.transaction():
            self.db.execute("INSERT INTO pauses(paused_at, reason) VALUES (?, ?)", (time.time(), reason))

    def end_pauses(self) -> None:
        """The run goes on: every open pause ends now."""
        with self.transaction():
            self.db.execute("UPDATE pauses SET resumed_at = ? WHERE resumed_at IS NULL", (time.time(),))

    def plan_differences(self, manifest_digest_and_rows: tuple[str, int], manifest: Manifest,
                         conditions: Sequence[PlannedCondition], repeats: int) -> list[str]:
        """What changed between the stored plan and the session file's, in words; empty if nothing."""
        changes: list[str] = []
        digest, rows = manifest_digest_and_rows
        if digest != self.meta("manifest_digest"):
            old_ids = {r[0] for r in self.db.execute("SELECT image_id FROM images")}
            new_ids = {r.image_id for r in manifest.rows()}
            added, removed = len(new_ids - old_ids), len(old_ids - new_ids)
            if added or removed:
                changes.append(f"manifest: {added} images added, {removed} removed")
            else:
                changes.append("manifest: the same images with changed paths or labels")
        old = {label: key for label, key in self._condition_keys()}
        new = {c.label: c.key() for c in conditions}
        for label in new.keys() - old.keys():
            changes.append(f"condition '{label}' added")
        for label in old.keys() - new.keys():
            changes.append(f"condition '{label}' removed")
        for label in new.keys() & old.keys():
            if new[label] != old[label]:
                changes.append(f"condition '{label}': its pose targets or light levels changed")
        if [c.label for c in conditions if c.label in old] != [l for l in old if l in new]:
            changes.append("conditions: order changed")
        old_reps = int(self.meta("repeats") or 0)
        if repeats != old_reps:
            changes.append(f"repeats: {old_reps} -> {repeats}")
        return changes

    def _condition_keys(self) -> list[tuple[str, str]]:
        return [(c.label, c.key()) for c in self._conditions().values()]

    def _conditions(self) -> dict[int, PlannedCondition]:
        out = {}
        for no, label, pose, lighting, targets, lights in self.db.execute(
                "SELECT condition_no, label, pose, lighting, targets, lights FROM conditions ORDER BY condition_no"):
            out[no] = PlannedCondition(label, pose, lighting,
                                       {int(k): v for k, v in json.loads(targets).items()},
                                       {int(k): v for k, v in json.loads(lights).items()})
        return out

    def replan(self, manifest: Manifest, conditions: Sequence[PlannedCondition], repeats: int) -> int:
        """Replace the plan, keeping every accepted capture whose image, condition and repeat remain.

        Returns how many accepted captures were kept. Captures no longer planned stay in the
        attempts table as `dropped`, with their photos, so nothing taken is ever lost.
        """
        old_keys = dict(self._condition_keys())
        with self.transaction():
            for t in ("items", "images", "conditions"):
                self.db.execute(f"ALTER TABLE {t} RENAME TO old_{t}")
            self.db.execute("DROP INDEX items_pending")
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                if any(f"TABLE {t}(" in stmt or f"ON {t}(" in stmt for t in ("items", "images", "conditions")):
                    self.db.execute(stmt)
            _write_plan(self.db, manifest, conditions, repeats)
            unchanged = [c.label for c in conditions if old_keys.get(c.label) == c.key()]
            self.db.execute("CREATE TEMP TABLE keep_labels(label TEXT PRIMARY KEY)")
            self.db.executemany("INSERT INTO keep_labels VALUES (?)", [(l,) for l in unchanged])
            self.db.execute(
                """CREATE TEMP TABLE seq_map AS
                   SELECT o.seq AS old_seq, n.seq AS new_seq
                   FROM old_items o
                   JOIN old_images oi ON oi.image_no = o.image_no
                   JOIN old_conditions oc ON oc.condition_no = o.condition_no
                   JOIN keep_labels k ON k.label = oc.label
                   JOIN images ni ON ni.image_id = oi.image_id
                   JOIN conditions nc ON nc.label = oc.label
                   JOIN items n ON n.image_no = ni.image_no AND n.condition_no = nc.condition_no
                                AND n.rep = o.rep""")
            self.db.execute("CREATE INDEX temp.seq_map_old ON seq_map(old_seq)")
            self.db.execute(
                """UPDATE attempts SET seq = (SELECT new_seq FROM seq_map WHERE old_seq = attempts.seq)""")
            self.db.execute(
                """UPDATE attempts SET status = 'dropped', reason = 'no longer in the plan after --replan'
                   WHERE seq IS NULL AND status = 'accepted'""")
            self.db.execute(
                """UPDATE items SET state = 'done' WHERE seq IN
                   (SELECT seq FROM attempts WHERE status = 'accepted')""")
            self.db.execute(
                """UPDATE items SET attempts = (SELECT COUNT(*) FROM attempts a WHERE a.seq = items.seq
                                                AND a.status IN ('failed', 'rejected', 'accepted'))""")
            for t in ("items", "images", "conditions"):
                self.db.execute(f"DROP TABLE old_{t}")
            self.db.execute("DROP TABLE temp.seq_map")
            self.db.execute("DROP TABLE temp.keep_labels")
        return self.db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]

    # ------------------------------------------------------------ recovery and reading

    def recover(self) -> int:
        """Undo attempts a crash left half-written: delete their files, mark them interrupted."""
        rows = self.db.execute("SELECT attempt_id, files FROM attempts WHERE status = 'writing'").fetchall()
        for attempt_id, files in rows:
            for rel in json.loads(files or "[]"):
                final = self.root / rel
                final.unlink(missing_ok=True)
                _tmp_name(final).unlink(missing_ok=True)
            with self.transaction():
                self.db.execute(
                    """UPDATE attempts SET status = 'interrupted', finished_at = ?,
                       reason = 'the run stopped before this photo was committed' WHERE attempt_id = ?""",
                    (time.time(), attempt_id))
        return len(rows)

    def next_frame_id(self) -> int:
        """First frame id for this run: above every id an attempt has recorded."""
        last = self.db.execute("SELECT MAX(frame_id) FROM attempts").fetchone()[0]
        return 1 if last is None else int(last) + 1

    def pending_after(self, seq: int, limit: int = 64) -> list[Item]:
        """The next pending items in plan order, a page at a time."""
        conditions = self._conditions()
        rows = self.db.execute(
            """SELECT it.seq, it.rep, it.attempts, im.image_id, im.study_id, im.file, it.condition_no
               FROM items it JOIN images im ON im.image_no = it.image_no
               WHERE it.state = 'pending' AND it.seq > ? ORDER BY it.seq LIMIT ?""", (seq, limit)).fetchall()
        return [Item(s, rep, att, iid, sid, Path(f), conditions[c]) for s, rep, att, iid, sid, f, c in rows]

    def item(self, seq: int) -> Item:
        rows = self.db.execute(
            """SELECT it.seq, it.rep, it.attempts, im.image_id, im.study_id, im.file, it.condition_no
               FROM items it JOIN images im ON im.image_no = it.image_no WHERE it.seq = ?""", (seq,)).fetchone()
        s, rep, att, iid, sid, f, c = rows
        return Item(s, rep, att, iid, sid, Path(f), self._conditions()[c])

    def counts(self) -> Counts:
        by_state = dict(self.db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        failed_attempts = self.db.execute(
            "SELECT COUNT(*) FROM attempts WHERE status IN ('failed', 'interrupted', 'rejected', 'lost')").fetchone()[0]
        planned = sum(by_state.values())
        return Counts(planned, by_state.get("done", 0), by_state.get("failed", 0),
                      by_state.get("pending", 0), failed_attempts)

    def recent_rate(self, window: int = 50) -> float | None:
        """Accepted captures per second over the last `window` captures (None if too few)."""
        times = [r[0] for r in self.db.execute(
            "SELECT finished_at FROM attempts WHERE status = 'accepted' ORDER BY finished_at DESC LIMIT ?",
            (window,))]
        if len(times) < 2 or times[0] <= times[-1]:
            return None
        return (len(times) - 1) / (times[0] - times[-1])

    def failure_kinds(self) -> dict[str, int]:
        """Failed, rejected and interrupted attempts by kind of reason ("wrong frame", "coverage", ...)."""
        kinds: dict[str, int] = {}
        for status, reason in self.db.execute(
                "SELECT status, reason FROM attempts WHERE status IN ('failed', 'rejected', 'interrupted', 'lost')"):
            if status == "interrupted":
                found = ["interrupted by a stop"]
            else:  # "qa: wrong frame: ...; sharpness: ..." -> wrong frame, sharpness
                found = [f"{status} ({k})" for k in REASON_KIND.findall((reason or "").removeprefix("qa: "))]
            for kind in found or [status]:
                kinds[kind] = kinds.get(kind, 0) + 1
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))

    def failed_items(self, limit: int = 20) -> list[tuple[str, str, int, str]]:
        return self.db.execute(
            """SELECT im.image_id, c.label, it.rep, it.reason FROM items it
               JOIN images im ON im.image_no = it.image_no JOIN conditions c ON c.condition_no = it.condition_no
               WHERE it.state = 'failed' ORDER BY it.seq LIMIT ?""", (limit,)).fetchall()

    def accepted(self) -> Iterator[tuple[object, ...]]:
        """Every accepted capture with its image and condition, in plan order, for export."""
        yield from self.db.execute(
            """SELECT im.study_id, im.image_id, im.source, im.labels, c.label, it.rep, a.attempt_id,
                      a.photo, a.sha256, a.registered, a.file_hashes
               FROM attempts a JOIN items it ON it.seq = a.seq
               JOIN images im ON im.image_no = it.image_no JOIN conditions c ON c.condition_no = it.condition_no
               WHERE a.status = 'accepted' ORDER BY it.seq""")

    def accepted_captures(self) -> Iterator[dict[str, object]]:
        """Every accepted capture with its image, condition and what was recorded when it was taken,
        in plan order (the export's rows)."""
        cur = self.db.execute(
            """SELECT im.study_id AS study, im.image_id, im.source, im.labels, c.label AS condition, c.pose,
                      c.lighting, it.rep, a.attempt_id AS attempt, a.photo, a.sha256, a.registered, a.file_hashes,
                      a.commanded, a.readback, a.lights, a.started_at, a.frame_id, a.qa
               FROM attempts a JOIN items it ON it.seq = a.seq
               JOIN images im ON im.image_no = it.image_no JOIN conditions c ON c.condition_no = it.condition_no
               WHERE a.status = 'accepted' ORDER BY it.seq""")
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))

    def kept_files(self) -> Iterator[tuple[str, str, dict[str, object]]]:
        """(attempt status, what it shows, {path, bytes, sha256}) of every file the run keeps."""
        for status, image_id, label, rep, files in self.db.execute(
                """SELECT a.status, im.image_id, c.label, it.rep, a.file_hashes FROM attempts a
                   LEFT JOIN items it ON it.seq = a.seq LEFT JOIN images im ON im.image_no = it.image_no
                   LEFT JOIN conditions c ON c.condition_no = it.condition_no
                   WHERE a.file_hashes IS NOT NULL ORDER BY a.attempt_id"""):
            shows = f"{image_id} {label} r{rep}" if image_id is not None else "no longer planned"
            for f in json.loads(files):
                yield status, shows, f

    # ------------------------------------------------------------ writing captures

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
        with self.transaction():
            self.db.execute(
                """INSERT INTO attempts(seq, status, reason, started_at, finished_at, frame_id, commanded, readback,
                                       lights, timing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (seq, "failed" if max_attempts is not None else "lost", reason, capture.started_at if capture else now, now, capture.frame_id if capture else None,
                 *(_json_or_none(x) for x in ((capture.commanded, capture.readback, capture.lights,
                                               capture.timing or None) if capture else (None, None, None, None)))))
            if max_attempts is not None:
                self.db.execute(
                    """UPDATE items SET attempts = attempts + 1, reason = ?,
                       state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END WHERE seq = ?""",
                    (reason, max_attempts, seq))
            state = self.db.execute("SELECT state FROM items WHERE seq = ?", (seq,)).fetchone()[0]
        return state == "failed"

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
            self.db.execute(
                """UPDATE items SET attempts = attempts + 1, reason = ?,
                   state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'pending' END WHERE seq = ?""",
                (reason, max_attempts, item.seq))
            state = self.db.execute("SELECT state FROM items WHERE seq = ?", (item.seq,)).fetchone()[0]
        return state == "failed"

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
            attempt_id = self.db.execute(
                """INSERT INTO attempts(seq, status, started_at, commanded, readback, lights, frame_id, qa)
                   VALUES (?, 'writing', ?, ?, ?, ?, ?, ?) RETURNING attempt_id""",
                (item.seq, capture.started_at, json.dumps(capture.commanded), json.dumps(capture.readback),
                 json.dumps(capture.lights), capture.frame_id, _json_or_none(qa))).fetchone()[0]
            rels = self._photo_names(item, attempt_id, files, tree)
            if registered is not None:
                rels.append(rels[0] + ".registered.png")
            self.db.execute("UPDATE attempts SET files = ?, photo = ?, registered = ? WHERE attempt_id = ?",
                            (json.dumps(rels), rels[0], rels[-1] if registered is not None else None, attempt_id))
        hashes = [_write_atomically(self.root / rel, f.data) for rel, f in zip(rels, all_files)]
        return attempt_id, rels, hashes

    def _photo_names(self, item: Item, attempt_id: int, files: Sequence[CameraFile], tree: str) -> list[str]:
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


REASON_KIND = re.compile(r"(?:^|; )([a-z][a-z -]*):")  # "exposure: 12% ...; sharpness: ..." -> exposure, sharpness


def _file_hashes(rels: list[str], hashes: list[str], files: Sequence[CameraFile], registered: bytes | None) -> str:
    """Every file of an attempt (a RAW+JPEG pair, a registered crop) with its size and sha256."""
    sizes = [len(f.data) for f in files] + ([len(registered)] if registered is not None else [])
    return json.dumps([{"path": r, "bytes": n, "sha256": h} for r, n, h in zip(rels, sizes, hashes)])


def _timing(capture: Capture, write_started: float) -> str:
    """The attempt's stage durations with the write (journal, files, fsyncs) measured up to now."""
    return json.dumps({**capture.timing, "write": round(time.monotonic() - write_started, 6)})


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def _make_dirs_durable(folder: Path) -> None:
    """mkdir -p, then fsync the parent of every folder it created, so a power cut keeps the path."""
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    folder.mkdir(parents=True, exist_ok=True)
    for f in reversed(missing):
        _fsync_dir(f.parent)


def _write_atomically(final: Path, data: bytes) -> str:
    """temp file -> fsync -> rename -> fsync folder; returns the sha256 of what was written."""
    _make_dirs_durable(final.parent)
    tmp = _tmp_name(final)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return hashlib.sha256(data).hexdigest()


def _json_or_none(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _write_plan(db: sqlite3.Connection, manifest: Manifest, conditions: Sequence[PlannedCondition],
                repeats: int) -> None:
    """Images and conditions as rows; items as their cross product, built inside SQLite."""
    digest = hashlib.sha256("\x1f".join(manifest.label_columns).encode())

    def image_rows(rows: Iterable[ManifestRow]) -> Iterator[tuple[object, ...]]:
        for n, row in enumerate(rows):
            _digest_row(digest, row)
            yield n, row.image_id, row.study_id, row.source, str(row.file), json.dumps(row.labels)

    db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)", image_rows(manifest.rows()))
    db.executemany("INSERT INTO conditions VALUES (?, ?, ?, ?, ?, ?)",
                   [(i, c.label, c.pose, c.lighting, json.dumps(c.targets), json.dumps(c.lights))
                    for i, c in enumerate(conditions)])
    n_images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    # Condition-major order: one pose change per condition, then every repeat of every image.
    db.execute(
        """INSERT INTO items(seq, image_no, condition_no, rep)
           SELECT (c.condition_no * :reps + r.rep) * :n + i.image_no, i.image_no, c.condition_no, r.rep
           FROM conditions c
           CROSS JOIN (WITH RECURSIVE reps(rep) AS (SELECT 0 UNION ALL SELECT rep + 1 FROM reps
                                                    WHERE rep + 1 < :reps) SELECT rep FROM reps) r
           CROSS JOIN images i""",
        {"reps": repeats, "n": n_images})
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", {
        "manifest_digest": digest.hexdigest(), "manifest_rows": str(n_images),
        "label_columns": json.dumps(manifest.label_columns), "repeats": str(repeats),
        "manifest_source": manifest.describe}.items())
