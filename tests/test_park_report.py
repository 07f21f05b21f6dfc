"""The run's last words say "lights are off and the servos parked" only when the controller confirmed it;
with the controller's port closed they say what failed and what to check."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import rig_file, session_file

from rig import cli
from rig.console import Notifier
from rig.devices import Shot
from rig.devices.kinds import open_devices
from rig.engine import Engine
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import load_session
from rig.store import RunStore


class UnplugAfter:
    """The rig's camera; during its n-th exposure the operator presses Ctrl-C and the controller's cable
    comes out (its serial port is closed under the driver)."""

    def __init__(self, n: int, camera: object, port: object) -> None:
        self.n, self.camera, self.port, self.shots = n, camera, port, 0

    def trigger(self) -> Shot:
        shot = self.camera.trigger()  # type: ignore[attr-defined]
        self.shots += 1
        if self.shots == self.n:
            os.kill(os.getpid(), signal.SIGINT)  # the operator stops the run ...
            self.port.close()  # type: ignore[attr-defined]  # ... as the controller's port goes away
        return shot

    def __getattr__(self, name: str) -> object:
        return getattr(self.camera, name)


def test_parked_is_not_claimed_when_the_controller_port_is_closed(
        tmp_path: Path, phantoms: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = load_session(session_file(tmp_path, phantoms, rig_file(tmp_path)))
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
    devices = open_devices(session.rig, session.rig_path, fast=True)
    devices.camera = UnplugAfter(3, devices.camera, devices.motion.link.port)  # type: ignore[attr-defined]
    try:
        code = cli._run_engine(Engine, session, store, devices, Notifier(None, session.path, print))
    finally:
        devices.close()
    err = capsys.readouterr().err
    assert code != 0
    assert "lights are off and the servos parked" not in err, err
    assert "the rig may not be safe" in err and "parking failed" in err, err
    assert "check that the controller is powered and its cable connected" in err, err
