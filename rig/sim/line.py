"""A simulated serial cable between the host and a simulated controller: a pty that can damage the line.

It forwards whole lines in both directions and, per the rig file's `sim.line_noise`, corrupts bytes
and drops lines, so the host driver meets the faults of a long, noisy USB/RS-232 run. Tests also
give it a `drop` rule (e.g. lose only the controller's `!boot` banner). The host opens `port` with
pyserial like any serial device; nothing on the real path knows the cable is simulated.
"""

from __future__ import annotations

import os
import random
import select
import threading
import tty
from collections.abc import Callable
from contextlib import ExitStack, suppress

import serial

from rig.config import SimConfig


class NoisyLine:
    """Forwards lines host <-> controller; corrupts each byte with probability `corrupt` and drops each
    line with probability `drop_lines`, in both directions; `drop(line)` True drops that line too."""

    def __init__(self, upstream: str, corrupt: float = 0.0, drop_lines: float = 0.0, seed: int = 0,
                 drop: Callable[[bytes], bool] | None = None) -> None:
        self.up = serial.Serial(upstream, 115200, timeout=0, write_timeout=2)
        self.corrupt, self.drop_lines = corrupt, drop_lines
        self.drop = drop or (lambda line: False)
        self.rng = random.Random(seed)
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        os.set_blocking(self.master, False)
        self.corrupted = self.dropped = 0  # what the cable did, for reports
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="sim-noisy-line", daemon=True)
        self._thread.start()

    def _damage(self, line: bytes) -> bytes | None:
        """One line with its LF -> what arrives at the other end (None: lost)."""
        if self.drop(line.rstrip(b"\n")) or (self.drop_lines and self.rng.random() < self.drop_lines):
            self.dropped += 1
            return None
        if not self.corrupt:
            return line
        out = bytearray(line)
        for i in range(len(out)):
            if self.rng.random() < self.corrupt:
                out[i] ^= self.rng.randrange(1, 256)  # never the same byte again
                self.corrupted += 1
        return bytes(out)

    def _pump(self) -> None:
        from_host, from_ctl = b"", b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master, self.up.fileno()], [], [], 0.01)
                if self.master in ready:
                    from_host += os.read(self.master, 4096)
                    lines, from_host = _lines(from_host)
                    for line in lines:
                        if (out := self._damage(line)) is not None:
                            self.up.write(out)
                if self.up.fileno() in ready:
                    from_ctl += self.up.read(4096)
                    lines, from_ctl = _lines(from_ctl)
                    for line in lines:
                        if (out := self._damage(line)) is not None:
                            _write_all(self.master, out)
            except BlockingIOError:
                continue
            except (OSError, serial.SerialException):
                if self._stop.is_set():
                    return
                # the host closed its end for a moment (reconnect): keep the cable up
                self._stop.wait(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.up.close()
        os.close(self.master)
        os.close(self._slave)


def _lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (each with its LF) and the unfinished rest."""
    *lines, rest = buf.split(b"\n")
    return [line + b"\n" for line in lines], rest


def _write_all(fd: int, data: bytes) -> None:
    with suppress(BlockingIOError):  # nobody reading: like a UART with no host, bytes are lost
        os.write(fd, data)


def faulty_wiring(sim: SimConfig, port: str, power_cycle: Callable[[], None], stack: ExitStack) -> str:
    """Put the rig file's simulated line noise between host and controller and schedule its power cycles.

    Returns the port the host must open; everything started is stopped by `stack`.
    """
    noise = sim.line_noise
    if noise.corrupt_bytes or noise.drop_lines:
        line = NoisyLine(port, noise.corrupt_bytes, noise.drop_lines, seed=sim.seed)
        stack.callback(line.close)
        port = line.port
    for at in sim.power_cycles_s:
        timer = threading.Timer(at, power_cycle)
        timer.daemon = True
        timer.start()
        stack.callback(timer.cancel)
    return port
