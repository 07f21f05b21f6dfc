"""A simulated Pololu Maestro on a pseudo-terminal, written from Pololu's Maestro user's guide.

`MaestroCore` is the controller's behaviour, bytes in and bytes out against a clock: the compact,
Pololu (device number) and Mini SSC protocols (guide 5.c, 5.e), the optional CRC-7 (5.d), the error
register and its bits (4.e), speed and acceleration limits applied every 10 ms (4.b), channel modes,
Min/Max and "On startup or error" settings (4.b), the serial timeout (5.a) and the Mini Maestro's
extra commands. `MaestroSimulator` serves it on a pty so the host opens it with pyserial like the
Maestro's USB Command Port; its physical state (pulses now, lamp levels) is what the simulated camera
sees. Where the guide is silent the choice is written next to the code (see also ADR 0011).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rig.config import MaestroLinkConfig, RigConfig, SimMaestroConfig
from rig.devices.kinds import Opening
from rig.devices.maestro import Maestro, check_rig
from rig.errors import ConfigError
from rig.sim.line import faulty_wiring
from rig.sim.world import world

CHANNELS = {"micro6": 6, "mini12": 12, "mini18": 18, "mini24": 24}
TICK_S = 0.010  # positions are updated every 10 ms (speed units of 0.25 us / 10 ms, guide 4.b)

# Error register bits (guide 4.e)
SIGNAL, OVERRUN, RX_FULL, CRC, PROTOCOL, TIMEOUT = (1 << b for b in range(6))


@dataclass
class ChannelSettings:
    """One channel's settings as Maestro Control Center stores them (guide 4.b); defaults are the factory's
    (guide 3: all servos, Min 992 us, Max 2000 us, off on startup or error, no speed or acceleration limit)."""

    mode: Literal["servo", "output"] = "servo"
    min_q: int = 992 * 4
    max_q: int = 2000 * 4
    home: Literal["off", "ignore", "goto"] = "off"
    home_q: int = 0
    speed: int = 0
    acceleration: int = 0


@dataclass
class LampWiring:
    """How a simulated lamp hangs on the Maestro: what the camera sees for each of the rig's light channels."""

    channel: int
    mode: Literal["output", "pwm", "dimmer", "none"]
    off_us: float = 1000.0
    full_us: float = 2000.0


@dataclass
class DeviceSettings:
    """The device's stored settings (Serial Settings and Channel Settings tabs)."""

    model: Literal["micro6", "mini12", "mini18", "mini24"] = "micro6"
    device_number: int = 12
    crc: bool = False
    timeout_s: float = 0.0  # serial timeout; 0 disables it (guide 5.a)
    channels: list[ChannelSettings] = field(default_factory=list)
    lamps: list[LampWiring] = field(default_factory=list)  # index = the rig's light channel
    neutral_q: int = 6000  # 8-bit neutral and range for Mini SSC (guide 3 defaults: 1500 us, 476.25 us)
    range_q: int = 1905

    def __post_init__(self) -> None:
        n = CHANNELS[self.model]
        self.channels = self.channels + [ChannelSettings() for _ in range(n - len(self.channels))]


@dataclass
class Channel:
    target: int = 0
    position: float = 0.0  # quarter-us; 0 = off, no pulses
    speed: int = 0
    acceleration: int = 0
    velocity: float = 0.0  # quarter-us per tick, when an acceleration limit applies
    last_pulse: float = 1500.0  # us: a servo without pulses stays where it was


# command -> number of data bytes (None: Set Multiple Targets, counted from its first data byte)
_DATA_BYTES: dict[int, int | None] = {0x84: 3, 0x87: 3, 0x89: 3, 0x8A: 4, 0x90: 1, 0x93: 0, 0x9F: None, 0xA1: 0,
                                      0xA2: 0, 0xA4: 0, 0xA7: 1, 0xA8: 3, 0xAE: 0}
_MINI_ONLY = {0x8A, 0x93, 0x9F}


def crc7(packet: bytes) -> int:
    """CRC-7 as guide 5.d describes it: long division by 0x91 with bits taken LSB first."""
    bits = [(byte >> i) & 1 for byte in packet for i in range(8)] + [0] * 7
    poly = [(0x91 >> i) & 1 for i in range(8)]
    for i in range(len(bits) - 7):
        if bits[i]:
            for j in range(8):
                bits[i + j] ^= poly[j]
    return sum(bit << i for i, bit in enumerate(bits[-7:]))


class MaestroCore:
    """The Maestro's behaviour: `receive(bytes) -> reply bytes`, motion computed from the clock."""

    def __init__(self, settings: DeviceSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or DeviceSettings()
        self.clock = clock
        self.boot()

    def boot(self) -> None:
        """Power-up or reset: channels at their startup values at once, no errors, parser idle (guide 4.b)."""
        self.t0 = self.clock()
        self.tick_done = 0  # ticks of motion applied so far
        self.errors = 0
        self.pwm = (0, 0)  # on time, period (1/48 us)
        self.script_running = False
        self.channels = []
        for s in self.settings.channels:
            start = s.home_q if s.home == "goto" else 0
            self.channels.append(Channel(start, float(start), s.speed, s.acceleration))
        self.last_valid = self.clock()
        self.timed_out = False
        self.arrivals: dict[int, float] = {}  # channel -> clock time its last move reached the target
        self._packet: list[int] = []
        self._need: int | None = 0  # data bytes still expected (None: not yet known); 0 with no packet: idle
        self._ignore = False  # a Pololu packet for another device number: skip its data bytes

    # ------------------------------------------------------------ motion (every 10 ms)

    def _advance(self) -> None:
        """Apply the 10 ms updates due by now; done lazily when someone looks, never in a busy loop."""
        now_tick = int((self.clock() - self.t0) / TICK_S)
        for _ in range(min(now_tick - self.tick_done, 100_000)):
            self.tick_done += 1
            for ch, c in enumerate(self.channels):
                if c.position != c.target:
                    self._step(c)
                    if c.position == c.target:
                        self.arrivals[ch] = self.t0 + self.tick_done * TICK_S
            if all(c.position == c.target for c in self.channels):
                self.tick_done = now_tick
                break

    @staticmethod
    def _step(c: Channel) -> None:
        """One update: the position moves toward the target by at most `speed` quarter-us (0: at once). With an
        acceleration limit the step grows by acceleration/8 per update (its units are per 80 ms) and shrinks
        again to stop at the target; the guide does not give Pololu's exact ramp, so this is an approximation."""
        d = c.target - c.position
        if not c.acceleration:
            step = abs(d) if not c.speed else min(abs(d), c.speed)
        else:
            a = c.acceleration / 8
            v = min(c.velocity + a, math.sqrt(2 * a * abs(d)) + a)
            if c.speed:
                v = min(v, c.speed)
            step = min(abs(d), max(v, 1.0))
            c.velocity = step
        c.position += math.copysign(step, d)
        if c.position == c.target:
            c.velocity = 0.0

    def _set_target(self, ch: int, q: int) -> None:
        s, c = self.settings.channels[ch], self.channels[ch]
        if s.mode == "output":  # no speed or acceleration on outputs (guide 4.b); high at >= 6000 (5.e)
            c.target, c.position = q, float(q)
            return
        if q:
            q = min(max(q, s.min_q), s.max_q)  # Min and Max bound the channel's position (guide 4.b)
        c.target = q
        # from off the Maestro cannot know where the servo is, so it jumps (5.e Go Home); with no speed and no
        # acceleration limit a new target takes effect at once (5.e Set Speed)
        if c.position == 0 or q == 0 or not (c.speed or c.acceleration):
            c.position = float(q)
            c.velocity = 0.0
            self.arrivals[ch] = self.clock()

    def _go_home(self) -> None:
        """Every channel to its 'On startup or error' value (guide 4.b, 4.e, 5.e Go Home); speed limits apply."""
        self._advance()
        for ch, s in enumerate(self.settings.channels):
            if s.home == "off":
                self._set_target(ch, 0)
            elif s.home == "goto":
                self._set_target(ch, s.home_q)

    def _error(self, bits: int) -> None:
        self.errors |= bits
        self._go_home()  # "When an error occurs ... the Maestro sends all of its servos and digital outputs home"

    def moving(self) -> bool:
        self._advance()
        return any(c.position != c.target for c, s in zip(self.channels, self.settings.channels) if s.mode == "servo")

    # ------------------------------------------------------------ bytes in, bytes out

    def receive(self, data: bytes) -> bytes:
        """Bytes arriving on the command port -> the bytes the Maestro sends back."""
        out = bytearray()
        for b in data:
            out += self._byte(b)
        return bytes(out)

    def _byte(self, b: int) -> bytes:
        pkt = self._packet
        if pkt and pkt[0] == 0xFF and len(pkt) < 3:  # Mini SSC: its two data bytes may be 0..254 (guide 5.c)
            pkt.append(b)
            return self._finish() if len(pkt) == 3 else b""
        if b & 0x80:
            if pkt and pkt != [0xAA] and not self._ignore:  # a lone 0xAA is the baud rate indication (5.c)
                self._error(PROTOCOL)  # an unfinished packet interrupted by another command (guide 4.e)
            self._packet, self._ignore = [b], False
            if b in (0xAA, 0xFF):
                self._need = None
                return b""
            return self._start(b)
        if self._ignore:
            return b""
        if not pkt:
            self._error(PROTOCOL)  # a data byte where a command byte belongs: a nonsensical packet
            return b""
        pkt.append(b)
        if pkt[0] == 0xAA:
            if len(pkt) == 2:
                if b != self.settings.device_number:
                    self._ignore = True  # another device's command (guide 5.c)
                return b""
            if len(pkt) == 3:
                return self._start(b | 0x80)
        if self._need is None:  # Set Multiple Targets' count: first channel, 2 bytes per target (+ CRC) to come
            self._need = 1 + 2 * b + int(self.settings.crc)
            return b""
        self._need -= 1
        return self._finish() if self._need == 0 else b""

    def _start(self, command: int) -> bytes:
        """A command byte: how many data bytes follow (and one CRC byte when CRC is enabled)."""
        mini = self.settings.model != "micro6"
        if command not in _DATA_BYTES or (command in _MINI_ONLY and not mini):
            self._error(PROTOCOL)  # unknown command (guide 4.e)
            self._packet, self._ignore = [], True  # its data bytes are skipped until the next command
            return b""
        n = _DATA_BYTES[command]
        self._need = None if n is None else n + int(self.settings.crc)
        return self._finish() if self._need == 0 else b""

    def _command(self) -> int:
        return self._packet[2] | 0x80 if self._packet[0] == 0xAA else self._packet[0]

    def _data(self) -> list[int]:
        return self._packet[3:] if self._packet[0] == 0xAA else self._packet[1:]

    def _finish(self) -> bytes:
        pkt, self._packet, self._need = self._packet, [], 0
        if pkt[0] == 0xFF:
            return self._mini_ssc(pkt[1], pkt[2])
        if self.settings.crc:
            if crc7(bytes(pkt[:-1])) != pkt[-1]:
                self._error(CRC)  # the packet is ignored (guide 5.d)
                return b""
            pkt = pkt[:-1]
        self._packet = pkt
        try:
            return self._execute(self._command(), self._data())
        finally:
            self._packet = []

    def _execute(self, command: int, d: list[int]) -> bytes:
        n = len(self.channels)
        self._advance()
        if command in (0x84, 0x87, 0x89, 0x90) and d[0] >= n:
            self._error(PROTOCOL)  # no such channel: a nonsensical packet
            return b""
        self.last_valid, self.timed_out = self.clock(), False
        if command == 0x84:
            self._set_target(d[0], d[1] | d[2] << 7)
        elif command == 0x9F:
            count, first = d[0], d[1]
            if first + count > n:
                self._error(PROTOCOL)
                return b""
            for i in range(count):
                self._set_target(first + i, d[2 + 2 * i] | d[3 + 2 * i] << 7)
        elif command == 0x87:
            self.channels[d[0]].speed = d[1] | d[2] << 7
        elif command == 0x89:
            self.channels[d[0]].acceleration = min(255, d[1] | d[2] << 7)
        elif command == 0x8A:
            self.pwm = (d[0] | d[1] << 7, d[2] | d[3] << 7)
        elif command == 0x90:
            return round(self.channels[d[0]].position).to_bytes(2, "little")  # low byte first (guide 5.e)
        elif command == 0x93:
            return bytes((int(self.moving()),))
        elif command == 0xA1:
            errors, self.errors = self.errors, 0  # reading the register clears it (guide 4.e)
            return errors.to_bytes(2, "little")
        elif command == 0xA2:
            self._go_home()
        elif command == 0xA4:
            self.script_running = False
        elif command == 0xAE:
            return bytes((0 if self.script_running else 1,))  # 0: running, 1: stopped (guide 5.f)
        # 0xA7/0xA8 (restart script at a subroutine): this Maestro has no script, nothing runs
        return b""

    def _mini_ssc(self, address: int, value: int) -> bytes:
        """0xFF, channel, 0..254: neutral +- range on the 8-bit scale (guide 5.e); a byte of 255 is not allowed."""
        if address >= len(self.channels) or value == 255:
            self._error(PROTOCOL)
            return b""
        self.last_valid, self.timed_out = self.clock(), False
        self._advance()
        self._set_target(address, round(self.settings.neutral_q + (value - 127) * self.settings.range_q / 127))
        return b""

    # ------------------------------------------------------------ time

    def timeout_due(self) -> float | None:
        """When the serial timeout fires if nothing valid arrives (None: disabled or already fired)."""
        if not self.settings.timeout_s or self.timed_out:
            return None
        return self.last_valid + self.settings.timeout_s

    def check_timeout(self) -> bool:
        due = self.timeout_due()
        if due is None or self.clock() < due:
            return False
        self.timed_out = True  # fires once per silence; the next valid command re-arms it
        self._error(TIMEOUT)
        return True

    # ------------------------------------------------------------ what the camera sees

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Servo pulses now (us; a servo without pulses stays where it was) and lamp levels 0..255."""
        self._advance()
        pulses = []
        for c, s in zip(self.channels, self.settings.channels):
            if s.mode == "servo" and c.position:
                c.last_pulse = c.position / 4
            pulses.append(c.last_pulse)
        levels = []
        for lamp in self.settings.lamps:
            pos = self.channels[lamp.channel].position
            if lamp.mode == "none":
                levels.append(0)
            elif lamp.mode == "output":
                levels.append(255 if pos >= 6000 else 0)
            elif lamp.mode == "pwm":
                on, period = self.pwm
                levels.append(min(255, round(255 * on / period)) if period else 0)
            else:
                frac = (pos / 4 - lamp.off_us) / (lamp.full_us - lamp.off_us) if pos else 0.0
                levels.append(min(255, max(0, round(255 * frac))))
        return tuple(pulses), tuple(levels)


def set_up_for(settings: MaestroLinkConfig, rig: RigConfig) -> DeviceSettings:
    """A Maestro set up the way `rig doctor` tells an operator to: servo channels' Min/Max covering the rig
    file's limits and Go to park on startup or error, lamp channels in their modes and off on error, the
    serial settings and timeout of the rig file's `controller:`."""
    channels = [ChannelSettings() for _ in range(CHANNELS[settings.model])]
    for s in rig.servos.values():
        channels[s.channel] = ChannelSettings(min_q=4 * s.min, max_q=4 * s.max, home="goto", home_q=4 * s.park)
    lamps: list[LampWiring] = []
    for light in sorted(rig.lights.values(), key=lambda light: light.channel):
        w = settings.lights[light.channel]
        if w.mode == "output":
            channels[w.channel] = ChannelSettings(mode="output", home="goto", home_q=0)
        elif w.mode == "dimmer":
            lo, hi = sorted((w.off_us, w.full_us))
            channels[w.channel] = ChannelSettings(min_q=4 * lo, max_q=4 * hi, home="goto", home_q=4 * w.off_us)
        while len(lamps) < light.channel:
            lamps.append(LampWiring(0, "none"))  # a light index the rig file does not use
        lamps.append(LampWiring(w.channel, w.mode, w.off_us, w.full_us))
    return DeviceSettings(model=settings.model, device_number=settings.device_number, crc=settings.crc,
                          timeout_s=settings.serial_timeout_s, channels=channels, lamps=lamps)


class MaestroSimulator:
    """Serves a MaestroCore on a pty; `port` is what the host opens. One thread that sleeps in select()
    until bytes arrive, the serial timeout is due, or stop() wakes it."""

    def __init__(self, settings: DeviceSettings | None = None) -> None:
        self.core = MaestroCore(settings)
        self.lock = threading.Lock()
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        os.set_blocking(self.master, False)
        self._wake_r, self._wake_w = os.pipe()
        self.timed_out = threading.Event()  # set each time the serial timeout fires (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-maestro", daemon=True)

    def start(self) -> MaestroSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for fd in (self.master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def physical(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        with self.lock:
            return self.core.physical()

    def power_cycle(self) -> None:
        """The Maestro loses power for a moment: startup values, no errors, speeds from its settings."""
        with self.lock:
            self.core.boot()
        os.write(self._wake_w, b"x")

    def inject(self, data: bytes) -> None:
        """Bytes that arrive as if on the line (a glitch, another program); replies go to the host."""
        with self.lock:
            self._send(self.core.receive(data))

    def line_error(self, bits: int) -> None:
        """A fault the pty cannot produce (a wrong baud rate's missing stop bit: SIGNAL, an overrun)."""
        with self.lock:
            self.core._error(bits)

    def _send(self, data: bytes) -> None:
        if data:
            with contextlib.suppress(BlockingIOError):  # nobody reading: like a UART with no host, bytes are lost
                os.write(self.master, data)

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                due = self.core.timeout_due()
            wait = None if due is None else max(0.0, due - time.monotonic())
            ready, _, _ = select.select([self.master, self._wake_r], [], [], wait)
            with self.lock:
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                if self.master in ready:
                    try:
                        data = os.read(self.master, 4096)
                    except (BlockingIOError, OSError):
                        data = b""
                    self._send(self.core.receive(data))
                if self.core.check_timeout():
                    self.timed_out.set()


def open_controller(opening: Opening) -> Maestro:
    """`kind: sim-maestro`: the simulated Maestro set up as `rig doctor` advises, driven by the real driver.
    Its power cuts follow `sim.power_cycles_s`; its line is binary, so `sim.line_noise` does not apply."""
    config = opening.rig.controller
    assert isinstance(config, SimMaestroConfig)  # the factory table chose this by kind
    noise = opening.rig.sim.line_noise
    if noise.corrupt_bytes or noise.drop_lines:
        raise ConfigError(f"{opening.rig_path}: sim.line_noise: the simulated cable forwards text lines; the "
                          "Maestro's protocol is binary: remove line_noise for a sim-maestro controller")
    try:
        check_rig(config, opening.rig)
    except ConfigError as e:
        raise ConfigError(f"{opening.rig_path}: {e}") from None
    sim = MaestroSimulator(set_up_for(config, opening.rig)).start()
    opening.stack.callback(sim.stop)
    world(opening).physical = sim.physical
    faulty_wiring(opening.rig.sim, sim.port, sim.power_cycle, opening.stack)  # power cuts only: no line noise
    motion = Maestro.connect(config, opening.rig, sim.port)
    opening.stack.callback(motion.close)
    return motion
