"""Host silence: lights go dark, servos hold, one !safe event, on time (simulation paced to wall clock)."""

import time

from fwsim import command, status, wait_event


def test_host_silence_turns_lights_off_and_holds_servos(start_sim):
    sim = start_sim(realtime=True)
    s = sim.connect()
    assert command(s, "timeout 1000") == "ok"
    assert command(s, "light 0:200 1:100") == "ok"
    assert command(s, "move 5000 0:1900") == "ok 5000"  # slow: still moving when the host goes quiet
    t_last = time.monotonic()

    wait_event(s, "safe cause=host-timeout", timeout=3.0)
    quiet = time.monotonic() - t_last
    print(f"host-timeout: !safe after {quiet * 1000:.1f} ms")
    assert 0.9 <= quiet <= 1.1, f"!safe after {quiet * 1000:.0f} ms of silence, timeout is 1000 ms"

    now = sim.sim_time_us()
    snap = sim.pins(fresh_after_us=now + 60_000)
    assert snap["light"][0]["duty"] == 0 and snap["light"][1]["duty"] == 0
    held = snap["servo"][0]["last"]
    assert 1520 < held < 1700, f"servo 0 should have stopped part-way, is at {held} us"

    # still silent: no second event, and the servo does not creep
    time.sleep(1.3)
    assert s.reply(0.01) is None and b"safe cause=host-timeout" not in s.events
    snap = sim.pins(fresh_after_us=sim.sim_time_us() + 40_000)
    assert abs(snap["servo"][0]["last"] - held) <= 2

    st = status(s)
    assert st["light"] == "0,0" and st["moving"] == "0" and st["pos"] == st["target"]
    assert int(st["flags"], 16) & 0x02
    assert command(s, "light 0:10") == "ok"  # the host re-applies state; the flag clears
    assert int(status(s)["flags"], 16) & 0x02 == 0
