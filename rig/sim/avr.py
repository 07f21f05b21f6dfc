"""The real rigctl firmware (firmware/build/rigctl.elf) running in simavr, as the rig's controller.

`rigsim` bridges the AVR's UART to a pseudo-terminal, which the host driver opens like a USB
serial port, and writes the pulse widths and light duties it measures on the pins to a file. The
simulated camera takes its pose from those measured pulses, not from what the host commanded.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from rig.errors import DeviceError

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
RIGSIM = FIRMWARE / "build" / "rigsim"
ELF = FIRMWARE / "build" / "rigctl.elf"


class AvrSimulator:
    """One rigsim process in real time; stopped (and its temp folder removed) by `stop()`."""

    def __init__(self) -> None:
        if not RIGSIM.exists() or not ELF.exists():
            raise DeviceError(f"controller.kind simavr needs {RIGSIM.name} and {ELF.name}; "
                              "build them with: make firmware")
        self.dir = Path(tempfile.mkdtemp(prefix="rig-simavr-"))
        self.pins_file = self.dir / "pins.txt"
        self.proc = subprocess.Popen(
            [str(RIGSIM), "--realtime", "--eeprom", str(self.dir / "eeprom.bin"), "--pins", str(self.pins_file),
             str(ELF)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        m = re.fullmatch(r"pty (\S+)\n", self.proc.stdout.readline())
        if not m:
            self.stop()
            raise DeviceError("rigsim did not start; rebuild it with: make firmware")
        self.port = m.group(1)
        self._last: tuple[tuple[float, ...], tuple[int, ...]] | None = None

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Servo pulse widths and light levels measured on the pins (the latest complete snapshot)."""
        deadline = time.monotonic() + 2
        while True:
            snap = self._parse()
            if snap is not None:
                self._last = snap
                return snap
            if self._last is not None or time.monotonic() > deadline:
                if self._last is None:
                    raise DeviceError("rigsim wrote no pin measurements")
                return self._last
            time.sleep(0.01)

    def _parse(self) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
        try:
            text = self.pins_file.read_text()
        except OSError:
            return None
        servos: dict[int, float] = {}
        lights: dict[int, int] = {}
        for line in text.splitlines():
            kind, *pairs = line.split()
            kv = dict(p.split("=", 1) for p in pairs if "=" in p)
            try:
                if kind == "servo":
                    servos[int(kv["ch"])] = float(kv["last"])
                elif kind == "light":  # the PWM duty 0..255, not the pin's level (0/1) at this instant
                    lights[int(kv["ch"])] = int(kv["duty"])
            except (KeyError, ValueError):
                return None  # caught mid-rewrite
        if not servos or not lights:
            return None
        return tuple(servos[c] for c in sorted(servos)), tuple(lights[c] for c in sorted(lights))

    def power_cycle(self) -> None:
        """The AVR loses power for a moment (rigsim's SIGUSR1): it boots again, EEPROM kept."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
