"""Servo limits live in EEPROM: they survive resets, and a damaged image falls back to defaults."""

import binascii

import pytest
from fwsim import command, status, wait_event

BOOT = r"boot fw=\d+\.\d+\.\d+ proto=1 servos=\d+ lights=\d+ cause=power"
DEFAULT_LIMIT = "ok ch=0 min=1000 max=2000 park=1500 slew=1000"


def flags(s) -> int:
    return int(status(s)["flags"], 16)


def test_limits_survive_power_cycle_and_restart(start_sim):
    sim = start_sim()
    s = sim.connect()
    assert flags(s) & 0x01, "a blank EEPROM must be reported as defaults restored"
    assert command(s, "limit 2 900 2100 1400 2000") == "ok"

    sim.power_cycle()  # the MCU reboots, EEPROM contents stay
    wait_event(s, BOOT)
    assert flags(s) & 0x01 == 0
    assert b"eeprom defaults" not in s.events
    assert command(s, "limit 2") == "ok ch=2 min=900 max=2100 park=1400 slew=2000"
    # at boot every servo is driven at its (stored) park pulse
    now = sim.sim_time_us()
    assert abs(sim.pins(fresh_after_us=now + 60_000)["servo"][2]["last"] - 1400) <= 8
    assert status(s)["pos"].split(",")[2] == "1400"

    sim.stop()  # rigsim saves the EEPROM image on exit
    again = start_sim(eeprom=sim.eeprom_path)
    s2 = again.connect()
    assert command(s2, "limit 2") == "ok ch=2 min=900 max=2100 park=1400 slew=2000"
    assert flags(s2) & 0x01 == 0


def _flip_record_byte(img: bytearray) -> None:
    img[5] ^= 0x40


def _future_version(img: bytearray) -> None:
    img[0] = 2  # a layout this firmware does not know, with a CRC that matches it
    crc = binascii.crc_hqx(bytes(img[:33]), 0xFFFF)
    img[33:35] = crc.to_bytes(2, "little")


def _erased(img: bytearray) -> None:
    img[:] = b"\xff" * len(img)


@pytest.mark.parametrize("damage", [_flip_record_byte, _future_version, _erased])
def test_damaged_eeprom_restores_defaults_and_says_so(start_sim, damage):
    sim = start_sim()
    s = sim.connect()
    assert command(s, "limit 0 1100 1900 1600 300") == "ok"
    sim.stop()
    img = bytearray(sim.eeprom_path.read_bytes())
    damage(img)
    sim.eeprom_path.write_bytes(bytes(img))

    # --wait-host keeps the MCU in reset until we are listening, so the boot events are seen
    damaged = start_sim(eeprom=sim.eeprom_path, wait_host=True)
    s = damaged.open()
    s.send(b"")
    wait_event(s, BOOT)
    wait_event(s, "eeprom defaults")
    assert command(s, "limit 0") == DEFAULT_LIMIT
    assert flags(s) == 0x01
    damaged.stop()

    # the defaults were written back: the next boot is clean
    clean = start_sim(eeprom=sim.eeprom_path, wait_host=True)
    s = clean.open()
    s.send(b"")
    wait_event(s, BOOT)
    assert command(s, "limit 0") == DEFAULT_LIMIT
    assert b"eeprom defaults" not in s.events
    assert flags(s) == 0


def test_reset_command_reboots_through_watchdog(sim):
    s = sim.connect()
    assert command(s, "light 0:50") == "ok"
    assert command(s, "reset") == "ok"
    wait_event(s, r"boot fw=\S+ proto=1 servos=\d+ lights=\d+ cause=watchdog")
    st = status(s)
    assert int(st["flags"], 16) & 0x04
    assert st["light"].startswith("0,")
