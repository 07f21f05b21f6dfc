"""The calibration file: what `rig calibrate` measured, kept apart from the hand-written rig file.

`calibration/<rig>.calibration.yaml` sits next to `calibration/<rig>.yaml`. It is versioned, every
section is timestamped with its residuals, and it records a digest of the rig file's hardware
description, so a session can refuse a calibration made for different hardware.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rig.command import rig_command
from rig.config import RigConfig
from rig.errors import ConfigError
from rig.files import atomic_write

VERSION = 1
# The parts of a rig file that describe the hardware calibration measured. Not in it: the name, motion
# timing, the operator's poses and presets, and `sim:` (the simulator's own tuning: a noisier simulated
# camera is the same rig). Of the controller, how the host reaches it (port, timeouts) is not hardware.
HARDWARE = ("controller", "servos", "lights", "camera", "display", "geometry", "roles")
CONTROLLER_LINK = {"port", "baudrate", "reply_timeout_s", "give_up_s", "host_timeout_ms"}


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntrinsicsRecord(Record):
    created: str
    image_size: tuple[int, int]
    camera_matrix: list[list[float]]
    dist_coeffs: list[float]
    rms_px: float = Field(description="RMS reprojection error over all views")
    views: int


class AngleRecord(Record):
    created: str
    method: str  # how the angle was measured
    coeffs: list[float]  # pulse -> degrees, highest power first
    rms_deg: float
    max_deg: float
    samples: int
    pulse_range: tuple[int, int]


class ArmRecord(Record):
    created: str
    pivot_mm: list[float]  # the camera arm's pivot the angles are measured about
    radius_mm: float
    fit_rms_mm: float  # camera positions' spread about the sphere fitted to them
    ruler_pivot_mm: list[float]  # the rig file's measured geometry, for comparison
    from_photos: bool  # False: the fit was poor and the ruler's pivot was used


class PoseRecord(Record):
    created: str
    homography: list[list[float]]  # screen pixel -> undistorted photo pixel
    corners_px: list[list[float]]  # screen corners in the photo (distortion included)
    margin_px: float
    reprojection_px: float


class RangeRecord(Record):
    created: str
    min_deg: float
    max_deg: float
    min_us: int
    max_us: int
    margin_px: float


class CalibrationFile(Record):
    version: int = VERSION
    rig_file: str
    hardware_digest: str
    intrinsics: IntrinsicsRecord | None = None
    angles: dict[str, AngleRecord] = Field(default_factory=dict)
    arm: ArmRecord | None = None
    poses: dict[str, PoseRecord] = Field(default_factory=dict)
    ranges: dict[str, RangeRecord] = Field(default_factory=dict)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def hardware_digest(rig: RigConfig) -> str:
    """A digest of the rig file's hardware description (controller, servos, lights, camera, display,
    measured geometry, roles); changing any of them makes the calibration stale."""
    data = rig.model_dump(mode="json", include=set(HARDWARE))
    data["controller"] = {k: v for k, v in data["controller"].items() if k not in CONTROLLER_LINK}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def calibration_path(rig_path: Path) -> Path:
    return rig_path.with_name(f"{rig_path.stem}.calibration.yaml")


def load(rig_path: Path) -> CalibrationFile | None:
    """The rig's calibration, or None if it has none yet."""
    path = calibration_path(rig_path)
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text())
        cal = CalibrationFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigError(f"{path}: not a readable calibration file ({str(e).splitlines()[0]}); "
                          f"re-run {rig_command()} calibrate, or delete the file") from None
    if cal.version != VERSION:
        raise ConfigError(f"{path}: calibration format {cal.version}, this rig reads {VERSION}; "
                          f"re-run {rig_command()} calibrate")
    return cal


def load_or_new(rig_path: Path, rig: RigConfig) -> CalibrationFile:
    """The current calibration to add to; a stale one (different hardware) starts over."""
    cal = load(rig_path)
    digest = hardware_digest(rig)
    if cal is None or cal.hardware_digest != digest:
        return CalibrationFile(rig_file=rig_path.name, hardware_digest=digest)
    return cal


def save(rig_path: Path, cal: CalibrationFile) -> Path:
    """Write atomically: a crash never leaves half a calibration file."""
    path = calibration_path(rig_path)
    header = (f"# Measured by rig calibrate for {rig_path.name}; machine-written, do not edit.\n"
              f"# Re-run the calibrate commands after changing the rig's hardware description.\n")
    atomic_write(path, header + yaml.safe_dump(cal.model_dump(mode="json"), sort_keys=False, width=120))
    return path


def require_current(rig_path: Path, rig: RigConfig, what: str, fix: str) -> CalibrationFile:
    """The calibration, if it exists and matches this hardware; else a one-line error saying the fix."""
    cal = load(rig_path)
    path = calibration_path(rig_path)
    if cal is None:
        raise ConfigError(f"{rig_path}: {what} needs a calibration and {path.name} does not exist; run: {fix}")
    if cal.hardware_digest != hardware_digest(rig):
        raise ConfigError(f"{path}: measured for an earlier hardware description of {rig_path.name} "
                          f"(controller, servos, camera, display, geometry or roles changed since); run: {fix}")
    return cal


def in_force(rig: RigConfig, rig_path: Path) -> tuple[CalibrationFile | None, str]:
    """The calibration that describes this hardware now, and its name with the date of its newest
    measurement ("" when there is none, or it was measured for other hardware)."""
    cal = load(rig_path)
    if cal is None or cal.hardware_digest != hardware_digest(rig):
        return None, ""
    records = (cal.intrinsics, cal.arm, *cal.angles.values(), *cal.poses.values(), *cal.ranges.values())
    dates = [r.created for r in records if r is not None]
    return cal, calibration_path(rig_path).name + (f"@{max(dates)}" if dates else "")


def capture_context(rig: RigConfig, rig_path: Path) -> dict[str, object]:
    """What a run records when it starts, so its export describes the rig as it was when the photos
    were taken, not after a later recalibration: rig name, channel names, roles, calibration and angle fits."""
    cal, name = in_force(rig, rig_path)
    return {"rig": rig.name, "calibration": name,
            "roles": {"pan": rig.roles.pan, "tilt": rig.roles.tilt} if rig.roles else {},
            "servos": {n: s.channel for n, s in rig.servos.items()},
            "lights": {n: lt.channel for n, lt in rig.lights.items()},
            "angles": {n: list(r.coeffs) for n, r in cal.angles.items()} if cal else {}}
