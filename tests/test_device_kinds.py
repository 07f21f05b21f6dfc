"""Devices are chosen by the `kind` a rig file declares; the simulator is one kind among others.

The real path never imports rig.sim, the real presenter refuses to draw nowhere, each kind accepts
only its own fields, and the simulated rig files share one base through `extends:`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from rig.config import PygameDisplayConfig, load_rig
from rig.devices.display import PygameDisplay
from rig.errors import ConfigError, DeviceError


def test_checking_a_real_rig_imports_nothing_of_the_simulator() -> None:
    code = ("import sys; from pathlib import Path\n"
            "import rig.cli, rig.engine, rig.calibration.procedures\n"
            "from rig.config import load_rig; from rig.doctor import machine_checks, rig_checks\n"
            "path = Path('calibration/real-rig.example.yaml'); rig = load_rig(path)\n"
            "checks = machine_checks(rig) + rig_checks(rig, path)\n"
            "assert [c for c in checks if not c.ok], 'this machine has no rig hardware'\n"
            "print(sorted(m for m in sys.modules if m.startswith('rig.sim')))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture
def no_display_server(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)


def test_the_presenter_refuses_to_start_without_a_display_server(no_display_server: None) -> None:
    with pytest.raises(DeviceError, match=r"no display server \(\$DISPLAY and \$WAYLAND_DISPLAY are unset") as e:
        PygameDisplay(PygameDisplayConfig(kind="pygame", width=64, height=64))
    assert "\n" not in str(e.value) and "DISPLAY=:0" in str(e.value)


def test_the_presenter_refuses_the_dummy_driver_the_rig_file_did_not_ask_for(
        no_display_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    with pytest.raises(DeviceError, match="SDL_VIDEODRIVER=dummy would draw nowhere.*headless: true"):
        PygameDisplay(PygameDisplayConfig(kind="pygame", width=64, height=64))


def test_the_presenter_draws_off_screen_when_the_rig_file_asks_for_headless(no_display_server: None) -> None:
    display = PygameDisplay(PygameDisplayConfig(kind="pygame", width=96, height=64, headless=True))
    try:
        frame = display.frame()
        frame[:] = 200
        display.present(frame)
        assert display.frame().shape == (64, 96, 3) and (display.frame() == 200).all()
    finally:
        display.close()
    assert "SDL_VIDEODRIVER" not in os.environ  # the driver choice does not leak to a later presenter


def _rig(tmp_path: Path, name: str = "rig.yaml", **sections: object) -> Path:
    rig = yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())
    rig.update(sections)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    return path


def test_a_field_of_another_kind_is_an_error_naming_what_the_kind_takes(tmp_path: Path) -> None:
    path = _rig(tmp_path, camera={"kind": "sim", "serial": "0123"})
    with pytest.raises(ConfigError, match=r"rig.yaml:\d+: camera: unknown key 'serial' \(kind sim takes: "
                                          r"nothing else\)"):
        load_rig(path)
    path = _rig(tmp_path, controller={"kind": "rigctl-host", "port": "/dev/ttyACM0"})
    with pytest.raises(ConfigError, match=r"controller: unknown key 'port' \(kind rigctl-host takes: "):
        load_rig(path)


def test_a_device_without_a_known_kind_lists_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"controller: missing field 'kind'; add kind: one of rigctl, rigctl-host, "
                                          r"simavr"):
        load_rig(_rig(tmp_path, controller={"port": "/dev/ttyACM0"}))
    with pytest.raises(ConfigError, match=r"rig.yaml:\d+: display.kind: unknown kind; choose one of: pygame, sim"):
        load_rig(_rig(tmp_path, display={"kind": "hdmi"}))


def test_the_simulated_rig_files_share_their_base(tmp_path: Path) -> None:
    base = load_rig(REPO / "calibration" / "sim-rig.yaml")
    avr = load_rig(REPO / "calibration" / "simavr-rig.yaml")
    gphoto2 = load_rig(REPO / "calibration" / "sim-gphoto2-rig.yaml")
    assert (avr.controller.kind, gphoto2.camera.kind) == ("simavr", "sim-gphoto2")
    assert avr.controller.host_timeout_ms == base.controller.host_timeout_ms  # kind changed: section replaced
    same = base.model_dump(exclude={"name", "controller", "camera"})
    assert avr.model_dump(exclude={"name", "controller", "camera"}) == same
    assert gphoto2.model_dump(exclude={"name", "controller", "camera"}) == same


def test_an_error_in_an_extended_file_names_that_file_and_line(tmp_path: Path) -> None:
    base = _rig(tmp_path, "base.yaml", motion={"move_ms": 300, "settle_ms": -5})
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\ndisplay:\n  width: 640\n")
    line = next(i for i, text in enumerate(base.read_text().splitlines(), 1) if "settle_ms" in text)
    with pytest.raises(ConfigError, match=rf"base.yaml:{line}: motion.settle_ms: "):
        load_rig(child)
    _rig(tmp_path, "base.yaml")
    rig = load_rig(child)
    assert (rig.name, rig.display.width, rig.display.height) == ("child", 640, 1024)
    child.write_text("extends: base.yaml\nname: child\ndisplay:\n  width: 64.5\n")
    with pytest.raises(ConfigError, match=r"child.yaml:4: display.width: "):
        load_rig(child)
    child.write_text("extends: nowhere.yaml\nname: child\n")
    with pytest.raises(ConfigError, match=r"child.yaml:1: extends: .*nowhere.yaml not found; fix the path"):
        load_rig(child)
