"""The simulated display: the studio's monitor, drawn by the real pygame presenter off-screen.

It adds what only a simulator does: a screen that can lag behind show() (`sim.display_lag_frames`:
a frame reaches the screen that many refreshes after show() put it up, like a display pipeline
slower than the settle frames assume; [lo, hi] draws the lag per frame), and with `--fast` no
waiting for refreshes. What is on screen at the end of show() is what the simulated camera sees.
"""

from __future__ import annotations

import collections
import random

import numpy as np

from rig.config import PygameDisplayConfig, SimDisplayConfig
from rig.devices.display import PygameDisplay
from rig.devices.kinds import Opening
from rig.sim.world import world


class SimDisplay:
    """A Display whose frames reach the screen `lag` refreshes late; the presenter draws the screen."""

    def __init__(self, config: SimDisplayConfig, lag_frames: int | tuple[int, int] = 0, seed: int = 0,
                 wait_frames: bool = True, where: str = "display") -> None:
        self.config = config
        self.presenter = PygameDisplay(PygameDisplayConfig(
            kind="pygame", width=config.width, height=config.height, settle_frames=config.settle_frames,
            refresh_hz=config.refresh_hz, fullscreen=False, headless=config.headless), where=where)
        self.width, self.height = self.presenter.width, self.presenter.height
        self.lag = lag_frames
        self.wait_frames = wait_frames
        self._rng = random.Random(seed)
        self._pipeline: collections.deque[tuple[np.ndarray, int]] = collections.deque()  # frame, refreshes to go
        self._screen = np.zeros((self.height, self.width, 3), np.uint8)

    def show(self, frame: np.ndarray) -> None:
        lag = self.lag if isinstance(self.lag, int) else self._rng.randint(*self.lag)
        self._pipeline.append((np.array(frame, np.uint8, copy=True), lag))
        for _ in range(1 + self.config.settle_frames):  # the refreshes show() lasts
            self._refresh()
        if self.wait_frames:
            self.presenter.show(self._screen)  # the real presenter's flip and settle waits
        else:
            self.presenter.present(self._screen)

    @property
    def shown_at(self) -> float:
        """When the presenter's last flip put a frame up (time.monotonic())."""
        return self.presenter.shown_at

    def _refresh(self) -> None:
        """One refresh: frames whose lag has run out reach the screen, in order."""
        while self._pipeline and self._pipeline[0][1] <= 0:
            self._screen = self._pipeline.popleft()[0]
        self._pipeline = collections.deque((f, n - 1) for f, n in self._pipeline)

    def blank(self) -> None:
        self._pipeline.clear()
        self._screen = np.zeros_like(self._screen)
        self.presenter.blank()

    def frame(self) -> np.ndarray:
        """What the screen shows now (what a simulated camera photographs)."""
        return self.presenter.frame()

    def close(self) -> None:
        self.presenter.close()


def open_display(opening: Opening) -> SimDisplay:
    """`kind: sim` (rig/devices/kinds.py); the simulated camera photographs it."""
    config = opening.rig.display
    assert isinstance(config, SimDisplayConfig)
    display = SimDisplay(config, opening.rig.sim.display_lag_frames, opening.rig.sim.seed,
                         wait_frames=not opening.fast, where=f"{opening.rig_path}: display")
    world(opening).screen = display.frame
    return display
