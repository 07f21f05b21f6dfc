"""A session runs end to end on the simulated rig; status, export and resume behave as an operator expects."""

from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
from pathlib import Path

from conftest import export_table, photos_show_their_sources, rig_file, run_rig, session_file


def _accepted(run: Path) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT seq, photo, sha256, bytes FROM attempts WHERE status = 'accepted'").fetchall()


def test_demo_session_captures_every_item_and_exports_a_chexpert_dataset(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), repeats=2)
    result = run_rig("run", str(session))
    assert result.returncode == 0, result.stderr
    assert "48/48 done" in result.stderr  # 8 images x 3 conditions x 2 repeats

    rows = _accepted(tmp_path / "run")
    assert len(rows) == 48 and len({r[0] for r in rows}) == 48
    for _, photo, sha, size in rows:
        data = (tmp_path / "run" / photo).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha and len(data) == size

    status = run_rig("status", str(session))
    assert status.returncode == 0
    assert "48" in status.stdout and "finished" in status.stdout

    out = tmp_path / "export"
    table = export_table(session, out)
    with open(phantoms / "train.csv", newline="") as f:
        manifest = {r["Path"]: r for r in csv.DictReader(f)}
    header = list(table[0].keys())
    assert header[:3] == ["Path", "Study", "Source"]
    n = 3 + len(manifest[table[0]["Source"]]) - 1  # Path, Study, Source and the labels come first
    assert header[n:n + 4] == ["Condition", "Attempt", "SHA256", "Registered"]
    assert len(table) == 48
    for row in table:
        source = manifest[row["Source"]]
        assert all(row[col] == source[col] for col in source if col != "Path")  # labels unchanged
        photo = out / row["Path"]
        assert photo.is_file() and hashlib.sha256(photo.read_bytes()).hexdigest() == row["SHA256"]
        assert row["Path"].startswith(row["Study"] + "/")


def test_each_photo_shows_its_own_study_from_its_own_pose(tmp_path: Path, phantoms: Path) -> None:
    rig_path = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig_path)
    assert run_rig("run", str(session)).returncode == 0
    assert photos_show_their_sources(tmp_path / "run", rig_path) == 24


def test_rerun_of_a_finished_session_captures_nothing_more(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    assert run_rig("run", str(session)).returncode == 0
    again = run_rig("run", str(session))
    assert again.returncode == 0
    assert "0 captured this run" in again.stderr
    assert len(_accepted(tmp_path / "run")) == 24


def test_changed_plan_is_refused_until_replan_keeps_matching_captures(tmp_path: Path, phantoms: Path) -> None:
    rig_path = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig_path)
    assert run_rig("run", str(session)).returncode == 0
    first = {r[1] for r in _accepted(tmp_path / "run")}

    session_file(tmp_path, phantoms, rig_path, repeats=2,
                 conditions=[{"pose": "front", "lighting": "bright"}, {"pose": "left", "lighting": "bright"}])
    refused = run_rig("run", str(session))
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "repeats: 1 -> 2" in line and "'left-bright' added" in line and "'left-dim' removed" in line
    assert "--replan" in line

    replanned = run_rig("run", str(session), "--replan")
    assert replanned.returncode == 0, replanned.stderr
    assert "kept 8 captures" in replanned.stderr  # front-bright repeat 0 still matches
    rows = _accepted(tmp_path / "run")
    assert len(rows) == 32 and len({r[0] for r in rows}) == 32
    kept = {r[1] for r in rows} & first
    assert len(kept) == 8 and all("front-bright_r0" in p for p in kept)
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        dropped = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'dropped'").fetchone()[0]
    assert dropped == 16  # the photos no longer planned are kept, marked dropped


def test_missing_and_corrupt_images_fail_their_items_and_the_run_goes_on(tmp_path: Path, phantoms: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    with open(data / "train.csv", newline="") as f:
        paths = [r["Path"] for r in csv.DictReader(f)]
    (data / paths[1]).unlink()
    (data / paths[2]).write_bytes(b"not a jpeg at all")
    session = session_file(tmp_path, data, rig_file(tmp_path))
    result = run_rig("run", str(session))
    assert result.returncode == 0, result.stderr
    assert "18/24 done, 6 failed" in result.stderr
    status = run_rig("status", str(session))
    assert "image not found" in status.stdout and "cannot be decoded" in status.stdout
    assert "failed (image not found) 3" in status.stdout and "failed (image cannot be decoded) 3" in status.stdout


def test_a_plain_folder_of_images_is_a_manifest_with_study_ids_from_folders(tmp_path: Path, phantoms: Path) -> None:
    folder = tmp_path / "images"
    for i, src in enumerate(sorted((phantoms / "CheXpert-v1.0-small").rglob("*.jpg"))[:4]):
        dst = folder / f"case{i // 2}" / f"img{i}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    (folder / "case0" / "notes.txt").write_text("not an image")
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), manifest={"folder": str(folder)})
    assert run_rig("run", str(session)).returncode == 0
    out = tmp_path / "export"
    table = export_table(session, out)
    assert len(table) == 12
    assert {r["Study"] for r in table} == {"case0", "case1"}
    assert {r["Source"] for r in table} == {f"case{i // 2}/img{i}.jpg" for i in range(4)}


def test_an_image_linked_from_outside_the_root_fails_only_its_item(tmp_path: Path, phantoms: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    with open(data / "train.csv", newline="") as f:
        first = next(csv.DictReader(f))["Path"]
    outside = tmp_path / "secret.jpg"
    shutil.copy(data / first, outside)
    (data / first).unlink()
    (data / first).symlink_to(outside)
    session = session_file(tmp_path, data, rig_file(tmp_path))
    result = run_rig("run", str(session))
    assert result.returncode == 0 and "21/24 done, 3 failed" in result.stderr
    assert "leaves the image root" in run_rig("status", str(session)).stdout


def test_export_carries_registered_crops_aligned_with_their_sources(tmp_path: Path, phantoms: Path) -> None:
    import cv2

    session = session_file(tmp_path, phantoms, rig_file(tmp_path), qa={"save_registered": True},
                           conditions=[{"pose": "left", "lighting": "dim"}])
    assert run_rig("run", str(session)).returncode == 0
    out = tmp_path / "export"
    table = export_table(session, out)
    assert len(table) == 8
    for row in table:
        crop = cv2.imread(str(out / row["Registered"]), cv2.IMREAD_GRAYSCALE)
        source = cv2.imread(str(phantoms / row["Source"]), cv2.IMREAD_GRAYSCALE)
        assert crop is not None and crop.shape == source.shape
