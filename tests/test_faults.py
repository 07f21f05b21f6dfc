"""Faults an overnight run meets: a full disk, two runs started at once, awkward manifests and exports."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import REPO, RIG_BIN, export_table, rig_file, run_rig, session_file

DISK_FULL_AFTER = """
import errno, sys
import rig.store.writes as writes
real, calls = writes.write_photo_file, [0]
def failing(final, data):
    calls[0] += 1
    if calls[0] > {n}:
        raise OSError(errno.ENOSPC, "No space left on device", str(final))
    return real(final, data)
writes.write_photo_file = failing
from rig.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _accepted(run: Path) -> tuple[int, int]:
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM attempts WHERE status = 'accepted'").fetchone()


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_cleanly(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    full = subprocess.run([sys.executable, "-c", DISK_FULL_AFTER.format(n=5), "run", str(session)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    assert "No space left on device" in full.stderr and f"resume with: rig run {session}" in full.stderr
    assert _accepted(tmp_path / "run")[0] == 5
    resumed = run_rig("run", str(session))
    assert resumed.returncode == 0 and "24/24 done" in resumed.stderr
    assert _accepted(tmp_path / "run") == (24, 24)
    photos = {p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run" / "photos").rglob("*.jpg")}
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        named = {r[0] for r in db.execute("SELECT photo FROM attempts WHERE photo IS NOT NULL "
                                          "AND status IN ('accepted', 'rejected')")}
    assert photos == named  # the half-written photo of the failed commit is gone


def test_two_runs_started_at_once_capture_each_item_once(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    a = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=120)[1] for p in (a, b)]
    codes = sorted((a.returncode, b.returncode))
    assert codes == [0, 2], outs
    assert any("another 'rig run' is using this run" in o for o in outs)
    assert all("Traceback" not in o for o in outs)
    assert _accepted(tmp_path / "run") == (24, 24)
    again = run_rig("run", str(session))
    assert again.returncode == 0 and "0 captured this run" in again.stderr


def test_manifests_saved_by_excel_or_in_another_encoding(tmp_path: Path, phantoms: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    text = (data / "train.csv").read_text(encoding="utf-8")
    (data / "train.csv").write_text(text, encoding="utf-8-sig")  # Excel's byte order mark
    session = session_file(tmp_path, data, rig_file(tmp_path))
    assert run_rig("run", str(session)).returncode == 0
    (data / "train.csv").write_bytes(text.replace("Female", "F\xe9male").encode("latin-1"))
    other = session_file(tmp_path, data, rig_file(tmp_path), output=str(tmp_path / "run2"))
    result = run_rig("run", str(other))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not UTF-8" in result.stderr and "save the manifest as UTF-8" in result.stderr


def test_export_keeps_images_whose_names_differ_only_by_extension(tmp_path: Path, phantoms: Path) -> None:
    import cv2

    folder = tmp_path / "images" / "case"
    folder.mkdir(parents=True)
    src = sorted((phantoms / "CheXpert-v1.0-small").rglob("*.jpg"))
    shutil.copy(src[0], folder / "img.jpg")
    cv2.imwrite(str(folder / "img.png"), cv2.imread(str(src[1])))
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), manifest={"folder": str(tmp_path / "images")},
                           conditions=[{"pose": "front", "lighting": "bright"}])
    assert run_rig("run", str(session)).returncode == 0
    out = tmp_path / "export"
    rows = export_table(session, out)
    assert len(rows) == 2 and len({r["Path"] for r in rows}) == 2
    import hashlib

    for r in rows:
        assert hashlib.sha256((out / r["Path"]).read_bytes()).hexdigest() == r["SHA256"]


def test_export_to_a_place_that_cannot_be_written_is_one_line(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), conditions=[{"pose": "front", "lighting": "dim"}])
    assert run_rig("run", str(session)).returncode == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_rig("export", str(session), "--out", str(blocker / "export"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "cannot create it" in result.stderr


def test_an_image_drive_that_goes_away_pauses_instead_of_failing_every_item(tmp_path: Path, phantoms: Path) -> None:
    import time

    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    session = session_file(tmp_path, data, rig_file(tmp_path, sim={"download_s": 0.05, "time_scale": 1.0}),
                           repeats=3)
    run = tmp_path / "run"
    proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not (run / "run.sqlite").exists() or _accepted(run)[0] < 4):
        time.sleep(0.05)
    data.rename(tmp_path / "unplugged")  # the drive with the images goes away mid-run
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 3, err
    assert "image folder" in err and "is gone" in err and "resume with: rig run" in err
    with sqlite3.connect(run / "run.sqlite") as db:
        failed = db.execute("SELECT COUNT(*) FROM items WHERE state = 'failed'").fetchone()[0]
    assert failed == 0
    (tmp_path / "unplugged").rename(data)
    resumed = run_rig("run", str(session))
    assert resumed.returncode == 0 and "72/72 done" in resumed.stderr
