"""A host that floods the controller without reading must not break the slew limit or lose a command.

The real ELF runs in simavr; the pulse widths are measured on the simulated pins by rigsim, so a main
loop that stalls on a full transmit buffer shows up as a pulse step larger than the slew limit allows.
"""

from fwsim import command, runner, status, wait_event

SLEW = 1000  # us/s on channels 0 and 1: 20 us per 20 ms frame
JITTER_US = 6  # the 1 kHz interpolation, edge rounding, and simavr measuring a pulse up to +6 us long when
#               interrupts collide (FACTS.md): a flood makes UART interrupts, and so collisions, frequent
FLOOD = 60  # lines sent back to back, as in the defect report


def flood_lines() -> list[tuple[int, str]]:
    cycle = ["move 0 1:2000", "status", "move 0 1:1000", "status"]
    return [(1000 + i, cycle[i % 4]) for i in range(FLOOD)]


def worst_slew_excess(pulses, ch: int, t_from: float) -> tuple[float, float]:
    """(largest step between consecutive frames in us, largest excess over the slew limit in us)."""
    seq = [(t, w) for t, c, w in pulses if c == ch and t >= t_from]
    assert len(seq) > 10, f"too few pulses on ch {ch}"
    worst_step = worst_excess = 0.0
    for (t0, w0), (t1, w1) in zip(seq, seq[1:]):
        step = abs(w1 - w0)
        worst_step = max(worst_step, step)
        worst_excess = max(worst_excess, step - SLEW * (t1 - t0) / 1e6)
    return worst_step, worst_excess


def test_flood_keeps_slew_limit_and_answers_every_line(sim):
    s = sim.connect()
    assert command(s, "timeout 0") == "ok"
    for ch in (0, 1):
        assert command(s, f"limit {ch} 1000 2000 1500 {SLEW}") == "ok"
    t_start = sim.sim_time_us()
    # channel 0 is travelling (1 s at its slew limit) the whole time the host floods
    assert command(s, "move 1000 0:2000") == "ok 1000"

    lines = flood_lines()
    s.port.write(b"".join(runner.frame(seq, cmd) + b"\n" for seq, cmd in lines))
    s.port.flush()

    replies: dict[int, list[bytes]] = {}
    unattributed: list[bytes] = []  # plain replies: a line damaged on its way in
    while sum(map(len, replies.values())) + len(unattributed) < FLOOD:
        got = s.reply(timeout=10.0)
        if got is None:
            break
        body, crc_ok = runner.split_crc(got)
        if not crc_ok or not body.startswith(b"#"):
            unattributed.append(got)
            continue
        seq_text, _, rest = body.removeprefix(b"#").partition(b" ")
        replies.setdefault(int(seq_text), []).append(rest)

    # motion first: the servos must have kept their slew limit whatever happened to the lines
    sim.pins(fresh_after_us=t_start + 1_500_000, timeout=60)
    pulses = sim.pulses()
    busy = sum(r == b"err 8 busy" for rs in replies.values() for r in rs)
    for ch in (0, 1):
        step, excess = worst_slew_excess(pulses, ch, t_start)
        print(f"flood: ch {ch} worst step {step:.1f} us per frame (limit {SLEW * 0.02:.0f} us), "
              f"{busy} of {FLOOD} lines answered busy")
        assert excess <= JITTER_US, f"ch {ch} stepped {step:.1f} us in one frame against a {SLEW * 0.02:.0f} us limit"

    assert not unattributed, f"lines damaged inside the controller (bytes lost): {unattributed}"
    missing = [seq for seq, _ in lines if seq not in replies]
    assert not missing, f"{len(missing)} of {FLOOD} commands got no reply (lost silently): {missing}"
    for seq, cmd in lines:
        assert len(replies[seq]) == 1, f"#{seq} answered {len(replies[seq])} times"
        reply = replies[seq][0]
        assert reply.startswith(b"ok") or reply == b"err 8 busy", f"#{seq} {cmd}: {reply!r}"

    # what the controller says it executed is what it did: the last accepted move sets the target
    accepted = [cmd for seq, cmd in lines if cmd.startswith("move") and replies[seq][0].startswith(b"ok")]
    assert accepted, "not one move of the flood was executed"
    wait_event(s, "done", timeout=20.0)
    st = status(s)
    assert st["target"].split(",")[1] == accepted[-1].split(":")[1]
