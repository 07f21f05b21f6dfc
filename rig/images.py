"""Decoding image files safely: the one place that turns a file into pixels, for `rig run` and `rig synth`.

The size in the file's header is checked against a pixel cap before anything is decoded (a tiny file can
claim 60000x60000 and OpenCV would raise, or allocate gigabytes), and whatever the decoder raises becomes
a ValueError with the reason, so one bad image fails its own item and never the run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imagesize
import numpy as np

DEFAULT_MAX_PIXELS = 100_000_000  # the session's `max_image_pixels` default


def decode_image(path: Path | str, flags: int = cv2.IMREAD_COLOR, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The decoded image (OpenCV's channel order); ValueError with the reason if it cannot be had."""
    path = Path(path)
    try:
        w, h = imagesize.get(path)
        empty = path.stat().st_size == 0
    except Exception as e:  # a damaged header (imagesize may raise anything), a file gone meanwhile
        raise ValueError(f"image cannot be decoded: {path} (unreadable header: {e})") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image cannot be decoded: {path} ({'an empty file' if empty else 'no image header found'})")
    if w * h > max_pixels:
        raise ValueError(f"image cannot be decoded: {path} is {w}x{h} ({w * h:,} pixels), over max_image_pixels "
                         f"{max_pixels:,} (a decompression bomb?); raise 'max_image_pixels' in the session if it is real")
    try:
        image = cv2.imdecode(np.fromfile(path, np.uint8), flags)
    except Exception as e:  # cv2.error, MemoryError, ...: whatever the decoder raises fails this image only
        detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise ValueError(f"image cannot be decoded: {path} ({detail})") from None
    if image is None:
        raise ValueError(f"image cannot be decoded: {path} (the decoder returned nothing)")
    return image
