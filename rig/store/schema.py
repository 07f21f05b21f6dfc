"""The run store's tables, their version, and the upgrades from older versions a run can resume.

Opening a store reads it read-only first, so an empty, foreign or damaged file is refused without a
byte written; SQLite's full-file quick_check runs then unless the store is exactly as its last clean
close left it (docs/decisions/0015). Only then does a writable connection (WAL, synchronous=FULL) open
and bring an older schema up to date, one additive step per transaction. The counters `rig status`
reads are kept by triggers, in the transaction of the write they count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path

from rig.errors import ConfigError
from rig.files import atomic_write
from rig.manifest import cache_folder
from rig.store.records import REASON_KIND

SCHEMA_VERSION = "5"  # 2: attempts carry the shown frame id, QA verdict and registered crop; 3: every file's hash;
#                        4: every attempt's stage durations (timing) and the pauses table;
#                        5: counters kept by triggers, so status reads a handful of rows at any size
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
CREATE INDEX items_failed ON items(seq) WHERE state = 'failed';
CREATE TABLE attempts(attempt_id INTEGER PRIMARY KEY, seq INTEGER, status TEXT NOT NULL, reason TEXT,
                      started_at REAL NOT NULL, finished_at REAL, photo TEXT, files TEXT,
                      bytes INTEGER, sha256 TEXT, commanded TEXT, readback TEXT, lights TEXT,
                      frame_id INTEGER, qa TEXT, registered TEXT, file_hashes TEXT, timing TEXT);
CREATE UNIQUE INDEX one_accepted_per_item ON attempts(seq) WHERE status = 'accepted';
CREATE INDEX attempts_writing ON attempts(status) WHERE status = 'writing';
CREATE INDEX attempts_by_item ON attempts(seq);
CREATE INDEX attempts_accepted_at ON attempts(finished_at) WHERE status = 'accepted';
CREATE INDEX attempts_frame ON attempts(frame_id);
CREATE TABLE pauses(pause_id INTEGER PRIMARY KEY, paused_at REAL NOT NULL, reason TEXT NOT NULL, resumed_at REAL);
CREATE TABLE counters(name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
"""

# Counters: 'item:<state>' and 'attempt:<status>' are kept by triggers, in the same statement (so the same
# transaction) as the row they count: no code path can forget them, plain SQL included. 'kind:<failure kind>'
# needs Python (REASON_KIND) and SQLite triggers cannot call it from any connection, so the store's write
# methods add them in the transaction that records the failure (`count_kinds`). The item triggers are
# created after a plan's bulk insert (one counter row instead of a million upserts).
_BUMP = ("INSERT INTO counters(name, n) VALUES ({name}, {n}) "
         "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n;")
ATTEMPT_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS attempt_added AFTER INSERT ON attempts BEGIN "
    + _BUMP.format(name="'attempt:' || new.status", n=1) + " END",
    "CREATE TRIGGER IF NOT EXISTS attempt_changed AFTER UPDATE OF status ON attempts "
    "WHEN old.status IS NOT new.status BEGIN "
    + _BUMP.format(name="'attempt:' || old.status", n=-1)
    + _BUMP.format(name="'attempt:' || new.status", n=1) + " END",
    "CREATE TRIGGER IF NOT EXISTS attempt_removed AFTER DELETE ON attempts BEGIN "
    + _BUMP.format(name="'attempt:' || old.status", n=-1) + " END",
]
ITEM_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS item_added AFTER INSERT ON items BEGIN "
    + _BUMP.format(name="'item:' || new.state", n=1) + " END",
    "CREATE TRIGGER IF NOT EXISTS item_changed AFTER UPDATE OF state ON items WHEN old.state IS NOT new.state BEGIN "
    + _BUMP.format(name="'item:' || old.state", n=-1)
    + _BUMP.format(name="'item:' || new.state", n=1) + " END",
    "CREATE TRIGGER IF NOT EXISTS item_removed AFTER DELETE ON items BEGIN "
    + _BUMP.format(name="'item:' || old.state", n=-1) + " END",
]
# A full recount: what the counters must always equal (an upgrade starts from it, a replan ends with it).
RECOUNT_ITEMS = "SELECT 'item:' || state, COUNT(*) FROM items GROUP BY state"
RECOUNT_ATTEMPTS = ("SELECT 'attempt:' || status, COUNT(*) FROM attempts GROUP BY status UNION ALL "
                    "SELECT 'kind:' || value, COUNT(*) FROM attempts, json_each(rig_failure_kinds(status, reason)) "
                    "WHERE status IN ('failed', 'rejected', 'interrupted', 'lost') GROUP BY value")


def recount_statements(items: bool = True, attempts: bool = True) -> list[str]:
    """Statements that set the item and/or attempt counters from a full recount (an upgrade, a replan)."""
    stmts = []
    if items:
        stmts += ["DELETE FROM counters WHERE name LIKE 'item:%'", f"INSERT INTO counters(name, n) {RECOUNT_ITEMS}"]
    if attempts:
        stmts += ["DELETE FROM counters WHERE name LIKE 'attempt:%' OR name LIKE 'kind:%'",
                  f"INSERT INTO counters(name, n) {RECOUNT_ATTEMPTS}"]
    return stmts


def failure_kinds(status: str | None, reason: str | None) -> list[str]:
    """The kinds an attempt counts under in `rig status`:
    "qa: wrong frame: ...; sharpness: ..." rejected -> ["rejected (wrong frame)", "rejected (sharpness)"]."""
    if status == "interrupted":
        return ["interrupted by a stop"]
    if status not in ("failed", "rejected", "lost"):
        return []
    return [f"{status} ({k})" for k in REASON_KIND.findall((reason or "").removeprefix("qa: "))] or [status]


def count_kinds(db: sqlite3.Connection, status: str, reason: str | None) -> None:
    """Count a failed, rejected, lost or interrupted attempt under its kinds; call it in the transaction
    that records the attempt with that status and reason."""
    db.executemany("INSERT INTO counters(name, n) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1",
                   [(f"kind:{kind}",) for kind in failure_kinds(status, reason)])


def add_functions(conn: sqlite3.Connection) -> None:
    """rig_failure_kinds(status, reason) for SQL: a recount of the kinds (an upgrade) runs in SQLite."""
    conn.create_function("rig_failure_kinds", 2, lambda status, reason: json.dumps(failure_kinds(status, reason)),
                         deterministic=True)

PLAN_TABLES = ("items", "images", "conditions")  # what a replan rebuilds

# Additive upgrades from a schema this rig can still resume: each step's statements, in one transaction.
UPGRADES: dict[str | None, list[str]] = {
    "3": ["ALTER TABLE attempts ADD COLUMN timing TEXT",
          "CREATE TABLE pauses(pause_id INTEGER PRIMARY KEY, paused_at REAL NOT NULL, reason TEXT NOT NULL, "
          "resumed_at REAL)",
          "UPDATE meta SET value = '4' WHERE key = 'schema'"],
    # IF NOT EXISTS: a store that already has some of it (a test makes "schema 3" from a current store) upgrades too
    "4": ["CREATE INDEX IF NOT EXISTS items_failed ON items(seq) WHERE state = 'failed'",
          "CREATE INDEX IF NOT EXISTS attempts_accepted_at ON attempts(finished_at) WHERE status = 'accepted'",
          "CREATE INDEX IF NOT EXISTS attempts_frame ON attempts(frame_id)",
          "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
          *ATTEMPT_TRIGGERS, *ITEM_TRIGGERS, *recount_statements(),
          "UPDATE meta SET value = '5' WHERE key = 'schema'"],
}


def statements(only_tables: tuple[str, ...] = ()) -> list[str]:
    """The schema's statements; with `only_tables`, just those tables and their indexes."""
    stmts = [s for s in SCHEMA.split(";") if s.strip()]
    if not only_tables:
        return stmts
    return [s for s in stmts if any(f"TABLE {t}(" in s or f"ON {t}(" in s for t in only_tables)]


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _mark_file(path: Path) -> Path:
    """Where the clean-close mark of the store at `path` is kept: in the user's cache folder, not the run
    folder (which holds only what the run made; a refused run must leave nothing there)."""
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:40]
    return cache_folder() / "stores" / f"{where}.json"


def mark_clean(path: Path) -> None:
    """After the last writer closed the store (its WAL checkpointed and gone): remember the file exactly as
    it was left, so the next open can skip quick_check. Best effort: without the mark, the next open checks."""
    if Path(f"{path}-wal").exists():
        return
    with contextlib.suppress(OSError):
        atomic_write(_mark_file(path), json.dumps(_identity(path)), make_dirs=True)


def forget_clean(path: Path) -> None:
    """The store is about to change: the mark no longer describes it."""
    with contextlib.suppress(OSError):
        _mark_file(path).unlink(missing_ok=True)


def clean_mark(path: Path) -> bool | None:
    """None: no mark (a writer is at work, or stopped without a clean close: a crash, kill -9, power cut).
    True: the store is byte for byte as this rig's last writer left it on a clean close (no WAL; same size,
    mtime, ctime and inode). False: it changed since (a copy, a restore from backup, any outside write)."""
    try:
        mark = json.loads(_mark_file(path).read_text())
    except (OSError, ValueError):
        return None
    try:
        return not Path(f"{path}-wal").exists() and bool(mark == _identity(path))
    except OSError:
        return False


def checked_schema(path: Path, scan: bool = True) -> str | None:
    """The store's schema version, read through a read-only connection after SQLite's quick_check:
    an empty, foreign or damaged file is refused without a byte of it (or a WAL file) written.

    `scan=False` skips quick_check, which reads the whole file (about 0.3 s per million items, 1 s per
    300 MB of attempts); see docs/decisions/0015 for when it runs. The read-only schema read still
    refuses an empty, foreign or cut-short file, and SQLite checks every page it reads later."""
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
