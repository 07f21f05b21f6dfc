"""Calibration against the virtual studio's ground truth, through the `rig calibrate` commands.

The rig's `geometry:` is what a person with a ruler measured, a few mm off the studio's truth
(`sim.truth:`), and its servos have names of its own (`roles:` says which is which): the figures
printed here are what a real rig can expect, not the best case of a studio built from the very
numbers calibration assumes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, run_rig

from rig.calibration.angles import pulse_to_angle
from rig.calibration.file import calibration_path, hardware_digest, load
from rig.config import RigConfig, load_rig
from rig.errors import ConfigError
from rig.sim.studio import Studio

# The rig's servos under names of its own; `roles:` says which is the camera's pan, tilt, each lamp's arm.
NAMES = {"camera_pan": "yaw", "camera_tilt": "pitch", "light_left": "arm_a", "light_right": "arm_b"}


def _renamed(rig: dict[str, Any]) -> dict[str, Any]:
    """The rig file with its servos renamed (poses and roles follow)."""
    rig["servos"] = {NAMES.get(n, n): s for n, s in rig["servos"].items()}
    rig["poses"] = {p: {NAMES.get(n, n): v for n, v in t.items()} for p, t in rig["poses"].items()}
    roles = rig["roles"]
    roles.update(pan=NAMES[roles["pan"]], tilt=NAMES[roles["tilt"]])
    roles["lamps"] = {light: NAMES[servo] for light, servo in roles["lamps"].items()}
    return rig


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A tightly framed rig (45 mm lens) calibrated with intrinsics, angles, poses and range."""
    d = tmp_path_factory.mktemp("calibrated")
    rig = _renamed(yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text()))
    rig["sim"].update(photo_width=800, photo_height=600, time_scale=0.0, lens={"focal_mm": 45.0})
    rig["motion"].update(move_ms=0, settle_ms=0)
    rig["poses"]["left"]["yaw"] = 1400
    rig["poses"]["right_high"]["yaw"] = 1600
    path = d / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    outputs = []
    for action, extra in (("intrinsics", []), ("angles", []), ("poses", []), ("range", ["--margin", "25"])):
        result = run_rig("calibrate", action, str(path), *extra, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    return path, outputs


def test_the_geometry_calibrated_with_is_a_rulers_not_the_truth(calibrated: tuple[Path, list[str]]) -> None:
    rig, _, studio = _loaded(calibrated)
    measured, truth = rig.geometry, studio.geometry
    assert measured is not None
    pivot_off = np.subtract(measured.camera_arm.pivot_mm, truth.camera_arm.pivot_mm)
    assert 3 <= np.linalg.norm(pivot_off) <= 15  # a few mm: about half a degree of the arm's angle if trusted
    assert measured.monitor.width_mm != truth.monitor.width_mm
    assert all(measured.lamps[n].pivot_mm != truth.lamps[n].pivot_mm for n in truth.lamps)


def _truth_angle(rig: RigConfig, studio: Studio, servo: str, us: float) -> float:
    """The studio's true angle of the joint `servo` drives, at `us` (the other servos parked)."""
    p = [float(s.park) for s in rig.servos.values()]
    p[rig.servos[servo].channel] = us
    assert rig.roles is not None
    if servo in (rig.roles.pan, rig.roles.tilt):
        return studio.camera_angles(tuple(p))[0 if servo == rig.roles.pan else 1]
    light = next(light for light, arm in rig.roles.lamps.items() if arm == servo)
    return pulse_to_angle(studio.lamp(light).coeffs, us)


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


ANGLE_RMS_BOUND_DEG = {"yaw": 0.25, "pitch": 0.25, "arm_a": 0.25, "arm_b": 0.25}


def test_pulse_to_angle_fits_follow_the_true_joints(calibrated: tuple[Path, list[str]]) -> None:
    rig, cal, studio = _loaded(calibrated)
    for servo, rec in cal.angles.items():
        s = rig.servos[servo]
        pulses = np.linspace(max(s.min, rec.pulse_range[0]), min(s.max, rec.pulse_range[1]), 41)
        err = np.array([pulse_to_angle(rec.coeffs, us) - _truth_angle(rig, studio, servo, us) for us in pulses])
        rms, worst = float(np.sqrt(np.mean(err ** 2))), float(np.abs(err).max())
        print(f"\n{servo}: fit vs truth RMS {rms:.3f} deg, max {worst:.3f} deg over {rec.pulse_range} us "
              f"({rec.method})")
        assert rms <= ANGLE_RMS_BOUND_DEG[servo], servo
    assert set(cal.angles) == set(rig.servos)


def test_the_arm_pivot_is_measured_from_the_photos_not_taken_from_the_ruler(
        calibrated: tuple[Path, list[str]]) -> None:
    rig, cal, studio = _loaded(calibrated)
    assert cal.arm is not None and cal.arm.from_photos
    truth = np.array(studio.geometry.camera_arm.pivot_mm)
    ruler = np.array(cal.arm.ruler_pivot_mm)
    fitted_off, ruler_off = np.linalg.norm(np.array(cal.arm.pivot_mm) - truth), np.linalg.norm(ruler - truth)
    print(f"\narm pivot: fitted {fitted_off:.1f} mm from the truth (ruler: {ruler_off:.1f} mm), radius "
          f"{cal.arm.radius_mm:.1f} mm (true {studio.geometry.camera_arm.radius_mm:.1f}), "
          f"spread {cal.arm.fit_rms_mm:.2f} mm")
    assert fitted_off < ruler_off / 2


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

    for servo in ("yaw", "pitch"):
        s = rig.servos[servo]
        inside = [us for us in range(s.min, s.max + 1) if margin(servo, us) >= 25]
        true_lo, true_hi = sorted(_truth_angle(rig, studio, servo, us) for us in (min(inside), max(inside)))
        rec = cal.ranges[servo]
        print(f"\n{servo}: found {rec.min_deg:+.2f}..{rec.max_deg:+.2f} deg, true {true_lo:+.2f}..{true_hi:+.2f}")
        assert abs(rec.min_deg - true_lo) <= 0.5 and abs(rec.max_deg - true_hi) <= 0.5
    assert cal.ranges["yaw"].min_us > rig.servos["yaw"].min  # the limit is the screen, not the servo


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
        "left": {"yaw": "-10deg", "pitch": "5deg"},
        "right_high": {"yaw": "8.5deg", "pitch": "-12deg"}})
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
    exported = run_rig("export", str(session), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    import csv

    with open(tmp_path / "export" / "captures.csv", newline="") as f:
        for row in csv.DictReader(f):  # the angles of the servos whose roles are pan and tilt, by any name
            want = wanted[row["Condition"]]
            assert abs(float(row["PanDeg"]) - want[0]) <= 0.05 and abs(float(row["TiltDeg"]) - want[1]) <= 0.05


def test_a_pose_outside_the_soft_limits_is_refused_before_anything_moves(
        calibrated: tuple[Path, list[str]], tmp_path: Path, phantoms: Path) -> None:
    from conftest import session_file

    rig_path = _degree_rig(calibrated, tmp_path, {"wide": {"yaw": "-30deg"}})
    session = session_file(tmp_path, phantoms, rig_path, conditions=[{"pose": "wide", "lighting": "dim"}])
    result = run_rig("run", str(session))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    line = result.stderr
    assert "rig.yaml:" in line and "poses.wide.yaw" in line and "outside the soft limits" in line
    assert not (tmp_path / "run").exists()


def test_degrees_without_calibration_or_with_a_stale_one_say_which_command_fixes_it(
        calibrated: tuple[Path, list[str]], tmp_path: Path, phantoms: Path) -> None:
    from conftest import session_file

    rig_path = _degree_rig(calibrated, tmp_path, {"left": {"yaw": "-10deg"}})
    session = session_file(tmp_path, phantoms, rig_path, conditions=[{"pose": "left", "lighting": "dim"}])
    rig = yaml.safe_load(rig_path.read_text())
    rig["servos"]["yaw"]["slew"] = 1500  # the hardware description changed after calibration
    rig_path.write_text(yaml.safe_dump(rig, sort_keys=False))
    stale = run_rig("run", str(session))
    assert stale.returncode == 2 and "measured for an earlier hardware description" in stale.stderr
    assert "rig calibrate" in stale.stderr

    calibration_path(rig_path).unlink()
    missing = run_rig("run", str(session))
    assert missing.returncode == 2 and "needs a calibration" in missing.stderr
    assert f"rig calibrate intrinsics {rig_path}" in missing.stderr


def test_the_progress_total_is_the_number_of_photos_each_command_takes(calibrated: tuple[Path, list[str]]) -> None:
    from rig.calibration.procedures import Geometry, planned_photos

    path, outputs = calibrated
    rig = load_rig(path)
    geo = Geometry.of(rig, path)
    shots = {action: int(re.search(r"^(\d+) photos; saved to", out, re.M).group(1))  # type: ignore[union-attr]
             for action, out in zip(("intrinsics", "angles", "poses", "range"), outputs)}
    for action in ("intrinsics", "angles", "poses"):
        assert shots[action] == planned_photos(action, rig, geo), action
    assert 0 < shots["range"] <= planned_photos("range", rig, geo)  # its bisection may end sooner


def _rig_dict() -> dict[str, Any]:
    return yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())


def _rig(data: dict[str, Any], tmp_path: Path) -> RigConfig:
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_rig(path)


def test_the_fingerprint_is_the_hardware_not_the_simulators_tuning(tmp_path: Path) -> None:
    base = hardware_digest(_rig(_rig_dict(), tmp_path))
    noisier = _rig_dict()
    noisier["sim"].update(noise=4.0, seed=7, lens={"focal_mm": 50.0})
    assert hardware_digest(_rig(noisier, tmp_path)) == base  # the calibration stays current
    for section, change in (("geometry", {"camera_arm": {"pivot_mm": [0.0, 0.0, 0.0], "radius_mm": 905.0}}),
                            ("roles", {"pan": "camera_tilt", "tilt": "camera_pan"}),
                            ("display", {"width": 1920})):
        moved = _rig_dict()
        moved[section].update(change)
        assert hardware_digest(_rig(moved, tmp_path)) != base, section  # stale: calibrate again


def test_calibrate_without_geometry_says_which_file_and_section(tmp_path: Path) -> None:
    data = _rig_dict()
    del data["geometry"]
    del data["sim"]["truth"]
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_rig("calibrate", "intrinsics", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{path}: geometry: missing" in result.stderr


@pytest.mark.parametrize(("roles", "shown"), [
    ({"pan": "camera_pann", "tilt": "camera_tilt"}, "roles.pan: unknown servo 'camera_pann'"),
    ({"pan": "camera_pan", "tilt": "camera_tilt", "lamps": {"middle": "light_left"}},
     "roles.lamps.middle: unknown light"),
    ({"pan": "camera_pan", "tilt": "camera_pan"}, "servo 'camera_pan' has two roles"),
])
def test_roles_name_real_servos_and_lights(tmp_path: Path, roles: dict[str, Any], shown: str) -> None:
    data = _rig_dict()
    data["roles"] = roles
    with pytest.raises(ConfigError) as e:
        _rig(data, tmp_path)
    assert "rig.yaml:" in str(e.value) and shown in str(e.value)
