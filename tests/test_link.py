"""The host link over a lossy line: lost and corrupted replies are retransmitted with the same sequence
number and never execute twice; a controller reset mid-session is detected and the rig restored.
Run against the simulated controller (the firmware's core built for the PC) and the real firmware in simavr."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator

import pytest
import serial
from conftest import REPO

from rig.config import load_rig
from rig.devices.link import Link
from rig.devices.rigctl import RigController
from rig.errors import DeviceError
from rig.sim.avr import AvrSimulator
from rig.sim.hostfw import HostFirmware


class LossyProxy:
    """A pty in front of a controller port that can drop or corrupt the controller's reply lines."""

    def __init__(self, upstream: str) -> None:
        self.up = serial.Serial(upstream, 115200, timeout=0, write_timeout=2)
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.mangle: Callable[[bytes], bytes | None] = lambda line: line
        self.replies_seen: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master, self.up.fileno()], [], [], 0.01)
            if self.master in ready:
                self.up.write(os.read(self.master, 4096))
            if self.up.fileno() in ready:
                buf += self.up.read(4096)
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if line.startswith(b"#"):
                        self.replies_seen.append(line)
                    out = self.mangle(line) if line.startswith(b"#") else line
                    if out is not None:
                        os.write(self.master, out + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.up.close()
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture(params=["host", "firmware"])
def controller(request: pytest.FixtureRequest) -> Iterator[str]:
    """The port of a running controller: the firmware's core built for the PC, or the AVR firmware in simavr."""
    if request.param == "host":
        host = HostFirmware().start()
        yield host.port
        host.stop()
    else:
        avr = AvrSimulator()
        yield avr.port
        avr.stop()


def _drop_first(matching: bytes) -> Callable[[bytes], bytes | None]:
    state = {"dropped": False}

    def mangle(line: bytes) -> bytes | None:
        if matching in line and not state["dropped"]:
            state["dropped"] = True
            return None
        return line
    return mangle


def _corrupt_first(matching: bytes) -> Callable[[bytes], bytes | None]:
    state = {"done": False}

    def mangle(line: bytes) -> bytes | None:
        if matching in line and not state["done"]:
            state["done"] = True
            return line.replace(b"ok", b"ox", 1)
        return line
    return mangle


def _record_events(link: Link) -> list[str]:
    """Every intact event the link receives, in order (the previous handler still gets them)."""
    seen: list[str] = []
    handler = link.on_event

    def record(event: str) -> None:
        seen.append(event)
        handler(event)
    link.on_event = record
    return seen


def _wait_for_event(link: Link, seen: list[str], prefix: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(e.startswith(prefix) for e in seen):
        assert time.monotonic() < deadline, f"no !{prefix} event within {timeout_s} s (saw {seen})"
        link.poll_events(0.05)


@pytest.mark.parametrize("fault", [_drop_first, _corrupt_first], ids=["lost-reply", "corrupted-reply"])
def test_a_lost_or_corrupted_reply_is_retransmitted_and_executes_once(controller: str, fault) -> None:  # type: ignore[no-untyped-def]
    proxy = LossyProxy(controller)
    try:
        link = Link.open(proxy.port, reply_timeout_s=0.3)
        events = _record_events(link)
        link.resync()
        link.command("limit 0 1000 2000 1500 1000")
        link.command("move 0 0:1000")
        _wait_for_event(link, events, "done")
        proxy.mangle = fault(b"ok 1000")  # the reply to the 1000 us move below: 1000 ms at 1000 us/s
        assert link.command("move 0 0:2000") == "1000"
        assert link.retransmissions == 1
        # Executed once: the retransmission goes out up to 0.3 s into the move, where a second execution
        # would have answered a shorter duration than the first reply's 1000 ms.
        moves = [r for r in proxy.replies_seen if r.startswith(f"#{link.seq} ".encode())]
        assert len(moves) == 2 and moves[0] == moves[1]  # the second is the cached reply, byte for byte
        link.close()
    finally:
        proxy.close()


def test_a_controller_reset_mid_session_is_detected_and_the_rig_restored(controller: str) -> None:
    rig = load_rig(REPO / "calibration" / "sim-rig.yaml")
    ctl = RigController(Link.open(controller, reply_timeout_s=0.5), rig)
    ctl.setup()
    pose = rig.pose_targets("left")
    ctl.move(pose, 100)
    ctl.wait_idle(10)
    ctl.set_lights({0: 200, 1: 90})
    ctl.link.command("reset")  # the watchdog reboots the controller: limits stay, pose and lights are lost
    state = ctl.wait_idle(10)  # the driver sees the reset (banner or session token) and restores before reporting
    assert ctl.resets_seen == 1
    assert state.lights[:2] == (200, 90)
    assert {ch: state.positions[ch] for ch in pose} == pose
    ctl.close()


def test_after_host_silence_the_controller_goes_safe_and_the_driver_relights_and_reposes(controller: str) -> None:
    rig = load_rig(REPO / "calibration" / "sim-rig.yaml").model_copy(deep=True)
    ctl = RigController(Link.open(controller, reply_timeout_s=0.5), rig)
    ctl.setup()
    events = _record_events(ctl.link)
    pose = rig.pose_targets("right_high")
    ctl.move(pose, 0)
    ctl.wait_idle(10)
    ctl.set_lights({0: 120, 1: 30})
    ctl.link.command("timeout 200")
    _wait_for_event(ctl.link, events, "safe")  # silence: the controller says it went safe ...
    raw = ctl.link.command("status")  # ... and is: lights off, safe flag set (read past the driver)
    assert " light=0,0 " in raw and int(raw.split("flags=")[1].split()[0], 16) & 0x02, raw
    restores = ctl.restores
    state = ctl.state()  # the driver restores pose and lights before it reports
    assert ctl.restores == restores + 1
    assert state.lights[:2] == (120, 30)
    assert {ch: state.positions[ch] for ch in pose} == pose
    raw = ctl.link.command("status")
    assert not int(raw.split("flags=")[1].split()[0], 16) & 0x02 and " light=120,30 " in raw, raw
    ctl.close()


def _drop_replies(n: int) -> Callable[[bytes], bytes | None]:
    """Lose the controller's next n reply lines, then pass everything."""
    state = {"left": n}

    def mangle(line: bytes) -> bytes | None:
        if state["left"]:
            state["left"] -= 1
            return None
        return line
    return mangle


def test_retransmission_goes_on_while_the_controller_answers(controller: str) -> None:
    # Twelve replies in a row lost (a bad stretch of a noisy line): the old five retries gave up here.
    proxy = LossyProxy(controller)
    try:
        link = Link.open(proxy.port, reply_timeout_s=0.1)
        link.resync()
        proxy.mangle = _drop_replies(12)
        assert link.command("status").startswith("ms=")
        assert link.retransmissions == 12
        link.close()
    finally:
        proxy.close()


def test_retransmission_gives_up_when_the_controller_is_silent(controller: str) -> None:
    proxy = LossyProxy(controller)
    try:
        link = Link.open(proxy.port, reply_timeout_s=0.1, give_up_s=1.0)
        link.resync()
        proxy.mangle = lambda line: None  # the controller's replies never arrive
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="did not answer 'status'.*powered and connected"):
            link.command("status")
        assert 1.0 <= time.monotonic() - t0 < 5
        link.close()
    finally:
        proxy.close()


def _garble_first_status(replacement: bytes, printable: bool) -> Callable[[bytes], bytes | None]:
    """The first status reply with `pos=1` changed to `pos=<replacement>` under a CRC that matches the damaged
    text: printable, a CRC-16 collision; else, as a host that decodes bytes >= 0x80 alike would see it."""
    from rig.devices.link import crc16

    state = {"done": False}

    def mangle(line: bytes) -> bytes | None:
        if b" ok ms=" in line and not state["done"]:
            state["done"] = True
            body = line.rpartition(b"*")[0].replace(b"pos=1", b"pos=" + replacement, 1)
            seen = body if printable else body.decode("ascii", "replace").encode("ascii", "replace")
            return body + b"*%04X" % crc16(seen)
        return line
    return mangle


@pytest.fixture
def controller_behind_proxy() -> Iterator[tuple[RigController, LossyProxy]]:
    host = HostFirmware().start()
    proxy = LossyProxy(host.port)
    ctl = RigController(Link.open(proxy.port, reply_timeout_s=0.3), load_rig(REPO / "calibration" / "sim-rig.yaml"))
    ctl.setup()
    yield ctl, proxy
    ctl.close()
    proxy.close()
    host.stop()


def test_a_reply_with_a_byte_outside_ascii_is_damaged_whatever_its_crc(controller_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    ctl, proxy = controller_behind_proxy
    proxy.mangle = _garble_first_status(b"\xb1", printable=False)
    before = ctl.link.retransmissions
    state = ctl.state()
    assert all(400 <= p <= 2600 for p in state.positions)
    assert ctl.link.retransmissions == before + 1  # refused as damaged and sent again, not parsed


def test_a_status_reply_that_passes_its_crc_but_does_not_parse_is_asked_again(controller_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    ctl, proxy = controller_behind_proxy
    proxy.mangle = _garble_first_status(b"x", printable=True)
    state = ctl.state()  # a traceback before: ValueError: invalid literal for int() ... 'x500'
    assert all(400 <= p <= 2600 for p in state.positions)


def test_err_8_busy_is_sent_again_not_raised(controller_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    """`err 8 busy` (PROTOCOL.md "Flow"): the controller had no room to answer and did not execute the line."""
    from rig.devices.link import crc16

    ctl, proxy = controller_behind_proxy
    busy = {"left": 3}

    def answer_busy(line: bytes) -> bytes | None:
        if b" ok ms=" in line and busy["left"]:
            busy["left"] -= 1
            body = line.split(b" ", 1)[0] + b" err 8 busy"
            return body + b"*%04X" % crc16(body)
        return line
    proxy.mangle = answer_busy
    before = ctl.link.retransmissions
    ctl.state()  # before: ControllerError "controller refused 'status': error 8 busy"
    assert ctl.link.retransmissions == before + 3
