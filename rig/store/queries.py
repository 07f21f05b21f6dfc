"""Reading a run: the plan's conditions, the next pending items, counts, failures, accepted captures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rig.plan import PlannedCondition
from rig.store.base import StoreBase
from rig.store.records import Counts, Item


class Queries(StoreBase):
    def conditions(self) -> dict[int, PlannedCondition]:
        """The stored plan's conditions by number, in plan order."""
        out = {}
        for no, label, pose, lighting, targets, lights in self.db.execute(
                "SELECT condition_no, label, pose, lighting, targets, lights FROM conditions ORDER BY condition_no"):
            out[no] = PlannedCondition(label, pose, lighting,
                                       {int(k): v for k, v in json.loads(targets).items()},
                                       {int(k): v for k, v in json.loads(lights).items()})
        return out

    def next_frame_id(self) -> int:
        """First frame id for this run: above every id an attempt has recorded."""
        last = self.db.execute("SELECT MAX(frame_id) FROM attempts").fetchone()[0]
        return 1 if last is None else int(last) + 1

    def pending_after(self, seq: int, limit: int = 64) -> list[Item]:
        """The next pending items in plan order, a page at a time."""
        conditions = self.conditions()
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
        return Item(s, rep, att, iid, sid, Path(f), self.conditions()[c])

    def counts(self) -> Counts:
        """Items by state and failed attempts, from the counters the triggers keep (no scan at any size)."""
        n = self.counters()
        failed_attempts = sum(n.get(f"attempt:{s}", 0) for s in ("failed", "interrupted", "rejected", "lost"))
        return Counts(sum(v for k, v in n.items() if k.startswith("item:")), n.get("item:done", 0),
                      n.get("item:failed", 0), n.get("item:pending", 0), failed_attempts)

    def counters(self) -> dict[str, int]:
        """Every counter ('item:<state>', 'attempt:<status>', 'kind:<failure kind>') that is not zero."""
        return dict(self.db.execute("SELECT name, n FROM counters WHERE n != 0").fetchall())

    def recent_rate(self, window: int = 50) -> float | None:
        """Accepted captures per second over the last `window` captures (None if too few)."""
        times = [r[0] for r in self.db.execute(
            "SELECT finished_at FROM attempts WHERE status = 'accepted' ORDER BY finished_at DESC LIMIT ?",
            (window,))]
        if len(times) < 2 or times[0] <= times[-1]:
            return None
        return float((len(times) - 1) / (times[0] - times[-1]))

    def failure_kinds(self) -> dict[str, int]:
        """Failed, rejected and interrupted attempts by kind of reason ("wrong frame", "coverage", ...),
        from the counters (rig/store/schema.py: failure_kinds says how a reason is sorted)."""
        kinds = {k.removeprefix("kind:"): n for k, n in self.counters().items() if k.startswith("kind:")}
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
