"""Done-when of issue 9: a session on the simavr rig (the firmware ELF in simavr) over a serial line with
1 % of bytes corrupted and 1 % of lines dropped in both directions, and a controller power cycle
mid-run, completes in ONE `rig run`, and every accepted photo was taken at the commanded pose and
lighting as measured on the AVR's pins. Prints the retransmissions and the time they cost against
the same run without noise."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

from conftest import FinishedRun, photos_show_their_sources, rig_file, run_rig, session_file

from rig.sim.camera import truth

NOISE = {"corrupt_bytes": 0.01, "drop_lines": 0.01}
POWER_CYCLE_AT_S = 4.0  # seconds after the devices open: after connecting, well before the end


def _run(directory: Path, phantoms: Path, **sim: object) -> tuple[float, str, Path, Path]:
    directory.mkdir()
    rig_path = rig_file(directory, controller={"kind": "simavr"}, motion={"settle_ms": 60}, sim=sim)
    session = session_file(directory, phantoms, rig_path)
    t0 = time.monotonic()
    result = run_rig("run", str(session), timeout=900)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr[-3000:]
    assert "24/24 done" in result.stderr, result.stderr[-3000:]  # one `rig run`, nothing left pending or failed
    return elapsed, result.stderr, session, rig_path


def _retransmissions(session: Path) -> int:
    status = run_rig("status", str(session))
    assert status.returncode == 0, status.stderr
    m = re.search(r"retransmissions\s*│?\s*(\d+)", status.stdout)
    assert m, status.stdout
    return int(m.group(1))


def test_noisy_line_and_power_cycle_on_simavr_complete_in_one_run_at_the_planned_state(
        tmp_path: Path, phantoms: Path, simavr_run: FinishedRun) -> None:
    clean_s, clean_session = simavr_run.elapsed_s, simavr_run.session  # the same session without noise
    noisy_s, err, session, rig_path = _run(tmp_path / "noisy", phantoms, line_noise=NOISE,
                                           power_cycles_s=[POWER_CYCLE_AT_S])
    assert noisy_s > POWER_CYCLE_AT_S + 1, "the power cycle must land mid-run"
    assert re.search(r"controller (reset|at \S+ reports session)", err), "the driver must have seen the reset"
    run = session.parent / "run"
    assert photos_show_their_sources(run, rig_path) == 24
    with sqlite3.connect(run / "run.sqlite") as db:
        rows = db.execute("SELECT photo, commanded, lights FROM attempts WHERE status = 'accepted'").fetchall()
    assert len(rows) == 24
    for photo, commanded, lights in rows:
        measured = truth((run / photo).read_bytes())  # pulse widths and PWM duty on the pins at the exposure
        assert measured is not None, photo
        pulses, levels = measured
        for ch, us in json.loads(commanded).items():
            assert abs(pulses[int(ch)] - us) <= 1.0, f"{photo}: servo {ch} at {pulses[int(ch)]} us, planned {us}"
        for ch, level in json.loads(lights).items():
            assert levels[int(ch)] == level, f"{photo}: light {ch} at duty {levels[int(ch)]}, planned {level}"
    retx, clean_retx = _retransmissions(session), _retransmissions(clean_session)
    assert retx > 0
    print(f"\nnoisy line: {retx} retransmissions (clean run: {clean_retx}); run took {noisy_s:.1f} s against "
          f"{clean_s:.1f} s without noise: x{noisy_s / clean_s:.2f}, +{noisy_s - clean_s:.1f} s")
