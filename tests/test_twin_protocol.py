"""The Python twin speaks firmware/PROTOCOL.md: the same conformance vectors the AVR firmware passes,
plus idempotent retransmission and recovery as the host driver sees them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import serial

from conftest import REPO
from rig.devices.link import Link, frame
from rig.sim.twin import TwinServer

sys.path.insert(0, str(REPO / "firmware" / "vectors"))
import runner  # noqa: E402  (firmware/vectors/runner.py: one runner for twin and firmware)


def test_conformance_vectors_pass_on_the_twin() -> None:
    twin = TwinServer().start()
    try:
        failures = runner.run_vectors(twin.port, REPO / "firmware" / "vectors")
    finally:
        twin.stop()
    assert failures == []


def test_a_repeated_sequence_number_is_answered_from_cache_and_never_moves_twice() -> None:
    twin = TwinServer().start()
    try:
        port = serial.Serial(twin.port, 115200, timeout=1, write_timeout=1)
        port.write(b"\n")
        time.sleep(0.05)
        port.reset_input_buffer()
        port.write(frame(7, "move 400 0:1900"))
        first = port.readline()
        time.sleep(0.2)  # half way: a re-executed move would restart its 400 ms from here
        port.write(frame(7, "move 400 0:1900"))
        second = port.readline()
        assert first == second and first.startswith(b"#7 ok ")
        time.sleep(0.25)
        pulses, _ = twin.physical()
        assert pulses[0] == 1900  # arrived on the first move's schedule
        port.close()
    finally:
        twin.stop()


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
