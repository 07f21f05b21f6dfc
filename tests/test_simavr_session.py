"""The session runs with the real rigctl firmware in simavr instead of its core built for the PC; the
camera's pose and lighting come from the pulse widths and PWM duty measured on the AVR's pins, and every
accepted photo is checked against the plan with those measurements (not with the firmware's own readback)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import photos_show_their_sources, rig_file, run_rig, session_file

from rig.sim.camera import truth

PULSE_TOLERANCE_US = 1.0  # the pins are timed to 1/16 us; the firmware's servo timer ticks at 0.5 us


def test_session_on_the_real_firmware_in_simavr(tmp_path: Path, phantoms: Path) -> None:
    rig_path = rig_file(tmp_path, controller={"kind": "simavr"}, motion={"settle_ms": 60})
    session = session_file(tmp_path, phantoms, rig_path)
    result = run_rig("run", str(session))
    assert result.returncode == 0, result.stderr
    assert "24/24 done" in result.stderr
    assert photos_show_their_sources(tmp_path / "run", rig_path) == 24
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        rows = db.execute("SELECT photo, commanded, lights FROM attempts WHERE status = 'accepted'").fetchall()
    assert len(rows) == 24
    for photo, commanded, lights in rows:
        measured = truth((tmp_path / "run" / photo).read_bytes())  # what the pins showed at the exposure
        assert measured is not None, photo
        pulses, levels = measured
        for ch, us in json.loads(commanded).items():
            at = pulses[int(ch)]
            assert abs(at - us) <= PULSE_TOLERANCE_US, f"{photo}: servo {ch} at {at} us, planned {us}"
        for ch, level in json.loads(lights).items():
            assert levels[int(ch)] == level, f"{photo}: light {ch} at duty {levels[int(ch)]}, planned {level}"
