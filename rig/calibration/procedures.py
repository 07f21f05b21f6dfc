"""The calibration procedures: drive the rig, photograph the board, hand the photos to `calibrate`.

Each procedure moves only within the rig file's hard pulse limits, leaves the lights as the
measurement needs them, and raises a one-line `RigError` with the reason when a result is not
good enough to save.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from rig.calibration.angles import AngleFit, fit_angles, pulse_to_angle
from rig.calibration.board import Board, Detection, detect
from rig.calibration.file import (
    AngleRecord,
    ArmRecord,
    CalibrationFile,
    IntrinsicsRecord,
    PoseRecord,
    RangeRecord,
    now,
)
from rig.calibration.solve import (
    Intrinsics,
    arm_angles,
    calibrate_intrinsics,
    fit_lamp_pivot,
    fit_pivot,
    glare_centre,
    glare_ray,
    inside_by,
    lamp_angle_from_glare,
    lamp_angle_on_ray,
    margin_px,
    project_screen_corners,
    screen_homography,
    solve_pose,
)
from rig.capture import Positioner
from rig.command import rig_command
from rig.config import RigConfig
from rig.devices.kinds import Devices
from rig.errors import ConfigError, DeviceError, RigError

log = logging.getLogger(__name__)

class Shooter:
    """One calibration photo: position and settle, show, confirm the controller holds the pose (as a
    run does, rig/capture.py), trigger, download, decode."""

    def __init__(self, devices: Devices, rig: RigConfig, on_photo: Callable[[int], None] = lambda shots: None) -> None:
        self.devices, self.rig = devices, rig
        self.positioner = Positioner(devices.motion, rig.motion)
        self.shots = 0
        self.on_photo = on_photo  # called with the photo count after every photo (progress, ETA)

    def photo(self, pulses: dict[str, int], frame: np.ndarray, lights: dict[int, int] | None = None) -> np.ndarray:
        """A photo at these servo pulses (by name) and light levels (by channel; None: as they are)."""
        targets = {self.rig.servos[name].channel: us for name, us in pulses.items()}
        label = f"calibration photo {self.shots + 1}"
        for _ in range(3):  # a photo whose exposure a controller reset spanned is taken again
            ready = self.positioner.ready(targets, lights, lambda: self.devices.display.show(frame), label)
            shot = self.devices.camera.trigger()
            problem = self.positioner.held(ready.readback, targets, lights)
            if problem is None:
                break
            self.devices.camera.download(shot)  # off the camera's card, and away
            log.warning("%s: %s; taking it again", label, problem)
        else:
            raise DeviceError(f"{label}: the controller does not hold its state through an exposure ({problem}); "
                              "check its power supply and cable")
        files = self.devices.camera.download(shot)
        self.shots += 1
        self.on_photo(self.shots)
        image = cv2.imdecode(np.frombuffer(files[0].data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise RigError(f"calibration photo {self.shots} from the camera does not decode; check the camera's "
                           "image format (JPEG needed)")
        return image


def _span(rig: RigConfig, servo: str, fraction: float, steps: int) -> list[int]:
    """Pulses across the middle `fraction` of a servo's hard limits, around its park pulse."""
    s = rig.servos[servo]
    half = (s.max - s.min) * fraction / 2
    lo, hi = max(s.min, s.park - half), min(s.max, s.park + half)
    return [int(round(v)) for v in np.linspace(lo, hi, steps)]


def park_pulses(rig: RigConfig) -> dict[str, int]:
    return {name: s.park for name, s in rig.servos.items()}


INTRINSICS_GRID = (5, 3)  # pan x tilt arm positions photographed for the camera's intrinsics


def measure_intrinsics(shooter: Shooter, rig: RigConfig, geo: Geometry, board: Board, max_rms_px: float = 1.0,
                       grid: tuple[int, int] | None = None) -> Intrinsics:
    """Photograph the board from a pan x tilt grid of arm positions and calibrate the camera."""
    grid = grid or INTRINSICS_GRID
    frame = board.frame()
    detections: list[Detection] = []
    size: tuple[int, int] | None = None
    for pan in _span(rig, geo.pan, 0.7, grid[0]):
        for tilt in _span(rig, geo.tilt, 0.7, grid[1]):
            photo = shooter.photo({**park_pulses(rig), geo.pan: pan, geo.tilt: tilt}, frame)
            size = (photo.shape[1], photo.shape[0])
            det = detect(board, photo)
            if det is not None:
                detections.append(det)
    if len(detections) < 6 or size is None:
        raise RigError(f"the board was found in only {len(detections)} of {grid[0] * grid[1]} photos (6 needed); "
                       "check that the camera sees the screen and is in focus")
    intr = calibrate_intrinsics(board, detections, size)
    if intr.rms_px > max_rms_px:
        raise RigError(f"intrinsics rejected: reprojection error {intr.rms_px:.2f} px is above {max_rms_px} px "
                       "(blurred or moving photos?); nothing was saved")
    return intr


@dataclass(frozen=True)
class ChannelAngles:
    fit: AngleFit
    pulses: list[int]
    angles: list[float]
    method: str


@dataclass(frozen=True)
class CameraAngles:
    channels: dict[str, ChannelAngles]
    pivot: ArmRecord


def measure_camera_angles(shooter: Shooter, rig: RigConfig, geo: Geometry, board: Board, intr: Intrinsics,
                          steps: int = 9) -> CameraAngles:
    """Sweep pan and tilt over their ranges; solvePnP gives where the camera is for each pulse.

    The camera centres of both sweeps lie on a sphere about the arm's pivot: fitting it gives the
    pivot from the photos themselves (a ruler's pivot a few mm off would bias every angle), and the
    arm's angles are measured about that. The ruler's pivot is the fallback when the fit is poor.
    """
    frame = board.frame()
    sweeps: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    for servo in (geo.pan, geo.tilt):
        pulses, centres = [], []
        for us in _span(rig, servo, 1.0, steps):
            photo = shooter.photo({**park_pulses(rig), servo: us}, frame)
            det = detect(board, photo)
            if det is None:
                continue  # the board left the frame at this end of the range
            pulses.append(us)
            centres.append(solve_pose(board, det, intr).centre_mm)
        if len(pulses) < 5:
            raise RigError(f"{servo}: the board was visible at only {len(pulses)} of {steps} positions (5 needed); "
                           "narrow the servo's limits or move the camera back")
        sweeps[servo] = (pulses, centres)
    everything = np.array([c for _, centres in sweeps.values() for c in centres])
    pivot, radius, rms = fit_pivot(everything)
    ruler = np.asarray(geo.camera_pivot_mm, float)
    fitted = rms <= PIVOT_FIT_MAX_RMS_MM and float(np.linalg.norm(pivot - ruler)) <= PIVOT_FIT_MAX_SHIFT_MM
    used = pivot if fitted else ruler
    record = ArmRecord(created=now(), pivot_mm=[float(v) for v in used],
                       radius_mm=radius if fitted else geo.camera_radius_mm, fit_rms_mm=rms,
                       ruler_pivot_mm=[float(v) for v in ruler], from_photos=fitted)
    result: dict[str, ChannelAngles] = {}
    for index, servo in enumerate((geo.pan, geo.tilt)):
        pulses, centres = sweeps[servo]
        angles = [arm_angles(c, used)[index] for c in centres]
        fit = fit_angles(np.array(pulses, float), np.array(angles))
        result[servo] = ChannelAngles(fit, pulses, angles, "camera pose from the board (solvePnP) about the "
                                      + ("arm pivot fitted to the camera positions" if fitted else "ruler's arm pivot"))
    return CameraAngles(result, record)


PIVOT_FIT_MAX_RMS_MM = 3.0  # the camera centres' spread about the fitted sphere; more: trust the ruler
PIVOT_FIT_MAX_SHIFT_MM = 50.0  # a fitted pivot further than this from the ruler's is a failed fit


@dataclass(frozen=True)
class PoseGeometry:
    homography: np.ndarray
    corners: np.ndarray
    margin_px: float
    reprojection_px: float


def measure_pose(shooter: Shooter, rig: RigConfig, board: Board, intr: Intrinsics,
                 pulses: dict[str, int]) -> PoseGeometry:
    photo = shooter.photo(pulses, board.frame())
    det = detect(board, photo)
    if det is None:
        raise RigError("the board is not visible from this pose; the screen is out of frame")
    pose = solve_pose(board, det, intr)
    corners = project_screen_corners(board, pose, intr)
    return PoseGeometry(screen_homography(board, pose, intr), corners,
                        margin_px(corners, intr.image_size), pose.reprojection_px)


def screen_margin(shooter: Shooter, rig: RigConfig, board: Board, intr: Intrinsics, pulses: dict[str, int]) -> float:
    """How far inside the photo the whole screen stays at this servo setting (negative: out of frame)."""
    photo = shooter.photo(pulses, board.frame())
    det = detect(board, photo, min_corners=8)
    if det is None:
        return -1e9
    pose = solve_pose(board, det, intr)
    return margin_px(project_screen_corners(board, pose, intr), intr.image_size)


def measure_range(shooter: Shooter, rig: RigConfig, board: Board, intr: Intrinsics, servo: str,
                  margin: float) -> tuple[int, int]:
    """The pulse range, around park, in which the whole screen stays `margin` px inside the frame."""
    s = rig.servos[servo]
    base = park_pulses(rig)
    if screen_margin(shooter, rig, board, intr, base) < margin:
        raise RigError(f"{servo}: at the park position the screen is already within {margin:.0f} px of the "
                       "frame's edge; move the camera back or lower the margin")

    def inside(us: int) -> bool:
        return screen_margin(shooter, rig, board, intr, {**base, servo: us}) >= margin

    def edge(limit: int) -> int:
        if inside(limit):
            return limit
        good, bad = s.park, limit
        while abs(bad - good) > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if inside(mid) else (good, mid)
        return good

    return edge(s.min), edge(s.max)


def measure_light_angles(shooter: Shooter, rig: RigConfig, board: Board, intr: Intrinsics,
                         arms: dict[str, tuple[str, tuple[float, float, float], float]],
                         steps: int = 9) -> dict[str, ChannelAngles]:
    """Sweep each light arm; the lamp's highlight in the black screen gives its angle.

    `arms` maps a light arm's servo to (its light, arm pivot in mm, reach in mm). For each pulse: a
    board photo for the camera pose, then a black screen with only this lamp lit and one with it off.
    Highlights the screen's edge cuts (less than twice their radius inside) are left out.
    """
    black = np.zeros_like(board.frame())
    base = park_pulses(rig)
    dark_levels = {light.channel: 0 for light in rig.lights.values()}
    result: dict[str, ChannelAngles] = {}
    for servo, (light, pivot, reach) in arms.items():
        ruler = np.asarray(pivot, float)
        lit_levels = {**dark_levels, rig.lights[light].channel: 255}
        pulses, angles, rays = [], [], []
        for us in _span(rig, servo, 1.0, steps):
            targets = {**base, servo: us}
            det = detect(board, shooter.photo(targets, board.frame(), dark_levels))
            if det is None:
                raise RigError("the board is not visible from the park position; the camera must see the screen")
            pose = solve_pose(board, det, intr)
            glare = glare_centre(shooter.photo(targets, black, lit_levels), shooter.photo(targets, black, dark_levels))
            screen = project_screen_corners(board, pose, intr)
            if glare is None or inside_by(glare, screen) < 2 * glare[2]:
                continue
            pulses.append(us)
            rays.append(glare_ray(glare, pose, intr))
            angles.append(lamp_angle_from_glare(glare, pose, intr, ruler, reach))
        if len(pulses) < 4:  # (the lamp is off: every position's last photo is the dark one)
            raise RigError(f"{servo}: the lamp's highlight was measurable at only {len(pulses)} of {steps} positions "
                           "(4 needed); is the lamp on that arm working, and is the screen glossy?")
        method = "lamp highlight in the screen (mirror geometry) about the ruler's arm pivot"
        if len(pulses) >= 5:
            fitted, rms = fit_lamp_pivot(rays, pulses, ruler, reach, angles)
            if rms <= LAMP_FIT_MAX_MISS_MM and float(np.linalg.norm(fitted - ruler)) <= PIVOT_FIT_MAX_SHIFT_MM:
                angles = [lamp_angle_on_ray(ray, fitted, reach) for ray in rays]
                method = (f"lamp highlight in the screen (mirror geometry) about the arm pivot fitted to the "
                          f"highlights ({fitted[0]:+.1f}, {fitted[1]:+.1f}, {fitted[2]:+.1f}) mm, "
                          f"rays missed by {rms:.2f} mm RMS")
        fit = fit_angles(np.array(pulses, float), np.array(angles), max_degree=2)
        result[servo] = ChannelAngles(fit, pulses, angles, method)
    return result


LAMP_FIT_MAX_MISS_MM = 3.0  # highlights' view rays missed by the fitted lamp's mirror image; more: trust the ruler


# ---------------------------------------------------------------- the commands


@dataclass(frozen=True)
class Geometry:
    """What calibration starts from: the rig file's measured `geometry:` and its `roles:`."""

    screen_mm: tuple[float, float]
    camera_pivot_mm: tuple[float, float, float]
    camera_radius_mm: float
    pan: str  # the servos with these roles
    tilt: str
    lamp_arms: dict[str, tuple[str, tuple[float, float, float], float]]  # servo -> (light, pivot, reach)

    @classmethod
    def of(cls, rig: RigConfig, rig_path: object) -> Geometry:
        """The rig's geometry and roles; a one-line error naming the rig file when either is missing."""
        for section, hint in (("geometry", "the monitor's size, the camera arm's pivot and radius, each lamp's "
                               "pivot and reach and the sensor width, measured in mm"),
                              ("roles", "which servo is the camera's pan, its tilt and each lamp's arm")):
            if getattr(rig, section) is None:
                raise ConfigError(f"{rig_path}: {section}: missing; rig calibrate needs {hint} (see "
                                  f"calibration/sim-rig.yaml); add a '{section}:' section")
        geo, roles = rig.geometry, rig.roles
        assert geo is not None and roles is not None
        arms = {}
        for light, servo in roles.lamps.items():
            lamp = geo.lamps.get(light)
            if lamp is None:
                raise ConfigError(f"{rig_path}: geometry.lamps.{light}: missing; roles.lamps puts light '{light}' "
                                  f"on servo '{servo}', so calibration needs its arm's pivot_mm and reach_mm")
            arms[servo] = (light, lamp.pivot_mm, lamp.reach_mm)
        return cls((geo.monitor.width_mm, geo.monitor.height_mm), geo.camera_arm.pivot_mm, geo.camera_arm.radius_mm,
                   roles.pan, roles.tilt, arms)


def board_for(rig: RigConfig, geo: Geometry) -> Board:
    return Board.for_display(rig.display.width, rig.display.height, geo.screen_mm)


def intrinsics_of(cal: CalibrationFile) -> Intrinsics:
    rec = cal.intrinsics
    assert rec is not None
    width, height = rec.image_size
    return Intrinsics(np.array(rec.camera_matrix), np.array(rec.dist_coeffs), rec.rms_px, (width, height), rec.views)


def planned_photos(action: str, rig: RigConfig, geo: Geometry, steps: int = 9) -> int:
    """How many photos a calibration command takes (`range`: at most this many; its search may end sooner)."""
    if action == "intrinsics":
        return INTRINSICS_GRID[0] * INTRINSICS_GRID[1]
    if action == "angles":
        return 2 * steps + 3 * steps * len(geo.lamp_arms)
    if action == "poses":
        return len(rig.poses)
    photos = 0
    for servo in (geo.pan, geo.tilt):  # park, then each limit and a bisection towards it
        s = rig.servos[servo]
        photos += 1 + sum(1 + math.ceil(math.log2(max(2, abs(limit - s.park)))) for limit in (s.min, s.max))
    return photos


def run_intrinsics(shooter: Shooter, rig: RigConfig, geo: Geometry, cal: CalibrationFile,
                   max_rms_px: float) -> list[str]:
    intr = measure_intrinsics(shooter, rig, geo, board_for(rig, geo), max_rms_px)
    cal.intrinsics = IntrinsicsRecord(created=now(), image_size=intr.image_size,
                                      camera_matrix=intr.camera_matrix.tolist(), dist_coeffs=intr.dist_coeffs.tolist(),
                                      rms_px=intr.rms_px, views=intr.views)
    K = intr.camera_matrix
    return [f"intrinsics from {intr.views} views: reprojection error {intr.rms_px:.3f} px, "
            f"focal {K[0, 0]:.1f} x {K[1, 1]:.1f} px, centre ({K[0, 2]:.1f}, {K[1, 2]:.1f}), "
            f"distortion {', '.join(f'{d:+.4f}' for d in intr.dist_coeffs)}"]


def run_angles(shooter: Shooter, rig: RigConfig, geo: Geometry, cal: CalibrationFile, steps: int) -> list[str]:
    intr = intrinsics_of(cal)
    board = board_for(rig, geo)
    camera = measure_camera_angles(shooter, rig, geo, board, intr, steps)
    measured = dict(camera.channels)
    measured.update(measure_light_angles(shooter, rig, board, intr, geo.lamp_arms, steps))
    cal.arm = camera.pivot
    p, r = camera.pivot.pivot_mm, camera.pivot.ruler_pivot_mm
    lines = ["camera arm pivot " + (f"from the photos ({p[0]:+.1f}, {p[1]:+.1f}, {p[2]:+.1f}) mm, "
                                     f"radius {camera.pivot.radius_mm:.1f} mm, camera positions within "
                                     f"{camera.pivot.fit_rms_mm:.2f} mm RMS of it"
                                     if camera.pivot.from_photos else
                                     f"not measurable from the photos (spread {camera.pivot.fit_rms_mm:.1f} mm RMS); "
                                     "using the ruler's")
             + f"; the ruler said ({r[0]:+.1f}, {r[1]:+.1f}, {r[2]:+.1f}) mm"]
    for servo, m in measured.items():
        cal.angles[servo] = AngleRecord(created=now(), method=m.method, coeffs=list(m.fit.coeffs),
                                        rms_deg=m.fit.rms_deg, max_deg=m.fit.max_deg, samples=m.fit.samples,
                                        pulse_range=(min(m.pulses), max(m.pulses)))
        kind = {2: "linear"}.get(len(m.fit.coeffs), f"degree {len(m.fit.coeffs) - 1}")
        lines.append(f"{servo}: {kind} fit over {m.fit.samples} positions, residual RMS {m.fit.rms_deg:.3f} deg "
                     f"(max {m.fit.max_deg:.3f}); {m.fit.angle(min(m.pulses)):+.2f} .. "
                     f"{m.fit.angle(max(m.pulses)):+.2f} deg")
    return lines


def run_poses(shooter: Shooter, rig: RigConfig, geo: Geometry, cal: CalibrationFile) -> list[str]:
    intr = intrinsics_of(cal)
    board = board_for(rig, geo)
    lines = []
    for name, targets in rig.poses.items():
        pulses = {servo: value for servo, value in targets.items() if isinstance(value, int)}
        if len(pulses) < len(targets):
            raise RigError(f"pose {name} is in degrees; calibrate angles first and give it in pulses here")
        seen = measure_pose(shooter, rig, board, intr, {**park_pulses(rig), **pulses})
        cal.poses[name] = PoseRecord(created=now(), homography=seen.homography.tolist(),
                                     corners_px=seen.corners.tolist(), margin_px=seen.margin_px,
                                     reprojection_px=seen.reprojection_px)
        lines.append(f"pose {name}: screen {seen.margin_px:.0f} px inside the frame at its closest corner "
                     f"(board reprojection {seen.reprojection_px:.2f} px)")
    return lines


def run_range(shooter: Shooter, rig: RigConfig, geo: Geometry, cal: CalibrationFile, margin: float) -> list[str]:
    intr = intrinsics_of(cal)
    board = board_for(rig, geo)
    lines = []
    for servo in (geo.pan, geo.tilt):
        rec = cal.angles.get(servo)
        if rec is None:
            raise RigError(f"{servo} has no angle calibration yet; run: {rig_command()} calibrate angles first")
        lo, hi = measure_range(shooter, rig, board, intr, servo, margin)
        a_lo, a_hi = (pulse_to_angle(rec.coeffs, us) for us in (lo, hi))
        cal.ranges[servo] = RangeRecord(created=now(), min_deg=min(a_lo, a_hi), max_deg=max(a_lo, a_hi),
                                        min_us=lo, max_us=hi, margin_px=margin)
        lines.append(f"{servo}: the screen stays {margin:.0f} px inside the frame from {lo} to {hi} us "
                     f"({min(a_lo, a_hi):+.2f} .. {max(a_lo, a_hi):+.2f} deg)")
    return lines
