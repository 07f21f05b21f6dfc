"""The demo session through the real gphoto2 driver on libgphoto2's virtual camera, killed and resumed."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from conftest import REPO, RIG_BIN, photos_show_their_sources, rig_file, run_rig, session_file


def _done(run: Path) -> int:
    if not (run / "run.sqlite").exists():
        return 0
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]


def test_gphoto2_session_survives_sigkill_and_camera_store_full(tmp_path: Path, phantoms: Path) -> None:
    rig_path = rig_file(tmp_path, camera={"kind": "sim-gphoto2"})
    # 48 items, more than one card's 26; no retakes: a photo lost to a full card must not use up an item's
    session = session_file(tmp_path, phantoms, rig_path, repeats=2, retries=0)
    run = tmp_path / "run"

    proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _done(run) < 10 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    killed_at = _done(run)
    assert 10 <= killed_at < 48

    # The virtual camera's card holds 26 photos per process: each run pauses cleanly when it is full.
    runs = []
    while _done(run) < 48 and len(runs) < 5:
        result = run_rig("run", str(session))
        runs.append(result.returncode)
        if result.returncode == 3:
            assert "cannot store more photos" in result.stderr and "resume with: rig run" in result.stderr
            assert "Traceback" not in result.stderr
        else:
            assert result.returncode == 0, result.stderr
    assert runs[-1] == 0 and 3 in runs
    with sqlite3.connect(run / "run.sqlite") as db:
        accepted = db.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM attempts WHERE status = 'accepted'").fetchone()
    assert accepted == (48, 48)
    with sqlite3.connect(run / "run.sqlite") as db:
        lost = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'lost'").fetchone()[0]
    assert lost >= 1  # the attempts the full card cost are kept, and did not fail their items
    assert photos_show_their_sources(run, rig_path) == 48


def test_a_camera_setting_the_camera_does_not_offer_is_one_line_listing_the_choices(
        tmp_path: Path, phantoms: Path) -> None:
    rig_path = rig_file(tmp_path, camera={"kind": "sim-gphoto2", "settings": {"f-number": "f/99"}})
    result = run_rig("run", str(session_file(tmp_path, phantoms, rig_path)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "camera setting 'f-number': 'f/99' is not offered; choose one of: f/2.8," in result.stderr
    assert not (tmp_path / "run").exists()
