"""The checked serial link to a rigctl controller (see firmware/PROTOCOL.md).

Every command goes out as `#<seq> <command>*<crc>`; a lost or corrupted reply is retransmitted with
the same sequence number, which the controller answers from its cache without executing twice.
Retransmission is bounded by time, not by a count: on a noisy line most replies may arrive damaged,
yet the command goes through as long as the controller answers at all. Only `give_up_s` without a
single intact line from the controller (it is off, unplugged, or on another baud rate) ends it.
Events (`!...`) arriving between replies are handed to a callback.
"""

from __future__ import annotations

import binascii
import collections
import logging
import re
import time
from collections.abc import Callable

import serial

from rig.errors import DeviceError

log = logging.getLogger(__name__)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, as the firmware computes it with avr-libc's _crc_xmodem_update."""
    return binascii.crc_hqx(data, 0xFFFF)


def frame(seq: int, command: str) -> bytes:
    body = f"#{seq} {command}".encode("ascii")
    return body + b"*%04X\n" % crc16(body)


_FRAMED = re.compile(r"([\x20-\x7e]*)\*([0-9A-F]{4})")


def check_crc(line: str) -> str | None:
    """The line without its `*XXXX` if it is printable ASCII and the CRC matches, else None.

    A byte outside 0x20..0x7E is damage the CRC must not be asked to catch: the host decodes such bytes
    alike, which would let two of them cancel out in the CRC-16."""
    m = _FRAMED.fullmatch(line)
    if m is None:
        return None
    body = m.group(1)
    return body if int(m.group(2), 16) == crc16(body.encode("ascii")) else None


# A plain error reply: the controller received a line it could not read as a checked frame (ours, damaged).
_PLAIN_ERR = re.compile(r"err \d+ [a-z-]+")


class PortUnavailable(DeviceError):
    """The serial port could not be opened at all (wrong path, unplugged, no permission)."""


class ControllerError(DeviceError):
    """The controller answered `err <code> <text>`."""

    def __init__(self, command: str, code: int, text: str) -> None:
        super().__init__(f"controller refused '{command}': error {code} {text}")
        self.code, self.text = code, text


class Link:
    """Stop-and-wait command link with retransmission; one command at a time."""

    def __init__(self, port: serial.SerialBase, name: str, reply_timeout_s: float = 0.3, give_up_s: float = 10.0,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.port, self.name = port, name
        self.reply_timeout_s, self.give_up_s = reply_timeout_s, give_up_s
        self.on_event = on_event or (lambda e: log.info("controller event: %s", e))
        self.seq = int(time.monotonic() * 1000) % 60000  # unlikely to equal a cached seq after a host restart
        self._buf = b""
        self.retransmissions = 0
        self.retransmission_reasons: collections.Counter[str] = collections.Counter()  # why, for `rig report`

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, reply_timeout_s: float = 0.3, give_up_s: float = 10.0) -> Link:
        """Open any pyserial URL or device path; an unreachable port is a one-line DeviceError."""
        try:
            # exclusive: a second program (or a second rig run) must not share the controller's line
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.02, write_timeout=2.0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortUnavailable(f"cannot open '{url}' ({e})") from None
        return cls(port, url, reply_timeout_s, give_up_s)

    def close(self) -> None:
        self.port.close()

    def command(self, text: str) -> str:
        """Send one command, return the `ok` payload; raise ControllerError on `err`.

        Retransmits (same sequence number) after a reply time-out or a damaged line, for as long as
        the controller keeps answering; gives up after `give_up_s` without an intact line from it,
        or after ten times that in all (a controller that answers, but never this command).
        """
        self.seq = (self.seq + 1) % 65536
        wire = frame(self.seq, text)
        prefix = f"#{self.seq} "
        started = heard = time.monotonic()
        tries = 0
        why = "no reply in time"
        while True:
            if tries:
                self.retransmissions += 1
                self.retransmission_reasons[why] += 1
                why = "no reply in time"
                log.debug("retransmitting #%d %s (try %d)", self.seq, text, tries + 1)
            tries += 1
            self._write(wire)
            deadline = time.monotonic() + self.reply_timeout_s
            while (line := self._read_line(deadline)) is not None:
                if line.startswith("!"):
                    if self._event(line):
                        heard = time.monotonic()
                    continue
                body = check_crc(line)
                if body is None:
                    if _PLAIN_ERR.fullmatch(line):  # our line arrived damaged: the controller is there
                        heard = time.monotonic()
                    why = "damaged reply"
                    break  # a damaged line, most likely our reply: ask again now rather than at the time-out
                heard = time.monotonic()
                if not body.startswith(prefix):
                    continue  # a late reply to an earlier command: not ours
                reply = body[len(prefix):]
                if reply == "ok" or reply.startswith("ok "):
                    return reply[3:]
                code, _, rest = reply.removeprefix("err ").partition(" ")
                if code in ("4", "8"):  # our line arrived corrupted, or the controller had no room to answer
                    why = "command arrived damaged" if code == "4" else "controller busy"
                    break  # yet (PROTOCOL.md "Flow"): nothing was executed, send it again
                raise ControllerError(text, int(code) if code.isdigit() else -1, rest)
            now = time.monotonic()
            if now - heard > self.give_up_s or now - started > 10 * self.give_up_s:
                raise DeviceError(f"controller at {self.name} did not answer '{text}' ({tries} tries in "
                                  f"{now - started:.0f} s); check that it is powered and connected")

    def poll_events(self, timeout_s: float = 0.0) -> None:
        """Read and dispatch any events that arrived while no command was running."""
        deadline = time.monotonic() + timeout_s
        while (line := self._read_line(deadline)) is not None:
            if line.startswith("!"):
                self._event(line)

    def resync(self) -> str:
        """Flush whatever half line is on the wire and ask `hello`; returns its payload."""
        self._write(b"\n")
        self.poll_events(0.05)
        return self.command("hello")

    def _event(self, line: str) -> bool:
        """Hand an intact event to the callback; False for a damaged one (dropped)."""
        body = check_crc(line)
        if body is None:
            log.info("dropped corrupted event line %r", line)
            return False
        self.on_event(body[1:])
        return True

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"controller at {self.name}: write failed ({e}); check the connection") from None

    def _read_line(self, deadline: float) -> str | None:
        while b"\n" not in self._buf:
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self.port.read(self.port.in_waiting or 1)
            except (serial.SerialException, OSError) as e:
                raise DeviceError(f"controller at {self.name}: read failed ({e}); check the connection") from None
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\n")
        return raw.rstrip(b"\r").decode("ascii", "replace")
