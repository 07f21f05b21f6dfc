"""Helpers for the firmware-in-the-loop tests: a running rigsim and ways to talk to it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import serial

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
BUILD = FIRMWARE / "build"
ELF = BUILD / "rigctl.elf"
RIGSIM = BUILD / "rigsim"
VECTORS = FIRMWARE / "vectors"

sys.path.insert(0, str(VECTORS))
import runner  # noqa: E402  (firmware/vectors/runner.py, shared with tests/test_sim_controller.py)


@dataclass
class Sim:
    """One running rigsim process and what it measures."""

    proc: subprocess.Popen
    pty: str
    pins_path: Path
    pulses_path: Path
    eeprom_path: Path
    ports: list[serial.Serial] = field(default_factory=list)

    def open(self) -> runner.Session:
        """A pyserial connection wrapped in the vector runner's line/event reader."""
        port = serial.Serial(self.pty, 115200, timeout=0.05, write_timeout=2.0)
        self.ports.append(port)
        return runner.Session(port)

    def connect(self) -> runner.Session:
        """Open and resynchronise (empty line + hello) as PROTOCOL.md tells hosts to."""
        s = self.open()
        assert s.resync(), "firmware did not answer hello"
        return s

    def pins(self, fresh_after_us: float | None = None, timeout: float = 5.0) -> dict:
        """Parse the harness' pins snapshot: {"t_us": float, "servo": {ch: {...}}, "light": {ch: {...}}}.

        With fresh_after_us, wait until the snapshot's simulated time is past that instant.
        """
        deadline = time.monotonic() + timeout
        while True:
            snap = parse_pins(self.pins_path.read_text()) if self.pins_path.exists() else None
            if snap and (fresh_after_us is None or snap["t_us"] > fresh_after_us):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError("pins snapshot not updated by rigsim")
            time.sleep(0.01)

    def sim_time_us(self) -> float:
        return self.pins()["t_us"]

    def pulses(self) -> list[tuple[float, int, float]]:
        """Every servo pulse so far: (rise time in simulated us, channel, width in us)."""
        out = []
        for line in self.pulses_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # the last line may be half written
                out.append((float(parts[0]), int(parts[1]), float(parts[2])))
        return out

    def power_cycle(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        for p in self.ports:
            p.close()
        self.ports.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def parse_pins(text: str) -> dict | None:
    snap: dict = {"servo": {}, "light": {}}
    for line in text.splitlines():
        kind, *pairs = line.split()
        kv = dict(p.split("=", 1) for p in pairs)
        if kind == "time":
            snap["t_us"] = float(kv["t_us"])
        elif kind in ("servo", "light"):
            snap[kind][int(kv["ch"])] = {k: (v if k == "pin" else float(v)) for k, v in kv.items()}
    return snap if "t_us" in snap else None


def command(s: runner.Session, line: str, timeout: float = 3.0) -> str:
    """Send one plain command, return its reply line (events are collected in s.events)."""
    s.send(line.encode())
    reply = s.reply(timeout)
    assert reply is not None, f"no reply to {line!r}"
    return reply.decode()


def status(s: runner.Session) -> dict[str, str]:
    reply = command(s, "status")
    assert reply.startswith("ok "), reply
    return dict(p.split("=", 1) for p in reply[3:].split())


def wait_event(s: runner.Session, pattern: str, timeout: float = 10.0) -> str:
    ev = s.wait_event(re.compile(pattern.encode()), timeout)
    assert ev is not None, f"event !{pattern} did not arrive within {timeout}s (seen: {s.events})"
    return ev.decode()

