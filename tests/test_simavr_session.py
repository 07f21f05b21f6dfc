"""The session runs with the real rigctl firmware in simavr instead of the twin; the camera's pose comes
from the pulses measured on the AVR's pins."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import photos_show_their_sources, rig_file, run_rig, session_file


def test_session_on_the_real_firmware_in_simavr(tmp_path: Path, phantoms: Path) -> None:
    rig_path = rig_file(tmp_path, controller={"port": "simavr"}, motion={"settle_ms": 60})
    session = session_file(tmp_path, phantoms, rig_path)
    result = run_rig("run", str(session))
    assert result.returncode == 0, result.stderr
    assert "24/24 done" in result.stderr
    assert photos_show_their_sources(tmp_path / "run", rig_path) == 24
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        rows = db.execute("SELECT commanded, readback FROM attempts WHERE status = 'accepted'").fetchall()
    for commanded, readback in rows:
        positions = json.loads(readback)["positions"]
        for ch, us in json.loads(commanded).items():
            assert positions[int(ch)] == us  # the firmware reports it reached what was commanded
