"""What a servo sees: pulse widths measured on the simulated pins by rigsim."""

import pytest
from fwsim import command, status, wait_event

TOL_US = 8  # brief: commanded pulse within +-8 us once a move completes


def settle(sim):
    """Wait until the pins snapshot covers a few full servo frames after now."""
    now = sim.sim_time_us()
    return sim.pins(fresh_after_us=now + 60_000)


def test_boot_drives_park_pulse_and_lights_off(sim):
    snap = settle(sim)
    for ch in range(4):
        assert abs(snap["servo"][ch]["last"] - 1500) <= TOL_US
        assert snap["servo"][ch]["count"] > 0
    assert snap["light"][0]["duty"] == 0 and snap["light"][1]["duty"] == 0


@pytest.mark.parametrize("targets", [(1000, 2000, 1234, 1777), (1999, 1001, 1500, 1050)])
def test_commanded_pulse_appears_on_every_pin(sim, targets):
    s = sim.connect()
    pairs = " ".join(f"{ch}:{us}" for ch, us in enumerate(targets))
    assert command(s, f"move 0 {pairs}").startswith("ok ")
    wait_event(s, "done")
    snap = settle(sim)
    for ch, us in enumerate(targets):
        measured = snap["servo"][ch]["last"]
        assert abs(measured - us) <= TOL_US, f"ch {ch}: commanded {us} us, measured {measured} us"
    st = status(s)
    assert st["pos"] == ",".join(map(str, targets)) and st["moving"] == "0"


def test_light_duty_on_pins(sim):
    s = sim.connect()
    assert command(s, "light 0:64 1:200") == "ok"
    snap = settle(sim)
    assert abs(snap["light"][0]["duty"] - 64) <= 1
    assert abs(snap["light"][1]["duty"] - 200) <= 1
    assert command(s, "light 0:255 1:0") == "ok"
    snap = settle(sim)
    assert snap["light"][0]["duty"] == 255 and snap["light"][1]["duty"] == 0


def test_slew_limit_and_coordinated_arrival(sim):
    s = sim.connect()
    assert command(s, "limit 0 1000 2000 1500 1000") == "ok"
    assert command(s, "limit 1 1000 2000 1500 4000") == "ok"
    assert command(s, "limit 2 1000 2000 1500 500") == "ok"
    t_cmd = sim.sim_time_us()
    # ch0: 400 us at 1000 us/s = 400 ms; ch1: 500 us at 4000 -> 125 ms; ch2: 150 us at 500 -> 300 ms
    reply = command(s, "move 100 0:1900 1:1000 2:1650")
    assert reply == "ok 400", reply  # the slowest channel sets the time
    wait_event(s, "done")
    settle(sim)
    targets = {0: 1900, 1: 1000, 2: 1650}
    slews = {0: 1000, 1: 4000, 2: 500}
    pulses = [p for p in sim.pulses() if p[0] >= t_cmd]
    arrivals = {}
    for ch, target in targets.items():
        seq = [(t, w) for t, c, w in pulses if c == ch]
        assert len(seq) >= 20  # 400 ms of 20 ms frames
        # never faster than the slew limit between consecutive frames (+ a few us of jitter)
        for (t0, w0), (t1, w1) in zip(seq, seq[1:]):
            allowed = slews[ch] * (t1 - t0) / 1e6 + 3
            assert abs(w1 - w0) <= allowed, f"ch {ch}: {w0:.1f} -> {w1:.1f} us in {(t1 - t0) / 1000:.1f} ms"
        # first pulse from which the channel stays at its target
        arrive = next(t for i, (t, w) in enumerate(seq) if all(abs(x - target) <= 2 for _, x in seq[i:]))
        start = next(t for t, w in seq if abs(w - 1500) > 2)
        arrivals[ch] = arrive
        # linear in time over the effective 400 ms (one 20 ms frame of quantisation either side)
        assert 400_000 - 40_000 <= arrive - start <= 400_000 + 40_000, (ch, arrive - start)
    spread = max(arrivals.values()) - min(arrivals.values())
    assert spread <= 20_000, f"channels arrived {spread / 1000:.1f} ms apart"


def test_out_of_limit_targets_are_never_driven(sim):
    s = sim.connect()
    for bad in ("move 0 0:999", "move 0 1:2001", "move 0 2:2600", "move 0 3:400", "move 0 0:1500 1:50000"):
        assert command(s, bad).startswith("err 3 out-of-limits"), bad
    assert command(s, "limit 3 1200 1800 1500 60000") == "ok"
    assert command(s, "move 0 3:1900").startswith("err 3 out-of-limits ch=3")
    # (!done means the commanded pulse reached its target; the pin shows it from the next 20 ms frame)
    assert command(s, "move 0 0:1000 1:2000 3:1200").startswith("ok ")
    wait_event(s, "done")
    settle(sim)
    assert command(s, "move 0 0:2000 1:1000 3:1800").startswith("ok ")
    wait_event(s, "done")
    settle(sim)
    # narrowing a channel's limits below where it stands pulls it inside at once
    assert command(s, "limit 3 1300 1700 1500 60000") == "ok"
    snap = settle(sim)
    for ch in (0, 1):
        assert snap["servo"][ch]["min"] >= 1000 - 2 and snap["servo"][ch]["max"] <= 2000 + 2
        assert snap["servo"][ch]["min"] <= 1000 + 2 and snap["servo"][ch]["max"] >= 2000 - 2
    assert snap["servo"][3]["min"] >= 1200 - 2 and snap["servo"][3]["max"] <= 1800 + 2
    assert abs(snap["servo"][3]["last"] - 1700) <= TOL_US
    assert status(s)["pos"].split(",")[3] == "1700"


def test_lowering_the_slew_limit_mid_move_slows_the_servo_at_once(sim):
    s = sim.connect()
    assert command(s, "limit 1 1000 2000 1500 1000") == "ok"
    assert command(s, "move 0 1:1900") == "ok 400"
    t_limit = sim.sim_time_us()
    assert command(s, "limit 1 1000 2000 1500 100") == "ok"  # 2 us per 20 ms frame from now on
    sim.pins(fresh_after_us=t_limit + 600_000, timeout=60)
    seq = [(t, w) for t, c, w in sim.pulses() if c == 1 and t > t_limit + 20_000]
    assert len(seq) > 20
    for (t0, w0), (t1, w1) in zip(seq, seq[1:]):
        allowed = 100 * (t1 - t0) / 1e6 + 1.5
        assert abs(w1 - w0) <= allowed, f"{w0:.1f} -> {w1:.1f} us in {(t1 - t0) / 1000:.1f} ms at 100 us/s"
    assert command(s, "limit 1 1000 2000 1500 1000") == "ok"
