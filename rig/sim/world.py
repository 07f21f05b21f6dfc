"""What the simulated devices of one rig share: the true state of the simulated rig.

The simulated controller publishes the physical state it measures (servo pulses, light levels), the
simulated display what it shows; the simulated camera photographs both. Built once per opening of a
rig's devices and kept in `Opening.shared`, so no caller of the devices ever sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rig.devices.kinds import FACTORIES, Opening
from rig.errors import ConfigError, DeviceError

Physical = Callable[[], tuple[tuple[float, ...], tuple[int, ...]]]


@dataclass
class SimWorld:
    physical: Physical | None = None  # the simulated controller's true servo pulses and light levels
    screen: Callable[[], np.ndarray] | None = None  # what the simulated display shows now (RGB)


def world(opening: Opening) -> SimWorld:
    """The opening's simulated world, made on first use."""
    found = opening.shared.setdefault("sim.world", SimWorld())
    assert isinstance(found, SimWorld)
    return found


def photographed(opening: Opening) -> tuple[Physical, Callable[[], np.ndarray]]:
    """What a simulated camera needs: the simulated controller's state and the simulated display's frame."""
    w = world(opening)
    needs = f"{opening.rig_path}: camera.kind {opening.rig.camera.kind} photographs the simulated studio and needs"
    for role, found in (("controller", w.physical), ("display", w.screen)):
        if found is None:
            simulated = [k for k, f in FACTORIES[role].items() if f.startswith("rig.sim.")]
            kind = getattr(opening.rig, role).kind
            if kind in simulated:
                raise DeviceError(f"{needs} the simulated {role}, which did not open; fix that first")
            raise ConfigError(f"{needs} a simulated {role} ({role}.kind: {' or '.join(simulated)}), not {kind}")
    assert w.physical is not None and w.screen is not None
    return w.physical, w.screen
