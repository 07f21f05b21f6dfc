"""A session on the simulated Pololu Maestro (kind sim-maestro), through `rig run` like a user's: every
accepted photo was taken at the planned pose and lighting, also across a Maestro power cut mid-run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml
from conftest import REPO, rig_file, run_rig, session_file

from rig.sim.camera import truth


def test_a_session_on_the_simulated_maestro_takes_every_photo_at_the_planned_pose(tmp_path: Path,
                                                                                  phantoms: Path) -> None:
    maestro = yaml.safe_load((REPO / "calibration" / "sim-maestro-rig.yaml").read_text())["controller"]
    rig = rig_file(tmp_path, controller=maestro, sim={"power_cycles_s": [1.0]})
    session = session_file(tmp_path, phantoms, rig)
    result = run_rig("run", str(session), timeout=300)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    with sqlite3.connect(run / "run.sqlite") as db:
        done = db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]
        rows = db.execute("SELECT photo, commanded, lights FROM attempts WHERE status = 'accepted'").fetchall()
    assert done == 24 and len(rows) == 24
    wrong = []
    for photo, commanded, lights in rows:
        seen = truth((run / photo).read_bytes())
        assert seen is not None
        pulses, levels = seen
        if any(abs(pulses[int(ch)] - us) > 0.25 for ch, us in json.loads(commanded).items()) or \
                any(levels[int(ch)] != v for ch, v in json.loads(lights).items()):
            wrong.append(f"{photo}: at {pulses} {levels}, planned {commanded} {lights}")
    assert not wrong, "\n".join(wrong[:5])
