"""Measuring the rig from photos of a ChArUco board shown on its own monitor.

The board is drawn pixel-exact on the screen, so its corners are known in millimetres on the screen
plane (origin at the screen centre, x right, y down, z into the screen: the studio's world frame).
From photos of it this module computes the camera's intrinsics, the camera pose for a servo
setting (solvePnP), pulse -> angle fits, per-pose screen geometry and safe angle ranges. It works
the same on the simulated and a real rig: it only uses the Motion, Display and Camera devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOARD_DICT = cv2.aruco.DICT_5X5_250


@dataclass(frozen=True)
class Board:
    """A ChArUco board drawn at an exact pixel scale in the middle of the display."""

    cols: int
    rows: int
    square_px: int
    display_w: int
    display_h: int
    pitch_mm: tuple[float, float]  # monitor pixel pitch, x and y

    @classmethod
    def for_display(cls, width: int, height: int, screen_mm: tuple[float, float], cols: int = 11,
                    rows: int = 8) -> Board:
        """The largest board of square pixels that fits the display with half a square to spare."""
        square = int(min(width / (cols + 0.5), height / (rows + 0.5)))
        return cls(cols, rows, square, width, height, (screen_mm[0] / width, screen_mm[1] / height))

    @property
    def origin_px(self) -> tuple[int, int]:
        return (self.display_w - self.cols * self.square_px) // 2, (self.display_h - self.rows * self.square_px) // 2

    def charuco(self) -> cv2.aruco.CharucoBoard:
        """The OpenCV board in screen-pixel units (its squares are square in pixels, not always in mm)."""
        return cv2.aruco.CharucoBoard((self.cols, self.rows), float(self.square_px), self.square_px * 0.72,
                                      cv2.aruco.getPredefinedDictionary(BOARD_DICT))

    def frame(self) -> np.ndarray:
        """The RGB frame to show fullscreen: the board on white, exact pixels, no scaling."""
        img = self.charuco().generateImage((self.cols * self.square_px, self.rows * self.square_px), marginSize=0)
        canvas = np.full((self.display_h, self.display_w), 255, np.uint8)
        x0, y0 = self.origin_px
        canvas[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
        return cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)

    def screen_points_mm(self, ids: np.ndarray) -> np.ndarray:
        """Screen-plane coordinates (mm, z = 0) of the board's inner corners with these ids."""
        corners = self.charuco().getChessboardCorners()[ids.ravel()]  # px from the board's top-left
        x0, y0 = self.origin_px
        px, py = self.pitch_mm
        u, v = corners[:, 0] + x0, corners[:, 1] + y0  # pixel-edge coordinates on the screen
        return np.stack([(u - self.display_w / 2) * px, (v - self.display_h / 2) * py, np.zeros(len(u))], axis=1)

    def screen_outline_mm(self) -> np.ndarray:
        """The screen's four corners on the same plane (top-left, top-right, bottom-right, bottom-left)."""
        w, h = self.display_w * self.pitch_mm[0] / 2, self.display_h * self.pitch_mm[1] / 2
        return np.array([[-w, -h, 0], [w, -h, 0], [w, h, 0], [-w, h, 0]], np.float64)


@dataclass(frozen=True)
class Detection:
    corners: np.ndarray  # (N, 2) photo pixels
    ids: np.ndarray  # (N,)


def detect(board: Board, photo: np.ndarray, min_corners: int = 12) -> Detection | None:
    """Find the board's inner corners in a photo (grey or colour), refined to sub-pixel."""
    gray = photo if photo.ndim == 2 else cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    detector = cv2.aruco.CharucoDetector(board.charuco())
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) < min_corners:
        return None
    return Detection(corners.reshape(-1, 2).astype(np.float64), ids.ravel().astype(np.int32))


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
        return (-self.rotation.T @ self.tvec).ravel()


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
    H = H_mm @ screen_px_to_mm
    return H / H[2, 2]


def margin_px(corners: np.ndarray, image_size: tuple[int, int]) -> float:
    """The smallest distance from a screen corner to the photo's edge; negative when outside."""
    w, h = image_size
    return float(min(np.min(corners[:, 0]), np.min(corners[:, 1]), np.min(w - 1 - corners[:, 0]),
                     np.min(h - 1 - corners[:, 1])))


@dataclass(frozen=True)
class AngleFit:
    """pulse -> angle as a polynomial, with its residuals."""

    coeffs: tuple[float, ...]  # highest power first (numpy.polyval order)
    rms_deg: float
    max_deg: float
    samples: int

    def angle(self, pulse: float) -> float:
        return float(np.polyval(self.coeffs, pulse))

    def pulse(self, angle: float, lo: float, hi: float) -> float:
        """The pulse giving `angle` inside [lo, hi] (the fit is monotonic there)."""
        a_lo, a_hi = self.angle(lo), self.angle(hi)
        if not min(a_lo, a_hi) - 1e-9 <= angle <= max(a_lo, a_hi) + 1e-9:
            raise ValueError(f"{angle:.2f} deg is outside {min(a_lo, a_hi):.2f}..{max(a_lo, a_hi):.2f}")
        for _ in range(60):  # bisection: robust for any monotonic polynomial
            mid = (lo + hi) / 2
            if (self.angle(mid) - angle) * (a_hi - a_lo) > 0:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2


NOISE_FLOOR_DEG = 0.05  # residuals below this are measurement noise, not a curve worth fitting


def fit_angles(pulses: np.ndarray, angles: np.ndarray, max_degree: int = 3) -> AngleFit:
    """Linear, or a higher degree only where the lower one leaves residuals above the noise floor and
    the higher one halves them: a servo's non-linearity is fitted, the measurement's noise is not."""
    best: AngleFit | None = None
    for degree in range(1, max_degree + 1):
        if len(pulses) < degree + 3:
            break
        coeffs = np.polyfit(pulses, angles, degree)
        resid = angles - np.polyval(coeffs, pulses)
        fit = AngleFit(tuple(float(c) for c in coeffs), float(np.sqrt(np.mean(resid ** 2))),
                       float(np.max(np.abs(resid))), len(pulses))
        if best is None or (best.rms_deg > NOISE_FLOOR_DEG and fit.rms_deg < best.rms_deg / 2):
            best = fit
    assert best is not None, "need at least 4 samples"
    return best


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


def lamp_angle_from_glare(glare_px: np.ndarray, pose: Pose, intr: Intrinsics, pivot_mm: np.ndarray,
                          reach_mm: float) -> float:
    """The arm angle (degrees) that puts the lamp's mirror image in the screen on the glare's view ray.

    The lamp swings about a vertical axis through `pivot_mm` at `reach_mm` (0 deg: straight towards the
    camera side, -z; positive towards +x). Its mirror image in the screen (z = 0) must lie on the ray
    from the camera centre through the highlight.
    """
    ideal = cv2.undistortPoints(np.asarray(glare_px[:2], np.float64).reshape(1, 1, 2), intr.camera_matrix, intr.dist_coeffs).reshape(2)
    direction = pose.rotation.T @ np.array([ideal[0], ideal[1], 1.0])
    direction /= np.linalg.norm(direction)
    centre = pose.centre_mm

    def miss(deg: float) -> float:
        a = math.radians(deg)
        lamp = pivot_mm + reach_mm * np.array([math.sin(a), 0.0, -math.cos(a)])
        mirror = lamp * np.array([1.0, 1.0, -1.0])
        v = mirror - centre
        return float(np.linalg.norm(v - np.dot(v, direction) * direction))

    grid = np.arange(-90.0, 90.01, 0.5)
    best = float(grid[int(np.argmin([miss(a) for a in grid]))])
    lo, hi = best - 0.5, best + 0.5
    for _ in range(40):  # golden-section refinement around the coarse minimum
        m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
        lo, hi = (lo, m2) if miss(m1) < miss(m2) else (m1, hi)
    return (lo + hi) / 2
