"""Calibration against the virtual studio's ground truth, through the `rig calibrate` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, run_rig

from rig.calibration import calibration_path, load
from rig.config import load_rig
from rig.sim.studio import Studio


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A tightly framed rig (45 mm lens) calibrated with intrinsics, angles, poses and range."""
    d = tmp_path_factory.mktemp("calibrated")
    rig = yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())
    rig["sim"].update(photo_width=800, photo_height=600, time_scale=0.0, lens={"focal_mm": 45.0})
    rig["motion"].update(move_ms=0, settle_ms=0)
    rig["poses"]["left"]["camera_pan"] = 1400
    rig["poses"]["right_high"]["camera_pan"] = 1600
    path = d / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    outputs = []
    for action, extra in (("intrinsics", []), ("angles", []), ("poses", []), ("range", ["--margin", "25"])):
        result = run_rig("calibrate", action, str(path), *extra, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    return path, outputs


def _loaded(calibrated: tuple[Path, list[str]]):  # type: ignore[no-untyped-def]
    """The calibrated rig, its calibration file and the studio that knows the truth."""
    path, _ = calibrated
    rig = load_rig(path)
    cal = load(path)
    assert cal is not None
    return rig, cal, Studio(rig)


def test_intrinsics_match_the_true_lens(calibrated: tuple[Path, list[str]]) -> None:
    path, out = calibrated
    cal = load(path)
    assert cal is not None and cal.intrinsics is not None
    studio = Studio(load_rig(path))
    K = np.array(cal.intrinsics.camera_matrix)
    focal_error = abs(K[0, 0] - studio.camera_matrix[0, 0]) / studio.camera_matrix[0, 0]
    print(f"\nintrinsics: reprojection {cal.intrinsics.rms_px:.3f} px, focal error {focal_error * 100:.3f} %")
    assert cal.intrinsics.rms_px <= 0.5
    assert focal_error <= 0.01
    assert "reprojection error" in out[0]


def test_pulse_to_angle_fits_follow_the_true_joints(calibrated: tuple[Path, list[str]]) -> None:
    rig, cal, studio = _loaded(calibrated)
    for servo, rec in cal.angles.items():
        s = rig.servos[servo]
        pulses = np.linspace(max(s.min, rec.pulse_range[0]), min(s.max, rec.pulse_range[1]), 41)
        fitted = np.polyval(rec.coeffs, pulses)
        truth = []
        for us in pulses:
            p = [1500.0] * 4
            p[s.channel] = us
            if servo in ("camera_pan", "camera_tilt"):
                truth.append(studio.camera_angles(tuple(p))[0 if servo == "camera_pan" else 1])
            else:
                lamp = next(light for light in rig.sim.lights.values() if light.servo == servo)
                truth.append(lamp.deg_per_us * (us - lamp.zero_us))
        rms = float(np.sqrt(np.mean((fitted - np.array(truth)) ** 2)))
        print(f"\n{servo}: fit vs truth RMS {rms:.3f} deg over {rec.pulse_range} us ({rec.method})")
        assert rms <= 0.25, servo
    assert set(cal.angles) == set(rig.servos)


def test_pose_geometry_puts_the_screen_corners_where_they_are(calibrated: tuple[Path, list[str]]) -> None:
    rig, cal, studio = _loaded(calibrated)
    for name, rec in cal.poses.items():
        p = [float(s.park) for s in rig.servos.values()]
        for servo, us in rig.poses[name].items():
            p[rig.servos[servo].channel] = us
        truth = studio.screen_corners(tuple(p), rig.display.width, rig.display.height)
        err = np.linalg.norm(np.array(rec.corners_px) - truth, axis=1)
        print(f"\npose {name}: corner error mean {err.mean():.3f} px, max {err.max():.3f} px")
        assert err.mean() <= 1.0


def test_range_finds_the_true_limits_of_a_framed_screen(calibrated: tuple[Path, list[str]]) -> None:
    rig, cal, studio = _loaded(calibrated)
    w, h = rig.sim.photo_width, rig.sim.photo_height

    def margin(servo: str, us: int) -> float:
        p = [float(s.park) for s in rig.servos.values()]
        p[rig.servos[servo].channel] = us
        c = studio.screen_corners(tuple(p), rig.display.width, rig.display.height)
        return float(min(c[:, 0].min(), c[:, 1].min(), w - 1 - c[:, 0].max(), h - 1 - c[:, 1].max()))

    def angle(servo: str, us: int) -> float:
        channel = rig.servos[servo].channel
        return studio.camera_angles(tuple(us if i == channel else 1500.0 for i in range(4)))[
            0 if servo == "camera_pan" else 1]

    for servo in ("camera_pan", "camera_tilt"):
        s = rig.servos[servo]
        inside = [us for us in range(s.min, s.max + 1) if margin(servo, us) >= 25]
        true_lo, true_hi = sorted((angle(servo, min(inside)), angle(servo, max(inside))))
        rec = cal.ranges[servo]
        print(f"\n{servo}: found {rec.min_deg:+.2f}..{rec.max_deg:+.2f} deg, true {true_lo:+.2f}..{true_hi:+.2f}")
        assert abs(rec.min_deg - true_lo) <= 0.5 and abs(rec.max_deg - true_hi) <= 0.5
    assert cal.ranges["camera_pan"].min_us > rig.servos["camera_pan"].min  # the limit is the screen, not the servo


def test_calibration_file_sits_beside_the_rig_file_and_records_residuals(calibrated: tuple[Path, list[str]]) -> None:
    path, _ = calibrated
    text = calibration_path(path).read_text()
    assert calibration_path(path).parent == path.parent
    assert "do not edit" in text.splitlines()[0]
    data = yaml.safe_load(text)
    assert data["version"] == 1 and data["hardware_digest"]
    assert all("created" in r and "rms_deg" in r for r in data["angles"].values())
    assert "rms_px" in data["intrinsics"]
    assert "screen:" not in path.read_text()  # the hand-written rig file is untouched by measurements
    json.dumps(data)


def test_intrinsics_with_too_high_an_error_are_rejected_with_the_reason(tmp_path: Path) -> None:
    rig = yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())
    rig["sim"].update(photo_width=800, photo_height=600, time_scale=0.0)
    rig["motion"].update(move_ms=0, settle_ms=0)
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    result = run_rig("calibrate", "intrinsics", str(path), "--max-rms", "0.01", timeout=300)
    assert result.returncode == 2
    assert "intrinsics rejected: reprojection error" in result.stderr and "nothing was saved" in result.stderr
    assert not calibration_path(path).exists()


def _degree_rig(calibrated: tuple[Path, list[str]], tmp_path: Path, poses: dict[str, dict[str, object]]) -> Path:
    """A copy of the calibrated rig (with its calibration file) whose poses are given in degrees."""
    src, _ = calibrated
    rig = yaml.safe_load(src.read_text())
    rig["poses"] = poses
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    calibration_path(path).write_text(calibration_path(src).read_text())
    return path


def test_a_session_with_poses_in_degrees_lands_on_those_angles(
        calibrated: tuple[Path, list[str]], tmp_path: Path, phantoms: Path) -> None:
    from conftest import session_file

    rig_path = _degree_rig(calibrated, tmp_path, {
        "left": {"camera_pan": "-10deg", "camera_tilt": "5deg"},
        "right_high": {"camera_pan": "8.5deg", "camera_tilt": "-12deg"}})
    session = session_file(tmp_path, phantoms, rig_path, conditions=[
        {"pose": "left", "lighting": "dim"}, {"pose": "right_high", "lighting": "bright"}])
    result = run_rig("run", str(session))
    assert result.returncode == 0, result.stderr
    rig = load_rig(rig_path)
    studio = Studio(rig)
    import sqlite3

    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        rows = db.execute("SELECT DISTINCT label, targets FROM conditions").fetchall()
    wanted = {"left-dim": (-10.0, 5.0), "right_high-bright": (8.5, -12.0)}
    for label, targets in rows:
        pulses = [1500.0] * 4
        for ch, us in json.loads(targets).items():
            pulses[int(ch)] = us
        pan, tilt = studio.camera_angles(tuple(pulses))
        print(f"\n{label}: asked {wanted[label]} deg, the arm is at ({pan:+.2f}, {tilt:+.2f}) deg")
        assert abs(pan - wanted[label][0]) <= 0.25 and abs(tilt - wanted[label][1]) <= 0.25


def test_a_pose_outside_the_soft_limits_is_refused_before_anything_moves(
        calibrated: tuple[Path, list[str]], tmp_path: Path, phantoms: Path) -> None:
    from conftest import session_file

    rig_path = _degree_rig(calibrated, tmp_path, {"wide": {"camera_pan": "-30deg"}})
    session = session_file(tmp_path, phantoms, rig_path, conditions=[{"pose": "wide", "lighting": "dim"}])
    result = run_rig("run", str(session))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    line = result.stderr
    assert "rig.yaml:" in line and "poses.wide.camera_pan" in line and "outside the soft limits" in line
    assert not (tmp_path / "run").exists()


def test_degrees_without_calibration_or_with_a_stale_one_say_which_command_fixes_it(
        calibrated: tuple[Path, list[str]], tmp_path: Path, phantoms: Path) -> None:
    from conftest import session_file

    rig_path = _degree_rig(calibrated, tmp_path, {"left": {"camera_pan": "-10deg"}})
    session = session_file(tmp_path, phantoms, rig_path, conditions=[{"pose": "left", "lighting": "dim"}])
    rig = yaml.safe_load(rig_path.read_text())
    rig["servos"]["camera_pan"]["slew"] = 1500  # the hardware description changed after calibration
    rig_path.write_text(yaml.safe_dump(rig, sort_keys=False))
    stale = run_rig("run", str(session))
    assert stale.returncode == 2 and "measured for an earlier hardware description" in stale.stderr
    assert "rig calibrate" in stale.stderr

    calibration_path(rig_path).unlink()
    missing = run_rig("run", str(session))
    assert missing.returncode == 2 and "needs a calibration" in missing.stderr
    assert f"rig calibrate intrinsics {rig_path}" in missing.stderr


def test_the_progress_total_is_the_number_of_photos_each_command_takes(calibrated: tuple[Path, list[str]]) -> None:
    from rig.calibrate_run import planned_photos

    path, outputs = calibrated
    rig = load_rig(path)
    shots = {action: int(re.search(r"^(\d+) photos; saved to", out, re.M).group(1))  # type: ignore[union-attr]
             for action, out in zip(("intrinsics", "angles", "poses", "range"), outputs)}
    for action in ("intrinsics", "angles", "poses"):
        assert shots[action] == planned_photos(action, rig), action
    assert 0 < shots["range"] <= planned_photos("range", rig)  # its bisection may end sooner
