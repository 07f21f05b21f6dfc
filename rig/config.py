"""Rig and session files: pydantic models plus YAML loading whose errors name file, line and field.

The rig file describes hardware (hand-written, lives in `calibration/`); the session file says what
to photograph under which conditions. Paths inside a file are relative to that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rig.errors import ConfigError


class Strict(BaseModel):
    """Unknown fields are an error: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- rig file


class ControllerConfig(Strict):
    port: str = Field(description="'sim': the Python twin; 'simavr': the real firmware in simavr; "
                                  "else a pyserial URL or path")
    baudrate: int = 115200
    reply_timeout_s: float = Field(0.5, gt=0)
    retries: int = Field(5, ge=0)
    host_timeout_ms: int = Field(30000, ge=0, description="controller's host-silence timeout")


class ServoConfig(Strict):
    channel: int = Field(ge=0)
    min: int = Field(1000, ge=400, le=2600)
    max: int = Field(2000, ge=400, le=2600)
    park: int = Field(1500, ge=400, le=2600)
    slew: int = Field(1000, ge=1, le=60000, description="us per second")

    @model_validator(mode="after")
    def _ordered(self) -> ServoConfig:
        if not self.min <= self.park <= self.max:
            raise ValueError(f"needs min <= park <= max, got {self.min} <= {self.park} <= {self.max}")
        return self


class LightConfig(Strict):
    channel: int = Field(ge=0)


class CameraConfig(Strict):
    backend: Literal["sim", "gphoto2", "sim-gphoto2"] = "sim"
    model: str | None = None
    port: str | None = None
    settings: dict[str, str] = Field(default_factory=dict)
    keep_on_camera: bool = False


class DisplayConfig(Strict):
    monitor: int = Field(0, ge=0)
    width: int = Field(1280, ge=64)
    height: int = Field(1024, ge=64)
    settle_frames: int = Field(2, ge=0)
    refresh_hz: float = Field(60.0, gt=0)
    fullscreen: bool = True


class MotionConfig(Strict):
    move_ms: int = Field(500, ge=0, description="requested duration of a pose change")
    settle_ms: int = Field(100, ge=0, description="wait after motion done, for the arm to stop ringing")
    idle_timeout_s: float = Field(30.0, gt=0)


class SimConfig(Strict):
    """Parameters of the simulated devices (ignored by real ones)."""

    photo_width: int = Field(1600, ge=64)
    photo_height: int = Field(1200, ge=64)
    shutter_lag_s: float = Field(0.15, ge=0)
    download_s: float = Field(0.5, ge=0)
    time_scale: float = Field(1.0, ge=0, description="multiplies simulated camera latencies")
    noise: float = Field(2.0, ge=0, description="sensor noise, grey levels (sigma)")
    jpeg_quality: int = Field(90, ge=10, le=100)
    pixel_pitch_mm: float = Field(0.294, gt=0, description="monitor pixel pitch")
    bezel_mm: float = Field(18.0, ge=0)
    camera_distance_mm: float = Field(900.0, gt=0, description="camera to screen centre")
    focal_px: float = Field(2800.0, gt=0)
    pan_deg_per_us: float = Field(0.09, description="camera arm angle per microsecond of pulse")
    tilt_deg_per_us: float = Field(0.09)


class RigConfig(Strict):
    name: str
    controller: ControllerConfig
    servos: dict[str, ServoConfig]
    lights: dict[str, LightConfig]
    camera: CameraConfig = CameraConfig()
    display: DisplayConfig = DisplayConfig()
    motion: MotionConfig = MotionConfig()
    poses: dict[str, dict[str, int]]
    lighting: dict[str, dict[str, int]]
    sim: SimConfig = SimConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RigConfig:
        _unique_channels("servos", {n: s.channel for n, s in self.servos.items()})
        _unique_channels("lights", {n: c.channel for n, c in self.lights.items()})
        for pose, targets in self.poses.items():
            for servo, pulse in targets.items():
                if servo not in self.servos:
                    raise ValueError(f"pose '{pose}': unknown servo '{servo}' (servos: {', '.join(self.servos)})")
                s = self.servos[servo]
                if not s.min <= pulse <= s.max:
                    raise ValueError(f"pose '{pose}': {servo}={pulse} is outside {s.min}..{s.max}")
        for preset, levels in self.lighting.items():
            for light, level in levels.items():
                if light not in self.lights:
                    raise ValueError(f"lighting '{preset}': unknown light '{light}' (lights: {', '.join(self.lights)})")
                if not 0 <= level <= 255:
                    raise ValueError(f"lighting '{preset}': {light}={level} is outside 0..255")
        return self

    def pose_targets(self, pose: str) -> dict[int, int]:
        """Servo channel -> pulse for a named pose; unnamed servos stay where they are."""
        return {self.servos[name].channel: pulse for name, pulse in self.poses[pose].items()}

    def light_levels(self, preset: str) -> dict[int, int]:
        """Light channel -> level; lights a preset does not name are off."""
        levels = {c.channel: 0 for c in self.lights.values()}
        levels.update({self.lights[name].channel: v for name, v in self.lighting[preset].items()})
        return levels


def _unique_channels(kind: str, channels: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    for name, ch in channels.items():
        if ch in seen:
            raise ValueError(f"{kind} '{seen[ch]}' and '{name}' both use channel {ch}")
        seen[ch] = name


# ---------------------------------------------------------------- session file


class ManifestConfig(Strict):
    csv: Path | None = None
    image_root: Path | None = None
    folder: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ManifestConfig:
        if (self.csv is None) == (self.folder is None):
            raise ValueError("give either 'csv' (with 'image_root') or 'folder'")
        if self.folder is not None and self.image_root is not None:
            raise ValueError("'image_root' goes with 'csv', not with 'folder'")
        return self


class ConditionConfig(Strict):
    pose: str
    lighting: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

    @property
    def label(self) -> str:
        return self.name or f"{self.pose}-{self.lighting}"


class SessionConfig(Strict):
    rig: Path
    manifest: ManifestConfig
    conditions: list[ConditionConfig] = Field(min_length=1)
    repeats: int = Field(1, ge=1)
    retries: int = Field(2, ge=0, description="retakes of a capture whose attempt failed")
    output: Path | None = None


# ---------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[M]) -> tuple[M, yaml.Node]:
    """Parse and validate a YAML file; any error becomes one line naming file, line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix the syntax there") from None
    if not isinstance(data, dict) or node is None:
        raise ConfigError(f"{path}:1: expected a mapping of fields at the top level")
    try:
        return model.model_validate(data), node
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        raise ConfigError(located(path, node, loc, _explain(err))) from None


def _explain(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing field; add it"
    if kind == "extra_forbidden":
        return "unknown field; remove it or check its spelling"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg


def located(path: Path, root: yaml.Node, loc: tuple[Any, ...], message: str) -> str:
    """Format `file:line: field.path: message`, finding the line of the deepest node of `loc`."""
    node: yaml.Node = root
    for key in loc:
        child = _child(node, key)
        if child is None:
            break
        node = child
    field = ".".join(str(k) if not isinstance(k, int) else f"[{k}]" for k in loc).replace(".[", "[")
    prefix = f"{path}:{node.start_mark.line + 1}"
    return f"{prefix}: {field}: {message}" if field else f"{prefix}: {message}"


def _child(node: yaml.Node, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == str(key):
                return v
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key]
    return None


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


def load_rig(path: Path) -> RigConfig:
    rig, _ = load_yaml_model(path, RigConfig)
    return rig


def load_session(path: Path) -> Session:
    """Load a session file and its rig file, and check every condition names a real pose and preset."""
    path = path.resolve() if path.exists() else path
    config, node = load_yaml_model(path, SessionConfig)
    rig_path = _resolve(path.parent, config.rig)
    assert rig_path is not None
    if not rig_path.exists():
        raise ConfigError(located(path, node, ("rig",), f"rig file {rig_path} not found; fix the path"))
    rig = load_rig(rig_path)
    for i, cond in enumerate(config.conditions):
        if cond.pose not in rig.poses:
            raise ConfigError(located(path, node, ("conditions", i, "pose"),
                                      f"unknown pose '{cond.pose}'; {rig_path.name} has: {', '.join(rig.poses)}"))
        if cond.lighting not in rig.lighting:
            raise ConfigError(located(path, node, ("conditions", i, "lighting"),
                                      f"unknown lighting '{cond.lighting}'; {rig_path.name} has: {', '.join(rig.lighting)}"))
    labels = [c.label for c in config.conditions]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            raise ConfigError(located(path, node, ("conditions", i),
                                      f"condition '{label}' is listed twice; remove one or give it a distinct 'name'"))
    return Session(path, config, rig, rig_path)
