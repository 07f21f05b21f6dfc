"""The presenter: each x-ray fullscreen, letterboxed on black, on a chosen monitor (pygame).

With no display server it refuses to start unless the rig file asks for the headless driver
(`headless: true`, SDL's dummy driver: an off-screen surface of the configured size); the simulated
display (rig/sim/display.py) draws through it that way.

Fiducials: with a session's `fiducials: true` the x-ray is letterboxed between two reserved bands
at the left and right edges, and each band carries inverted ArUco markers (DICT_5X5_1000, white on the black
letterbox): a fixed marker
at each screen corner (ids 0-3, for geometry) and three markers that spell the shown frame's id in
base 996 (ids 4-999), the same on both sides. QA decodes them from the photo (rig/qa.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from rig.config import PygameDisplayConfig
from rig.errors import DeviceError
from rig.images import DEFAULT_MAX_PIXELS, decode_image
from rig.manifest import inside_root

if TYPE_CHECKING:
    from rig.devices.kinds import Opening

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


def _letterbox(image: np.ndarray, width: int, height: int, band: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Scale to fit between the fiducial bands keeping the aspect ratio, centred on black (RGB)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = image.shape[:2]
    x0, y0, nw, nh = letterbox_rect(w, h, width, height, band)
    interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas, (x0, y0, nw, nh)


def prepare(path: Path | str, width: int, height: int, root: Path | None = None, band: int = 0,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Decode an image file and letterbox it; a file that cannot be shown raises ValueError with the reason
    (rig/images.py). With `root`, a file that a symbolic link takes outside the image root is refused."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    if root is not None and not inside_root(path, root):
        raise ValueError(f"image path leaves the image root through a link: {path}")
    image = decode_image(path, cv2.IMREAD_COLOR, max_pixels)
    try:
        canvas, rect = _letterbox(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), width, height, band)
    except Exception as e:  # cv2.error, MemoryError: this image fails, never the run
        raise ValueError(f"image cannot be shown: {path} ({type(e).__name__}: {e})") from None
    return Prepared(canvas, rect, (image.shape[1], image.shape[0]))


class PygameDisplay:
    """A pygame window (fullscreen on a real monitor) that shows one frame at a time.

    It needs a display server: without $DISPLAY or $WAYLAND_DISPLAY (e.g. over ssh) it refuses to
    start instead of drawing off-screen, where a camera would photograph a dark monitor all night.
    Only a rig file that says `headless: true` gets SDL's dummy driver (nothing is shown)."""

    def __init__(self, config: PygameDisplayConfig, where: str = "display") -> None:
        self.config = config
        self.headless = config.headless
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")  # SIGTERM must stay the operator's, not SDL's
        driver = "dummy" if self.headless else _video_driver(where)
        import pygame  # imported late so the SDL driver choice below takes effect

        self._pg = pygame
        previous = os.environ.get("SDL_VIDEODRIVER")
        try:
            if driver is not None:
                os.environ["SDL_VIDEODRIVER"] = driver  # read once, by display.init()
            pygame.display.init()
            size = (config.width, config.height)
            if self.headless or not config.fullscreen:
                self.surface = pygame.display.set_mode(size)
            else:
                self.surface = pygame.display.set_mode(size, pygame.FULLSCREEN | pygame.NOFRAME,
                                                       display=config.monitor)
            pygame.mouse.set_visible(False)
        except pygame.error as e:
            pygame.display.quit()
            raise DeviceError(f"{where}: monitor {config.monitor} cannot open {config.width}x{config.height} "
                              f"({e}); check 'display' in the rig file") from None
        finally:
            if previous is None:
                os.environ.pop("SDL_VIDEODRIVER", None)
            else:
                os.environ["SDL_VIDEODRIVER"] = previous
        self.width, self.height = self.surface.get_size()
        self.shown_at = 0.0

    def show(self, frame: np.ndarray) -> None:
        """Put an RGB frame of the display's size on screen, then wait the settle frames."""
        self.present(frame)
        # Settle frames count from this flip (a Clock.tick would count from the previous show()'s last tick).
        for n in range(1, self.config.settle_frames + 1):
            time.sleep(max(0.0, self.shown_at + n / self.config.refresh_hz - time.monotonic()))
            self._pg.display.flip()

    def present(self, frame: np.ndarray) -> None:
        """Put an RGB frame on screen now (one flip), without waiting for it to settle."""
        pg = self._pg
        pg.event.pump()  # keeps a real window responsive
        surf = pg.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (frame.shape[1], frame.shape[0]), "RGB")
        self.surface.blit(surf, (0, 0))
        pg.display.flip()
        self.shown_at = time.monotonic()

    def blank(self) -> None:
        self.surface.fill((0, 0, 0))
        self._pg.display.flip()

    def frame(self) -> np.ndarray:
        """What the screen shows right now, as an RGB array (height, width, 3)."""
        pixels = self._pg.surfarray.array3d(self.surface)  # (w, h, 3) copy
        return np.ascontiguousarray(pixels.transpose(1, 0, 2))

    def close(self) -> None:
        self._pg.display.quit()


def _video_driver(where: str) -> str | None:
    """The SDL video driver for a real monitor, or DeviceError saying why there is none to show on.

    None: let SDL pick (x11 or wayland, from the environment)."""
    chosen = os.environ.get("SDL_VIDEODRIVER", "")
    if chosen in ("dummy", "offscreen"):
        raise DeviceError(f"{where}: SDL_VIDEODRIVER={chosen} would draw nowhere; unset it, or set "
                          "headless: true under display in the rig file if nothing needs to be shown")
    if chosen:  # e.g. kmsdrm on a console without a desktop: the operator chose it
        return None
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise DeviceError(f"{where}: no display server ($DISPLAY and $WAYLAND_DISPLAY are unset, e.g. over ssh); "
                          "run on the rig's desktop or export DISPLAY=:0 (or SDL_VIDEODRIVER=kmsdrm on a console)")
    return None


def open_display(opening: Opening) -> PygameDisplay:
    """The `pygame` display kind (rig/devices/kinds.py)."""
    config = opening.rig.display
    assert isinstance(config, PygameDisplayConfig)
    return PygameDisplay(config, where=f"{opening.rig_path}: display")
