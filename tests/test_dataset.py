"""A data set an ML user can use as it is: masked photos without the fiducial markers, the capture
facts in captures.csv, a dataset card, and a run folder whose photo tree holds only usable photos."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import rig_file, run_rig, session_file

NEW_COLUMNS = ["Pose", "Lighting", "Pulses", "PanDeg", "TiltDeg", "Lights", "CapturedAt", "Sharpness", "Margin",
               "Clipped", "FrameId", "Rig", "Calibration"]


@pytest.fixture(scope="module")
def run_with_rejects(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> tuple[Path, Path, Path]:
    """A finished run whose display lags at random, so QA rejects (and keeps) some photos:
    (session file, rig file, run folder)."""
    d = tmp_path_factory.mktemp("dataset")
    rig = rig_file(d, sim={"display_lag_frames": [0, 3]})
    session = session_file(d, phantoms, rig, qa={"save_registered": True}, retries=6)
    result = run_rig("run", str(session), timeout=600)
    assert result.returncode == 0, result.stderr
    return session, rig, d / "run"


def _export(session: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    result = run_rig("export", str(session), "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    with open(out / "captures.csv", newline="") as f:
        return list(csv.DictReader(f))


def _attempts(run: Path) -> dict[int, tuple[str, str, list[str]]]:
    with sqlite3.connect(run / "run.sqlite") as db:
        return {a: (status, photo, json.loads(files or "[]")) for a, status, photo, files in db.execute(
            "SELECT attempt_id, status, photo, files FROM attempts")}


def test_rejected_photos_are_kept_out_of_the_accepted_photo_tree(run_with_rejects: tuple[Path, Path, Path]) -> None:
    _, _, run = run_with_rejects
    attempts = _attempts(run)
    rejected = [files for status, _, files in attempts.values() if status == "rejected"]
    assert rejected, "the lagging display should have made QA reject some photos"
    accepted = {f for status, _, files in attempts.values() if status == "accepted" for f in files}
    in_photos = {p.relative_to(run).as_posix() for p in (run / "photos").rglob("*") if p.is_file()}
    assert in_photos == accepted  # browsing photos/ shows only photos that may be used
    for files in rejected:
        for f in files:
            assert f.startswith("rejected/") and (run / f).is_file()
    verified = run_rig("status", str(run_with_rejects[0]), "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _marker_mask(studio: object, layout: object, pulses: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Ground truth: the photo pixels the display's markers land on (from the studio's geometry)."""
    mask = np.zeros(shape[:2], np.uint8)
    m = layout.marker  # type: ignore[attr-defined]
    for _, _, x, y in layout.slots():  # type: ignore[attr-defined]
        square = np.array([[x, y], [x + m, y], [x + m, y + m], [x, y + m]], np.float64)
        quad = studio.screen_points(pulses, square, layout.width, layout.height)  # type: ignore[attr-defined]
        cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def test_masked_export_leaves_no_marker_pixel_and_keeps_the_xray_as_shot(
        tmp_path: Path, run_with_rejects: tuple[Path, Path, Path]) -> None:
    from rig.config import load_rig
    from rig.fiducials import fiducial_layout
    from rig.sim.camera import truth
    from rig.sim.studio import Studio

    session, rig_path, run = run_with_rejects
    rows = _export(session, tmp_path / "masked", "--photos", "masked")
    rig = load_rig(rig_path)
    studio = Studio(rig)
    layout = fiducial_layout(rig.display.width, rig.display.height)
    attempts = _attempts(run)
    marker_px = left = shown_in_full = kept = xray_px = 0
    for row in rows:
        original = (run / attempts[int(row["Attempt"])][1]).read_bytes()
        full = cv2.cvtColor(cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        masked_file = tmp_path / "masked" / row["Path"]
        assert hashlib.sha256(masked_file.read_bytes()).hexdigest() == row["SHA256"]
        masked = cv2.cvtColor(cv2.imread(str(masked_file), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert masked.shape == full.shape  # the photo as shot: same size, same perspective
        pulses = truth(original)[0]
        markers = _marker_mask(studio, layout, pulses, full.shape)
        marker_px += int(markers.sum())
        left += int((masked[markers].max(axis=1) > 0).sum())
        shown_in_full += int((full[markers].max(axis=1) > 0).sum())
        # The x-ray area (its true quadrilateral, 2 px inside its edges) is untouched.
        inside = np.zeros(full.shape[:2], np.uint8)
        quad = _xray_quad(studio, layout, rig, pulses, run, row)
        cv2.fillConvexPoly(inside, np.round(quad * 16).astype(np.int32), 1, cv2.LINE_8, shift=4)
        inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)
        xray_px += int(inside.sum())
        kept += int((masked[inside] == full[inside]).all(axis=1).sum())
    share = left / marker_px
    print(f"\nmasked export: {left} of {marker_px} marker pixels left ({share:.4%}); the full photos show "
          f"{shown_in_full / marker_px:.1%} of them; {kept / xray_px:.4%} of the x-ray area kept as shot")
    assert shown_in_full / marker_px > 0.95  # the measure sees markers where they are
    assert left == 0
    assert kept == xray_px


def _xray_quad(studio: object, layout: object, rig: object, pulses: tuple[float, ...], run: Path,
               row: dict[str, str]) -> np.ndarray:
    """Ground truth: where the letterboxed x-ray of this row's source lands in the photo."""
    import imagesize

    from rig.images import letterbox_rect

    with sqlite3.connect(run / "run.sqlite") as db:
        file = db.execute("SELECT file FROM images WHERE source = ?", (row["Source"],)).fetchone()[0]
    w, h = imagesize.get(file)
    x, y, xw, xh = letterbox_rect(w, h, layout.width, layout.height, layout.band)  # type: ignore[attr-defined]
    rect = np.array([[x, y], [x + xw, y], [x + xw, y + xh], [x, y + xh]], np.float64)
    return studio.screen_points(pulses, rect, layout.width, layout.height)  # type: ignore[attr-defined]


def test_full_and_registered_photos_remain(tmp_path: Path, run_with_rejects: tuple[Path, Path, Path]) -> None:
    session, _, run = run_with_rejects
    attempts = _attempts(run)
    with sqlite3.connect(run / "run.sqlite") as db:
        shas = dict(db.execute("SELECT attempt_id, sha256 FROM attempts WHERE status = 'accepted'"))
    full = _export(session, tmp_path / "full", "--photos", "full")
    assert {int(r["Attempt"]): r["SHA256"] for r in full} == shas  # the camera's own files, unchanged
    for r in full:
        assert (tmp_path / "full" / r["Path"]).read_bytes() == (run / attempts[int(r["Attempt"])][1]).read_bytes()
    registered = _export(session, tmp_path / "registered", "--photos", "registered")
    for r in registered:
        crop = tmp_path / "registered" / r["Path"]
        assert r["Path"] == r["Registered"] and hashlib.sha256(crop.read_bytes()).hexdigest() == r["SHA256"]


def test_captures_csv_carries_the_capture_facts_after_the_chexpert_columns(
        tmp_path: Path, phantoms: Path, run_with_rejects: tuple[Path, Path, Path]) -> None:
    session, rig_path, run = run_with_rejects
    rows = _export(session, tmp_path / "export")
    with open(phantoms / "train.csv", newline="") as f:
        labels = [c for c in next(csv.reader(f)) if c != "Path"]
    header = list(rows[0].keys())
    assert header == ["Path", "Study", "Source", *labels, "Condition", "Attempt", "SHA256", "Registered",
                      *NEW_COLUMNS]
    from rig.config import load_rig

    rig = load_rig(rig_path)
    with sqlite3.connect(run / "run.sqlite") as db:
        facts = {a: (json.loads(rb), json.loads(qa), fid, started) for a, rb, qa, fid, started in db.execute(
            "SELECT attempt_id, readback, qa, frame_id, started_at FROM attempts WHERE status = 'accepted'")}
    conditions = {("front", "bright"), ("left", "dim"), ("right_high", "left_only")}
    for r in rows:
        readback, qa, frame_id, started = facts[int(r["Attempt"])]
        assert (r["Pose"], r["Lighting"]) in conditions
        pulses = json.loads(r["Pulses"])
        assert pulses == {name: readback["positions"][s.channel] for name, s in rig.servos.items()}
        assert json.loads(r["Lights"]) == {name: readback["lights"][lamp.channel] for name, lamp in rig.lights.items()}
        assert r["PanDeg"] == r["TiltDeg"] == ""  # this rig has no angle calibration
        assert r["CapturedAt"].endswith("Z") and r["CapturedAt"].startswith("20")
        from datetime import datetime
        assert abs(datetime.fromisoformat(r["CapturedAt"].replace("Z", "+00:00")).timestamp() - started) < 0.01
        assert float(r["Sharpness"]) == qa["sharpness"] and float(r["Margin"]) == qa["margin_px"]
        assert float(r["Clipped"]) == qa["clipped"] and int(r["FrameId"]) == frame_id
        assert r["Rig"] == rig.name and r["Calibration"] == ""


def test_the_export_has_a_dataset_card_that_says_how_it_was_made(
        tmp_path: Path, run_with_rejects: tuple[Path, Path, Path]) -> None:
    import rig

    session, rig_path, run = run_with_rejects
    rows = _export(session, tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    with sqlite3.connect(run / "run.sqlite") as db:
        rejected = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'rejected'").fetchone()[0]
    for fact in (f"rig {rig.__version__}", str(session), "sim-rig", "front-bright", "left-dim",
                 "right_high-left_only", f"{len(rows)} photos", "24 planned", f"{rejected} rejected",
                 "min_sharpness", "0.6", "max_clipped", "min_margin", "masked", "no calibration",
                 "Pulses", "CapturedAt"):
        assert fact in card, f"the dataset card does not say {fact!r}:\n{card}"


def test_pan_tilt_and_calibration_are_those_in_force_when_the_photos_were_taken(tmp_path: Path,
                                                                                 phantoms: Path) -> None:
    """With an angle calibration (here fitted to the studio's true joint angles), PanDeg and TiltDeg are the
    camera arm's angles at the confirmed pulses, and Calibration names the file; a recalibration after the
    run does not rewrite what the earlier photos say."""
    from rig.calibration import file as calibration
    from rig.config import load_rig
    from rig.sim.camera import truth
    from rig.sim.studio import Studio

    rig_path = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig_path)
    rig = load_rig(rig_path)
    studio = Studio(rig)
    cal = calibration.load_or_new(rig_path, rig)
    for servo, joint in (("camera_pan", studio.sim.arm.pan), ("camera_tilt", studio.sim.arm.tilt)):
        pulses = np.arange(1000, 2001, 50)
        angles = [studio.joint_angle(servo, joint, tuple(float(p) if ch == rig.servos[servo].channel else 1500.0
                                                  for ch in range(4))) for p in pulses]
        cal.angles[servo] = calibration.AngleRecord(
            created="2026-11-30T00:00:00+00:00", method="fitted to the studio's truth", samples=len(pulses),
            coeffs=[float(c) for c in np.polyfit(pulses, angles, 2)], rms_deg=0.0, max_deg=0.0,
            pulse_range=(1000, 2000))
    calibration.save(rig_path, cal)
    assert run_rig("run", str(session), "--fast").returncode == 0
    for rec in cal.angles.values():  # recalibrated later, 5 degrees off: the photos above were not taken under it
        rec.coeffs[-1] += 5.0
        rec.created = "2026-12-01T00:00:00+00:00"
    calibration.save(rig_path, cal)
    rows = _export(session, tmp_path / "export", "--photos", "full")
    for r in rows:
        pan, tilt = studio.camera_angles(truth((tmp_path / "export" / r["Path"]).read_bytes())[0])
        assert abs(float(r["PanDeg"]) - pan) < 0.05 and abs(float(r["TiltDeg"]) - tilt) < 0.05, r
        assert r["Calibration"] == "rig.calibration.yaml@2026-11-30T00:00:00+00:00"
    card = (tmp_path / "export" / "README.md").read_text()
    assert "calibration: rig.calibration.yaml" in card and "camera_pan: pulse -> angle fit" in card


def test_photo_forms_a_run_cannot_give_are_refused_in_one_line(tmp_path: Path, phantoms: Path,
                                                               run_with_rejects: tuple[Path, Path, Path]) -> None:
    import shutil

    # A run made without registered crops cannot export them.
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), conditions=[{"pose": "front", "lighting": "dim"}])
    assert run_rig("run", str(session)).returncode == 0
    refused = run_rig("export", str(session), "--out", str(tmp_path / "reg"), "--photos", "registered")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "save_registered" in refused.stderr and not (tmp_path / "reg").exists()
    # A run whose QA records do not say where the x-ray is (an older rig's) cannot be masked.
    old = tmp_path / "old"
    shutil.copytree(run_with_rejects[2], old / "run")
    session = session_file(old, phantoms, rig_file(old, sim={"display_lag_frames": [0, 3]}),
                           qa={"save_registered": True}, retries=6)
    with sqlite3.connect(old / "run" / "run.sqlite") as db:
        db.execute("UPDATE attempts SET qa = json_remove(qa, '$.xray') WHERE qa IS NOT NULL")
    refused = run_rig("export", str(session), "--out", str(old / "masked"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "--photos full" in refused.stderr and not (old / "masked").exists()
    assert run_rig("export", str(session), "--out", str(old / "full"), "--photos", "full").returncode == 0


def test_the_sharpness_kept_for_the_csv_and_report_tells_apart_photos_near_the_qa_limit() -> None:
    from rig.qa import Verdict

    # 0.64 and 0.55 both read 0.6 (the default limit) when kept to one decimal
    assert Verdict(sharpness=0.6437).record()["sharpness"] == 0.644
    assert Verdict(sharpness=0.5512).record()["sharpness"] == 0.551
