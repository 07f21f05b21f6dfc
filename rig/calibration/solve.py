"""Geometry solved from board photos: intrinsics, camera pose (solvePnP), the arm's pivot and angles,
screen corners and homography, and a lamp's angle from its highlight in the glass.

Pure functions of photos and detections; the procedures that take the photos are in procedures.py.
World frame: millimetres, origin at the screen centre, x right, y down, z into the screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rig.calibration.board import Board, Detection


@dataclass(frozen=True)
class Intrinsics:
    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    rms_px: float
    image_size: tuple[int, int]
    views: int


def calibrate_intrinsics(board: Board, detections: list[Detection], image_size: tuple[int, int]) -> Intrinsics:
    """Camera matrix and radial distortion k1 from several views of the board.

    The screen never reaches the photo's corners, so higher distortion terms (k2, k3, tangential)
    are not observable from it: fitted anyway they soak up noise and bend the extrapolation to the
    screen's own corners by about a pixel, which is what coverage and range depend on.
    """
    objs = [board.screen_points_mm(d.ids).astype(np.float32) for d in detections]
    imgs = [d.corners.astype(np.float32) for d in detections]
    flags = cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST
    rms, K, dist, _, _ = cv2.calibrateCamera(objs, imgs, image_size, None, None, flags=flags)
    return Intrinsics(K, dist.ravel(), float(rms), image_size, len(detections))


@dataclass(frozen=True)
class Pose:
    """Camera pose relative to the screen: world (screen, mm) -> camera."""

    rvec: np.ndarray
    tvec: np.ndarray
    reprojection_px: float

    @property
    def rotation(self) -> np.ndarray:
        return cv2.Rodrigues(self.rvec)[0]

    @property
    def centre_mm(self) -> np.ndarray:
        """Where the camera is, in the screen's frame."""
        centre: np.ndarray = (-self.rotation.T @ self.tvec).ravel()
        return centre


def solve_pose(board: Board, det: Detection, intr: Intrinsics) -> Pose:
    obj = board.screen_points_mm(det.ids)
    ok, rvec, tvec = cv2.solvePnP(obj, det.corners, intr.camera_matrix, intr.dist_coeffs,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP failed")
    proj, _ = cv2.projectPoints(obj, rvec, tvec, intr.camera_matrix, intr.dist_coeffs)
    err = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - det.corners) ** 2, axis=1))))
    return Pose(rvec, tvec, err)


def arm_angles(centre_mm: np.ndarray, pivot_mm: np.ndarray) -> tuple[float, float]:
    """Pan and tilt of a camera on an arm about `pivot_mm` (degrees), from the camera centre.

    Pan swings about the vertical (y) axis, positive to the right (+x); tilt raises the camera
    (negative y is up), positive upwards. At pan = tilt = 0 the camera is straight in front (-z).
    """
    d = centre_mm - pivot_mm
    pan = math.degrees(math.atan2(d[0], -d[2]))
    tilt = math.degrees(math.atan2(-d[1], math.hypot(d[0], d[2])))
    return pan, tilt


def fit_pivot(centres_mm: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The sphere through camera centres (N, 3): its centre (the arm's pivot), radius and RMS residual (mm).

    Linear least squares on |c|^2 = 2 c.p + (r^2 - |p|^2); the pan and the tilt sweep are two arcs of
    the sphere in different planes, which fixes it.
    """
    c = np.asarray(centres_mm, np.float64)
    A = np.column_stack([2 * c, np.ones(len(c))])
    b = np.sum(c * c, axis=1)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    pivot = sol[:3]
    radius = math.sqrt(max(0.0, float(sol[3] + pivot @ pivot)))
    rms = float(np.sqrt(np.mean((np.linalg.norm(c - pivot, axis=1) - radius) ** 2)))
    return pivot, radius, rms


def project_screen_corners(board: Board, pose: Pose, intr: Intrinsics) -> np.ndarray:
    """Where the screen's corners land in the photo, distortion included."""
    pts, _ = cv2.projectPoints(board.screen_outline_mm(), pose.rvec, pose.tvec, intr.camera_matrix,
                               intr.dist_coeffs)
    return pts.reshape(-1, 2)


def screen_homography(board: Board, pose: Pose, intr: Intrinsics) -> np.ndarray:
    """Screen pixel -> undistorted photo pixel homography for this pose (K [r1 r2 t] scaled to pixels)."""
    R = pose.rotation
    K = intr.camera_matrix
    H_mm = K @ np.column_stack([R[:, 0], R[:, 1], pose.tvec.ravel()])
    px, py = board.pitch_mm
    screen_px_to_mm = np.array([[px, 0, -board.display_w * px / 2], [0, py, -board.display_h * py / 2], [0, 0, 1]])
    H: np.ndarray = H_mm @ screen_px_to_mm
    scaled: np.ndarray = H / H[2, 2]
    return scaled


def margin_px(corners: np.ndarray, image_size: tuple[int, int]) -> float:
    """The smallest distance from a screen corner to the photo's edge; negative when outside."""
    w, h = image_size
    return float(min(np.min(corners[:, 0]), np.min(corners[:, 1]), np.min(w - 1 - corners[:, 0]),
                     np.min(h - 1 - corners[:, 1])))


def glare_centre(lit: np.ndarray, dark: np.ndarray, min_peak: float = 12.0) -> np.ndarray | None:
    """Centre (x, y) and half-maximum radius of a lamp's highlight, the brightest blob of (lit - dark).

    None if there is no highlight or the photo's edge cuts it.

    Both photos show a black screen from the same pose; only the one lamp differs between them.
    """
    diff = cv2.GaussianBlur(cv2.cvtColor(lit, cv2.COLOR_BGR2GRAY).astype(np.float32)
                            - cv2.cvtColor(dark, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 3)
    diff -= np.median(diff)  # the lamp's diffuse veil raises everything a little
    peak = float(diff.max())
    if peak < min_peak:
        return None
    ys, xs = np.nonzero(diff > peak / 2)
    w = diff[ys, xs]
    if xs.min() == 0 or ys.min() == 0 or xs.max() == diff.shape[1] - 1 or ys.max() == diff.shape[0] - 1:
        return None  # cut by the photo's edge: its centre is not measurable
    return np.array([np.sum(xs * w) / np.sum(w), np.sum(ys * w) / np.sum(w), math.sqrt(len(xs) / math.pi)])


def inside_by(point: np.ndarray, polygon: np.ndarray) -> float:
    """Signed distance of a point inside a polygon (negative outside)."""
    return float(cv2.pointPolygonTest(polygon.astype(np.float32).reshape(-1, 1, 2),
                                      (float(point[0]), float(point[1])), True))


def glare_ray(glare_px: np.ndarray, pose: Pose, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """The view ray (camera centre, unit direction in the world) through a highlight's centre."""
    ideal = cv2.undistortPoints(np.asarray(glare_px[:2], np.float64).reshape(1, 1, 2), intr.camera_matrix,
                                intr.dist_coeffs).reshape(2)
    direction = pose.rotation.T @ np.array([ideal[0], ideal[1], 1.0])
    return pose.centre_mm, direction / np.linalg.norm(direction)


def _lamp_at(pivot_mm: np.ndarray, reach_mm: float, deg: float) -> np.ndarray:
    """Where a lamp is at arm angle `deg` (0: straight towards the camera side, -z; positive towards +x)."""
    a = math.radians(deg)
    return pivot_mm + reach_mm * np.array([math.sin(a), 0.0, -math.cos(a)])


def _ray_miss(lamp_mm: np.ndarray, ray: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """How far (a vector, mm) the lamp's mirror image in the screen (z = 0) lies off the view ray."""
    centre, direction = ray
    v = lamp_mm * np.array([1.0, 1.0, -1.0]) - centre
    miss: np.ndarray = v - np.dot(v, direction) * direction
    return miss


def lamp_angle_from_glare(glare_px: np.ndarray, pose: Pose, intr: Intrinsics, pivot_mm: np.ndarray,
                          reach_mm: float) -> float:
    """The arm angle (degrees) that puts the lamp's mirror image in the screen on the glare's view ray.

    The lamp swings about a vertical axis through `pivot_mm` at `reach_mm` (0 deg: straight towards the
    camera side, -z; positive towards +x). Its mirror image in the screen (z = 0) must lie on the ray
    from the camera centre through the highlight.
    """
    return lamp_angle_on_ray(glare_ray(glare_px, pose, intr), pivot_mm, reach_mm)


def lamp_angle_on_ray(ray: tuple[np.ndarray, np.ndarray], pivot_mm: np.ndarray, reach_mm: float) -> float:
    """The arm angle (degrees) whose lamp's mirror image in the screen lies closest to the view ray."""

    def miss(deg: float) -> float:
        return float(np.linalg.norm(_ray_miss(_lamp_at(pivot_mm, reach_mm, deg), ray)))

    grid = np.arange(-90.0, 90.01, 0.5)
    best = float(grid[int(np.argmin([miss(a) for a in grid]))])
    lo, hi = best - 0.5, best + 0.5
    for _ in range(40):  # golden-section refinement around the coarse minimum
        m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
        lo, hi = (lo, m2) if miss(m1) < miss(m2) else (m1, hi)
    return (lo + hi) / 2


def fit_lamp_pivot(rays: list[tuple[np.ndarray, np.ndarray]], pulses: list[int], pivot_mm: np.ndarray,
                   reach_mm: float, angles_deg: list[float]) -> tuple[np.ndarray, float]:
    """The lamp arm's pivot that puts the lamp's mirror image on every highlight's view ray, starting
    from the ruler's: (pivot, RMS miss in mm).

    From one camera position an arc's size, distance and angles trade against each other; what
    separates them is that a servo's angle is close to linear in its pulse, so the fit asks for that
    (the angles are then measured about the fitted pivot and fitted freely). The reach stays the
    ruler's: one view cannot tell a longer arm further away from a shorter one nearer (its error
    scales the angles by reach error / reach). Levenberg-Marquardt on the pivot and the line.
    """
    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([_ray_miss(_lamp_at(x[:3], reach_mm, x[3] * (us - PULSE_CENTRE) + x[4]), ray)
                               for us, ray in zip(pulses, rays)])

    slope, offset = np.polyfit(np.asarray(pulses, float) - PULSE_CENTRE, angles_deg, 1)
    x = np.array([*np.asarray(pivot_mm, np.float64), slope, offset])
    steps = np.array([0.01, 0.01, 0.01, 1e-6, 1e-4])
    r = residuals(x)
    damping = 1e-3
    for _ in range(200):
        J = np.column_stack([(residuals(x + np.eye(len(x))[k] * steps[k]) - r) / steps[k] for k in range(len(x))])
        JtJ = J.T @ J
        step = np.linalg.solve(JtJ + damping * np.diag(np.diag(JtJ) + 1e-12), -J.T @ r)
        trial = residuals(x + step)
        if trial @ trial < r @ r:
            x, r, damping = x + step, trial, damping / 3
            if np.max(np.abs(step[:3])) < 1e-4:
                break
        else:
            damping *= 4
            if damping > 1e10:
                break
    return x[:3], float(np.sqrt(np.sum(r * r) / len(rays)))


PULSE_CENTRE = 1500.0  # pulses are centred here in the fit, for its conditioning
