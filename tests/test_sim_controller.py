"""The simulated controller is the firmware's own protocol core built for the PC (ADR 0010): it passes
the conformance vectors and PROTOCOL.md's argument edges, the host driver recovers from its resets,
and its physical outputs, power cuts and idle behaviour are what the simulated rig relies on."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from conftest import REPO

from rig.devices.link import Link
from rig.errors import DeviceError
from rig.sim.hostfw import HostFirmware

sys.path.insert(0, str(REPO / "firmware" / "vectors"))
import runner


@pytest.fixture
def host() -> Iterator[HostFirmware]:
    with HostFirmware() as fw:
        yield fw


@pytest.fixture
def session(host: HostFirmware) -> Iterator[runner.Session]:
    with serial.Serial(host.port, 115200, timeout=0.05, write_timeout=2) as port:
        s = runner.Session(port)
        assert s.resync()
        yield s


def _command(s: runner.Session, line: str) -> str:
    s.send(line.encode())
    reply = s.reply()
    assert reply is not None, f"no reply to {line!r}"
    return reply.decode()


def test_conformance_vectors_pass_on_the_simulated_controller(host: HostFirmware) -> None:
    assert runner.run_vectors(host.port, REPO / "firmware" / "vectors") == []


def test_runner_takes_the_argument_edges_from_protocol_md(host: HostFirmware, tmp_path: Path) -> None:
    # PROTOCOL.md's range table is the one definition of the edges: in a copy that narrows the
    # timeout range, the firmware's (correct) "ok" for 3600000 must fail exactly that row.
    text = (REPO / "firmware" / "PROTOCOL.md").read_text()
    changed = text.replace("| `timeout {}` | 0..3600000 |", "| `timeout {}` | 0..3599999 |")
    assert changed != text
    (tmp_path / "PROTOCOL.md").write_text(changed)
    with serial.Serial(host.port, 115200, timeout=0.05, write_timeout=2) as port:
        failures = runner.run_edges(runner.Session(port), tmp_path / "PROTOCOL.md")
    assert len(failures) == 1 and "'> timeout 3600000'" in failures[0], failures


def test_link_survives_a_controller_power_cut_between_commands(host: HostFirmware) -> None:
    link = Link.open(host.port, reply_timeout_s=0.2)
    try:
        assert "proto=1" in link.resync()
        link.command("light 0:200")
        host.power_cycle()
        events: list[str] = []
        link.on_event = events.append
        assert link.command("status").split(" light=")[1].startswith("0,0")  # the power cut turned lights off
        assert any(e.startswith("boot ") and "cause=power" in e for e in events)
    finally:
        link.close()


def test_physical_is_what_the_controller_drives(host: HostFirmware, session: runner.Session) -> None:
    assert host.physical() == ((1500.0,) * 4, (0, 0))
    assert _command(session, "move 0 0:1900 1:1100") == "ok 400"  # slew 1000 us/s
    seen = set()
    while session.wait_event(re.compile(b"done"), timeout=0.001) is None:
        pulses, _ = host.physical()
        seen.add(pulses[0])
        # one instant, never two half-written ones: a coordinated move keeps ch 0 and 1 mirrored
        assert pulses[0] + pulses[1] == 3000.0, pulses
    assert len(seen) > 10, "the pulses must be read while they change"
    _command(session, "light 0:77 1:3")
    assert host.physical() == ((1900.0, 1100.0, 1500.0, 1500.0), (77, 3))
    assert "pos=1900,1100,1500,1500 " in _command(session, "status")


def test_a_power_cut_loses_ram_and_keeps_eeprom(host: HostFirmware, session: runner.Session) -> None:
    for line in ("limit 2 1000 2000 1200 1000", "session 7", "timeout 0", "light 1:9"):
        assert _command(session, line) == "ok"
    host.power_cycle()
    assert host.physical() == ((1500.0, 1500.0, 1200.0, 1500.0), (0, 0))  # every servo at its park pulse
    status = _command(session, "status")
    assert "light=0,0 timeout=10000 flags=0 session=0" in status, status
    assert session.wait_event(re.compile(b"boot .* cause=power")) is not None
    assert _command(session, "limit 2") == "ok ch=2 min=1000 max=2000 park=1200 slew=1000"


def test_an_idle_controller_sleeps(host: HostFirmware, session: runner.Session) -> None:
    # A loop that polled would wake up hundreds of times a second and keep a core busy.
    assert _command(session, "timeout 0") == "ok"
    pid = host.pid

    def wakeups() -> int:
        text = Path(f"/proc/{pid}/status").read_text()
        return sum(int(n) for n in re.findall(r"(?:non)?voluntary_ctxt_switches:\s+(\d+)", text))

    before = wakeups()
    time.sleep(0.5)  # a measurement interval, not a synchronisation
    assert wakeups() - before < 10


def test_a_missing_build_is_one_line_naming_the_make_command(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"^the simulated controller needs .*rigctl-host; build it with: make host$"):
        HostFirmware(binary=REPO / "firmware" / "build" / "no-such-rigctl-host")


def test_the_controller_stops_when_the_program_that_started_it_dies() -> None:
    # `rig run` killed with SIGKILL must not leave a controller process behind.
    started = subprocess.run([sys.executable, "-c", "import os; from rig.sim.hostfw import HostFirmware; "
                              "print(HostFirmware().start().pid, flush=True); os._exit(0)"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30, cwd=REPO)
    pid = int(started.stdout)
    deadline = time.monotonic() + 10
    while (stat := Path(f"/proc/{pid}/stat")).exists() and stat.read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, f"rigctl-host {pid} outlived its parent"
        time.sleep(0.01)
