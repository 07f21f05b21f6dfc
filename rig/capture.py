"""The capture step before the shutter, shared by a run (rig/engine.py) and calibration (its Shooter):
set the pose and the lights, let the rig settle, put the frame on the screen, and confirm by readback
that the controller holds the pose and lights, so that either takes a photo only at a confirmed state
(docs/decisions/0006-confirmed-controller-state.md). The caller then triggers the camera: a run files
each camera failure its own way, calibration simply stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rig.config import MotionConfig
from rig.devices import Motion, MotionState
from rig.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass
class Ready:
    """A frame on the screen at a confirmed pose: what the trigger may now photograph."""

    readback: MotionState  # the confirmed state, equal to the plan
    timing: dict[str, float] = field(default_factory=dict)  # seconds: move (and confirm), settle (display)


class Positioner:
    """Sets pose and lights only when they differ from what it last set, and confirms them by readback."""

    def __init__(self, motion: Motion, timing: MotionConfig) -> None:
        self.motion, self.timing = motion, timing
        self._pose: dict[int, int] | None = None
        self._lights: dict[int, int] | None = None
        self._restores: int | None = None  # the driver's restore count when the state was last set

    def position(self, targets: dict[int, int], lights: dict[int, int] | None) -> None:
        """Move to `targets` (servo channel -> pulse) and set `lights` (None: leave them), only what
        differs from what is set; then let the rig settle (arms stop swinging, lamps reach their level)."""
        changed = False
        if self._restores is None:  # the baseline before anything is set: a restore from here on is seen
            self._restores = self.motion.state().restores
        if targets != self._pose:
            self.motion.move(targets, self.timing.move_ms)
            self.motion.wait_idle(self.timing.idle_timeout_s)
            self._pose, changed = targets, True
        if lights is not None and lights != self._lights:
            self.motion.set_lights(lights)
            self._lights, changed = lights, True
        if changed:
            time.sleep(self.timing.settle_ms / 1000)

    def ready(self, targets: dict[int, int], lights: dict[int, int] | None, show: Callable[[], None], label: str,
              context: str = "") -> Ready:
        """Position, show the frame (`show` returns once the display has settled), confirm: the step
        every photo takes before its trigger. DeviceError if the controller does not hold the state."""
        t0 = time.monotonic()
        self.position(targets, lights)
        t1 = time.monotonic()
        show()
        t2 = time.monotonic()
        readback = self.confirm(targets, lights, label, context)
        return Ready(readback, {"move": t1 - t0 + time.monotonic() - t2, "settle": t2 - t1})

    def confirm(self, targets: dict[int, int], lights: dict[int, int] | None, label: str,
                context: str = "") -> MotionState:
        """The controller's state, read back now, equal to the targets and lights with no restore since
        they were set. Otherwise set them again (with the settle time) and read back again, until
        `motion.idle_timeout_s` has passed; then DeviceError says what did not hold."""
        deadline = time.monotonic() + self.timing.idle_timeout_s
        while True:
            st = self.motion.state()
            problem = differs(st, targets, lights or {})
            if problem is None and st.restores != self._restores:
                problem = "the controller was restored after losing its state"
            if problem is None:
                return st
            if time.monotonic() > deadline:
                raise DeviceError(f"the controller does not hold {label} ({problem}); check its "
                                  "power supply, cable and servos")
            log.warning("before %s: %s; setting pose and lights again", context or label, problem)
            self._restores = st.restores
            self._pose = self._lights = None
            self.position(targets, lights)

    def held(self, before: MotionState, targets: dict[int, int], lights: dict[int, int] | None) -> str | None:
        """After the exposure: why the state confirmed before it (`before`) did not hold, or None if it did."""
        after = self.motion.state()
        if after.restores != before.restores:
            return "the controller lost its state during the exposure (reset or safe state)"
        problem = differs(after, targets, lights or {})
        return None if problem is None else f"the rig's state changed during the exposure: {problem}"

    def forget(self) -> None:
        """Someone else moved the rig (parked it): set pose and lights again next time."""
        self._pose = self._lights = None


def differs(st: MotionState, targets: dict[int, int], lights: dict[int, int]) -> str | None:
    """How a read-back state differs from targets and light levels (by channel), or None if it does not."""
    problems = []
    if st.moving:
        problems.append("servos still moving")
    pos = {ch: st.positions[ch] if ch < len(st.positions) else None for ch in targets}
    levels = {ch: st.lights[ch] if ch < len(st.lights) else None for ch in lights}
    if pos != targets:
        problems.append(f"servos at {_pairs(pos)}, planned {_pairs(targets)}")
    if levels != lights:
        problems.append(f"lights at {_pairs(levels)}, planned {_pairs(lights)}")
    return "; ".join(problems) or None


def _pairs(values: dict[int, int | None] | dict[int, int]) -> str:
    return " ".join(f"{ch}:{v}" for ch, v in sorted(values.items()))
