"""The Python twin speaks firmware/PROTOCOL.md: the same conformance vectors the AVR firmware passes,
plus idempotent retransmission and recovery as the host driver sees them."""

from __future__ import annotations

import sys

import serial
from conftest import REPO

from rig.devices.link import Link
from rig.sim.twin import Controller, TwinServer

sys.path.insert(0, str(REPO / "firmware" / "vectors"))
import runner


def test_conformance_vectors_pass_on_the_twin() -> None:
    twin = TwinServer().start()
    try:
        failures = runner.run_vectors(twin.port, REPO / "firmware" / "vectors")
    finally:
        twin.stop()
    assert failures == []


class ManualClock:
    """The twin's clock, advanced by the test: motion is checked at exact instants, no sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_sequence_number_is_answered_from_cache_and_never_moves_twice() -> None:
    clock = ManualClock()
    twin = TwinServer(Controller(clock=clock)).start()
    try:
        with serial.Serial(twin.port, 115200, timeout=0.05, write_timeout=1) as port:
            s = runner.Session(port)  # replies in order, events (the boot banner) put aside
            s.send(runner.frame(7, "move 400 0:1900"))
            first = s.reply()
            with twin.lock:
                clock.now += 0.2  # half way: a re-executed move would restart its 400 ms from here
                assert abs(twin.controller.physical()[0][0] - 1700) < 0.01
            s.send(runner.frame(7, "move 400 0:1900"))
            second = s.reply()
            assert first == second and first.startswith(b"#7 ok ")
            with twin.lock:
                clock.now += 0.2
                assert abs(twin.controller.physical()[0][0] - 1900) < 0.01  # on the first move's schedule
    finally:
        twin.stop()


def test_runner_takes_the_argument_edges_from_protocol_md(tmp_path) -> None:
    # PROTOCOL.md's range table is the one definition of the edges: in a copy that narrows the
    # timeout range, the twin's (correct) "ok" for 3600000 must fail exactly that row.
    text = (REPO / "firmware" / "PROTOCOL.md").read_text()
    changed = text.replace("| `timeout {}` | 0..3600000 |", "| `timeout {}` | 0..3599999 |")
    assert changed != text
    (tmp_path / "PROTOCOL.md").write_text(changed)
    twin = TwinServer().start()
    try:
        with serial.Serial(twin.port, 115200, timeout=0.05, write_timeout=2) as port:
            failures = runner.run_edges(runner.Session(port), tmp_path / "PROTOCOL.md")
    finally:
        twin.stop()
    assert len(failures) == 1 and "'> timeout 3600000'" in failures[0], failures


def test_link_survives_a_controller_reset_between_commands() -> None:
    twin = TwinServer().start()
    try:
        link = Link.open(twin.port, reply_timeout_s=0.2)
        assert "proto=1" in link.resync()
        link.command("light 0:200")
        with twin.lock:
            twin.controller.boot("watchdog")  # what a brown-out would do
        events: list[str] = []
        link.on_event = events.append
        assert link.command("status").split(" light=")[1].startswith("0,0")  # the reset turned lights off
        assert any(e.startswith("boot ") and "cause=watchdog" in e for e in events)
        link.close()
    finally:
        twin.stop()
