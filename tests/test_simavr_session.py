"""The session runs with the real rigctl firmware in simavr instead of its core built for the PC; the
camera's pose and lighting come from the pulse widths and PWM duty measured on the AVR's pins, and every
accepted photo is checked against the plan with those measurements (not with the firmware's own readback)."""

from __future__ import annotations

import json
import sqlite3

from conftest import FinishedRun, photos_show_their_sources

from rig.sim.camera import truth

PULSE_TOLERANCE_US = 1.0  # the pins are timed to 1/16 us; the firmware's servo timer ticks at 0.5 us


def test_session_on_the_real_firmware_in_simavr(simavr_run: FinishedRun) -> None:
    run = simavr_run.run  # the run exited 0 with "24/24 done" (the fixture checks)
    assert photos_show_their_sources(run, simavr_run.rig) == 24
    with sqlite3.connect(run / "run.sqlite") as db:
        rows = db.execute("SELECT photo, commanded, lights FROM attempts WHERE status = 'accepted'").fetchall()
    assert len(rows) == 24
    for photo, commanded, lights in rows:
        measured = truth((run / photo).read_bytes())  # what the pins showed at the exposure
        assert measured is not None, photo
        pulses, levels = measured
        for ch, us in json.loads(commanded).items():
            at = pulses[int(ch)]
            assert abs(at - us) <= PULSE_TOLERANCE_US, f"{photo}: servo {ch} at {at} us, planned {us}"
        for ch, level in json.loads(lights).items():
            assert levels[int(ch)] == level, f"{photo}: light {ch} at duty {levels[int(ch)]}, planned {level}"
