"""The run store's tables, their version, and the upgrades from older versions a run can resume.

Opening a store reads it read-only first (after SQLite's quick_check), so an empty, foreign or damaged
file is refused without a byte written; only then does a writable connection (WAL, synchronous=FULL)
open and bring an older schema up to date, one additive step per transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rig.errors import ConfigError

SCHEMA_VERSION = "4"  # 2: attempts carry the shown frame id, QA verdict and registered crop; 3: every file's hash;
#                        4: every attempt's stage durations (timing) and the pauses table
DB_NAME = "run.sqlite"

SCHEMA = """
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

PLAN_TABLES = ("items", "images", "conditions")  # what a replan rebuilds

# Additive upgrades from a schema this rig can still resume: each step's statements, in one transaction.
UPGRADES: dict[str | None, list[str]] = {
    "3": ["ALTER TABLE attempts ADD COLUMN timing TEXT",
          "CREATE TABLE pauses(pause_id INTEGER PRIMARY KEY, paused_at REAL NOT NULL, reason TEXT NOT NULL, "
          "resumed_at REAL)",
          "UPDATE meta SET value = '4' WHERE key = 'schema'"],
}


def statements(only_tables: tuple[str, ...] = ()) -> list[str]:
    """The schema's statements; with `only_tables`, just those tables and their indexes."""
    stmts = [s for s in SCHEMA.split(";") if s.strip()]
    if not only_tables:
        return stmts
    return [s for s in stmts if any(f"TABLE {t}(" in s or f"ON {t}(" in s for t in only_tables)]


def checked_schema(path: Path, scan: bool = True) -> str | None:
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


def let_signals_in() -> int:
    """SQLite progress handler: running Python code during a long statement lets a signal handler run;
    one that raises (a stop) aborts the statement as `sqlite3.OperationalError: interrupted`."""
    return 0
