"""Driver for the rigctl controller (servos + lights), real board or simulated, over a `Link`.

On connect it resynchronises, checks the protocol version and channel counts, makes the
controller's stored limits equal the rig file's and sets a fresh session token (PROTOCOL.md
"Sessions"). Every `status` carries the token back: one that differs means the controller reset,
whether or not its `!boot` line arrived. Then, as after a `!boot` or `!safe` event, the driver
re-applies limits, token, pose and lights before anything else, and counts it in
`MotionState.restores` so the engine knows the state it confirmed earlier did not hold.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING

from rig.command import rig_command
from rig.config import RigConfig, RigctlConfig, RigctlLinkConfig
from rig.devices import MotionState
from rig.devices.link import Link, PortUnavailable
from rig.errors import ConfigError, DeviceError

if TYPE_CHECKING:
    from rig.devices.kinds import Opening

log = logging.getLogger(__name__)
PROTOCOL_VERSION = 1


def _fields(payload: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in payload.split() if "=" in part)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",")) if text else ()


# The status flags (PROTOCOL.md "Status flags"), in words for the operator.
FLAG_NOTES = {0x01: "EEPROM defaults restored at boot", 0x02: "safe state after host silence",
              0x04: "booted by the watchdog"}


def _notes(flags: int) -> tuple[str, ...]:
    known = tuple(text for bit, text in FLAG_NOTES.items() if flags & bit)
    unknown = flags & ~sum(FLAG_NOTES)
    return known + ((f"flags {unknown:#x}",) if unknown else ())


class RigController:
    """The Motion device: coordinated servo moves and light levels through the checked link."""

    def __init__(self, link: Link, rig: RigConfig) -> None:
        self.link, self.rig = link, rig
        self.link.on_event = self._on_event
        self._targets: dict[int, int] = {}
        self._lights: dict[int, int] = {}
        self._needs_restore = False
        self._connected = False  # a banner before setup is done is just this connection's start
        self._token = 0  # the session token this host set; 0: none yet
        self.resets_seen = 0
        self.restores = 0

    @classmethod
    def connect(cls, url: str, rig: RigConfig, baudrate: int = 115200) -> RigController:
        c = rig.controller
        if not isinstance(c, RigctlLinkConfig):
            raise ConfigError(f"controller: kind {c.kind} does not speak the rigctl protocol")
        ctl = cls(Link.open(url, baudrate, reply_timeout_s=c.reply_timeout_s, give_up_s=c.give_up_s), rig)
        ctl.setup()
        return ctl

    def setup(self) -> None:
        """Check who answers, then make its limits and timeout the rig file's."""
        info = _fields(self.link.resync())
        if int(info.get("proto", -1)) != PROTOCOL_VERSION:
            raise DeviceError(f"controller at {self.link.name} speaks protocol {info.get('proto')}, "
                              f"this host speaks {PROTOCOL_VERSION}; flash matching firmware "
                              f"({rig_command()} firmware flash)")
        servos, lights = int(info.get("servos", 0)), int(info.get("lights", 0))
        need_s = max(s.channel for s in self.rig.servos.values()) + 1
        need_l = max((light.channel for light in self.rig.lights.values()), default=-1) + 1
        if servos < need_s or lights < need_l:
            raise DeviceError(f"controller at {self.link.name} has {servos} servo and {lights} light channels; "
                              f"the rig file needs {need_s} and {need_l}")
        # The token first: a reset at any point after it (even mid-setup) shows in every later status.
        old, self._token = self._token, random.randrange(1, 65536)
        while self._token == old:  # a fresh token every time: an old one must never confirm a new state
            self._token = random.randrange(1, 65536)
        self.link.command(f"session {self._token}")
        for name, s in self.rig.servos.items():
            want = f"ch={s.channel} min={s.min} max={s.max} park={s.park} slew={s.slew}"
            if self.link.command(f"limit {s.channel}") != want:
                log.info("setting limits of %s: %s", name, want)
                self.link.command(f"limit {s.channel} {s.min} {s.max} {s.park} {s.slew}")
        assert isinstance(self.rig.controller, RigctlLinkConfig)  # connect() checked it
        self.link.command(f"timeout {self.rig.controller.host_timeout_ms}")
        self._needs_restore = False
        self._connected = True

    @property
    def retransmissions(self) -> int:
        return self.link.retransmissions

    @property
    def retransmission_reasons(self) -> dict[str, int]:
        return dict(self.link.retransmission_reasons)

    def _on_event(self, event: str) -> None:
        if not self._connected:
            log.info("controller event while connecting: %s", event)
            return
        if event.startswith("boot"):
            log.warning("controller reset (%s): re-applying limits, pose and lights", event)
            self.resets_seen += 1
            self._needs_restore = True
        elif event.startswith("safe"):
            log.warning("controller entered its safe state (%s): re-applying pose and lights", event)
            self._needs_restore = True
        elif event.startswith("eeprom"):
            log.warning("controller restored default limits (%s)", event)
            self._needs_restore = True

    def _restore(self) -> None:
        self.link.poll_events()
        if not self._needs_restore:
            return
        self._connected = False  # until setup() is through, a failure leaves the restore pending
        self.restores += 1
        self.setup()
        if self._targets:
            self._send_move(self._targets, self.rig.motion.move_ms)
            self.wait_idle(self.rig.motion.idle_timeout_s)
        if self._lights:
            self._send_lights(self._lights)

    def _send_move(self, targets: dict[int, int], duration_ms: int) -> int:
        args = " ".join(f"{ch}:{us}" for ch, us in sorted(targets.items()))
        return int(self.link.command(f"move {duration_ms} {args}") or 0)

    def _send_lights(self, levels: dict[int, int]) -> None:
        self.link.command("light " + " ".join(f"{ch}:{v}" for ch, v in sorted(levels.items())))

    def move(self, targets: dict[int, int], duration_ms: int = 0) -> None:
        self._restore()
        self._targets.update(targets)
        self._send_move(targets, duration_ms)

    def set_lights(self, levels: dict[int, int]) -> None:
        self._restore()
        self._lights.update(levels)
        self._send_lights(levels)

    def state(self) -> MotionState:
        """The controller's state now; a reset or safe state seen on the way is repaired first."""
        st = self._query()
        if self._needs_restore:
            self._restore()
            st = self._query()
        return st

    def _query(self) -> MotionState:
        f = self._status_fields()
        if self._connected and not self._needs_restore and f.get("session") != str(self._token):
            log.warning("controller at %s reports session %s, not ours (%d): it reset (its banner was lost); "
                        "re-applying limits, pose and lights", self.link.name, f.get("session"), self._token)
            self.resets_seen += 1
            self._needs_restore = True
        return MotionState(_ints(f["pos"]), _ints(f["target"]), _ints(f["light"]), f["moving"] == "1",
                           self.restores, _notes(int(f["flags"], 16)))

    def _status_fields(self, tries: int = 3) -> dict[str, str]:
        """A `status` reply whose fields parse. A reply can pass its CRC-16 and still be damaged (a
        collision on a noisy line): ask again under a new sequence number, which the controller executes
        afresh instead of resending its cached copy."""
        for _ in range(tries):
            payload = self.link.command("status")
            f = _fields(payload)
            try:
                for key in ("pos", "target", "light"):
                    _ints(f[key])
                int(f["flags"], 16)
                if f["moving"] in ("0", "1"):
                    return f
            except (KeyError, ValueError):
                pass
            log.warning("controller at %s sent a damaged status that passed its CRC (%r); asking again",
                        self.link.name, payload)
        raise DeviceError(f"controller at {self.link.name}: {tries} status replies in a row did not parse; "
                          f"check the cable and that the firmware matches this host ({rig_command()} doctor)")

    def wait_idle(self, timeout_s: float) -> MotionState:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.state()
            if not st.moving:
                return st
            if time.monotonic() > deadline:
                raise DeviceError(f"controller at {self.link.name}: servos still moving after {timeout_s:.0f} s; "
                                  "check for a blocked arm")
            time.sleep(0.005)

    def park(self) -> None:
        self._lights = {}
        self._targets = {}
        self.link.command("park")

    def close(self) -> None:
        self.link.close()


def open_controller(opening: Opening) -> RigController:
    """`kind: rigctl`: the firmware on a real board, on the rig file's serial port."""
    config = opening.rig.controller
    assert isinstance(config, RigctlConfig)
    try:
        motion = RigController.connect(config.port, opening.rig, config.baudrate)
    except PortUnavailable as e:
        raise ConfigError(f"{opening.rig_path}: controller.port: {e}; check the cable or fix the port") from None
    opening.stack.callback(motion.close)
    return motion
