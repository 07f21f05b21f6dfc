"""The simulated controller kinds: the rigctl protocol on a pseudo-terminal, driven by the real driver.

`rigctl-host` runs the firmware's own protocol core built for this PC (rig/sim/hostfw.py); `simavr` runs the
compiled firmware in simavr (rig/sim/avr.py). Either way the host's real `RigController` opens the pty
with pyserial like a USB port, through the rig file's simulated line noise and power cuts
(`sim.line_noise`, `sim.power_cycles_s`), and the simulated world learns the rig's true state.
"""

from __future__ import annotations

from typing import Protocol

from rig.devices.kinds import Opening
from rig.devices.link import PortUnavailable
from rig.devices.rigctl import RigController
from rig.errors import ConfigError
from rig.sim.line import faulty_wiring
from rig.sim.world import world


class SimulatedController(Protocol):
    """A simulated controller on a pty (the host-built firmware core or simavr)."""

    port: str

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]: ...

    def power_cycle(self) -> None: ...

    def stop(self) -> None: ...


def _connect(opening: Opening, sim: SimulatedController) -> RigController:
    opening.stack.callback(sim.stop)
    world(opening).physical = sim.physical
    port = faulty_wiring(opening.rig.sim, sim.port, sim.power_cycle, opening.stack)
    try:
        motion = RigController.connect(port, opening.rig)
    except PortUnavailable as e:
        raise ConfigError(f"{opening.rig_path}: controller: the simulated controller's pty did not open ({e})"
                          ) from None
    opening.stack.callback(motion.close)
    return motion


def open_rigctl_host(opening: Opening) -> RigController:
    """`kind: rigctl-host`."""
    from rig.sim.hostfw import HostFirmware

    return _connect(opening, HostFirmware().start())


def open_simavr(opening: Opening) -> RigController:
    """`kind: simavr`."""
    from rig.sim.avr import AvrSimulator

    return _connect(opening, AvrSimulator())
