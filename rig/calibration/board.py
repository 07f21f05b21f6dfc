"""The ChArUco board shown pixel-exact on the rig's own monitor, and finding it in a photo.

Its corners are known in millimetres on the screen plane from the monitor's measured size, so every
photo of it is a measurement of where the camera is.
"""

from __future__ import annotations

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
        corners = np.asarray(self.charuco().getChessboardCorners())[ids.ravel()]  # px from the board's top-left
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
