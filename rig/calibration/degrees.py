"""Poses written in degrees, and the soft limits calibration found, applied before anything moves.

A rig file's pose may say `camera_pan: "12.5deg"` (any servo with an angle calibration); this converts
it to a pulse through the calibrated pulse -> angle fit. Every pose, in pulses or degrees, must also lie inside the soft
limits `rig calibrate range` stored. A rig with a calibration made for other hardware is refused.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rig.calibration import file as calibration
from rig.calibration.angles import AngleFit, pulse_to_angle
from rig.command import rig_command
from rig.config import RigConfig, degrees, located
from rig.errors import ConfigError


def resolve(rig: RigConfig, rig_path: Path, node: yaml.Node) -> RigConfig:
    """The rig with every pose in pulses, checked against the calibration's soft limits."""
    cal: calibration.CalibrationFile | None
    if rig.uses_degrees:
        fix = f"{rig_command()} calibrate intrinsics {rig_path} && {rig_command()} calibrate angles {rig_path}"
        cal = calibration.require_current(rig_path, rig, "poses in degrees", fix)
    else:
        cal = calibration.load(rig_path)
        if cal is None:
            return rig
        if cal.hardware_digest != calibration.hardware_digest(rig):
            calibration.require_current(rig_path, rig, "this session", f"{rig_command()} calibrate angles {rig_path}")
    poses: dict[str, dict[str, int]] = {}
    for pose, targets in rig.poses.items():
        poses[pose] = {}
        for servo, value in targets.items():
            where = ("poses", pose, servo)
            pulse = value if isinstance(value, int) else _to_pulse(rig, rig_path, node, cal, where, servo, value)
            limit = cal.ranges.get(servo)
            if limit is not None and not limit.min_us <= pulse <= limit.max_us:
                angle = _angle(cal, servo, pulse)
                shown = f"{value} ({pulse} us)" if isinstance(value, str) else f"{pulse} us" + (
                    f" ({angle:+.2f} deg)" if angle is not None else "")
                raise ConfigError(located(rig_path, node, where,
                                          f"{shown} is outside the soft limits "
                                          f"{limit.min_deg:+.2f}..{limit.max_deg:+.2f} deg "
                                          f"({limit.min_us}..{limit.max_us} us) where the whole screen stays in frame; "
                                          f"choose a pose inside them or re-run {rig_command()} calibrate range"))
            poses[pose][servo] = pulse
    return rig.model_copy(update={"poses": poses})


def _angle(cal: calibration.CalibrationFile, servo: str, pulse: int) -> float | None:
    rec = cal.angles.get(servo)
    return None if rec is None else pulse_to_angle(rec.coeffs, pulse)


def _to_pulse(rig: RigConfig, rig_path: Path, node: yaml.Node, cal: calibration.CalibrationFile,
              where: tuple[str, ...], servo: str, value: str) -> int:
    rec = cal.angles.get(servo)
    if rec is None:
        raise ConfigError(located(rig_path, node, where, f"{value} needs {servo}'s angle calibration; "
                                  f"run: {rig_command()} calibrate angles {rig_path}"))
    s = rig.servos[servo]
    fit = AngleFit(tuple(rec.coeffs), rec.rms_deg, rec.max_deg, rec.samples)
    try:
        return int(round(fit.pulse(degrees(value), s.min, s.max)))
    except ValueError as e:
        raise ConfigError(located(rig_path, node, where, f"{value}: {e}, what {servo} reaches within its limits "
                                  f"{s.min}..{s.max} us")) from None
