"""The presenter: each x-ray fullscreen, letterboxed on black, on a chosen monitor (pygame).

With no screen (CI, ssh) SDL's dummy driver gives an off-screen surface of the configured size,
which the simulated camera photographs exactly as a real camera would photograph the monitor.

The frames it shows are made elsewhere: rig/images.py decodes and letterboxes, rig/fiducials.py
draws the markers QA reads back.
"""

from __future__ import annotations

import collections
import os
import random
import time

import numpy as np

from rig.config import DisplayConfig
from rig.errors import DeviceError


class Display:
    """A pygame window (fullscreen on a real screen) that shows one frame at a time."""

    def __init__(self, config: DisplayConfig, wait_frames: bool = True,
                 lag_frames: int | tuple[int, int] = 0, seed: int = 0) -> None:
        """`lag_frames` (simulated rig only) makes the screen show a frame that many flips after
        show() put it up, like a display pipeline that is slower than the settle frames assume;
        (lo, hi) draws the lag per frame."""
        self.config = config
        self.wait_frames = wait_frames
        self.lag = lag_frames
        self._lag_rng = random.Random(seed)
        self._pipeline: collections.deque[list[object]] = collections.deque()  # [surface, flips to go]
        self.headless = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
        if self.headless:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")  # SIGTERM must stay the operator's, not SDL's
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
        self.shown_at = 0.0

    def show(self, frame: np.ndarray) -> None:
        """Put an RGB frame of the display's size on screen, then wait the settle frames."""
        pg = self._pg
        pg.event.pump()  # keeps a real window responsive
        surf = pg.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (frame.shape[1], frame.shape[0]), "RGB")
        lag = self.lag if isinstance(self.lag, int) else self._lag_rng.randint(*self.lag)
        self._pipeline.append([surf.copy(), lag])
        self._flip()
        self.shown_at = time.monotonic()
        # Settle frames count from this flip (a Clock.tick would count from the previous show()'s last tick).
        for n in range(1, self.config.settle_frames + 1):
            if self.wait_frames:
                time.sleep(max(0.0, self.shown_at + n / self.config.refresh_hz - time.monotonic()))
            self._flip()

    def _flip(self) -> None:
        """One display refresh: frames whose lag has run out reach the screen, in order."""
        while self._pipeline and int(self._pipeline[0][1]) <= 0:  # type: ignore[call-overload]
            surf = self._pipeline.popleft()[0]
            self.surface.blit(surf, (0, 0))  # type: ignore[arg-type]
        for entry in self._pipeline:
            entry[1] = int(entry[1]) - 1  # type: ignore[call-overload]
        self._pg.display.flip()

    def blank(self) -> None:
        self._pipeline.clear()
        self.surface.fill((0, 0, 0))
        self._pg.display.flip()

    def frame(self) -> np.ndarray:
        """What the screen shows right now, as an RGB array (height, width, 3)."""
        pixels = self._pg.surfarray.array3d(self.surface)  # (w, h, 3) copy
        return np.ascontiguousarray(pixels.transpose(1, 0, 2))

    def close(self) -> None:
        self._pg.display.quit()
