"""The open store every part shares: its folder, its one writable connection, transactions, meta.

Only one thread writes; readers open their own RunStore.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rig.errors import ConfigError
from rig.store.schema import (
    DB_NAME,
    SCHEMA_VERSION,
    UPGRADES,
    add_functions,
    checked_schema,
    clean_mark,
    forget_clean,
    let_signals_in,
    mark_clean,
)


class StoreBase:
    """One run's database and photo tree, opened (and upgraded if it is older) but nothing more."""

    def __init__(self, root: Path, checked: bool = False, reading: bool = False) -> None:
        """Open a run store, with SQLite's full-file quick_check only where it can find something (ADR 0015):
        not when `checked` (this process checked it already), not when the store is exactly as a clean close
        left it, and, when only `reading` a few rows (`rig status`), only if it changed since a clean close."""
        self.root = root
        self.photos = root / "photos"
        self._wrote = False
        path = root / DB_NAME
        mark = clean_mark(path)
        scan = not checked and (mark is False if reading else mark is not True)
        # Only a store known sound may be marked clean on close: a status that skipped the check and then
        # wrote (a schema upgrade) must not spare the next run its quick_check.
        self._sound = checked or scan or mark is True
        schema = checked_schema(path, scan=scan)  # read-only first: a refused file stays untouched
        if schema not in (SCHEMA_VERSION, *UPGRADES):
            raise ConfigError(f"{root}: this run store has schema {schema}, this rig writes schema {SCHEMA_VERSION}; "
                              "finish it with the rig version that started it, or set a new 'output:'")
        self.db = sqlite3.connect(root / DB_NAME, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            add_functions(self.db)
            self.db.set_progress_handler(let_signals_in, 100_000)  # a long --replan stays stoppable
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a power cut must not lose a committed capture
            while schema in UPGRADES:  # a run started by the previous rig version: add what this one records
                with self.transaction():
                    for stmt in UPGRADES[schema]:
                        self.db.execute(stmt)
                    schema = self.meta("schema")
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise ConfigError(f"{root / DB_NAME}: not a readable run store ({e}); restore it from a backup "
                              "or set a new 'output:'") from None

    def check_integrity(self) -> None:
        """SQLite's quick_check over the whole file (`rig status --verify`); a damaged store is one line."""
        checked_schema(self.root / DB_NAME, scan=True)

    @staticmethod
    def exists(root: Path) -> bool:
        return (root / DB_NAME).is_file()

    def close(self) -> None:
        self.db.close()
        if self._wrote and self._sound:  # the last writer out leaves the mark that spares the next open its check
            mark_clean(self.root / DB_NAME)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if not self._wrote:
            forget_clean(self.root / DB_NAME)
            self._wrote = True
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:  # any end, Ctrl-C included: nothing half-committed; re-raised
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None
