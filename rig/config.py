"""Rig and session files: pydantic models plus YAML loading whose errors name file, line and field.

The rig file describes hardware (hand-written, lives in `calibration/`); the session file says what
to photograph under which conditions. Paths inside a file are relative to that file.
"""

from __future__ import annotations

import difflib
import io
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails

from rig.errors import ConfigError


class Strict(BaseModel):
    """Unknown fields are an error: a typo must not silently fall back to a default. Types are strict:
    YAML's `yes` is a boolean, never the number 1, and `"5"` is text, not a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FieldError(ValueError):
    """A check across fields that knows which field is wrong: `loc` is its path below the model."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _list_to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _str_to_path(value: object) -> object:
    return Path(value) if isinstance(value, str) else value


# YAML has no tuples or paths: a list and a string are the strict inputs for them.
FilePath = Annotated[Path, BeforeValidator(_str_to_path)]


# ---------------------------------------------------------------- rig file


class RigctlLinkConfig(Strict):
    """What every controller speaking the rigctl protocol (PROTOCOL.md) needs, real or simulated."""

    reply_timeout_s: float = Field(0.3, gt=0, description="wait this long for a reply before retransmitting")
    give_up_s: float = Field(10.0, gt=0, description="retransmit a command while the controller answers at all; "
                                                      "give up after this long without an intact line from it")
    host_timeout_ms: int = Field(30000, ge=0, le=3_600_000, description="controller's host-silence timeout")


class RigctlConfig(RigctlLinkConfig):
    """The rigctl firmware on a real board (an Arduino Uno on USB), reached through pyserial."""

    kind: Literal["rigctl"]
    port: str = Field(min_length=1, description="a pyserial URL or path, e.g. /dev/ttyACM0 or /dev/serial/by-id/...")
    baudrate: int = Field(115200, gt=0)


class RigctlHostConfig(RigctlLinkConfig):
    """Simulated: the rigctl protocol core running on this PC, on a pseudo-terminal."""

    kind: Literal["rigctl-host"]


class SimavrControllerConfig(RigctlLinkConfig):
    """Simulated: the compiled rigctl firmware (firmware/build/rigctl.elf) in simavr, on a pseudo-terminal."""

    kind: Literal["simavr"]


# One model per kind, chosen by `kind:`; a field of another kind is an error. The factory that opens
# each kind is named in rig/devices/kinds.py.
class MaestroLight(Strict):
    """How one of the rig file's lights is wired to the Maestro, and what its levels 0..255 mean.

    output: a channel in Output mode switching a lamp driver: 0 = off, 255 = on (no other level).
    pwm:    the Mini Maestro's PWM output: duty = level / 255 of `pwm_period` (units of 1/48 us).
    dimmer: a channel in Servo mode driving a servo-pulse LED dimmer: level 0 -> `off_us`, 255 ->
            `full_us`, linear in between (a span of at least 64 us, so each level is its own quarter-us).
    """

    channel: int = Field(ge=0, le=23, description="the Maestro channel the lamp is wired to")
    mode: Literal["output", "pwm", "dimmer"]
    off_us: int = Field(1000, ge=64, le=4000, description="dimmer: pulse at level 0")
    full_us: int = Field(2000, ge=64, le=4000, description="dimmer: pulse at level 255")
    pwm_period: int = Field(4800, ge=255, le=16383, description="pwm: period in 1/48 us (4800 = 10 kHz)")

    @model_validator(mode="after")
    def _span(self) -> MaestroLight:
        if self.mode == "dimmer" and abs(self.full_us - self.off_us) < 64:
            raise ValueError(f"off_us {self.off_us} and full_us {self.full_us} need at least 64 us between them")
        return self


class MaestroLinkConfig(Strict):
    """What a Pololu Maestro (rig/devices/maestro.py) needs, real or simulated: its model, serial protocol and
    settings, and how each of the rig file's lights is wired to it."""

    model: Literal["micro6", "mini12", "mini18", "mini24"] = "micro6"
    protocol: Literal["compact", "pololu"] = "compact"
    device_number: int = Field(12, ge=0, le=127, description="Pololu protocol only; the Maestro's default is 12")
    crc: bool = Field(False, description="the Maestro's 'Enable CRC' serial setting")
    baudrate: int = Field(115200, gt=0, description="UART mode only; the USB Command Port ignores it")
    reply_timeout_s: float = Field(0.5, gt=0)
    serial_timeout_s: float = Field(30.0, ge=0, le=655.35,
                                    description="the Timeout you set in the Maestro's Serial Settings (0: off); "
                                                "the host cannot read or set it, `rig doctor` reminds you")
    lights: dict[int, MaestroLight] = Field(default_factory=dict,
                                            description="the rig file's light channel -> Maestro wiring")




class MaestroConfig(MaestroLinkConfig):
    """A real Pololu Maestro on USB or a UART."""

    kind: Literal["maestro"]
    port: str = Field(min_length=1, description="pyserial URL or path: the Maestro's Command Port (e.g. "
                      "/dev/ttyACM0) in USB Dual Port mode, or a USB-serial adapter on its RX/TX in UART mode")


class SimMaestroConfig(MaestroLinkConfig):
    """Simulated: a Maestro that follows Pololu's user guide byte for byte, on a pseudo-terminal, set up the
    way `rig doctor` tells an operator to set up a real one."""

    kind: Literal["sim-maestro"]


ControllerConfig = Annotated[
    RigctlConfig | RigctlHostConfig | SimavrControllerConfig | MaestroConfig | SimMaestroConfig,
    Field(discriminator="kind")]


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


class GPhoto2CameraConfig(Strict):
    """A camera tethered over USB through libgphoto2. With one camera attached nothing needs naming;
    with several, `serial` picks the one (`rig doctor` lists model, port and serial of each)."""

    kind: Literal["gphoto2"]
    model: str | None = Field(None, description="as libgphoto2 names it, e.g. 'Canon EOS 5D Mark IV'")
    port: str | None = Field(None, description="e.g. 'usb:001,007'; changes when the camera is replugged")
    serial: str | None = Field(None, min_length=1, description="the camera's serial number")
    settings: dict[str, str] = Field(default_factory=dict, description="camera config name -> value, "
                                     "checked against what the camera offers, written at every (re)connect")
    keep_on_camera: bool = Field(False, description="leave each photo on the card after downloading it")


class SimCameraConfig(Strict):
    """Simulated: photographs the simulated studio (the rig file's `sim:`)."""

    kind: Literal["sim"]


class SimGPhoto2CameraConfig(Strict):
    """Simulated: the studio's photo goes through libgphoto2's virtual USB camera and the real gphoto2 driver."""

    kind: Literal["sim-gphoto2"]
    settings: dict[str, str] = Field(default_factory=dict)
    keep_on_camera: bool = False


CameraConfig = Annotated[GPhoto2CameraConfig | SimCameraConfig | SimGPhoto2CameraConfig, Field(discriminator="kind")]


class ScreenConfig(Strict):
    """What a display shows on: its size in pixels and how long a new frame takes to be on it."""

    width: int = Field(1280, ge=64)
    height: int = Field(1024, ge=64)
    settle_frames: int = Field(2, ge=0, description="refreshes to wait after show() before the photo")
    refresh_hz: float = Field(60.0, gt=0)


class PygameDisplayConfig(ScreenConfig):
    """A real monitor, fullscreen, through pygame (SDL)."""

    kind: Literal["pygame"]
    monitor: int = Field(0, ge=0, description="which monitor, 0 = the first")
    fullscreen: bool = True
    headless: bool = Field(False, description="draw off-screen with SDL's dummy driver: nothing is shown, so "
                                              "only for a rig whose camera does not look at a monitor")


class SimDisplayConfig(ScreenConfig):
    """Simulated: the studio's monitor (its lag: `sim.display_lag_frames`), drawn by the pygame presenter."""

    kind: Literal["sim"]
    headless: bool = Field(True, description="false: also show the frames in a window on this machine")


DisplayConfig = Annotated[PygameDisplayConfig | SimDisplayConfig, Field(discriminator="kind")]


class MotionConfig(Strict):
    move_ms: int = Field(500, ge=0, le=3_600_000, description="requested duration of a pose change")
    settle_ms: int = Field(100, ge=0, description="wait after a move or a light change, for the arm to stop "
                                                  "ringing and the lamps to reach their level")
    idle_timeout_s: float = Field(30.0, gt=0)


Vec3 = Annotated[tuple[float, float, float], BeforeValidator(_list_to_tuple)]


# ---------------------------------------------------------------- measured geometry and roles


class MonitorGeometry(Strict):
    """The monitor, measured; its screen centre is the world's origin (x right, y down, z into the screen)."""

    width_mm: float = Field(gt=0, description="active area, edge to edge of the lit pixels; "
                                              "pitch = width_mm / display.width")
    height_mm: float = Field(gt=0)
    bezel_mm: float = Field(0.0, ge=0)


class CameraArmGeometry(Strict):
    """The camera arm swings (pan) and raises (tilt) the camera about `pivot_mm`, aiming it there."""

    pivot_mm: Vec3
    radius_mm: float = Field(gt=0, description="pivot to the camera's centre")


class LampGeometry(Strict):
    """A lamp on a servo arm swinging about a vertical axis through `pivot_mm` at `reach_mm`."""

    pivot_mm: Vec3
    reach_mm: float = Field(ge=0)


class GeometryConfig(Strict):
    """The rig as measured with a ruler (mm, world frame: screen centre, x right, y down, z into the
    screen). Calibration takes it as its starting point; the simulator renders from it."""

    monitor: MonitorGeometry
    camera_arm: CameraArmGeometry
    sensor_width_mm: float = Field(gt=0, description="from the camera's data sheet")
    lamps: dict[str, LampGeometry] = Field(default_factory=dict, description="by light name")


class RolesConfig(Strict):
    """Which servo does what: the camera arm's pan and tilt, and the arm each light sits on."""

    pan: str
    tilt: str
    lamps: dict[str, str] = Field(default_factory=dict, description="light name -> the servo of its arm")


# ---------------------------------------------------------------- the simulator alone


class JointResponse(Strict):
    """How a servo-driven joint truly answers:
    angle = deg_per_us * (pulse - zero_us) + deg_per_us2 * (pulse - zero_us)^2."""

    zero_us: float = 1500.0
    deg_per_us: float = 0.09
    deg_per_us2: float = 0.0

    @property
    def coeffs(self) -> tuple[float, float, float]:
        """The same polynomial in the pulse itself, highest power first (as calibration stores its fits)."""
        a2, a1, z = self.deg_per_us2, self.deg_per_us, self.zero_us
        return a2, a1 - 2 * a2 * z, a2 * z * z - a1 * z


class MonitorModel(Strict):
    """The screen's optics (its size is measured geometry)."""

    fill: float = Field(0.8, gt=0, le=1, description="emitting fraction of a pixel's pitch (black matrix)")
    reflectance: float = Field(0.035, ge=0, description="diffuse reflectance of the screen (veil)")
    gloss: float = Field(0.02, ge=0, description="specular reflectance of the screen's front (glare)")
    roughness_deg: float = Field(1.2, ge=0, description="spread of the specular lobe (anti-glare coating)")


class CameraArmModel(Strict):
    """The arm's true servo response, and the head's small fixed misalignment `mount_deg` (yaw, pitch, roll)."""

    pan: JointResponse = JointResponse(zero_us=1506.0, deg_per_us=0.0905)
    tilt: JointResponse = JointResponse(zero_us=1496.0, deg_per_us=0.0895)
    mount_deg: Vec3 = (0.3, -0.2, 0.25)


class LensModel(Strict):
    """Pinhole intrinsics with OpenCV distortion; focal length in px follows from the sensor width."""

    focal_mm: float = Field(41.0, gt=0)
    principal_offset_px: Annotated[tuple[float, float], BeforeValidator(_list_to_tuple)] = (3.0, -2.0)
    dist_coeffs: Annotated[tuple[float, float, float, float, float], BeforeValidator(_list_to_tuple)] = (
        -0.025, 0.012, 0.0, 0.0, 0.0)
    f_number: float = Field(8.0, gt=0)
    focus_mm: float | None = Field(None, gt=0, description="focus distance; default the arm radius")
    softness_um: float = Field(4.0, ge=0, description="lens blur on the sensor (Gaussian sigma, micrometres)")
    sensor_fill: float = Field(0.7, gt=0, le=1, description="light-gathering fraction of a sensor pixel's width")


class LampModel(JointResponse):
    """A lamp's true arm response and its light (where it is, is measured geometry)."""

    lamp_radius_mm: float = Field(40.0, gt=0, description="size of the diffuser")
    power: float = Field(8.0, ge=0, description="illuminance at 700 mm at full level, in units of a white screen "
                                                "pixel's luminance (~6000 lux)")
    radiance: float = Field(150.0, ge=0, description="diffuser radiance at full level, in screen-white units")


class EffectsModel(Strict):
    """Every photographic effect can be switched off (tests of one effect switch the others off)."""

    distortion: bool = True
    glare: bool = True
    moire: bool = True
    defocus: bool = True
    noise: bool = True
    vignetting: bool = True


class MonitorTruth(Strict):
    width_mm: float | None = Field(None, gt=0)
    height_mm: float | None = Field(None, gt=0)
    bezel_mm: float | None = Field(None, ge=0)


class CameraArmTruth(Strict):
    pivot_mm: Vec3 | None = None
    radius_mm: float | None = Field(None, gt=0)


class LampTruth(Strict):
    pivot_mm: Vec3 | None = None
    reach_mm: float | None = Field(None, ge=0)


class GeometryTruth(Strict):
    """Where the simulated rig truly differs from its measured `geometry:` (a ruler is a few mm off)."""

    monitor: MonitorTruth = MonitorTruth()
    camera_arm: CameraArmTruth = CameraArmTruth()
    sensor_width_mm: float | None = Field(None, gt=0)
    lamps: dict[str, LampTruth] = Field(default_factory=dict)


def _overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _overlay(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


TIMING_PROFILES: dict[str, dict[str, float]] = {
    # A tethered DSLR over USB 2: ~150 ms shutter lag, 1/30 s exposure, a ~10 MB JPEG at ~25 MB/s.
    "dslr-usb2": {"shutter_lag_s": 0.15, "exposure_s": 1 / 30, "download_s": 0.45},
    "zero": {"shutter_lag_s": 0.0, "exposure_s": 0.0, "download_s": 0.0},
}


class LineNoiseModel(Strict):
    """Faults of the simulated serial cable between host and simulated controller, both directions."""

    corrupt_bytes: float = Field(0.0, ge=0, le=1, description="probability that a byte arrives changed")
    drop_lines: float = Field(0.0, ge=0, le=1, description="probability that a whole line is lost")


class SimConfig(Strict):
    """What only the simulator knows: true servo response and lens, the screen's optics, noise, effects,
    timing, lag, and (`truth:`) where the simulated rig differs from its measured `geometry:`.
    Real hardware facts never live here."""

    photo_width: int = Field(1600, ge=64)
    photo_height: int = Field(1200, ge=64)
    profile: Literal["dslr-usb2", "zero"] = "dslr-usb2"
    shutter_lag_s: float | None = Field(None, ge=0, description="default from the profile")
    exposure_s: float | None = Field(None, ge=0, description="default from the profile")
    download_s: float | None = Field(None, ge=0, description="default from the profile")
    time_scale: float = Field(1.0, ge=0, description="multiplies simulated camera latencies")
    display_lag_frames: int | Annotated[tuple[int, int], BeforeValidator(_list_to_tuple)] = Field(
        0, description="the screen shows a frame this many flips after show(); [lo, hi]: random per frame")
    seed: int = 0
    monitor: MonitorModel = MonitorModel()
    arm: CameraArmModel = CameraArmModel()
    lens: LensModel = LensModel()
    lights: dict[str, LampModel] = Field(default_factory=dict, description="by light name; default LampModel()")
    ambient: float = Field(0.04, ge=0, description="room illuminance without the rig's lights, screen-white units")
    wall_albedo: float = Field(0.025, ge=0)
    exposure_gain: float = Field(0.85, gt=0, description="linear sensor value of a white screen pixel")
    white_balance: Vec3 = (0.97, 1.0, 1.06)
    vignetting: float = Field(1.0, ge=0, description="strength of the cos^4 fall-off")
    noise: float = Field(1.5, ge=0, description="read noise, grey levels (sigma)")
    shot_noise: float = Field(0.06, ge=0, description="shot noise variance per grey level")
    jpeg_quality: int = Field(90, ge=10, le=100)
    effects: EffectsModel = EffectsModel()
    truth: GeometryTruth = GeometryTruth()
    line_noise: LineNoiseModel = LineNoiseModel()
    power_cycles_s: list[float] = Field(default_factory=list, description="seconds after the devices open at "
                                        "which the simulated controller loses power for a moment")

    @model_validator(mode="after")
    def _lag(self) -> SimConfig:
        lag = self.display_lag_frames
        lo, hi = (lag, lag) if isinstance(lag, int) else lag
        if not 0 <= lo <= hi:
            raise FieldError(("display_lag_frames",), f"needs 0 <= lo <= hi, got {lag}")
        return self

    def timing(self, name: str) -> float:
        """A latency in seconds: the explicit value, else the profile's."""
        value = getattr(self, name)
        return TIMING_PROFILES[self.profile][name] if value is None else float(value)


# A pose value: a pulse in microseconds, or an angle such as "12.5deg" converted through the calibration.
PoseValue = int | Annotated[str, StringConstraints(pattern=r"^[+-]?\d+(\.\d+)?\s*deg$")]


def degrees(value: str) -> float:
    return float(value.removesuffix("deg").strip())


class RigConfig(Strict):
    name: str
    controller: ControllerConfig
    servos: dict[str, ServoConfig]
    lights: dict[str, LightConfig]
    camera: CameraConfig
    display: DisplayConfig
    motion: MotionConfig = MotionConfig()
    poses: dict[str, dict[str, PoseValue]]
    lighting: dict[str, dict[str, int]]
    geometry: GeometryConfig | None = Field(None, description="measured; `rig calibrate` needs it")
    roles: RolesConfig | None = Field(None, description="which servo is the camera's pan, tilt, each lamp's arm")
    sim: SimConfig = SimConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RigConfig:
        _unique_channels("servos", {n: s.channel for n, s in self.servos.items()})
        _unique_channels("lights", {n: c.channel for n, c in self.lights.items()})
        for pose, targets in self.poses.items():
            for servo, pulse in targets.items():
                if servo not in self.servos:
                    raise FieldError(("poses", pose, servo),
                                     f"unknown servo '{servo}' (servos: {', '.join(self.servos)})")
                s = self.servos[servo]
                if isinstance(pulse, int) and not s.min <= pulse <= s.max:
                    raise FieldError(("poses", pose, servo), f"{servo}={pulse} is outside {s.min}..{s.max}")
        for preset, levels in self.lighting.items():
            for light, level in levels.items():
                if light not in self.lights:
                    raise FieldError(("lighting", preset, light),
                                     f"unknown light '{light}' (lights: {', '.join(self.lights)})")
                if not 0 <= level <= 255:
                    raise FieldError(("lighting", preset, light), f"{light}={level} is outside 0..255")
        self._check_roles_and_geometry()
        return self

    def _check_roles_and_geometry(self) -> None:
        def servo(where: tuple[str, ...], name: str) -> None:
            if name not in self.servos:
                raise FieldError(where, f"unknown servo '{name}' (servos: {', '.join(self.servos)})")

        def light(where: tuple[str, ...], name: str) -> None:
            if name not in self.lights:
                raise FieldError(where, f"unknown light '{name}' (lights: {', '.join(self.lights)})")

        if self.roles is not None:
            servo(("roles", "pan"), self.roles.pan)
            servo(("roles", "tilt"), self.roles.tilt)
            for name, arm in self.roles.lamps.items():
                light(("roles", "lamps", name), name)
                servo(("roles", "lamps", name), arm)
            used = [self.roles.pan, self.roles.tilt, *self.roles.lamps.values()]
            for i, name in enumerate(used):
                if used.index(name) != i:
                    raise FieldError(("roles",), f"servo '{name}' has two roles; give each role its own servo")
        for name in self.geometry.lamps if self.geometry else {}:
            light(("geometry", "lamps", name), name)
        for name in self.sim.lights:
            light(("sim", "lights", name), name)
        for name in self.sim.truth.lamps:
            if self.geometry is None or name not in self.geometry.lamps:
                raise FieldError(("sim", "truth", "lamps", name), f"no lamp '{name}' under geometry.lamps to correct; "
                                 "measure it there first")

    def true_geometry(self) -> GeometryConfig | None:
        """The geometry the simulated rig truly has: the measured one with `sim.truth` laid over it."""
        if self.geometry is None:
            return None
        merged = _overlay(self.geometry.model_dump(), self.sim.truth.model_dump(exclude_none=True))
        return GeometryConfig.model_validate(merged)

    def pose_targets(self, pose: str) -> dict[int, int]:
        """Servo channel -> pulse for a named pose; unnamed servos stay where they are.

        Poses given in degrees must have been converted (`rig.calibration.degrees.resolve`) first.
        """
        targets = {}
        for name, value in self.poses[pose].items():
            if not isinstance(value, int):
                raise ConfigError(f"pose '{pose}': {name}={value} is in degrees and needs the rig's calibration")
            targets[self.servos[name].channel] = value
        return targets

    @property
    def uses_degrees(self) -> bool:
        return any(isinstance(v, str) for targets in self.poses.values() for v in targets.values())

    def light_levels(self, preset: str) -> dict[int, int]:
        """Light channel -> level; lights a preset does not name are off."""
        levels = {c.channel: 0 for c in self.lights.values()}
        levels.update({self.lights[name].channel: v for name, v in self.lighting[preset].items()})
        return levels


def _unique_channels(kind: str, channels: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    for name, ch in channels.items():
        if ch in seen:
            raise FieldError((kind, name, "channel"), f"{kind} '{seen[ch]}' and '{name}' both use channel {ch}")
        seen[ch] = name


# ---------------------------------------------------------------- session file


class ManifestConfig(Strict):
    csv: FilePath | None = None
    image_root: FilePath | None = None
    folder: FilePath | None = None

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


class WindowConfig(Strict):
    """How a 12- to 16-bit image (DICOM, 16-bit PNG/TIFF) is shown: DICOM's LINEAR window, in the image's own
    values (after a DICOM's modality rescale). It replaces the file's own VOI LUT or window."""

    center: float = Field(strict=False, allow_inf_nan=False)
    width: float = Field(ge=1, strict=False, allow_inf_nan=False)

    def pair(self) -> tuple[float, float]:
        return self.center, self.width


class ShardConfig(Strict):
    """Written by `rig shard` into each shard's session: which part of which split it is, so that
    `rig export --merge` can refuse a merge that leaves a shard out."""

    index: int = Field(ge=1, description="this shard's number, 1..of")
    of: int = Field(ge=1, description="how many shards the split made")
    split: str = Field(min_length=1, description="one id per `rig shard` call: shards of other splits never merge")

    @model_validator(mode="after")
    def _in_range(self) -> ShardConfig:
        if self.index > self.of:
            raise FieldError(("index",), f"shard {self.index} of {self.of}: the index must be at most 'of'")
        return self


class QAConfig(Strict):
    """What every photo must show before it is accepted (the rest is retaken)."""

    min_margin: float = Field(0.02, ge=0, lt=0.5,
                              description="the screen's corners at least this fraction of the photo's short side "
                                          "inside it")
    min_sharpness: float = Field(0.6, ge=0, description="fraction of the source's fine detail (its Laplacian at "
                                                        "192 px across) the registered x-ray area reproduces")
    max_clipped: float = Field(0.01, ge=0, le=1, description="fraction of the x-ray area at full scale")
    save_registered: bool = Field(False, description="save the x-ray area rectified to the source image's size")


MAX_REPEATS = 2 ** 62  # keeps every item number a SQLite integer; `max_items` is the sane limit


class SessionConfig(Strict):
    rig: FilePath
    manifest: ManifestConfig
    conditions: list[ConditionConfig] = Field(min_length=1)
    repeats: int = Field(1, ge=1, le=MAX_REPEATS)
    retries: int = Field(2, ge=0, le=1000, description="retakes of a capture whose attempt failed")
    output: FilePath | None = None
    max_image_pixels: int = Field(100_000_000, ge=1, le=2 ** 30,
                                  description="larger images (by their header) fail their item undecoded; "
                                              "at most OpenCV's own limit of 2^30")
    max_items: int = Field(10_000_000, ge=1, description="refuse a plan of more items (images x conditions x repeats)")
    failure_streak: int = Field(5, ge=0, description="pause when this many consecutive items failed the same "
                                                     "check (0: never pause)")
    fiducials: bool = Field(True, description="ArUco markers in the letterbox margins: frame id + screen corners")
    window: WindowConfig | None = Field(None, description="show 12- to 16-bit images through this window instead "
                                        "of a DICOM's own VOI or a 16-bit image's own range")
    qa: QAConfig = QAConfig()
    shard: ShardConfig | None = Field(None, description="written by rig shard; do not edit")


# ---------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[M]) -> tuple[M, yaml.Node]:
    """Parse and validate a YAML file; any error becomes one line naming file, line and field.

    `extends: other.yaml` (relative to the file) starts from that file and deep-merges this one over
    it: mappings merge key by key, anything else replaces; a section that names another `kind` than
    the base's replaces the base's section whole. Each value keeps the file and line it came from."""
    node = _compose_extended(path, ())
    data = yaml.SafeLoader("").construct_document(node)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of fields at the top level")
    try:
        return model.model_validate(data), node
    except ValidationError as e:
        _refuse_other_kind(path, model, data)
        errors = e.errors()
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])  # a typo also reads as missing
        loc = _without_kind_tags(data, tuple(err["loc"]))
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc += cause.loc
        if err["type"] == "extra_forbidden":
            raise ConfigError(located(path, node, loc, _unknown_key(model, loc, data), shown=loc[:-1])) from None
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            kinds = ", ".join(_kinds_at(model, loc))
            if err["type"] == "union_tag_invalid":
                raise ConfigError(located(path, node, (*loc, "kind"), f"unknown kind; choose one of: {kinds}")
                                  ) from None
            raise ConfigError(located(path, node, loc, f"missing field 'kind'; add kind: one of {kinds}")) from None
        raise ConfigError(located(path, node, loc, _explain(err))) from None


def _compose(path: Path) -> yaml.Node:
    """One file's node tree; its marks carry the file's path (what `located` prints)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    stream = io.StringIO(text)
    stream.name = str(path)  # yaml's Reader names its marks after the stream
    try:
        node = yaml.compose(stream, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix the syntax there") from None
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:1: expected a mapping of fields at the top level")
    _refuse_duplicate_keys(path, node)
    return node


def _compose_extended(path: Path, seen: tuple[Path, ...]) -> yaml.MappingNode:
    """The file's node tree merged over the tree of the file its `extends:` names (recursively)."""
    node = _compose(path)
    assert isinstance(node, yaml.MappingNode)
    key_node = next((k for k, _ in node.value if k.value == "extends"), None)
    if key_node is None:
        return node
    value = next(v for k, v in node.value if k is key_node)
    node.value = [(k, v) for k, v in node.value if k is not key_node]
    if not isinstance(value, yaml.ScalarNode) or not value.value:
        raise ConfigError(f"{path}:{value.start_mark.line + 1}: extends: give the path of one rig file")
    base_path = path.parent / value.value
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}:{value.start_mark.line + 1}: extends: {value.value} extends this file again; "
                          "break the cycle")
    if not base_path.exists():
        raise ConfigError(f"{path}:{value.start_mark.line + 1}: extends: {base_path} not found; fix the path")
    base = _compose_extended(base_path, (*seen, path.resolve()))
    merged = _merge(base, node)
    assert isinstance(merged, yaml.MappingNode)
    return merged


def _merge(base: yaml.Node, over: yaml.Node) -> yaml.Node:
    """`over` deep-merged onto `base` (mappings key by key; a changed `kind:` replaces the section)."""
    if not (isinstance(base, yaml.MappingNode) and isinstance(over, yaml.MappingNode)):
        return over
    kinds = [next((v.value for k, v in m.value if k.value == "kind" and isinstance(v, yaml.ScalarNode)), None)
             for m in (base, over)]
    if None not in kinds and kinds[0] != kinds[1]:
        return over
    pairs = list(base.value)
    for key, value in over.value:
        i = next((i for i, (k, _) in enumerate(pairs) if k.value == key.value), None)
        if i is None:
            pairs.append((key, value))
        else:
            pairs[i] = (key, _merge(pairs[i][1], value))
    return yaml.MappingNode(over.tag, pairs, over.start_mark, over.end_mark, flow_style=over.flow_style)


def _without_kind_tags(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic puts the chosen `kind` into an error's path (`camera.sim.model`); the file has no such key."""
    out: list[Any] = []
    for key in loc:
        if isinstance(data, dict) and key not in data and data.get("kind") == key:
            continue
        out.append(key)
        data = data.get(key) if isinstance(data, dict) else (
            data[key] if isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data) else None)
    return tuple(out)


def _kinds_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The `kind:` values the field at `loc` accepts (a discriminated union of models)."""
    field = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is None:
        return []
    tp: Any = field.annotation
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return [arg for m in typing.get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)
            for arg in typing.get_args(m.model_fields["kind"].annotation)]


def _refuse_duplicate_keys(path: Path, root: yaml.Node) -> None:
    """YAML lets the last of two equal keys win silently; here the second one is an error."""
    stack, seen_nodes = [root], set()
    duplicates: list[tuple[yaml.Node, yaml.Node]] = []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in first:
                        duplicates.append((key, first[key.value]))
                    first.setdefault(key.value, key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    if duplicates:
        key, earlier = min(duplicates, key=lambda d: d[0].start_mark.line)
        raise ConfigError(f"{path}:{key.start_mark.line + 1}: key '{key.value}' is given twice (first on line "
                          f"{earlier.start_mark.line + 1}); keep one of them")


def _refuse_other_kind(path: Path, model: type[BaseModel], data: dict[Any, Any]) -> None:
    """A rig file where a session file belongs (or the reverse) says so instead of listing missing fields."""
    kinds: dict[type[BaseModel], str] = {RigConfig: "rig", SessionConfig: "session"}
    for other, kind in kinds.items():
        if model in kinds and other is not model and not data.keys() & model.model_fields.keys() \
                and data.keys() & other.model_fields.keys():
            wanted = kinds[model]
            hint = ("give the session file, whose 'rig:' names this rig file" if kind == "rig"
                    else "give the rig file that its 'rig:' names")
            raise ConfigError(f"{path}: this is a {kind} file, not a {wanted} file; {hint}")


def _unknown_key(model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> str:
    """`unknown key 'x'`, with the closest field name of that place when there is one."""
    key = str(loc[-1])
    fields = _fields_at(model, loc[:-1], data)
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    section = _value_at(data, loc[:-1])
    if not close and isinstance(section, dict) and "kind" in section:  # e.g. a gphoto2 field on a sim camera
        hint = f" (kind {section['kind']} takes: {', '.join(f for f in fields if f != 'kind') or 'nothing else'})"
    return f"unknown key '{key}'{hint}; fix its spelling or remove it"


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for key in loc:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...], data: Any = None) -> list[str]:
    """The field names of the model found at `loc` below `model` (through dicts, lists and `kind:`)."""
    tp: Any = model
    for i, key in enumerate(loc):
        inner = _model_of(tp, _value_at(data, loc[:i]))
        if inner is not None:
            field = inner.model_fields.get(key) if isinstance(key, str) else None
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    found = _model_of(tp, _value_at(data, loc))
    return list(found.model_fields) if found else []


def _model_of(tp: Any, value: Any = None) -> type[BaseModel] | None:
    """The model a field's type stands for; of a union of kinds, the one `value`'s `kind:` names."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
    kind = value.get("kind") if isinstance(value, dict) else None
    chosen = [m for m in models
              if "kind" in m.model_fields and kind in typing.get_args(m.model_fields["kind"].annotation)]
    return next(iter(chosen or models), None)


def _explain(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing field; add it"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(err.get("input"), bool) and kind != "bool_type":
        msg += " (YAML reads unquoted yes/no/on/off/true/false as a boolean)"
    return msg


def located(path: Path, root: yaml.Node, loc: tuple[Any, ...], message: str,
            shown: tuple[Any, ...] | None = None) -> str:
    """Format `file:line: field.path: message`, finding the line of the deepest node of `loc`.

    `shown` is the field path to print when it differs from `loc` (an unknown key names its parent).
    """
    node: yaml.Node = root
    for i, key in enumerate(loc):
        if shown is not None and i == len(loc) - 1 and isinstance(node, yaml.MappingNode):
            node = next((k for k, _ in node.value if k.value == str(key)), node)  # the key's line, not its value's
            break
        child = _child(node, key)
        if child is None:
            break
        node = child
    shown = loc if shown is None else shown
    field = ".".join(str(k) if not isinstance(k, int) else f"[{k}]" for k in shown).replace(".[", "[")
    source = node.start_mark.name  # the file this value came from (a base file named by `extends:`)
    prefix = f"{path if source.startswith('<') else source}:{node.start_mark.line + 1}"
    return f"{prefix}: {field}: {message}" if field else f"{prefix}: {message}"


def _child(node: yaml.Node, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == str(key):
                found: yaml.Node = v
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        item: yaml.Node = node.value[key]
        return item
    return None


def load_rig(path: Path) -> RigConfig:
    rig, _ = load_yaml_model(path, RigConfig)
    return rig
