"""Failed items are retried only when the operator asks (`--retry-failed`), and a run that fails the
same check on item after item pauses with that diagnosis instead of burning every item's retakes."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from conftest import rig_file, run_rig, session_file

from rig.engine import BACKLOG


def _states(run: Path) -> dict[str, int]:
    with sqlite3.connect(run / "run.sqlite") as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())


def _attempts(run: Path, status: str) -> int:
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM attempts WHERE status = ?", (status,)).fetchone()[0]


def test_failed_items_are_retried_only_with_retry_failed(tmp_path: Path, phantoms: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    image = sorted(data.rglob("*.jpg"))[0]
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 3])  # a truncated copy: fails under each of the 3 conditions
    session = session_file(tmp_path, data, rig_file(tmp_path))
    run = tmp_path / "run"

    first = run_rig("run", str(session))
    assert first.returncode == 0, first.stderr
    hint = f"run {session} --retry-failed"
    assert hint in first.stderr.strip().splitlines()[-1], first.stderr
    assert _states(run) == {"done": 21, "failed": 3}
    status = run_rig("status", str(session))
    assert status.returncode == 0 and hint in status.stdout, status.stdout

    image.write_bytes(good)  # the operator copied the image again
    plain = run_rig("run", str(session))
    assert plain.returncode == 0 and _states(run) == {"done": 21, "failed": 3}, plain.stderr

    retried = run_rig("run", str(session), "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "re-queued 3 failed item(s)" in retried.stderr
    assert _states(run) == {"done": 24}
    assert _attempts(run, "failed") == 3  # the old attempts are kept, with their reasons
    status = run_rig("status", str(session))
    assert "--retry-failed" not in status.stdout


def test_a_streak_of_items_failing_the_same_check_pauses_the_run(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path)
    conditions = [{"pose": "front", "lighting": "flood"}, {"pose": "left", "lighting": "dim"}]
    session = session_file(tmp_path, phantoms, rig, conditions=conditions, retries=2, failure_streak=3)
    run = tmp_path / "run"
    result = run_rig("run", str(session))
    assert result.returncode == 3, result.stderr
    paused = [line for line in result.stderr.splitlines() if "paused" in line]
    assert paused, result.stderr
    assert "3 consecutive items" in paused[0] and "front-flood" in paused[0] and "clipped" in paused[0], paused[0]
    assert "Traceback" not in result.stderr
    states = _states(run)
    assert states.get("failed") == 3 and states.get("done", 0) == 0, states  # not all 8 of front-flood
    assert _attempts(run, "rejected") <= 3 * 3 + BACKLOG  # three items' retakes, plus at most what was in flight


def test_unreadable_images_in_a_row_do_not_pause_the_run(tmp_path: Path, phantoms: Path) -> None:
    """Each unreadable image is its own item's problem (one attempt each, no retakes burnt)."""
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    for image in sorted(data.rglob("*.jpg"))[:6]:
        image.write_bytes(b"not a jpeg")
    session = session_file(tmp_path, data, rig_file(tmp_path), failure_streak=3)
    result = run_rig("run", str(session))
    assert result.returncode == 0, result.stderr
    assert _states(tmp_path / "run") == {"done": 6, "failed": 18}
