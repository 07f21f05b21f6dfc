"""Persisting the plan (rig/plan.py's value): creating a store with it, telling what changed in a
session file since, and replacing it while every capture that still matches is kept.

Images and conditions are rows; items are their cross product, built inside SQLite in condition-major
order. A store appears under its real name only once its whole plan is written.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from rig.errors import ConfigError
from rig.files import fsync_dir
from rig.manifest import KEPT_SEPARATOR, ManifestRow
from rig.plan import ManifestDigest, Plan
from rig.store.queries import Queries
from rig.store.schema import (
    ATTEMPT_TRIGGERS,
    DB_NAME,
    ITEM_TRIGGERS,
    PLAN_TABLES,
    SCHEMA_VERSION,
    add_functions,
    let_signals_in,
    recount_statements,
    statements,
)


class PlanRecords(Queries):
    @classmethod
    def create(cls, root: Path, session_file: Path, plan: Plan) -> Self:
        """Create the store with its whole plan; on any error no database is left behind.

        The run folder is the caller's (`rig run` creates, locks and, if the run never starts, removes it).
        """
        root.mkdir(parents=True, exist_ok=True)
        tmp_db = root / (DB_NAME + ".new")
        side_files = (tmp_db, Path(str(tmp_db) + "-wal"), Path(str(tmp_db) + "-shm"))
        try:
            for p in side_files:
                p.unlink(missing_ok=True)
            conn = sqlite3.connect(tmp_db, isolation_level=None)
            conn.set_progress_handler(let_signals_in, 100_000)
            # A file nobody sees until it is complete needs no journal: every page is written once (not to
            # the WAL and again to the file), and the one fsync below makes it durable before it is linked.
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-32000")  # 32 MB: the items' pages are written once, in order
            conn.execute("BEGIN")
            add_functions(conn)
            for stmt in [*statements(), *ATTEMPT_TRIGGERS]:
                conn.execute(stmt)
            write_plan(conn, plan)
            # seq runs 0..n-1 without gaps: its maximum counts the items without a scan
            conn.execute("INSERT INTO counters VALUES ('item:pending', (SELECT COALESCE(MAX(seq) + 1, 0) FROM items))")
            for stmt in ITEM_TRIGGERS:  # after the bulk insert: every item is pending, counted at once above
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", {
                "schema": SCHEMA_VERSION, "session": str(session_file), "created": str(time.time())}.items())
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=WAL")  # what every later open uses (kept in the file's header)
            conn.close()
            with tmp_db.open("rb+") as f:
                os.fsync(f.fileno())
        except BaseException as e:  # any end, Ctrl-C included: no half-built store left; re-raised or named
            for p in side_files:
                if not p.is_dir():
                    p.unlink(missing_ok=True)
            if isinstance(e, sqlite3.OperationalError) and "interrupted" in str(e):
                raise  # a stop signal cut the build short: the caller reports a stop, not a bad folder
            if isinstance(e, (OSError, sqlite3.OperationalError)):  # read-only folder, disk full, ...
                why = getattr(e, "strerror", None) or e
                raise ConfigError(f"output {root}: cannot write the run store there ({why}); "
                                  "make the folder writable, free space or set another 'output:'") from None
            raise
        # The database appears under its real name only once the plan is complete, and never over another.
        side_files[1].unlink(missing_ok=True)
        side_files[2].unlink(missing_ok=True)
        try:
            os.link(tmp_db, root / DB_NAME)
        except FileExistsError:
            raise ConfigError(f"{root}: another run created this run store first; run again to resume it") from None
        finally:
            tmp_db.unlink(missing_ok=True)
        fsync_dir(root)
        store = cls(root, checked=True)  # written whole just now
        store.photos.mkdir(exist_ok=True)
        return store

    def rebase_images(self, root: Path) -> None:
        """Point every image at the session's current image root: an image folder that moved (same
        images, same manifest) is not a plan change, and its items must find their files there."""
        prefix = f"{root.resolve()}/"
        first = self.db.execute("SELECT file, source FROM images LIMIT 1").fetchone()
        if first is not None and first[0] != prefix + first[1]:
            with self.transaction():
                self.db.execute("UPDATE images SET file = ? || source", (prefix,))

    def plan_differences(self, manifest_digest_and_rows: tuple[str, int], plan: Plan) -> list[str]:
        """What changed between the stored plan and the session file's, in words; empty if nothing."""
        changes: list[str] = []
        digest, _rows = manifest_digest_and_rows
        if digest == self.meta("manifest_digest"):
            plan.manifest.forget_rows()  # the stored plan has them all: no need to hold them during the run
        else:
            old_ids = {r[0] for r in self.db.execute("SELECT image_id FROM images")}
            new_ids = {r.image_id for r in plan.manifest.rows()}
            added, removed = len(new_ids - old_ids), len(old_ids - new_ids)
            if added or removed:
                changes.append(f"manifest: {added} images added, {removed} removed")
            else:
                changes.append("manifest: the same images with changed paths or labels")
        old = dict(self._condition_keys())
        new = {c.label: c.key() for c in plan.conditions}
        for label in new.keys() - old.keys():
            changes.append(f"condition '{label}' added")
        for label in old.keys() - new.keys():
            changes.append(f"condition '{label}' removed")
        for label in new.keys() & old.keys():
            if new[label] != old[label]:
                changes.append(f"condition '{label}': its pose targets or light levels changed")
        if [c.label for c in plan.conditions if c.label in old] != [label for label in old if label in new]:
            changes.append("conditions: order changed")
        old_reps = int(self.meta("repeats") or 0)
        if plan.repeats != old_reps:
            changes.append(f"repeats: {old_reps} -> {plan.repeats}")
        old_window = self.meta("window") or "null"  # runs from before `window:` showed every image its own way
        if json.dumps(plan.window) != old_window:
            changes.append(f"window: {old_window} -> {json.dumps(plan.window)} (12- to 16-bit images look different)")
        return changes

    def kept_by_replan(self, plan: Plan) -> int:
        """How many done captures `replan` with this plan would keep (same image, unchanged condition, repeat)."""
        unchanged = self._unchanged_labels(plan)
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS new_ids(image_id TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.new_ids")
        self.db.executemany("INSERT OR IGNORE INTO temp.new_ids VALUES (?)",
                            ((r.image_id,) for r in plan.manifest.rows()))
        kept = self.db.execute(
            f"""SELECT COUNT(*) FROM items it JOIN images im ON im.image_no = it.image_no
                JOIN conditions c ON c.condition_no = it.condition_no
                WHERE it.state = 'done' AND it.rep < ? AND c.label IN ({",".join("?" * len(unchanged))})
                AND im.image_id IN (SELECT image_id FROM temp.new_ids)""", (plan.repeats, *unchanged)).fetchone()[0]
        self.db.execute("DROP TABLE temp.new_ids")
        return int(kept)

    def replan(self, plan: Plan) -> int:
        """Replace the plan, keeping every accepted capture whose image, condition and repeat remain.

        Returns how many accepted captures were kept. Captures no longer planned stay in the
        attempts table as `dropped`, with their photos, so nothing taken is ever lost.
        """
        unchanged = self._unchanged_labels(plan)
        with self.transaction():
            old_indexes = [r[0] for r in self.db.execute(
                f"""SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
                    AND tbl_name IN ({",".join("?" * len(PLAN_TABLES))})""", PLAN_TABLES)]
            for t in PLAN_TABLES:  # the old tables take their triggers along (dropped with them below)
                self.db.execute(f"ALTER TABLE {t} RENAME TO old_{t}")
            for index in old_indexes:  # their names are the new tables'
                self.db.execute(f"DROP INDEX {index}")
            for stmt in statements(PLAN_TABLES):
                self.db.execute(stmt)
            write_plan(self.db, plan)
            self.db.execute("CREATE TEMP TABLE keep_labels(label TEXT PRIMARY KEY)")
            self.db.executemany("INSERT INTO keep_labels VALUES (?)", [(label,) for label in unchanged])
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
            for t in PLAN_TABLES:
                self.db.execute(f"DROP TABLE old_{t}")
            for stmt in [*ITEM_TRIGGERS, *recount_statements(attempts=False)]:
                self.db.execute(stmt)
            self.db.execute("DROP TABLE temp.seq_map")
            self.db.execute("DROP TABLE temp.keep_labels")
        return int(self.db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0])

    def _condition_keys(self) -> list[tuple[str, str]]:
        return [(c.label, c.key()) for c in self.conditions().values()]

    def _unchanged_labels(self, plan: Plan) -> list[str]:
        """Labels of the conditions the new plan keeps exactly as the stored one has them (none when the
        window changed: every wide image's photo would look different)."""
        if json.dumps(plan.window) != (self.meta("window") or "null"):
            return []
        old_keys = dict(self._condition_keys())
        return [c.label for c in plan.conditions if old_keys.get(c.label) == c.key()]


def write_plan(db: sqlite3.Connection, plan: Plan) -> None:
    """Images and conditions as rows; items as their cross product, built inside SQLite."""
    manifest = plan.manifest
    digest = ManifestDigest(manifest)

    def image_rows(rows: Iterable[ManifestRow]) -> Iterator[tuple[object, ...]]:
        for n, row in enumerate(rows):
            digest.add(row)
            yield n, row.image_id, row.study_id, row.source, row.file, labels_json(row.labels)

    def kept_image_rows(kept: list[str]) -> Iterator[tuple[object, ...]]:
        """The same rows straight from the manifest's kept strings (no row objects: a second less at 223,414)."""
        assert manifest.image_root is not None
        root = manifest.image_root.resolve()
        for n, line in enumerate(kept):
            image_id, study_id, source, *rest = line.split(KEPT_SEPARATOR, 3)
            labels = rest[0] if rest else None  # None: the manifest has no label columns
            digest.add_fields(image_id, source, None if labels is None else labels.replace(KEPT_SEPARATOR, "\x1e"))
            if labels is None:
                labels_text = "[]"
            elif _PLAIN_KEPT.fullmatch(labels):
                labels_text = '["' + labels.replace(KEPT_SEPARATOR, '", "') + '"]'
            else:
                labels_text = json.dumps(labels.split(KEPT_SEPARATOR))
            yield n, image_id, study_id, source, f"{root}/{source}", labels_text

    kept = manifest.kept_rows()
    db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)",
                   kept_image_rows(kept) if kept is not None else image_rows(manifest.rows()))
    manifest.forget_rows()  # the store has them now
    db.executemany("INSERT INTO conditions VALUES (?, ?, ?, ?, ?, ?)",
                   [(i, c.label, c.pose, c.lighting, json.dumps(c.targets), json.dumps(c.lights))
                    for i, c in enumerate(plan.conditions)])
    n_images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    # Condition-major order: one pose change per condition, then every repeat of every image.
    db.execute(
        """INSERT INTO items(seq, image_no, condition_no, rep)
           SELECT (c.condition_no * :reps + r.rep) * :n + i.image_no, i.image_no, c.condition_no, r.rep
           FROM conditions c
           CROSS JOIN (WITH RECURSIVE reps(rep) AS (SELECT 0 UNION ALL SELECT rep + 1 FROM reps
                                                    WHERE rep + 1 < :reps) SELECT rep FROM reps) r
           CROSS JOIN images i""",
        {"reps": plan.repeats, "n": n_images})
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", {
        "manifest_digest": digest.hexdigest(), "manifest_rows": str(n_images),
        "label_columns": json.dumps(manifest.label_columns), "repeats": str(plan.repeats),
        "window": json.dumps(plan.window), "manifest_source": manifest.describe}.items())


_PLAIN = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII but '"' and '\\': JSON writes it as it is
_PLAIN_KEPT = re.compile(r"[\x1f !#-\[\]-~]*")  # the same, kept labels with their separator


def labels_json(labels: tuple[str, ...]) -> str:
    """json.dumps(labels), built directly when no label needs escaping (CheXpert's never do): a third
    of the time of json.dumps over 223,414 rows."""
    if _PLAIN.fullmatch("".join(labels)):
        return '["' + '", "'.join(labels) + '"]' if labels else "[]"
    return json.dumps(labels)
