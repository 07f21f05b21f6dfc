"""The rigctl firmware's own protocol core, compiled for the PC, as the simulated rig's controller.

`firmware/build/rigctl-host` is the firmware's portable C++ (the same files the ATmega328P runs)
serving PROTOCOL.md on a pseudo-terminal, which the host driver opens like a USB serial port (ADR
0010: one implementation of the protocol, as Klipper runs its MCU code on the host). Its outputs,
the servo pulses and light levels it drives now, are what the simulated camera sees: the process
keeps them in a small memory-mapped file that `physical()` reads without a system call.
"""

from __future__ import annotations

import mmap
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from rig.errors import DeviceError

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
HOST_BINARY = FIRMWARE / "build" / "rigctl-host"
BUILD_HINT = "make host"

# The state file's layout (firmware/rigctl/host/host_main.cpp): magic, seq, boots, servos, lights, pad.
_HEADER = struct.Struct("=8sIIBB2x")
_MAGIC = b"RIGHOST1"
_SEQ = slice(8, 12)
_WAIT_S = 5.0  # for the process to start, boot again or finish an update: each takes milliseconds


class HostFirmware:
    """One rigctl-host process in real time; `stop()` ends it and removes its temporary folder."""

    def __init__(self, binary: Path = HOST_BINARY) -> None:
        if not binary.exists():
            shown = binary.relative_to(FIRMWARE.parent) if binary.is_relative_to(FIRMWARE.parent) else binary
            raise DeviceError(f"the simulated controller needs {shown}; build it with: {BUILD_HINT}")
        self.binary = binary
        self.port = ""
        self._dir: Path | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._state: mmap.mmap | None = None

    def start(self) -> HostFirmware:
        self._dir = Path(tempfile.mkdtemp(prefix="rig-hostfw-"))
        state_path = self._dir / "state"
        # stdin is a pipe only so the process notices when this one is gone (its end closes).
        self._proc = subprocess.Popen([str(self.binary), "--state", str(state_path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        m = re.fullmatch(r"pty (\S+)\n", self._proc.stdout.readline())
        if not m:
            self.stop()
            raise DeviceError(f"{self.binary.name} did not start; rebuild it with: {BUILD_HINT}")
        self.port = m.group(1)
        with state_path.open("rb") as f:
            self._state = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if self._state[:8] != _MAGIC:
            self.stop()
            raise DeviceError(f"{self.binary.name} is older than this program; rebuild it with: {BUILD_HINT}")
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DeviceError("the simulated controller is not running")
        return self._proc.pid

    def _snapshot(self) -> bytes:
        """A consistent copy of the state file: the writer marks an update in progress with an odd seq."""
        if self._state is None:
            raise DeviceError("the simulated controller is not running")
        state = self._state
        deadline = time.monotonic() + _WAIT_S
        while True:
            before = state[_SEQ]
            raw = state[:]
            if before == state[_SEQ] and int.from_bytes(before, "little") % 2 == 0:
                return raw
            if time.monotonic() > deadline:
                raise DeviceError(f"{self.binary.name} stopped in the middle of updating its outputs")
            time.sleep(0)  # the writer was interrupted mid-update: let it finish

    def _boots(self) -> int:
        boots: int = _HEADER.unpack_from(self._snapshot())[2]
        return boots

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Servo pulses (us) and light levels the controller drives now: where the rig really is."""
        raw = self._snapshot()
        _, _, _, servos, lights = _HEADER.unpack_from(raw)
        ticks = struct.unpack_from(f"={servos}H", raw, _HEADER.size)
        levels = struct.unpack_from(f"={lights}B", raw, _HEADER.size + 2 * servos)
        return tuple(t / 2 for t in ticks), tuple(levels)

    def power_cycle(self) -> None:
        """The controller loses power for a moment: it boots again (EEPROM kept); returns once it has."""
        if self._proc is None or self._proc.poll() is not None:
            return
        boots = self._boots()
        self._proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + _WAIT_S
        while self._state is not None and self._boots() == boots:  # (None: stopped meanwhile)
            if time.monotonic() > deadline:
                raise DeviceError(f"{self.binary.name} did not boot again after a power cut")
            time.sleep(0.001)

    def stop(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=_WAIT_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    pipe.close()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> HostFirmware:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
