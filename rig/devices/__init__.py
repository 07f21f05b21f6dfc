"""Small device contracts. Nothing above `devices/` and `sim/` knows if a device is real or simulated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class CameraFile:
    """One file exactly as the camera produced it (never decoded or re-encoded)."""

    name: str  # the camera's own file name, e.g. "IMG_0042.JPG"; its suffix is kept
    data: bytes


@dataclass
class Shot:
    """A finished exposure whose files may still be on the camera."""

    number: int  # increasing per camera session
    info: dict[str, object] = field(default_factory=dict)  # driver-specific (camera paths, ...)


@dataclass(frozen=True)
class MotionState:
    """What the controller reports: read-back positions and light levels."""

    positions: tuple[int, ...]  # servo pulses, us
    targets: tuple[int, ...]
    lights: tuple[int, ...]  # 0..255
    moving: bool
    # How often the driver found the controller had lost the commanded state (a reset, a safe state)
    # and re-applied it: a change between two readings means the state did not hold in between.
    restores: int = 0
    # Anything else this controller reports, in words (e.g. "safe state after host silence"), shown by
    # jog; the engine relies only on positions, lights, moving and restores, which every controller can report.
    notes: tuple[str, ...] = ()


class Motion(Protocol):
    """Servos and lights behind one controller."""

    retransmissions: int  # commands resent over a damaged line since connect (0 if the link never resends)

    def move(self, targets: dict[int, int], duration_ms: int = 0) -> None:
        """Start a coordinated move of the named channels to absolute pulses."""

    def set_lights(self, levels: dict[int, int]) -> None:
        """Set light levels 0..255 at once."""

    def wait_idle(self, timeout_s: float) -> MotionState:
        """Block until no channel moves; return the read-back state."""

    def state(self) -> MotionState:
        """Query the controller now."""

    def park(self) -> None:
        """Lights off, servos to their park pulses (the safe state); confirm with wait_idle()."""

    def close(self) -> None: ...


class Camera(Protocol):
    """A camera whose exposure and download are separate, so downloads can overlap the next move."""

    def open(self) -> None: ...

    def trigger(self) -> Shot:
        """Expose one photo; returns when the exposure is done."""

    def download(self, shot: Shot) -> Sequence[CameraFile]:
        """Fetch the shot's files (e.g. RAW+JPEG) byte for byte; may run on another thread."""

    def close(self) -> None: ...


class Display(Protocol):
    """A screen that shows one full-screen RGB frame at a time."""

    width: int
    height: int

    def show(self, frame: np.ndarray) -> None:
        """Put the frame on screen; returns once it is there (the display's settle frames)."""

    def blank(self) -> None: ...

    def close(self) -> None: ...
