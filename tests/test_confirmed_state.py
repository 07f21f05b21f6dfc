"""Every accepted photo is taken in the state the engine commanded, even when the controller resets and
its `!boot` banner never reaches the host (PROTOCOL.md: a host must not rely on seeing it).

Ground truth is what the simulated camera saw (the outputs the firmware's core drives when built for the
PC, or the pulses and duty measured on the AVR's pins, recorded in each photo), not the controller's
readback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import rig_file, session_file

from rig.config import SimDisplayConfig
from rig.devices import Shot
from rig.devices.kinds import Devices
from rig.devices.rigctl import RigController
from rig.engine import Engine
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import Session, load_session
from rig.sim.avr import AvrSimulator
from rig.sim.camera import SimCamera, truth
from rig.sim.display import SimDisplay
from rig.sim.hostfw import HostFirmware
from rig.sim.line import NoisyLine
from rig.sim.studio import Studio
from rig.store import RunStore


class PowerCycleAfter(SimCamera):
    """The simulated camera; right after its n-th exposure the controller loses power for a moment."""

    def __init__(self, n: int, power_cycle: Callable[[], None], *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.n, self.power_cycle, self.shots = n, power_cycle, 0

    def trigger(self) -> Shot:
        shot = super().trigger()
        self.shots += 1
        if self.shots == self.n:
            self.power_cycle()  # servos at park, lights off, limits kept
        return shot


def _run_with_lost_boot_banner(tmp_path: Path, phantoms: Path, kind: str) -> tuple[Session, Path]:
    # on the simavr rig the pins are measured every 20 ms: settle long enough for them to show the state
    session = load_session(session_file(tmp_path, phantoms, rig_file(tmp_path, motion={"settle_ms": 60})))
    rig = session.rig
    stack = ExitStack()
    ctl = HostFirmware().start() if kind == "host" else AvrSimulator()
    stack.callback(ctl.stop)
    line = NoisyLine(ctl.port, drop=lambda text: text.startswith(b"!boot"))  # only the banner is lost
    stack.callback(line.close)
    try:
        motion = RigController.connect(line.port, rig)
        stack.callback(motion.close)
        assert isinstance(rig.display, SimDisplayConfig)
        display = SimDisplay(rig.display, wait_frames=False)
        stack.callback(display.close)
        camera = PowerCycleAfter(4, ctl.power_cycle, Studio(rig), display.frame, ctl.physical)
        camera.open()
        stack.callback(camera.close)
        devices = Devices(motion, camera, display, stack)
        store = RunStore.create(session.output, session.path,
                                Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
        reader = RunStore(session.output)
        try:
            result = Engine(session, store, reader, devices).run()
        finally:
            store.close()
            reader.close()
    finally:
        stack.close()
    assert camera.shots > 4, "the power cycle must land mid-session"
    assert line.dropped >= 1, "the reset's banner must have been lost"
    assert result.stop_reason is None
    return session, session.output


@pytest.mark.parametrize("kind", ["host", "firmware"])
def test_photos_after_a_reset_with_a_lost_boot_banner_are_taken_at_the_planned_pose_and_lighting(
        tmp_path: Path, phantoms: Path, kind: str) -> None:
    session, run = _run_with_lost_boot_banner(tmp_path, phantoms, kind)
    with sqlite3.connect(run / "run.sqlite") as db:
        done = db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]
        rows = db.execute("""SELECT a.photo, a.commanded, a.lights, a.readback FROM attempts a
                             WHERE a.status = 'accepted'""").fetchall()
    assert done == 24 and len(rows) == 24
    wrong = []
    for photo, commanded, lights, _readback in rows:
        seen = truth((run / photo).read_bytes())
        assert seen is not None
        pulses, levels = seen
        targets = {int(ch): us for ch, us in json.loads(commanded).items()}
        want_lights = {int(ch): v for ch, v in json.loads(lights).items()}
        if any(abs(pulses[ch] - us) > 1.0 for ch, us in targets.items()) or \
                any(levels[ch] != v for ch, v in want_lights.items()):
            wrong.append(f"{photo}: taken at pulses {pulses} lights {levels}, planned {targets} {want_lights}")
    assert not wrong, f"{len(wrong)} accepted photos were not taken as planned:\n" + "\n".join(wrong[:5])
    for _photo, commanded, lights, readback in rows:
        # the stored readback is the confirmed one: what any controller reports, equal to the plan
        state = json.loads(readback)
        assert set(state) == {"positions", "lights"}
        assert all(state["positions"][int(ch)] == us for ch, us in json.loads(commanded).items())
        assert all(state["lights"][int(ch)] == v for ch, v in json.loads(lights).items())
