"""The run store at CheXpert scale: `rig status` reads counters the store keeps in the same transaction as
each write, so they always equal a full recount (old stores included, after their upgrade), and its cost
does not grow with the number of attempts (a million failed ones must not make it slow)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import rig_file, session_file

from rig.devices import CameraFile
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import load_session
from rig.store import Capture, RunStore
from rig.store.records import REASON_KIND

CONDITIONS = [{"pose": "front", "lighting": "bright"}, {"pose": "left", "lighting": "dim"},
              {"pose": "right_high", "lighting": "left_only"}]


def _plan(tmp_path: Path, rows: int = 12, conditions: list[dict[str, str]] = CONDITIONS) -> tuple[Path, Plan]:
    from rig.demo_data import write_scale_manifest

    data = tmp_path / "data"
    if not (data / "train.csv").exists():
        write_scale_manifest(data, rows)
    path = session_file(tmp_path, data, rig_file(tmp_path), conditions=conditions)
    session = load_session(path)
    return path, Plan.of(session, Manifest(session.manifest_csv, session.image_root, None))


def _recount(db: sqlite3.Connection) -> dict[str, int]:
    """What status must show, counted the slow way from every row (independent of the store's code)."""
    out: dict[str, int] = {}
    for state, n in db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"):
        out[f"item:{state}"] = n
    for status, reason in db.execute("SELECT status, reason FROM attempts"):
        out[f"attempt:{status}"] = out.get(f"attempt:{status}", 0) + 1
        if status == "interrupted":
            kinds = ["interrupted by a stop"]
        elif status in ("failed", "rejected", "lost"):
            kinds = [f"{status} ({k})" for k in REASON_KIND.findall((reason or "").removeprefix("qa: "))] or [status]
        else:
            kinds = []
        for kind in kinds:
            out[f"kind:{kind}"] = out.get(f"kind:{kind}", 0) + 1
    return out


def _shown(store: RunStore) -> dict[str, int]:
    """What the store answers `rig status` with, in the recount's terms."""
    c = store.counts()
    shown = {"item:done": c.done, "item:failed": c.failed, "item:pending": c.pending}
    items = {k: v for k, v in shown.items() if v}
    assert c.planned == sum(items.values())
    attempts = {k: v for k, v in store.counters().items() if k.startswith("attempt:")}
    kinds = {f"kind:{k}": n for k, n in store.failure_kinds().items()}
    return {**items, **attempts, **kinds}


def _capture(seq: int) -> Capture:
    return Capture(seq, time.time(), {0: 1500}, {"pos": [1500]}, {0: 60})


def _mixed_writes(store: RunStore) -> None:
    """Every kind of write a run makes: accepted, failed (counted and not), rejected (to final failure),
    an attempt a crash left half-written and its recovery, then the operator's --retry-failed."""
    items = store.pending_after(-1, 12)
    photo = [CameraFile("shot.jpg", b"jpeg bytes")]
    store.commit_photo(items[0], _capture(items[0].seq), photo)
    store.record_failure(items[1].seq, "camera: no photo in time", max_attempts=3)
    store.record_failure(items[1].seq, "camera went away", max_attempts=None)
    for _ in range(2):
        store.commit_rejected(items[2], _capture(items[2].seq), photo,
                              "qa: wrong frame: saw 7; sharpness: 3.1 < 8", max_attempts=2)
    for _ in range(3):
        store.record_failure(items[3].seq, "image: cannot decode", max_attempts=3)
    store._write_attempt(items[4], _capture(items[4].seq), photo, None, None)  # then the process died
    store.recover()
    assert store.retry_failed() == 2


def test_status_counters_equal_a_full_recount_after_every_kind_of_write(tmp_path: Path) -> None:
    path, plan = _plan(tmp_path)
    store = RunStore.create(tmp_path / "run", path, plan)
    assert _shown(store) == _recount(store.db) == {"item:pending": 36}
    _mixed_writes(store)
    assert _shown(store) == _recount(store.db)
    assert _shown(store)["kind:rejected (wrong frame)"] == 2 and _shown(store)["item:done"] == 1

    # A replan that drops a condition and adds one: items rebuilt, the dropped capture's attempt re-counted.
    _, replanned = _plan(tmp_path, conditions=[CONDITIONS[1], {"pose": "front", "lighting": "dim"}])
    store.replan(replanned)
    assert _shown(store) == _recount(store.db)
    assert _shown(store)["attempt:dropped"] == 1
    store.close()


def _as_schema_4(db_file: Path) -> None:
    """The store as the previous rig version left it: no counters, their triggers or the new indexes."""
    with sqlite3.connect(db_file) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        for name in ("items_failed", "attempts_accepted_at", "attempts_frame"):
            db.execute(f"DROP INDEX {name}")
        db.execute("DROP TABLE counters")
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")
    db.close()


def test_an_upgraded_store_counts_what_it_held_before(tmp_path: Path) -> None:
    path, plan = _plan(tmp_path)
    store = RunStore.create(tmp_path / "run", path, plan)
    _mixed_writes(store)
    expected = _recount(store.db)
    store.close()
    _as_schema_4(tmp_path / "run" / "run.sqlite")

    upgraded = RunStore(tmp_path / "run")
    assert _shown(upgraded) == expected
    store_items = upgraded.pending_after(-1, 1)
    upgraded.record_failure(store_items[0].seq, "camera: no photo in time", max_attempts=1)  # counted from now on
    assert _shown(upgraded) == _recount(upgraded.db)
    upgraded.close()


def _status_steps(store: RunStore) -> int:
    """SQLite virtual-machine steps of what `rig status` and a resume ask the store (a measure of the
    work done that, unlike time, does not depend on the machine's load)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    store.db.set_progress_handler(count, 100)
    store.counts()
    store.failure_kinds()
    store.failed_items()
    store.recent_rate()
    store.next_frame_id()
    store.db.set_progress_handler(None, 0)
    return steps


@pytest.mark.parametrize("failed", [10_000])
def test_status_does_not_rescan_the_attempts(tmp_path: Path, failed: int) -> None:
    path, plan = _plan(tmp_path, rows=2000)
    store = RunStore.create(tmp_path / "run", path, plan)
    _mixed_writes(store)
    few = _status_steps(store)
    store.db.execute("PRAGMA synchronous=OFF")  # the test's own speed: these commits need not survive a power cut
    for k in range(failed):  # as a long run with a broken camera leaves it: one failed attempt after another
        store.record_failure(k % 6000, f"camera: no photo in time (try {k})", max_attempts=None)
    many = _status_steps(store)
    assert many <= 2 * few + 10, f"status did {many} steps with {failed} more failed attempts, {few} before"
    assert store.failure_kinds()["lost (camera)"] == failed
    store.close()


def test_the_scale_manifest_reads_as_a_chexpert_manifest(tmp_path: Path) -> None:
    from rig.demo_data import CHEXPERT_COLUMNS, write_scale_manifest

    csv_path = write_scale_manifest(tmp_path, 500)
    rows = list(Manifest(csv_path, tmp_path, None).rows())
    assert len(rows) == 500 and len({r.image_id for r in rows}) == 500
    assert Manifest(csv_path, tmp_path, None).label_columns == CHEXPERT_COLUMNS[1:]
    assert 300 < len({r.study_id for r in rows}) < 500  # several views per study, as in CheXpert


@pytest.mark.parametrize("columns", [["Sex", "Note"], []])
def test_a_plan_built_from_the_kept_rows_equals_one_built_by_parsing(tmp_path: Path, columns: list[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A new run reads its manifest once (for the digest) and builds the store from the rows it kept:
    the same images, labels and digest as a store built by parsing the CSV, tricky labels included."""
    from rig.plan import manifest_digest

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing remembered: the digest reads the CSV

    data = tmp_path / "data"
    data.mkdir()
    labels = [["Male", 'say "hi"'], ["", "é\\x"], ["Female", ""], ["1.0", "-1.0"]] if columns else [[]] * 4
    lines = [",".join(["Path", *columns])]
    for k, row in enumerate(labels):
        quoted = ['"' + v.replace('"', '""') + '"' for v in row]
        lines.append(",".join([f"CheXpert-v1.0-small/train/patient{k:05d}/study1/view1_frontal.jpg", *quoted]))
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    path = session_file(tmp_path, data, rig_file(tmp_path))
    session = load_session(path)

    def built(name: str, digest_first: bool) -> tuple[list[tuple[object, ...]], str | None, tuple[str, int] | None]:
        manifest = Manifest(session.manifest_csv, session.image_root, None)
        digest = manifest_digest(manifest) if digest_first else None
        assert (manifest.kept_rows() is not None) == digest_first
        store = RunStore.create(tmp_path / name, path, Plan.of(session, manifest))
        assert manifest.kept_rows() is None  # let go once the store has them
        rows = store.db.execute("SELECT * FROM images ORDER BY image_no").fetchall()
        stored = store.meta("manifest_digest")
        store.close()
        return rows, stored, digest

    kept_rows, kept_digest, digest = built("kept", True)
    parsed_rows, parsed_digest, _ = built("parsed", False)
    assert kept_rows == parsed_rows and len(kept_rows) == 4
    assert digest is not None and kept_digest == parsed_digest == digest[0]


def test_a_status_that_upgrades_an_unchecked_store_does_not_mark_it_clean(tmp_path: Path) -> None:
    """The last run of the previous rig version crashed (no clean-close mark); `rig status` opens without
    quick_check and upgrades the schema: that must not leave a mark sparing the next run its check."""
    from rig.store.schema import DB_NAME, clean_mark, forget_clean

    path, plan = _plan(tmp_path)
    RunStore.create(tmp_path / "run", path, plan).close()
    db_file = tmp_path / "run" / DB_NAME
    _as_schema_4(db_file)
    forget_clean(db_file)  # a crash leaves no mark
    status = RunStore(tmp_path / "run", reading=True)
    assert status.meta("schema") == "5"
    status.close()
    assert clean_mark(db_file) is not True
