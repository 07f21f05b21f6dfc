"""Driver for a Pololu Maestro servo controller (Micro Maestro 6, Mini Maestro 12/18/24) over serial.

It speaks the Maestro's documented serial protocols (Pololu's Maestro user's guide, section 5;
docs/decisions/0011-maestro-backend.md lists the facts used and where they come from), compact or
Pololu protocol with a device number, with the optional CRC-7.

What the Maestro cannot do, the host does:
- Servo limits live in the Maestro's settings, which only Pololu's tool writes, so the rig file's
  min/max are enforced here; a Maestro whose own Min/Max is narrower shows up as a servo that stops
  short of its target, which `wait_idle` names.
- The Maestro has no "move all channels in N ms": each move sets per-channel speed limits so that all
  channels arrive together, and arrival is confirmed by reading the positions back, not by time.
- The error register is read after every exchange. Every error sends the Maestro's channels to their
  home positions (guide 4.e): a serial timeout (the host was silent) is repaired like a controller
  reset (pose and lights re-applied, counted in `MotionState.restores`); any other error is a
  `MaestroError` naming the bits and what to do.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import serial

from rig.config import MaestroConfig, MaestroLight, MaestroLinkConfig, RigConfig
from rig.devices import MotionState
from rig.devices.link import PortUnavailable
from rig.doctor import Check
from rig.errors import ConfigError, DeviceError

if TYPE_CHECKING:
    from rig.devices.kinds import Opening

log = logging.getLogger(__name__)

# Command bytes (guide 5.e/5.f; Pololu protocol sends them with the MSB cleared after 0xAA, device number)
SET_TARGET = 0x84
SET_SPEED = 0x87
SET_ACCELERATION = 0x89
SET_PWM = 0x8A  # Mini Maestro only
GET_POSITION = 0x90
GET_MOVING_STATE = 0x93  # Mini Maestro only (buggy on the Micro Maestro, guide 5.e)
SET_MULTIPLE_TARGETS = 0x9F  # Mini Maestro only
GET_ERRORS = 0xA1
GO_HOME = 0xA2
STOP_SCRIPT = 0xA4
GET_SCRIPT_STATUS = 0xAE
POLOLU_START = 0xAA
CRC7_POLY = 0x91

# Error register bits (guide 4.e) -> (name, what to do)
ERROR_BITS: dict[int, tuple[str, str]] = {
    0: ("serial signal error", "the baud rate differs from the Maestro's: set controller.baudrate to its "
                               "fixed baud rate, or use the USB Command Port"),
    1: ("serial overrun error", "the Maestro's UART overflowed: lower the baud rate"),
    2: ("serial RX buffer full", "the Maestro lost received bytes: lower the baud rate"),
    3: ("serial CRC error", "a command arrived damaged, or 'Enable CRC' in the Maestro's Serial Settings "
                            "differs from controller.crc"),
    4: ("serial protocol error", "the Maestro received a malformed command: check controller.protocol, "
                                 "device_number and model against the Maestro, and the cable"),
    5: ("serial timeout", "the host was silent longer than the Maestro's serial Timeout"),
    6: ("script stack error", "a script on the Maestro failed: stop or fix it (Script tab)"),
    7: ("script call stack error", "a script on the Maestro failed: stop or fix it (Script tab)"),
    8: ("script program counter error", "a script on the Maestro failed: stop or fix it (Script tab)"),
}
SERIAL_TIMEOUT = 1 << 5
SCRIPT_ERRORS = (1 << 6) | (1 << 7) | (1 << 8)

MODELS: dict[str, int] = {"micro6": 6, "mini12": 12, "mini18": 18, "mini24": 24}
# The channel wired to the Mini Maestro's hardware PWM output (guide 4.a; channel 8 on the Mini Maestro 12
# is confirmed by Pololu's forum, 12 on the 18/24 is the guide's statement as recalled: see ADR 0011).
PWM_CHANNEL: dict[str, int] = {"mini12": 8, "mini18": 12, "mini24": 12}
TICK_MS = 10  # speed unit: 0.25 us per 10 ms at the default 20 ms servo period (guide 4.b)
OUTPUT_HIGH = 6000  # an output channel is high at a target/position >= 6000 (1500 us) (guide 4.b, 5.e)


def crc7(packet: bytes) -> int:
    """The Maestro's CRC-7 (guide 5.d): polynomial 0x91, computed LSB first."""
    crc = 0
    for byte in packet:
        crc ^= byte
        for _ in range(8):
            crc = (crc ^ CRC7_POLY) >> 1 if crc & 1 else crc >> 1
    return crc & 0x7F


def seven_bit(value: int) -> bytes:
    """A 14-bit value as the guide's low 7 bits, high 7 bits data bytes."""
    return bytes((value & 0x7F, (value >> 7) & 0x7F))


def describe_errors(bits: int) -> str:
    names = [ERROR_BITS[b][0] if b in ERROR_BITS else f"bit {b}" for b in range(16) if bits >> b & 1]
    return ", ".join(names)


# ---------------------------------------------------------------- rig file section (for config.py)


def port_of(settings: MaestroLinkConfig) -> str:
    """The serial port a rig file names (a simulated Maestro's port is its pty, given by its factory)."""
    if isinstance(settings, MaestroConfig):
        return settings.port
    raise ConfigError("controller: a simulated Maestro has no port of its own; open it through its kind")


def check_rig(settings: MaestroLinkConfig, rig: RigConfig) -> None:
    """What makes a rig file impossible on this Maestro, as a one-line ConfigError naming the field."""
    channels = MODELS[settings.model]
    used: dict[int, str] = {}
    for name, s in rig.servos.items():
        if s.channel >= channels:
            raise ConfigError(f"servos.{name}.channel: {s.channel}, but a {settings.model} Maestro has channels "
                              f"0..{channels - 1}")
        if s.slew < 25:
            raise ConfigError(f"servos.{name}.slew: {s.slew} us/s is slower than the Maestro's slowest speed "
                              "(25 us/s); use 25 or more")
        used[s.channel] = f"servos.{name}"
    for name, light in rig.lights.items():
        wiring = settings.lights.get(light.channel)
        if wiring is None:
            raise ConfigError(f"controller.lights: light '{name}' (channel {light.channel}) is not wired; add "
                              f"{light.channel}: {{channel: <Maestro channel>, mode: output|pwm|dimmer}}")
        where = f"controller.lights.{light.channel}.channel"
        if wiring.mode == "pwm":
            pwm = PWM_CHANNEL.get(settings.model)
            if pwm is None:
                raise ConfigError(f"controller.lights.{light.channel}.mode: pwm, but the Micro Maestro has no PWM "
                                  "output; use output or dimmer")
            if wiring.channel != pwm:
                raise ConfigError(f"{where}: {wiring.channel}, but the {settings.model}'s PWM output is channel {pwm}")
        elif wiring.channel >= channels:
            raise ConfigError(f"{where}: {wiring.channel}, but a {settings.model} Maestro has channels "
                              f"0..{channels - 1}")
        if wiring.channel in used:
            raise ConfigError(f"{where}: Maestro channel {wiring.channel} is already {used[wiring.channel]}")
        used[wiring.channel] = f"light '{name}'"


# ---------------------------------------------------------------- errors


class MaestroError(DeviceError):
    """The Maestro's error register had bits set; `bits` keeps them."""

    def __init__(self, message: str, bits: int) -> None:
        super().__init__(message)
        self.bits = bits


class MaestroLineError(MaestroError):
    """A serial error (signal, overrun, buffer, CRC, protocol): the Maestro ignored a command and went home."""


class MaestroScriptError(MaestroError):
    """A script running on the Maestro failed."""


class MaestroNoReply(DeviceError):
    """The Maestro did not answer a query at all."""


class MaestroLimitError(DeviceError):
    """A target outside the rig file's limits, or a servo that the Maestro's own settings stop short."""


# ---------------------------------------------------------------- the wire


class MaestroWire:
    """Frames commands in the configured protocol and reads replies; one exchange at a time.

    Every exchange ends with Get Errors, so its reply also proves the Maestro has processed all
    commands before it (they run in order); the register is cleared by that read (guide 4.e)."""

    def __init__(self, port: serial.SerialBase, name: str, settings: MaestroLinkConfig) -> None:
        self.port, self.name = port, name
        self.protocol, self.device_number, self.crc = settings.protocol, settings.device_number, settings.crc
        self.reply_timeout_s = settings.reply_timeout_s

    @classmethod
    def open(cls, url: str, settings: MaestroLinkConfig) -> MaestroWire:
        try:
            port = serial.serial_for_url(url, baudrate=settings.baudrate, timeout=settings.reply_timeout_s,
                                         write_timeout=2.0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortUnavailable(f"cannot open '{url}' ({e})") from None
        return cls(port, url, settings)

    def packet(self, command: int, data: bytes = b"") -> bytes:
        """One command packet (guide 5.c): compact `cmd data`, or `0xAA dev cmd&0x7F data`; + CRC-7 (5.d)."""
        if self.protocol == "pololu":
            raw = bytes((POLOLU_START, self.device_number, command & 0x7F)) + data
        else:
            raw = bytes((command,)) + data
        return raw + bytes((crc7(raw),)) if self.crc else raw

    def exchange(self, packets: Iterable[bytes], reply_len: int = 0) -> tuple[bytes, int]:
        """Send the packets and Get Errors; return the replies to the packets and the error register."""
        self.port.reset_input_buffer()  # a late reply to an earlier, timed-out exchange must not shift this one
        wire = b"".join(packets) + self.packet(GET_ERRORS)
        try:
            self.port.write(wire)
            reply = self._read(reply_len + 2)
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"Maestro at {self.name}: the serial port failed ({e}); check the USB cable") from None
        return reply[:reply_len], reply[reply_len] | reply[reply_len + 1] << 8

    def _read(self, n: int) -> bytes:
        data = bytes(self.port.read(n))  # returns early only at the port's timeout (reply_timeout_s)
        if len(data) < n:
            mode = (f"Pololu protocol, device number {self.device_number}" if self.protocol == "pololu"
                    else "compact protocol")
            raise MaestroNoReply(
                f"Maestro at {self.name} did not answer ({len(data)} of {n} reply bytes in "
                f"{self.reply_timeout_s:.1f} s; {mode}, CRC {'on' if self.crc else 'off'}): check its serial "
                "mode (USB Dual Port: the Command Port), baud rate, device number and 'Enable CRC'")
        return data

    def close(self) -> None:
        self.port.close()


# ---------------------------------------------------------------- the Motion driver


@dataclass(frozen=True)
class MovePlan:
    """Per-channel Maestro speeds (0.25 us / 10 ms) for one coordinated move, and when it should end."""

    speeds: dict[int, int]
    ticks: int  # 10 ms updates until the last channel arrives


def plan_move(start_q: dict[int, int], target_q: dict[int, int], duration_ms: int,
              slew_us_s: dict[int, int]) -> MovePlan:
    """Speeds that bring every channel to its target in the same number of 10 ms updates.

    The move takes `duration_ms`, or longer if a channel's slew limit needs it. Speeds are whole
    quarter-microseconds per update, at least 1: a channel that moves fewer quarter-microseconds than
    the move has updates arrives early, at the Maestro's slowest speed. A channel that is off (position
    0) has no known start; the Maestro jumps it to its target (guide 5.e, Go Home note)."""
    dist = {ch: abs(target_q[ch] - start_q.get(ch, 0)) for ch in target_q if start_q.get(ch, 0)}
    limit = {ch: max(1, slew_us_s[ch] * 4 * TICK_MS // 1000) for ch in dist}  # quarter-us per update
    ticks = max([math.ceil(duration_ms / TICK_MS)] + [math.ceil(d / limit[ch]) for ch, d in dist.items()])
    # the nearest whole speed: arrival within an update of the others (a quarter-us more or less is common)
    speeds = {ch: min(limit[ch], max(1, round(d / ticks))) for ch, d in dist.items() if d}
    arrive = max([math.ceil(d / speeds[ch]) for ch, d in dist.items() if d], default=0)
    return MovePlan(speeds, arrive)


class Maestro:
    """The Motion device on a Maestro: coordinated moves, lights, confirmed read-back."""

    retransmissions = 0  # the Maestro's protocol has no retransmission

    def __init__(self, wire: MaestroWire, settings: MaestroLinkConfig, rig: RigConfig) -> None:
        check_rig(settings, rig)
        self.wire, self.settings, self.rig = wire, settings, rig
        self.servos = {s.channel: s for s in rig.servos.values()}
        self._sentinel = min(self.servos)  # see _target_q
        self.servo_names = {s.channel: name for name, s in rig.servos.items()}
        self.lights = {light.channel: settings.lights[light.channel] for light in rig.lights.values()}
        self.light_names = {light.channel: name for name, light in rig.lights.items()}
        self._targets: dict[int, int] = {}  # servo channel -> us, as last commanded
        self._levels: dict[int, int] = {}  # rig light channel -> 0..255, as last commanded
        self._move_end = 0.0  # monotonic time the last move should be complete
        self._last_q: dict[int, int] = {}  # positions (quarter-us) of the last state read
        self._needs_restore = False
        self.restores = 0
        self.last_errors = 0  # the last non-zero error register seen (MotionState.notes)
        self.leftover_errors = 0  # what the register held at connect (from before this host)

    # ------------------------------------------------------------ connect

    @classmethod
    def connect(cls, settings: MaestroLinkConfig, rig: RigConfig, url: str | None = None) -> Maestro:
        """Open `url` (default: settings.port), check who answers and how it is set up."""
        wire = MaestroWire.open(url or port_of(settings), settings)
        try:
            ctl = cls(wire, settings, rig)
            ctl.setup()
        except BaseException:  # a failed set-up, Ctrl-C included: release the port; re-raised
            wire.close()
            raise
        return ctl

    def setup(self) -> None:
        """Clear what the error register holds from before, then read every used channel (proves the
        Maestro has them), set linear motion, and check each light channel's mode."""
        _, self.leftover_errors = self.wire.exchange([])
        if self.leftover_errors:
            log.info("Maestro at %s: cleared errors from before this host connected: %s", self.wire.name,
                     describe_errors(self.leftover_errors))
        if self.leftover_errors & SCRIPT_ERRORS:
            log.warning("Maestro at %s: its script failed before this host connected (%s); stop or fix it",
                        self.wire.name, describe_errors(self.leftover_errors & SCRIPT_ERRORS))
        channels = sorted(set(self.servos) | {w.channel for w in self.lights.values() if w.mode != "pwm"})
        _, errors = self.wire.exchange([self.wire.packet(GET_POSITION, bytes((ch,))) for ch in channels],
                                       2 * len(channels))
        if errors:
            raise MaestroLineError(
                f"Maestro at {self.wire.name} refused to report channels {channels[0]}..{channels[-1]} "
                f"({describe_errors(errors)}): is it a {self.settings.model}? check controller.model, "
                "protocol and device_number", errors)
        setup = [self.wire.packet(SET_ACCELERATION, bytes((ch,)) + seven_bit(0)) for ch in self.servos]
        setup += [self.wire.packet(SET_SPEED, bytes((w.channel,)) + seven_bit(0))
                  for w in self.lights.values() if w.mode != "pwm"]
        self._check(self.wire.exchange(setup)[1])
        for ch, wiring in self.lights.items():
            self._check_mode(ch, wiring)
        pos = self._positions(list(self.servos))
        off = [name for ch, name in self.servo_names.items() if pos[ch] == 0]
        if off:
            log.warning("Maestro at %s: servos %s send no pulses (their 'On startup or error' is Off): their first "
                        "move runs at full speed; set it to 'Go to' their park pulse", self.wire.name, ", ".join(off))

    def _check_mode(self, light: int, wiring: MaestroLight) -> None:
        """An Output channel ignores speed limits (guide 4.b): a slow target change that lands at once is
        an Output channel, one that creeps is a Servo channel. Both targets are below 1500 us, so an
        output stays low (the lamp off)."""
        if wiring.mode == "pwm":
            return
        ch, low, high = wiring.channel, 4000, 5000
        if wiring.mode == "dimmer":
            low = self._dimmer_q(wiring, 0)
            high = low + 400 if low < 4400 else low - 400
        probe = [self.wire.packet(SET_SPEED, bytes((ch,)) + seven_bit(0)),
                 self.wire.packet(SET_TARGET, bytes((ch,)) + seven_bit(low)),
                 self.wire.packet(SET_SPEED, bytes((ch,)) + seven_bit(1)),
                 self.wire.packet(SET_TARGET, bytes((ch,)) + seven_bit(high)),
                 self.wire.packet(GET_POSITION, bytes((ch,)))]
        reply, errors = self.wire.exchange(probe, 2)
        restore = [self.wire.packet(SET_SPEED, bytes((ch,)) + seven_bit(0)),
                   self.wire.packet(SET_TARGET, bytes((ch,)) + seven_bit(0 if wiring.mode == "output" else low))]
        self._check(errors | self.wire.exchange(restore)[1])
        is_output = int.from_bytes(reply, "little") == high
        name = self.light_names[light]
        if wiring.mode == "output" and not is_output:
            raise DeviceError(f"Maestro at {self.wire.name}: light '{name}' is wired as an output on channel {ch}, "
                              "but that channel is in Servo mode; set its Mode to Output in Maestro Control Center "
                              "(Channel Settings)")
        if wiring.mode == "dimmer" and is_output:
            raise DeviceError(f"Maestro at {self.wire.name}: light '{name}' is a servo-pulse dimmer on channel {ch}, "
                              "but that channel is in Output mode; set its Mode to Servo in Maestro Control Center "
                              "(Channel Settings)")

    # ------------------------------------------------------------ errors and restores

    def _check(self, errors: int) -> None:
        """After every exchange: a serial timeout is repaired at the next call; anything else is raised."""
        if not errors:
            return
        self.last_errors = errors
        self._needs_restore = True  # every error sent the Maestro's channels to their home positions (guide 4.e)
        if errors == SERIAL_TIMEOUT:
            log.warning("Maestro at %s: serial timeout (the host was silent longer than its Timeout); it went to "
                        "its home positions: re-applying pose and lights", self.wire.name)
            return
        serious = errors & ~SERIAL_TIMEOUT
        hints = dict.fromkeys(ERROR_BITS[b][1] for b in range(9) if serious >> b & 1)  # ordered, unique
        cls = MaestroScriptError if serious & SCRIPT_ERRORS and not serious & ~SCRIPT_ERRORS else MaestroLineError
        raise cls(f"Maestro at {self.wire.name} reports {describe_errors(errors)} (error register 0x{errors:04X}); "
                  f"it went to its home positions; {'; '.join(hints)}", errors)

    def _restore(self) -> None:
        if not self._needs_restore:
            return
        self._needs_restore = False
        self.restores += 1
        if self._levels:
            self._send_lights(self._levels)
        if self._targets:
            self._send_move(self._targets, self.rig.motion.move_ms)
            self.wait_idle(self.rig.motion.idle_timeout_s)

    # ------------------------------------------------------------ motion

    def move(self, targets: dict[int, int], duration_ms: int = 0) -> None:
        for ch, us in targets.items():
            servo = self.servos.get(ch)
            if servo is None:
                raise MaestroLimitError(f"no servo on channel {ch} in the rig file (servos use "
                                        f"{sorted(self.servos)})")
            if not servo.min <= us <= servo.max:
                raise MaestroLimitError(f"servo {self.servo_names[ch]} (channel {ch}): {us} us is outside the rig "
                                        f"file's limits {servo.min}..{servo.max}")
        self._restore()
        self._targets.update(targets)
        self._send_move(targets, duration_ms)

    def _target_q(self, ch: int, us: int) -> int:
        """The target in quarter-microseconds. One servo (the sentinel) is always sent a quarter-us off its
        pulse: a Maestro that reset (power cut, serial timeout) puts it at its home pulse, a whole us, which
        then differs from the target even when the pose is the park pose itself. So a reset always shows in
        the read-back, also for the lamps a reset turned off unseen (the PWM output has no read-back).
        A quarter-us is far below any servo's dead band; the reported position rounds it away."""
        if ch != self._sentinel:
            return 4 * us
        return 4 * us + 1 if us < self.servos[ch].max else 4 * us - 1

    def _send_move(self, targets: dict[int, int], duration_ms: int) -> None:
        target_q = {ch: self._target_q(ch, us) for ch, us in targets.items()}
        plan = plan_move(self._positions(list(target_q)), target_q, duration_ms,
                         {ch: self.servos[ch].slew for ch in target_q})
        packets = [self.wire.packet(SET_SPEED, bytes((ch,)) + seven_bit(s)) for ch, s in sorted(plan.speeds.items())]
        packets += self._target_packets(target_q)
        self._check(self.wire.exchange(packets)[1])
        self._move_end = time.monotonic() + plan.ticks * TICK_MS / 1000

    def _target_packets(self, target_q: dict[int, int]) -> list[bytes]:
        """Set Multiple Targets when the Mini Maestro can take them in one contiguous block (all start on the
        same update), else one Set Target per channel."""
        chans = sorted(target_q)
        if self.settings.model != "micro6" and len(chans) > 1 and chans[-1] - chans[0] == len(chans) - 1:
            data = bytes((len(chans), chans[0])) + b"".join(seven_bit(target_q[ch]) for ch in chans)
            return [self.wire.packet(SET_MULTIPLE_TARGETS, data)]
        return [self.wire.packet(SET_TARGET, bytes((ch,)) + seven_bit(target_q[ch])) for ch in chans]

    def _positions(self, channels: list[int]) -> dict[int, int]:
        """Positions in quarter-microseconds, as the Maestro reports them (guide 5.e, Get Position)."""
        chans = sorted(set(channels))
        reply, errors = self.wire.exchange([self.wire.packet(GET_POSITION, bytes((ch,))) for ch in chans],
                                           2 * len(chans))
        self._check(errors)
        return {ch: int.from_bytes(reply[2 * i:2 * i + 2], "little") for i, ch in enumerate(chans)}

    def wait_idle(self, timeout_s: float) -> MotionState:
        """Until every servo's read-back position equals its target. A servo that stays short of its target
        after the move's end was stopped by the Maestro's own Min/Max (or the Maestro reset): its target is
        sent once more, and if it stops short again that is a MaestroLimitError."""
        deadline = time.monotonic() + timeout_s
        resent = False
        last: dict[int, int] = {}
        while True:
            st = self.state()
            if not st.moving:
                return st
            now = time.monotonic()
            if now > self._move_end + 0.2 and self._last_q == last:
                stuck = {ch: self._last_q[ch] / 4 for ch, us in self._targets.items()
                         if self._last_q[ch] != self._target_q(ch, us)}
                if not resent:
                    log.warning("Maestro at %s: servos %s stopped short of their targets; sending them again",
                                self.wire.name, stuck)
                    resent = True
                    self.restores += 1
                    if self._levels:  # a reset also lost the lights, and the PWM output has no read-back
                        self._send_lights(self._levels)
                    self._send_move({ch: self._targets[ch] for ch in stuck}, 0)
                else:
                    ch, at = next(iter(stuck.items()))
                    s = self.servos[ch]
                    raise MaestroLimitError(
                        f"Maestro at {self.wire.name}: servo {self.servo_names[ch]} (channel {ch}) stops at {at:g} us, "
                        f"asked {self._targets[ch]} us: its Min/Max in Maestro Control Center (Channel Settings) "
                        f"must cover the rig file's {s.min}..{s.max} us")
            if now > deadline:
                raise DeviceError(f"Maestro at {self.wire.name}: servos still moving after {timeout_s:.0f} s; "
                                  "check for a blocked arm")
            last = self._last_q
            time.sleep(TICK_MS / 2000)  # the Maestro updates positions every 10 ms

    # ------------------------------------------------------------ lights

    @staticmethod
    def _dimmer_q(wiring: MaestroLight, level: int) -> int:
        return round(4 * (wiring.off_us + level * (wiring.full_us - wiring.off_us) / 255))

    def set_lights(self, levels: dict[int, int]) -> None:
        for light, level in levels.items():
            wiring = self.lights.get(light)
            if wiring is None:
                raise DeviceError(f"no light channel {light} in the rig file (lights use {sorted(self.lights)})")
            if not 0 <= level <= 255:
                raise DeviceError(f"light {self.light_names[light]}: level {level} is outside 0..255")
            if wiring.mode == "output" and level not in (0, 255):
                raise ConfigError(f"light {self.light_names[light]}: level {level}, but it is a Maestro output "
                                  "(on/off): use 0 or 255, or wire it as pwm or dimmer")
        self._restore()
        self._levels.update(levels)
        self._send_lights(levels)

    def _send_lights(self, levels: dict[int, int]) -> None:
        packets = []
        for light, level in sorted(levels.items()):
            wiring = self.lights[light]
            if wiring.mode == "pwm":
                on = round(level * wiring.pwm_period / 255)
                packets.append(self.wire.packet(SET_PWM, seven_bit(on) + seven_bit(wiring.pwm_period)))
            else:
                q = (OUTPUT_HIGH if level else 0) if wiring.mode == "output" else self._dimmer_q(wiring, level)
                packets.append(self.wire.packet(SET_TARGET, bytes((wiring.channel,)) + seven_bit(q)))
        self._check(self.wire.exchange(packets)[1])

    def _level(self, light: int, q: int) -> int:
        """A light's level from its channel's read-back position (pwm: as last set; it has no read-back)."""
        wiring = self.lights[light]
        if wiring.mode == "pwm":
            return self._levels.get(light, 0)
        if wiring.mode == "output":
            return 255 if q >= OUTPUT_HIGH else 0
        if q == 0:
            return 0  # no pulses: the dimmer is off
        level = (q / 4 - wiring.off_us) * 255 / (wiring.full_us - wiring.off_us)
        return min(255, max(0, round(level)))

    # ------------------------------------------------------------ state

    def state(self) -> MotionState:
        """Positions and lights read back now; a serial timeout seen on the way is repaired first."""
        st = self._query()
        if self._needs_restore:
            self._restore()
            st = self._query()
        return st

    def _query(self) -> MotionState:
        readable = {w.channel: light for light, w in self.lights.items() if w.mode != "pwm"}
        pos = self._positions(list(self.servos) + list(readable))
        self._last_q = pos
        n_servo = max(self.servos) + 1
        positions = tuple(round(pos[ch] / 4) if ch in self.servos else 0 for ch in range(n_servo))
        targets = tuple(self._targets.get(ch, positions[ch]) if ch in self.servos else 0 for ch in range(n_servo))
        moving = any(pos[ch] != self._target_q(ch, us) for ch, us in self._targets.items())
        n_light = max(self.lights, default=-1) + 1
        lights = tuple(self._level(i, pos.get(self.lights[i].channel, 0)) if i in self.lights else 0
                       for i in range(n_light))
        notes = tuple(describe_errors(self.last_errors).split(", ")) if self.last_errors else ()
        return MotionState(positions, targets, lights, moving, self.restores, notes)

    def park(self) -> None:
        """Lights off, servos to their park pulses at their slew limits."""
        self.set_lights({light: 0 for light in self.lights})
        self.move({ch: s.park for ch, s in self.servos.items()}, 0)

    def close(self) -> None:
        self.wire.close()


# ---------------------------------------------------------------- doctor


def maestro_checks(settings: MaestroLinkConfig, rig: RigConfig, url: str | None = None) -> list[Check]:
    """What `rig doctor` can read back from the Maestro, and what the operator must set in Maestro Control
    Center because no serial command reads or writes it (serial mode, timeout, channel modes, limits)."""
    name = f"maestro {url or port_of(settings)}"
    checks: list[Check] = []
    try:
        ctl = Maestro.connect(settings, rig, url)
    except (DeviceError, ConfigError) as e:
        return [Check(name, False, str(e)), *operator_settings(settings, rig)]
    try:
        checks.append(Check(name, True, f"answers ({settings.protocol} protocol"
                                        + (f", device number {settings.device_number}" if settings.protocol == "pololu"
                                           else "") + f", CRC {'on' if settings.crc else 'off'})"))
        left = ctl.leftover_errors
        checks.append(Check(f"{name}: error register", not left & ~SERIAL_TIMEOUT,
                            f"cleared; it held {describe_errors(left)} from before" if left else "no errors"))
        reply, errors = ctl.wire.exchange([ctl.wire.packet(GET_SCRIPT_STATUS)], 1)
        ctl._check(errors)
        running = reply == b"\x00"  # 0x00: running, 0x01: stopped (guide 5.f)
        checks.append(Check(f"{name}: script", not running, "a script is running: it can move servos behind the "
                            "host's back; stop it and untick 'Run script on startup'" if running else "stopped"))
        pos = ctl._positions(list(ctl.servos))
        off = [f"{ctl.servo_names[ch]} (channel {ch})" for ch, q in pos.items() if q == 0]
        checks.append(Check(f"{name}: servos", not off,
                            f"{', '.join(off)} send no pulses: set 'On startup or error' to 'Go to' the park pulse"
                            if off else "all send pulses: " + ", ".join(f"{ctl.servo_names[ch]} {q / 4:g} us"
                                                                        for ch, q in sorted(pos.items()))))
        checks.append(Check(f"{name}: light channel modes", True,
                            ", ".join(f"{ctl.light_names[i]}: {w.mode} on channel {w.channel}"
                                      + (" (no read-back: check the lamp with rig jog)" if w.mode == "pwm"
                                         else " (mode checked)")
                                      for i, w in sorted(ctl.lights.items())) or "no lights"))
    except DeviceError as e:
        checks.append(Check(name, False, str(e)))
    finally:
        ctl.close()
    return checks + operator_settings(settings, rig)


def operator_settings(settings: MaestroLinkConfig, rig: RigConfig) -> list[Check]:
    """The Maestro settings this host depends on but cannot read: one line each, for the operator."""
    def say(what: str, detail: str) -> Check:
        return Check(f"set in Maestro Control Center: {what}", True, detail, needed=False)

    serial_mode = ("USB Dual Port (the host opens the Command Port, e.g. /dev/ttyACM0), or UART fixed baud rate "
                   f"{settings.baudrate} with the host on a USB-serial adapter wired to RX/TX")
    if settings.protocol == "pololu":
        serial_mode += f"; USB Chained or UART to share the line; Device Number {settings.device_number}"
    servo_lines = "; ".join(f"channel {s.channel} ({name}): Mode Servo, Min <= {s.min}, Max >= {s.max}, "
                            f"On startup or error: Go to {s.park}" for name, s in sorted(rig.servos.items(),
                                                                                          key=lambda kv: kv[1].channel))
    light_lines = "; ".join(
        f"channel {w.channel} ({name}): " + {"output": "Mode Output, On startup or error: Go to 0 (off)",
                                             "pwm": "the PWM output (nothing to set; errors do not switch it off)",
                                             "dimmer": f"Mode Servo, Min/Max covering {min(w.off_us, w.full_us)}.."
                                                       f"{max(w.off_us, w.full_us)}, On startup or error: "
                                                       f"Go to {w.off_us}"}[w.mode]
        for name, light in sorted(rig.lights.items()) if (w := settings.lights.get(light.channel)) is not None)
    return [
        say("Serial Settings", f"{serial_mode}; Enable CRC {'on' if settings.crc else 'off'}"),
        say("Serial timeout", f"Timeout {settings.serial_timeout_s:.2f} s (0 = never): after that long without a "
                              "command the Maestro sends every channel to its 'On startup or error' value (servos to "
                              "park, lamps off); the host re-applies pose and lights when it notices"),
        say("servo channels", servo_lines + "; Speed 0, Acceleration 0 (the host sets speeds per move); "
                                            "Period 20 ms (the host's speed units assume it)"),
        say("light channels", light_lines or "no lights"),
        say("script", "none running (untick 'Run script on startup')"),
    ]


def open_controller(opening: Opening) -> Maestro:
    """`kind: maestro`: a Pololu Maestro on the rig file's serial port."""
    config = opening.rig.controller
    assert isinstance(config, MaestroConfig)  # the factory table chose this by kind
    try:
        check_rig(config, opening.rig)
        motion = Maestro.connect(config, opening.rig)
    except PortUnavailable as e:
        raise ConfigError(f"{opening.rig_path}: controller.port: {e}; check the cable or fix the port") from None
    except ConfigError as e:
        raise ConfigError(f"{opening.rig_path}: {e}") from None
    opening.stack.callback(motion.close)
    return motion
