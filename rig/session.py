"""A session: its session file, the rig file it names, and that rig's calibration applied.

Loading a session is where the configuration meets the calibration (poses in degrees become pulses,
soft limits apply), so it lives here rather than in rig.config, which knows no calibration.
"""

from __future__ import annotations

from pathlib import Path

from rig.calibration.degrees import resolve
from rig.config import RigConfig, SessionConfig, load_yaml_model, located
from rig.errors import ConfigError


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None else (p if p.is_absolute() else (base / p)).resolve()


class Session:
    """A validated session file with its rig, paths resolved relative to the files that name them."""

    def __init__(self, path: Path, config: SessionConfig, rig: RigConfig, rig_path: Path) -> None:
        self.path = path
        self.config = config
        self.rig = rig
        self.rig_path = rig_path
        base = path.parent
        m = config.manifest
        self.manifest_csv = _resolve(base, m.csv)
        self.image_root = _resolve(base, m.image_root) if m.image_root else (
            self.manifest_csv.parent if self.manifest_csv else None)
        self.image_folder = _resolve(base, m.folder)
        self.output = _resolve(base, config.output) or (base / f"{path.stem}.run").resolve()


def load_rig_for_run(path: Path) -> RigConfig:
    """The rig file with its poses in pulses: degrees converted and soft limits checked through its
    calibration, which must be current if there is one (see rig/calibration/degrees.py)."""
    rig, node = load_yaml_model(path, RigConfig)
    return resolve(rig, path, node)


def load_session(path: Path) -> Session:
    """Load a session file and its rig file, and check every condition names a real pose and preset."""
    path = path.resolve() if path.exists() else path
    config, node = load_yaml_model(path, SessionConfig)
    rig_path = _resolve(path.parent, config.rig)
    assert rig_path is not None
    if not rig_path.exists():
        raise ConfigError(located(path, node, ("rig",), f"rig file {rig_path} not found; fix the path"))
    rig = load_rig_for_run(rig_path)
    for i, cond in enumerate(config.conditions):
        if cond.pose not in rig.poses:
            raise ConfigError(located(path, node, ("conditions", i, "pose"),
                                      f"unknown pose '{cond.pose}'; {rig_path.name} has: {', '.join(rig.poses)}"))
        if cond.lighting not in rig.lighting:
            raise ConfigError(located(path, node, ("conditions", i, "lighting"),
                                      f"unknown lighting '{cond.lighting}'; "
                                      f"{rig_path.name} has: {', '.join(rig.lighting)}"))
    labels = [c.label for c in config.conditions]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            raise ConfigError(located(path, node, ("conditions", i),
                                      f"condition '{label}' is listed twice; remove one or give it a distinct 'name'"))
    return Session(path, config, rig, rig_path)
