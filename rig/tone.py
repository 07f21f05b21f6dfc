"""Wide greyscale (12 to 16 bits) to the monitor's 8 bits: a window, then a correctly rounded tone map.

The arithmetic shared by DICOM (rig/dicom.py) and 16-bit PNG/TIFF, so that one window shows both alike.
A window is DICOM's (center, width) in the image's own values (after the modality rescale, for DICOM),
applied with DICOM's default LINEAR function (PS3.3 C.11.2.1.2.1). Without a window an image spans its own
range: its darkest pixel black, its brightest white. The monitor's 0..255 levels are the nearest level to
the windowed value (rounded half up), never a truncation, so a window maps its two ends onto 0 and 255.
"""

from __future__ import annotations

import cv2
import numpy as np

Window = tuple[float, float]  # (center, width), DICOM's convention, in the image's own values
DISPLAY_LEVELS = 255  # the top level of the monitor's 8 bits


def check_window(window: Window) -> Window:
    """The window as floats; a ValueError naming what is wrong (DICOM LINEAR needs width >= 1)."""
    center, width = float(window[0]), float(window[1])
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise ValueError(f"window (center {center}, width {width}): the width must be at least 1 and both "
                         "finite (DICOM's LINEAR window)")
    return center, width


def own_range(values: np.ndarray) -> Window:
    """The window under which an image's darkest value is 0 and its brightest 1."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo + hi) / 2 + 0.5, hi - lo + 1  # LINEAR maps c - 0.5 -+ (w - 1) / 2 onto 0 and 1


def linear_window(values: np.ndarray, window: Window) -> np.ndarray:
    """DICOM's LINEAR window onto 0..1 (float64): at or below the bottom 0, above the top 1."""
    center, width = check_window(window)
    x = values.astype(np.float64)
    if width == 1:  # a step: the formula's (w - 1) would be 0
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def to_display(unit: np.ndarray, invert: bool = False) -> np.ndarray:
    """Values in 0..1 to the monitor's 8-bit levels, nearest level; `invert` for MONOCHROME1 (0 is white)."""
    u = np.clip(unit, 0.0, 1.0)
    if invert:
        u = 1.0 - u
    levels: np.ndarray = np.floor(u * DISPLAY_LEVELS + 0.5).astype(np.uint8)
    return levels


def display_wide(values: np.ndarray, window: Window | None = None) -> np.ndarray:
    """A 16-bit (or float) greyscale or colour array as the monitor's 8-bit greyscale (H, W).

    The session's window if given, else the image's own range. Colour is reduced to grey first (OpenCV's
    BGR order, as OpenCV reads files); an 8-bit array is only reduced to grey, never stretched.
    """
    if values.ndim == 3:
        code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(values.shape[2])
        if code is None:
            raise ValueError(f"{values.shape[2]} channels: expected 1, 3 or 4")
        values = cv2.cvtColor(values, code)
    if values.dtype == np.uint8:
        return values
    window = window or own_range(values)
    if values.dtype == np.uint16:  # one entry per possible value, then a look-up: per pixel, the same result
        table = to_display(linear_window(np.arange(2 ** 16), window))
        levels: np.ndarray = table[values]
        return levels
    return to_display(linear_window(values, window))
