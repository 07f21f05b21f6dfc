"""The presenter: each x-ray fullscreen, letterboxed on black, on a chosen monitor (pygame).

With no display server it refuses to start unless the rig file asks for the headless driver
(`headless: true`, SDL's dummy driver: an off-screen surface of the configured size); the simulated
display (rig/sim/display.py) draws through it that way.

The frames it shows are made elsewhere: rig/images.py decodes and letterboxes, rig/fiducials.py
draws the markers QA reads back.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from rig.config import PygameDisplayConfig
from rig.errors import DeviceError

if TYPE_CHECKING:
    from rig.devices.kinds import Opening


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
