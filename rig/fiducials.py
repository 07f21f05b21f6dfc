"""Fiducials: the markers the presenter draws around each x-ray and QA reads back from the photo.

With a session's `fiducials: true` the x-ray is letterboxed between two reserved bands at the left
and right edges, and each band carries inverted ArUco markers (DICT_5X5_1000, white on the black
letterbox): a fixed marker at each screen corner (ids 0-3, for geometry) and three markers that
spell the shown frame's id in base 996 (ids 4-999), the same on both sides. The engine draws them
(draw_fiducials), QA decodes them (rig/qa.py): this module is the one layout both agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# 5x5 codes at least 5 bits apart under rotation: DICT_4X4_1000's codes are only 2 apart, and marker
# 688 drawn inverted held a smaller square that decoded as 17 (tests/test_fiducials.py reads every id).
MARKER_DICT = cv2.aruco.DICT_5X5_1000
MARKER_CELLS = 7  # 5 bits across plus the border
CORNER_IDS = (0, 1, 2, 3)  # top-left, top-right, bottom-right, bottom-left
DIGIT_BASE = 996  # digit markers are ids 4..999
DIGITS = 3  # frame ids below 996**3 (~988 million shown frames per run)


@dataclass(frozen=True)
class FiducialLayout:
    """Where the markers go on a width x height screen (continuous screen pixels)."""

    width: int
    height: int
    marker: int  # marker side, px
    quiet: int  # white-free border kept black around each marker, px
    band: int  # reserved at the left and right edges; the x-ray stays between the bands

    def slots(self) -> list[tuple[str, int, int, int]]:
        """(kind, index, x, y) of every marker's top-left corner: kind 'corner' (index 0-3) or
        'L'/'R' digit slots (index 0 = most significant)."""
        m, q, w, h = self.marker, self.quiet, self.width, self.height
        xl, xr = q, w - q - m
        top, bottom = q, h - q - m
        out = [("corner", 0, xl, top), ("corner", 1, xr, top), ("corner", 2, xr, bottom), ("corner", 3, xl, bottom)]
        for i in range(DIGITS):
            y = round(top + (bottom - top) * (i + 1) / (DIGITS + 1))
            out += [("L", i, xl, y), ("R", i, xr, y)]
        return out


def fiducial_layout(width: int, height: int) -> FiducialLayout:
    """The marker layout for a width x height screen."""
    # A marker cell is 1/60 of the screen (as the 4x4 markers' cells were): the 7 cells of a 5x5 marker
    # (5 bits and the border) then read as reliably in the photo.
    cell = min(height, width * 0.8) / 60
    marker = max(14, round(MARKER_CELLS * cell))
    quiet = max(3, marker // 5)
    return FiducialLayout(width, height, marker, quiet, marker + 2 * quiet)


def frame_id_digits(frame_id: int) -> list[int]:
    """The digit markers' ids for a frame id, most significant first."""
    if not 0 <= frame_id < DIGIT_BASE ** DIGITS:
        raise ValueError(f"frame id {frame_id} out of range")
    digits = []
    for _ in range(DIGITS):
        frame_id, d = divmod(frame_id, DIGIT_BASE)
        digits.append(4 + d)
    return digits[::-1]


def digits_frame_id(marker_ids: list[int]) -> int:
    """The frame id the digit markers spell, most significant first (inverse of frame_id_digits)."""
    n = 0
    for m in marker_ids:
        n = n * DIGIT_BASE + (m - 4)
    return n


_MARKERS: dict[tuple[int, int], np.ndarray] = {}


def marker_image(marker_id: int, side: int) -> np.ndarray:
    """The marker as the display draws it (white on black), `side` px square."""
    key = (marker_id, side)
    if key not in _MARKERS:
        dictionary = cv2.aruco.getPredefinedDictionary(MARKER_DICT)
        # Inverted (white border on black): the markers sit on the black letterbox without light boxes.
        _MARKERS[key] = 255 - cv2.aruco.generateImageMarker(dictionary, marker_id, side)
    return _MARKERS[key]


def draw_fiducials(canvas: np.ndarray, frame_id: int, layout: FiducialLayout) -> np.ndarray:
    """A copy of the letterboxed frame with the corner markers and the frame id's markers drawn in."""
    out = canvas.copy()
    digits = frame_id_digits(frame_id)
    m = layout.marker
    for kind, index, x, y in layout.slots():
        marker_id = CORNER_IDS[index] if kind == "corner" else digits[index]
        out[y:y + m, x:x + m] = marker_image(marker_id, m)[..., None]
    return out
