"""The presenter: each x-ray fullscreen, letterboxed on black, on a chosen monitor (pygame).

With no screen (CI, ssh) SDL's dummy driver gives an off-screen surface of the configured size,
which the simulated camera photographs exactly as a real camera would photograph the monitor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from rig.config import DisplayConfig
from rig.errors import DeviceError
from rig.manifest import inside_root


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fit inside width x height keeping the aspect ratio, centred on black; RGB uint8."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas


def load_for_display(path: Path | str, width: int, height: int, root: Path | None = None) -> np.ndarray:
    """Decode an image file and letterbox it; unreadable files raise ValueError with the reason.

    With `root`, a file that a symbolic link takes outside the image root is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    if root is not None and not inside_root(path, root):
        raise ValueError(f"image path leaves the image root through a link: {path}")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image cannot be decoded: {path}")
    return letterbox(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), width, height)


class Display:
    """A pygame window (fullscreen on a real screen) that shows one frame at a time."""

    def __init__(self, config: DisplayConfig, wait_frames: bool = True) -> None:
        self.config = config
        self.wait_frames = wait_frames
        self.headless = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
        if self.headless:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame  # imported late so the SDL driver choice above takes effect

        self._pg = pygame
        try:
            pygame.display.init()
            size = (config.width, config.height)
            if self.headless or not config.fullscreen:
                self.surface = pygame.display.set_mode(size)
            else:
                self.surface = pygame.display.set_mode(size, pygame.FULLSCREEN | pygame.NOFRAME,
                                                       display=config.monitor)
            pygame.mouse.set_visible(False)
        except pygame.error as e:
            raise DeviceError(f"display {config.monitor}: cannot open {config.width}x{config.height} ({e}); "
                              "check 'display' in the rig file") from None
        self.width, self.height = self.surface.get_size()
        self.clock = pygame.time.Clock()
        self.shown_at = 0.0

    def show(self, frame: np.ndarray) -> None:
        """Put an RGB frame of the display's size on screen, then wait the settle frames."""
        pg = self._pg
        pg.event.pump()  # keeps a real window responsive
        surf = pg.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (frame.shape[1], frame.shape[0]), "RGB")
        self.surface.blit(surf, (0, 0))
        pg.display.flip()
        self.shown_at = time.monotonic()
        for _ in range(self.config.settle_frames):
            if self.wait_frames:
                self.clock.tick(self.config.refresh_hz)
            pg.display.flip()

    def blank(self) -> None:
        self.surface.fill((0, 0, 0))
        self._pg.display.flip()

    def frame(self) -> np.ndarray:
        """What the screen shows right now, as an RGB array (height, width, 3)."""
        pixels = self._pg.surfarray.array3d(self.surface)  # (w, h, 3) copy
        return np.ascontiguousarray(pixels.transpose(1, 0, 2))

    def close(self) -> None:
        self._pg.display.quit()
