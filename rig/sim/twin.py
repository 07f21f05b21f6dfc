"""Python twin of the rigctl firmware, served on a pseudo-terminal.

It follows firmware/PROTOCOL.md byte for byte so the host driver cannot tell it from the AVR board
(the conformance vectors in firmware/vectors/ hold both to one behaviour). Its physical state
(pulses now, light levels) is also readable directly: that is what the simulated camera "sees".
"""

from __future__ import annotations

import math
import os
import re
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from rig.devices.link import check_crc, crc16

FW_VERSION = "1.0.0"
PROTO = 1
MAX_LINE = 80
MAX_DIGITS = 9  # a number is 1..9 digits (PROTOCOL.md "Words, numbers and the order of checks")
MAX_MS = 3_600_000  # move time and timeout (PROTOCOL.md "Argument ranges")
_CHECKED = re.compile(r"^#(\d{1,9}) ([^*]+)\*([0-9A-F]{4})$")


@dataclass
class Limits:
    min: int = 1000
    max: int = 2000
    park: int = 1500
    slew: int = 1000  # us per second


@dataclass
class Channel:
    """One servo: where the current move started it and where it goes (the move's time is shared)."""

    limits: Limits = field(default_factory=Limits)
    start: float = 1500.0
    target: int = 1500


class Controller:
    """The firmware's behaviour, driven by lines and a clock; no I/O of its own."""

    def __init__(self, servos: int = 4, lights: int = 2, clock: Callable[[], float] = time.monotonic,
                 eeprom: list[Limits] | None = None) -> None:
        self.clock = clock
        self.n_servos, self.n_lights = servos, lights
        self.eeprom = eeprom if eeprom is not None else [Limits() for _ in range(servos)]
        self.boot("power")

    def boot(self, cause: str) -> list[str]:
        """Power-up or reset: servos at park at once, lights off, caches cleared."""
        now = self.clock()
        self.t_boot = now
        self.channels = [Channel(Limits(**vars(l)), float(l.park), l.park) for l in self.eeprom]
        self.move_t0, self.move_s = now, 0.0  # one move at a time, like the firmware
        self.lights = [0] * self.n_lights
        self.timeout_ms = 10000
        self.session = 0  # the host's token; every boot clears it
        self.last_rx = now
        self.flags = 0x04 if cause == "watchdog" else 0
        self.last_seq: int | None = None
        self.last_reply = ""
        self.done_pending = False
        self.pending_reset = False
        self.events = [f"!boot fw={FW_VERSION} proto={PROTO} servos={self.n_servos} lights={self.n_lights} cause={cause}"]
        return self.events

    # ------------------------------------------------------------ lines in, lines out

    def handle_line(self, raw: bytes) -> list[str]:
        """One received line (without LF) -> the lines to send back (without CRC/LF framing added yet)."""
        self.last_rx = self.clock()
        raw = raw.removesuffix(b"\r")
        if not raw:
            return []
        if len(raw) > MAX_LINE:
            return ["err 5 line-too-long"]
        if any(b < 0x20 or b > 0x7E for b in raw):
            return ["err 7 bad-frame"]
        line = raw.decode("ascii")
        if not line.startswith("#"):
            return [self.execute(line)]
        m = _CHECKED.match(line)
        if not m:
            return ["err 7 bad-frame"]
        seq = int(m.group(1))
        if seq > 65535:
            return ["err 7 bad-frame"]
        if check_crc(line) is None:
            return [self._sign(f"#{seq} err 4 bad-crc")]
        if seq == self.last_seq:
            return [self.last_reply]
        reply = self._sign(f"#{seq} {self.execute(m.group(2))}")
        self.last_seq, self.last_reply = seq, reply
        return [reply]

    @staticmethod
    def _sign(body: str) -> str:
        return f"{body}*{crc16(body.encode()):04X}"

    def signed_event(self, body: str) -> str:
        return self._sign(body)

    def tick(self) -> list[str]:
        """Advance time: motion done and host-silence events, and a requested reset."""
        now = self.clock()
        out: list[str] = []
        if self.events:
            out, self.events = self.events, []
        if self.done_pending and not self._moving(now):
            self.done_pending = False
            out.append("!done")
        if self.timeout_ms and not self.flags & 0x02 and (now - self.last_rx) * 1000 >= self.timeout_ms:
            for c in self.channels:
                c.target = round(self._position(c, now))
                c.start = float(c.target)
            self.move_s = 0.0
            self.lights = [0] * self.n_lights
            self.flags |= 0x02
            self.done_pending = False
            out.append("!safe cause=host-timeout")
        if self.pending_reset:
            out.extend(self.boot("watchdog"))
            self.events = []
        return out

    # ------------------------------------------------------------ commands

    # ------------------------------------------------------------ motion (firmware/rigctl/motion.cpp)

    def _position(self, c: Channel, now: float) -> float:
        if self.move_s <= 0 or now >= self.move_t0 + self.move_s:
            return float(c.target)
        return c.start + (c.target - c.start) * (now - self.move_t0) / self.move_s

    def _moving(self, now: float) -> bool:
        return self.done_pending and now < self.move_t0 + self.move_s

    # ------------------------------------------------------------ commands

    def execute(self, line: str) -> str:
        words = [w for w in line.split(" ") if w]  # one or more spaces separate words
        if not words:
            return "err 1 unknown-command"
        name, args = words[0], words[1:]
        handler = {"hello": self._hello, "status": self._status, "move": self._move, "light": self._light,
                   "park": self._park, "limit": self._limit, "timeout": self._timeout,
                   "reset": self._reset, "session": self._session}.get(name)
        if handler is None:
            return "err 1 unknown-command"
        try:
            return handler(args)
        except _BadArgument:
            return "err 2 bad-argument"

    def _hello(self, args: list[str]) -> str:
        _no_args(args)
        return f"ok rigctl fw={FW_VERSION} proto={PROTO} servos={self.n_servos} lights={self.n_lights}"

    def _status(self, args: list[str]) -> str:
        _no_args(args)
        now = self.clock()
        pos = ",".join(str(round(self._position(c, now))) for c in self.channels)
        tgt = ",".join(str(c.target) for c in self.channels)
        moving = int(self._moving(now))
        ms = int((now - self.t_boot) * 1000) % 2**32
        return (f"ok ms={ms} moving={moving} pos={pos} target={tgt} light={','.join(map(str, self.lights))} "
                f"timeout={self.timeout_ms} flags={self.flags:x} session={self.session}")

    def _pairs(self, args: list[str], count: int, lo: int = 0, hi: int = 10**MAX_DIGITS - 1) -> dict[int, int] | str:
        pairs: dict[int, int] = {}
        if not args:
            raise _BadArgument
        for a in args:
            # one word, PROTOCOL.md order: both numbers (err 2), the channel (err 6), named twice (err 2)
            ch_s, colon, v_s = a.partition(":")
            if not colon:
                raise _BadArgument
            ch, v = _number(ch_s), _number(v_s, lo, hi)
            if ch >= count:
                return "err 6 bad-channel"
            if ch in pairs:
                raise _BadArgument
            pairs[ch] = v
        return pairs

    def _move(self, args: list[str]) -> str:
        if not args:
            raise _BadArgument
        ms = _number(args[0], 0, MAX_MS)
        pairs = self._pairs(args[1:], self.n_servos)
        if isinstance(pairs, str):
            return pairs
        for ch, us in pairs.items():
            lim = self.channels[ch].limits
            if not lim.min <= us <= lim.max:
                return f"err 3 out-of-limits ch={ch}"
        return f"ok {self._start_move(pairs, ms)}"

    def _start_move(self, targets: dict[int, int], ms: int) -> int:
        """Replace any unfinished move: every channel starts from where it is, all arrive together."""
        now = self.clock()
        for c in self.channels:
            c.start = self._position(c, now)
        for ch, us in targets.items():
            self.channels[ch].target = us
        eff = max([ms] + [math.ceil(abs(c.target - c.start) * 1000 / c.limits.slew) for c in self.channels])
        self.move_t0, self.move_s = now, eff / 1000
        self.flags &= ~0x02
        self.done_pending = True
        return eff

    def _light(self, args: list[str]) -> str:
        pairs = self._pairs(args, self.n_lights, 0, 255)
        if isinstance(pairs, str):
            return pairs
        for ch, level in pairs.items():
            self.lights[ch] = level
        self.flags &= ~0x02
        return "ok"

    def _park(self, args: list[str]) -> str:
        _no_args(args)
        self.lights = [0] * self.n_lights
        return f"ok {self._start_move({i: c.limits.park for i, c in enumerate(self.channels)}, 0)}"

    def _limit(self, args: list[str]) -> str:
        if not args:
            raise _BadArgument
        ch = _number(args[0])
        if ch >= self.n_servos:
            return "err 6 bad-channel"  # the channel is checked before the number of words
        if len(args) not in (1, 5):
            raise _BadArgument
        if len(args) == 1:
            l = self.channels[ch].limits
            return f"ok ch={ch} min={l.min} max={l.max} park={l.park} slew={l.slew}"
        lo, hi, park = (_number(a, 400, 2600) for a in args[1:4])
        slew = _number(args[4], 1, 60000)
        if not lo <= park <= hi:
            raise _BadArgument
        new = Limits(lo, hi, park, slew)
        self.eeprom[ch] = new
        c, now = self.channels[ch], self.clock()
        pos = self._position(c, now)
        c.limits = Limits(**vars(new))
        if not (lo <= pos <= hi and lo <= c.target <= hi):
            # never drive a pulse outside the limits: jump inside and stop; the move keeps its time
            c.target = round(min(max(pos, lo), hi))
            c.start = float(c.target)
        if self._moving(now):  # a lower slew limit applies at once: re-plan the rest, same end if it fits
            self._start_move({}, int((self.move_t0 + self.move_s - now) * 1000))
        return "ok"

    def _timeout(self, args: list[str]) -> str:
        if len(args) != 1:
            raise _BadArgument
        self.timeout_ms = _number(args[0], 0, MAX_MS)
        return "ok"

    def _session(self, args: list[str]) -> str:
        if len(args) != 1:
            raise _BadArgument
        self.session = _number(args[0], 0, 65535)
        return "ok"

    def _reset(self, args: list[str]) -> str:
        _no_args(args)
        self.pending_reset = True
        return "ok"

    # ------------------------------------------------------------ what the camera sees

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Servo pulses right now and light levels: the rig's real geometry, not what was asked."""
        now = self.clock()
        return tuple(self._position(c, now) for c in self.channels), tuple(self.lights)


class _BadArgument(Exception):
    pass


def _no_args(args: list[str]) -> None:
    if args:
        raise _BadArgument


def _number(text: str, lo: int = 0, hi: int = 10**MAX_DIGITS - 1) -> int:
    """A 1..9-digit decimal number in lo..hi (channels and pulses: any such number, checked later)."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS:
        raise _BadArgument
    v = int(text)
    if not lo <= v <= hi:
        raise _BadArgument
    return v


class TwinServer:
    """Serves a Controller on a pty: the host opens `port` with pyserial like a USB serial port."""

    def __init__(self, controller: Controller | None = None) -> None:
        self.controller = controller or Controller()
        self.lock = threading.Lock()
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self._slave = slave  # kept open so the pty survives the host closing and reopening it
        self.port = os.ttyname(slave)
        os.set_blocking(self.master, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rigctl-twin", daemon=True)

    def start(self) -> TwinServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self._slave)

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        with self.lock:
            return self.controller.physical()

    def power_cycle(self) -> None:
        """The controller loses power for a moment: it boots again (servos at park, lights off)."""
        with self.lock:
            self.controller.boot("power")

    def _send(self, lines: list[str]) -> None:
        for line in lines:
            wire = (self.controller.signed_event(line) if line.startswith("!") else line).encode() + b"\n"
            try:
                os.write(self.master, wire)
            except BlockingIOError:
                pass  # nobody reading: like a UART with no host, bytes are lost

    def _serve(self) -> None:
        buf = b""
        overlong = False
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.002)
            with self.lock:
                if ready:
                    try:
                        buf += os.read(self.master, 4096)
                    except (BlockingIOError, OSError):
                        pass
                self._send(self.controller.tick())  # a banner or event due now goes out before any reply
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if overlong:
                        overlong = False
                        self.controller.last_rx = self.controller.clock()
                        self._send(["err 5 line-too-long"])
                    else:
                        self._send(self.controller.handle_line(line))
                if len(buf) > MAX_LINE + 1:  # bounded buffer, like the firmware's
                    buf, overlong = b"", True
                self._send(self.controller.tick())
