"""The Maestro backend against Pololu's Maestro user's guide.

Byte-level cases hold the simulated Maestro to the guide (each names its section; the byte strings
are the guide's own examples where it gives one); driver cases run the real driver over the pty.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from rig.config import MaestroConfig, MaestroLight, RigConfig, load_rig
from rig.devices import maestro as drv
from rig.devices.maestro import Maestro
from rig.errors import ConfigError, DeviceError
from rig.sim import maestro as sim
from rig.sim.maestro import ChannelSettings, DeviceSettings, LampWiring, MaestroSimulator

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def raw(settings: DeviceSettings) -> Iterator[tuple[MaestroSimulator, serial.Serial]]:
    maestro = MaestroSimulator(settings).start()
    try:
        with serial.Serial(maestro.port, 115200, timeout=0.2, write_timeout=2) as port:
            yield maestro, port
    finally:
        maestro.stop()


def ask(port: serial.Serial, data: bytes, n: int = 0) -> bytes:
    port.write(data)
    return bytes(port.read(n)) if n else b""


def errors(port: serial.Serial) -> int:
    return int.from_bytes(ask(port, b"\xa1", 2), "little")


def position(port: serial.Serial, ch: int) -> int:
    return int.from_bytes(ask(port, bytes((0x90, ch)), 2), "little")


# ---------------------------------------------------------------- the simulated Maestro, byte for byte


def test_set_target_and_get_position_compact_5e() -> None:
    """5.e Set Target: 0x84, 0x02, 0x70, 0x2E sets channel 2 to 1500 us; Get Position answers low byte first."""
    with raw(DeviceSettings()) as (maestro, port):
        ask(port, bytes((0x84, 0x02, 0x70, 0x2E)))
        assert ask(port, bytes((0x90, 0x02)), 2) == bytes((0x70, 0x17))  # 6000 quarter-us
        assert maestro.physical()[0][2] == 1500.0
        assert errors(port) == 0


def test_pololu_protocol_addresses_one_device_5c() -> None:
    """5.c Pololu protocol: 0xAA, device number, command with its MSB cleared; other devices' packets are ignored."""
    with raw(DeviceSettings()) as (_, port):  # default device number 12 (guide 3)
        ask(port, bytes((0xAA, 0x0C, 0x04, 0x00, 0x70, 0x2E)))
        assert ask(port, bytes((0xAA, 0x0C, 0x10, 0x00)), 2) == bytes((0x70, 0x17))
        ask(port, bytes((0xAA, 0x0D, 0x04, 0x00, 0x00, 0x20)))  # for device 13: not ours, no error
        assert position(port, 0) == 6000
        assert errors(port) == 0


def test_set_speed_example_takes_100_ms_5e() -> None:
    """5.e Set Speed: 0x87, 0x05, 0x0C, 0x01 is speed 140 (3.5 us/ms); 1000 -> 1350 us then takes 100 ms."""
    with raw(DeviceSettings(model="mini12")) as (maestro, port):
        ask(port, bytes((0x84, 0x05)) + drv.seven_bit(4000))  # speed 0: takes effect at once
        assert position(port, 5) == 4000
        ask(port, bytes((0x87, 0x05, 0x0C, 0x01)))
        sent = time.monotonic()
        ask(port, bytes((0x84, 0x05)) + drv.seven_bit(5400))
        assert 4000 <= position(port, 5) < 5400
        assert ask(port, b"\x93", 1) == b"\x01"  # 5.e Get Moving State (Mini Maestro)
        deadline = time.monotonic() + 2
        while position(port, 5) != 5400 and time.monotonic() < deadline:
            pass  # the simulated Maestro answers each query at once; 100 ms of them is what this measures
        assert 0.085 <= maestro.core.arrivals[5] - sent <= 0.13
        assert ask(port, b"\x93", 1) == b"\x00"


def test_get_errors_reports_a_stray_data_byte_and_clears_4e() -> None:
    """4.e: a data byte where a command belongs is a serial protocol error (bit 4); Get Errors clears it."""
    with raw(DeviceSettings()) as (_, port):
        ask(port, b"\x05")
        assert ask(port, b"\xa1", 2) == bytes((0x10, 0x00))
        assert ask(port, b"\xa1", 2) == bytes((0x00, 0x00))


def test_interrupted_packet_and_unknown_command_are_protocol_errors_4e() -> None:
    """4.e: "an unfinished command packet is interrupted by another command packet", or an unknown command."""
    with raw(DeviceSettings()) as (_, port):
        assert ask(port, bytes((0x84, 0x00, 0xA1)), 2) == bytes((0x10, 0x00))
        ask(port, bytes((0x80, 0x01, 0x02)))
        assert errors(port) == 0x10


def test_micro_maestro_lacks_the_mini_commands_5e() -> None:
    """5.e: Set Multiple Targets (0x9F) and Set PWM (0x8A) are Mini Maestro 12/18/24 only."""
    with raw(DeviceSettings(model="micro6")) as (_, port):
        ask(port, bytes((0x9F, 0x02, 0x03, 0x00, 0x00, 0x70, 0x2E)))
        assert errors(port) == 0x10


def test_set_multiple_targets_example_5e() -> None:
    """5.e: 0x9F, 0x02, 0x03, 0x00, 0x00, 0x70, 0x2E sets channel 3 to 0 (off) and channel 4 to 6000."""
    channels = [ChannelSettings(home="goto", home_q=5000)] * 12
    with raw(DeviceSettings(model="mini12", channels=channels)) as (_, port):
        assert position(port, 3) == 5000
        ask(port, bytes((0x9F, 0x02, 0x03, 0x00, 0x00, 0x70, 0x2E)))
        assert (position(port, 3), position(port, 4), errors(port)) == (0, 6000, 0)


def test_crc7_5d() -> None:
    """5.d: CRC-7, polynomial 0x91, LSB first, over the whole packet. Pololu's vector (their forum):
    [0xAA, 0x01, 0x10, 0x00] -> 0x6B. The driver's bitwise form equals the guide's long division."""
    assert sim.crc7(bytes((0xAA, 0x01, 0x10, 0x00))) == 0x6B == drv.crc7(bytes((0xAA, 0x01, 0x10, 0x00)))
    rng = random.Random(7)
    for _ in range(200):
        packet = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        assert drv.crc7(packet) == sim.crc7(packet)


def test_crc_mode_checks_every_packet_5d() -> None:
    """5.d: with CRC enabled a packet needs its CRC byte; a wrong one sets bit 3 and the packet is ignored."""
    with raw(DeviceSettings(device_number=1, crc=True)) as (_, port):
        ask(port, bytes((0x84, 0x00)) + drv.seven_bit(6000) + bytes((drv.crc7(bytes((0x84, 0x00, 0x70, 0x2E))),)))
        assert ask(port, bytes((0xAA, 0x01, 0x10, 0x00, 0x6B)), 2) == bytes((0x70, 0x17))
        assert ask(port, bytes((0xAA, 0x01, 0x10, 0x00, 0x6A)), 2) == b""  # ignored: no reply
        assert ask(port, bytes((0xA1, sim.crc7(b"\xa1"))), 2) == bytes((0x08, 0x00))


def _homes() -> list[ChannelSettings]:
    return [ChannelSettings(home="goto", home_q=6000), ChannelSettings(home="off"), ChannelSettings(home="ignore")]


def test_an_error_sends_channels_to_their_home_settings_4e() -> None:
    """4.e: on an error every channel goes to its 'On startup or error' value: Go to, Off (0), Ignore (unchanged)."""
    with raw(DeviceSettings(channels=_homes())) as (_, port):
        for ch in range(3):
            ask(port, bytes((0x84, ch)) + drv.seven_bit(7000))
        ask(port, b"\x05")
        assert [position(port, ch) for ch in range(3)] == [6000, 0, 7000]
        assert errors(port) == 0x10


def test_go_home_5e() -> None:
    """5.e Go Home (0xA2): the same as an error, without an error bit."""
    with raw(DeviceSettings(channels=_homes())) as (_, port):
        for ch in range(3):
            ask(port, bytes((0x84, ch)) + drv.seven_bit(7000))
        ask(port, b"\xa2")
        assert [position(port, ch) for ch in range(3)] == [6000, 0, 7000]
        assert errors(port) == 0


def test_serial_timeout_5a() -> None:
    """5.a Timeout: no valid command for that long is a serial timeout error (bit 5), and channels go home."""
    with raw(DeviceSettings(timeout_s=0.05, channels=_homes())) as (maestro, port):
        ask(port, bytes((0x84, 0x00)) + drv.seven_bit(7000))
        assert maestro.timed_out.wait(2)
        assert position(port, 0) == 6000
        assert errors(port) == 0x20


def test_output_channels_and_min_max_4b() -> None:
    """4.b: an Output channel is high at >= 1500 us and ignores speed; a servo's target stays within Min..Max."""
    channels = [ChannelSettings(max_q=8000), ChannelSettings(mode="output")]
    with raw(DeviceSettings(channels=channels, lamps=[LampWiring(1, "output")])) as (maestro, port):
        ask(port, bytes((0x87, 0x01, 0x01, 0x00)) + bytes((0x84, 0x01)) + drv.seven_bit(6000))
        assert position(port, 1) == 6000 and maestro.physical()[1] == (255,)
        ask(port, bytes((0x84, 0x01)) + drv.seven_bit(5999))
        assert position(port, 1) == 5999 and maestro.physical()[1] == (0,)
        ask(port, bytes((0x84, 0x00)) + drv.seven_bit(8400))
        assert position(port, 0) == 8000


def test_set_pwm_5e() -> None:
    """5.e Set PWM (0x8A): on time and period in 1/48 us, 7 bits per byte."""
    with raw(DeviceSettings(model="mini12", lamps=[LampWiring(8, "pwm")])) as (maestro, port):
        ask(port, b"\x8a" + drv.seven_bit(1200) + drv.seven_bit(4800))
        assert errors(port) == 0
        assert maestro.physical()[1] == (64,)


def test_mini_ssc_5e() -> None:
    """5.e Mini SSC: 0xFF, channel, 0..254; 127 is the 8-bit neutral (1500 us by default), 254 neutral + range."""
    with raw(DeviceSettings()) as (_, port):
        ask(port, bytes((0xFF, 0x00, 127)))
        ask(port, bytes((0xFF, 0x01, 254)))
        assert (position(port, 0), position(port, 1)) == (6000, 6000 + 1905)


# ---------------------------------------------------------------- the driver over the pty


def _rig() -> RigConfig:
    return load_rig(REPO / "calibration" / "sim-rig.yaml")  # servos on channels 0..3, lights 0 and 1


def _servo(max_us: int = 2100) -> ChannelSettings:
    return ChannelSettings(min_q=900 * 4, max_q=max_us * 4, home="goto", home_q=6000)


def _device(channels: list[ChannelSettings] | None = None, lamps: list[LampWiring] | None = None,
            timeout_s: float = 0.0, device_number: int = 12, crc: bool = False) -> DeviceSettings:
    """A Mini Maestro 12 set up for the sim rig: servos 0..3 (900..2100 us, home 1500 us), a dimmer on 6,
    channel 7 in Output mode, the PWM output (channel 8) for light 1."""
    dimmer = ChannelSettings(home="goto", home_q=4000)  # as doctor advises: Go to the lamp's off pulse
    channels = channels or [_servo()] * 4 + [ChannelSettings()] * 2 + [dimmer, ChannelSettings(mode="output")]
    return DeviceSettings(model="mini12", device_number=device_number, crc=crc, timeout_s=timeout_s,
                          channels=channels, lamps=lamps or [LampWiring(6, "dimmer"), LampWiring(8, "pwm")])


def _settings(port: str, **kw: object) -> MaestroConfig:
    lights = {0: MaestroLight(channel=6, mode="dimmer"), 1: MaestroLight(channel=8, mode="pwm")}
    return MaestroConfig.model_validate({"kind": "maestro", "port": port, "model": "mini12", "lights": lights, **kw})


@contextmanager
def driven(device: DeviceSettings | None = None, **kw: object) -> Iterator[tuple[MaestroSimulator, Maestro]]:
    maestro = MaestroSimulator(device or _device()).start()
    try:
        ctl = Maestro.connect(_settings(maestro.port, **kw), _rig())
        try:
            yield maestro, ctl
        finally:
            ctl.close()
    finally:
        maestro.stop()


def test_coordinated_move_arrives_together_confirmed_by_read_back() -> None:
    with driven() as (maestro, ctl):
        targets = {0: 1600, 1: 1250, 2: 1900, 3: 1100}  # 100, 250, 400 and 400 us in 400 ms
        start = time.monotonic()
        ctl.move(targets, 400)
        st = ctl.state()
        assert st.moving and st.positions != (1600, 1250, 1900, 1100)
        st = ctl.wait_idle(5)
        pulses = maestro.physical()[0]
        assert not st.moving and st.positions == st.targets == (1600, 1250, 1900, 1100)
        # what the read-back said is where the servos are (channel 0 a quarter-us off: the driver's reset sentinel)
        assert all(abs(p - t) <= 0.25 for p, t in zip(pulses[:4], (1600.0, 1250.0, 1900.0, 1100.0)))
        arrived = [maestro.core.arrivals[ch] for ch in targets]
        assert max(arrived) - min(arrived) <= 0.0101  # the same 10 ms update
        assert 0.39 <= min(arrived) - start <= 0.5


def test_a_move_is_never_faster_than_the_rig_files_slew() -> None:
    with driven() as (maestro, ctl):
        start = time.monotonic()
        ctl.move({0: 1900}, 0)  # camera_pan: slew 2000 us/s -> 400 us take 200 ms
        ctl.wait_idle(5)
        assert 0.19 <= maestro.core.arrivals[0] - start <= 0.3


def test_lights_wired_as_dimmer_pwm_and_output() -> None:
    device = _device(lamps=[LampWiring(6, "dimmer"), LampWiring(7, "output")])
    lights = {0: MaestroLight(channel=6, mode="dimmer"), 1: MaestroLight(channel=7, mode="output")}
    with driven(device, lights=lights) as (maestro, ctl):
        ctl.set_lights({0: 60, 1: 255})
        assert ctl.state().lights == (60, 255) == maestro.physical()[1]
        with pytest.raises(ConfigError, match="output .on/off.: use 0 or 255"):
            ctl.set_lights({1: 25})
    with driven() as (maestro, ctl):  # channel 8: the Mini Maestro 12's PWM output
        ctl.set_lights({0: 25, 1: 200})
        assert ctl.state().lights == (25, 200) == maestro.physical()[1]


def test_a_light_channel_in_the_wrong_mode_is_refused_at_connect() -> None:
    device = _device(lamps=[LampWiring(6, "dimmer"), LampWiring(5, "output")])  # channel 5 is left in Servo mode
    lights = {0: MaestroLight(channel=6, mode="dimmer"), 1: MaestroLight(channel=5, mode="output")}
    with pytest.raises(DeviceError, match="channel 5, but that channel is in Servo mode; set its Mode to Output"), \
            driven(device, lights=lights):
        pass


def test_a_bad_byte_on_the_line_is_a_clear_device_error() -> None:
    with driven() as (maestro, ctl):
        maestro.inject(b"\x05")  # a glitch: a data byte where the Maestro expects a command
        with pytest.raises(drv.MaestroLineError) as e:
            ctl.state()
        assert isinstance(e.value, DeviceError) and e.value.bits == 0x10
        message = str(e.value)
        assert "\n" not in message and "serial protocol error" in message and "went to its home positions" in message


def test_a_serial_signal_error_names_the_baud_rate() -> None:
    with driven() as (maestro, ctl):
        maestro.line_error(sim.SIGNAL)
        with pytest.raises(drv.MaestroLineError, match="serial signal error .* set controller.baudrate"):
            ctl.move({0: 1600}, 0)


def test_serial_timeout_is_repaired_and_counted_as_a_restore() -> None:
    with driven(_device(timeout_s=0.1)) as (maestro, ctl):
        ctl.move({0: 1700, 1: 1300}, 0)
        ctl.set_lights({0: 90, 1: 40})
        ctl.wait_idle(5)
        maestro.timed_out.clear()
        assert maestro.timed_out.wait(2)  # the host was silent: the Maestro went home
        with maestro.lock:
            assert maestro.core.channels[0].target == 6000  # on its way home (at its last speed)
        assert maestro.physical()[1][0] == 0  # the dimmer's channel goes to its off pulse
        st = ctl.state()
        assert st.restores == 1 and st.notes == (drv.ERROR_BITS[5][0],)
        assert st.positions[:2] == (1700, 1300) and st.lights == (90, 40) and not st.moving


def test_a_maestro_reset_is_noticed_by_read_back_and_repaired() -> None:
    with driven() as (maestro, ctl):
        ctl.move({0: 1700}, 0)
        ctl.set_lights({0: 80, 1: 120})
        ctl.wait_idle(5)
        maestro.power_cycle()  # on a UART nothing announces it: channel 0 is back at its startup 1500 us
        st = ctl.wait_idle(5)
        assert st.positions[0] == 1700 and st.restores == 1
        assert st.lights == (80, 120) == maestro.physical()[1]  # the PWM lamp too, which has no read-back


def test_a_servo_stopped_short_by_the_maestros_max_names_the_setting() -> None:
    device = _device(channels=[_servo()] * 3 + [_servo(max_us=2000)] + [ChannelSettings()] * 2 + [_servo()])
    with driven(device) as (_, ctl):
        ctl.move({3: 2100}, 0)  # the rig file allows light_right up to 2100 us, the Maestro's Max is 2000
        with pytest.raises(drv.MaestroLimitError, match=r"light_right \(channel 3\) stops at 2000 us, asked 2100 us: "
                                                        r"its Min/Max .* must cover the rig file's 900..2100"):
            ctl.wait_idle(5)


def test_targets_outside_the_rig_files_limits_are_refused_on_the_host() -> None:
    with driven() as (maestro, ctl):
        with pytest.raises(drv.MaestroLimitError, match=r"camera_pan \(channel 0\): 2050 us is outside .* 1000..2000"):
            ctl.move({0: 2050}, 0)
        assert maestro.physical()[0][0] == 1500.0


def test_pololu_protocol_with_crc_and_device_number() -> None:
    with driven(_device(device_number=5, crc=True), protocol="pololu", device_number=5, crc=True) as (maestro, ctl):
        ctl.move({0: 1400, 1: 1600}, 100)
        assert ctl.wait_idle(5).positions[:2] == (1400, 1600)
    with pytest.raises(drv.MaestroNoReply, match="device number 6, CRC on"), \
            driven(_device(device_number=5, crc=True), protocol="pololu", device_number=6, crc=True,
                   reply_timeout_s=0.1):
        pass


def test_rig_files_the_maestro_cannot_run_are_config_errors() -> None:
    rig = _rig()
    slow = rig.model_copy(update={"servos": {**rig.servos, "camera_pan": rig.servos["camera_pan"].model_copy(
        update={"slew": 20})}})
    with pytest.raises(ConfigError, match=r"servos.camera_pan.slew: 20 us/s is slower than the Maestro's slowest"):
        drv.check_rig(_settings("x"), slow)
    with pytest.raises(ConfigError, match="the Micro Maestro has no PWM output"):
        drv.check_rig(_settings("x", model="micro6", lights={0: {"channel": 5, "mode": "dimmer"},
                                                             1: {"channel": 8, "mode": "pwm"}}), rig)
    with pytest.raises(ConfigError, match=r"controller.lights.1.channel: 9, but the mini12's PWM output is channel 8"):
        drv.check_rig(_settings("x", lights={0: {"channel": 6, "mode": "dimmer"}, 1: {"channel": 9, "mode": "pwm"}}),
                      rig)


def test_doctor_reads_back_what_it_can_and_lists_what_the_operator_sets() -> None:
    device = _device(channels=[_servo(), ChannelSettings(min_q=3600, max_q=8400)] + [_servo()] * 2
                     + [ChannelSettings()] * 2 + [_servo()])
    maestro = MaestroSimulator(device).start()
    try:
        checks = {c.name: c for c in drv.maestro_checks(_settings(maestro.port), _rig())}
    finally:
        maestro.stop()
    name = f"maestro {maestro.port}"
    assert checks[name].ok and checks[f"{name}: script"].ok
    servos = checks[f"{name}: servos"]
    assert not servos.ok and "camera_tilt (channel 1) send no pulses" in servos.detail
    for what in ("Serial Settings", "Serial timeout", "servo channels", "light channels"):
        assert not checks[f"set in Maestro Control Center: {what}"].needed
    assert "USB Dual Port" in checks["set in Maestro Control Center: Serial Settings"].detail
    assert "Timeout 30.00 s" in checks["set in Maestro Control Center: Serial timeout"].detail
    assert "channel 0 (camera_pan): Mode Servo, Min <= 1000, Max >= 2000, On startup or error: Go to 1500" in \
        checks["set in Maestro Control Center: servo channels"].detail


@pytest.mark.parametrize(("off_us", "full_us"), [(1000, 2000), (1500, 1564), (2000, 900)])
def test_every_dimmer_level_reads_back_as_itself(off_us: int, full_us: int) -> None:
    """The engine confirms lights by read-back: each level must be its own quarter-microsecond."""
    wiring = MaestroLight(channel=6, mode="dimmer", off_us=off_us, full_us=full_us)
    ctl = Maestro.__new__(Maestro)
    ctl.lights = {0: wiring}
    assert [ctl._level(0, Maestro._dimmer_q(wiring, level)) for level in range(256)] == list(range(256))


def test_micro_maestro_sets_targets_one_by_one_and_lights_without_pwm() -> None:
    device = DeviceSettings(model="micro6", channels=[_servo()] * 4 + [ChannelSettings(home="goto", home_q=4000),
                                                                      ChannelSettings(mode="output")],
                            lamps=[LampWiring(4, "dimmer"), LampWiring(5, "output")])
    lights = {0: MaestroLight(channel=4, mode="dimmer"), 1: MaestroLight(channel=5, mode="output")}
    with driven(device, model="micro6", lights=lights) as (maestro, ctl):
        ctl.move({0: 1400, 1: 1600, 2: 1200}, 200)  # a contiguous block: a Mini Maestro would take one 0x9F
        ctl.set_lights({0: 128, 1: 255})
        st = ctl.wait_idle(5)
        assert st.positions == (1400, 1600, 1200, 1500) and st.lights == (128, 255) == maestro.physical()[1]
        arrived = [maestro.core.arrivals[ch] for ch in (0, 1, 2)]
        assert max(arrived) - min(arrived) <= 0.0101


def test_a_maestro_set_up_as_doctor_says_passes_doctor() -> None:
    settings = _settings("unused")
    maestro = MaestroSimulator(sim.set_up_for(settings, _rig())).start()
    try:
        checks = drv.maestro_checks(settings, _rig(), maestro.port)
    finally:
        maestro.stop()
    assert all(c.ok for c in checks if c.needed), [c for c in checks if not c.ok]


def test_a_reset_at_the_park_pose_with_only_the_pwm_lamp_lit_is_seen_and_repaired() -> None:
    """A power cut sends the servos home and switches the PWM output off, neither of which the read-back
    of a parked rig with its dimmer off would show, but for the driver's quarter-us sentinel servo."""
    from rig.capture import Positioner

    rig = _rig()
    with driven() as (maestro, ctl):
        parked = {s.channel: s.park for s in rig.servos.values()}
        lights = {0: 0, 1: 100}  # light 1 is the PWM output: no read-back
        positioner = Positioner(ctl, rig.motion)
        confirmed = positioner.ready(parked, lights, lambda: None, "park, PWM lamp lit").readback
        assert maestro.physical()[1][1] == 100
        maestro.power_cycle()
        assert maestro.physical()[1][1] == 0  # the lamp went dark
        after = ctl.state()  # what the engine reads after an exposure: it must not look like the confirmed state
        assert after.moving or after.restores != confirmed.restores, after
        positioner.ready(parked, lights, lambda: None, "park, PWM lamp lit")
        assert maestro.physical()[1][1] == 100  # confirmed again only with the lamp lit again
