"""Image files to pixels, and pixels to a letterboxed frame: the one place that reads a source image,
for `rig run` (the presenter's frames) and `rig synth`.

Decoding goes through a registry of decoders, each found by the file's magic bytes (or, failing that,
its suffix): OpenCV's for JPEG, PNG, BMP and TIFF, and pydicom's for DICOM (rig/dicom.py); another format
plugs in with one `DECODERS.register(...)`. Every decoder returns the monitor's 8-bit pixels: a 12- to
16-bit image (DICOM, 16-bit PNG or TIFF) goes through a window (the session's `window:`, else the file's
own VOI for DICOM, else the image's own range) and a correctly rounded tone map (rig/tone.py).

The size in the file's header is checked against a pixel cap before anything is decoded (a tiny file can
claim 60000x60000 and OpenCV would raise, or allocate gigabytes), and whatever a decoder raises becomes
a ValueError with the reason, so one bad image fails its own item and never the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import imagesize
import numpy as np

from rig.errors import ImageError
from rig.manifest import inside_root
from rig.tone import Window, display_wide

DEFAULT_MAX_PIXELS = 100_000_000  # the session's `max_image_pixels` default
HEAD_BYTES = 132  # enough for every magic: DICOM's "DICM" sits at offset 128

Mode = Literal["color", "gray"]  # color: 8-bit, 3 channels in OpenCV's BGR order; gray: 8-bit, one channel


@dataclass(frozen=True)
class Decoder:
    """One image format: how to recognise a file, read its size cheaply, and decode it."""

    name: str
    suffixes: tuple[str, ...]  # lower case, with the dot
    magics: tuple[tuple[int, bytes], ...]  # (offset, bytes) any of which marks the format
    size: Callable[[Path], tuple[int, int]]  # width, height from the header alone; (-1, -1) if none
    decode: Callable[[Path, Mode, Window | None], np.ndarray | None]  # None or an exception: cannot be decoded
    # Decoding at 1/2, 1/4 or 1/8 of the size for a fraction of the cost (JPEG's DCT scaling), if the format can.
    reduced: Callable[[Path, Mode, int], np.ndarray | None] | None = None

    def recognises(self, head: bytes) -> bool:
        return any(head[offset:offset + len(magic)] == magic for offset, magic in self.magics)


@dataclass
class DecoderRegistry:
    """The decoders `decode_image` chooses from: by magic bytes first, by suffix if no magic matches."""

    decoders: list[Decoder] = field(default_factory=list)

    def register(self, decoder: Decoder) -> None:
        self.decoders.append(decoder)

    def suffixes(self) -> set[str]:
        """Every suffix some decoder reads (what an image folder's scan may pick up)."""
        return {s for d in self.decoders for s in d.suffixes}

    def decoder_for(self, path: Path, head: bytes) -> Decoder | None:
        by_magic = next((d for d in self.decoders if d.recognises(head)), None)
        return by_magic or next((d for d in self.decoders if path.suffix.lower() in d.suffixes), None)


_OPENCV_FLAGS: dict[Mode, int] = {"color": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE}


def _opencv_size(path: Path) -> tuple[int, int]:
    w, h = imagesize.get(path)
    return int(w), int(h)


_WIDE_MAGICS = (b"\x89PNG", b"II*\x00", b"MM\x00*")  # PNG and TIFF can hold 16-bit samples


def _opencv_decode(path: Path, mode: Mode, window: Window | None) -> np.ndarray | None:
    """8-bit pixels. A PNG or TIFF is read as stored: 16-bit samples go through the window (not OpenCV's
    IMREAD_COLOR, which keeps their top 8 bits and so shows a 12-bit x-ray nearly black)."""
    data = np.fromfile(path, np.uint8)
    if bytes(data[:4]) in _WIDE_MAGICS:
        raw: np.ndarray | None = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.dtype != np.uint8:
            return _as_mode(display_wide(raw, window), mode)
    image: np.ndarray | None = cv2.imdecode(data, _OPENCV_FLAGS[mode])
    return image


_REDUCED_FLAGS: dict[tuple[Mode, int], int] = {
    ("color", 2): cv2.IMREAD_REDUCED_COLOR_2, ("color", 4): cv2.IMREAD_REDUCED_COLOR_4,
    ("color", 8): cv2.IMREAD_REDUCED_COLOR_8, ("gray", 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    ("gray", 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, ("gray", 8): cv2.IMREAD_REDUCED_GRAYSCALE_8}


def _opencv_reduced(path: Path, mode: Mode, factor: int) -> np.ndarray | None:
    """A JPEG at 1/factor of its size through libjpeg's DCT scaling; None for other formats (decoded whole)."""
    data = np.fromfile(path, np.uint8)
    if bytes(data[:3]) != b"\xff\xd8\xff":
        return None
    image: np.ndarray | None = cv2.imdecode(data, _REDUCED_FLAGS[mode, factor])
    return image


def _as_mode(grey: np.ndarray, mode: Mode) -> np.ndarray:
    converted: np.ndarray = grey if mode == "gray" else cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return converted


OPENCV = Decoder(
    name="OpenCV", suffixes=(".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"),
    magics=((0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n"), (0, b"BM"), (0, b"II*\x00"), (0, b"MM\x00*")),
    size=_opencv_size, decode=_opencv_decode, reduced=_opencv_reduced)



def _dicom_size(path: Path) -> tuple[int, int]:
    from rig.dicom import dicom_size  # pydicom is imported when a DICOM file is met, not by every command

    return dicom_size(path)


def _dicom_decode(path: Path, mode: Mode, window: Window | None) -> np.ndarray:
    from rig.dicom import read_dicom

    return _as_mode(read_dicom(path, window, max_pixels=2 ** 62), mode)  # decode_image checked the size


DICOM = Decoder(name="DICOM (pydicom)", suffixes=(".dcm", ".dicom"), magics=((128, b"DICM"),),
                size=_dicom_size, decode=_dicom_decode)

DECODERS = DecoderRegistry([OPENCV, DICOM])


def decode_image(path: Path | str, mode: Mode = "color", max_pixels: int = DEFAULT_MAX_PIXELS,
                 registry: DecoderRegistry = DECODERS, window: Window | None = None,
                 fit: tuple[int, int] | None = None) -> np.ndarray:
    """The decoded 8-bit image; ValueError with the reason if it cannot be had. `window` (center, width in
    the image's own values) is how a 12- to 16-bit image is shown; 8-bit images ignore it. With `fit`
    (width, height it will be shown at), a format that can decodes at the smallest reduction that still
    covers that size."""
    shown = None if fit is None else (lambda w, h: fit)
    return _decode(Path(path), mode, max_pixels, registry, window, shown)[0]


Shown = Callable[[int, int], tuple[int, int]]  # an image's full width, height -> the size it is shown at


def _reduction(w: int, h: int, shown: Shown | None) -> int:
    """The largest of 8, 4, 2 by which a w x h image can shrink and still cover the size it is shown at."""
    if shown is None:
        return 1
    fw, fh = shown(w, h)
    return next((f for f in (8, 4, 2) if w // f >= fw and h // f >= fh), 1)


def _decode(path: Path, mode: Mode, max_pixels: int, registry: DecoderRegistry, window: Window | None,
            shown: Shown | None) -> tuple[np.ndarray, tuple[int, int]]:
    """decode_image's work; also returns the image's full width and height from its header."""
    try:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:  # a file gone or unreadable meanwhile
        raise ValueError(f"image cannot be decoded: {path} (unreadable header: {e})") from None
    if not head:
        raise ValueError(f"image cannot be decoded: {path} (an empty file)")
    decoder = registry.decoder_for(path, head)
    if decoder is None:
        known = " ".join(sorted(registry.suffixes()))
        raise ValueError(f"image cannot be decoded: {path} (no decoder knows this format; known: {known})")
    try:
        w, h = decoder.size(path)
    except ImageError:  # already one line naming the file and what to do
        raise
    except Exception as e:  # a damaged header (imagesize may raise anything)
        raise ValueError(f"image cannot be decoded: {path} (unreadable header: {e})") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image cannot be decoded: {path} (no image header found)")
    if w * h > max_pixels:
        raise ValueError(f"image cannot be decoded: {path} is {w}x{h} ({w * h:,} pixels), over max_image_pixels "
                         f"{max_pixels:,} (a decompression bomb?); "
                         "raise 'max_image_pixels' in the session if it is real")
    factor = _reduction(w, h, shown)
    try:
        image = decoder.reduced(path, mode, factor) if decoder.reduced and factor > 1 else None
        if image is None:
            image = decoder.decode(path, mode, window)
            if image is not None:  # decoded whole: its own shape (a decoder may turn it upright, e.g. EXIF)
                w, h = image.shape[1], image.shape[0]
    except ImageError:
        raise
    except Exception as e:  # cv2.error, MemoryError, ...: whatever the decoder raises fails this image only
        detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise ValueError(f"image cannot be decoded: {path} ({detail})") from None
    if image is None:
        raise ValueError(f"image cannot be decoded: {path} (the decoder returned nothing)")
    return image, (w, h)


@dataclass(frozen=True)
class Prepared:
    """A frame ready to show: the letterboxed canvas and where the x-ray sits on it."""

    canvas: np.ndarray
    xray: tuple[int, int, int, int]  # x, y, width, height on the screen, px
    source_size: tuple[int, int]  # the source image's width, height


def letterbox_rect(w: int, h: int, width: int, height: int, band: int = 0) -> tuple[int, int, int, int]:
    """Where a w x h image lands when fitted between bands of `band` px at the left and right edges."""
    inner = width - 2 * band
    scale = min(inner / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return band + (inner - nw) // 2, (height - nh) // 2, nw, nh


def _letterbox(image: np.ndarray, size: tuple[int, int], width: int, height: int,
               band: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Scale to fit between the fiducial bands keeping the aspect ratio, centred on black (RGB). `size`
    is the source's full width and height (the image may have been decoded at a reduced size)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    x0, y0, nw, nh = letterbox_rect(*size, width, height, band)
    interp = cv2.INTER_AREA if nw < image.shape[1] else cv2.INTER_LINEAR
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas, (x0, y0, nw, nh)


def prepare(path: Path | str, width: int, height: int, root: Path | None = None, band: int = 0,
            max_pixels: int = DEFAULT_MAX_PIXELS, window: Window | None = None) -> Prepared:
    """Decode an image file and letterbox it; a file that cannot be shown raises ValueError with the reason.
    With `root`, a file that a symbolic link takes outside the image root is refused."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    if root is not None and not inside_root(path, root):
        raise ValueError(f"image path leaves the image root through a link: {path}")
    def shown(w: int, h: int) -> tuple[int, int]:
        return letterbox_rect(w, h, width, height, band)[2:]

    image, size = _decode(path, "color", max_pixels, DECODERS, window, shown)
    try:
        canvas, rect = _letterbox(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size, width, height, band)
    except Exception as e:  # cv2.error, MemoryError: this image fails, never the run
        raise ValueError(f"image cannot be shown: {path} ({type(e).__name__}: {e})") from None
    return Prepared(canvas, rect, size)
